//! Known-issue files, valid and not, and which cells their entries describe.

use super::*;

fn list() -> KernelList {
    KernelList::parse(
        Path::new("kernels.toml"),
        "[kernels.deb61]\nspec = \"debian:6.1-cloud\"\n[kernels.deb612]\nspec = \"debian:6.12-cloud\"\n[sets]\nnightly = [\"deb61\", \"deb612\"]\n",
    )
    .unwrap()
}

fn parse(text: &str) -> Result<KnownIssues, KnownError> {
    KnownIssues::parse("known-issues.toml", text, &list())
}

const FILE: &str = r#"
[[issue]]
id = "cfs-double-fault"
link = "https://bugs.example/1"
scenario = "cfs-*"
kernel = "deb612"
verdict = ["crash"]
match = "double fault"
expires = "2027-01-31"

[[issue]]
id = "old-veth-leak"
link = "https://bugs.example/2"
scenario = "veth-*"
kernel = "<6.2"
match = "unregister_netdevice"
expires = "2026-01-01"

[[issue]]
id = "anything-on-rt"
link = "https://bugs.example/3"
kernel = "debian:*-rt"
"#;

fn cell<'a>(
    scenario: &'a str,
    verdict: Verdict,
    spec: &'a str,
    release: &'a str,
    texts: &'a [&'a str],
) -> CellFacts<'a> {
    CellFacts {
        scenario,
        verdict,
        spec,
        resolved: None,
        release: Some(release),
        texts,
    }
}

#[test]
fn entries_match_by_scenario_kernel_verdict_and_text() {
    let known = parse(FILE).unwrap();
    let today = Day::parse("2026-11-28").unwrap();
    let df = ["Oops: double fault in __kmalloc_noprof"];
    let id = |t: Triage| match t {
        Triage::Known(m) => m.id,
        other => format!("{other:?}"),
    };
    for (facts, want) in [
        (
            cell(
                "cfs-quota-starvation",
                Verdict::Crash,
                "debian:6.12-cloud",
                "6.12.117+deb12-cloud-amd64",
                &df,
            ),
            "cfs-double-fault",
        ),
        // Wrong kernel, wrong verdict, wrong text: untriaged.
        (
            cell(
                "cfs-quota-starvation",
                Verdict::Crash,
                "debian:6.1-cloud",
                "6.1.0-56-cloud-amd64",
                &df,
            ),
            "Untriaged",
        ),
        (
            cell(
                "cfs-quota-starvation",
                Verdict::Fail,
                "debian:6.12-cloud",
                "6.12.117+deb12-cloud-amd64",
                &df,
            ),
            "Untriaged",
        ),
        (
            cell(
                "cfs-quota-starvation",
                Verdict::Crash,
                "debian:6.12-cloud",
                "6.12.117",
                &["general protection fault"],
            ),
            "Untriaged",
        ),
        // A glob over the spec, any failing verdict, any text.
        (
            cell(
                "memcg-dying-cgroups",
                Verdict::Hang,
                "debian:6.12-rt",
                "6.12.117-rt-amd64",
                &[],
            ),
            "anything-on-rt",
        ),
        // Passing cells are never triaged.
        (
            cell(
                "memcg-dying-cgroups",
                Verdict::Pass,
                "debian:6.12-rt",
                "6.12.117-rt-amd64",
                &[],
            ),
            "NotAFailure",
        ),
    ] {
        assert_eq!(id(known.triage(&facts, today)), want, "{facts:?}");
    }
    // An expired entry no longer matches, and says so.
    let leak = ["unregister_netdevice: waiting for veth3 to become free. Usage count = 1"];
    let leaked = cell(
        "veth-netns-storm",
        Verdict::Fail,
        "debian:6.1-cloud",
        "6.1.0-56-cloud-amd64",
        &leak,
    );
    assert_eq!(
        known.triage(&leaked, today),
        Triage::Expired(vec!["old-veth-leak".into()])
    );
    let before = Day::parse("2025-12-31").unwrap();
    assert_eq!(id(known.triage(&leaked, before)), "old-veth-leak");
}

#[test]
fn the_summary_names_matched_possibly_fixed_and_expired_entries() {
    let known = parse(FILE).unwrap();
    let triaged = [
        Triage::Known(KnownMatch {
            id: "cfs-double-fault".into(),
            link: String::new(),
        }),
        Triage::Known(KnownMatch {
            id: "cfs-double-fault".into(),
            link: String::new(),
        }),
        Triage::Expired(vec!["old-veth-leak".into()]),
        Triage::Untriaged,
    ];
    let s = TriageSummary::of(&known, &triaged);
    assert_eq!(s.matched.get("cfs-double-fault"), Some(&2));
    assert_eq!(s.expired, ["old-veth-leak"]);
    assert_eq!(s.possibly_fixed, ["anything-on-rt"]);
}

#[test]
fn every_problem_is_located() {
    let bad = r#"
[[issue]]
id = "a"
link = "not a link"
scenario = "[unclosed"
kernel = "@nosuchset"
verdict = ["pass"]
match = "(unclosed"
expires = "tomorrow"

[[issue]]
id = "a"
link = "https://x"
"#;
    let Err(KnownError::Invalid(errors)) = parse(bad) else {
        panic!("expected errors")
    };
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    for want in [
        "known-issues.toml:4:8: issue[0].link: `not a link` is not a link",
        "known-issues.toml:5:12: issue[0].scenario: not a glob",
        "known-issues.toml:6:10: issue[0].kernel: No kernel set `nosuchset`",
        "known-issues.toml:7:11: issue[0].verdict: `pass` is not a failing verdict",
        "known-issues.toml:8:9: issue[0].match: not a valid regular expression",
        "known-issues.toml:9:11: issue[0].expires: `tomorrow` is not a date",
        "known-issues.toml:12:6: issue[1].id: `a` is used by an earlier entry",
        "issue[1].id: `a` would match every failure",
    ] {
        assert!(
            text.iter().any(|t| t.contains(want)),
            "wanted `{want}` in {text:#?}"
        );
    }
    let Err(KnownError::Invalid(errors)) = parse("[[issue]]\nid = \"x\"\nlnk = \"y\"\n") else {
        panic!("expected errors")
    };
    assert!(
        errors[0].to_string().contains("unknown key `lnk`"),
        "{}",
        errors[0]
    );
}

#[test]
fn days_are_civil_dates() {
    assert_eq!(Day::from_unix_days(0).to_string(), "1970-01-01");
    assert_eq!(Day::from_unix_days(20_420).to_string(), "2025-11-28");
    assert_eq!(Day::from_unix_days(11_016).to_string(), "2000-02-29");
    assert!(Day::parse("2026-13-01").is_none() && Day::parse("2026-1-1x").is_none());
    assert!(Day::parse("2027-01-31").unwrap() > Day::parse("2026-12-31").unwrap());
}
