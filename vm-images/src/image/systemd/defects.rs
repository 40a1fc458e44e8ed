//! The `systemd-defects` root filesystem: the stock systemd image with PID 1 rebuilt
//! from the Debian source of the very systemd version the image carries, with the
//! defect patches of `vm-images/recipes/systemd-defects/`, each dormant until its
//! `kchaos_defect.*` boot parameter. One image is every systemd defect and their stock
//! twin, as `build:defects` is for the kernel.
//!
//! The build runs inside a copy of the stock root filesystem (chroot, private mount
//! namespace), so PID 1 links against exactly the image's libraries and the host's
//! packages are never touched; the result is the stock tree (hard links) with the
//! three files of PID 1 replaced. Cached by the stock tree's key and every recipe
//! byte, built under a lock, about 5 minutes on two cores (see docs/kernels.md).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::fcntl::Flock;

use super::{require_root_and_tools, resolve_in_root, Rootfs, SystemdImageError};
use crate::cache::{Cache, KeyHasher};
use crate::file_io::{self, io};
use crate::host_tool;

/// Bump when the build steps here change (the recipe's bytes are hashed separately).
const FORMAT: &str = "kchaos-systemd-defects-v1";
/// The build: apt downloads, then ~430 compiler runs; hours mean something hangs.
const DEADLINE: Duration = Duration::from_secs(3 * 3600);
/// How often a long build says how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);
/// Lines of the build log quoted in an error.
const TAIL: usize = 25;

/// The recipe, compiled in: an installed kchaos builds the image it was written for.
const RECIPE: &[(&str, &str)] = &[
    (
        "build.sh",
        include_str!("../../../recipes/systemd-defects/build.sh"),
    ),
    (
        "patches/0001-sd-bus-cookie-overrun.patch",
        include_str!("../../../recipes/systemd-defects/patches/0001-sd-bus-cookie-overrun.patch"),
    ),
    (
        "patches/0002-transient-slice-leak.patch",
        include_str!("../../../recipes/systemd-defects/patches/0002-transient-slice-leak.patch"),
    ),
];

/// The cache key of the defects tree built on `stock`.
pub fn key(stock: &Rootfs) -> String {
    let mut h = KeyHasher::new(FORMAT);
    h.field(stock.key.as_bytes());
    for (name, text) in RECIPE {
        h.field(name.as_bytes()).field(text.as_bytes());
    }
    h.finish()
}

/// The version of `package` in a dpkg status file's text, if it is installed.
pub fn installed_version(status: &str, package: &str) -> Option<String> {
    status.split("\n\n").find_map(|stanza| {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name).map(str::trim))
        };
        let installed = field("Status:").is_some_and(|s| s.ends_with(" installed"));
        (field("Package:") == Some(package) && installed)
            .then(|| field("Version:").map(str::to_owned))
            .flatten()
    })
}

/// One file of PID 1: where the build left it, and its path in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    pub file: String,
    pub dest: String,
}

/// `manifest` as `build.sh` writes it: `FILE<TAB>/absolute/path` per line. Names are
/// plain file names, destinations absolute without `..`: the manifest comes from a
/// chroot and decides what is written where in the image.
pub fn parse_manifest(text: &str) -> Result<Vec<Built>, String> {
    let entries: Vec<Built> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (file, dest) = line
                .split_once('\t')
                .ok_or_else(|| format!("manifest line `{line}` is not FILE<TAB>PATH"))?;
            let plain = !file.is_empty() && !file.contains('/') && file != "." && file != "..";
            let absolute = dest.starts_with('/') && !dest.split('/').any(|c| c == "..");
            if !plain || !absolute {
                return Err(format!(
                    "manifest line `{line}`: not a file name and an absolute path"
                ));
            }
            Ok(Built {
                file: file.to_owned(),
                dest: dest.to_owned(),
            })
        })
        .collect::<Result<_, _>>()?;
    if entries.is_empty() {
        return Err("the manifest names no file".to_owned());
    }
    Ok(entries)
}

