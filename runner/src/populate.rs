//! The job of the short-lived process each churned cgroup gets (the incident's proof of
//! concept): once inside the cgroup, write files under a fresh directory, so page cache,
//! dentries and inodes are charged to it.

use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PopulateError {
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
            PopulateError::Mkdir { source, .. }
            | PopulateError::Create { source, .. }
            | PopulateError::Write { source, .. } => source,
        };
        format!("{self}: {source}")
    }
}

/// `files` files `f0`, `f1`, ... of `size` bytes each in the new directory `dir`.
pub fn write_files(dir: &Path, files: u32, size: u64) -> Result<(), PopulateError> {
    std::fs::create_dir_all(dir).map_err(|source| PopulateError::Mkdir {
        path: dir.to_path_buf(),
        source,
    })?;
    let block = vec![0x6bu8; usize::try_from(size.min(1 << 20)).unwrap_or(1 << 20)];
    for i in 0..files {
        let path = dir.join(format!("f{i}"));
        let mut f = match std::fs::File::create(&path) {
            Ok(f) => f,
            Err(source) => return Err(PopulateError::Create { path, source }),
        };
        let mut left = size;
        while left > 0 {
            let n = usize::try_from(left).map_or(block.len(), |l| l.min(block.len()));
            if let Err(source) = f.write_all(&block[..n]) {
                return Err(PopulateError::Write { path, size, source });
            }
            left -= n as u64;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_files_and_names_the_path_when_it_cannot() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("kchaos-churn-7");
        write_files(&dir, 3, 5000).unwrap();
        for i in 0..3 {
            assert_eq!(
                std::fs::metadata(dir.join(format!("f{i}"))).unwrap().len(),
                5000
            );
        }
        // A regular file where the directory should be: mkdir fails, naming the path.
        let blocked = tmp.path().join("file");
        std::fs::write(&blocked, b"x").unwrap();
        let e = write_files(&blocked.join("sub"), 1, 1).unwrap_err();
        assert!(
            e.chain()
                .starts_with(&format!("mkdir {}: ", blocked.join("sub").display())),
            "{}",
            e.chain()
        );
    }
}
