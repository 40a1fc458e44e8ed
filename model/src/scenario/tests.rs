//! Scenario files, valid and not: defaults, every error located, the shipped scenarios.

use super::*;
use crate::metrics::Stat;

fn parse_ok(src: &str) -> Scenario {
    match parse("t.toml", src) {
        Ok(s) => s,
        Err(e) => panic!("expected a valid scenario, got:\n{e}"),
    }
}

/// The errors of `src` as `t.toml`, one a line; none when it is valid.
pub(super) fn errors(src: &str) -> Vec<String> {
    match parse("t.toml", src) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

fn parse_err(src: &str) -> Vec<String> {
    let errors = errors(src);
    assert!(!errors.is_empty(), "expected errors");
    errors
}

const MINIMAL: &str = r#"
[scenario]
name = "mini"

[[workload]]
kind = "cgroup-churn"
name = "churn"
iterations = 10

[[probe]]
kind = "read-latency"
name = "memory_stat_read"
path = "/sys/fs/cgroup/kchaos/memory.stat"

[[probe]]
kind = "counter"
name = "dying"
path = "/sys/fs/cgroup/cgroup.stat"
key = "nr_dying_descendants"
interval = "250ms"

[[check]]
assert = "memory_stat_read.p99 <= 50ms"

[[check]]
assert = "dying.last <= 100"
because = "dying cgroups must be reclaimed"
"#;

#[test]
fn minimal_scenario_gets_sensible_defaults() {
    let s = parse_ok(MINIMAL);
    assert_eq!(s.vm.cgroup, CgroupMode::V2);
    assert_eq!(s.vm.memory_mib, 1024);
    assert_eq!(s.vm.cpus, 1);
    assert_eq!(s.duration, Duration::from_secs(60));
    assert!(s.signatures.defaults);
    let WorkloadSpec::CgroupChurn(churn) = &s.workloads[0].spec else {
        panic!("expected cgroup-churn")
    };
    assert_eq!(churn.controllers, vec!["memory"]);
    assert_eq!(churn.batch, 1);
    assert_eq!(s.checks[0].threshold, 50e6);
    assert_eq!(s.checks[1].stat, Stat::Last);
    assert_eq!(s.probes[1].interval, Duration::from_millis(250));
}

#[test]
fn validated_model_survives_the_wire() -> Result<(), serde_json::Error> {
    let s = parse_ok(MINIMAL);
    let json = serde_json::to_string(&s)?;
    let back: Scenario = serde_json::from_str(&json)?;
    assert_eq!(back, s);
    Ok(())
}

#[test]
fn shipped_scenarios_are_valid() {
    for (name, src) in [
        (
            "memcg-dying-cgroups",
            include_str!("../../../scenarios/memcg-dying-cgroups.toml"),
        ),
        (
            "memcg-kmem-churn",
            include_str!("../../../scenarios/memcg-kmem-churn.toml"),
        ),
    ] {
        let s = parse_ok(src);
        assert_eq!(s.name, name);
        assert!(!s.references.is_empty(), "{name} must cite its incident");
        assert!(!s.checks.is_empty(), "{name} must have checks");
    }
}

#[test]
fn unknown_key_names_file_line_column_and_key() {
    let errors = parse_err("[scenario]\nname = \"x\"\n\n[vm]\nmemroy = \"1GiB\"\n");
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("t.toml:5:1: vm.memroy: unknown key `memroy`"),
        "{}",
        errors[0]
    );
    assert!(
        errors[0].contains("memory"),
        "should list the allowed keys: {}",
        errors[0]
    );
}

#[test]
fn unknown_key_inside_a_workload_points_at_the_key() {
    let errors =
        parse_err("[scenario]\nname = \"x\"\n[[workload]]\nkind = \"cgroup-churn\"\nbtach = 3\n");
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("t.toml:5:1: workload[0].btach: unknown key `btach`"),
        "{}",
        errors[0]
    );
    assert!(errors[0].contains("`batch`"), "{}", errors[0]);
}

#[test]
fn wrong_type_points_at_the_value() {
    let errors = parse_err(
        "[scenario]\nname = \"x\"\n[[workload]]\nkind = \"cgroup-churn\"\niterations = \"many\"\n",
    );
    assert!(
        errors[0].starts_with("t.toml:5:14: workload[0].iterations: invalid type"),
        "{}",
        errors[0]
    );
}

