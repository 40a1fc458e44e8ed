use std::path::PathBuf;

use kchaos_model::fingerprint::Fingerprint;
use kchaos_model::scenario::CheckStatus;
use kchaos_model::signature::{LogSource, Severity, SignatureHit};
use kchaos_model::units::Unit;
use kchaos_model::verdict::Verdict;
use serde_json::json;

use super::schema::{Status, TestMisc};
use super::*;
use crate::fixtures::kernel_info;
use crate::results::store::empty_results;
use crate::results::{test_cell, KernelInfo, KnownMatch, RunResults};

const START: &str = "2026-11-23T03:34:00Z";
const RUN: &str = "20261123T033400Z";

fn run_of(dir: &str, cells: Vec<CellResult>) -> LoadedRun {
    let mut results: RunResults = empty_results();
    results.started_at = START.to_owned();
    results.cells = cells;
    LoadedRun {
        dir: PathBuf::from(dir),
        results,
    }
}

fn known(id: &str) -> Option<KnownMatch> {
    Some(KnownMatch {
        id: id.to_owned(),
        link: format!("https://bugs.example/{id}"),
    })
}

fn tests_of<'a>(report: &'a Report, path_prefix: &str) -> Vec<&'a Test> {
    report
        .tests
        .iter()
        .filter(|t| t.path.starts_with(path_prefix))
        .collect()
}

/// Every verdict, failing ones with and without a known issue, maps to exactly one
/// KCIDB status; a known failure keeps FAIL and gets an incident. The table is checked
/// to cover `Verdict::ALL`, so a new verdict cannot go unmapped here.
#[test]
fn the_status_mapping_is_total() {
    let table = [
        (Verdict::Pass, Status::Pass),
        (Verdict::Skip, Status::Skip),
        (Verdict::Fail, Status::Fail),
        (Verdict::Hang, Status::Fail),
        (Verdict::Crash, Status::Fail),
        (Verdict::Error, Status::Error),
    ];
    for v in Verdict::ALL {
        assert_eq!(
            table.iter().filter(|(t, _)| *t == v).count(),
            1,
            "{v} is mapped once"
        );
    }
    for (verdict, expected) in table {
        for is_known in [false, true] {
            let mut cell = test_cell("s/k", verdict, 1e6);
            if is_known {
                cell.known = known("bug-1");
            }
            let report = export(&[run_of("r", vec![cell])], &[], &Options::default()).unwrap();
            let cells = tests_of(&report, "kchaos.s");
            let cell_tests: Vec<_> = cells.iter().filter(|t| t.path == "kchaos.s").collect();
            assert_eq!(cell_tests.len(), 1, "{verdict} known={is_known}");
            let test = cell_tests[0];
            assert_eq!(test.status, expected, "{verdict} known={is_known}");
            let TestMisc::Cell(misc) = &test.misc else {
                panic!("{test:?}")
            };
            assert_eq!(misc.verdict, verdict.as_str());
            // Only a failure can be known: that is what an incident records.
            let incident = is_known && verdict.is_failure();
            assert_eq!(report.incidents.len(), usize::from(incident), "{verdict}");
            assert_eq!(misc.known.is_some(), incident, "{verdict}");
            assert_eq!(report.issues.len(), usize::from(incident), "{verdict}");
        }
    }
    for (status, expected) in [
        (CheckStatus::Pass, Status::Pass),
        (CheckStatus::Fail, Status::Fail),
        (CheckStatus::NoData, Status::Fail),
    ] {
        assert_eq!(check_status(status), expected);
    }
}