/// Builds (or finds in the cache) the defects tree on top of `stock`.
pub fn rootfs(cache: &Cache, stock: &Rootfs) -> Result<Rootfs, SystemdImageError> {
    let key = key(stock);
    let parent = cache.dir("images/systemd")?;
    let final_dir = parent.join(format!("defects-{}", &key[..24]));
    let found = || Rootfs {
        dir: final_dir.join("rootfs"),
        key: key.clone(),
    };
    if final_dir.join(".complete").exists() {
        return Ok(found());
    }
    let lock_path = parent.join(format!("defects-{}.lock", &key[..24]));
    let _lock = lock(&lock_path)?;
    if final_dir.join(".complete").exists() {
        return Ok(found());
    }
    let [unshare, chroot, cp] = require_root_and_tools([
        ("unshare", "util-linux"),
        ("chroot", "coreutils"),
        ("cp", "coreutils"),
    ])?;
    let status_path = stock.dir.join("var/lib/dpkg/status");
    let status = std::fs::read_to_string(&status_path).map_err(io("read", &status_path))?;
    let version = installed_version(&status, "systemd").ok_or_else(|| {
        SystemdImageError::Recipe(format!(
            "{} says systemd is not installed in the stock image",
            status_path.display()
        ))
    })?;
    let started = Instant::now();
    let scratch = cache.scratch("images/systemd")?;
    let buildroot = scratch.path().join("buildroot");
    host_tool::run(Command::new(&cp).arg("-a").arg(&stock.dir).arg(&buildroot))?;
    prepare(&buildroot)?;
    let log_path = scratch.path().join("build.log");
    tracing::info!(
        "building the systemd-defects image: systemd {version} from Debian's source with {} patch(es), in a copy of the image (about 5 minutes on two cores, once); log: {}",
        RECIPE.len() - 1,
        log_path.display()
    );
    let script =
        r#"mount -t proc proc "$1/proc" && exec "$2" "$1" /bin/sh /kchaos/build.sh "$3" 2>&1"#;
    let mut cmd = Command::new(&unshare);
    cmd.args(["--mount", "--fork", "--", "sh", "-c", script, "sh"])
        .arg(&buildroot)
        .arg(&chroot)
        .arg(&version);
    run_logged(&mut cmd, &log_path, &parent, &key)?;
    let out = buildroot.join("kchaos/out");
    let manifest_path = out.join("manifest");
    let manifest = std::fs::read_to_string(&manifest_path).map_err(io("read", &manifest_path))?;
    let built = parse_manifest(&manifest).map_err(SystemdImageError::Recipe)?;

    let stage = scratch.path().join("final");
    std::fs::create_dir_all(&stage).map_err(io("create", &stage))?;
    let root = stage.join("rootfs");
    // Hard links: the tree costs no copy; replaced files are unlinked first, never
    // written through into the stock tree.
    host_tool::run(
        Command::new(&cp)
            .arg("-a")
            .arg("-l")
            .arg(&stock.dir)
            .arg(&root),
    )?;
    for b in &built {
        let target = resolve_in_root(&root, &b.dest)?;
        if target.symlink_metadata().is_ok() {
            std::fs::remove_file(&target).map_err(io("replace", &target))?;
        }
        let from = out.join(&b.file);
        std::fs::copy(&from, &target).map_err(io("install", &target))?;
    }
    let info = serde_json::json!({
        "key": key,
        "stock_key": stock.key,
        "systemd": version,
        "patches": RECIPE.iter().filter(|(n, _)| n.starts_with("patches/")).map(|(n, _)| n).collect::<Vec<_>>(),
        "files": built.iter().map(|b| &b.dest).collect::<Vec<_>>(),
        "took_s": started.elapsed().as_secs_f64(),
    });
    Cache::write_atomic(&stage.join("info.json"), info.to_string().as_bytes())?;
    let _ = std::fs::copy(&log_path, stage.join("build.log"));
    Cache::write_atomic(&stage.join(".complete"), b"")?;
    Cache::install_dir(&stage, &final_dir)?;
    tracing::info!(
        dir = %final_dir.display(),
        took_s = started.elapsed().as_secs(),
        "built the systemd-defects image"
    );
    Ok(found())
}

