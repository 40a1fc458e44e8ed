//! The systemd guest image: a Debian root filesystem with systemd and dbus, built once
//! per recipe with debootstrap, and per payload (runner, modules, tools) an ext4 disk
//! image made with `mkfs.ext4 -d`: no mount, no loop device, under a second.
//!
//! The recipe lives in `vm-images/recipes/systemd/` and is compiled in: the binary
//! always builds the image its runner was written for, and every byte of the recipe is
//! part of the root filesystem's cache key.

pub mod defects;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use kchaos_model::image::SERVICE_RUNNER_PATH;
use serde::Deserialize;

use crate::cache::{Cache, CacheError, KeyHasher, KeyedFile};
use crate::file_io::{io, IoError};
use crate::host_tool::{self, CommandError};
use crate::image::payload::{FileOrigin, Payload};

/// Bump when the build steps change (the recipe's own bytes are hashed separately).
const ROOTFS_FORMAT: &str = "kchaos-systemd-rootfs-v1";
const DISK_FORMAT: &str = "kchaos-systemd-disk-v1";
/// Disk images kept in the cache; older ones (earlier runner builds) are deleted.
pub const KEEP_DISKS: usize = 4;
/// Free space on the disk beyond its contents, for what scenarios write (the disk is
/// attached with `snapshot=on`, so writes never reach the cached image).
const HEADROOM_MIB: u64 = 512;

/// The recipe's files, as compiled in.
const RECIPE: &[(&str, &str)] = &[
    (
        "recipe.toml",
        include_str!("../../../recipes/systemd/recipe.toml"),
    ),
    (
        "kchaos.target",
        include_str!("../../../recipes/systemd/kchaos.target"),
    ),
    (
        "kchaos-runner.service",
        include_str!("../../../recipes/systemd/kchaos-runner.service"),
    ),
    ("fstab", include_str!("../../../recipes/systemd/fstab")),
    (
        "hostname",
        include_str!("../../../recipes/systemd/hostname"),
    ),
    (
        "machine-id",
        include_str!("../../../recipes/systemd/machine-id"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum SystemdImageError {
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("The compiled-in systemd recipe is invalid: {0}")]
    Recipe(String),
    #[error("Building the systemd image needs root (debootstrap chroots and creates device nodes; the disk holds root-owned files): run kchaos as root")]
    NotRoot,
    #[error("Building the systemd image needs `{tool}` (install the `{package}` package, or run `kchaos setup`)")]
    MissingTool { tool: String, package: String },
    #[error("debootstrap failed; its log ends with:\n{log_tail}")]
    Debootstrap {
        log_tail: String,
        #[source]
        source: CommandError,
    },
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("Refusing to write {path} in the image: {why}")]
    UnsafePath { path: String, why: String },
    #[error("Building the systemd-defects image failed (log: {log}); it ends with:\n{tail}")]
    Build {
        log: String,
        tail: String,
        #[source]
        source: CommandError,
    },
}

/// Which systemd the image runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Debian's packages as debootstrap installs them.
    Stock,
    /// PID 1 rebuilt with the defect patches, each off until its boot parameter
    /// ([`defects`]).
    Defects,
}

/// `recipe.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub suite: String,
    pub variant: String,
    pub packages: Vec<String>,
    #[serde(default)]
    pub cmdline: Vec<String>,
    #[serde(default)]
    pub mask: Vec<String>,
    #[serde(default)]
    pub disable_generators: Vec<String>,
    #[serde(default)]
    pub prune: Vec<String>,
    /// Path in the image → recipe file.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// Path in the image → symlink target.
    #[serde(default)]
    pub links: BTreeMap<String, String>,
}

impl Recipe {
    /// The compiled-in recipe, with every file it names present.
    pub fn builtin() -> Result<Recipe, SystemdImageError> {
        let text = recipe_file("recipe.toml")?;
        let recipe: Recipe =
            toml::from_str(text).map_err(|e| SystemdImageError::Recipe(e.to_string()))?;
        for file in recipe.files.values() {
            recipe_file(file)?;
        }
        Ok(recipe)
    }

    /// Cache key of the root filesystem: the build steps' version and every recipe byte.
    pub fn key(&self) -> String {
        let mut h = KeyHasher::new(ROOTFS_FORMAT);
        for (name, text) in RECIPE {
            h.field(name.as_bytes()).field(text.as_bytes());
        }
        h.finish()
    }
}

fn recipe_file(name: &str) -> Result<&'static str, SystemdImageError> {
    RECIPE
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
        .ok_or_else(|| SystemdImageError::Recipe(format!("no recipe file `{name}`")))
}

