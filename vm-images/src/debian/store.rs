//! Debian kernels unpacked in the cache, `kernels/debian/<package>_<version>/` with a
//! `kernel.json` (paths relative to it): keyed by package and version, which name the
//! same bytes in every suite and on every mirror, so a rerun never downloads again and
//! an offline one finds what earlier runs fetched.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::abi::{abi_of, DebianVersion, Flavour};
use super::apt_output::Candidate;
use super::error::DebianError;
use super::release::{self, Release};
use super::source::PackageSource;
use crate::cache::Cache;
use crate::host_tool;
use crate::resolved::{DebianPackage, Kernel};

/// A kernel unpacked in the cache (`kernels/debian/<package>_<version>`).
#[derive(Debug, Clone)]
pub(super) struct Cached {
    pub(super) abi: String,
    pub(super) package: String,
    pub(super) version: String,
    /// From the suite recorded with it, else (an older kchaos recorded none) the release
    /// its ABI points to.
    pub(super) release: Option<Release>,
    pub(super) dir: PathBuf,
}

/// Debian kernels of `flavour` already unpacked in the cache, for offline use.
pub(super) fn cached(cache: &Cache, flavour: Flavour) -> Vec<Cached> {
    let Ok(dir) = cache.dir("kernels/debian") else {
        return Vec::new();
    };
    crate::file_io::entries(&dir)
        .filter(|p| p.join(".complete").exists())
        .filter_map(|dir| {
            let name = dir.file_name()?.to_string_lossy().into_owned();
            let (package, version) = name.split_once('_')?;
            let abi = abi_of(package, flavour)?;
            let suite = load(&dir, "")
                .ok()
                .and_then(|k| k.debian)
                .and_then(|d| d.suite);
            let release = match suite {
                Some(suite) => Release::of_suite(&suite),
                None => release::candidates(&DebianVersion::Abi(abi.clone()), None)
                    .first()
                    .copied(),
            };
            Some(Cached {
                abi,
                package: package.to_owned(),
                version: version.to_owned(),
                release,
                dir,
            })
        })
        .collect()
}

pub(super) fn unpack(
    cache: &Cache,
    spec: &str,
    resolved: &str,
    package: &str,
    candidate: &Candidate,
    source: &dyn PackageSource,
) -> Result<Kernel, DebianError> {
    let version = &candidate.version;
    let debian = DebianPackage {
        name: package.to_owned(),
        version: version.clone(),
        suite: Some(candidate.suite.clone()),
    };
    let dir = cache
        .dir("kernels/debian")?
        .join(format!("{package}_{version}"));
    if dir.join(".complete").exists() {
        let mut kernel = load(&dir, spec)?;
        if kernel.debian.as_ref().is_none_or(|d| d.suite.is_none()) {
            // Unpacked by a kchaos that did not record suites: record it now, so an
            // offline run later still knows.
            record_suite(&dir, &debian)?;
        }
        kernel.resolved = resolved.to_owned();
        kernel.debian = Some(debian);
        return Ok(kernel);
    }
    let scratch = cache.scratch("kernels/debian")?;
    let deb = source.download(package, candidate, scratch.path())?;
    let root = scratch.path().join("root");
    host_tool::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    let _ = std::fs::remove_file(&deb);
    let boot = root.join("boot");
    let find = |prefix: &str| -> Option<PathBuf> {
        crate::file_io::entries(&boot).find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
    };
    let image = find("vmlinuz-").ok_or_else(|| DebianError::BadPackage {
        package: package.to_owned(),
        what: "boot/vmlinuz-*".to_owned(),
    })?;
    let release = image
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .trim_start_matches("vmlinuz-")
                .to_owned()
        })
        .unwrap_or_default();
    let config = find("config-");
    let modules = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|m| root.join(m).join(&release))
        .find(|p| p.is_dir());
    let rel_path = |p: &Path| {
        p.strip_prefix(scratch.path())
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| p.to_path_buf())
    };
    let kernel = Kernel {
        spec: spec.to_owned(),
        resolved: resolved.to_owned(),
        release,
        package: Some(format!("{package} {version}")),
        debian: Some(debian),
        source: None,
        bzimage: rel_path(&image),
        modules_dir: modules.as_deref().map(rel_path),
        config_path: config.as_deref().map(rel_path),
    };
    write_meta(&scratch.path().join("kernel.json"), &kernel)?;
    Cache::write_atomic(&scratch.path().join(".complete"), b"")?;
    let staged = scratch.keep();
    Cache::install_dir(&staged, &dir)?;
    let _ = std::fs::remove_dir_all(&staged);
    load(&dir, spec)
}

fn write_meta(path: &Path, kernel: &Kernel) -> Result<(), DebianError> {
    Ok(crate::cache::write_record(path, kernel)?)
}

/// Adds `debian` to a cached `kernel.json` (paths in it stay relative).
fn record_suite(dir: &Path, debian: &DebianPackage) -> Result<(), DebianError> {
    let path = dir.join("kernel.json");
    let mut kernel = read_meta(&path)?;
    kernel.debian = Some(debian.clone());
    write_meta(&path, &kernel)
}

fn read_meta(path: &Path) -> Result<Kernel, DebianError> {
    Ok(crate::cache::read_record(path)?)
}

/// Reads a cached kernel; paths in `kernel.json` are relative to its directory.
pub(super) fn load(dir: &Path, spec: &str) -> Result<Kernel, DebianError> {
    let mut kernel = read_meta(&dir.join("kernel.json"))?;
    kernel.spec = spec.to_owned();
    kernel.bzimage = dir.join(&kernel.bzimage);
    kernel.modules_dir = kernel.modules_dir.map(|m| dir.join(m));
    kernel.config_path = kernel.config_path.map(|c| dir.join(c));
    if kernel.debian.is_none() {
        // Unpacked by an older kchaos: name and version are in `package`.
        kernel.debian = kernel.package.as_deref().and_then(|p| {
            let (name, version) = p.split_once(' ')?;
            Some(DebianPackage {
                name: name.to_owned(),
                version: version.to_owned(),
                suite: None,
            })
        });
    }
    Ok(kernel)
}
