//! Debian kernel packages: resolve a spec to a package, download it with apt, unpack it
//! into the cache (keyed by package and version; the mirror drops old ABIs, the cache
//! keeps them).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cache::{Cache, CacheError};
use crate::command::{self, CommandError};
use crate::resolved::Kernel;
use crate::spec::{compare_abi, DebianVersion, Flavour};

#[derive(Debug, thiserror::Error)]
pub enum DebianError {
    #[error("No Debian kernel package matches `{spec}`: {detail}")]
    NoPackage { spec: String, detail: String },
    #[error("Package {package} has no {what}")]
    BadPackage { package: String, what: String },
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("Cannot read {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Corrupt cache entry {path}; delete it and retry")]
    CorruptCache {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Where packages come from: apt on a real machine, a fake in tests.
pub trait PackageSource {
    /// Package names starting with `prefix`.
    fn names(&self, prefix: &str) -> Result<Vec<String>, DebianError>;
    /// The candidate version of `package`, if apt knows it.
    fn version(&self, package: &str) -> Result<Option<String>, DebianError>;
    /// Downloads `package` into `dir` and returns the `.deb`.
    fn download(&self, package: &str, dir: &Path) -> Result<PathBuf, DebianError>;
}

/// `apt-cache` / `apt-get download`.
#[derive(Debug)]
pub struct AptSource;

fn run(cmd: &mut Command) -> Result<String, DebianError> {
    Ok(command::run(cmd)?)
}

impl PackageSource for AptSource {
    fn names(&self, prefix: &str) -> Result<Vec<String>, DebianError> {
        Ok(run(Command::new("apt-cache").arg("pkgnames").arg(prefix))?
            .lines()
            .map(str::to_owned)
            .collect())
    }

    fn version(&self, package: &str) -> Result<Option<String>, DebianError> {
        match run(Command::new("apt-cache").args(["show", "--no-all-versions", package])) {
            Ok(text) => Ok(text
                .lines()
                .find_map(|l| l.strip_prefix("Version: "))
                .map(|v| v.trim().to_owned())),
            // apt-cache exits 100 for unknown packages.
            Err(DebianError::Command(CommandError::Failed { .. })) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn download(&self, package: &str, dir: &Path) -> Result<PathBuf, DebianError> {
        run(Command::new("apt-get")
            .args(["download", "-q", package])
            .current_dir(dir))?;
        let deb = std::fs::read_dir(dir)
            .map_err(|source| DebianError::Io {
                path: dir.display().to_string(),
                source,
            })?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "deb"));
        deb.ok_or_else(|| DebianError::BadPackage {
            package: package.to_owned(),
            what: ".deb after apt-get download".to_owned(),
        })
    }
}

fn package_name(abi: &str, flavour: Flavour, unsigned: bool) -> String {
    let suffix = if unsigned { "-unsigned" } else { "" };
    format!("linux-image-{abi}-{}{suffix}", flavour.package_suffix())
}

/// The ABI in a package name of this flavour, if it is one (`linux-image-6.1.0-56-cloud-amd64-unsigned` → `6.1.0-56`).
fn abi_of(name: &str, flavour: Flavour) -> Option<String> {
    let rest = name.strip_prefix("linux-image-")?;
    let rest = rest.strip_suffix("-unsigned").unwrap_or(rest);
    let abi = rest.strip_suffix(&format!("-{}", flavour.package_suffix()))?;
    let plain = abi.split("+deb").next().unwrap_or(abi);
    let valid = plain.starts_with(|c: char| c.is_ascii_digit())
        && plain
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == '-');
    valid.then(|| abi.to_owned())
}

/// Series `6.1` matches ABIs `6.1.*`, never `6.12.*`.
fn in_series(abi: &str, series: &str) -> bool {
    abi.strip_prefix(series).is_some_and(|r| r.starts_with('.'))
}

/// Debian ABIs that are already unpacked in the cache, for offline use.
fn cached(cache: &Cache, flavour: Flavour) -> Vec<(String, PathBuf)> {
    let Ok(dir) = cache.dir("kernels/debian") else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join(".complete").exists())
        .filter_map(|p| {
            let name = p
                .file_name()?
                .to_string_lossy()
                .split('_')
                .next()?
                .to_owned();
            Some((abi_of(&name, flavour)?, p))
        })
        .collect()
}

pub(crate) fn fetch(
    cache: &Cache,
    spec: &str,
    version: &DebianVersion,
    flavour: Flavour,
    source: &dyn PackageSource,
) -> Result<Kernel, DebianError> {
    let abi = match version {
        DebianVersion::Abi(abi) => abi.clone(),
        DebianVersion::Series(series) => newest_abi(cache, spec, series, flavour, source)?,
    };
    let resolved = format!("debian:{abi}-{}", flavour.as_str());
    // Prefer the unsigned image (what kernel developers boot); the signed one boots the
    // same under QEMU's direct kernel boot.
    for unsigned in [true, false] {
        let package = package_name(&abi, flavour, unsigned);
        let version = match source.version(&package) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("apt-cache failed, looking in the cache only: {e}");
                None
            }
        };
        if let Some(version) = version {
            return unpack(cache, spec, &resolved, &package, &version, source);
        }
        let key = format!("{package}_");
        if let Some((_, dir)) = cached(cache, flavour).into_iter().find(|(_, p)| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&key))
        }) {
            tracing::info!(dir = %dir.display(), "apt does not offer {package}; using the cached copy");
            return load(&dir, spec);
        }
    }
    Err(DebianError::NoPackage {
        spec: spec.to_owned(),
        detail: format!(
            "apt offers neither {} nor its signed variant, and neither is cached",
            package_name(&abi, flavour, true)
        ),
    })
}