#[test]
fn unknown_kind_lists_the_known_ones() {
    let errors = parse_err("[scenario]\nname = \"x\"\n[[workload]]\nkind = \"fork-bomb\"\n");
    assert!(
        errors[0].contains("t.toml:4:8: workload[0].kind: unknown workload kind `fork-bomb`"),
        "{}",
        errors[0]
    );
    assert!(errors[0].contains("cgroup-churn"));
    let errors = parse_err("[scenario]\nname = \"x\"\n[[probe]]\nname = \"p\"\npath = \"/x\"\n");
    assert!(
        errors[0].contains("missing required key `kind`"),
        "{}",
        errors[0]
    );
}

#[test]
fn all_semantic_errors_are_reported_in_one_pass() {
    let errors = parse_err(
        r#"
[scenario]
name = "bad name!"
settle = "5"

[vm]
cgroup = "v2"
cpus = 0

[requires]
kernel = "newest"
config = ["MEMCG"]

[[workload]]
kind = "cgroup-churn"
kmem_limit = "1MiB"

[[check]]
assert = "nope.p99 <= 1ms"
"#,
    );
    let joined = errors.join("\n");
    for needle in [
        "t.toml:3:8: scenario.name:",
        "t.toml:4:10: scenario.settle: `5` has no unit",
        "t.toml:8:8: vm.cpus: `0`: sockets, cores and threads start at 1",
        "t.toml:11:10: requires.kernel:",
        "t.toml:12:11: requires.config[0]:",
        "workload[0].kmem_limit: `kmem_limit` exists only in cgroup v1",
        "check[0].assert: unknown metric `nope`",
    ] {
        assert!(joined.contains(needle), "missing `{needle}` in:\n{joined}");
    }
}

#[test]
fn check_expressions_are_validated_against_the_metrics() {
    let base = MINIMAL
        .split("[[check]]")
        .next()
        .unwrap_or_default()
        .to_owned();
    let with = |assert: &str| format!("{base}[[check]]\nassert = \"{assert}\"\n");
    assert!(
        parse_err(&with("memory_stat_read.last <= 1ms"))[0].contains("allowed: count, min, mean")
    );
    assert!(parse_err(&with("memory_stat_read.p99 <= 50"))[0].contains("needs a time unit"));
    assert!(parse_err(&with("memory_stat_read.p99 50ms"))[0].contains("has no comparison"));
    assert!(parse_err(&with("churn.mkdir.p50 <= 5"))[0].contains("needs a time unit"));
    let s = parse_ok(&with("churn.errors.value == 0"));
    assert_eq!(s.checks[0].op, CmpOp::Eq);
    let s = parse_ok(&with("churn.mkdir.count >= 10"));
    assert_eq!(s.checks[0].unit, crate::units::Unit::Count);
}

#[test]
fn syntax_errors_have_positions_too() {
    let errors = parse_err("[scenario]\nname = \"x\n");
    assert!(errors[0].starts_with("t.toml:2:"), "{}", errors[0]);
}

#[test]
fn duplicate_names_are_rejected() {
    let errors = parse_err(
        "[scenario]\nname = \"x\"\n[[workload]]\nkind = \"cgroup-churn\"\nname = \"a\"\n[[probe]]\nkind = \"read-latency\"\nname = \"a\"\npath = \"/x\"\n",
    );
    assert!(errors[0].contains("`a` is used twice"), "{}", errors[0]);
}

#[test]
fn harness_owned_cmdline_is_refused() {
    let errors = parse_err("[scenario]\nname = \"x\"\n[vm]\ncmdline = [\"console=tty0\"]\n");
    assert!(errors[0].contains("set by the harness"), "{}", errors[0]);
}

#[test]
fn cfs_quota_ranges_and_shapes_are_checked() {
    let base = "[scenario]\nname = \"c\"\n[[workload]]\nkind = \"cfs-quota\"\n";
    let s = parse_ok(&format!(
        "{base}quota = \"3ms\"\nperiod = [\"10ms\", \"20ms\"]\n"
    ));
    let WorkloadSpec::CfsQuota(c) = &s.workloads[0].spec else {
        panic!("expected cfs-quota")
    };
    assert_eq!(
        c.quota,
        (Duration::from_millis(3), Duration::from_millis(3))
    );
    assert_eq!(c.controllers, ["cpu"]);
    let joined = parse_err(&format!(
        "{base}quota = \"500us\"\nperiod = [\"20ms\", \"10ms\"]\nwidth = 8\ndepth = 3\n"
    ))
    .join("\n");
    for needle in [
        "refuses quotas below 1ms",
        "must be non-empty",
        "512 leaves is too many",
    ] {
        assert!(joined.contains(needle), "missing `{needle}` in:\n{joined}");
    }
    // v1 reads usage from cpuacct, so the tree lives in both hierarchies.
    let v1 = parse_ok(
        "[scenario]\nname = \"c\"\n[vm]\ncgroup = \"v1\"\n[[workload]]\nkind = \"cfs-quota\"\n",
    );
    let WorkloadSpec::CfsQuota(c) = &v1.workloads[0].spec else {
        panic!("expected cfs-quota")
    };
    assert_eq!(c.controllers, ["cpu", "cpuacct"]);
}