/// The build chroot's set-up: the recipe, name resolution for apt, no service starts.
fn prepare(root: &Path) -> Result<(), SystemdImageError> {
    for (name, text) in RECIPE {
        let path = root.join("kchaos").join(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        }
        std::fs::write(&path, text).map_err(io("write", &path))?;
    }
    let resolv = root.join("etc/resolv.conf");
    let _ = std::fs::remove_file(&resolv);
    let host = std::fs::read("/etc/resolv.conf").unwrap_or_default();
    std::fs::write(&resolv, host).map_err(io("write", &resolv))?;
    let policy = root.join("usr/sbin/policy-rc.d");
    std::fs::write(&policy, "#!/bin/sh\nexit 101\n").map_err(io("write", &policy))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o755))
        .map_err(io("chmod", &policy))?;
    Ok(())
}

/// Runs the build, every line into the log, progress every half minute; a failure
/// keeps the log next to the cache entry and quotes its end.
fn run_logged(
    cmd: &mut Command,
    log_path: &Path,
    parent: &Path,
    key: &str,
) -> Result<(), SystemdImageError> {
    let mut log = File::create(log_path).map_err(io("create", log_path))?;
    let started = Instant::now();
    let mut last = Instant::now();
    let mut step = String::new();
    let result = host_tool::run_streaming(cmd, DEADLINE, &mut |line| {
        let _ = writeln!(log, "{line}");
        if let Some(s) = line.strip_prefix("kchaos-systemd-build: ") {
            step = s.to_owned();
            tracing::info!("systemd-defects image: {step}");
        } else if last.elapsed() >= PROGRESS_EVERY && line.starts_with('[') {
            // ninja's "[n/m] ..." progress.
            last = Instant::now();
            let progress = line.split(']').next().unwrap_or("").trim_start_matches('[');
            tracing::info!(
                "systemd-defects image: {step}: {progress} ({}s)",
                started.elapsed().as_secs()
            );
        }
    });
    drop(log);
    if let Err(source) = result {
        let kept: PathBuf = parent.join(format!("defects-{}.failed.log", &key[..24]));
        let _ = std::fs::copy(log_path, &kept);
        let text = std::fs::read_to_string(log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        return Err(SystemdImageError::Build {
            log: kept.display().to_string(),
            tail: lines[lines.len().saturating_sub(TAIL)..].join("\n"),
            source,
        });
    }
    Ok(())
}

/// The build lock of one key: a second kchaos waits instead of building it twice.
fn lock(path: &Path) -> Result<Flock<File>, SystemdImageError> {
    let file = File::create(path).map_err(io("create", path))?;
    Ok(file_io::lock(file, path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_installed_version_comes_from_the_package_stanza() {
        let status = "\
Package: libsystemd0
Status: install ok installed
Version: 252.39-1~deb12u2

Package: systemd
Status: install ok installed
Priority: important
Version: 252.39-1~deb12u2
Description: system and service manager

Package: removed-one
Status: deinstall ok config-files
Version: 1.0
";
        assert_eq!(
            installed_version(status, "systemd").as_deref(),
            Some("252.39-1~deb12u2")
        );
        assert_eq!(installed_version(status, "removed-one"), None);
        assert_eq!(installed_version(status, "dbus"), None);
        assert_eq!(installed_version("", "systemd"), None);
    }

    #[test]
    fn the_manifest_names_plain_files_and_absolute_destinations() {
        let ok = "systemd\t/lib/systemd/systemd\nlibsystemd-shared-252-kchaos.so\t/usr/lib/x86_64-linux-gnu/systemd/libsystemd-shared-252-kchaos.so\n";
        let built = parse_manifest(ok).unwrap();
        assert_eq!(built.len(), 2);
        assert_eq!(built[0].dest, "/lib/systemd/systemd");
        for bad in [
            "",
            "systemd /lib/systemd/systemd",
            "../systemd\t/lib/systemd/systemd",
            "systemd\tlib/systemd/systemd",
            "systemd\t/lib/../../etc/shadow",
            "sub/systemd\t/lib/systemd/systemd",
        ] {
            assert!(parse_manifest(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn the_key_follows_the_stock_tree_and_the_recipe() {
        let stock = |key: &str| Rootfs {
            dir: PathBuf::from("/x"),
            key: key.to_owned(),
        };
        assert_eq!(key(&stock("a")), key(&stock("a")));
        assert_ne!(key(&stock("a")), key(&stock("b")));
        assert!(RECIPE
            .iter()
            .any(|(n, t)| n.starts_with("patches/")
                && t.contains("kchaos_defect.sd_bus_cookie_overrun")));
    }
}
