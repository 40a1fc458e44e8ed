//! The git commands a bisection over a source tree needs: resolve revisions, list the
//! commits between two of them, and keep a worktree of kchaos's own at a commit. The
//! user's checkout (its files, index and HEAD) is never touched: the worktree lives in
//! the cache; git only records it under the repository's `.git/worktrees/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::error::TreeError;
use crate::file_io::io;
use crate::host_tool::{self, CommandError};

/// A commit of the range, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub hash: String,
    pub subject: String,
}

/// A git repository, by the top of its work tree (or its git directory when bare).
#[derive(Debug, Clone)]
pub struct Repo {
    pub dir: PathBuf,
}

fn git(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    // Never ask anything (a pager, credentials): kchaos runs unattended.
    cmd.arg("-C")
        .arg(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_PAGER", "cat");
    cmd
}

fn run(dir: &Path, args: &[&str]) -> Result<String, TreeError> {
    host_tool::run(git(dir).args(args)).map_err(|e| match e {
        CommandError::Spawn { .. } => TreeError::NoGit,
        e => TreeError::Git(e),
    })
}

impl Repo {
    /// The repository holding `dir`: its canonical top directory.
    pub fn open(dir: &Path) -> Result<Repo, TreeError> {
        if !dir.is_dir() {
            return Err(TreeError::NotARepo {
                dir: dir.display().to_string(),
                why: "it is not a directory".to_owned(),
            });
        }
        let not_repo = |e: TreeError| match e {
            TreeError::Git(CommandError::Failed { stderr, .. }) => TreeError::NotARepo {
                dir: dir.display().to_string(),
                why: stderr.trim().to_owned(),
            },
            e => e,
        };
        let bare = run(dir, &["rev-parse", "--is-bare-repository"]).map_err(not_repo)?;
        let top = if bare.trim() == "true" {
            run(dir, &["rev-parse", "--absolute-git-dir"])?
        } else {
            run(dir, &["rev-parse", "--show-toplevel"])?
        };
        let top = PathBuf::from(top.trim());
        let dir = top.canonicalize().unwrap_or(top);
        Ok(Repo { dir })
    }

    /// The full hash of the commit `rev` names.
    pub fn resolve(&self, rev: &str) -> Result<String, TreeError> {
        if rev.starts_with('-') {
            return Err(TreeError::BadRev {
                rev: rev.to_owned(),
                why: "a revision does not start with `-`".to_owned(),
            });
        }
        let spec = format!("{rev}^{{commit}}");
        run(&self.dir, &["rev-parse", "--verify", "--quiet", &spec])
            .map(|h| h.trim().to_owned())
            .map_err(|_| TreeError::BadRev {
                rev: rev.to_owned(),
                why: format!("no commit by that name in {}", self.dir.display()),
            })
    }

    /// `good`, then the commits after it up to and including `bad`, oldest first,
    /// along `bad`'s first-parent line: a merge counts as one commit (the point where
    /// its branch arrived), as the nightly saw it. `good` must be an ancestor of `bad`.
    pub fn range(&self, good: &str, bad: &str) -> Result<Vec<Commit>, TreeError> {
        let ancestor = git(&self.dir)
            .args(["merge-base", "--is-ancestor", good, bad])
            .status()
            .map_err(|_| TreeError::NoGit)?;
        if !ancestor.success() {
            return Err(TreeError::NotAncestor {
                good: good.to_owned(),
                bad: bad.to_owned(),
            });
        }
        let first = self.commit(good)?;
        let log = run(
            &self.dir,
            &[
                "log",
                "--first-parent",
                "--reverse",
                "--format=%H%x09%s",
                &format!("{good}..{bad}"),
            ],
        )?;
        let mut commits = vec![first];
        commits.extend(parse_log(&log));
        Ok(commits)
    }

    /// One commit's hash and subject.
    pub fn commit(&self, rev: &str) -> Result<Commit, TreeError> {
        let line = run(&self.dir, &["log", "-1", "--format=%H%x09%s", rev])?;
        parse_log(&line)
            .into_iter()
            .next()
            .ok_or_else(|| TreeError::BadRev {
                rev: rev.to_owned(),
                why: "git log printed nothing for it".to_owned(),
            })
    }

    /// `git describe --always` of a commit (tags make it readable: `v6.1-12-gabc`).
    pub fn describe(&self, hash: &str) -> Option<String> {
        run(&self.dir, &["describe", "--always", "--abbrev=12", hash])
            .ok()
            .map(|d| d.trim().to_owned())
    }

    /// Makes `dir` a worktree of this repository, detached at `hash`, reusing it when it
    /// already is one: `git checkout` then rewrites only the files that differ, so
    /// Kbuild (which goes by modification times) recompiles only what changed.
    pub fn worktree_at(&self, dir: &Path, hash: &str) -> Result<(), TreeError> {
        let ours = dir.join(".git").exists()
            && run(dir, &["rev-parse", "--show-toplevel"])
                .ok()
                .and_then(|t| PathBuf::from(t.trim()).canonicalize().ok())
                == dir.canonicalize().ok();
        if ours {
            return run(dir, &["checkout", "--quiet", "--detach", "--force", hash]).map(drop);
        }
        // A directory git no longer knows (pruned, or half made): start again.
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(io("remove", dir))?;
        }
        run(&self.dir, &["worktree", "prune"])?;
        let target = dir.display().to_string();
        run(
            &self.dir,
            &[
                "worktree", "add", "--quiet", "--detach", "--force", &target, hash,
            ],
        )
        .map(drop)
    }
}

