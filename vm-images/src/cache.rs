//! The on-disk cache: downloaded kernels, built images. Everything in it is keyed by its
//! inputs (package version, content hashes), installed atomically, and safe to delete.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::file_io::{entries, io, IoError};

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

    /// The file `sub/<key>.<ext>` holding one built artefact (the key shortened to 24
    /// hex digits), and its size when it is already built. A hit is touched, so
    /// least-recently-used eviction ([`evict_lru`]) keeps it.
    pub fn keyed_file(&self, sub: &str, key: &str, ext: &str) -> Result<KeyedFile, CacheError> {
        let dir = self.dir(sub)?;
        let short = key.get(..24).unwrap_or(key);
        let path = dir.join(format!("{short}.{ext}"));
        let built = std::fs::metadata(&path).ok().map(|meta| meta.len());
        if built.is_some() {
            tracing::debug!(path = %path.display(), "cache hit");
            touch(&path);
        }
        Ok(KeyedFile { dir, path, built })
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
        // A bare file name has an empty parent: the current directory.
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(parent).map_err(err)?;
        tmp.write_all(bytes).map_err(err)?;
        tmp.as_file().sync_all().map_err(err)?;
        tmp.persist(path).map_err(|e| err(e.error))?;
        // The rename is durable only once the directory entry is: a crash right after a
        // run must not bring back the previous results.json.
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
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

/// Where one keyed artefact lives in the cache ([`Cache::keyed_file`]).
#[derive(Debug, Clone)]
pub struct KeyedFile {
    /// The directory of its kind, for eviction after a build.
    pub dir: PathBuf,
    pub path: PathBuf,
    /// Its size, when it is already built.
    pub built: Option<u64>,
}

/// A JSON record kept beside a cached artefact (`kernel.json`, `build.json`,
/// `space.json`): what it was built from, read back on every cache hit.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Read(#[from] IoError),
    #[error(transparent)]
    Write(#[from] CacheError),
    #[error("Corrupt cache entry {path}; delete it and retry")]
    Corrupt {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

impl RecordError {
    fn corrupt(path: &Path) -> impl FnOnce(serde_json::Error) -> RecordError {
        let path = path.display().to_string();
        move |source| RecordError::Corrupt { path, source }
    }
}

/// Reads the record at `path`; one that does not parse is a corrupt cache entry.
pub fn read_record<T: DeserializeOwned>(path: &Path) -> Result<T, RecordError> {
    let text = std::fs::read(path).map_err(io("read", path))?;
    serde_json::from_slice(&text).map_err(RecordError::corrupt(path))
}

/// Writes `record` to `path` atomically, pretty-printed for the person reading the cache.
pub fn write_record<T: Serialize>(path: &Path, record: &T) -> Result<(), RecordError> {
    let json = serde_json::to_vec_pretty(record).map_err(RecordError::corrupt(path))?;
    Ok(Cache::write_atomic(path, &json)?)
}

/// Marks a cached file as just used, so least-recently-used eviction keeps it.
pub fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(path) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// Deletes all but the `keep` most recently used files ending in `.ext` in `dir`
/// (never `except`, the one just built or used); returns how many were removed. The
/// caches that grow with every runner build or kernel (initramfs, disks) stay bounded.
pub fn evict_lru(dir: &Path, ext: &str, keep: usize, except: Option<&Path>) -> usize {
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries(dir)
        .filter(|p| p.extension().is_some_and(|e| e == ext) && Some(p.as_path()) != except)
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    files.sort();
    let room = keep.saturating_sub(usize::from(except.is_some()));
    let excess = files.len().saturating_sub(room);
    let mut removed = 0;
    for (_, old) in files.into_iter().take(excess) {
        tracing::debug!(path = %old.display(), "evicting from the cache");
        if std::fs::remove_file(old).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Bytes and files under `path` (symlinks not followed).
pub fn disk_usage(path: &Path) -> (u64, u64) {
    let mut bytes = 0;
    let mut files = 0;
    for entry in walkdir::WalkDir::new(path)
        .follow_links(false)
        .into_iter()
        .filter_map(Result::ok)
    {
        if let Ok(meta) = entry.metadata() {
            if meta.is_file() {
                bytes += meta.len();
                files += 1;
            }
        }
    }
    (bytes, files)
}

/// `text` as part of a directory name: ASCII letters, digits and the characters in
/// `keep` stay, anything else (`/`, `:`, `~`, spaces) becomes `_`. Each caller keeps
/// what its names need (`+` of Debian versions, `_` of labels).
pub fn dir_safe(text: &str, keep: &[char]) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || keep.contains(&c) {
                c
            } else {
                '_'
            }
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dir_name_keeps_letters_digits_and_what_the_caller_keeps() {
        assert_eq!(
            dir_safe("1:6.1.192~rc1+b1", &['.', '-', '+']),
            "1_6.1.192_rc1+b1"
        );
        assert_eq!(
            dir_safe("git@host/linux.git", &['.', '-', '_']),
            "git_host_linux.git"
        );
        assert_eq!(dir_safe("a b", &[]), "a_b");
    }

    #[test]
    fn only_the_most_recently_used_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::time::SystemTime::now() - std::time::Duration::from_secs(100);
        for i in 0..5u64 {
            let p = dir.path().join(format!("{i}.cpio"));
            std::fs::write(&p, b"x").unwrap();
            let f = std::fs::File::options().append(true).open(&p).unwrap();
            f.set_modified(base + std::time::Duration::from_secs(i))
                .unwrap();
        }
        std::fs::write(dir.path().join("other.txt"), b"x").unwrap();
        // 0 is used again: it becomes the newest.
        touch(&dir.path().join("0.cpio"));
        let just_built = dir.path().join("1.cpio");
        assert_eq!(evict_lru(dir.path(), "cpio", 3, Some(&just_built)), 2);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["0.cpio", "1.cpio", "4.cpio", "other.txt"]);
        assert_eq!(disk_usage(dir.path()), (4, 4));
    }

    #[test]
    fn a_keyed_file_is_built_once_it_exists_and_a_hit_is_touched() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::new(root.path());
        let key = "0123456789abcdef0123456789abcdef";
        let miss = cache.keyed_file("initramfs", key, "cpio").unwrap();
        assert_eq!(
            miss.path,
            root.path().join("initramfs/0123456789abcdef01234567.cpio")
        );
        assert_eq!(miss.built, None);
        std::fs::write(&miss.path, b"12345").unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(1000);
        let f = std::fs::File::options()
            .append(true)
            .open(&miss.path)
            .unwrap();
        f.set_modified(old).unwrap();
        let hit = cache.keyed_file("initramfs", key, "cpio").unwrap();
        assert_eq!(hit.built, Some(5));
        let touched = std::fs::metadata(&hit.path).unwrap().modified().unwrap();
        assert!(touched > old + std::time::Duration::from_secs(500));
    }

    #[test]
    fn a_record_reads_back_and_a_damaged_one_is_a_corrupt_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("build.json");
        write_record(&path, &vec![1u32, 2]).unwrap();
        assert_eq!(read_record::<Vec<u32>>(&path).unwrap(), [1, 2]);
        std::fs::write(&path, b"{\"trunc").unwrap();
        let err = read_record::<Vec<u32>>(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "Corrupt cache entry {}; delete it and retry",
                path.display()
            )
        );
        let gone = dir.path().join("gone.json");
        let err = read_record::<Vec<u32>>(&gone).unwrap_err();
        assert_eq!(err.to_string(), format!("Cannot read {}", gone.display()));
    }
}
