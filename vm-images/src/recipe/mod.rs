//! Kernels kchaos builds itself (`build:<recipe>`): Debian's kernel source package,
//! the recipe's patches, `vm-images/recipes/kernel/build.sh` with the recipe's config
//! fragments. Built on first use (minutes) and cached, keyed by the source package's
//! version and every byte of the recipe files it uses.
//!
//! The recipe files are compiled in, so an installed `kchaos` needs no checkout, and
//! the build steps live in one place: `build.sh`, which users also run on their own
//! trees. This module only fetches the source, patches it, runs the script and keeps
//! what it produced.

mod build;
pub(crate) mod script;
mod source;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use self::source::{plan, AptHost, SourceFacts, SourceHost, SourcePlan};
use crate::bzimage::{self, BzImageError};
use crate::cache::{Cache, CacheError, KeyHasher};
use crate::command::CommandError;
use crate::resolved::Kernel;

/// Bump when the steps in this module change in a way that changes what they produce
/// (the recipe files' bytes are hashed separately).
const FORMAT: &str = "kchaos-kernel-build-v1";

/// A kernel recipe: which Debian source, which fragments after `kchaos.config`, which
/// patches, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelRecipe {
    pub name: &'static str,
    pub description: &'static str,
    /// Debian's source package (`apt-get install` puts its tarball in `/usr/src`).
    pub source_package: &'static str,
    /// Config fragments merged after `kchaos.config` (names in [`FILES`]).
    pub fragments: &'static [&'static str],
    /// Patches applied with `patch -p1` in this order (names in [`FILES`]).
    pub patches: &'static [&'static str],
}

/// The recipe files, as compiled in (names relative to `vm-images/recipes/kernel/`).
const FILES: &[(&str, &[u8])] = &[
    ("build.sh", include_bytes!("../../recipes/kernel/build.sh")),
    (
        "kchaos.config",
        include_bytes!("../../recipes/kernel/kchaos.config"),
    ),
    (
        "defects.config",
        include_bytes!("../../recipes/kernel/defects.config"),
    ),
    (
        "debuginfo.config",
        include_bytes!("../../recipes/kernel/debuginfo.config"),
    ),
    (
        "debug.config",
        include_bytes!("../../recipes/kernel/debug.config"),
    ),
    (
        "patches/6.1/0001-netdev-ref-leak.patch",
        include_bytes!("../../recipes/kernel/patches/6.1/0001-netdev-ref-leak.patch"),
    ),
    (
        "patches/6.1/0002-memcg-ref-leak.patch",
        include_bytes!("../../recipes/kernel/patches/6.1/0002-memcg-ref-leak.patch"),
    ),
    (
        "patches/6.1/0003-cfs-over-throttle.patch",
        include_bytes!("../../recipes/kernel/patches/6.1/0003-cfs-over-throttle.patch"),
    ),
    (
        "patches/6.1/0004-cfs-period-lockup.patch",
        include_bytes!("../../recipes/kernel/patches/6.1/0004-cfs-period-lockup.patch"),
    ),
    (
        "patches/6.1/0005-fault-memcg.patch",
        include_bytes!("../../recipes/kernel/patches/6.1/0005-fault-memcg.patch"),
    ),
    (
        "patches/6.1/0006-memcg-stat-stall.patch",
        include_bytes!("../../recipes/kernel/patches/6.1/0006-memcg-stat-stall.patch"),
    ),
    (
        "patches/6.1/0007-cfs-cpu-unthrottle-skip.patch",
        include_bytes!("../../recipes/kernel/patches/6.1/0007-cfs-cpu-unthrottle-skip.patch"),
    ),
    (
        "patches/6.1/0008-cgroup-rmdir-stall.patch",
        include_bytes!("../../recipes/kernel/patches/6.1/0008-cgroup-rmdir-stall.patch"),
    ),
    (
        "patches/6.1/0009-cfs-remote-package-skip.patch",
        include_bytes!("../../recipes/kernel/patches/6.1/0009-cfs-remote-package-skip.patch"),
    ),
    (
        "patches/6.1/0010-memcg-id-hold.patch",
        include_bytes!("../../recipes/kernel/patches/6.1/0010-memcg-id-hold.patch"),
    ),
    (
        "patches/6.1/0011-netns-rtnl-stall.patch",
        include_bytes!("../../recipes/kernel/patches/6.1/0011-netns-rtnl-stall.patch"),
    ),
];

/// Every recipe `build:` knows.
pub const RECIPES: &[KernelRecipe] = &[KernelRecipe {
    name: "defects",
    description: "Debian's 6.1 source, minimal VM config, fault injection, DWARF, and every \
                  kchaos defect patch (each off until its kchaos_defect.* boot parameter is given)",
    source_package: "linux-source-6.1",
    // Debug information: the defect kernels are the ones whose crashes and hangs get
    // analysed with `crash` and gdb.
    fragments: &["defects.config", "debuginfo.config"],
    patches: &[
        "patches/6.1/0001-netdev-ref-leak.patch",
        "patches/6.1/0002-memcg-ref-leak.patch",
        "patches/6.1/0003-cfs-over-throttle.patch",
        "patches/6.1/0004-cfs-period-lockup.patch",
        "patches/6.1/0005-fault-memcg.patch",
        "patches/6.1/0006-memcg-stat-stall.patch",
        "patches/6.1/0007-cfs-cpu-unthrottle-skip.patch",
        "patches/6.1/0008-cgroup-rmdir-stall.patch",
        "patches/6.1/0009-cfs-remote-package-skip.patch",
        "patches/6.1/0010-memcg-id-hold.patch",
        "patches/6.1/0011-netns-rtnl-stall.patch",
    ],
}];

