//! Kernel specs as users write them.
//!
//! - `debian:<version>[-<flavour>][@<release>]`: a Debian kernel package. `<version>` is
//!   an exact ABI (`6.1.0-56`, `6.12.118+deb13`) or a series (`5.10`, `6.1`, `6.12`) that
//!   resolves to the newest ABI of its release (recorded exactly in the results).
//!   Flavours: `cloud` (the default: boots fastest, no initramfs needed), `rt`,
//!   `generic`. `@<release>` (`bullseye`, `bookworm`, `bookworm-backports`, `trixie`,
//!   `trixie-backports`) says where to look; without it a series resolves in the release
//!   whose own kernel it is (see `debian::release`).
//! - `path:<bzImage>[,modules=<dir>][,config=<file>][,tree=<name>][,repo=<url>]
//!   [,branch=<name>][,commit=<rev>]`: a local build. `modules` is the
//!   `lib/modules/<release>` directory `make modules_install` produced. The git options
//!   say where its source came from (nothing reads them to boot): a local build has no
//!   other record of it, and reports to kernel CI (KCIDB's checkouts) group by it.
//! - `build:<recipe>[@<source version>]`: a kernel kchaos builds itself from a compiled-in
//!   recipe (`vm-images/recipes/kernel/`, e.g. `build:defects`) and Debian's kernel
//!   source package, once, then from the cache. Without `@`, the source version is the
//!   one apt offers (recorded exactly in the results: `build:defects@6.1.192-2`).

use std::fmt;
use std::path::PathBuf;

pub use crate::debian::abi::compare_abi;
pub use crate::debian::{DebianVersion, Flavour, Release};
use crate::kernel::recipes;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSpec {
    Debian {
        version: DebianVersion,
        flavour: Flavour,
        /// `@<release>`: where to look instead of where the version points.
        release: Option<Release>,
    },
    Path {
        bzimage: PathBuf,
        modules: Option<PathBuf>,
        config: Option<PathBuf>,
        /// Where the build's source came from, as the user said.
        source: GitSource,
    },
    Build {
        /// A recipe name from [`recipes::RECIPES`].
        recipe: String,
        /// The Debian source package version, when pinned.
        source_version: Option<String>,
    },
}

/// The git checkout a local build was made from, each part optional: the tree's
/// widely known name (`mainline`, `net-next`), the repository (an `https://` URL, the
/// only kind KCIDB takes), the branch, and the commit: a full hash (stored in lower
/// case) or any revision `git` names (`v6.1-12-g3f2a9c1e`), which `kchaos bisect`
/// resolves in the tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitSource {
    pub tree: Option<String>,
    pub repo: Option<String>,
    pub branch: Option<String>,
    pub commit: Option<String>,
}

