//! The per-cell directory for QEMU's Unix sockets (control channel, QMP). Socket paths
//! are limited to 108 bytes, so it lives in the temp directory, not the results. Its name
//! carries the harness's pid: a harness killed outright cannot remove it, so the next
//! one removes the directories of processes that are gone.

use std::path::{Path, PathBuf};
use std::sync::Once;

const PREFIX: &str = "kchaos-";

/// A socket directory, removed when dropped.
#[derive(Debug)]
pub struct SocketDir {
    dir: tempfile::TempDir,
}

impl SocketDir {
    /// Creates `$TMPDIR/kchaos-<pid>-XXXXXX`, sweeping leftovers of dead harnesses first
    /// (once per process).
    pub fn create() -> std::io::Result<SocketDir> {
        static SWEEP: Once = Once::new();
        SWEEP.call_once(|| {
            let removed = sweep(&std::env::temp_dir(), &alive);
            if removed > 0 {
                tracing::info!("removed {removed} socket directories of dead kchaos processes");
            }
        });
        let dir = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{}-", std::process::id()))
            .tempdir()?;
        Ok(SocketDir { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// The pid a socket directory name carries: `kchaos-<pid>-<random>`.
pub fn owner_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, random) = rest.split_once('-')?;
    if random.is_empty() {
        return None;
    }
    pid.parse().ok().filter(|p| *p > 0)
}

/// Whether process `pid` exists.
pub fn alive(pid: i32) -> bool {
    // Signal 0 checks existence; EPERM means it exists but is not ours.
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Removes the socket directories in `tmp` whose owner is not `alive`; returns how many.
/// Only directories owned by this user are touched.
pub fn sweep(tmp: &Path, alive: &dyn Fn(i32) -> bool) -> usize {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return 0;
    };
    let uid = nix::unistd::geteuid().as_raw();
    let mut removed = 0;
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(owner_pid) else {
            continue;
        };
        let path: PathBuf = entry.path();
        let mine = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && m.uid() == uid);
        if mine && !alive(pid) && std::fs::remove_dir_all(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_owner() {
        assert_eq!(owner_pid("kchaos-1234-abcDEF"), Some(1234));
        assert_eq!(owner_pid("kchaos-1234-"), None);
        assert_eq!(owner_pid("kchaos-abcdef"), None);
        assert_eq!(owner_pid("other-1-x"), None);
    }

    #[test]
    fn directories_of_dead_owners_are_swept_and_live_ones_kept() {
        let tmp = tempfile::tempdir().unwrap();
        for name in [
            "kchaos-111-aaa",
            "kchaos-222-bbb",
            "kchaos-xyz",
            "unrelated",
        ] {
            std::fs::create_dir(tmp.path().join(name)).unwrap();
            std::fs::write(tmp.path().join(name).join("ctl.sock"), b"").unwrap();
        }
        let removed = sweep(tmp.path(), &|pid| pid == 222);
        assert_eq!(removed, 1);
        assert!(!tmp.path().join("kchaos-111-aaa").exists());
        for kept in ["kchaos-222-bbb", "kchaos-xyz", "unrelated"] {
            assert!(tmp.path().join(kept).exists(), "{kept}");
        }
    }

    #[test]
    fn a_live_process_is_alive() {
        assert!(alive(i32::try_from(std::process::id()).unwrap()));
    }
}
