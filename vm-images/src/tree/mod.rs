//! Kernels built from the commits of a git tree (`kchaos bisect --source`), each step's
//! build incremental on the last: one worktree of kchaos's own and one build directory
//! per (repository, fragments), reused across steps and bisections, the compiler going
//! through ccache ([`ccache`]). `build.sh`, the recipe's script, does the building,
//! exactly as for `build:` kernels and users' own trees.
//!
//! Why one reused worktree and not a fresh one per step: Kbuild decides what to rebuild
//! by modification times. `git checkout` in a worktree that is already at some commit
//! rewrites only the files that differ, so the next build recompiles those (and what
//! includes them) and relinks; a fresh worktree makes every file new, and every object
//! is rebuilt (from ccache, at best). The user's checkout is never used.
//!
//! Each built commit is kept (`commits/<hash>/`: bzImage, modules, config, System.map,
//! `build.json`) and booted from there as a `path:` kernel naming its commit, so a
//! resumed or repeated bisection does not build it again.

mod error;
mod evict;
pub mod git;
mod record;
mod space;

pub use self::error::TreeError;
pub use self::git::{Commit, Repo};
pub use self::record::{CommitBuild, TreeBuild};
pub use self::space::BuildSpace;
// The compiler cache serves `build:` kernels too; this is its old path.
pub use crate::kbuild::ccache::{self, Ccache, CcacheCounts};
