//! `kernels.toml`: named kernels and ordered sets of them, so a matrix (or a bisection)
//! is declared once instead of typed on every command line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where `kchaos` looks for the list when none is named.
pub const DEFAULT_PATH: &str = "vm-images/kernels.toml";

/// The list shipped with this build, used outside a checkout.
pub const BUILTIN: &str = include_str!("../../kernels.toml");
const BUILTIN_NAME: &str = "(built-in) vm-images/kernels.toml";

#[derive(Debug, thiserror::Error)]
pub enum KernelListError {
    #[error("Cannot read kernel list {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// `FILE:LINE:COL: key: message`.
    #[error("{0}")]
    Parse(kchaos_model::scenario::ScenarioError),
    #[error("Set `{set}` names kernel `{name}`, which {path} does not define")]
    UnknownInSet {
        path: String,
        set: String,
        name: String,
    },
    #[error(
        "`{0}` is neither a kernel spec (debian:…, path:…) nor a name in {1}; known names: {2}"
    )]
    UnknownName(String, String, String),
    #[error("No kernel set `{0}` in {1}; known sets: {2}")]
    UnknownSet(String, String, String),
}

/// One named kernel.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedKernel {
    pub spec: String,
    #[serde(default)]
    pub description: Option<String>,
}

/// A parsed `kernels.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelList {
    #[serde(default)]
    pub kernels: BTreeMap<String, NamedKernel>,
    #[serde(default)]
    pub sets: BTreeMap<String, Vec<String>>,
    #[serde(skip)]
    pub path: PathBuf,
}

impl KernelList {
    pub fn load(path: &Path) -> Result<KernelList, KernelListError> {
        let text = std::fs::read_to_string(path).map_err(|source| KernelListError::Read {
            path: path.display().to_string(),
            source,
        })?;
        KernelList::parse(path, &text)
    }

    /// The list at [`DEFAULT_PATH`] if it exists (a checkout), else the one shipped
    /// inside this binary (an installed `kchaos` run from anywhere).
    pub fn load_default() -> Result<KernelList, KernelListError> {
        let path = Path::new(DEFAULT_PATH);
        if path.exists() {
            KernelList::load(path)
        } else {
            KernelList::parse(Path::new(BUILTIN_NAME), BUILTIN)
        }
    }

    pub fn parse(path: &Path, text: &str) -> Result<KernelList, KernelListError> {
        let mut list: KernelList = toml::from_str(text).map_err(|e| {
            KernelListError::Parse(kchaos_model::scenario::locate_toml_error(
                &path.display().to_string(),
                text,
                &e,
            ))
        })?;
        list.path = path.to_path_buf();
        for (set, names) in &list.sets {
            if let Some(name) = names.iter().find(|n| !list.kernels.contains_key(*n)) {
                return Err(KernelListError::UnknownInSet {
                    path: path.display().to_string(),
                    set: set.clone(),
                    name: name.clone(),
                });
            }
        }
        Ok(list)
    }

    /// What the user wrote on the command line, as specs in order: specs pass through,
    /// names become their spec, `@set` becomes its members. Duplicates are dropped (the
    /// first stays), so `@qualify deb61` runs deb61 once.
    pub fn expand(&self, args: &[String]) -> Result<Vec<String>, KernelListError> {
        let mut out: Vec<String> = Vec::new();
        let mut push = |spec: &str| {
            if !out.iter().any(|s| s == spec) {
                out.push(spec.to_owned());
            }
        };
        for arg in args {
            if let Some(set) = arg.strip_prefix('@') {
                let names = self.sets.get(set).ok_or_else(|| {
                    KernelListError::UnknownSet(
                        set.to_owned(),
                        self.describe_path(),
                        self.sets.keys().cloned().collect::<Vec<_>>().join(", "),
                    )
                })?;
                for name in names {
                    if let Some(k) = self.kernels.get(name) {
                        push(&k.spec);
                    }
                }
            } else if arg.contains(':') {
                push(arg);
            } else if let Some(k) = self.kernels.get(arg) {
                push(&k.spec);
            } else {
                return Err(KernelListError::UnknownName(
                    arg.clone(),
                    self.describe_path(),
                    self.kernels.keys().cloned().collect::<Vec<_>>().join(", "),
                ));
            }
        }
        Ok(out)
    }

    fn describe_path(&self) -> String {
        if self.path.as_os_str().is_empty() {
            format!("{DEFAULT_PATH} (not found)")
        } else {
            self.path.display().to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_list_is_valid_and_its_sets_expand_in_order() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels.toml");
        let list = KernelList::load(&path).unwrap();
        assert_eq!(
            list.expand(&["@qualify".into()]).unwrap(),
            ["debian:6.1-cloud", "debian:6.12-cloud"]
        );
        assert_eq!(
            list.expand(&["@default".into()]).unwrap(),
            ["debian:6.1-cloud"]
        );
        assert_eq!(
            list.expand(&["@upgrade".into()]).unwrap(),
            ["debian:5.10-cloud", "debian:6.1-cloud", "debian:6.12-cloud"]
        );
        // Every named spec parses.
        for (name, kernel) in &list.kernels {
            crate::kernel::spec::KernelSpec::parse(&kernel.spec)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn names_specs_sets_and_errors() {
        let list = KernelList::parse(
            Path::new("k.toml"),
            "[kernels.a]\nspec = \"debian:6.1-cloud\"\n[kernels.b]\nspec = \"path:/x/bzImage\"\n[sets]\nboth = [\"b\", \"a\"]\n",
        )
        .unwrap();
        assert_eq!(
            list.expand(&["@both".into(), "a".into(), "debian:6.12-rt".into()])
                .unwrap(),
            ["path:/x/bzImage", "debian:6.1-cloud", "debian:6.12-rt"]
        );
        let e = list.expand(&["c".into()]).unwrap_err().to_string();
        assert!(e.contains("`c`") && e.contains("a, b"), "{e}");
        let e = list.expand(&["@none".into()]).unwrap_err().to_string();
        assert!(e.contains("known sets: both"), "{e}");
        let bad = KernelList::parse(
            Path::new("k.toml"),
            "[kernels.a]\nspec = \"debian:6.1\"\n[sets]\nx = [\"zz\"]\n",
        )
        .unwrap_err();
        assert!(bad.to_string().contains("`zz`"), "{bad}");
        let typo = KernelList::parse(Path::new("k.toml"), "[kernels.a]\nspecc = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            typo.starts_with("k.toml:2:1: kernels.a.specc: unknown key `specc`"),
            "{typo}"
        );
    }
}
