//! `defects.toml`: the kernel defects kchaos can switch on, in one place. Each names the
//! kernel that carries it, the command-line parameters that switch it on (the same
//! kernel without them is the defect's stock twin), and the scenarios declared to catch
//! it. `kchaos detect` runs that matrix; the format is described at the top of the
//! shipped file.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use kchaos_model::scenario::{ImageKind, ScenarioError};
use kchaos_model::topology::Topology;
use serde::Deserialize;
use toml::Spanned;

use crate::kernel::list::KernelList;

/// Where `kchaos` looks for the list when none is named.
pub const DEFAULT_PATH: &str = "vm-images/defects.toml";

#[derive(Debug, thiserror::Error)]
pub enum DefectListError {
    #[error("Cannot read defect list {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// `FILE:LINE:COL: key: message`.
    #[error("{0}")]
    Parse(ScenarioError),
}

/// The incident a defect mirrors (see docs: the four incidents, 1 split in a and b).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum Incident {
    #[serde(rename = "1a")]
    KmemAccounting,
    #[serde(rename = "1b")]
    DyingMemcgs,
    #[serde(rename = "2")]
    NetdevRefcount,
    #[serde(rename = "3")]
    SystemdCookie,
    #[serde(rename = "4")]
    CfsBandwidth,
}

impl Incident {
    pub fn as_str(self) -> &'static str {
        match self {
            Incident::KmemAccounting => "1a",
            Incident::DyingMemcgs => "1b",
            Incident::NetdevRefcount => "2",
            Incident::SystemdCookie => "3",
            Incident::CfsBandwidth => "4",
        }
    }
}

/// The scenario family, named for the kernel subsystem it churns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Memcg,
    Netdev,
    Systemd,
    Cfs,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Memcg => "memcg",
            Family::Netdev => "netdev",
            Family::Systemd => "systemd",
            Family::Cfs => "cfs",
        })
    }
}

/// One kernel command-line parameter: `name` or `name=value`, no spaces. The harness
/// owns `console=` and `kchaos.*`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Param(String);

impl TryFrom<String> for Param {
    type Error = String;

    fn try_from(text: String) -> Result<Param, String> {
        let name = text.split('=').next().unwrap_or_default();
        if name.is_empty() || text.chars().any(char::is_whitespace) {
            return Err(format!(
                "`{text}` is not one kernel parameter (`name` or `name=value`, no spaces)"
            ));
        }
        if name == "console" || name.starts_with("kchaos.") {
            return Err(format!(
                "`{text}`: console= and kchaos.* belong to the harness"
            ));
        }
        Ok(Param(text))
    }
}

impl Param {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A scenario's `name` (not its file): letters, digits, `-`, `_`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ScenarioName(String);

impl TryFrom<String> for ScenarioName {
    type Error = String;

    fn try_from(text: String) -> Result<ScenarioName, String> {
        let valid = !text.is_empty()
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
        if valid {
            Ok(ScenarioName(text))
        } else {
            Err(format!(
                "`{text}` is not a scenario name (its [scenario] name: letters, digits, `-`, `_`)"
            ))
        }
    }
}

impl ScenarioName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawList {
    #[serde(default)]
    defects: BTreeMap<String, Spanned<RawDefect>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefect {
    incident: Incident,
    family: Family,
    kernel: Spanned<String>,
    cmdline: Spanned<Vec<Param>>,
    #[serde(default)]
    scenarios: Vec<ScenarioName>,
    description: Spanned<String>,
    #[serde(default)]
    expect: Option<Spanned<String>>,
    #[serde(default)]
    image: Option<ImageKind>,
    #[serde(default)]
    topology: Option<Spanned<String>>,
}

/// One defect, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defect {
    /// The table name: `[defects.<name>]`.
    pub name: String,
    pub incident: Incident,
    pub family: Family,
    /// As written: a name in `kernels.toml` or a kernel spec.
    pub kernel: String,
    /// The kernel spec it stands for.
    pub kernel_spec: String,
    /// What switches the defect on.
    pub cmdline: Vec<Param>,
    /// Scenarios declared to catch it.
    pub scenarios: Vec<ScenarioName>,
    pub description: String,
    /// What a detection must name (a regular expression matched against the failing
    /// cell's reasons, signature lines and fingerprint); `None`: the family's default.
    pub expect: Option<String>,
    /// The guest image that carries the defect, replacing the scenario's `[vm] image`
    /// for the defect and its stock twin (`systemd-defects` for a systemd defect);
    /// `None`: the scenario's own.
    pub image: Option<ImageKind>,
    /// The CPU topology the defect needs to show (`2s1c`: a cross-socket defect does
    /// nothing on one socket), replacing the scenario's `[vm] cpus` for the defect and
    /// its stock twin; `None`: the scenario's own.
    pub topology: Option<Topology>,
}

/// A parsed `defects.toml`, defects in name order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DefectList {
    pub defects: Vec<Defect>,
    pub path: PathBuf,
}

