//! A build space: the worktree, the build directory and the built commits of one
//! (repository, config fragments) pair, under `$KCHAOS_CACHE/kernels/bisect/`.
//!
//! ```text
//! <repo name>_<key>/
//!     lock          held while a commit builds; its mtime says when the space was used
//!     space.json    the repository and fragments it is for
//!     recipe/       build.sh, kchaos.config and the fragments, as compiled in (or named)
//!     tree/         the worktree, moved from commit to commit
//!     out/          the build directory (O=), reused by every build
//!     commits/<hash>/  bzImage, config, System.map, lib/modules/, kchaos-source,
//!                      build.log, build.json: one per commit built
//! ```

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use nix::fcntl::Flock;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::error::TreeError;
use super::evict::{evict_commits, evict_spaces};
use super::git::{Commit, Repo};
use super::record::{CommitBuild, SpaceInfo, TreeBuild};
use crate::cache::{read_record, write_record, Cache, KeyHasher};
use crate::file_io::{self, io, IoError};
use crate::kbuild::ccache::{Ccache, CcacheCounts};
use crate::kbuild::script::{self, Script, ScriptError};
use crate::kernel::recipes;

/// Bump when what a space holds or how it builds changes.
const FORMAT: &str = "kchaos-tree-build-v1";
const CACHE_SUB: &str = "kernels/bisect";

#[derive(Debug)]
pub struct BuildSpace {
    repo: Repo,
    root: PathBuf,
    /// Fragment file names as build.sh gets them (in `recipe/`).
    fragments: Vec<String>,
    ccache: Option<Ccache>,
}

/// A fragment as the user named it: a compiled-in fragment or a file.
fn fragment_bytes(name: &str) -> Result<(String, Vec<u8>), TreeError> {
    if let Some(bytes) = recipes::file(name).filter(|_| name.ends_with(".config")) {
        return Ok((name.to_owned(), bytes.to_vec()));
    }
    let path = Path::new(name);
    match std::fs::read(path) {
        Ok(bytes) => {
            let base = path.file_name().map_or_else(
                || "fragment".to_owned(),
                |n| n.to_string_lossy().into_owned(),
            );
            Ok((format!("user-{base}"), bytes))
        }
        Err(_) => Err(TreeError::UnknownFragment {
            name: name.to_owned(),
            known: recipes::fragment_names().join(", "),
        }),
    }
}

