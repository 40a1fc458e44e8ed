//! The initramfs: the static runner as `/init` plus exactly the modules the cell needs.
//! No busybox, no shell: native workloads need neither, and every byte here is unpacked
//! on every boot under TCG.
//!
//! Uncompressed `newc`: decompression under TCG costs more than copying the bytes.

use std::io::Write;
use std::path::PathBuf;

use kchaos_model::image::INIT_PATH;

use super::payload::{self, Payload};
use crate::cache::{Cache, CacheError, KeyedFile};

/// Bump when the image layout changes so old cache entries are not reused.
const FORMAT: &str = "kchaos-initramfs-v1";

#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("Cannot write initramfs")]
    Write(#[source] std::io::Error),
    #[error("Initramfs entry {name} is larger than the newc format allows")]
    TooLarge { name: String },
}

#[derive(Debug, Clone)]
pub struct Initramfs {
    pub path: PathBuf,
    /// Content hash of the inputs: the cache key, recorded with every result.
    pub key: String,
    pub size: u64,
}

/// Initramfs archives kept in the cache (least recently used ones go first).
pub const KEEP_INITRAMFS: usize = 16;

/// Builds (or finds in the cache) the initramfs for this payload.
pub fn build(cache: &Cache, payload: &Payload<'_>) -> Result<Initramfs, InitramfsError> {
    let key = payload.key(FORMAT);
    let KeyedFile { dir, path, built } = cache.keyed_file("initramfs", &key, "cpio")?;
    if let Some(size) = built {
        return Ok(Initramfs { path, key, size });
    }
    let bytes = archive(payload)?;
    Cache::write_atomic(&path, &bytes)?;
    // Each runner build and kernel makes a new one (~8 MB): keep the recently used.
    crate::cache::evict_lru(&dir, "cpio", KEEP_INITRAMFS, Some(&path));
    tracing::info!(path = %path.display(), size = bytes.len(), modules = payload.modules.len(), "built initramfs");
    Ok(Initramfs {
        path,
        key,
        size: bytes.len() as u64,
    })
}

/// The archive bytes for this payload, without caching.
pub fn archive(payload: &Payload<'_>) -> Result<Vec<u8>, InitramfsError> {
    let mut w = Writer {
        out: Vec::with_capacity(payload.runner.len() + (4 << 20)),
        ino: 1,
    };
    let mut made = std::collections::BTreeSet::new();
    for dir in ["dev", "proc", "sys", "tmp", "run"] {
        w.dir(dir)?;
        made.insert(dir.to_owned());
    }
    // The kernel opens /dev/console for init's stdio before init runs, i.e. before the
    // runner can mount devtmpfs.
    w.char_device("dev/console", 5, 1)?;
    for file in payload.files(INIT_PATH, FORMAT) {
        for parent in payload::parents(&file.path) {
            if made.insert(parent.clone()) {
                w.dir(&parent)?;
            }
        }
        w.file(file.path.trim_start_matches('/'), file.mode, &file.data)?;
    }
    w.finish()
}

struct Writer {
    out: Vec<u8>,
    ino: u32,
}

impl Writer {
    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        data: &[u8],
        rdev: Option<(u32, u32)>,
    ) -> Result<(), InitramfsError> {
        let size = u32::try_from(data.len()).map_err(|_| InitramfsError::TooLarge {
            name: name.to_owned(),
        })?;
        let mut builder = cpio::newc::Builder::new(name)
            .ino(self.ino)
            .mode(mode)
            .uid(0)
            .gid(0)
            .nlink(1);
        if let Some((major, minor)) = rdev {
            builder = builder.rdev_major(major).rdev_minor(minor);
        }
        self.ino += 1;
        let mut writer = builder.write(&mut self.out, size);
        writer.write_all(data).map_err(InitramfsError::Write)?;
        writer.finish().map_err(InitramfsError::Write)?;
        Ok(())
    }

    fn dir(&mut self, name: &str) -> Result<(), InitramfsError> {
        self.entry(name, 0o040_755, &[], None)
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> Result<(), InitramfsError> {
        self.entry(name, 0o100_000 | perm, data, None)
    }

    fn char_device(&mut self, name: &str, major: u32, minor: u32) -> Result<(), InitramfsError> {
        self.entry(name, 0o020_600, &[], Some((major, minor)))
    }

    fn finish(self) -> Result<Vec<u8>, InitramfsError> {
        cpio::newc::trailer(self.out).map_err(InitramfsError::Write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::modules::LoadableModule;

    fn names(archive: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut rest = archive;
        loop {
            let mut reader = cpio::newc::Reader::new(rest).unwrap();
            if reader.entry().is_trailer() {
                break;
            }
            let name = reader.entry().name().to_owned();
            let mode = reader.entry().mode();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut reader, &mut data).unwrap();
            out.push((name, mode, data));
            rest = reader.finish().unwrap();
        }
        out
    }

    #[test]
    fn archive_has_init_console_modules_and_their_order() {
        let modules = vec![
            LoadableModule {
                name: "virtio".into(),
                relative: "kernel/drivers/virtio/virtio.ko".into(),
                data: b"\x7fELFa".to_vec(),
            },
            LoadableModule {
                name: "virtio_console".into(),
                relative: "kernel/drivers/char/virtio_console.ko".into(),
                data: b"\x7fELFb".to_vec(),
            },
        ];
        let bytes = archive(&Payload {
            runner: b"RUNNER",
            release: "6.1.0-test",
            modules: &modules,
            tools: &[],
        })
        .unwrap();
        let entries = names(&bytes);
        let find = |n: &str| entries.iter().find(|(name, _, _)| name == n).cloned();
        assert_eq!(
            find("init").map(|e| (e.1, e.2)),
            Some((0o100_755, b"RUNNER".to_vec()))
        );
        assert_eq!(find("dev/console").map(|e| e.1), Some(0o020_600));
        assert!(find("lib/modules/6.1.0-test/kernel/drivers/char").is_some());
        let order = find("kchaos/modules.order").unwrap().2;
        assert_eq!(
            String::from_utf8(order).unwrap(),
            "/lib/modules/6.1.0-test/kernel/drivers/virtio/virtio.ko\n/lib/modules/6.1.0-test/kernel/drivers/char/virtio_console.ko\n"
        );
    }

    #[test]
    fn cache_key_follows_the_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let with_runner = |runner: &'static [u8]| {
            let payload = Payload {
                runner,
                release: "r",
                modules: &[],
                tools: &[],
            };
            build(&cache, &payload).unwrap()
        };
        let a = with_runner(b"A");
        let again = with_runner(b"A");
        let b = with_runner(b"B");
        assert_eq!(a.path, again.path);
        assert_ne!(a.key, b.key);
        assert!(b.path.exists());
    }
}