/// The list shipped in the binary, for an installed kchaos.
pub const BUILTIN: &str = include_str!("../defects.toml");
const BUILTIN_NAME: &str = "(built-in) vm-images/defects.toml";

impl DefectList {
    /// The list at [`DEFAULT_PATH`] if it exists (a checkout), else the shipped one.
    pub fn load_default(kernels: &KernelList) -> Result<DefectList, DefectListError> {
        let path = Path::new(DEFAULT_PATH);
        if path.exists() {
            DefectList::load(path, kernels)
        } else {
            DefectList::parse(Path::new(BUILTIN_NAME), BUILTIN, kernels)
        }
    }

    /// Reads and validates `path`; kernel names are looked up in `kernels`.
    pub fn load(path: &Path, kernels: &KernelList) -> Result<DefectList, DefectListError> {
        let text = std::fs::read_to_string(path).map_err(|source| DefectListError::Read {
            path: path.display().to_string(),
            source,
        })?;
        DefectList::parse(path, &text, kernels)
    }

    pub fn parse(
        path: &Path,
        text: &str,
        kernels: &KernelList,
    ) -> Result<DefectList, DefectListError> {
        let file = path.display().to_string();
        let raw: RawList = toml::from_str(text).map_err(|e| {
            DefectListError::Parse(kchaos_model::scenario::locate_toml_error(&file, text, &e))
        })?;
        let at = |span: Range<usize>, key: String, message: String| {
            let (line, column) = kchaos_model::scenario::line_col(text, span.start);
            DefectListError::Parse(ScenarioError {
                file: file.clone(),
                line,
                column,
                key: Some(key),
                message,
            })
        };
        let mut defects = Vec::new();
        for (name, spanned) in raw.defects {
            let table = spanned.span();
            let raw = spanned.into_inner();
            let key = |k: &str| format!("defects.{name}.{k}");
            let name_ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !name_ok {
                return Err(at(
                    table,
                    format!("defects.{name}"),
                    "a defect name is lowercase letters, digits and `-`".to_owned(),
                ));
            }
            let kernel_spec = match kernels.expand(std::slice::from_ref(raw.kernel.get_ref())) {
                Ok(mut specs) if specs.len() == 1 => specs.remove(0),
                Ok(_) => {
                    return Err(at(
                        raw.kernel.span(),
                        key("kernel"),
                        "a defect needs one kernel, not a set".to_owned(),
                    ))
                }
                Err(e) => return Err(at(raw.kernel.span(), key("kernel"), e.to_string())),
            };
            if kernel_spec.contains(':') {
                if let Err(e) = crate::kernel::spec::KernelSpec::parse(&kernel_spec) {
                    return Err(at(raw.kernel.span(), key("kernel"), e.to_string()));
                }
            }
            if raw.cmdline.get_ref().is_empty() {
                return Err(at(
                    raw.cmdline.span(),
                    key("cmdline"),
                    "empty: without parameters the kernel is the stock twin, not the defect"
                        .to_owned(),
                ));
            }
            if raw.description.get_ref().trim().is_empty()
                || raw.description.get_ref().contains('\n')
            {
                return Err(at(
                    raw.description.span(),
                    key("description"),
                    "one non-empty line".to_owned(),
                ));
            }
            let expect = match raw.expect {
                Some(e) => {
                    if let Err(err) = regex::Regex::new(e.get_ref()) {
                        return Err(at(e.span(), key("expect"), err.to_string()));
                    }
                    Some(e.into_inner())
                }
                None => None,
            };
            let topology = match raw.topology {
                Some(t) => match Topology::parse(t.get_ref()) {
                    Ok(topology) => Some(topology),
                    Err(why) => return Err(at(t.span(), key("topology"), why)),
                },
                None => None,
            };
            defects.push(Defect {
                expect,
                image: raw.image,
                topology,
                name,
                incident: raw.incident,
                family: raw.family,
                kernel: raw.kernel.into_inner(),
                kernel_spec,
                cmdline: raw.cmdline.into_inner(),
                scenarios: raw.scenarios,
                description: raw.description.into_inner(),
            });
        }
        Ok(DefectList {
            defects,
            path: path.to_path_buf(),
        })
    }

