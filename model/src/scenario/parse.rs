//! Stage two: raw file → validated [`Scenario`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::check::Check;
use super::ctx::{check_name, Ctx};
use super::error::{Locator, ScenarioErrors};
use super::probe::Probe;
use super::raw::{RawFile, RawKind, RawRequires, RawSignatures, RawVm};
use super::workload::Workload;
use super::{CgroupMode, ImageKind, Requirements, Scenario, SignaturePolicy, VmSpec};
use crate::kernel::{ConfigRequirement, VersionRange};

const DEFAULT_DURATION: Duration = Duration::from_secs(60);
const DEFAULT_MEMORY_MIB: u64 = 1024;
/// A disposable VM under TCG on a small host; more would only slow the boot.
const MAX_CPUS: u64 = 64;

/// Parses and validates one scenario file. `file` is used only to label errors.
pub fn parse(file: &str, source: &str) -> Result<Scenario, ScenarioErrors> {
    let locator = Locator::new(file, source);
    let root = match DeTable::parse(source) {
        Ok(root) => root,
        Err(e) => return Err(ScenarioErrors(vec![locator.toml_error(&e)])),
    };
    let mut ctx = Ctx::new(Locator::new(file, source).with_root(&root));
    let root_value = Spanned::new(root.span(), DeValue::Table(root.get_ref().clone()));
    let raw: RawFile = match RawFile::deserialize(ValueDeserializer::from(root_value)) {
        Ok(raw) => raw,
        Err(e) => return Err(ScenarioErrors(vec![ctx.loc.toml_error(&e)])),
    };

    let name = raw.scenario.name.get_ref().clone();
    if let Err(msg) = check_name(&name) {
        ctx.error(raw.scenario.name.span(), msg);
    }
    let duration = ctx
        .duration(&raw.scenario.duration)
        .unwrap_or(DEFAULT_DURATION);
    let settle = ctx.duration(&raw.scenario.settle).unwrap_or(Duration::ZERO);
    let vm = validate_vm(&mut ctx, &raw.vm);
    if let Some(image) = &raw.vm.image {
        if *image.get_ref() == ImageKind::Systemd && vm.cgroup != CgroupMode::V2 {
            ctx.error(
                image.span(),
                "the systemd image runs systemd's unified hierarchy: set `cgroup = \"v2\"`",
            );
        }
    }
    let requires = validate_requires(&mut ctx, &raw.requires);
    let signatures = validate_signatures(&mut ctx, &raw.signatures);

    let mut workloads: Vec<Workload> = tagged_entries(&mut ctx, root.get_ref(), "workload")
        .into_iter()
        .enumerate()
        .filter_map(|(i, (kind, value))| Workload::parse(&mut ctx, i, &kind, &value, &vm))
        .collect();
    let probes: Vec<Probe> = tagged_entries(&mut ctx, root.get_ref(), "probe")
        .into_iter()
        .filter_map(|(kind, value)| Probe::parse(&mut ctx, &kind, &value, &vm))
        .collect();
    check_unique_names(&mut ctx, root.get_ref(), &workloads, &probes);
    let churn_key = |i: usize| key_span(root.get_ref(), "workload", i, "churn");
    crate::scenario::workload::memcg_reclaim::resolve(&mut ctx, &mut workloads, churn_key);
    check_ordering(&mut ctx, root.get_ref(), &workloads);

    let mut scenario = Scenario {
        name,
        description: raw.scenario.description,
        tags: raw.scenario.tags,
        references: raw.scenario.references,
        seed: raw.scenario.seed,
        duration,
        settle,
        vm,
        requires,
        workloads,
        probes,
        checks: Vec::new(),
        signatures,
    };
    let catalog = scenario.metric_catalog();
    scenario.checks = raw
        .check
        .iter()
        .filter_map(|c| Check::parse(&mut ctx, c, &catalog))
        .collect();

    if ctx.errors.is_empty() {
        Ok(scenario)
    } else {
        Err(ScenarioErrors(ctx.errors))
    }
}

