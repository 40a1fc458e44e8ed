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

pub mod ccache;
mod evict;
pub mod git;
mod space;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use self::ccache::{Ccache, CcacheCounts};
pub use self::git::{Commit, Repo};
pub use self::space::BuildSpace;
use crate::bzimage::BzImageError;
use crate::cache::CacheError;
use crate::command::CommandError;

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("git is not installed (Debian: `apt-get install git`)")]
    NoGit,
    #[error(transparent)]
    Git(CommandError),
    #[error("{dir} is not a git repository: {why}")]
    NotARepo { dir: String, why: String },
    #[error("`{rev}` is not a commit: {why}")]
    BadRev { rev: String, why: String },
    #[error("the good revision {good} is not an ancestor of the bad one {bad}: nothing to bisect between them")]
    NotAncestor { good: String, bad: String },
    #[error(
        "unknown config fragment `{name}`: neither a fragment kchaos carries ({known}) nor a file"
    )]
    UnknownFragment { name: String, known: String },
    #[error("Cannot {what} {path}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Spawn(CommandError),
    /// The commit does not build: a bisection step that is `skip`, never `good`.
    #[error("commit {commit} does not build ({status}); the log is {log}; it ends with:\n{tail}")]
    Build {
        commit: String,
        status: String,
        log: String,
        tail: String,
    },
    #[error("building commit {commit}: build.sh printed `{printed}`, not a path: kernel spec")]
    BadOutput { commit: String, printed: String },
    #[error(transparent)]
    BzImage(#[from] BzImageError),
    #[error("the build was interrupted")]
    Interrupted,
    #[error("Corrupt cache entry {path}; delete it and retry")]
    Corrupt {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

impl TreeError {
    /// Whether this is the commit's fault (it does not build), as opposed to the
    /// host's (git missing, a disk that fills up) or the user's interrupt.
    pub fn is_unbuildable(&self) -> bool {
        matches!(
            self,
            TreeError::Build { .. } | TreeError::BadOutput { .. } | TreeError::BzImage(_)
        )
    }
}

pub(crate) fn io(
    what: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> TreeError {
    let path = path.display().to_string();
    move |source| TreeError::Io { what, path, source }
}

/// What building one commit took and produced, kept as `build.json` beside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitBuild {
    pub commit: String,
    pub subject: String,
    /// `git describe` at build time.
    #[serde(default)]
    pub describe: Option<String>,
    /// `uname -r` of the kernel.
    pub release: String,
    /// build.sh's wall time: configuration, compiling, linking, installing modules.
    pub seconds: f64,
    /// Moving the worktree to the commit.
    pub checkout_seconds: f64,
    /// Files compiled (Kbuild's `CC`/`AS` steps), cache hits included.
    pub compiled: u64,
    /// What ccache did, when the build went through it.
    #[serde(default)]
    pub ccache: Option<CcacheCounts>,
    #[serde(default)]
    pub config_warnings: Vec<String>,
}

/// A commit's kernel, ready to boot.
#[derive(Debug, Clone, PartialEq)]
pub struct TreeBuild {
    /// `path:…,commit=<hash>`.
    pub spec: String,
    pub dir: PathBuf,
    /// Found already built (this run did not build it).
    pub cached: bool,
    pub record: CommitBuild,
}
