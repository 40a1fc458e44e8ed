use std::path::PathBuf;

use kchaos_images::SourceCommit;

use super::*;
use crate::fixtures::{bisect_record, point, step_record};
use crate::results::test_cell;

fn on_commit(id: &str, verdict: Verdict, commit: Option<&str>, dirty: bool) -> CellResult {
    let mut c = test_cell(id, verdict, 1e6);
    c.kernel.source = commit.map(|h| SourceCommit {
        commit: h.to_owned(),
        describe: Some(format!("v6.1-3-g{h}")),
        dirty,
    });
    c
}

#[test]
fn two_recorded_runs_give_the_commit_range() {
    use Verdict::{Error, Fail, Pass, Skip};
    let any = Target::parse("any");
    let s = "memcg";
    let pass = |c| on_commit("memcg/k", Pass, c, false);
    let fail = |c| on_commit("memcg/k", Fail, c, false);
    // (good cells, bad cells, range or the error's words)
    type Row = (
        Vec<CellResult>,
        Vec<CellResult>,
        Result<(&'static str, &'static str), &'static str>,
    );
    let table: Vec<Row> = vec![
        (
            vec![pass(Some("aaa"))],
            vec![fail(Some("bbb"))],
            Ok(("aaa", "bbb")),
        ),
        // Repeats on one kernel, a passing repeat in the bad run, errors and skips:
        // judged hits decide.
        (
            vec![
                pass(Some("aaa")),
                pass(Some("aaa")),
                on_commit("memcg/k", Error, None, false),
            ],
            vec![
                fail(Some("bbb")),
                pass(Some("bbb")),
                on_commit("memcg/k", Skip, None, false),
            ],
            Ok(("aaa", "bbb")),
        ),
        // Other scenarios in the runs do not count.
        (
            vec![
                pass(Some("aaa")),
                on_commit("cfs/k", Fail, Some("zzz"), false),
            ],
            vec![
                fail(Some("bbb")),
                on_commit("cfs/k", Pass, Some("yyy"), false),
            ],
            Ok(("aaa", "bbb")),
        ),
        (
            vec![fail(Some("aaa"))],
            vec![fail(Some("bbb"))],
            Err("cannot be the good end"),
        ),
        (
            vec![pass(Some("aaa"))],
            vec![pass(Some("bbb"))],
            Err("verdicts: pass"),
        ),
        (
            vec![pass(None)],
            vec![fail(Some("bbb"))],
            Err("records no source commit"),
        ),
        (
            vec![pass(Some("aaa"))],
            vec![on_commit("memcg/k", Fail, Some("bbb"), true)],
            Err("modified tree (v6.1-3-gbbb)"),
        ),
        (
            vec![pass(Some("aaa")), pass(Some("ccc"))],
            vec![fail(Some("bbb"))],
            Err("different commits (aaa, ccc)"),
        ),
        (
            vec![],
            vec![fail(Some("bbb"))],
            Err("the good run has no cell"),
        ),
        (
            vec![pass(Some("aaa"))],
            vec![on_commit("cfs/k", Fail, Some("bbb"), false)],
            Err("the bad run has no cell"),
        ),
    ];
    for (i, (good, bad, want)) in table.into_iter().enumerate() {
        let got = range_from_runs(s, &any, &good, &bad);
        match (got, want) {
            (Ok((g, b)), Ok((wg, wb))) => assert_eq!((g.as_str(), b.as_str()), (wg, wb), "row {i}"),
            (Err(e), Err(words)) => assert!(e.to_string().contains(words), "row {i}: {e}"),
            (got, want) => panic!("row {i}: {got:?}, wanted {want:?}"),
        }
    }
}

fn trials(runs: u32, hits: u32, errors: u32, unbooted: u32, skipped: Option<&str>) -> Trials {
    let mut t = Trials::new(PathBuf::new()).requiring_boot();
    t.runs = runs;
    t.hits = hits;
    t.errors = errors;
    t.unbooted = unbooted;
    t.skipped = skipped.map(str::to_owned);
    t
}

