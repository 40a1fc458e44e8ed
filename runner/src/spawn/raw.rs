//! The populate job as a child that touches almost nothing: system calls on paths and a
//! buffer prepared by the helper before the clone. Under TCG every page a new process
//! touches is a page fault costing tens of microseconds, and the standard library's
//! file and formatting code spans dozens of pages; this child runs in a handful.
//!
//! Why not a `vfork`-style child (`CLONE_VM`) of the runner, which would fault nothing
//! at all: page cache is charged to the memory cgroup of the **mm's owner**, so a child
//! sharing the runner's memory charges its files to the runner's cgroup, not its own
//! (measured: `memory.stat` `file` = 0 in every churned cgroup, and no dying cgroups).
//! The populate process needs a memory map of its own; the helper's is small.

use std::ffi::{c_int, CString};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use super::Target;
use crate::spawn::populate::PopulateError;

/// Largest block written at once (files are written in blocks of this size).
const MAX_BLOCK: usize = 64 * 1024;
/// The child's failure report: step, index, errno, as native-endian u32/i32.
const REPORT_LEN: usize = 12;

/// Which step of the child failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
enum Step {
    Join = 1,
    Mkdir = 2,
    Create = 3,
    Write = 4,
}

/// Everything the child uses, built before the clone.
#[derive(Debug)]
pub struct Plan {
    procs: Vec<CString>,
    dir: CString,
    files: Vec<CString>,
    size: u64,
    block: Vec<u8>,
    /// The same paths, for the parent's error messages.
    procs_paths: Vec<PathBuf>,
    dir_path: PathBuf,
    file_paths: Vec<PathBuf>,
}

impl Plan {
    /// `None` if a path holds a NUL byte (cgroup and file paths never do).
    pub fn new(target: &Target, dir: &Path, files: u32, size: u64) -> Option<Plan> {
        let cstr = |p: &Path| CString::new(p.as_os_str().as_bytes()).ok();
        let procs_paths: Vec<PathBuf> =
            target.dirs.iter().map(|d| d.join("cgroup.procs")).collect();
        let file_paths: Vec<PathBuf> = (0..files).map(|i| dir.join(format!("f{i}"))).collect();
        Some(Plan {
            procs: procs_paths.iter().map(|p| cstr(p)).collect::<Option<_>>()?,
            dir: cstr(dir)?,
            files: file_paths.iter().map(|p| cstr(p)).collect::<Option<_>>()?,
            size,
            block: vec![0x6b; usize::try_from(size).map_or(MAX_BLOCK, |s| s.clamp(1, MAX_BLOCK))],
            procs_paths,
            dir_path: dir.to_path_buf(),
            file_paths,
        })
    }

    /// The error a failure report describes, for the parent; `None` if it is not one.
    pub fn describe(&self, report: &[u8]) -> Option<PopulateError> {
        let word = |i: usize| report.get(i * 4..i * 4 + 4).and_then(|b| b.try_into().ok());
        let (step, index, errno) = (
            u32::from_ne_bytes(word(0)?),
            u32::from_ne_bytes(word(1)?),
            i32::from_ne_bytes(word(2)?),
        );
        let source = std::io::Error::from_raw_os_error(errno);
        let nth = |paths: &[PathBuf]| {
            usize::try_from(index)
                .ok()
                .and_then(|i| paths.get(i))
                .cloned()
                .unwrap_or_default()
        };
        Some(match step {
            s if s == Step::Join as u32 => PopulateError::Join {
                path: nth(&self.procs_paths),
                source,
            },
            s if s == Step::Mkdir as u32 => PopulateError::Mkdir {
                path: self.dir_path.clone(),
                source,
            },
            s if s == Step::Create as u32 => PopulateError::Create {
                path: nth(&self.file_paths),
                source,
            },
            s if s == Step::Write as u32 => PopulateError::Write {
                path: nth(&self.file_paths),
                size: self.size,
                source,
            },
            _ => return None,
        })
    }
}