/// The entries of `[[workload]]` / `[[probe]]` with their `kind`.
fn tagged_entries<'i>(
    ctx: &mut Ctx<'_>,
    root: &DeTable<'i>,
    key: &str,
) -> Vec<(Spanned<String>, Spanned<DeValue<'i>>)> {
    let Some(value) = root.get(key) else {
        return Vec::new();
    };
    let Some(items) = value.get_ref().as_array() else {
        ctx.error(
            value.span(),
            format!("`{key}` must be an array of tables: write `[[{key}]]`"),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in items.iter() {
        if !item.get_ref().is_table() {
            ctx.error(item.span(), format!("each `{key}` entry must be a table"));
            continue;
        }
        let Some(head) = ctx.deserialize::<RawKind>(item) else {
            continue;
        };
        match head.kind {
            Some(kind) => out.push((kind, item.clone())),
            None => ctx.error(
                item.span(),
                format!("missing required key `kind` in this `{key}`"),
            ),
        }
    }
    out
}

fn validate_vm(ctx: &mut Ctx<'_>, raw: &RawVm) -> VmSpec {
    let memory_mib = match ctx.size(&raw.memory) {
        Some(bytes) if bytes >= 128 << 20 => bytes >> 20,
        Some(_) => {
            if let Some(m) = &raw.memory {
                ctx.error(m.span(), "the VM needs at least 128MiB");
            }
            DEFAULT_MEMORY_MIB
        }
        None => DEFAULT_MEMORY_MIB,
    };
    let cpus = ctx.count(&raw.cpus, 1, MAX_CPUS).unwrap_or(1);
    let cpus = u32::try_from(cpus).unwrap_or(1);
    let mut cmdline = Vec::new();
    for param in &raw.cmdline {
        let p = param.get_ref();
        if p.is_empty() || p.chars().any(char::is_whitespace) {
            ctx.error(
                param.span(),
                format!("`{p}` must be one kernel parameter without spaces; list each separately"),
            );
        } else if p.starts_with("kchaos.") || p.starts_with("console=") {
            ctx.error(
                param.span(),
                format!("`{p}` is set by the harness and cannot be overridden"),
            );
        } else {
            cmdline.push(p.clone());
        }
    }
    let mut sysctl = BTreeMap::new();
    for (key, value) in &raw.sysctl {
        let valid_key = !key.is_empty()
            && key.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            });
        if !valid_key {
            ctx.error(
                value.span(),
                format!("`{key}` is not a sysctl name like `kernel.hung_task_timeout_secs`"),
            );
            continue;
        }
        let text = match value.get_ref() {
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::String(s) => s.clone(),
            toml::Value::Boolean(b) => u8::from(*b).to_string(),
            _ => {
                ctx.error(
                    value.span(),
                    "a sysctl value must be an integer, a string or a boolean",
                );
                continue;
            }
        };
        sysctl.insert(key.clone(), text);
    }
    let mut modules = Vec::new();
    for m in &raw.modules {
        if let Err(msg) = check_module_name(m.get_ref()) {
            ctx.error(m.span(), msg);
        } else {
            modules.push(m.get_ref().replace('-', "_"));
        }
    }
    let mut tools = Vec::new();
    for t in &raw.tools {
        let name = t.get_ref();
        let ok = !name.is_empty()
            && (name.starts_with('/')
                || name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+')));
        if ok {
            tools.push(name.clone());
        } else {
            ctx.error(
                t.span(),
                format!("`{name}` is not a program name (`ip`) or an absolute path on the host"),
            );
        }
    }
    VmSpec {
        memory_mib,
        cpus,
        cgroup: raw.cgroup.unwrap_or(CgroupMode::V2),
        cmdline,
        sysctl,
        modules,
        tools,
        hang_timeout: ctx.duration(&raw.hang_timeout),
        image: raw
            .image
            .as_ref()
            .map_or(ImageKind::Initramfs, |i| *i.get_ref()),
    }
}

fn check_module_name(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a kernel module name (like `veth` or `virtio_console`)"
        ))
    }
}

fn validate_requires(ctx: &mut Ctx<'_>, raw: &RawRequires) -> Requirements {
    let kernel = raw
        .kernel
        .as_ref()
        .and_then(|k| match VersionRange::parse(k.get_ref()) {
            Ok(r) => Some(r),
            Err(msg) => {
                ctx.error(k.span(), msg);
                None
            }
        });
    let config = raw
        .config
        .iter()
        .filter_map(|c| match ConfigRequirement::parse(c.get_ref()) {
            Ok(r) => Some(r),
            Err(msg) => {
                ctx.error(c.span(), msg);
                None
            }
        })
        .collect();
    let cgroup_controllers = ctx.controllers(&raw.cgroup_controllers);
    Requirements {
        kernel,
        config,
        cgroup_controllers,
    }
}