    pub fn get(&self, name: &str) -> Option<&Defect> {
        self.defects.iter().find(|d| d.name == name)
    }

    /// The defects a scenario is declared to catch.
    pub fn caught_by<'a>(&'a self, scenario: &'a str) -> impl Iterator<Item = &'a Defect> + 'a {
        self.defects
            .iter()
            .filter(move |d| d.scenarios.iter().any(|s| s.as_str() == scenario))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernels() -> KernelList {
        KernelList::parse(
            Path::new("k.toml"),
            "[kernels.deb61-defects]\nspec = \"build:defects\"\n[kernels.deb61]\nspec = \"debian:6.1-cloud\"\n",
        )
        .unwrap()
    }

    const GOOD: &str = r#"
[defects.netdev-ref-leak]
incident = "2"
family = "netdev"
kernel = "deb61-defects"
cmdline = ["kchaos_defect.netdev_leak=16"]
scenarios = ["veth-netns-storm", "veth-storm-traffic"]
description = "neighbours leak device references"

[defects.cfs-period-lockup]
incident = "4"
family = "cfs"
kernel = "build:defects"
cmdline = ["kchaos_defect.cfs_period_loop=1"]
description = "unbounded period timer"
"#;

    #[test]
    fn the_shipped_list_is_valid_against_the_shipped_kernels() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let kernels = KernelList::load(&dir.join("kernels.toml")).unwrap();
        let list = DefectList::load(&dir.join("defects.toml"), &kernels).unwrap();
        assert!(list.defects.len() >= 5, "{list:?}");
        for d in &list.defects {
            // Kernel defects live in kchaos's kernel; systemd defects in its image, on a
            // stock kernel.
            match d.image {
                Some(ImageKind::SystemdDefects) => {
                    assert_eq!(d.family, Family::Systemd, "{}", d.name);
                    assert!(d.kernel_spec.starts_with("debian:"), "{}", d.name);
                }
                _ => assert_eq!(d.kernel_spec, "build:defects", "{}", d.name),
            }
            assert!(
                d.cmdline
                    .iter()
                    .any(|p| p.as_str().starts_with("kchaos_defect.")),
                "{} is switched by a kchaos_defect.* parameter",
                d.name
            );
            assert!(!d.scenarios.is_empty(), "{} is caught by nothing", d.name);
        }
        // Every declared scenario exists in scenarios/.
        let shipped: Vec<String> = std::fs::read_dir(dir.join("../scenarios"))
            .unwrap()
            .filter_map(Result::ok)
            .filter_map(|e| {
                let text = std::fs::read_to_string(e.path()).ok()?;
                let s =
                    kchaos_model::scenario::parse(&e.path().display().to_string(), &text).ok()?;
                Some(s.name.clone())
            })
            .collect();
        for d in &list.defects {
            for s in &d.scenarios {
                assert!(
                    shipped.iter().any(|n| n == s.as_str()),
                    "{}: {}",
                    d.name,
                    s.as_str()
                );
            }
        }
    }

    #[test]
    fn a_good_list_parses_in_name_order_with_kernels_expanded() {
        let list = DefectList::parse(Path::new("d.toml"), GOOD, &kernels()).unwrap();
        let names: Vec<&str> = list.defects.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["cfs-period-lockup", "netdev-ref-leak"]);
        let leak = list.get("netdev-ref-leak").unwrap();
        assert_eq!(leak.kernel_spec, "build:defects");
        assert_eq!(leak.incident.as_str(), "2");
        assert_eq!(leak.family.to_string(), "netdev");
        assert_eq!(
            list.caught_by("veth-storm-traffic")
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>(),
            ["netdev-ref-leak"]
        );
        assert!(list.get("cfs-period-lockup").unwrap().scenarios.is_empty());
        assert_eq!(leak.topology, None);
        let two = GOOD.replace(
            "description = \"unbounded",
            "topology = \"2s1c\"\ndescription = \"unbounded",
        );
        let list = DefectList::parse(Path::new("d.toml"), &two, &kernels()).unwrap();
        let t = list.get("cfs-period-lockup").unwrap().topology.unwrap();
        assert_eq!((t.sockets, t.cpus()), (2, 2));
    }

    #[test]
    fn errors_name_file_line_column_and_key() {
        let cases = [
            (
                GOOD.replace("family = \"netdev\"", "family = \"net\""),
                "d.toml:4:10: defects.netdev-ref-leak.family: unknown variant `net`",
            ),
            (
                GOOD.replace("description = \"neighbours", "descripton = \"neighbours"),
                "d.toml:8:1: defects.netdev-ref-leak.descripton: unknown key `descripton`",
            ),
            (
                GOOD.replace("kernel = \"deb61-defects\"", "kernel = \"deb99\""),
                "d.toml:5:10: defects.netdev-ref-leak.kernel: `deb99` is neither a kernel spec",
            ),
            (
                GOOD.replace("[\"kchaos_defect.cfs_period_loop=1\"]", "[]"),
                "d.toml:14:11: defects.cfs-period-lockup.cmdline: empty: without parameters",
            ),
            (
                GOOD.replace("netdev_leak=16", "netdev_leak= 16"),
                "d.toml:6:11: defects.netdev-ref-leak.cmdline: `kchaos_defect.netdev_leak= 16` is not one kernel parameter",
            ),
            (
                GOOD.replace("kchaos_defect.netdev_leak=16", "kchaos.cell=x"),
                "belong to the harness",
            ),
            (
                GOOD.replace("\"veth-netns-storm\"", "\"scenarios/veth.toml\""),
                "is not a scenario name",
            ),
            (
                GOOD.replace("incident = \"4\"", "incident = \"5\""),
                "d.toml:11:12: defects.cfs-period-lockup.incident: unknown variant `5`",
            ),
            (
                GOOD.replace(
                    "description = \"neighbours",
                    "expect = \"(unclosed\"\ndescription = \"neighbours",
                ),
                "d.toml:8:10: defects.netdev-ref-leak.expect: regex parse error",
            ),
            (
                GOOD.replace("[defects.netdev-ref-leak]", "[defects.Netdev]"),
                "d.toml:2:1: defects.Netdev: a defect name is lowercase",
            ),
            (
                GOOD.replace(
                    "description = \"unbounded",
                    "topology = \"2x2\"\ndescription = \"unbounded",
                ),
                "d.toml:15:12: defects.cfs-period-lockup.topology: `2x2` is not a topology",
            ),
        ];
        for (text, want) in cases {
            let e = DefectList::parse(Path::new("d.toml"), &text, &kernels())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "want `{want}` in:\n{e}");
        }
    }
}
