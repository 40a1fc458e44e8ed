//! What the model needs to know about a kernel without touching one: its version, parsed
//! from a release string such as `6.1.0-56-cloud-amd64` or `6.12.117+deb12-cloud-amd64`,
//! and its build configuration (`CONFIG_*` lines), so `requires` can be decided before a
//! VM is booted.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The numeric part of a kernel release (`6.12.117` of `6.12.117+deb12-cloud-amd64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KernelVersion {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl KernelVersion {
    /// Reads the leading `X.Y[.Z]` of a release string. Debian's 6.1 ABI names
    /// (`6.1.0-56`) carry `0` as the patch level; that is what `uname -r` says too.
    pub fn from_release(release: &str) -> Option<KernelVersion> {
        let numeric: String = release
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let mut parts = numeric.split('.').filter(|p| !p.is_empty());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        Some(KernelVersion {
            major,
            minor,
            patch,
        })
    }

    fn as_semver(self) -> semver::Version {
        semver::Version::new(self.major, self.minor, self.patch)
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A requirement kept as written (`text`) beside its parsed form: it travels and prints
/// as that text (serde's `try_from`/`into` String), and reading it back parses it again.
macro_rules! written_form {
    ($name:ident) => {
        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                $name::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.text
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.text)
            }
        }
    };
}

/// A version range such as `">=6.1, <6.12"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VersionRange {
    text: String,
    req: semver::VersionReq,
}

impl VersionRange {
    pub fn parse(text: &str) -> Result<VersionRange, String> {
        let req = semver::VersionReq::parse(text).map_err(|e| {
            format!("`{text}` is not a version range ({e}); write it like \">=6.1, <6.12\"")
        })?;
        Ok(VersionRange {
            text: text.to_owned(),
            req,
        })
    }

    /// Kernel versions are compared numerically, with no pre-release semantics.
    pub fn matches(&self, version: KernelVersion) -> bool {
        self.req.matches(&version.as_semver())
    }
}

written_form!(VersionRange);

/// A kernel `.config`: option name → value (`y`, `m`, a number or a quoted string).
/// Options that are "not set" are absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelConfig {
    options: BTreeMap<String, String>,
}

impl KernelConfig {
    pub fn parse(text: &str) -> KernelConfig {
        let options = text
            .lines()
            .filter_map(|line| {
                let line = line.trim();
                if line.starts_with('#') {
                    return None;
                }
                let (key, value) = line.split_once('=')?;
                key.starts_with("CONFIG_")
                    .then(|| (key.to_owned(), value.to_owned()))
            })
            .collect();
        KernelConfig { options }
    }

    pub fn get(&self, option: &str) -> Option<&str> {
        self.options.get(option).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.options.is_empty()
    }
}

/// One `requires.config` entry: `CONFIG_X` (built in or a module), `CONFIG_X=y` (that exact
/// value) or `!CONFIG_X` (must not be set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ConfigRequirement {
    text: String,
    option: String,
    want: ConfigWant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ConfigWant {
    Enabled,
    Value(String),
    Unset,
}

impl ConfigRequirement {
    pub fn parse(text: &str) -> Result<ConfigRequirement, String> {
        let (negated, rest) = match text.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (option, value) = match rest.split_once('=') {
            Some((o, v)) => (o, Some(v)),
            None => (rest, None),
        };
        let valid_name = option.starts_with("CONFIG_")
            && option.len() > "CONFIG_".len()
            && option
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !valid_name {
            return Err(format!(
                "`{text}` is not a kernel option; write `CONFIG_NAME`, `CONFIG_NAME=y` or `!CONFIG_NAME`"
            ));
        }
        let want = match (negated, value) {
            (true, None) => ConfigWant::Unset,
            (true, Some(_)) => {
                return Err(format!("`{text}`: `!` cannot be combined with a value"));
            }
            (false, None) => ConfigWant::Enabled,
            (false, Some(v)) if !v.is_empty() => ConfigWant::Value(v.to_owned()),
            (false, Some(_)) => return Err(format!("`{text}` has an empty value")),
        };
        Ok(ConfigRequirement {
            text: text.to_owned(),
            option: option.to_owned(),
            want,
        })
    }

    pub fn option(&self) -> &str {
        &self.option
    }

    /// `None` when `config` satisfies the requirement, otherwise why not.
    pub fn unmet(&self, config: &KernelConfig) -> Option<String> {
        let have = config.get(&self.option);
        match (&self.want, have) {
            (ConfigWant::Enabled, Some("y" | "m")) => None,
            (ConfigWant::Enabled, Some(v)) => Some(format!("{}={v} (needs y or m)", self.option)),
            (ConfigWant::Enabled, None) => Some(format!("{} is not set", self.option)),
            (ConfigWant::Value(want), Some(v)) if v == want => None,
            (ConfigWant::Value(want), Some(v)) => {
                Some(format!("{}={v} (needs {want})", self.option))
            }
            (ConfigWant::Value(want), None) => {
                Some(format!("{} is not set (needs {want})", self.option))
            }
            (ConfigWant::Unset, None) => None,
            (ConfigWant::Unset, Some(v)) => Some(format!("{}={v} (must not be set)", self.option)),
        }
    }
}

written_form!(ConfigRequirement);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_release_strings_parse() {
        let v61 = KernelVersion::from_release("6.1.0-56-cloud-amd64");
        assert_eq!(
            v61,
            Some(KernelVersion {
                major: 6,
                minor: 1,
                patch: 0
            })
        );
        let v612 = KernelVersion::from_release("6.12.117+deb12-cloud-amd64");
        assert_eq!(
            v612,
            Some(KernelVersion {
                major: 6,
                minor: 12,
                patch: 117
            })
        );
        assert_eq!(KernelVersion::from_release("garbage"), None);
    }

    #[test]
    fn ranges_compare_numerically() -> Result<(), String> {
        let range = VersionRange::parse(">=6.1, <6.12")?;
        let v61 = KernelVersion {
            major: 6,
            minor: 1,
            patch: 0,
        };
        let v612 = KernelVersion {
            major: 6,
            minor: 12,
            patch: 117,
        };
        assert!(range.matches(v61));
        assert!(!range.matches(v612));
        assert!(VersionRange::parse("newest").is_err());
        Ok(())
    }

    #[test]
    fn config_requirements() -> Result<(), String> {
        let config = KernelConfig::parse(
            "CONFIG_MEMCG=y\nCONFIG_VETH=m\n# CONFIG_MEMCG_V1 is not set\nCONFIG_HZ=250\n",
        );
        assert_eq!(
            ConfigRequirement::parse("CONFIG_MEMCG")?.unmet(&config),
            None
        );
        assert_eq!(
            ConfigRequirement::parse("CONFIG_VETH")?.unmet(&config),
            None
        );
        assert_eq!(
            ConfigRequirement::parse("CONFIG_MEMCG_V1")?
                .unmet(&config)
                .as_deref(),
            Some("CONFIG_MEMCG_V1 is not set")
        );
        assert_eq!(
            ConfigRequirement::parse("CONFIG_HZ=250")?.unmet(&config),
            None
        );
        assert!(ConfigRequirement::parse("CONFIG_HZ=1000")?
            .unmet(&config)
            .is_some());
        assert_eq!(
            ConfigRequirement::parse("!CONFIG_KASAN")?.unmet(&config),
            None
        );
        assert!(ConfigRequirement::parse("MEMCG").is_err());
        assert!(ConfigRequirement::parse("!CONFIG_X=y").is_err());
        Ok(())
    }
}