#[test]
fn selftest_actions_are_checked() {
    let base = "[scenario]\nname = \"t\"\n[[workload]]\nkind = \"selftest\"\n";
    assert!(parse_err(&format!("{base}action = \"kmsg\"\n"))[0].contains("needs `line`"));
    assert!(parse_err(&format!("{base}action = \"reboot\"\n"))[0]
        .contains("allowed: panic, kmsg, wedge, silence"));
    assert!(
        parse_err(&format!("{base}action = \"panic\"\nline = \"x\"\n"))[0]
            .contains("belongs to action `kmsg`")
    );
    let s = parse_ok(&format!("{base}action = \"wedge\"\ndelay = \"2s\"\n"));
    let WorkloadSpec::Selftest(t) = &s.workloads[0].spec else {
        panic!("expected selftest")
    };
    assert!(t.describe().contains("wedges every CPU"));
}

#[test]
fn wakeup_probes_report_latency_and_their_own_cost() {
    let s = parse_ok("[scenario]\nname = \"w\"\n[[probe]]\nkind = \"wakeup-latency\"\nname = \"wake\"\ncgroup = \"a/b\"\n[[check]]\nassert = \"wake.cpu_share.value <= 5%\"\n");
    assert_eq!(s.checks[0].threshold, 0.05);
    assert_eq!(s.probes[0].interval, Duration::from_millis(1));
    assert!(parse_err("[scenario]\nname = \"w\"\n[[probe]]\nkind = \"wakeup-latency\"\nname = \"wake\"\ncgroup = \"../x\"\n")[0].contains("not a relative cgroup path"));
}

#[test]
fn veth_storm_defaults_and_modules() {
    let s = parse_ok(
        "[scenario]\nname = \"v\"\n[[workload]]\nkind = \"veth-storm\"\ndestroy = \"link\"\n",
    );
    let WorkloadSpec::VethStorm(v) = &s.workloads[0].spec else {
        panic!("expected veth-storm")
    };
    assert_eq!(v.destroy, workload::DestroyOrder::Link);
    assert!(v.traffic && !v.ipv6);
    assert_eq!(s.modules(), ["veth"], "the workload brings its driver");
    assert!(parse_err(
        "[scenario]\nname = \"v\"\n[[workload]]\nkind = \"veth-storm\"\ndestroy = \"ip\"\n"
    )[0]
    .contains("netns"));
}

#[test]
fn after_must_name_another_workload_without_cycles() {
    let two = |a: &str, b: &str| {
        format!("[scenario]\nname = \"o\"\n[[workload]]\nkind = \"cgroup-churn\"\nname = \"a\"\n{a}\n[[workload]]\nkind = \"cgroup-churn\"\nname = \"b\"\n{b}\n")
    };
    let s = parse_ok(&two("", "after = \"a\""));
    assert_eq!(s.workloads[1].after.as_deref(), Some("a"));
    let e = parse_err(&two("", "after = \"c\""));
    assert!(
        e[0].contains(
            "t.toml:10:9: workload[1].after: `after` names no other workload: `c`; workloads: a"
        ),
        "{e:?}"
    );
    let e = parse_err(&two("after = \"b\"", "after = \"a\"")).join("\n");
    assert!(e.contains("makes a cycle"), "{e}");
    assert!(parse_err(&two("after = \"a\"", ""))[0].contains("names no other workload"));
}

#[test]
fn exec_needs_an_absolute_program_and_tools_are_names_or_paths() {
    let base = "[scenario]\nname = \"e\"\n[vm]\ntools = [\"sh\", \"/usr/sbin/ip\"]\n[[workload]]\nkind = \"exec\"\n";
    let s = parse_ok(&format!("{base}argv = [\"/bin/sh\", \"-c\", \"true\"]\n"));
    assert_eq!(s.vm.tools, ["sh", "/usr/sbin/ip"]);
    assert!(parse_err(&format!("{base}argv = [\"sh\"]\n"))[0].contains("absolute path"));
    assert!(
        parse_err("[scenario]\nname = \"e\"\n[vm]\ntools = [\"a b\"]\n")[0]
            .contains("not a program name")
    );
}