/// The same run exported twice, from two sources at once, or with its cells in another
/// order (the database's, which is the order they finished) gives the same bytes.
#[test]
fn exports_of_one_run_are_identical_and_merge() {
    let cells = vec![
        test_cell("memcg/k1", Verdict::Pass, 1e6),
        test_cell("memcg/k2", Verdict::Fail, 6e6),
        test_cell("veth/k1", Verdict::Crash, 1e6),
    ];
    let opts = Options {
        origin: Origin::parse("lab_1").unwrap(),
        base_url: Some(BaseUrl::parse("https://ci.example/{dir}").unwrap()),
    };
    let once = render(&export(&[run_of("r", cells.clone())], &[], &opts).unwrap()).unwrap();
    let again = render(&export(&[run_of("r", cells.clone())], &[], &opts).unwrap()).unwrap();
    assert_eq!(once, again);
    let mut reversed = cells.clone();
    reversed.reverse();
    let reordered = render(&export(&[run_of("r", reversed)], &[], &opts).unwrap()).unwrap();
    assert_eq!(once, reordered);
    let twice = export(
        &[run_of("r", cells.clone()), run_of("r", cells.clone())],
        &[],
        &opts,
    )
    .unwrap();
    assert_eq!(once, render(&twice).unwrap());
    // 3 cells, one check each; 2 kernels.
    assert_eq!(twice.tests.len(), 6);
    assert_eq!(twice.builds.len(), 2);
    assert_eq!(twice.checkouts.len(), 2);
    // Read back, the objects are the ones written.
    let read: Report = serde_json::from_str(&once).unwrap();
    assert_eq!(read, twice);
}

#[test]
fn ids_have_the_documented_form() {
    let mut failing = test_cell("memcg/debian-6.1.0-56-cloud/r2", Verdict::Crash, 6e6);
    failing.known = known("bug-7");
    for (origin, prefix) in [("kchaos", "kchaos:"), ("lab_1", "lab_1:")] {
        let opts = Options {
            origin: Origin::parse(origin).unwrap(),
            base_url: None,
        };
        let report = export(&[run_of("r", vec![failing.clone()])], &[], &opts).unwrap();
        let cell = format!("{prefix}{RUN}:memcg/debian-6.1.0-56-cloud/r2");
        let kernel = format!("{prefix}{RUN}:debian-6.1.0-56-cloud");
        let ids: Vec<&str> = report.tests.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, [cell.clone(), format!("{cell}:lat-p99-le-4ms")]);
        assert_eq!(report.builds[0].id, kernel);
        assert_eq!(report.checkouts[0].id, kernel);
        assert_eq!(report.builds[0].checkout_id, kernel);
        assert!(report.tests.iter().all(|t| t.build_id == kernel));
        assert_eq!(report.issues[0].id, format!("{prefix}bug-7"));
        let incident = &report.incidents[0];
        assert_eq!(incident.id, format!("{cell}:bug-7"));
        assert_eq!(
            (incident.test_id.as_str(), incident.build_id.as_str()),
            (cell.as_str(), kernel.as_str())
        );
        assert_eq!(incident.issue_id, report.issues[0].id);
        assert_eq!(
            report
                .tests
                .iter()
                .map(|t| t.path.as_str())
                .collect::<Vec<_>>(),
            ["kchaos.memcg", "kchaos.memcg.lat-p99-le-4ms"]
        );
    }
}

