//! One run per results directory at a time. Two runs writing one directory once left the
//! last writer's results (a `hang` replaced by a pass); a lock file taken with flock(2)
//! for the whole run refuses the second, naming the first. The kernel releases the lock
//! when the process dies, however it dies, so a killed run never leaves it held.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// The lock file inside a results directory.
pub const LOCK_FILE: &str = ".kchaos.lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{dir} is in use by another kchaos run{}; wait for it or choose another --out", .pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    InUse { dir: String, pid: Option<u32> },
    #[error("Cannot lock the results directory {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Held for the whole run; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct ResultsLock {
    _lock: Flock<File>,
    path: PathBuf,
}

impl ResultsLock {
    /// Creates `dir` if needed and locks it, or says who holds it.
    pub fn acquire(dir: &Path) -> Result<ResultsLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::InUse {
                    dir: dir.display().to_string(),
                    pid: text.trim().parse().ok(),
                });
            }
            Err((_, errno)) => return Err(io(std::io::Error::from(errno))),
        };
        // Who holds it, for the message a second run prints.
        lock.set_len(0).map_err(io)?;
        lock.rewind().map_err(io)?;
        write!(lock, "{}", std::process::id()).map_err(io)?;
        Ok(ResultsLock { _lock: lock, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_run_into_a_locked_directory_is_refused_with_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("res");
        let first = ResultsLock::acquire(&out).unwrap();
        // flock locks belong to the open file description: a second open in this
        // process conflicts just as another process would.
        let second = ResultsLock::acquire(&out).unwrap_err();
        let text = second.to_string();
        assert!(
            text.contains("in use by another kchaos run")
                && text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        drop(first);
        assert!(ResultsLock::acquire(&out).is_ok(), "released when dropped");
    }
}