#[test]
fn systemd_workloads_and_probes_need_the_systemd_image() {
    let body = "[[workload]]\nkind = \"systemd-units\"\nname = \"u\"\n[[probe]]\nkind = \"systemd-call\"\nname = \"call\"\n[[workload]]\nkind = \"selftest\"\naction = \"freeze-systemd\"\n";
    let errors = parse_err(&format!("[scenario]\nname = \"s\"\n{body}"));
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors[0].starts_with("t.toml:4:8: "), "{errors:?}");
    assert!(
        errors.iter().all(|e| e.contains("image = \"systemd\"")),
        "{errors:?}"
    );

    let s = parse_ok(&format!(
        "[scenario]\nname = \"s\"\n[vm]\nimage = \"systemd\"\n{body}"
    ));
    assert_eq!(s.vm.image, ImageKind::Systemd);
    let WorkloadSpec::SystemdUnits(u) = &s.workloads[0].spec else {
        panic!("expected systemd-units")
    };
    assert_eq!((u.concurrency, u.connections), (4, 1));
    assert_eq!(u.kinds.len(), 4, "every kind by default");
    assert_eq!(u.job_timeout, Duration::from_secs(30));
    assert_eq!(
        s.probes[0].spec,
        ProbeSpec::SystemdCall {
            timeout: Duration::from_secs(5)
        }
    );

    let v1 = parse_err("[scenario]\nname = \"s\"\n[vm]\nimage = \"systemd\"\ncgroup = \"v1\"\n");
    assert!(v1[0].contains("set `cgroup = \"v2\"`"), "{v1:?}");
    let empty = parse_err(
        "[scenario]\nname = \"s\"\n[vm]\nimage = \"systemd\"\n[[workload]]\nkind = \"systemd-units\"\nkinds = []\n",
    );
    assert!(empty[0].contains("at least one of"), "{empty:?}");
}

/// Everything here validated once and then failed (or misbehaved) at run time, blamed on
/// the kernel. Each must be refused with its location and the allowed range.
#[test]
fn values_that_cannot_run_are_refused_at_validation() {
    let probe = "[[probe]]\nkind = \"counter\"\nname = \"c\"\npath = \"/proc/meminfo\"\n";
    let cases: &[(&str, &str, &str)] = &[
        ("duration = \"0s\"\n", "scenario.duration", "allowed: 1s to 1day"),
        (
            "duration = \"18446744073709551615s\"\n",
            "scenario.duration",
            "",
        ),
        ("duration = \"25h\"\n", "scenario.duration", "out of range"),
        ("settle = \"2days\"\n", "scenario.settle", "out of range"),
        ("[vm]\nhang_timeout = \"0s\"\n", "vm.hang_timeout", "allowed: 2s"),
        ("[vm]\nhang_timeout = \"1ns\"\n", "vm.hang_timeout", "allowed: 2s"),
        ("[vm]\nmemory = \"1TiB\"\n", "vm.memory", "allowed: 128.0MiB to 64.00GiB"),
        (
            "[vm]\nmemory = \"99999999999999999999EiB\"\n",
            "vm.memory",
            "too large",
        ),
        ("[vm]\ncpus = 0\n", "vm.cpus", "start at 1"),
        ("[vm]\ncpus = 65\n", "vm.cpus", "at most 64"),
        ("[vm]\ncpus = 100000\n", "vm.cpus", "at most 64"),
        ("[vm]\ncmdline = [\"rdinit=/bin/sh\"]\n", "vm.cmdline[0]", "set by the harness"),
        ("[vm]\ncmdline = [\"init=/bin/sh\"]\n", "vm.cmdline[0]", "set by the harness"),
        ("[vm]\ncmdline = [\"panic=10\"]\n", "vm.cmdline[0]", "set by the harness"),
        ("[vm]\ncmdline = [\"kchaos.vm=0\"]\n", "vm.cmdline[0]", "set by the harness"),
        (
            "[[probe]]\nkind = \"counter\"\nname = \"c\"\npath = \"/proc/meminfo\"\ninterval = \"0s\"\n",
            "probe[0].interval",
            "allowed: 1ms",
        ),
        (
            "[[workload]]\nkind = \"cfs-quota\"\nretune_every = \"0s\"\n",
            "workload[0].retune_every",
            "allowed: 1ms",
        ),
        (
            "[[workload]]\nkind = \"cgroup-churn\"\nduration = \"0s\"\n",
            "workload[0].duration",
            "allowed: 1ms",
        ),
        (
            "[[workload]]\nkind = \"exec\"\nargv = [\"/bin/true\"]\nenv = { \"=x\" = \"1\" }\n",
            "workload[0].env",
            "name `=x` is not valid",
        ),
        (
            "[[workload]]\nkind = \"exec\"\nargv = [\"/bin/true\"]\nenv = { \"A\\u0000B\" = \"1\" }\n",
            "workload[0].env",
            "not valid",
        ),
        (
            "[[workload]]\nkind = \"exec\"\nargv = [\"/bin/true\", \"a\\u0000b\"]\n",
            "workload[0].argv",
            "NUL",
        ),
        ("", "scenario.name", "nothing to run"),
    ];
    for (rest, key, why) in cases {
        // Every case is a scenario named `x`; those without a workload get a probe, so
        // only the value under test is wrong.
        let src = format!("[scenario]\nname = \"x\"\n{rest}");
        let src = if src.contains("[[") || why.contains("nothing to run") {
            src
        } else {
            format!("{src}{probe}")
        };
        let errors = parse_err(&src);
        assert!(
            errors
                .iter()
                .any(|e| e.contains(&format!(": {key}: ")) && e.contains(why)),
            "{src}\nwanted `{key}` with `{why}`, got {errors:?}"
        );
    }
}