/// One failing cell with everything recorded, field by field (the example in
/// docs/results.md).
#[test]
fn a_cell_field_by_field() {
    let id = "memcg-dying-cgroups/debian-6.1.0-56-cloud";
    let mut cell = test_cell(id, Verdict::Fail, 6e6);
    cell.kernel = KernelInfo {
        spec: "debian:6.1-cloud".into(),
        resolved: Some("debian:6.1.0-56-cloud".into()),
        release: Some("6.1.0-56-cloud-amd64".into()),
        package: Some("linux-image-6.1.0-56-cloud-amd64-unsigned 6.1.192-2".into()),
        debian: Some(kchaos_images::DebianPackage {
            name: "linux-image-6.1.0-56-cloud-amd64-unsigned".into(),
            version: "6.1.192-2".into(),
            suite: Some("bookworm-security".into()),
        }),
        source: None,
    };
    cell.known = known("bug-7");
    cell.fingerprint = Some(Fingerprint {
        id: "1a2b3c4d".into(),
        title: "WARNING: CPU: N PID: N at mm/memcontrol.c:N".into(),
        frames: vec!["memcg_stat_show".into()],
    });
    let hit = SignatureHit {
        id: "warning".into(),
        severity: Severity::Fail,
        line: "WARNING: CPU: 0 PID: 1 at mm/memcontrol.c:4211".into(),
        source: LogSource::Console,
    };
    // Seen on the console and in kmsg: one line in the excerpt.
    cell.signatures = vec![hit.clone(), hit];
    let issues = [IssueEntry {
        id: "bug-7".into(),
        link: "https://bugs.example/bug-7".into(),
        note: Some("memory.stat walks dying cgroups".into()),
        expires: Some("2027-01-31".into()),
    }];
    let opts = Options {
        origin: Origin::default(),
        base_url: Some(BaseUrl::parse("https://ci.example/kchaos/{dir}").unwrap()),
    };
    let report = export(
        &[run_of("/srv/results/nightly", vec![cell])],
        &issues,
        &opts,
    )
    .unwrap();
    let kernel = format!("kchaos:{RUN}:debian-6.1.0-56-cloud");
    let test = format!("kchaos:{RUN}:{id}");
    let url = format!("https://ci.example/kchaos/nightly/{id}");
    let expected = json!({
        "version": {"major": 5, "minor": 3},
        "checkouts": [{
            "id": kernel, "origin": "kchaos",
            "comment": "Debian linux-image-6.1.0-56-cloud-amd64-unsigned 6.1.192-2 from bookworm-security",
            "valid": true,
            "misc": {"debian": {"package": "linux-image-6.1.0-56-cloud-amd64-unsigned",
                                "version": "6.1.192-2", "suite": "bookworm-security"}}
        }],
        "builds": [{
            "id": kernel, "checkout_id": kernel, "origin": "kchaos",
            "architecture": "x86_64", "config_name": "cloud",
            "comment": "debian:6.1.0-56-cloud", "status": "PASS",
            "misc": {"spec": "debian:6.1-cloud", "resolved": "debian:6.1.0-56-cloud",
                     "release": "6.1.0-56-cloud-amd64"}
        }],
        "tests": [{
            "id": test, "build_id": kernel, "origin": "kchaos",
            "path": "kchaos.memcg-dying-cgroups", "status": "FAIL",
            "comment": "memcg-dying-cgroups on debian:6.1.0-56-cloud, repeat 0: fail (known issue bug-7)",
            "start_time": "2026-11-23T00:00:00Z", "duration": 20.0,
            "environment": {"comment": "QEMU x86_64 VM (tcg)", "misc": {"accel": "tcg"}},
            "log_excerpt": "check `lat.p99 <= 4ms` failed: lat.p99 = 6000000\nfingerprint 1a2b3c4d: WARNING: CPU: N PID: N at mm/memcontrol.c:N\n  memcg_stat_show\nkernel log [warning]: WARNING: CPU: 0 PID: 1 at mm/memcontrol.c:4211\n",
            "log_url": format!("{url}/console.log"),
            "output_files": [
                {"name": "cell.json", "url": format!("{url}/cell.json")},
                {"name": "console.log", "url": format!("{url}/console.log")},
                {"name": "kmsg.log", "url": format!("{url}/kmsg.log")}
            ],
            "misc": {
                "cell": id, "verdict": "fail",
                "reasons": ["check `lat.p99 <= 4ms` failed: lat.p99 = 6000000"],
                "known": {"id": "bug-7", "link": "https://bugs.example/bug-7"},
                "fingerprint": {"id": "1a2b3c4d", "title": "WARNING: CPU: N PID: N at mm/memcontrol.c:N"},
                "scenario_file": "scenarios/memcg-dying-cgroups.toml",
                "seed": 42, "repeat": 0, "boot_ms": 3000
            }
        }, {
            "id": format!("{test}:lat-p99-le-4ms"), "build_id": kernel, "origin": "kchaos",
            "path": "kchaos.memcg-dying-cgroups.lat-p99-le-4ms", "status": "FAIL",
            "comment": "lat.p99 <= 4ms",
            "number": {"value": 0.006, "unit": "s", "prefix": "metric"},
            "log_excerpt": "check `lat.p99 <= 4ms` failed: lat.p99 = 6.00ms (bound <= 4.00ms): the incident's tail\n",
            "misc": {
                "assert": "lat.p99 <= 4ms", "because": "the incident's tail", "op": "<=",
                "bound": {"value": 0.004, "unit": "s", "prefix": "metric"},
                "check_status": "fail", "margin": -0.5
            }
        }],
        "issues": [{
            "id": "kchaos:bug-7", "version": 0, "origin": "kchaos",
            "report_url": "https://bugs.example/bug-7",
            "comment": "memory.stat walks dying cgroups",
            "misc": {"known_issue": "bug-7", "expires": "2027-01-31"}
        }],
        "incidents": [{
            "id": format!("{test}:bug-7"), "origin": "kchaos",
            "issue_id": "kchaos:bug-7", "issue_version": 0,
            "build_id": kernel, "test_id": test, "present": true
        }]
    });
    let actual: serde_json::Value = serde_json::from_str(&render(&report).unwrap()).unwrap();
    assert_eq!(actual, expected, "{}", render(&report).unwrap());
}

