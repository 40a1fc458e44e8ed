//! One recipe build: unpack the source, apply the patches, run the compiled-in
//! `build.sh` with progress on stderr (it takes minutes), keep its outputs.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::fcntl::Flock;

use super::error::RecipeError;
use super::record::{BuildRecord, CACHE_SUB};
use super::source::{debs_dir, tarball_from_deb, SourceHost, SourcePlan};
use crate::cache::Cache;
use crate::file_io::{self, io};
use crate::host_tool::{self, CommandError};
use crate::kbuild::ccache::{Ccache, CcacheCounts};
use crate::kbuild::script::{self, minutes, Produced, Script, ScriptError};
use crate::kernel::recipes::KernelRecipe;

/// Takes the build lock for one cache key, waiting for another kchaos that holds it.
pub(super) fn lock(path: &Path) -> Result<Flock<File>, RecipeError> {
    let file = File::create(path).map_err(io("create", path))?;
    Ok(file_io::lock(file, path)?)
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
    let stats = work.join("ccache-stats.log");
    let ccache = Ccache::find(cache);
    let env = ccache
        .as_ref()
        .map(|c| c.env(work, &stats))
        .unwrap_or_default();
    let mut produced = run_build(
        spec,
        &recipe_dir,
        &src,
        &out,
        recipe,
        &env,
        &log_path,
        final_dir,
    )?;
    produced.ccache =
        ccache.map(|_| CcacheCounts::parse(&std::fs::read_to_string(&stats).unwrap_or_default()));
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
    for stale in file_io::entries(&root).filter(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
    }) {
        tracing::info!("removing {} left by an interrupted build", stale.display());
        let _ = std::fs::remove_dir_all(&stale);
    }
    Ok(tempfile::Builder::new()
        .prefix(&prefix)
        .tempdir_in(&root)
        .map_err(io("create a scratch directory in", &root))?)
}

/// Unpacks the source tarball into `work` and returns its top directory, `work/tree`:
/// every kernel kchaos builds has its source in `tree/` beside its objects in `out/`, so
/// ccache finds a file compiled here when a bisection builds the same source, and the
/// other way round ([`Ccache::env`]).
fn unpack(tarball: &Path, work: &Path) -> Result<PathBuf, RecipeError> {
    let dest = work.join("src");
    std::fs::create_dir_all(&dest).map_err(io("create", &dest))?;
    host_tool::run(
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
        [one] => {
            let tree = work.join("tree");
            std::fs::rename(one, &tree).map_err(io("move", one))?;
            Ok(tree)
        }
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
    let result = host_tool::run(
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

#[allow(clippy::too_many_arguments)]
fn run_build(
    spec: &str,
    recipe_dir: &Path,
    src: &Path,
    out: &Path,
    recipe: &KernelRecipe,
    env: &[(String, String)],
    log_path: &Path,
    final_dir: &Path,
) -> Result<Produced, RecipeError> {
    let fragments: Vec<String> = recipe.fragments.iter().map(|f| (*f).to_owned()).collect();
    let run = script::run(&Script {
        label: spec,
        script: &recipe_dir.join("build.sh"),
        src,
        out,
        fragments: &fragments,
        env,
        log: log_path,
        stdout: &recipe_dir.join("spec.out"),
        cancel: None,
        started: None,
    });
    run.map_err(|e| match e {
        ScriptError::Failed { status, tail } => {
            let kept = final_dir.with_extension("failed.log");
            let _ = std::fs::copy(log_path, &kept);
            RecipeError::Build {
                spec: spec.to_owned(),
                status,
                log: kept.display().to_string(),
                tail,
            }
        }
        ScriptError::Spawn(e) => e.into(),
        ScriptError::BzImage(e) => e.into(),
        ScriptError::BadOutput(p) => RecipeError::BadOutput(p),
        ScriptError::Io(e) => RecipeError::Io(e),
        ScriptError::Interrupted => RecipeError::Build {
            spec: spec.to_owned(),
            status: "interrupted".to_owned(),
            log: log_path.display().to_string(),
            tail: String::new(),
        },
    })
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
        ccache: produced.ccache,
    };
    if let Some(c) = produced.ccache {
        tracing::info!(
            "ccache: {} of {} compiled files were cache hits",
            c.hits(),
            c.hits() + c.misses
        );
    }
    crate::cache::write_record(&stage.join("build.json"), &record)?;
    Cache::write_atomic(&stage.join(".complete"), b"")?;
    Cache::install_dir(&stage, final_dir)?;
    Ok(())
}
