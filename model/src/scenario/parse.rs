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
use super::raw::{RawCheck, RawFile, RawKind, RawRequires, RawSignatures, RawVm};
use super::workload::Workload;
use super::{
    CgroupMode, ImageKind, Requirements, Scenario, SignaturePolicy, VmSpec, DEFAULT_STALL_BOUND,
    DEFAULT_SYSCTL,
};
use crate::kernel::{ConfigRequirement, VersionRange};
use crate::topology::Topology;

const DEFAULT_DURATION: Duration = Duration::from_secs(60);
const DEFAULT_MEMORY_MIB: u64 = 1024;
/// The shortest workload phase: a cell that boots a VM to do nothing is a mistake.
const MIN_DURATION: Duration = Duration::from_secs(1);
/// The guest sends a heartbeat every second; a silence of one beat is not a hang.
const MIN_HANG_TIMEOUT: Duration = Duration::from_secs(2);
/// The shortest stall bound: below it, ordinary scheduling delays under TCG would fail.
const MIN_STALL_BOUND: Duration = Duration::from_millis(100);
/// The smallest guest the runner and the kernels boot in, and the largest VM worth
/// declaring (a disposable VM; the host's own memory is checked when it runs).
const MIN_MEMORY: u64 = 128 << 20;
const MAX_MEMORY: u64 = 64 << 30;
/// Enough for any incident, few enough that a typo (or a generated file) cannot make the
/// runner start thousands of threads.
const MAX_WORKLOADS: usize = 64;
const MAX_PROBES: usize = 64;
const MAX_CHECKS: usize = 256;
/// Kernel parameters the harness sets itself: the runner is the init, the console is the
/// witness, `panic=` decides whether a crashed guest stays up for a dump, `root=` is the
/// systemd image's disk. A scenario that changed them would break the cell, not the kernel.
const OWNED_PARAMS: &[&str] = &[
    "console=",
    "init=",
    "rdinit=",
    "panic=",
    "root=",
    "rootfstype=",
    "kchaos.",
];

/// What validation asks of the machine that will run the scenario. The model does no
/// I/O: the harness answers from the host, so `kchaos validate` refuses a `[vm] tools`
/// entry that is not there instead of a cell failing later.
pub trait Host {
    /// `Ok` when host program `name` (`[vm] tools`) can be copied into the guest image;
    /// else why not (not found, not an ELF executable, a library missing).
    fn tool(&self, name: &str) -> Result<(), String>;
    /// The host's memory in bytes, when known: a VM larger than the machine cannot run.
    fn memory_bytes(&self) -> Option<u64>;
}

/// A host that accepts everything: for checking the file alone (the guest runner, tests).
#[derive(Debug, Clone, Copy)]
pub struct AnyHost;

impl Host for AnyHost {
    fn tool(&self, _name: &str) -> Result<(), String> {
        Ok(())
    }

    fn memory_bytes(&self) -> Option<u64> {
        None
    }
}

/// Parses and validates one scenario file on its own (no host checks). `file` is used
/// only to label errors.
pub fn parse(file: &str, source: &str) -> Result<Scenario, ScenarioErrors> {
    parse_for(file, source, &AnyHost)
}

/// Parses and validates one scenario file for running on `host`.
pub fn parse_for(file: &str, source: &str, host: &dyn Host) -> Result<Scenario, ScenarioErrors> {
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
        .duration_in(&raw.scenario.duration, MIN_DURATION)
        .unwrap_or(DEFAULT_DURATION);
    let settle = ctx.duration(&raw.scenario.settle).unwrap_or(Duration::ZERO);
    let stall_bound = stall_bound(&mut ctx, &raw.scenario.stall_bound);
    let vm = validate_vm(&mut ctx, &raw.vm, host);
    check_image_cgroup(&mut ctx, &raw.vm, &vm);
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
    check_sizes(&mut ctx, &raw, root.get_ref());
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
        stall_bound,
        vm,
        requires,
        workloads,
        probes,
        checks: Vec::new(),
        signatures,
    };
    scenario.checks = validate_checks(&mut ctx, &raw.check, &scenario);
    super::testable::check(&mut ctx, root.get_ref(), &scenario);

    if ctx.errors.is_empty() {
        Ok(scenario)
    } else {
        Err(ScenarioErrors(ctx.errors))
    }
}

/// `[scenario] stall_bound`: a duration, or `"off"` (`None`); the default where absent
/// or refused.
fn stall_bound(ctx: &mut Ctx<'_>, raw: &Option<Spanned<String>>) -> Option<Duration> {
    match raw {
        Some(s) if s.get_ref().trim() == "off" => None,
        Some(_) => ctx
            .duration_in(raw, MIN_STALL_BOUND)
            .or(Some(DEFAULT_STALL_BOUND)),
        None => Some(DEFAULT_STALL_BOUND),
    }
}