/// The one of `items` whose id ends with `label`.
fn ending_in<'a, T>(items: &'a [T], id: fn(&T) -> &String, label: &str) -> &'a T {
    items
        .iter()
        .find(|x| id(x).ends_with(label))
        .unwrap_or_else(|| panic!("no id ending in {label}"))
}

#[test]
fn kernels_say_where_their_source_came_from() {
    const LOCAL: &str = "path:/k/bzImage,tree=net-next,repo=https://git.example/net-next.git,branch=main,commit=0123456789abcdef0123456789abcdef01234567";
    let mut local = test_cell("s/local-6.13.0", Verdict::Pass, 1e6);
    local.kernel = kernel_info(LOCAL, Some(LOCAL), Some("6.13.0"));
    let mut built = test_cell("s/build-defects_6.1.192-2", Verdict::Pass, 1e6);
    built.kernel = kernel_info(
        "build:defects",
        Some("build:defects@6.1.192-2"),
        Some("6.1.192-kchaos"),
    );
    let mut missing = test_cell("s/nowhere", Verdict::Error, 1e6);
    missing.kernel = kernel_info("debian:9.9-cloud", None, None);
    let report = export(
        &[run_of("r", vec![local, built, missing])],
        &[],
        &Options::default(),
    )
    .unwrap();
    let checkout = |label| ending_in(&report.checkouts, |c| &c.id, label);
    let build = |label| ending_in(&report.builds, |b| &b.id, label);
    let c = checkout(":local-6.13.0");
    assert_eq!(c.tree_name.as_deref(), Some("net-next"));
    assert_eq!(
        c.git_repository_url.as_deref(),
        Some("https://git.example/net-next.git")
    );
    assert_eq!(c.git_repository_branch.as_deref(), Some("main"));
    assert_eq!(
        c.git_commit_hash.as_deref(),
        Some("0123456789abcdef0123456789abcdef01234567")
    );
    assert_eq!(c.comment.as_deref(), Some("a local build of 6.13.0"));
    assert_eq!(build(":local-6.13.0").config_name, None);
    let c = checkout(":build-defects_6.1.192-2");
    assert_eq!(c.misc.recipe.as_deref(), Some("defects"));
    assert_eq!(c.misc.source_version.as_deref(), Some("6.1.192-2"));
    assert_eq!(
        build(":build-defects_6.1.192-2").config_name.as_deref(),
        Some("defects")
    );
    // Never resolved: what is unknown is left out, not claimed.
    let c = checkout(":nowhere");
    assert_eq!(c.valid, None);
    assert_eq!(
        c.comment.as_deref(),
        Some("debian:9.9-cloud (not resolved)")
    );
    assert_eq!(build(":nowhere").status, None);
}

#[test]
fn values_carry_their_unit_as_kcidb_shows_it() {
    let n = |unit, value| number(unit, value).map(|n| serde_json::to_value(n).unwrap());
    assert_eq!(
        n(Unit::Ns, 2_300_000.0),
        Some(json!({"value": 0.0023, "unit": "s", "prefix": "metric"}))
    );
    assert_eq!(
        n(Unit::Bytes, 1_048_576.0),
        Some(json!({"value": 1_048_576.0, "unit": "B", "prefix": "binary"}))
    );
    assert_eq!(
        n(Unit::Count, 1000.0),
        Some(json!({"value": 1000.0, "prefix": "metric"}))
    );
    assert_eq!(n(Unit::Ratio, 0.25), Some(json!({"value": 0.25})));
    assert_eq!(n(Unit::Ns, f64::NAN), None);
    assert_eq!(n(Unit::Count, f64::INFINITY), None);
}