/// A built root filesystem in the cache.
#[derive(Debug, Clone)]
pub struct Rootfs {
    pub dir: PathBuf,
    pub key: String,
}

/// A bootable disk image: the root filesystem plus one payload.
#[derive(Debug, Clone)]
pub struct Disk {
    pub path: PathBuf,
    /// Content hash of the inputs (recipe and payload), recorded with every result.
    pub key: String,
    pub size: u64,
    /// Kernel parameters the image needs besides the root device.
    pub cmdline: Vec<String>,
}

/// Builds (or finds in the cache) the disk image for this payload.
pub fn build(
    cache: &Cache,
    payload: &Payload<'_>,
    variant: Variant,
) -> Result<Disk, SystemdImageError> {
    let recipe = Recipe::builtin()?;
    let rootfs = match variant {
        Variant::Stock => rootfs(cache, &recipe)?,
        Variant::Defects => defects::rootfs(cache, &rootfs(cache, &recipe)?)?,
    };
    let mut h = KeyHasher::new(DISK_FORMAT);
    h.field(rootfs.key.as_bytes())
        .field(payload.key(DISK_FORMAT).as_bytes());
    let key = h.finish();
    let KeyedFile { dir, path, built } = cache.keyed_file("images/systemd-disks", &key, "img")?;
    if let Some(size) = built {
        return Ok(Disk {
            path,
            key,
            size,
            cmdline: recipe.cmdline,
        });
    }
    let [mkfs, cp] = require_root_and_tools([("mkfs.ext4", "e2fsprogs"), ("cp", "coreutils")])?;
    let started = std::time::Instant::now();
    let scratch = cache.scratch("images/systemd-disks")?;
    let staging = scratch.path().join("root");
    // Hard links: the staging tree costs no copy. Payload files replace links (unlink,
    // then write) and never write through them into the cached root filesystem.
    host_tool::run(
        Command::new(cp)
            .arg("-a")
            .arg("-l")
            .arg(&rootfs.dir)
            .arg(&staging),
    )?;
    for file in payload.files(SERVICE_RUNNER_PATH, DISK_FORMAT) {
        let target = resolve_in_root(&staging, &file.path)?;
        if target.symlink_metadata().is_ok() {
            if file.origin == FileOrigin::Tool {
                // The image's own copy of a program or library wins: it matches the
                // rest of the image's userland.
                continue;
            }
            std::fs::remove_file(&target).map_err(io("replace", &target))?;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io("create", parent))?;
        }
        std::fs::write(&target, &file.data).map_err(io("write", &target))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(file.mode))
            .map_err(io("chmod", &target))?;
    }
    let content: u64 = walkdir::WalkDir::new(&staging)
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    let size_mib = content / (1 << 20) * 5 / 4 + HEADROOM_MIB;
    let image = scratch.path().join("disk.img");
    host_tool::run(
        Command::new(mkfs)
            .args(["-q", "-F", "-L", "kchaos-root", "-m", "0", "-d"])
            .arg(&staging)
            .arg(&image)
            .arg(format!("{size_mib}M")),
    )?;
    std::fs::rename(&image, &path).map_err(io("install", &path))?;
    let size = std::fs::metadata(&path).map_or(0, |m| m.len());
    tracing::info!(
        path = %path.display(),
        size_mib,
        took_s = started.elapsed().as_secs_f64(),
        "built systemd disk image"
    );
    // Each runner build makes one: keep the recently used.
    crate::cache::evict_lru(&dir, "img", KEEP_DISKS, Some(&path));
    Ok(Disk {
        path,
        key,
        size,
        cmdline: recipe.cmdline,
    })
}

