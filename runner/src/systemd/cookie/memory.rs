//! Reading and writing another process's memory: its private writable mappings from
//! `/proc/PID/maps`, `process_vm_readv`/`process_vm_writev` (no ptrace stop needed to
//! read; on a kernel built without them, `CONFIG_CROSS_MEMORY_ATTACH=n` as a minimal
//! config is, `/proc/PID/mem`), and the cgroup freezer that holds PID 1 still while a word is written (the
//! kernel ignores SIGSTOP for init; the freezer does not).

use std::io::{IoSlice, IoSliceMut};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::uio::{process_vm_readv, process_vm_writev, RemoteIoVec};
use nix::unistd::Pid;

/// Bytes of memory searched at most: systemd's heap is a few MiB; a process with more
/// anonymous memory than this is not the PID 1 the search was written for.
pub const MAX_SEARCH: u64 = 512 << 20;
/// Bytes read per `process_vm_readv`.
const CHUNK: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("Cannot read {path}")]
    Maps {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot read {len} bytes at {addr:#x} of PID {pid}")]
    Read {
        pid: i32,
        addr: u64,
        len: usize,
        #[source]
        source: nix::Error,
    },
    #[error("Cannot write the word at {addr:#x} of PID {pid}")]
    Write {
        pid: i32,
        addr: u64,
        #[source]
        source: nix::Error,
    },
    #[error("Cannot write {value} to {path}")]
    Freezer {
        path: String,
        value: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} did not report `frozen 1` within {timeout:?}")]
    NotFrozen { path: String, timeout: Duration },
}

/// One mapping worth searching: private, readable and writable, anonymous or the heap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
}

/// The mappings of a `/proc/PID/maps` text where a malloc'ed object can live: `rw-p`
/// and either the heap or anonymous (glibc's other arenas). File-backed data, stacks
/// and the vDSO's pages are not where `struct sd_bus` is allocated.
pub fn heap_regions(maps: &str) -> Vec<Region> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let range = fields.next()?;
            let perms = fields.next()?;
            let path = fields.nth(3).unwrap_or("");
            if perms != "rw-p" || !(path.is_empty() || path == "[heap]") {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let start = u64::from_str_radix(start, 16).ok()?;
            let end = u64::from_str_radix(end, 16).ok()?;
            (end > start).then_some(Region { start, end })
        })
        .collect()
}

/// The searchable regions of `pid` in address order (the heap, just above the
/// program, comes first), cut at [`MAX_SEARCH`] bytes in all.
pub fn regions(pid: Pid) -> Result<Vec<Region>, MemoryError> {
    let path = format!("/proc/{pid}/maps");
    let text = std::fs::read_to_string(&path).map_err(|source| MemoryError::Maps {
        path: path.clone(),
        source,
    })?;
    let mut total = 0;
    Ok(heap_regions(&text)
        .into_iter()
        .take_while(|r| {
            total += r.end - r.start;
            total <= MAX_SEARCH
        })
        .collect())
}

/// Reads `len` bytes at `addr` of `pid`; a short read returns what was read (a mapping
/// can shrink while we read it).
pub fn read(pid: Pid, addr: u64, len: usize) -> Result<Vec<u8>, MemoryError> {
    match read_vm(pid, addr, len) {
        Err(MemoryError::Read {
            source: nix::Error::ENOSYS,
            ..
        }) => read_proc_mem(pid, addr, len),
        other => other,
    }
}

/// The errno of an I/O error on `/proc/PID/mem`, for [`MemoryError`].
fn errno(e: &std::io::Error) -> nix::Error {
    nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

fn proc_mem(pid: Pid, write: bool) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .open(format!("/proc/{pid}/mem"))
}

/// [`read`] through `/proc/PID/mem`, for kernels without `process_vm_readv`.
fn read_proc_mem(pid: Pid, addr: u64, len: usize) -> Result<Vec<u8>, MemoryError> {
    let mem = proc_mem(pid, false).map_err(|e| MemoryError::Read {
        pid: pid.as_raw(),
        addr,
        len,
        source: errno(&e),
    })?;
    read_chunked(pid, addr, len, |buf, at, partial| {
        match mem.read_at(buf, at) {
            Ok(n) => Ok(n),
            // The end of a mapping that shrank while we read it: what was read stands.
            Err(e) if partial && e.raw_os_error() == Some(libc::EIO) => Ok(0),
            Err(e) => Err(errno(&e)),
        }
    })
}

fn read_vm(pid: Pid, addr: u64, len: usize) -> Result<Vec<u8>, MemoryError> {
    read_chunked(pid, addr, len, |buf, at, _| {
        let remote = [RemoteIoVec {
            base: usize::try_from(at).unwrap_or(usize::MAX),
            len: buf.len(),
        }];
        process_vm_readv(pid, &mut [IoSliceMut::new(buf)], &remote)
    })
}

/// Reads `len` bytes at `addr` in chunks of at most [`CHUNK`] with `chunk(buf, at,
/// partial)` (`partial`: something was read already), until `len` or a chunk of 0.
fn read_chunked(
    pid: Pid,
    addr: u64,
    len: usize,
    mut chunk: impl FnMut(&mut [u8], u64, bool) -> nix::Result<usize>,
) -> Result<Vec<u8>, MemoryError> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let want = (len - done).min(CHUNK);
        let at = addr + done as u64;
        let n = chunk(&mut buf[done..done + want], at, done > 0).map_err(|source| {
            MemoryError::Read {
                pid: pid.as_raw(),
                addr: at,
                len: want,
                source,
            }
        })?;
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    Ok(buf)
}