#[test]
fn the_number_of_workloads_probes_and_checks_is_bounded() {
    let mut src = String::from("[scenario]\nname = \"x\"\n");
    for i in 0..65 {
        src.push_str(&format!(
            "[[probe]]\nkind = \"counter\"\nname = \"c{i}\"\npath = \"/proc/meminfo\"\n"
        ));
    }
    let errors = parse_err(&src);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("65 `[[probe]]` entries; allowed: at most 64")),
        "{errors:?}"
    );
}

#[test]
fn control_characters_in_names_cannot_break_the_one_line_format() {
    let errors =
        parse_err("[scenario]\nname = \"a\\nb\"\n[[probe]]\nkind = \"d-state\"\nname = \"d\"\n");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(!errors[0].contains('\n'), "{errors:?}");
    assert!(errors[0].contains("`a\\nb`"), "{errors:?}");
}

#[test]
fn the_host_is_asked_about_tools_and_memory() {
    struct Small;
    impl Host for Small {
        fn tool(&self, name: &str) -> Result<(), String> {
            if name == "ip" {
                Ok(())
            } else {
                Err("not found in PATH".to_owned())
            }
        }
        fn memory_bytes(&self) -> Option<u64> {
            Some(512 << 20)
        }
    }
    let src = "[scenario]\nname = \"x\"\n[vm]\nmemory = \"1GiB\"\ntools = [\"ip\", \"nope\"]\n[[probe]]\nkind = \"d-state\"\nname = \"d\"\n";
    let errors: Vec<String> = match parse_for("t.toml", src, &Small) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    };
    assert_eq!(
        errors,
        [
            "t.toml:4:10: vm.memory: the VM asks for 1.00GiB but this host has 512.0MiB",
            "t.toml:5:16: vm.tools[1]: `nope`: not found in PATH"
        ]
    );
    assert!(parse("t.toml", src).is_ok(), "the file alone is fine");
}

#[test]
fn probes_are_pinned_only_to_cpus_the_vm_has() {
    let src = |cpus: u32, cpu: u32| {
        format!(
            "[scenario]\nname = \"p\"\n[vm]\ncpus = {cpus}\n[[probe]]\nkind = \"read-latency\"\nname = \"r\"\npath = \"/x\"\ncpu = {cpu}\n[[probe]]\nkind = \"wakeup-latency\"\nname = \"w\"\ncpu = {cpu}\n"
        )
    };
    let s = parse_ok(&src(2, 1));
    assert!(matches!(
        s.probes[0].spec,
        ProbeSpec::ReadLatency { cpu: Some(1), .. }
    ));
    assert!(matches!(
        s.probes[1].spec,
        ProbeSpec::WakeupLatency { cpu: Some(1), .. }
    ));
    let errors = parse_err(&src(1, 1));
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].starts_with("t.toml:9:7: probe[0].cpu: CPU 1 does not exist: the VM has 1"),
        "{errors:?}"
    );
}