/// Builds (or finds in the cache) the root filesystem of the recipe.
pub fn rootfs(cache: &Cache, recipe: &Recipe) -> Result<Rootfs, SystemdImageError> {
    let key = recipe.key();
    let final_dir = cache.dir("images/systemd")?.join(&key[..24]);
    if final_dir.join(".complete").exists() {
        return Ok(Rootfs {
            dir: final_dir.join("rootfs"),
            key,
        });
    }
    let [debootstrap] = require_root_and_tools([("debootstrap", "debootstrap")])?;
    let mirror = apt_mirror();
    tracing::info!(
        suite = %recipe.suite,
        %mirror,
        "building the systemd root filesystem with debootstrap (about a minute, once per recipe)"
    );
    let started = std::time::Instant::now();
    let scratch = cache.scratch("images/systemd")?;
    let root = scratch.path().join("rootfs");
    let debootstrap = host_tool::run(
        Command::new(debootstrap)
            .arg(format!("--variant={}", recipe.variant))
            .arg(format!("--include={}", recipe.packages.join(",")))
            .arg(&recipe.suite)
            .arg(&root)
            .arg(&mirror),
    );
    if let Err(source) = debootstrap {
        let log =
            std::fs::read_to_string(root.join("debootstrap/debootstrap.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let log_tail = lines[lines.len().saturating_sub(15)..].join("\n");
        return Err(SystemdImageError::Debootstrap { log_tail, source });
    }
    customize(&root, recipe)?;
    let info = serde_json::json!({
        "recipe_key": key,
        "suite": recipe.suite,
        "mirror": mirror,
        "packages": recipe.packages,
        "took_s": started.elapsed().as_secs_f64(),
    });
    Cache::write_atomic(
        &scratch.path().join("info.json"),
        info.to_string().as_bytes(),
    )?;
    Cache::write_atomic(&scratch.path().join(".complete"), b"")?;
    let built = scratch.keep();
    Cache::install_dir(&built, &final_dir)?;
    // Another process may have installed the same key first; ours is then redundant.
    if built.exists() {
        let _ = std::fs::remove_dir_all(&built);
    }
    tracing::info!(
        dir = %final_dir.display(),
        took_s = started.elapsed().as_secs(),
        "built the systemd root filesystem"
    );
    Ok(Rootfs {
        dir: final_dir.join("rootfs"),
        key,
    })
}

/// The recipe's changes to a fresh debootstrap tree.
fn customize(root: &Path, recipe: &Recipe) -> Result<(), SystemdImageError> {
    for dir in &recipe.prune {
        let path = resolve_in_root(root, dir)?;
        if path.is_dir() {
            std::fs::remove_dir_all(&path).map_err(io("prune", &path))?;
            std::fs::create_dir_all(&path).map_err(io("create", &path))?;
        }
    }
    for (at, file) in &recipe.files {
        let path = resolve_in_root(root, at)?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io("create", parent))?;
        }
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, recipe_file(file)?).map_err(io("write", &path))?;
    }
    let links = recipe
        .links
        .iter()
        .map(|(at, to)| (at.clone(), to.clone()))
        .chain(
            recipe
                .mask
                .iter()
                .map(|unit| (format!("etc/systemd/system/{unit}"), "/dev/null".to_owned())),
        )
        .chain(recipe.disable_generators.iter().map(|g| {
            (
                format!("etc/systemd/system-generators/{g}"),
                "/dev/null".to_owned(),
            )
        }));
    for (at, to) in links {
        let path = resolve_in_root(root, &at)?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io("create", parent))?;
        }
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(&to, &path).map_err(io("link", &path))?;
    }
    Ok(())
}

/// `path` (absolute in the guest) inside the tree at `root`, following the tree's own
/// symlinks as the guest would see them: an absolute link target is re-rooted, never
/// followed into the host (`/lib` is a link to `usr/lib` in merged-/usr Debian).
pub fn resolve_in_root(root: &Path, path: &str) -> Result<PathBuf, SystemdImageError> {
    let unsafe_path = |why: &str| SystemdImageError::UnsafePath {
        path: path.to_owned(),
        why: why.to_owned(),
    };
    let mut pending: Vec<String> = Path::new(path)
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(Ok(s.to_string_lossy().into_owned())),
            Component::ParentDir => Some(Err(())),
            _ => None,
        })
        .collect::<Result<_, _>>()
        .map_err(|()| unsafe_path("`..` is not allowed"))?;
    let mut resolved: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        let here: PathBuf = std::iter::once(root.to_path_buf())
            .chain(resolved.iter().map(PathBuf::from))
            .chain(std::iter::once(PathBuf::from(&part)))
            .collect();
        // The last component is what gets written: a symlink there is replaced, not
        // followed.
        let last = pending.is_empty();
        match std::fs::read_link(&here) {
            Ok(target) if !last => {
                hops += 1;
                if hops > 40 {
                    return Err(unsafe_path("too many symlinks"));
                }
                if target.is_absolute() {
                    resolved.clear();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(s) => pending.push(s.to_string_lossy().into_owned()),
                        Component::ParentDir => pending.push("..".to_owned()),
                        _ => {}
                    }
                }
            }
            _ if part == ".." => {
                resolved.pop();
            }
            _ => resolved.push(part),
        }
    }
    Ok(resolved
        .iter()
        .fold(root.to_path_buf(), |acc, part| acc.join(part)))
}

