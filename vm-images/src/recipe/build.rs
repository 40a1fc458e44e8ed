//! One recipe build: unpack the source, apply the patches, run the compiled-in
//! `build.sh` with progress on stderr (it takes minutes), keep its outputs.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use super::source::{debs_dir, tarball_from_deb};
use super::{io, BuildRecord, KernelRecipe, RecipeError, SourceHost, SourcePlan, CACHE_SUB};
use crate::cache::Cache;
use crate::command::{self, CommandError};
use crate::spec::KernelSpec;

/// How often a progress line is printed while the compiler runs.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);
/// Lines of the build log quoted in an error.
const TAIL_LINES: usize = 30;

/// Takes the build lock for one cache key, waiting for another kchaos that holds it.
pub(super) fn lock(path: &Path) -> Result<Flock<File>, RecipeError> {
    let file = File::create(path).map_err(io("create", path))?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| RecipeError::Io {
        what: "lock",
        path: path.display().to_string(),
        source: std::io::Error::from(errno),
    })
}

/// What one line of build.sh's stderr means for the progress display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Line {
    /// A fragment option Kconfig did not take.
    ConfigWarning(String),
    /// A compiler or assembler step (`  CC      mm/slub.o`).
    Compiled,
    /// A step worth a line of its own.
    Phase(&'static str),
    Other,
}

pub(super) fn classify(line: &str) -> Line {
    if let Some(rest) = line.strip_prefix("build.sh: not set as asked: ") {
        return Line::ConfigWarning(rest.to_owned());
    }
    let mut words = line.split_whitespace();
    match (words.next(), words.next()) {
        (Some("LD"), Some("vmlinux")) => Line::Phase("linking vmlinux"),
        (Some("Kernel:"), Some("arch/x86/boot/bzImage")) => Line::Phase("bzImage ready"),
        (Some("INSTALL"), Some(p)) if p.ends_with(".ko") => Line::Phase("installing modules"),
        (Some("CC" | "AS"), Some(_)) if line.starts_with("  ") => Line::Compiled,
        _ => Line::Other,
    }
}

/// Builds `recipe` from the source `plan` names and installs it as `final_dir`.
pub(super) fn build(
    cache: &Cache,
    spec: &str,
    recipe: &KernelRecipe,
    plan: &SourcePlan,
    host: &dyn SourceHost,
    final_dir: &Path,
) -> Result<(), RecipeError> {
    let started = Instant::now();
    let version = plan.version();
    let package = recipe.source_package;
    let scratch = scratch_for(cache, final_dir)?;
    let work = scratch.path();
    let tarball = match plan {
        SourcePlan::Tarball { path, .. } => path.clone(),
        SourcePlan::Deb { path, .. } => tarball_from_deb(path, package, work)?,
        SourcePlan::Download { .. } => {
            tracing::info!("downloading {package} {version} (about 140 MB)");
            let deb = host.download(package, version, work)?;
            let kept = debs_dir(cache, package)?.join(format!("{version}.deb"));
            // Kept for rebuilds after a recipe change (the mirror drops old versions).
            std::fs::rename(&deb, &kept).map_err(io("keep", &kept))?;
            tarball_from_deb(&kept, package, work)?
        }
        SourcePlan::Built { .. } => {
            return Err(RecipeError::NoSource {
                spec: spec.to_owned(),
                detail: "the cached build disappeared while planning; run again".to_owned(),
            })
        }
    };
    tracing::info!(
        "building kernel {spec} from {package} {version}: unpacking {}",
        tarball.display()
    );
    let src = unpack(&tarball, work)?;
    let recipe_dir = work.join("recipe");
    for (name, bytes) in recipe.used_files()? {
        let path = recipe_dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io("create", parent))?;
        }
        std::fs::write(&path, bytes).map_err(io("write", &path))?;
    }
    for patch in recipe.patches {
        apply_patch(&src, &recipe_dir.join(patch), patch, package, version)?;
    }
    let out = work.join("out");
    let log_path = work.join("build.log");
    let produced = run_build(spec, &recipe_dir, &src, &out, recipe, &log_path, final_dir)?;
    install(
        &produced,
        &out,
        &log_path,
        recipe,
        version,
        started.elapsed(),
        final_dir,
        work,
    )?;
    tracing::info!(
        "built kernel {spec} ({}) in {}",
        produced.release,
        minutes(started.elapsed())
    );
    Ok(())
}

