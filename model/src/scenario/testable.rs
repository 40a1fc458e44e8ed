//! A scenario must be able to test what it claims. A check or probe about memory cgroups
//! in a scenario whose churn creates none, or a check on removals that never happen,
//! would pass (or fail as "no data") without the kernel having been exercised: such a
//! file is refused when it is validated, at the key that makes the claim.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::ctx::Ctx;
use super::workload::{CgroupChurn, WorkloadSpec};
use super::{ProbeSpec, Scenario};

/// The span of `key` in the `section` entry named `name` (else of the entry, else
/// nothing): errors point at what the user wrote.
fn entry_span(root: &DeTable<'_>, section: &str, name: &str, key: &str) -> Range<usize> {
    let entry = root
        .get(section)
        .and_then(|v| v.get_ref().as_array())
        .and_then(|items| {
            items.iter().find(|item| {
                item.get_ref()
                    .as_table()
                    .and_then(|t| t.get("name"))
                    .and_then(|n| n.get_ref().as_str())
                    == Some(name)
            })
        });
    let Some(entry) = entry else { return 0..0 };
    entry
        .get_ref()
        .as_table()
        .and_then(|t| t.get(key))
        .map_or_else(|| entry.span(), Spanned::span)
}

/// Whether a probe reads one of memory's own cgroup files (`memory.stat`, ...).
fn reads_memcg(spec: &ProbeSpec) -> bool {
    let path = match spec {
        ProbeSpec::ReadLatency { path, .. } | ProbeSpec::Counter { path, .. } => path,
        _ => return false,
    };
    path.rsplit('/')
        .next()
        .is_some_and(|file| file.starts_with("memory."))
}

fn churns(scenario: &Scenario) -> impl Iterator<Item = (&str, &CgroupChurn)> {
    scenario.workloads.iter().filter_map(|w| match &w.spec {
        WorkloadSpec::CgroupChurn(c) => Some((w.name.as_str(), c)),
        _ => None,
    })
}

/// Reports every claim the scenario's workloads cannot back.
pub(crate) fn check(ctx: &mut Ctx<'_>, root: &DeTable<'_>, scenario: &Scenario) {
    let with_memory: Vec<&str> = churns(scenario)
        .filter(|(_, c)| c.controllers.iter().any(|k| k == "memory"))
        .map(|(name, _)| name)
        .collect();
    let without_memory: Vec<&str> = churns(scenario)
        .filter(|(_, c)| !c.controllers.iter().any(|k| k == "memory"))
        .map(|(name, _)| name)
        .collect();
    let churns_none = || {
        if without_memory.is_empty() {
            "no `cgroup-churn` workload creates memory cgroups".to_owned()
        } else {
            format!(
                "no workload creates memory cgroups (`cgroup-churn` {} has no \"memory\" in `controllers`)",
                without_memory
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    };
    // Memory-cgroup claims: probes of memory's files, reclaim of dying memory cgroups.
    if with_memory.is_empty() {
        for probe in scenario.probes.iter().filter(|p| reads_memcg(&p.spec)) {
            ctx.error(
                entry_span(root, "probe", &probe.name, "path"),
                format!(
                    "probe `{}` reads a memory cgroup file, but {}: it would measure memory cgroups nothing churns",
                    probe.name,
                    churns_none()
                ),
            );
        }
        for w in &scenario.workloads {
            if let WorkloadSpec::MemcgReclaim(_) = &w.spec {
                ctx.error(
                    entry_span(root, "workload", &w.name, "kind"),
                    format!(
                        "`memcg-reclaim` `{}` reclaims dying memory cgroups, but {}",
                        w.name,
                        churns_none()
                    ),
                );
            }
        }
    }
    // Metrics a churn's own settings never produce.
    for (name, churn) in churns(scenario) {
        for check in scenario.checks.iter() {
            let Some(metric) = check
                .metric
                .strip_prefix(name)
                .and_then(|m| m.strip_prefix('.'))
            else {
                continue;
            };
            let why = match metric {
                "rmdir" if !churn.remove => Some("it never removes its cgroups (`remove = false`)"),
                "populate" if churn.files_per_cgroup == 0 => {
                    Some("no process writes in its cgroups (`files_per_cgroup = 0`)")
                }
                "file_charged_min" if churn.files_per_cgroup == 0 => {
                    Some("no process writes in its cgroups (`files_per_cgroup = 0`)")
                }
                "file_charged_min" if !churn.controllers.iter().any(|k| k == "memory") => {
                    Some("its cgroups have no memory controller to charge")
                }
                _ => None,
            };
            if let Some(why) = why {
                ctx.error(
                    check_span(root, &check.text),
                    format!("check `{}` cannot be tested: `{name}` {why}", check.text),
                );
            }
        }
    }
}

/// The span of the `[[check]]` whose `assert` is `text`.
fn check_span(root: &DeTable<'_>, text: &str) -> Range<usize> {
    root.get("check")
        .and_then(|v| v.get_ref().as_array())
        .and_then(|items| {
            items.iter().find_map(|item| {
                let assert = item.get_ref().as_table()?.get("assert")?;
                match assert.get_ref() {
                    DeValue::String(s) if s.trim() == text => Some(assert.span()),
                    _ => None,
                }
            })
        })
        .unwrap_or(0..0)
}

#[cfg(test)]
mod tests {
    use crate::scenario::parse;
    use crate::scenario::tests::errors;

    const MEMCG: &str = r#"
[scenario]
name = "t"
[[workload]]
kind = "cgroup-churn"
name = "churn"
controllers = CONTROLLERS
[[probe]]
kind = "read-latency"
name = "memory_stat_read"
path = "/sys/fs/cgroup/kchaos/memory.stat"
[[check]]
assert = "memory_stat_read.p50 <= 50ms"
"#;

    #[test]
    fn memcg_probes_need_a_churn_that_creates_memory_cgroups() {
        assert!(errors(&MEMCG.replace("CONTROLLERS", "[\"memory\"]")).is_empty());
        let errs = errors(&MEMCG.replace("CONTROLLERS", "[]"));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("t.toml:11:8: ") && errs[0].contains("`churn` has no \"memory\""),
            "{errs:?}"
        );
        let errs = errors(&MEMCG.replace("CONTROLLERS", "[\"cpu\"]"));
        assert_eq!(errs.len(), 1, "{errs:?}");
    }

    #[test]
    fn checks_on_what_a_churn_never_does_are_refused() {
        let src = r#"
[scenario]
name = "t"
[[workload]]
kind = "cgroup-churn"
name = "c"
remove = false
files_per_cgroup = 0
[[check]]
assert = "c.rmdir.max <= 1s"
[[check]]
assert = "c.populate.p50 <= 1s"
[[check]]
assert = "c.mkdir.max <= 1s"
"#;
        let errs = errors(src);
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs[0].contains("`c` it never removes its cgroups"),
            "{errs:?}"
        );
        assert!(errs[1].contains("files_per_cgroup = 0"), "{errs:?}");
    }

    #[test]
    fn the_shipped_scenarios_are_testable() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios");
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                let shown = path.display().to_string();
                if let Err(e) = parse(&shown, &text) {
                    panic!("{e}");
                }
            }
        }
    }
}