fn newest_abi(
    cache: &Cache,
    spec: &str,
    series: &str,
    flavour: Flavour,
    source: &dyn PackageSource,
) -> Result<String, DebianError> {
    let mut abis: Vec<String> = match source.names(&format!("linux-image-{series}.")) {
        Ok(names) => names
            .iter()
            .filter_map(|n| abi_of(n, flavour))
            .filter(|a| in_series(a, series))
            .collect(),
        Err(e) => {
            tracing::warn!("cannot list apt packages, looking in the cache only: {e}");
            Vec::new()
        }
    };
    abis.extend(
        cached(cache, flavour)
            .into_iter()
            .map(|(a, _)| a)
            .filter(|a| in_series(a, series)),
    );
    abis.into_iter().max_by(|a, b| compare_abi(a, b)).ok_or_else(|| DebianError::NoPackage {
        spec: spec.to_owned(),
        detail: format!(
            "apt knows no linux-image-{series}.*-{} package (is a Debian bookworm apt source configured? run `apt-get update`) and none is cached in {}",
            flavour.package_suffix(),
            cache.root().display()
        ),
    })
}

fn unpack(
    cache: &Cache,
    spec: &str,
    resolved: &str,
    package: &str,
    version: &str,
    source: &dyn PackageSource,
) -> Result<Kernel, DebianError> {
    let dir = cache
        .dir("kernels/debian")?
        .join(format!("{package}_{version}"));
    if dir.join(".complete").exists() {
        return load(&dir, spec);
    }
    tracing::info!("downloading {package} {version}");
    let scratch = cache.scratch("kernels/debian")?;
    let deb = source.download(package, scratch.path())?;
    let root = scratch.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    let _ = std::fs::remove_file(&deb);
    let boot = root.join("boot");
    let find = |prefix: &str| -> Option<PathBuf> {
        std::fs::read_dir(&boot)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
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
    let rel = |p: &Path| {
        p.strip_prefix(scratch.path())
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| p.to_path_buf())
    };
    let kernel = Kernel {
        spec: spec.to_owned(),
        resolved: resolved.to_owned(),
        release,
        package: Some(format!("{package} {version}")),
        bzimage: rel(&image),
        modules_dir: modules.as_deref().map(rel),
        config_path: config.as_deref().map(rel),
    };
    let meta = serde_json::to_vec_pretty(&kernel).map_err(|source| DebianError::CorruptCache {
        path: dir.display().to_string(),
        source,
    })?;
    Cache::write_atomic(&scratch.path().join("kernel.json"), &meta)?;
    Cache::write_atomic(&scratch.path().join(".complete"), b"")?;
    let staged = scratch.keep();
    Cache::install_dir(&staged, &dir)?;
    let _ = std::fs::remove_dir_all(&staged);
    load(&dir, spec)
}

