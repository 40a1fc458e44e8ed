//! A file operation that failed, saying what was being done and to which path, and the
//! exclusive lock a build holds on its cache key. One error type for every module that
//! touches files, so each says "Cannot {what} {path}" the same way and a step's error
//! passes to its caller unchanged (build.sh's script error into a recipe's or a tree's).

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

#[derive(Debug, thiserror::Error)]
#[error("Cannot {what} {path}")]
pub struct IoError {
    pub what: &'static str,
    pub path: String,
    #[source]
    pub source: std::io::Error,
}

/// For `map_err`: the error of doing `what` (`read`, `create`, ...) to `path`.
pub(crate) fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> IoError {
    let path = path.display().to_string();
    move |source| IoError { what, path, source }
}

/// The paths in `dir`, in no order; none when it cannot be read (a cache directory
/// not made yet is simply empty).
pub(crate) fn entries(dir: &Path) -> impl Iterator<Item = PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
}

/// Takes the exclusive lock on `file` (opened at `path`), waiting for the process that
/// holds it: one build per cache key at a time, a second kchaos finds it done.
pub(crate) fn lock(file: File, path: &Path) -> Result<Flock<File>, IoError> {
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| IoError {
        what: "lock",
        path: path.display().to_string(),
        source: std::io::Error::from(errno),
    })
}