/// The recipe called `name`.
pub fn find(name: &str) -> Option<&'static KernelRecipe> {
    RECIPES.iter().find(|r| r.name == name)
}

/// Recipe names, for messages.
pub fn names() -> Vec<&'static str> {
    RECIPES.iter().map(|r| r.name).collect()
}

/// A compiled-in recipe file by name (`build.sh`, `kchaos.config`, `defects.config`, a
/// patch): builds of a git tree's commits ([`crate::tree`]) hand build.sh the same
/// bytes `build:` recipes use.
pub fn file(name: &str) -> Option<&'static [u8]> {
    FILES.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

/// The compiled-in config fragments a build may add after `kchaos.config`.
pub fn fragment_names() -> Vec<&'static str> {
    FILES
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| n.ends_with(".config") && *n != "kchaos.config")
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("Unknown kernel recipe `{0}`")]
    Unknown(String),
    #[error("Recipe `{recipe}` names `{file}`, which is not compiled in")]
    MissingFile { recipe: String, file: String },
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    BzImage(#[from] BzImageError),
    #[error("No source for `{spec}`: {detail}")]
    NoSource { spec: String, detail: String },
    #[error("Cannot {what} {path}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Patch {patch} does not apply to {package} {version}: {output}")]
    Patch {
        patch: String,
        package: String,
        version: String,
        output: String,
    },
    #[error("Building `{spec}` failed ({status}); the log is {log}; it ends with:\n{tail}")]
    Build {
        spec: String,
        status: String,
        log: String,
        tail: String,
    },
    #[error("build.sh printed `{0}`, not a path: kernel spec")]
    BadOutput(String),
    #[error("apt: {0}")]
    Apt(String),
    #[error("Source tarball {path}: {detail}")]
    BadTarball { path: String, detail: String },
    #[error("Corrupt cache entry {path}; delete it and retry")]
    Corrupt {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

pub(crate) fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RecipeError {
    let path = path.display().to_string();
    move |source| RecipeError::Io { what, path, source }
}

impl KernelRecipe {
    fn file(&self, name: &str) -> Result<&'static [u8], RecipeError> {
        FILES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, bytes)| *bytes)
            .ok_or_else(|| RecipeError::MissingFile {
                recipe: self.name.to_owned(),
                file: name.to_owned(),
            })
    }

    /// The files this recipe uses, in the order the key hashes them: the script, the
    /// base fragment, its fragments, its patches.
    fn used_files(&self) -> Result<Vec<(&'static str, &'static [u8])>, RecipeError> {
        let names = ["build.sh", "kchaos.config"]
            .into_iter()
            .chain(self.fragments.iter().copied())
            .chain(self.patches.iter().copied());
        names
            .map(|n| Ok((n, self.file(n)?)))
            .collect::<Result<Vec<_>, _>>()
    }

    /// Cache key of a build from source package `version`. A patch counts from its
    /// first `diff --git` on: its header is documentation, and rewording it must not
    /// cost a rebuild.
    pub fn key(&self, version: &str) -> Result<String, RecipeError> {
        let mut h = KeyHasher::new(FORMAT);
        h.field(self.name.as_bytes())
            .field(self.source_package.as_bytes())
            .field(version.as_bytes());
        for (name, bytes) in self.used_files()? {
            let bytes = if self.patches.contains(&name) {
                patch_body(bytes)
            } else {
                bytes
            };
            h.field(name.as_bytes()).field(bytes);
        }
        Ok(h.finish())
    }

    /// The cache directory name of a build: readable, and unique per key.
    fn dir_name(&self, version: &str) -> Result<String, RecipeError> {
        let key = self.key(version)?;
        let short = key.get(..16).unwrap_or(&key);
        Ok(format!("{}_{}_{short}", self.name, sanitize(version)))
    }
}

/// The part of a patch that changes the source: from its first `diff --git` line.
fn patch_body(patch: &[u8]) -> &[u8] {
    const MARK: &[u8] = b"diff --git ";
    patch
        .windows(MARK.len())
        .position(|w| w == MARK)
        .and_then(|at| patch.get(at..))
        .unwrap_or(patch)
}

/// Debian versions may hold `:` (epochs) and `~`; keep directory names plain.
fn sanitize(version: &str) -> String {
    version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// What a finished build left in its cache directory, written as `build.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BuildRecord {
    pub recipe: String,
    pub source_package: String,
    pub source_version: String,
    pub key: String,
    pub release: String,
    /// Fragment options Kconfig did not take, as build.sh reported them.
    pub config_warnings: Vec<String>,
    pub build_seconds: u64,
    /// What ccache did (when the build went through it): hits and real compiles.
    #[serde(default)]
    pub ccache: Option<crate::tree::CcacheCounts>,
}