/// `git log --format=%H%x09%s` lines as commits.
pub(crate) fn parse_log(text: &str) -> Vec<Commit> {
    text.lines()
        .filter_map(|line| {
            let (hash, subject) = line.split_once('\t').unwrap_or((line, ""));
            let hash = hash.trim();
            (hash.len() >= 40 && hash.chars().all(|c| c.is_ascii_hexdigit())).then(|| Commit {
                hash: hash.to_owned(),
                subject: subject.to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_become_commits() {
        let a = "a".repeat(40);
        let b = "0123456789abcdef0123456789abcdef01234567";
        let text = format!("{a}\tnet: fix the thing\n{b}\t\nnot a commit\n\n");
        assert_eq!(
            parse_log(&text),
            vec![
                Commit {
                    hash: a.clone(),
                    subject: "net: fix the thing".into()
                },
                Commit {
                    hash: b.into(),
                    subject: String::new()
                }
            ]
        );
    }

    fn sh(dir: &Path, script: &str) {
        let ok = Command::new("sh")
            .arg("-ec")
            .arg(script)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t")
            .status()
            .unwrap()
            .success();
        assert!(ok, "{script}");
    }

    #[test]
    fn a_range_a_worktree_and_the_users_checkout_untouched() {
        if Command::new("git").arg("--version").output().is_err() {
            eprintln!("skipping: git is not installed");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let repo_dir = tmp.path().join("repo");
        std::fs::create_dir(&repo_dir).unwrap();
        sh(
            &repo_dir,
            "git init -q -b main . && for i in 1 2 3 4; do echo $i > f; git add f; git commit -qm \"c$i\"; done
             git tag -a -m v1 v1 HEAD~3
             git checkout -q -b side HEAD~1 && echo s > s && git add s && git commit -qm side
             git checkout -q main && git merge -q --no-ff -m merge side && echo 5 > f && git commit -qam c5
             echo local > f",
        );
        let repo = Repo::open(&repo_dir.join(".git/..")).unwrap();
        assert_eq!(repo.dir, repo_dir.canonicalize().unwrap());
        let good = repo.resolve("v1").unwrap();
        let bad = repo.resolve("main").unwrap();
        let range = repo.range(&good, &bad).unwrap();
        let subjects: Vec<&str> = range.iter().map(|c| c.subject.as_str()).collect();
        // The merge is one step on the first-parent line; `side` is inside it.
        assert_eq!(subjects, ["c1", "c2", "c3", "c4", "merge", "c5"]);
        assert!(matches!(
            repo.range(&bad, &good),
            Err(TreeError::NotAncestor { .. })
        ));
        assert!(matches!(
            repo.resolve("nope"),
            Err(TreeError::BadRev { .. })
        ));
        assert!(matches!(
            repo.resolve("--all"),
            Err(TreeError::BadRev { .. })
        ));
        assert!(repo.describe(&range[2].hash).unwrap().starts_with("v1-2-g"));

        let wt = tmp.path().join("wt");
        repo.worktree_at(&wt, &range[1].hash).unwrap();
        assert_eq!(std::fs::read_to_string(wt.join("f")).unwrap(), "2\n");
        repo.worktree_at(&wt, &range[5].hash).unwrap();
        assert_eq!(std::fs::read_to_string(wt.join("f")).unwrap(), "5\n");
        assert!(wt.join("s").exists());
        // The user's checkout keeps its branch and its uncommitted change.
        assert_eq!(
            std::fs::read_to_string(repo_dir.join("f")).unwrap(),
            "local\n"
        );
        let head = run(&repo_dir, &["symbolic-ref", "HEAD"]).unwrap();
        assert_eq!(head.trim(), "refs/heads/main");
        // A worktree directory git forgot is made again.
        std::fs::remove_file(wt.join(".git")).unwrap();
        repo.worktree_at(&wt, &range[0].hash).unwrap();
        assert_eq!(std::fs::read_to_string(wt.join("f")).unwrap(), "1\n");

        let not_repo = tmp.path().join("plain");
        std::fs::create_dir(&not_repo).unwrap();
        assert!(matches!(
            Repo::open(&not_repo),
            Err(TreeError::NotARepo { .. })
        ));
    }
}
