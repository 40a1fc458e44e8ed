//! What can go wrong building a git tree's commits, and whose fault it is. Its own
//! module so that the steps (`git`, `space`) share it without importing the module
//! that declares them.

use crate::cache::{CacheError, RecordError};
use crate::file_io::IoError;
use crate::host_tool::CommandError;
use crate::kernel::bzimage::BzImageError;

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
    #[error(transparent)]
    Io(#[from] IoError),
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
    #[error(transparent)]
    Record(#[from] RecordError),
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