#[test]
fn a_step_that_judged_nothing_is_a_skip_saying_why() {
    // (trials, observed or the skip's words)
    type Row = (Trials, Result<(u32, u32), &'static str>);
    let table: Vec<Row> = vec![
        (trials(3, 0, 0, 0, None), Ok((3, 0))),
        (trials(1, 1, 2, 2, None), Ok((1, 1))),
        (trials(0, 0, 2, 2, None), Err("did not boot (2 runs)")),
        (
            trials(0, 0, 2, 0, None),
            Err("infrastructure error (2 runs)"),
        ),
        (
            trials(0, 0, 0, 0, Some("requires CONFIG_MEMCG")),
            Err("skips on this kernel: requires CONFIG_MEMCG"),
        ),
    ];
    for (t, want) in table {
        match (observe(&t), want) {
            (Observed::Judged { runs, hits }, Ok(w)) => assert_eq!((runs, hits), w),
            (Observed::Skipped { why }, Err(words)) => assert!(why.contains(words), "{why}"),
            (got, want) => panic!("{got:?}, wanted {want:?}"),
        }
    }
}

/// Five commits, 0 good and 4 bad.
fn record() -> BisectRecord {
    let points = (0..5).map(|n| point(n, format!("commit {n}"))).collect();
    bisect_record("s.toml", "any", points)
}

#[test]
fn the_outcome_is_recorded_in_words_with_the_points() {
    let mut r = record();
    r.finish(
        &Outcome::Found {
            first_bad: 2,
            last_good: 1,
            confidence: 0.978,
        },
        "2026-12-07T01:00:00Z".into(),
    );
    let o = r.outcome.clone().unwrap();
    assert_eq!(o.kind, "found");
    assert_eq!(o.first_bad.unwrap().subject.as_deref(), Some("commit 2"));
    assert_eq!(
        o.message,
        "first bad: 000000000000 (commit 2) (last good: 000000000000 (commit 1)); confidence >= 0.978 at p >= 0.72"
    );
    // (outcome, kind, words)
    let table = [
        (
            Outcome::Ambiguous {
                candidates: vec![2, 3],
                last_good: 1,
                confidence: 0.9,
            },
            "ambiguous",
            "first bad is one of 000000000000 (commit 2), 000000000000 (commit 3)",
        ),
        (
            Outcome::BadDoesNotReproduce { runs: 10 },
            "bad-does-not-reproduce",
            "did not reproduce in 10 runs",
        ),
        (
            Outcome::GoodReproduces { hits: 1, runs: 3 },
            "good-reproduces",
            "(commit 0) reproduces too (1/3 runs)",
        ),
        (
            Outcome::EndUntestable {
                phase: Phase::Calibrate,
                why: "does not build".into(),
            },
            "end-untestable",
            "(commit 4) could not be judged: does not build",
        ),
        (
            Outcome::ProbabilityTooLow { p_low: 0.0001 },
            "probability-too-low",
            "give --runs",
        ),
    ];
    for (outcome, kind, words) in table {
        let mut r = record();
        r.finish(&outcome, "t".into());
        let o = r.outcome.unwrap();
        assert_eq!(o.kind, kind);
        assert!(o.message.contains(words), "{}", o.message);
    }
}

#[test]
fn steps_add_up_and_the_record_reads_back() {
    let mut r = record();
    let step = |cached: bool, seconds: f64| {
        let build = StepBuild {
            seconds,
            checkout_seconds: 1.0,
            cached,
            compiled: 4,
            ccache_hits: Some(1),
            ccache_misses: Some(3),
            log: None,
        };
        step_record(Phase::Bisect, 2, &r.points[2], StepVerdict::Good, build)
    };
    let (built, found) = (step(false, 60.0), step(true, 0.0));
    r.push(built);
    r.push(found);
    assert_eq!(r.totals.steps, 2);
    assert_eq!(r.totals.builds, 1, "a commit found built is no build");
    assert!((r.totals.build_seconds - 62.0).abs() < 1e-9);
    assert!((r.totals.run_seconds - 60.0).abs() < 1e-9);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(FILE), serde_json::to_vec(&r).unwrap()).unwrap();
    assert_eq!(BisectRecord::load(dir.path()).unwrap(), r);
    assert!(BisectRecord::load(&dir.path().join("nope")).is_err());
}

#[test]
fn durations_read_as_seconds_then_minutes() {
    // (seconds, text): 239.6 s once read "3m60s".
    for (s, want) in [
        (0.4, "0s"),
        (46.2, "46s"),
        (89.4, "89s"),
        (89.6, "1m30s"),
        (239.6, "4m00s"),
        (4127.3, "68m47s"),
        (-1.0, "0s"),
    ] {
        assert_eq!(duration_text(s), want, "{s}");
    }
}

#[test]
fn commit_hashes_are_shown_short_and_specs_whole() {
    assert_eq!(short(&"a".repeat(40)), "aaaaaaaaaaaa");
    assert_eq!(short("debian:6.1.0-56-cloud"), "debian:6.1.0-56-cloud");
}
