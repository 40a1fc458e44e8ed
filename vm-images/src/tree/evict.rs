//! Keeping build spaces and built commits within bounds: least recently used first, never
//! the one in use.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::fcntl::{Flock, FlockArg};

use super::record::SpaceInfo;

/// Build spaces kept (each a worktree and a build directory: gigabytes).
pub(super) const KEEP_SPACES: usize = 2;
/// Built commits kept per space (a few MB each, no vmlinux).
pub(super) const KEEP_COMMITS: usize = 64;

/// Least recently used first, by the mtime of `marker` in each directory of `parent`.
fn by_age(parent: &Path, marker: &str) -> Vec<(SystemTime, PathBuf)> {
    let mut dirs: Vec<(SystemTime, PathBuf)> = crate::file_io::entries(parent)
        .filter(|p| {
            p.is_dir()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .filter_map(|p| Some((std::fs::metadata(p.join(marker)).ok()?.modified().ok()?, p)))
        .collect();
    dirs.sort();
    dirs
}

/// Keeps the most recently used build spaces; a space in use (its lock held) stays.
pub(super) fn evict_spaces(parent: &Path, current: &Path) {
    let spaces = by_age(parent, "lock");
    let excess = spaces.len().saturating_sub(KEEP_SPACES);
    for (_, old) in spaces.into_iter().take(excess) {
        if old == current {
            continue;
        }
        let Ok(file) = File::open(old.join("lock")) else {
            continue;
        };
        // Held by a build right now: leave it.
        let Ok(_held) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
            continue;
        };
        let repo = crate::cache::read_record::<SpaceInfo>(&old.join("space.json"))
            .ok()
            .map(|i| PathBuf::from(i.repo));
        tracing::info!("evicting build space {}", old.display());
        let _ = std::fs::remove_dir_all(&old);
        // The repository forgets the worktree that went with it.
        if let Some(repo) = repo.filter(|r| r.is_dir()) {
            let _ = crate::host_tool::run(
                std::process::Command::new("git")
                    .arg("-C")
                    .arg(repo)
                    .args(["worktree", "prune"]),
            );
        }
    }
}

pub(super) fn evict_commits(commits: &Path, current: &Path) {
    let built = by_age(commits, ".complete");
    let excess = built.len().saturating_sub(KEEP_COMMITS);
    for (_, old) in built.into_iter().take(excess) {
        if old != current {
            let _ = std::fs::remove_dir_all(old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_spaces_and_commits_are_evicted_but_not_the_one_in_use() {
        let parent = tempfile::tempdir().unwrap();
        let make = |name: &str, age_s: u64| {
            let d = parent.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            let f = File::create(d.join("lock")).unwrap();
            f.set_modified(SystemTime::now() - std::time::Duration::from_secs(age_s))
                .unwrap();
            d
        };
        let oldest = make("a", 300);
        let old = make("b", 200);
        let newer = make("c", 100);
        let current = make("d", 0);
        // The oldest is in use by another build: it stays, the next oldest goes.
        let busy = Flock::lock(
            File::open(oldest.join("lock")).unwrap(),
            FlockArg::LockExclusive,
        )
        .unwrap();
        evict_spaces(parent.path(), &current);
        assert!(oldest.exists() && !old.exists() && newer.exists() && current.exists());
        drop(busy);
        evict_spaces(parent.path(), &current);
        assert!(!oldest.exists() && newer.exists() && current.exists());
    }
}