/// Reads a cached kernel; paths in `kernel.json` are relative to its directory.
fn load(dir: &Path, spec: &str) -> Result<Kernel, DebianError> {
    let path = dir.join("kernel.json");
    let text = std::fs::read(&path).map_err(|source| DebianError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let mut kernel: Kernel =
        serde_json::from_slice(&text).map_err(|source| DebianError::CorruptCache {
            path: path.display().to_string(),
            source,
        })?;
    kernel.spec = spec.to_owned();
    kernel.bzimage = dir.join(&kernel.bzimage);
    kernel.modules_dir = kernel.modules_dir.map(|m| dir.join(m));
    kernel.config_path = kernel.config_path.map(|c| dir.join(c));
    Ok(kernel)
}

/// The debug vmlinux (with symbols) of a Debian kernel, from its `-dbg` package, for
/// `crash`. Only the vmlinux is extracted (the package unpacks to ~1.7 GB) and cached.
pub fn debug_vmlinux(
    cache: &Cache,
    kernel: &Kernel,
    source: &dyn PackageSource,
) -> Result<PathBuf, DebianError> {
    let package = kernel
        .package
        .as_deref()
        .ok_or_else(|| DebianError::NoPackage {
            spec: kernel.spec.clone(),
            detail: "it is not a Debian package; pass the vmlinux of the build with --vmlinux"
                .to_owned(),
        })?;
    let (name, version) = package.split_once(' ').unwrap_or((package, ""));
    let dbg = format!("{}-dbg", name.strip_suffix("-unsigned").unwrap_or(name));
    let dir = cache
        .dir("kernels/debian-dbg")?
        .join(format!("{dbg}_{version}"));
    let vmlinux = dir.join(format!("vmlinux-{}", kernel.release));
    if vmlinux.is_file() {
        return Ok(vmlinux);
    }
    if source.version(&dbg)?.is_none() {
        return Err(DebianError::NoPackage {
            spec: kernel.spec.clone(),
            detail: format!("apt offers no {dbg} (Debian keeps -dbg packages for some ABIs only)"),
        });
    }
    tracing::info!("downloading {dbg} (large: about 300 MB) for its vmlinux");
    let scratch = cache.scratch("kernels/debian-dbg")?;
    let deb = source.download(&dbg, scratch.path())?;
    let member = format!("./usr/lib/debug/boot/vmlinux-{}", kernel.release);
    // dpkg-deb streams the data archive; tar extracts the one member we need.
    let script = format!(
        "dpkg-deb --fsys-tarfile '{}' | tar -x -C '{}' '{member}'",
        deb.display(),
        scratch.path().display()
    );
    run(Command::new("sh").arg("-c").arg(&script))?;
    let extracted = scratch.path().join(member.trim_start_matches("./"));
    std::fs::create_dir_all(&dir).map_err(|source| DebianError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    std::fs::rename(&extracted, &vmlinux).map_err(|source| DebianError::Io {
        path: vmlinux.display().to_string(),
        source,
    })?;
    Ok(vmlinux)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abis_are_read_from_package_names_of_the_right_flavour() {
        assert_eq!(
            abi_of("linux-image-6.1.0-56-cloud-amd64-unsigned", Flavour::Cloud).as_deref(),
            Some("6.1.0-56")
        );
        assert_eq!(
            abi_of("linux-image-6.12.117+deb12-cloud-amd64", Flavour::Cloud).as_deref(),
            Some("6.12.117+deb12")
        );
        assert_eq!(
            abi_of("linux-image-6.1.0-56-cloud-amd64-dbg", Flavour::Cloud),
            None
        );
        assert_eq!(
            abi_of("linux-image-6.1.0-56-cloud-amd64", Flavour::Generic),
            None
        );
        assert_eq!(
            abi_of("linux-image-6.1.0-56-amd64", Flavour::Generic).as_deref(),
            Some("6.1.0-56")
        );
        assert_eq!(
            abi_of("linux-image-6.12-cloud-amd64", Flavour::Cloud).as_deref(),
            Some("6.12")
        );
        assert!(!in_series("6.12", "6.12"));
        assert!(in_series("6.1.0-56", "6.1"));
        assert!(!in_series("6.12.117+deb12", "6.1"));
    }

    struct Fake(Vec<&'static str>);

    impl PackageSource for Fake {
        fn names(&self, prefix: &str) -> Result<Vec<String>, DebianError> {
            Ok(self
                .0
                .iter()
                .filter(|n| n.starts_with(prefix))
                .map(|s| (*s).to_owned())
                .collect())
        }
        fn version(&self, package: &str) -> Result<Option<String>, DebianError> {
            Ok(self.0.contains(&package).then(|| "1.0".to_owned()))
        }
        fn download(&self, package: &str, _dir: &Path) -> Result<PathBuf, DebianError> {
            Err(DebianError::BadPackage {
                package: package.to_owned(),
                what: "network in tests".to_owned(),
            })
        }
    }

    #[test]
    fn a_series_resolves_to_the_newest_abi_of_its_flavour() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let apt = Fake(vec![
            "linux-image-6.1.0-9-cloud-amd64-unsigned",
            "linux-image-6.1.0-56-cloud-amd64-unsigned",
            "linux-image-6.1.0-57-rt-amd64-unsigned",
            "linux-image-6.1.0-58-cloud-amd64-dbg",
            "linux-image-6.12.117+deb12-cloud-amd64-unsigned",
        ]);
        assert_eq!(
            newest_abi(&cache, "debian:6.1-cloud", "6.1", Flavour::Cloud, &apt).unwrap(),
            "6.1.0-56"
        );
        assert_eq!(
            newest_abi(&cache, "debian:6.12-cloud", "6.12", Flavour::Cloud, &apt).unwrap(),
            "6.12.117+deb12"
        );
        let e = newest_abi(&cache, "debian:5.10-cloud", "5.10", Flavour::Cloud, &apt).unwrap_err();
        assert!(
            e.to_string()
                .contains("apt knows no linux-image-5.10.*-cloud-amd64"),
            "{e}"
        );
    }

    #[test]
    fn unknown_exact_abi_names_the_package_it_looked_for() {
        let dir = tempfile::tempdir().unwrap();
        let e = fetch(
            &Cache::new(dir.path()),
            "debian:6.1.0-1-cloud",
            &DebianVersion::Abi("6.1.0-1".into()),
            Flavour::Cloud,
            &Fake(vec![]),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("linux-image-6.1.0-1-cloud-amd64-unsigned"),
            "{e}"
        );
    }
}