#[test]
fn what_cannot_be_named_is_refused() {
    let a = test_cell("s/k", Verdict::Pass, 1e6);
    let mut b = a.clone();
    b.verdict = Verdict::Fail;
    // Two sources claim the same cell of the same run with different outcomes.
    let e = export(
        &[run_of("r1", vec![a.clone()]), run_of("r2", vec![b])],
        &[],
        &Options::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&e, KcidbError::Conflict { kind: "test", id } if id == &format!("kchaos:{RUN}:s/k")),
        "{e}"
    );
    // Two runs, one place for their files.
    let opts = Options {
        origin: Origin::default(),
        base_url: Some(BaseUrl::parse("https://ci.example/r").unwrap()),
    };
    let e = export(
        &[run_of("r1", vec![a.clone()]), run_of("r2", vec![a.clone()])],
        &[],
        &opts,
    )
    .unwrap_err();
    assert!(e.to_string().contains("put {dir} where"), "{e}");
    // A run without a start cannot be named.
    let mut run = run_of("r1", vec![a]);
    run.results.started_at = "soon".into();
    let e = export(&[run], &[], &Options::default()).unwrap_err();
    assert!(
        e.to_string().contains("no valid start time (`soon`)"),
        "{e}"
    );
}

/// A cell that recorded a known issue while the file is not at hand still gets its
/// issue; the file's entries win when both are there.
#[test]
fn issues_come_from_the_file_or_from_the_cells() {
    let mut cell = test_cell("s/k", Verdict::Hang, 1e6);
    cell.known = known("wedge");
    let run = run_of("r", vec![cell]);
    let report = export(std::slice::from_ref(&run), &[], &Options::default()).unwrap();
    assert_eq!(report.issues.len(), 1);
    assert_eq!(
        report.issues[0].report_url.as_deref(),
        Some("https://bugs.example/wedge")
    );
    assert_eq!(report.issues[0].comment, None);
    let entries = [
        IssueEntry {
            id: "wedge".into(),
            link: "https://bugs.example/wedge-moved".into(),
            note: Some("a note".into()),
            expires: None,
        },
        IssueEntry {
            id: "unmatched".into(),
            link: "https://bugs.example/u".into(),
            note: None,
            expires: None,
        },
    ];
    let report = export(&[run], &entries, &Options::default()).unwrap();
    let ids: Vec<&str> = report.issues.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["kchaos:unmatched", "kchaos:wedge"]);
    assert_eq!(
        report.issues[1].report_url.as_deref(),
        Some("https://bugs.example/wedge-moved")
    );
    assert_eq!(report.incidents.len(), 1);
}

/// A kernel on two topologies: one build, a test per cell, each naming its topology in
/// its environment.
#[test]
fn a_topology_is_in_the_test_environment() {
    let cells: Vec<CellResult> = [("1", "cfs/k/topo-1"), ("2s1c", "cfs/k/topo-2s1c")]
        .into_iter()
        .map(|(t, id)| {
            let mut c = test_cell("cfs/k", Verdict::Pass, 1e6);
            id.clone_into(&mut c.id);
            c.topology = Some(t.to_owned());
            c
        })
        .collect();
    let opts = Options {
        origin: Origin::parse("kchaos").unwrap(),
        base_url: None,
    };
    let report = export(&[run_of("r", cells)], &[], &opts).unwrap();
    assert_eq!(
        report.builds.len(),
        1,
        "one kernel, whatever its topologies"
    );
    let envs: Vec<(String, Option<String>)> = tests_of(&report, "kchaos.cfs")
        .into_iter()
        .filter(|t| t.path == "kchaos.cfs")
        .map(|t| {
            let env = t.environment.clone().unwrap();
            (env.comment, env.misc.topology)
        })
        .collect();
    assert_eq!(
        envs,
        [
            (
                "QEMU x86_64 VM (tcg), CPU topology 1".to_owned(),
                Some("1".to_owned())
            ),
            (
                "QEMU x86_64 VM (tcg), CPU topology 2s1c".to_owned(),
                Some("2s1c".to_owned())
            ),
        ]
    );
    let json = render(&report).unwrap();
    assert!(json.contains("\"topology\": \"2s1c\""), "{json}");
}