const CACHE_SUB: &str = "kernels/build";

/// Resolves `build:<recipe>[@version]`: the cached build for the source version in
/// use, or a new build.
pub fn resolve(
    cache: &Cache,
    spec: &str,
    recipe_name: &str,
    pinned: Option<&str>,
    host: &dyn SourceHost,
) -> Result<Kernel, RecipeError> {
    let recipe = find(recipe_name).ok_or_else(|| RecipeError::Unknown(recipe_name.to_owned()))?;
    let root = cache.dir(CACHE_SUB)?;
    let facts = SourceFacts::gather(cache, recipe, pinned, host, &|v| {
        recipe
            .dir_name(v)
            .map(|d| root.join(d).join(".complete").exists())
            .unwrap_or(false)
    })?;
    let plan = plan(&facts).map_err(|detail| RecipeError::NoSource {
        spec: spec.to_owned(),
        detail,
    })?;
    let version = plan.version().to_owned();
    let dir = root.join(recipe.dir_name(&version)?);
    if !dir.join(".complete").exists() {
        // One build per key at a time: a second kchaos waits here, then finds it done.
        let _lock = build::lock(&root.join(format!("{}.lock", recipe.dir_name(&version)?)))?;
        if !dir.join(".complete").exists() {
            build::build(cache, spec, recipe, &plan, host, &dir)?;
        }
    }
    load(&dir, spec)
}

/// A cached build as a [`Kernel`]. `package` stays `None`: the source version is in
/// `resolved`, and `kchaos analyze` looks for `vmlinux` next to the bzImage of a kernel
/// that is not a Debian binary package, which is where the build keeps it.
fn load(dir: &Path, spec: &str) -> Result<Kernel, RecipeError> {
    let path = dir.join("build.json");
    let text = std::fs::read(&path).map_err(io("read", &path))?;
    let record: BuildRecord =
        serde_json::from_slice(&text).map_err(|source| RecipeError::Corrupt {
            path: path.display().to_string(),
            source,
        })?;
    let bzimage = dir.join("bzImage");
    let release = bzimage::release_of(&bzimage)?;
    let modules = dir.join("lib/modules").join(&release);
    Ok(Kernel {
        spec: spec.to_owned(),
        resolved: format!("build:{}@{}", record.recipe, record.source_version),
        release,
        package: None,
        debian: None,
        source: None,
        bzimage,
        modules_dir: modules.is_dir().then_some(modules),
        config_path: Some(dir.join("config")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_recipe_file_is_compiled_in_and_every_recipe_finds_its_files() {
        for recipe in RECIPES {
            let files = recipe.used_files().unwrap();
            assert_eq!(
                files.len(),
                2 + recipe.fragments.len() + recipe.patches.len()
            );
            assert!(files.iter().all(|(_, b)| !b.is_empty()));
        }
        // Patches start with their header: what they break, the incident, the fix.
        let defects = find("defects").unwrap();
        for patch in defects.patches {
            let text = String::from_utf8_lossy(defects.file(patch).unwrap()).into_owned();
            assert!(text.contains("What it "), "{patch} has no header");
            assert!(
                text.contains("Incident mirrored:"),
                "{patch} names no incident"
            );
            assert!(
                text.contains("Upstream fix"),
                "{patch} says nothing of upstream"
            );
            assert!(text.contains("kchaos_defect."), "{patch} has no switch");
        }
    }

    #[test]
    fn the_key_follows_the_source_version_and_the_recipe_bytes() {
        let r = find("defects").unwrap();
        let a = r.key("6.1.192-2").unwrap();
        assert_eq!(a, r.key("6.1.192-2").unwrap());
        assert_ne!(a, r.key("6.1.193-1").unwrap());
        let fewer = KernelRecipe {
            patches: &r.patches[..1],
            ..*r
        };
        assert_ne!(a, fewer.key("6.1.192-2").unwrap());
        assert!(r
            .dir_name("1:6.1.192~rc1")
            .unwrap()
            .starts_with("defects_1_6.1.192_rc1_"));
    }

    #[test]
    fn a_patch_counts_from_its_diff_not_its_header() {
        let a = b"Subject: old words\n\n---\n a | 1 +\n\ndiff --git a/a b/a\n+x\n";
        let b = b"Subject: new words\n\n---\n a | 1 +\n\ndiff --git a/a b/a\n+x\n";
        assert_eq!(patch_body(a), patch_body(b));
        assert_eq!(patch_body(a), b"diff --git a/a b/a\n+x\n");
        assert_eq!(patch_body(b"no diff at all"), b"no diff at all");
    }

    #[test]
    fn a_recipe_naming_a_missing_file_is_an_error_not_a_panic() {
        let r = KernelRecipe {
            name: "broken",
            description: "",
            source_package: "linux-source-6.1",
            fragments: &["nope.config"],
            patches: &[],
        };
        let e = r.key("1").unwrap_err().to_string();
        assert!(e.contains("`nope.config`"), "{e}");
    }
}
