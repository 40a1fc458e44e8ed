//! Reading and writing kernel files (cgroupfs, procfs) with errors that carry the path
//! and the value, so a failure in a report says which file refused what.

use std::path::{Path, PathBuf};

use kchaos_model::scenario::CounterSelect;

use crate::probes::parse_counter;

#[derive(Debug, thiserror::Error)]
pub enum KernelFileError {
    #[error("Cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("Cannot write {value} to {path}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
}

impl KernelFileError {
    /// The errno of a failed read or write (callers tell "not supported" from failures).
    pub fn errno(&self) -> Option<i32> {
        match self {
            KernelFileError::Read { source, .. } | KernelFileError::Write { source, .. } => {
                source.raw_os_error()
            }
            KernelFileError::Parse { .. } => None,
        }
    }
}

pub fn read(path: &Path) -> Result<String, KernelFileError> {
    std::fs::read_to_string(path).map_err(|source| KernelFileError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// One number out of a stats file; a missing key or row is an error, never zero.
pub fn read_number(path: &Path, select: &CounterSelect) -> Result<f64, KernelFileError> {
    parse_counter(&read(path)?, select).map_err(|reason| KernelFileError::Parse {
        path: path.to_path_buf(),
        reason,
    })
}

/// The value of `key` in a `key value` file (`cgroup.stat`, `memory.stat`, `cpu.stat`).
pub fn read_key(path: &Path, key: &str) -> Result<f64, KernelFileError> {
    read_number(
        path,
        &CounterSelect::Key {
            key: key.to_owned(),
        },
    )
}

pub fn write(path: &Path, value: &str) -> Result<(), KernelFileError> {
    std::fs::write(path, value).map_err(|source| KernelFileError::Write {
        path: path.to_path_buf(),
        value: value.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file_and_the_value() {
        let tmp = tempfile::tempdir().unwrap();
        let stat = tmp.path().join("cgroup.stat");
        std::fs::write(&stat, "nr_descendants 3\nnr_dying_descendants 997\n").unwrap();
        assert_eq!(read_key(&stat, "nr_dying_descendants").unwrap(), 997.0);
        let e = read_key(&stat, "nr_frozen").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}: no key `nr_frozen`", stat.display())
        );
        let missing = tmp.path().join("nope/memory.max");
        let e = write(&missing, "64M").unwrap_err();
        assert!(e.to_string().starts_with("Cannot write 64M to "), "{e}");
        assert_eq!(e.errno(), Some(libc::ENOENT));
    }
}