/// A scratch directory for one key's build, next to where it is installed. The caller
/// holds the key's lock, so any other scratch of the same key is left over from a build
/// that was killed (gigabytes of source and objects): it is removed first.
fn scratch_for(cache: &Cache, final_dir: &Path) -> Result<tempfile::TempDir, RecipeError> {
    let root = cache.dir(CACHE_SUB)?;
    let name = final_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = format!(".tmp-{name}-");
    if let Ok(entries) = std::fs::read_dir(&root) {
        for stale in entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        {
            tracing::info!(
                "removing {} left by an interrupted build",
                stale.path().display()
            );
            let _ = std::fs::remove_dir_all(stale.path());
        }
    }
    tempfile::Builder::new()
        .prefix(&prefix)
        .tempdir_in(&root)
        .map_err(io("create a scratch directory in", &root))
}

/// Unpacks the source tarball into `work` and returns its top directory.
fn unpack(tarball: &Path, work: &Path) -> Result<PathBuf, RecipeError> {
    let dest = work.join("src");
    std::fs::create_dir_all(&dest).map_err(io("create", &dest))?;
    command::run(
        Command::new("tar")
            .arg("-xf")
            .arg(tarball)
            .arg("-C")
            .arg(&dest),
    )?;
    let top: Vec<PathBuf> = std::fs::read_dir(&dest)
        .map_err(io("read", &dest))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    match top.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(RecipeError::BadTarball {
            path: tarball.display().to_string(),
            detail: "it does not hold exactly one top directory".to_owned(),
        }),
    }
}

fn apply_patch(
    src: &Path,
    file: &Path,
    name: &str,
    package: &str,
    version: &str,
) -> Result<(), RecipeError> {
    let result = command::run(
        Command::new("patch")
            .args(["-p1", "--batch", "--forward", "--silent", "-d"])
            .arg(src)
            .arg("-i")
            .arg(file),
    );
    match result {
        Ok(_) => Ok(()),
        Err(CommandError::Failed { stderr, .. }) => Err(RecipeError::Patch {
            patch: name.to_owned(),
            package: package.to_owned(),
            version: version.to_owned(),
            output: stderr,
        }),
        Err(e) => Err(e.into()),
    }
}

/// What build.sh reported: the spec it printed, parsed, and the config warnings.
struct Produced {
    bzimage: PathBuf,
    modules: Option<PathBuf>,
    config: PathBuf,
    release: String,
    warnings: Vec<String>,
}

