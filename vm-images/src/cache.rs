//! The on-disk cache: downloaded kernels, built images. Everything in it is keyed by its
//! inputs (package version, content hashes), installed atomically, and safe to delete.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("Cannot create cache directory {path}")]
    Create {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot write {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot install {from} as {to}")]
    Install {
        from: String,
        to: String,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    pub fn new(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    /// `$KCHAOS_CACHE`, else `$XDG_CACHE_HOME/kchaos`, else `~/.cache/kchaos`.
    pub fn default_root() -> PathBuf {
        if let Some(dir) = std::env::var_os("KCHAOS_CACHE").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir);
        }
        if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir).join("kchaos");
        }
        match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
            Some(home) => PathBuf::from(home).join(".cache").join("kchaos"),
            None => PathBuf::from("/var/tmp/kchaos"),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A subdirectory, created if missing.
    pub fn dir(&self, sub: &str) -> Result<PathBuf, CacheError> {
        let path = self.root.join(sub);
        std::fs::create_dir_all(&path).map_err(|source| CacheError::Create {
            path: path.display().to_string(),
            source,
        })?;
        Ok(path)
    }

    /// A fresh scratch directory next to where its result will be installed (same
    /// filesystem, so the final rename is atomic).
    pub fn scratch(&self, sub: &str) -> Result<tempfile::TempDir, CacheError> {
        let parent = self.dir(sub)?;
        tempfile::Builder::new()
            .prefix(".tmp-")
            .tempdir_in(&parent)
            .map_err(|source| CacheError::Create {
                path: parent.display().to_string(),
                source,
            })
    }

    /// Writes `bytes` to `path` atomically (temp file + rename).
    pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
        let err = |source| CacheError::Write {
            path: path.display().to_string(),
            source,
        };
        let parent = path.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(parent).map_err(err)?;
        tmp.write_all(bytes).map_err(err)?;
        tmp.as_file().sync_all().map_err(err)?;
        tmp.persist(path).map_err(|e| err(e.error))?;
        Ok(())
    }

    /// Moves a finished directory into place. If another process installed the same key
    /// first, its copy wins and ours is discarded: both were built from the same inputs.
    pub fn install_dir(from: &Path, to: &Path) -> Result<(), CacheError> {
        match std::fs::rename(from, to) {
            Ok(()) => Ok(()),
            Err(_) if to.join(".complete").exists() => Ok(()),
            Err(source) => Err(CacheError::Install {
                from: from.display().to_string(),
                to: to.display().to_string(),
                source,
            }),
        }
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Incremental hashing of several inputs into one cache key.
#[derive(Debug, Default)]
pub struct KeyHasher(Sha256);

impl KeyHasher {
    pub fn new(domain: &str) -> KeyHasher {
        let mut h = KeyHasher(Sha256::new());
        h.field(domain.as_bytes());
        h
    }

    /// Length-prefixed so `("ab","c")` and `("a","bc")` differ.
    pub fn field(&mut self, bytes: &[u8]) -> &mut KeyHasher {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    pub fn finish(self) -> String {
        hex(&self.0.finalize())
    }
}
