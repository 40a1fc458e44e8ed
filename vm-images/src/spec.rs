//! Kernel specs as users write them.
//!
//! - `debian:<version>[-<flavour>]`: a Debian kernel package. `<version>` is an exact ABI
//!   (`6.1.0-56`, `6.12.117+deb12`) or a series (`6.1`, `6.12`) that resolves to the
//!   newest ABI apt offers (recorded exactly in the results). Flavours: `cloud` (the
//!   default: boots fastest, no initramfs needed), `rt`, `generic`.
//! - `path:<bzImage>[,modules=<dir>][,config=<file>]`: a local build. `modules` is the
//!   `lib/modules/<release>` directory `make modules_install` produced.
//! - `build:<recipe>[@<source version>]`: a kernel kchaos builds itself from a compiled-in
//!   recipe (`vm-images/recipes/kernel/`, e.g. `build:defects`) and Debian's kernel
//!   source package, once, then from the cache. Without `@`, the source version is the
//!   one apt offers (recorded exactly in the results: `build:defects@6.1.192-2`).

use std::fmt;
use std::path::PathBuf;

/// Debian kernel flavours on amd64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    Cloud,
    Rt,
    Generic,
}

impl Flavour {
    pub fn as_str(self) -> &'static str {
        match self {
            Flavour::Cloud => "cloud",
            Flavour::Rt => "rt",
            Flavour::Generic => "generic",
        }
    }

    /// The suffix Debian's package names use after the ABI.
    pub fn package_suffix(self) -> &'static str {
        match self {
            Flavour::Cloud => "cloud-amd64",
            Flavour::Rt => "rt-amd64",
            Flavour::Generic => "amd64",
        }
    }

    fn parse(text: &str) -> Option<Flavour> {
        match text {
            "cloud" => Some(Flavour::Cloud),
            "rt" => Some(Flavour::Rt),
            "generic" | "amd64" => Some(Flavour::Generic),
            _ => None,
        }
    }
}

/// What version of a Debian kernel is wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DebianVersion {
    /// An exact ABI such as `6.1.0-56` or `6.12.117+deb12`.
    Abi(String),
    /// A series such as `6.1`: the newest ABI available.
    Series(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSpec {
    Debian {
        version: DebianVersion,
        flavour: Flavour,
    },
    Path {
        bzimage: PathBuf,
        modules: Option<PathBuf>,
        config: Option<PathBuf>,
    },
    Build {
        /// A recipe name from [`crate::recipe::RECIPES`].
        recipe: String,
        /// The Debian source package version, when pinned.
        source_version: Option<String>,
    },
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
                return Err(err("expected debian:<version>[-<flavour>], e.g. debian:6.1-cloud or debian:6.1.0-56-cloud"));
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
            return Ok(KernelSpec::Debian { version, flavour });
        }
        if let Some(rest) = spec.strip_prefix("path:") {
            let mut parts = rest.split(',');
            let bzimage = parts
                .next()
                .filter(|p| !p.is_empty())
                .ok_or_else(|| err("path: needs the bzImage path"))?;
            let mut modules = None;
            let mut config = None;
            for part in parts {
                match part.split_once('=') {
                    Some(("modules", dir)) if !dir.is_empty() => modules = Some(PathBuf::from(dir)),
                    Some(("config", file)) if !file.is_empty() => {
                        config = Some(PathBuf::from(file));
                    }
                    _ => {
                        return Err(err(&format!(
                            "unknown option `{part}`; allowed: modules=<dir>, config=<file>"
                        )))
                    }
                }
            }
            return Ok(KernelSpec::Path {
                bzimage: PathBuf::from(bzimage),
                modules,
                config,
            });
        }
        if let Some(rest) = spec.strip_prefix("build:") {
            return parse_build(rest).map_err(|reason| err(&reason));
        }
        Err(err("expected debian:<version>[-<flavour>], path:<bzImage>[,modules=<dir>][,config=<file>] or build:<recipe>[@<source version>]"))
    }
}

fn parse_build(rest: &str) -> Result<KernelSpec, String> {
    let (recipe, version) = match rest.split_once('@') {
        Some((r, v)) => (r, Some(v)),
        None => (rest, None),
    };
    let known = crate::recipe::names().join(", ");
    if crate::recipe::find(recipe).is_none() {
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
            KernelSpec::Debian { version, flavour } => {
                let v = match version {
                    DebianVersion::Abi(v) | DebianVersion::Series(v) => v,
                };
                write!(f, "debian:{v}-{}", flavour.as_str())
            }
            KernelSpec::Path {
                bzimage,
                modules,
                config,
            } => {
                write!(f, "path:{}", bzimage.display())?;
                if let Some(m) = modules {
                    write!(f, ",modules={}", m.display())?;
                }
                if let Some(c) = config {
                    write!(f, ",config={}", c.display())?;
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

/// Orders Debian ABIs numerically: `6.1.0-56` > `6.1.0-9`, `6.12.117+deb12` > `6.12.100+deb12`.
pub fn compare_abi(a: &str, b: &str) -> std::cmp::Ordering {
    fn numbers(s: &str) -> Vec<u64> {
        s.split(|c: char| !c.is_ascii_digit())
            .filter(|p| !p.is_empty())
            .filter_map(|p| p.parse().ok())
            .collect()
    }
    numbers(a).cmp(&numbers(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_specs() {
        assert_eq!(
            KernelSpec::parse("debian:6.1-cloud"),
            Ok(KernelSpec::Debian {
                version: DebianVersion::Series("6.1".into()),
                flavour: Flavour::Cloud
            })
        );
        assert_eq!(
            KernelSpec::parse("debian:6.1.0-56-cloud"),
            Ok(KernelSpec::Debian {
                version: DebianVersion::Abi("6.1.0-56".into()),
                flavour: Flavour::Cloud
            })
        );
        assert_eq!(
            KernelSpec::parse("debian:6.12.117+deb12-rt"),
            Ok(KernelSpec::Debian {
                version: DebianVersion::Abi("6.12.117+deb12".into()),
                flavour: Flavour::Rt
            })
        );
        assert_eq!(
            KernelSpec::parse("debian:6.12"),
            Ok(KernelSpec::Debian {
                version: DebianVersion::Series("6.12".into()),
                flavour: Flavour::Cloud
            })
        );
        assert!(KernelSpec::parse("debian:").is_err());
        assert!(KernelSpec::parse("debian:latest").is_err());
        assert!(KernelSpec::parse("ubuntu:6.8").is_err());
    }

    #[test]
    fn path_specs() {
        assert_eq!(
            KernelSpec::parse("path:/k/bzImage,modules=/k/mods"),
            Ok(KernelSpec::Path {
                bzimage: "/k/bzImage".into(),
                modules: Some("/k/mods".into()),
                config: None
            })
        );
        let e = KernelSpec::parse("path:/k/bzImage,modz=/x").unwrap_err();
        assert!(e.to_string().contains("unknown option `modz=/x`"));
        assert!(KernelSpec::parse("path:").is_err());
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

    #[test]
    fn abi_ordering_is_numeric() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_abi("6.1.0-56", "6.1.0-9"), Greater);
        assert_eq!(compare_abi("6.12.117+deb12", "6.12.100+deb12"), Greater);
        assert_eq!(compare_abi("6.1.0-47", "6.1.0-47"), Equal);
    }
}