fn validate_signatures(ctx: &mut Ctx<'_>, raw: &RawSignatures) -> SignaturePolicy {
    let mut regexes = |list: &[Spanned<String>]| -> Vec<String> {
        list.iter()
            .filter_map(|r| match Regex::new(r.get_ref()) {
                Ok(_) => Some(r.get_ref().clone()),
                Err(e) => {
                    let msg = e
                        .to_string()
                        .lines()
                        .last()
                        .unwrap_or("invalid")
                        .trim()
                        .to_owned();
                    ctx.error(r.span(), format!("not a valid regular expression: {msg}"));
                    None
                }
            })
            .collect()
    };
    SignaturePolicy {
        defaults: raw.defaults.unwrap_or(true),
        crash: regexes(&raw.crash),
        fail: regexes(&raw.fail),
        ignore: regexes(&raw.ignore),
    }
}

/// Workload and probe names share one metric namespace.
fn check_unique_names(
    ctx: &mut Ctx<'_>,
    root: &DeTable<'_>,
    workloads: &[Workload],
    probes: &[Probe],
) {
    let mut seen = BTreeSet::new();
    let names = workloads
        .iter()
        .map(|w| w.name.as_str())
        .chain(probes.iter().map(|p| p.name.as_str()));
    for name in names {
        if !seen.insert(name.to_owned()) {
            let span = find_name_span(root, name).unwrap_or(0..0);
            ctx.error(
                span,
                format!("the name `{name}` is used twice; workload and probe names must be unique"),
            );
        }
    }
}

fn find_name_span(root: &DeTable<'_>, name: &str) -> Option<std::ops::Range<usize>> {
    let mut found = None;
    for key in ["workload", "probe"] {
        let Some(items) = root.get(key).and_then(|v| v.get_ref().as_array()) else {
            continue;
        };
        for item in items.iter() {
            if let Some(n) = item.get_ref().as_table().and_then(|t| t.get("name")) {
                if n.get_ref().as_str() == Some(name) {
                    found = Some(n.span());
                }
            }
        }
    }
    found
}

/// Where key `key` of the `index`-th `[[section]]` is written (0..0 if nowhere).
fn key_span(root: &DeTable<'_>, section: &str, index: usize, key: &str) -> std::ops::Range<usize> {
    root.get(section)
        .and_then(|v| v.get_ref().as_array())
        .and_then(|items| items.get(index))
        .and_then(|item| {
            item.get_ref()
                .as_table()
                .and_then(|t| t.get(key))
                .map(Spanned::span)
        })
        .unwrap_or(0..0)
}

/// `after` must name another workload, and the chain must end.
fn check_ordering(ctx: &mut Ctx<'_>, root: &DeTable<'_>, workloads: &[Workload]) {
    let span_of = |index: usize| {
        root.get("workload")
            .and_then(|v| v.get_ref().as_array())
            .and_then(|items| items.get(index))
            .and_then(|item| {
                item.get_ref()
                    .as_table()
                    .and_then(|t| t.get("after"))
                    .map(Spanned::span)
            })
            .unwrap_or(0..0)
    };
    for (i, w) in workloads.iter().enumerate() {
        let Some(after) = &w.after else { continue };
        if !workloads
            .iter()
            .any(|o| &o.name == after && o.name != w.name)
        {
            let names: Vec<&str> = workloads
                .iter()
                .filter(|o| o.name != w.name)
                .map(|o| o.name.as_str())
                .collect();
            ctx.error(
                span_of(i),
                format!(
                    "`after` names no other workload: `{after}`; workloads: {}",
                    names.join(", ")
                ),
            );
            continue;
        }
        // Follow the chain; more steps than workloads means a cycle.
        let mut at = after;
        for _ in 0..workloads.len() {
            match workloads
                .iter()
                .find(|o| &o.name == at)
                .and_then(|o| o.after.as_ref())
            {
                Some(next) if next == &w.name => {
                    ctx.error(
                        span_of(i),
                        format!("`after` makes a cycle through `{after}`"),
                    );
                    break;
                }
                Some(next) => at = next,
                None => break,
            }
        }
    }
}