/// The child: joins (unless born in the cgroup), writes, and returns its exit code; a
/// failure is reported on `report` first.
pub fn child(plan: &Plan, join: bool, report: BorrowedFd<'_>) -> i32 {
    match run(plan, join) {
        Ok(()) => 0,
        Err((step, index)) => {
            let errno = Errno::last_raw();
            let mut record = [0u8; REPORT_LEN];
            record[..4].copy_from_slice(&(step as u32).to_ne_bytes());
            record[4..8].copy_from_slice(&index.to_ne_bytes());
            record[8..].copy_from_slice(&errno.to_ne_bytes());
            let _ = write_all(report.as_raw_fd(), &record);
            1
        }
    }
}

fn run(plan: &Plan, join: bool) -> Result<(), (Step, u32)> {
    if join {
        for (i, procs) in (0u32..).zip(&plan.procs) {
            let fd = open(procs, libc::O_WRONLY).ok_or((Step::Join, i))?;
            let ok = write_all(fd, b"0");
            close(fd);
            ok.ok_or((Step::Join, i))?;
        }
    }
    // SAFETY: a NUL-terminated path; mkdir does not keep the pointer.
    if unsafe { libc::mkdir(plan.dir.as_ptr(), 0o755) } != 0 && Errno::last() != Errno::EEXIST {
        return Err((Step::Mkdir, 0));
    }
    for (i, path) in (0u32..).zip(&plan.files) {
        let fd =
            open(path, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC).ok_or((Step::Create, i))?;
        let mut left = plan.size;
        let mut ok = Some(());
        while left > 0 && ok.is_some() {
            let n = usize::try_from(left).map_or(plan.block.len(), |l| l.min(plan.block.len()));
            ok = plan.block.get(..n).and_then(|b| write_all(fd, b));
            left = left.saturating_sub(n as u64);
        }
        close(fd);
        ok.ok_or((Step::Write, i))?;
    }
    Ok(())
}

fn open(path: &CString, flags: c_int) -> Option<c_int> {
    // SAFETY: a NUL-terminated path; open does not keep the pointer.
    let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
    (fd >= 0).then_some(fd)
}

fn write_all(fd: c_int, mut buf: &[u8]) -> Option<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for its length; write does not keep the pointer.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        match usize::try_from(n) {
            Ok(0) => return None,
            Ok(n) => buf = buf.get(n..)?,
            Err(_) if Errno::last() == Errno::EINTR => {}
            Err(_) => return None,
        }
    }
    Some(())
}

fn close(fd: c_int) {
    // SAFETY: closes a descriptor this child opened and owns.
    unsafe { libc::close(fd) };
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::fd::AsFd;

    use super::*;

    fn nowhere() -> Target {
        Target {
            dirs: Vec::new(),
            unified: false,
        }
    }

    /// Runs the child's code in this process (it is plain code; the clone is not its
    /// business) and decodes what it reported.
    fn run_here(target: &Target, dir: &Path, files: u32, size: u64) -> Result<(), String> {
        let plan = Plan::new(target, dir, files, size).unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        let code = child(&plan, true, w.as_fd());
        drop(w);
        let mut report = Vec::new();
        std::fs::File::from(r).read_to_end(&mut report).unwrap();
        match code {
            0 => Ok(()),
            _ => Err(plan
                .describe(&report)
                .map(|e| e.chain())
                .unwrap_or_default()),
        }
    }

    #[test]
    fn writes_the_files_in_blocks() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("kchaos-churn-3");
        run_here(&nowhere(), &dir, 3, 70_000).unwrap();
        for i in 0..3 {
            assert_eq!(
                std::fs::metadata(dir.join(format!("f{i}"))).unwrap().len(),
                70_000
            );
        }
    }

    #[test]
    fn a_failing_step_is_reported_with_its_path_and_errno() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("file"), b"x").unwrap();
        let e = run_here(&nowhere(), &tmp.path().join("file/sub"), 1, 1).unwrap_err();
        assert!(
            e.starts_with("mkdir ") && e.contains("file/sub") && e.contains("Not a directory"),
            "{e}"
        );
        let missing = Target::new(
            kchaos_model::scenario::CgroupMode::V1,
            vec![tmp.path().join("no-such-cgroup")],
        );
        let e = run_here(&missing, &tmp.path().join("d"), 1, 1).unwrap_err();
        assert!(
            e.starts_with("write 0 to ") && e.contains("no-such-cgroup/cgroup.procs"),
            "{e}"
        );
        assert!(Plan::new(&nowhere(), Path::new("/tmp/x"), 1, 1)
            .unwrap()
            .describe(b"short")
            .is_none());
    }
}