/// The systemd images run systemd's unified hierarchy: they need cgroup v2.
fn check_image_cgroup(ctx: &mut Ctx<'_>, raw: &RawVm, vm: &VmSpec) {
    if let Some(image) = &raw.image {
        if image.get_ref().runs_systemd() && vm.cgroup != CgroupMode::V2 {
            ctx.error(
                image.span(),
                "the systemd image runs systemd's unified hierarchy: set `cgroup = \"v2\"`",
            );
        }
    }
}

/// The `[[check]]`s, against the metrics, phases and timed probes of `scenario`.
fn validate_checks(ctx: &mut Ctx<'_>, raw: &[RawCheck], scenario: &Scenario) -> Vec<Check> {
    let catalog = scenario.metric_catalog();
    let phases: Vec<String> = scenario.workloads.iter().map(|w| w.name.clone()).collect();
    let timed: BTreeSet<String> = scenario.probes.iter().map(|p| p.name.clone()).collect();
    let names = super::window::Names {
        catalog: &catalog,
        phases: &phases,
        timed: &timed,
    };
    raw.iter()
        .filter_map(|c| Check::parse(ctx, c, &names))
        .collect()
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

fn validate_vm(ctx: &mut Ctx<'_>, raw: &RawVm, host: &dyn Host) -> VmSpec {
    let memory_mib = vm_memory(ctx, &raw.memory, host);
    let (topology, topologies) = validate_cpus(ctx, &raw.cpus);
    VmSpec {
        memory_mib,
        cpus: topology.cpus(),
        topology,
        topologies,
        cgroup: raw.cgroup.unwrap_or(CgroupMode::V2),
        cmdline: vm_cmdline(ctx, &raw.cmdline),
        sysctl: vm_sysctl(ctx, &raw.sysctl),
        modules: vm_modules(ctx, &raw.modules),
        tools: vm_tools(ctx, &raw.tools, host),
        hang_timeout: ctx.duration_in(&raw.hang_timeout, MIN_HANG_TIMEOUT),
        image: raw
            .image
            .as_ref()
            .map_or(ImageKind::Initramfs, |i| *i.get_ref()),
    }
}

/// `[vm] memory` in MiB: within the bounds, and no more than the host has.
fn vm_memory(ctx: &mut Ctx<'_>, raw: &Option<Spanned<String>>, host: &dyn Host) -> u64 {
    let memory_mib = ctx
        .size_in(raw, MIN_MEMORY, MAX_MEMORY)
        .map_or(DEFAULT_MEMORY_MIB, |bytes| bytes >> 20);
    if let (Some(m), Some(have)) = (raw, host.memory_bytes()) {
        if memory_mib << 20 > have {
            ctx.error(
                m.span(),
                format!(
                    "the VM asks for {} but this host has {}",
                    crate::units::format_bytes((memory_mib << 20) as f64),
                    crate::units::format_bytes(have as f64)
                ),
            );
        }
    }
    memory_mib
}

/// `[vm] cmdline`: one parameter each, none of those the harness owns.
fn vm_cmdline(ctx: &mut Ctx<'_>, raw: &[Spanned<String>]) -> Vec<String> {
    let mut cmdline = Vec::new();
    for param in raw {
        let p = param.get_ref();
        if p.is_empty() || p.chars().any(char::is_whitespace) {
            ctx.error(
                param.span(),
                format!("`{p}` must be one kernel parameter without spaces; list each separately"),
            );
        } else if let Some(owned) = OWNED_PARAMS.iter().find(|o| p.starts_with(**o)) {
            ctx.error(
                param.span(),
                format!(
                    "`{p}`: `{owned}` is set by the harness and cannot be overridden; it owns {}",
                    OWNED_PARAMS.join(" ")
                ),
            );
        } else {
            cmdline.push(p.clone());
        }
    }
    cmdline
}

/// `[vm] sysctl` as the text written to `/proc/sys`, over the defaults.
fn vm_sysctl(
    ctx: &mut Ctx<'_>,
    raw: &BTreeMap<String, Spanned<toml::Value>>,
) -> BTreeMap<String, String> {
    let mut sysctl = BTreeMap::new();
    for (key, value) in raw {
        if let Some(text) = sysctl_entry(ctx, key, value) {
            sysctl.insert(key.clone(), text);
        }
    }
    for (key, value) in DEFAULT_SYSCTL {
        sysctl
            .entry((*key).to_owned())
            .or_insert_with(|| (*value).to_owned());
    }
    sysctl
}

/// One sysctl's value as text, when its name and value are valid.
fn sysctl_entry(ctx: &mut Ctx<'_>, key: &str, value: &Spanned<toml::Value>) -> Option<String> {
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
        return None;
    }
    match value.get_ref() {
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Boolean(b) => Some(u8::from(*b).to_string()),
        _ => {
            ctx.error(
                value.span(),
                "a sysctl value must be an integer, a string or a boolean",
            );
            None
        }
    }
}