impl GitSource {
    /// Reads one `key=value` option of a `path:` spec into `self`; `Ok(false)` when the
    /// key is not a git option.
    fn set(&mut self, key: &str, value: &str) -> Result<bool, String> {
        let slot = match key {
            "tree" => &mut self.tree,
            "branch" => &mut self.branch,
            "repo" => {
                if !value.starts_with("https://") || value.len() == "https://".len() {
                    return Err(format!(
                        "repo=`{value}` is not an https:// URL (the only kind KCIDB takes)"
                    ));
                }
                &mut self.repo
            }
            "commit" => {
                if !is_git_rev(value) {
                    return Err(format!(
                        "`{value}` is not a git revision; commit= takes a hash or a `git describe` name"
                    ));
                }
                self.commit = Some(if is_full_hash(value) {
                    value.to_ascii_lowercase()
                } else {
                    value.to_owned()
                });
                return Ok(true);
            }
            _ => return Ok(false),
        };
        *slot = Some(value.to_owned());
        Ok(true)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("Invalid kernel spec `{spec}`: {reason}")]
pub struct SpecError {
    pub spec: String,
    pub reason: String,
}

impl KernelSpec {
    pub fn parse(spec: &str) -> Result<KernelSpec, SpecError> {
        let err = |reason: &str| SpecError {
            spec: spec.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(rest) = spec.strip_prefix("debian:") {
            let (rest, release) = match rest.split_once('@') {
                Some((rest, name)) => (rest, Some(Release::parse(name).map_err(|e| err(&e))?)),
                None => (rest, None),
            };
            let (version, flavour) = match rest.rsplit_once('-') {
                Some((v, f)) if Flavour::parse(f).is_some() => {
                    (v, Flavour::parse(f).unwrap_or(Flavour::Cloud))
                }
                _ => (rest, Flavour::Cloud),
            };
            let valid = !version.is_empty()
                && version.starts_with(|c: char| c.is_ascii_digit())
                && version
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | '~'));
            if !valid {
                return Err(err("expected debian:<version>[-<flavour>][@<release>], e.g. debian:6.1-cloud, debian:6.1.0-56-cloud or debian:6.12-cloud@bookworm-backports"));
            }
            let is_series = version.split('.').count() == 2
                && version
                    .split('.')
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
            let version = if is_series {
                DebianVersion::Series(version.to_owned())
            } else {
                DebianVersion::Abi(version.to_owned())
            };
            return Ok(KernelSpec::Debian {
                version,
                flavour,
                release,
            });
        }
        if let Some(rest) = spec.strip_prefix("path:") {
            let mut parts = rest.split(',');
            let bzimage = parts
                .next()
                .filter(|p| !p.is_empty())
                .ok_or_else(|| err("path: needs the bzImage path"))?;
            let mut modules = None;
            let mut config = None;
            let mut source = GitSource::default();
            for part in parts {
                match part.split_once('=') {
                    Some(("modules", dir)) if !dir.is_empty() => modules = Some(PathBuf::from(dir)),
                    Some(("config", file)) if !file.is_empty() => {
                        config = Some(PathBuf::from(file));
                    }
                    Some((key, value)) if !value.is_empty() && source.set(key, value).map_err(|e| err(&e))? => {}
                    _ => {
                        return Err(err(&format!(
                            "unknown option `{part}`; allowed: modules=<dir>, config=<file>, tree=<name>, repo=<https URL>, branch=<name>, commit=<rev>"
                        )))
                    }
                }
            }
            return Ok(KernelSpec::Path {
                bzimage: PathBuf::from(bzimage),
                modules,
                config,
                source,
            });
        }
        if let Some(rest) = spec.strip_prefix("build:") {
            return parse_build(rest).map_err(|reason| err(&reason));
        }
        Err(err("expected debian:<version>[-<flavour>][@<release>], path:<bzImage>[,modules=<dir>][,config=<file>][,commit=<sha1>,...] or build:<recipe>[@<source version>]"))
    }
}

/// A full commit hash (40 hex digits, as `git rev-parse HEAD` prints): the only form
/// KCIDB takes as a checkout's commit.
pub fn is_full_hash(rev: &str) -> bool {
    rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit())
}

/// A revision as `commit=` may name it: a hash or a `git describe` name. No spaces,
/// commas (the spec's separator) or anything git refuses in a ref name.
fn is_git_rev(rev: &str) -> bool {
    !rev.is_empty()
        && !rev.starts_with('-')
        && rev.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+' | '/' | '^' | '~')
        })
}

fn parse_build(rest: &str) -> Result<KernelSpec, String> {
    let (recipe, version) = match rest.split_once('@') {
        Some((r, v)) => (r, Some(v)),
        None => (rest, None),
    };
    let known = recipes::names().join(", ");
    if recipes::find(recipe).is_none() {
        return Err(format!(
            "unknown kernel recipe `{recipe}`; known recipes: {known}"
        ));
    }
    if let Some(v) = version {
        let valid = v.starts_with(|c: char| c.is_ascii_digit())
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | '~' | ':'));
        if !valid {
            return Err(format!(
                "`{v}` is not a Debian package version; expected e.g. build:{recipe}@6.1.192-2"
            ));
        }
    }
    Ok(KernelSpec::Build {
        recipe: recipe.to_owned(),
        source_version: version.map(str::to_owned),
    })
}