fn run_build(
    spec: &str,
    recipe_dir: &Path,
    src: &Path,
    out: &Path,
    recipe: &KernelRecipe,
    log_path: &Path,
    final_dir: &Path,
) -> Result<Produced, RecipeError> {
    let stdout_path = recipe_dir.join("spec.out");
    let stdout = File::create(&stdout_path).map_err(io("create", &stdout_path))?;
    let mut log = File::create(log_path).map_err(io("create", log_path))?;
    let mut cmd = Command::new("sh");
    cmd.arg(recipe_dir.join("build.sh"))
        .arg(src)
        .arg(out)
        .args(recipe.fragments)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped());
    let command = format!("{cmd:?}").replace('"', "");
    let mut child = cmd.spawn().map_err(|source| CommandError::Spawn {
        command: command.clone(),
        source,
    })?;
    tracing::info!(
        "building kernel {spec}: configuring, then compiling (a few minutes on two cores); log: {}",
        log_path.display()
    );
    let mut warnings = Vec::new();
    let mut compiled = 0u64;
    let started = Instant::now();
    let mut last = Instant::now();
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(log, "{line}");
            match classify(&line) {
                Line::ConfigWarning(w) => {
                    tracing::warn!("kernel {spec}: config option not set as asked: {w}");
                    warnings.push(w);
                }
                Line::Compiled => compiled += 1,
                Line::Phase(p) => {
                    tracing::info!(
                        "building kernel {spec}: {p} ({})",
                        minutes(started.elapsed())
                    );
                }
                Line::Other => {}
            }
            if last.elapsed() >= PROGRESS_EVERY {
                last = Instant::now();
                tracing::info!(
                    "building kernel {spec}: {compiled} files compiled ({})",
                    minutes(started.elapsed())
                );
            }
        }
    }
    let status = child
        .wait()
        .map_err(io("wait for", Path::new("build.sh")))?;
    if !status.success() {
        let kept = final_dir.with_extension("failed.log");
        let _ = std::fs::copy(log_path, &kept);
        return Err(RecipeError::Build {
            spec: spec.to_owned(),
            status: status.to_string(),
            log: kept.display().to_string(),
            tail: tail(log_path),
        });
    }
    let printed = std::fs::read_to_string(&stdout_path).map_err(io("read", &stdout_path))?;
    let printed = printed.trim();
    match KernelSpec::parse(printed) {
        Ok(KernelSpec::Path {
            bzimage,
            modules,
            config: Some(config),
            ..
        }) => {
            let release = crate::bzimage::release_of(&bzimage)?;
            Ok(Produced {
                bzimage,
                modules,
                config,
                release,
                warnings,
            })
        }
        _ => Err(RecipeError::BadOutput(printed.to_owned())),
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// Moves what the running kernel and `kchaos analyze` need into a staging directory and
/// installs it atomically; the source and object tree (gigabytes) go with the scratch.
#[allow(clippy::too_many_arguments)]
fn install(
    produced: &Produced,
    out: &Path,
    log_path: &Path,
    recipe: &KernelRecipe,
    version: &str,
    took: Duration,
    final_dir: &Path,
    work: &Path,
) -> Result<(), RecipeError> {
    let stage = work.join("install");
    let modules_to = stage.join("lib/modules").join(&produced.release);
    std::fs::create_dir_all(stage.join("lib/modules")).map_err(io("create", &stage))?;
    let moves: Vec<(PathBuf, PathBuf)> = [
        (produced.bzimage.clone(), stage.join("bzImage")),
        (produced.config.clone(), stage.join("config")),
        (out.join("vmlinux"), stage.join("vmlinux")),
        (out.join("System.map"), stage.join("System.map")),
        (log_path.to_path_buf(), stage.join("build.log")),
    ]
    .into_iter()
    .chain(produced.modules.clone().map(|m| (m, modules_to.clone())))
    .collect();
    for (from, to) in moves {
        std::fs::rename(&from, &to).map_err(io("move", &from))?;
    }
    let record = BuildRecord {
        recipe: recipe.name.to_owned(),
        source_package: recipe.source_package.to_owned(),
        source_version: version.to_owned(),
        key: recipe.key(version)?,
        release: produced.release.clone(),
        config_warnings: produced.warnings.clone(),
        build_seconds: took.as_secs(),
    };
    let json = serde_json::to_vec_pretty(&record).map_err(|source| RecipeError::Corrupt {
        path: final_dir.display().to_string(),
        source,
    })?;
    Cache::write_atomic(&stage.join("build.json"), &json)?;
    Cache::write_atomic(&stage.join(".complete"), b"")?;
    Cache::install_dir(&stage, final_dir)?;
    Ok(())
}

fn minutes(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}m{:02}s", s / 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_lines_become_progress() {
        let cases = [
            ("  CC      mm/slub.o", Line::Compiled),
            ("  CC [M]  drivers/net/veth.o", Line::Compiled),
            ("  AS      arch/x86/entry/entry_64.o", Line::Compiled),
            ("  LD      vmlinux", Line::Phase("linking vmlinux")),
            (
                "Kernel: arch/x86/boot/bzImage is ready  (#1)",
                Line::Phase("bzImage ready"),
            ),
            (
                "  INSTALL /x/mods/lib/modules/6.1.192-kchaos/kernel/drivers/net/veth.ko",
                Line::Phase("installing modules"),
            ),
            (
                "build.sh: not set as asked: CONFIG_MEMCG_V1=y (unknown to this kernel version; from kchaos.config)",
                Line::ConfigWarning(
                    "CONFIG_MEMCG_V1=y (unknown to this kernel version; from kchaos.config)"
                        .into(),
                ),
            ),
            ("make[1]: Entering directory '/x'", Line::Other),
            ("CC is not a step without its indent", Line::Other),
        ];
        for (line, want) in cases {
            assert_eq!(classify(line), want, "{line}");
        }
    }

    #[test]
    fn durations_read_as_minutes() {
        assert_eq!(minutes(Duration::from_secs(272)), "4m32s");
        assert_eq!(minutes(Duration::from_secs(5)), "0m05s");
    }
}