/// Checks for root and finds each `(program, package)`; a missing one names its package.
fn require_root_and_tools<const N: usize>(
    tools: [(&str, &str); N],
) -> Result<[PathBuf; N], SystemdImageError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(SystemdImageError::NotRoot);
    }
    let found =
        tools.map(|(tool, package)| crate::image::tools::find_program(tool).ok_or((tool, package)));
    if let Some(Err((tool, package))) = found.iter().find(|r| r.is_err()) {
        return Err(SystemdImageError::MissingTool {
            tool: (*tool).to_owned(),
            package: (*package).to_owned(),
        });
    }
    Ok(found.map(Result::unwrap_or_default))
}

/// The Debian mirror: `$KCHAOS_DEBIAN_MIRROR`, else the first one apt is configured
/// with (the same mirror kernels come from), else deb.debian.org.
pub fn apt_mirror() -> String {
    if let Some(m) = std::env::var_os("KCHAOS_DEBIAN_MIRROR").filter(|m| !m.is_empty()) {
        return m.to_string_lossy().into_owned();
    }
    let mut texts = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        texts.extend(paths.iter().filter_map(|p| std::fs::read_to_string(p).ok()));
    }
    texts.extend(std::fs::read_to_string("/etc/apt/sources.list").ok());
    texts
        .iter()
        .find_map(|t| mirror_from_sources(t))
        .unwrap_or_else(|| "http://deb.debian.org/debian".to_owned())
}

/// The first Debian archive (not the security archive) in apt's sources, in either the
/// one-line or the deb822 format.
fn mirror_from_sources(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let uris = if let Some(rest) = line.strip_prefix("URIs:") {
                rest.split_whitespace().next()
            } else if let Some(rest) = line.strip_prefix("deb ") {
                rest.split_whitespace().find(|w| w.contains("://"))
            } else {
                None
            }?;
            (!uris.contains("security")).then(|| uris.to_owned())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_recipe_parses_and_names_only_existing_files() {
        let recipe = Recipe::builtin().unwrap();
        assert_eq!(recipe.suite, "bookworm");
        assert!(recipe.packages.iter().any(|p| p == "systemd"));
        assert!(recipe
            .files
            .contains_key("etc/systemd/system/kchaos-runner.service"));
        let service = recipe_file("kchaos-runner.service").unwrap();
        assert!(
            service.contains(&format!("ExecStart={SERVICE_RUNNER_PATH} --service")),
            "the unit must start the runner where the disk puts it"
        );
        assert_eq!(recipe.key().len(), 64);
    }

    #[test]
    fn mirror_comes_from_either_sources_format() {
        let deb822 = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n\nTypes: deb\nURIs: http://deb.debian.org/debian-security\n";
        assert_eq!(
            mirror_from_sources(deb822).as_deref(),
            Some("http://mirror.example/debian")
        );
        let classic = "# comment\ndeb http://security.debian.org/ bookworm-security main\ndeb [arch=amd64] http://ftp.example/debian bookworm main\n";
        assert_eq!(
            mirror_from_sources(classic).as_deref(),
            Some("http://ftp.example/debian")
        );
        assert_eq!(mirror_from_sources("deb-src http://x/ y z\n"), None);
    }

    #[test]
    fn paths_resolve_inside_the_tree_never_into_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        // An absolute link must land inside the tree, not in the host's /etc.
        std::os::unix::fs::symlink("/etc", root.join("hostetc")).unwrap();
        assert_eq!(
            resolve_in_root(root, "/lib/modules/6.1/x.ko").unwrap(),
            root.join("usr/lib/modules/6.1/x.ko")
        );
        assert_eq!(
            resolve_in_root(root, "/hostetc/passwd").unwrap(),
            root.join("etc/passwd")
        );
        // The final component is replaced, not followed.
        assert_eq!(resolve_in_root(root, "/lib").unwrap(), root.join("lib"));
        assert!(resolve_in_root(root, "/a/../../etc").is_err());
    }

    #[test]
    fn customize_writes_files_masks_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/share/doc/pkg")).unwrap();
        std::fs::write(root.join("usr/share/doc/pkg/README"), b"x").unwrap();
        let recipe = Recipe::builtin().unwrap();
        customize(root, &recipe).unwrap();
        assert!(!root.join("usr/share/doc/pkg").exists(), "pruned");
        assert_eq!(
            std::fs::read_link(root.join("etc/systemd/system/systemd-logind.service")).unwrap(),
            Path::new("/dev/null")
        );
        assert_eq!(
            std::fs::read_link(root.join("etc/systemd/system/default.target")).unwrap(),
            Path::new("/etc/systemd/system/kchaos.target")
        );
        assert!(
            std::fs::read_to_string(root.join("etc/systemd/system/kchaos-runner.service"))
                .unwrap()
                .contains("--service")
        );
    }
}