/// `[vm] modules`, spelled as the kernel lists them (`-` as `_`).
fn vm_modules(ctx: &mut Ctx<'_>, raw: &[Spanned<String>]) -> Vec<String> {
    raw.iter()
        .filter_map(|m| ctx.or_error(m.span(), check_module_name(m.get_ref())))
        .collect()
}

/// `[vm] tools`: program names or absolute paths the host can copy into the guest.
fn vm_tools(ctx: &mut Ctx<'_>, raw: &[Spanned<String>], host: &dyn Host) -> Vec<String> {
    let mut tools = Vec::new();
    for t in raw {
        let name = t.get_ref();
        let ok = !name.is_empty()
            && (name.starts_with('/')
                || name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+')));
        if !ok {
            ctx.error(
                t.span(),
                format!("`{name}` is not a program name (`ip`) or an absolute path on the host"),
            );
        } else if let Err(why) = host.tool(name) {
            ctx.error(t.span(), format!("`{name}`: {why}"));
        } else {
            tools.push(name.clone());
        }
    }
    tools
}

/// `[vm] cpus`: `2`, `"2s2c"`, or a list of them (`[1, 2, "2s2c"]`): the VM's topology
/// (the list's first) and, for a list of more than one, the matrix's topologies.
fn validate_cpus(
    ctx: &mut Ctx<'_>,
    raw: &Option<Spanned<toml::Value>>,
) -> (Topology, Vec<Topology>) {
    let Some(value) = raw else {
        return (Topology::default(), Vec::new());
    };
    let one = |v: &toml::Value| match v {
        toml::Value::Integer(n) => u32::try_from(*n)
            .map_err(|_| format!("{n} is not a CPU count"))
            .and_then(|n| Topology::parse(&n.to_string())),
        toml::Value::String(s) => Topology::parse(s),
        other => Err(format!(
            "`{other}` is not a CPU count or a topology like \"2s2c\""
        )),
    };
    let list = match value.get_ref() {
        toml::Value::Array(items) => items
            .iter()
            .map(one)
            .collect::<Result<Vec<_>, _>>()
            .and_then(|l| crate::topology::check_list(&l).map(|()| l)),
        single => one(single).map(|t| vec![t]),
    };
    match list {
        Ok(list) => {
            let first = list.first().copied().unwrap_or_default();
            let axis = if list.len() > 1 { list } else { Vec::new() };
            (first, axis)
        }
        Err(why) => {
            ctx.error(value.span(), why);
            (Topology::default(), Vec::new())
        }
    }
}

/// A module name as the kernel lists it (`-` written as `_`), or why it is none.
fn check_module_name(name: &str) -> Result<String, String> {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        Ok(name.replace('-', "_"))
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
        .and_then(|k| ctx.or_error(k.span(), VersionRange::parse(k.get_ref())));
    let config = raw
        .config
        .iter()
        .filter_map(|c| ctx.or_error(c.span(), ConfigRequirement::parse(c.get_ref())))
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

/// A scenario does something, and not an unbounded amount of things.
fn check_sizes(ctx: &mut Ctx<'_>, raw: &RawFile, root: &DeTable<'_>) {
    let entries = |key: &str| {
        root.get(key)
            .and_then(|v| v.get_ref().as_array().map(|a| (a.len(), v.span())))
    };
    let (workloads, probes) = (entries("workload"), entries("probe"));
    if workloads.is_none() && probes.is_none() {
        ctx.error(
            raw.scenario.name.span(),
            "the scenario has nothing to run: add a `[[workload]]` or a `[[probe]]`",
        );
    }
    for (what, found, max) in [
        ("workload", workloads, MAX_WORKLOADS),
        ("probe", probes, MAX_PROBES),
    ] {
        if let Some((n, span)) = found.filter(|(n, _)| *n > max) {
            ctx.error(
                span,
                format!("{n} `[[{what}]]` entries; allowed: at most {max}"),
            );
        }
    }
    if raw.check.len() > MAX_CHECKS {
        let span = raw.check[MAX_CHECKS].expr.span();
        ctx.error(
            span,
            format!(
                "{} `[[check]]` entries; allowed: at most {MAX_CHECKS}",
                raw.check.len()
            ),
        );
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
    let span_of = |index: usize| key_span(root, "workload", index, "after");
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