/// The 64-bit word at `addr` of `pid`.
pub fn read_word(pid: Pid, addr: u64) -> Result<u64, MemoryError> {
    let bytes = read(pid, addr, 8)?;
    let word: [u8; 8] = bytes.try_into().map_err(|_| MemoryError::Read {
        pid: pid.as_raw(),
        addr,
        len: 8,
        source: nix::Error::EFAULT,
    })?;
    Ok(u64::from_le_bytes(word))
}

/// Writes the 64-bit word at `addr` of `pid`.
pub fn write_word(pid: Pid, addr: u64, value: u64) -> Result<(), MemoryError> {
    match write_word_vm(pid, addr, value) {
        Err(MemoryError::Write {
            source: nix::Error::ENOSYS,
            ..
        }) => {
            let failed = |e: std::io::Error| MemoryError::Write {
                pid: pid.as_raw(),
                addr,
                source: errno(&e),
            };
            let mem = proc_mem(pid, true).map_err(failed)?;
            mem.write_all_at(&value.to_le_bytes(), addr).map_err(failed)
        }
        other => other,
    }
}

fn write_word_vm(pid: Pid, addr: u64, value: u64) -> Result<(), MemoryError> {
    let bytes = value.to_le_bytes();
    let remote = [RemoteIoVec {
        base: usize::try_from(addr).unwrap_or(usize::MAX),
        len: bytes.len(),
    }];
    let n = process_vm_writev(pid, &[IoSlice::new(&bytes)], &remote).map_err(|source| {
        MemoryError::Write {
            pid: pid.as_raw(),
            addr,
            source,
        }
    })?;
    if n == bytes.len() {
        Ok(())
    } else {
        Err(MemoryError::Write {
            pid: pid.as_raw(),
            addr,
            source: nix::Error::EFAULT,
        })
    }
}

/// PID 1's cgroup held frozen until dropped: its tasks stop at their next return to user
/// space, so no `++bus->cookie` is half done while the word is written.
#[derive(Debug)]
pub struct Frozen {
    dir: PathBuf,
}

impl Frozen {
    /// Freezes the cgroup at `dir` and waits until the kernel reports it frozen.
    pub fn new(dir: impl Into<PathBuf>, timeout: Duration) -> Result<Frozen, MemoryError> {
        let dir = dir.into();
        write_freeze(&dir, "1")?;
        let frozen = Frozen { dir };
        let events = frozen.dir.join("cgroup.events");
        let deadline = Instant::now() + timeout;
        loop {
            let text = std::fs::read_to_string(&events).unwrap_or_default();
            if text.lines().any(|l| l.trim() == "frozen 1") {
                return Ok(frozen);
            }
            if Instant::now() >= deadline {
                return Err(MemoryError::NotFrozen {
                    path: events.display().to_string(),
                    timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if let Err(e) = write_freeze(&self.dir, "0") {
            tracing::error!(error = %kchaos_model::error_chain(&e), "cannot thaw PID 1");
        }
    }
}

fn write_freeze(dir: &std::path::Path, value: &'static str) -> Result<(), MemoryError> {
    let path = dir.join("cgroup.freeze");
    std::fs::write(&path, value).map_err(|source| MemoryError::Freezer {
        path: path.display().to_string(),
        value,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_heap_and_anonymous_private_writable_mappings_are_searched() {
        let maps = "\
55d0c0a00000-55d0c0a2a000 r--p 00000000 fe:01 1234   /usr/lib/systemd/systemd
55d0c0b00000-55d0c0b02000 rw-p 0002a000 fe:01 1234   /usr/lib/systemd/systemd
55d0c1000000-55d0c1400000 rw-p 00000000 00:00 0      [heap]
7f0000000000-7f0000021000 rw-p 00000000 00:00 0 
7f0000100000-7f0000200000 rw-s 00000000 00:05 77     /memfd:journal (deleted)
7f0000300000-7f0000301000 r--p 00000000 00:00 0 
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0      [stack]
garbage line
";
        assert_eq!(
            heap_regions(maps),
            vec![
                Region {
                    start: 0x55d0_c100_0000,
                    end: 0x55d0_c140_0000
                },
                Region {
                    start: 0x7f00_0000_0000,
                    end: 0x7f00_0002_1000
                },
            ]
        );
    }

    #[test]
    fn proc_mem_reads_what_process_vm_readv_reads() {
        // The fallback for kernels without process_vm_readv (ENOSYS), on our own memory.
        let pid = nix::unistd::getpid();
        let data: Vec<u8> = (0..=255u8).cycle().take(3 * 4096 + 17).collect();
        let addr = data.as_ptr() as u64;
        assert_eq!(read_proc_mem(pid, addr, data.len()).unwrap(), data);
        assert_eq!(read_vm(pid, addr, data.len()).unwrap(), data);
        // Nothing mapped at 0: an error naming where, not a short success.
        let err = read_proc_mem(pid, 0, 8).unwrap_err();
        assert!(err.to_string().contains("0x0"), "{err}");
    }

    #[test]
    fn our_own_memory_reads_and_writes_back() {
        let pid = nix::unistd::getpid();
        let cell = Box::new(0x1234_5678_u64);
        let addr = std::ptr::addr_of!(*cell) as u64;
        assert_eq!(read_word(pid, addr).unwrap(), 0x1234_5678);
        write_word(pid, addr, 0xffff_ff00).unwrap();
        // SAFETY: `cell` is live; the write went through the kernel, so read it back
        // without letting the compiler assume the value it last stored.
        let now = unsafe { std::ptr::read_volatile(std::ptr::addr_of!(*cell)) };
        assert_eq!(now, 0xffff_ff00);
        assert!(!regions(pid).unwrap().is_empty(), "a process has a heap");
    }
}
