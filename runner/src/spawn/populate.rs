//! What can go wrong in the short-lived process each churned cgroup gets (the incident's
//! proof of concept): joining the cgroup, then writing files under a fresh directory so
//! page cache, dentries and inodes are charged to it. The process itself is
//! `spawn::raw`: system calls only, to stay cheap under TCG.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PopulateError {
    #[error("write 0 to {path}")]
    Join {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mkdir {path}")]
    Mkdir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("create {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("write {size} bytes to {path}")]
    Write {
        path: PathBuf,
        size: u64,
        #[source]
        source: std::io::Error,
    },
}

impl PopulateError {
    /// The whole chain on one line, for the parent (a child's error crosses a pipe).
    pub fn chain(&self) -> String {
        let source = match self {
            PopulateError::Join { source, .. }
            | PopulateError::Mkdir { source, .. }
            | PopulateError::Create { source, .. }
            | PopulateError::Write { source, .. } => source,
        };
        format!("{self}: {source}")
    }
}