impl fmt::Display for KernelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelSpec::Debian {
                version,
                flavour,
                release,
            } => {
                let v = match version {
                    DebianVersion::Abi(v) | DebianVersion::Series(v) => v,
                };
                write!(f, "debian:{v}-{}", flavour.as_str())?;
                match release {
                    Some(r) => write!(f, "@{r}"),
                    None => Ok(()),
                }
            }
            KernelSpec::Path {
                bzimage,
                modules,
                config,
                source,
            } => {
                write!(f, "path:{}", bzimage.display())?;
                if let Some(m) = modules {
                    write!(f, ",modules={}", m.display())?;
                }
                if let Some(c) = config {
                    write!(f, ",config={}", c.display())?;
                }
                for (key, value) in [
                    ("tree", &source.tree),
                    ("repo", &source.repo),
                    ("branch", &source.branch),
                    ("commit", &source.commit),
                ] {
                    if let Some(v) = value {
                        write!(f, ",{key}={v}")?;
                    }
                }
                Ok(())
            }
            KernelSpec::Build {
                recipe,
                source_version,
            } => {
                write!(f, "build:{recipe}")?;
                if let Some(v) = source_version {
                    write!(f, "@{v}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_specs() {
        use DebianVersion::{Abi, Series};
        let d = |version: DebianVersion, flavour, release| KernelSpec::Debian {
            version,
            flavour,
            release,
        };
        let s = |v: &str| Series(v.to_owned());
        let a = |v: &str| Abi(v.to_owned());
        // (spec, parsed, written back)
        let table: Vec<(&str, KernelSpec, &str)> = vec![
            (
                "debian:6.1-cloud",
                d(s("6.1"), Flavour::Cloud, None),
                "debian:6.1-cloud",
            ),
            (
                "debian:6.12",
                d(s("6.12"), Flavour::Cloud, None),
                "debian:6.12-cloud",
            ),
            (
                "debian:5.10-rt",
                d(s("5.10"), Flavour::Rt, None),
                "debian:5.10-rt",
            ),
            (
                "debian:6.1-amd64",
                d(s("6.1"), Flavour::Generic, None),
                "debian:6.1-generic",
            ),
            (
                "debian:6.1.0-56-cloud",
                d(a("6.1.0-56"), Flavour::Cloud, None),
                "debian:6.1.0-56-cloud",
            ),
            (
                "debian:6.12.117+deb12-rt",
                d(a("6.12.117+deb12"), Flavour::Rt, None),
                "debian:6.12.117+deb12-rt",
            ),
            (
                "debian:6.1.0-0.deb11.50-cloud",
                d(a("6.1.0-0.deb11.50"), Flavour::Cloud, None),
                "debian:6.1.0-0.deb11.50-cloud",
            ),
            (
                "debian:6.12-cloud@trixie",
                d(s("6.12"), Flavour::Cloud, Some(Release::Trixie)),
                "debian:6.12-cloud@trixie",
            ),
            (
                "debian:6.12@bookworm-backports",
                d(s("6.12"), Flavour::Cloud, Some(Release::BookwormBackports)),
                "debian:6.12-cloud@bookworm-backports",
            ),
            (
                "debian:6.12.95+deb12-generic@bookworm-backports",
                d(
                    a("6.12.95+deb12"),
                    Flavour::Generic,
                    Some(Release::BookwormBackports),
                ),
                "debian:6.12.95+deb12-generic@bookworm-backports",
            ),
        ];
        for (text, want, display) in table {
            let got = KernelSpec::parse(text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(got, want, "{text}");
            assert_eq!(got.to_string(), display);
            assert_eq!(KernelSpec::parse(display), Ok(got), "{display} reads back");
        }
    }

    #[test]
    fn debian_spec_errors_say_what_is_allowed() {
        let table: &[(&str, &str)] = &[
            (
                "debian:",
                "expected debian:<version>[-<flavour>][@<release>]",
            ),
            (
                "debian:latest",
                "expected debian:<version>[-<flavour>][@<release>]",
            ),
            ("debian:6.1-cloud@", "unknown Debian release ``"),
            (
                "debian:4.19-cloud@buster",
                "buster is no longer on the Debian archive; releases: bullseye, bookworm",
            ),
            (
                "debian:6.12-cloud@bookworm-security",
                "`bookworm-security` is a suite",
            ),
            (
                "debian:6.12-cloud@sid",
                "unknown Debian release `sid`; releases: bullseye",
            ),
            (
                "ubuntu:6.8",
                "expected debian:<version>[-<flavour>][@<release>], path:",
            ),
        ];
        for (spec, why) in table {
            let e = KernelSpec::parse(spec).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("Invalid kernel spec `{spec}`: ")),
                "{e}"
            );
            assert!(e.contains(why), "{spec}: {e}");
        }
    }

    #[test]
    fn path_specs() {
        assert_eq!(
            KernelSpec::parse("path:/k/bzImage,modules=/k/mods"),
            Ok(KernelSpec::Path {
                bzimage: "/k/bzImage".into(),
                modules: Some("/k/mods".into()),
                config: None,
                source: GitSource::default(),
            })
        );
        let e = KernelSpec::parse("path:/k/bzImage,modz=/x").unwrap_err();
        assert!(e.to_string().contains("unknown option `modz=/x`"));
        assert!(KernelSpec::parse("path:").is_err());
        // (spec, commit recorded, or the error's words)
        let table: &[(&str, Result<&str, &str>)] = &[
            ("path:/k/bzImage,commit=3f2a9c1e", Ok("3f2a9c1e")),
            (
                "path:/k/bzImage,commit=v6.1-12-g3f2a9c1e",
                Ok("v6.1-12-g3f2a9c1e"),
            ),
            ("path:/k/bzImage,commit=", Err("unknown option `commit=`")),
            ("path:/k/bzImage,commit=a b", Err("not a git revision")),
            ("path:/k/bzImage,commit=--all", Err("not a git revision")),
        ];
        for (spec, want) in table {
            match (KernelSpec::parse(spec), want) {
                (Ok(KernelSpec::Path { source, .. }), Ok(c)) => {
                    assert_eq!(source.commit.as_deref(), Some(*c), "{spec}");
                }
                (Err(e), Err(words)) => assert!(e.to_string().contains(words), "{spec}: {e}"),
                (got, _) => panic!("{spec}: {got:?}"),
            }
        }
        let full = "path:/k/bzImage,modules=/k/m,config=/k/c,commit=abc123";
        assert_eq!(KernelSpec::parse(full).unwrap().to_string(), full);
    }

    #[test]
    fn path_specs_carry_where_their_source_came_from() {
        let text = "path:/k/bzImage,tree=mainline,repo=https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git,branch=master,commit=0123456789ABCDEF0123456789abcdef01234567";
        let spec = KernelSpec::parse(text).unwrap();
        let KernelSpec::Path { source, .. } = &spec else {
            panic!("{spec:?}");
        };
        assert_eq!(
            source,
            &GitSource {
                tree: Some("mainline".into()),
                repo: Some(
                    "https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git".into()
                ),
                branch: Some("master".into()),
                commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
            }
        );
        // Printed back in a fixed order, the hash in lower case: parsing it again
        // gives the same spec.
        assert_eq!(KernelSpec::parse(&spec.to_string()).unwrap(), spec);
        for (bad, why) in [
            (
                "path:/k/bzImage,repo=git://x/linux.git",
                "not an https:// URL",
            ),
            ("path:/k/bzImage,tree=", "unknown option `tree=`"),
        ] {
            let e = KernelSpec::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn build_specs() {
        assert_eq!(
            KernelSpec::parse("build:defects"),
            Ok(KernelSpec::Build {
                recipe: "defects".into(),
                source_version: None
            })
        );
        let pinned = KernelSpec::parse("build:defects@6.1.192-2").unwrap();
        assert_eq!(
            pinned,
            KernelSpec::Build {
                recipe: "defects".into(),
                source_version: Some("6.1.192-2".into())
            }
        );
        assert_eq!(pinned.to_string(), "build:defects@6.1.192-2");
        let e = KernelSpec::parse("build:nope").unwrap_err().to_string();
        assert!(
            e.contains("unknown kernel recipe `nope`; known recipes: defects"),
            "{e}"
        );
        let e = KernelSpec::parse("build:defects@latest")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a Debian package version"), "{e}");
        assert!(KernelSpec::parse("build:").is_err());
    }
}
