//! A build in the cache: what names it (the key over the source version and every
//! recipe byte it uses, the directory name) and what it leaves there (`build.json`).

use serde::{Deserialize, Serialize};

use super::error::RecipeError;
use crate::cache::{self, KeyHasher};
use crate::kbuild::ccache::CcacheCounts;
use crate::kernel::recipes::{self, KernelRecipe};

/// Bump when the build steps (`recipe::build`) change in a way that changes what they produce
/// (the recipe files' bytes are hashed separately).
const FORMAT: &str = "kchaos-kernel-build-v1";

/// Where `build:` kernels are kept, below the cache's root.
pub(super) const CACHE_SUB: &str = "kernels/build";

impl KernelRecipe {
    fn file(&self, name: &str) -> Result<&'static [u8], RecipeError> {
        recipes::file(name).ok_or_else(|| RecipeError::MissingFile {
            recipe: self.name.to_owned(),
            file: name.to_owned(),
        })
    }

    /// The files this recipe uses, in the order the key hashes them: the script, the
    /// base fragment, its fragments, its patches.
    pub(super) fn used_files(&self) -> Result<Vec<(&'static str, &'static [u8])>, RecipeError> {
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
    pub(super) fn dir_name(&self, version: &str) -> Result<String, RecipeError> {
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
    cache::dir_safe(version, &['.', '-', '+'])
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
    pub ccache: Option<CcacheCounts>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::recipes::{find, RECIPES};

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