impl BuildSpace {
    /// The space for `repo` built with `fragments` (after `kchaos.config`), created on
    /// first use. `use_ccache`: compile through ccache when it is installed.
    pub fn open(
        cache: &Cache,
        repo: &Repo,
        fragments: &[String],
        use_ccache: bool,
    ) -> Result<BuildSpace, TreeError> {
        let mut files: Vec<(String, Vec<u8>)> = ["build.sh", "kchaos.config"]
            .iter()
            .filter_map(|n| recipes::file(n).map(|b| ((*n).to_owned(), b.to_vec())))
            .collect();
        let mut names = Vec::new();
        for f in fragments {
            let (name, bytes) = fragment_bytes(f)?;
            names.push(name.clone());
            files.push((name, bytes));
        }
        let ccache = use_ccache.then(|| Ccache::find(cache)).flatten();
        if use_ccache && ccache.is_none() {
            tracing::warn!(
                "ccache is not installed (Debian: `apt-get install ccache`): each step still reuses the build directory, but a file a step changes back is compiled again"
            );
        }
        let mut h = KeyHasher::new(FORMAT);
        h.field(repo.dir.as_os_str().as_encoded_bytes());
        for (name, bytes) in &files {
            h.field(name.as_bytes()).field(bytes);
        }
        h.field(&[u8::from(ccache.is_some())]);
        let key = h.finish();
        let base = repo
            .dir
            .file_name()
            .map_or_else(|| "tree".to_owned(), |n| n.to_string_lossy().into_owned());
        let parent = cache.dir(CACHE_SUB)?;
        let root = parent.join(format!("{}_{}", sanitize(&base), &key[..16.min(key.len())]));
        let recipe = root.join("recipe");
        std::fs::create_dir_all(&recipe).map_err(io("create", &recipe))?;
        for (name, bytes) in &files {
            let path = recipe.join(name);
            if std::fs::read(&path).ok().as_deref() != Some(bytes.as_slice()) {
                Cache::write_atomic(&path, bytes)?;
            }
        }
        if let Some(c) = &ccache {
            std::fs::create_dir_all(&c.dir).map_err(io("create", &c.dir))?;
        }
        let info = SpaceInfo {
            repo: repo.dir.display().to_string(),
            fragments: fragments.to_vec(),
            ccache: ccache.is_some(),
            key,
        };
        write_record(&root.join("space.json"), &info)?;
        let lock = root.join("lock");
        File::create(&lock).map_err(io("create", &lock))?;
        evict_spaces(&parent, &root);
        Ok(BuildSpace {
            repo: repo.clone(),
            root,
            fragments: names,
            ccache,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether builds go through ccache.
    pub fn ccache(&self) -> Option<&Ccache> {
        self.ccache.as_ref()
    }

    fn commit_dir(&self, hash: &str) -> PathBuf {
        self.root.join("commits").join(hash)
    }

    /// The kernel of `hash`, if this space built it before.
    pub fn cached(&self, hash: &str) -> Result<Option<TreeBuild>, TreeError> {
        let dir = self.commit_dir(hash);
        if !dir.join(".complete").exists() {
            return Ok(None);
        }
        let record: CommitBuild = read_record(&dir.join("build.json"))?;
        crate::cache::touch(&dir.join(".complete"));
        Ok(Some(TreeBuild {
            spec: spec_of(&dir, &record.release, hash),
            dir,
            cached: true,
            record,
        }))
    }

    /// Builds `commit` (or finds it built): checks the worktree out at it and runs
    /// build.sh into the shared build directory. `cancel` is polled while it builds.
    pub fn build(
        &self,
        commit: &Commit,
        cancel: &dyn Fn() -> bool,
    ) -> Result<TreeBuild, TreeError> {
        if let Some(built) = self.cached(&commit.hash)? {
            return Ok(built);
        }
        let lock_path = self.root.join("lock");
        let _lock = lock(&lock_path)?;
        // Another kchaos may have built it while we waited.
        if let Some(built) = self.cached(&commit.hash)? {
            return Ok(built);
        }
        kill_leftover_build(&self.root.join("build.pgid"));
        let _ = File::options()
            .append(true)
            .open(&lock_path)
            .and_then(|f| f.set_modified(SystemTime::now()));
        let started = Instant::now();
        let tree = self.root.join("tree");
        self.repo.worktree_at(&tree, &commit.hash)?;
        let checkout_seconds = started.elapsed().as_secs_f64();
        let out = self.root.join("out");
        std::fs::create_dir_all(&out).map_err(io("create", &out))?;
        let stats = self.root.join("ccache-stats.log");
        let _ = std::fs::remove_file(&stats);
        let env = self
            .ccache
            .as_ref()
            .map(|c| c.env(&self.root, &stats))
            .unwrap_or_default();
        let log = self.root.join("build.log");
        let pgid_file = self.root.join("build.pgid");
        let note_pgid = |pgid: i32| {
            let _ = std::fs::write(&pgid_file, pgid.to_string());
        };
        let short = commit.hash.get(..12).unwrap_or(&commit.hash);
        let label = format!("{short} ({})", commit.subject);
        let build_started = Instant::now();
        let produced = script::run(&Script {
            label: &label,
            script: &self.root.join("recipe/build.sh"),
            src: &tree,
            out: &out,
            fragments: &self.fragments,
            env: &env,
            log: &log,
            stdout: &self.root.join("spec.out"),
            cancel: Some(cancel),
            started: Some(&note_pgid),
        });
        let _ = std::fs::remove_file(&pgid_file);
        let produced = produced.map_err(|e| self.build_error(e, &commit.hash, &log))?;
        let record = CommitBuild {
            commit: commit.hash.clone(),
            subject: commit.subject.clone(),
            describe: script::source_of(&out).and_then(|s| s.describe),
            release: produced.release.clone(),
            seconds: build_started.elapsed().as_secs_f64(),
            checkout_seconds,
            compiled: produced.compiled,
            ccache: self
                .ccache
                .as_ref()
                .map(|_| CcacheCounts::parse(&std::fs::read_to_string(&stats).unwrap_or_default())),
            config_warnings: produced.warnings.clone(),
        };
        let dir = self.install(&out, &produced, &record, &log)?;
        evict_commits(&self.root.join("commits"), &dir);
        Ok(TreeBuild {
            spec: spec_of(&dir, &record.release, &commit.hash),
            dir,
            cached: false,
            record,
        })
    }

    fn build_error(&self, e: ScriptError, hash: &str, log: &Path) -> TreeError {
        match e {
            ScriptError::Failed { status, tail } => {
                let kept = self.root.join("commits").join(format!("{hash}.failed.log"));
                let _ = std::fs::create_dir_all(self.root.join("commits"));
                let _ = std::fs::copy(log, &kept);
                TreeError::Build {
                    commit: hash.to_owned(),
                    status,
                    log: kept.display().to_string(),
                    tail,
                }
            }
            ScriptError::Interrupted => TreeError::Interrupted,
            ScriptError::BadOutput(printed) => TreeError::BadOutput {
                commit: hash.to_owned(),
                printed,
            },
            ScriptError::BzImage(e) => TreeError::BzImage(e),
            ScriptError::Spawn(e) => TreeError::Spawn(e),
            ScriptError::Io(e) => TreeError::Io(e),
        }
    }

    /// Copies what booting and analysing need out of the build directory (which the
    /// next build overwrites) into `commits/<hash>/`, atomically.
    fn install(
        &self,
        out: &Path,
        produced: &script::Produced,
        record: &CommitBuild,
        log: &Path,
    ) -> Result<PathBuf, TreeError> {
        let commits = self.root.join("commits");
        let stage = commits.join(format!(".tmp-{}", record.commit));
        let _ = std::fs::remove_dir_all(&stage);
        std::fs::create_dir_all(&stage).map_err(io("create", &stage))?;
        let copies = [
            (produced.bzimage.clone(), stage.join("bzImage")),
            (produced.config.clone(), stage.join("config")),
            (out.join("System.map"), stage.join("System.map")),
            (log.to_path_buf(), stage.join("build.log")),
            (
                out.join(crate::resolved::SOURCE_FILE),
                stage.join(crate::resolved::SOURCE_FILE),
            ),
        ];
        for (from, to) in copies {
            if from.exists() {
                std::fs::copy(&from, &to).map_err(io("copy", &from))?;
            }
        }
        if let Some(modules) = &produced.modules {
            copy_tree(modules, &stage.join("lib/modules").join(&record.release))?;
        }
        write_record(&stage.join("build.json"), record)?;
        Cache::write_atomic(&stage.join(".complete"), b"")?;
        let dir = self.commit_dir(&record.commit);
        let _ = std::fs::remove_dir_all(&dir);
        Cache::install_dir(&stage, &dir)?;
        Ok(dir)
    }
}

/// The `path:` spec of a built commit.
fn spec_of(dir: &Path, release: &str, hash: &str) -> String {
    let modules = dir.join("lib/modules").join(release);
    let mut spec = format!("path:{}", dir.join("bzImage").display());
    if modules.is_dir() {
        spec.push_str(&format!(",modules={}", modules.display()));
    }
    spec.push_str(&format!(
        ",config={},commit={hash}",
        dir.join("config").display()
    ));
    spec
}

fn lock(path: &Path) -> Result<Flock<File>, TreeError> {
    let file = File::options()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io("create", path))?;
    Ok(file_io::lock(file, path)?)
}

/// A build left running by a kchaos that was killed would write into the build
/// directory under the next one: stop it first.
fn kill_leftover_build(pgid_file: &Path) {
    let Some(pgid) = std::fs::read_to_string(pgid_file)
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
        .filter(|p| *p > 1)
    else {
        return;
    };
    if killpg(Pid::from_raw(pgid), None).is_ok() {
        tracing::warn!("stopping a build left running by an earlier kchaos (process group {pgid})");
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
    let _ = std::fs::remove_file(pgid_file);
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), TreeError> {
    for entry in walkdir::WalkDir::new(from).follow_links(false) {
        let entry = entry.map_err(|e| IoError {
            what: "read",
            path: from.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let rel = entry.path().strip_prefix(from).unwrap_or(entry.path());
        let target = to.join(rel);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target).map_err(io("create", &target))?;
        } else if entry.file_type().is_file() {
            std::fs::copy(entry.path(), &target).map_err(io("copy", entry.path()))?;
        }
    }
    Ok(())
}

fn sanitize(text: &str) -> String {
    crate::cache::dir_safe(text, &['.', '-', '_'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_are_compiled_in_or_files() {
        let (name, bytes) = fragment_bytes("defects.config").unwrap();
        assert_eq!(name, "defects.config");
        assert!(!bytes.is_empty());
        let dir = tempfile::tempdir().unwrap();
        let mine = dir.path().join("my.config");
        std::fs::write(&mine, "CONFIG_KASAN=y\n").unwrap();
        let (name, bytes) = fragment_bytes(&mine.display().to_string()).unwrap();
        assert_eq!(
            (name.as_str(), bytes.as_slice()),
            ("user-my.config", &b"CONFIG_KASAN=y\n"[..])
        );
        let e = fragment_bytes("nope.config").unwrap_err().to_string();
        assert!(
            e.contains("defects.config") && e.contains("debug.config"),
            "{e}"
        );
        // A patch is compiled in too, but is no fragment.
        assert!(fragment_bytes("patches/6.1/0001-netdev-ref-leak.patch").is_err());
    }

    #[test]
    fn a_built_commit_boots_as_a_path_kernel_naming_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let modules = dir.path().join("lib/modules/6.1.192-kchaos+");
        std::fs::create_dir_all(&modules).unwrap();
        let spec = spec_of(dir.path(), "6.1.192-kchaos+", "abc123");
        match crate::kernel::spec::KernelSpec::parse(&spec).unwrap() {
            crate::kernel::spec::KernelSpec::Path {
                bzimage,
                modules: m,
                config,
                source,
            } => {
                assert_eq!(bzimage, dir.path().join("bzImage"));
                assert_eq!(m, Some(modules));
                assert_eq!(config, Some(dir.path().join("config")));
                assert_eq!(source.commit.as_deref(), Some("abc123"));
            }
            other => panic!("{other:?}"),
        }
    }
}
