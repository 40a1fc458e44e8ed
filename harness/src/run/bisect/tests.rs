//! The bisection loop with a fake builder (commits that build in a given time, or do
//! not build) and fake runs (a bad commit hits with a given probability): the step
//! plan, skips, the runs per step, what each step records, and resuming.

use std::collections::BTreeSet;

use kchaos_model::bisect::plan::PlanOptions;
use kchaos_model::bisect::StepVerdict;
use rand::{Rng, SeedableRng};

use super::*;
use crate::fixtures::{bisect_record, point};

/// Commits `0..len`; the first bad is `first_bad`; `broken` do not build.
struct FakeBuilder {
    broken: BTreeSet<usize>,
    built: Vec<usize>,
    interrupt_at: Option<usize>,
}

impl PointBuilder for FakeBuilder {
    fn prepare(&mut self, index: usize) -> Result<Prepared, BisectRunError> {
        if self.interrupt_at == Some(index) {
            return Err(BisectRunError::Interrupted);
        }
        self.built.push(index);
        let first = self.built.len() == 1;
        let build = StepBuild {
            // The first build is a full one; the rest are incremental.
            seconds: if first { 600.0 } else { 60.0 },
            checkout_seconds: 2.0,
            cached: false,
            compiled: if first { 1348 } else { 3 },
            ccache_hits: Some(0),
            ccache_misses: Some(if first { 1348 } else { 3 }),
            log: Some(format!("/space/commits/{index}/build.log")),
        };
        Ok(Prepared {
            kernel: if self.broken.contains(&index) {
                Err("does not build: commit x does not build (exit status: 2)".into())
            } else {
                Ok(format!(
                    "path:/space/commits/{index}/bzImage,commit={index}"
                ))
            },
            build: Some(build),
        })
    }
}

/// Runs: a bad commit hits with probability `p`; `unbootable` never reach the runner.
struct FakeRunner {
    first_bad: usize,
    p: f64,
    unbootable: BTreeSet<usize>,
    rng: rand_chacha::ChaCha8Rng,
    requests: Vec<(Phase, usize, u32, bool)>,
    interrupt_at: Option<usize>,
}

impl PointRunner for FakeRunner {
    fn run(&mut self, req: &RunRequest<'_>) -> Result<StepRun, BisectRunError> {
        self.requests
            .push((req.phase, req.index, req.runs, req.stop_at_first));
        let mut t = Trials::new(PathBuf::from(&req.dir)).requiring_boot();
        if self.interrupt_at == Some(self.requests.len() - 1) {
            t.interrupted = true;
            return Ok(StepRun {
                trials: t,
                boot_ms: None,
                seconds: 1.0,
            });
        }
        for _ in 0..req.runs {
            if self.unbootable.contains(&req.index) {
                t.errors += 1;
                t.unbooted += 1;
                if t.errors >= 2 {
                    break;
                }
                continue;
            }
            t.runs += 1;
            if req.index >= self.first_bad && self.rng.random_bool(self.p) {
                t.hits += 1;
                if req.stop_at_first {
                    break;
                }
            }
        }
        Ok(StepRun {
            boot_ms: (t.runs > 0).then_some(2100),
            seconds: 10.0 * f64::from(t.runs + t.errors),
            trials: t,
        })
    }
}

/// A bisection over `len` commits not yet calibrated: the shared fixture's, before
/// its calibration (the fixture's options are [`OPTS`]).
fn record(len: usize) -> BisectRecord {
    let points = (0..len).map(|i| point(i, format!("commit {i}"))).collect();
    BisectRecord {
        calibration: None,
        runs_per_step: None,
        ..bisect_record("s.toml", "any", points)
    }
}

const OPTS: PlanOptions = PlanOptions {
    calibrate: 10,
    runs: None,
    confidence: 0.95,
};

struct Run {
    ended: Ended,
    record: BisectRecord,
    journals: usize,
    builder: FakeBuilder,
    runner: FakeRunner,
}

fn bisect(
    len: usize,
    first_bad: usize,
    p: f64,
    broken: &[usize],
    unbootable: &[usize],
    seed: u64,
) -> Run {
    let mut planner = Planner::new(0, len - 1, OPTS).unwrap();
    let mut record = record(len);
    let mut builder = FakeBuilder {
        broken: broken.iter().copied().collect(),
        built: Vec::new(),
        interrupt_at: None,
    };
    let mut runner = FakeRunner {
        first_bad,
        p,
        unbootable: unbootable.iter().copied().collect(),
        rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
        requests: Vec::new(),
        interrupt_at: None,
    };
    let mut journals = 0;
    let ended = drive(
        &mut planner,
        &mut record,
        &mut builder,
        &mut runner,
        &mut |_| {
            journals += 1;
            Ok(())
        },
        &mut |_| {},
    )
    .unwrap();
    Run {
        ended,
        record,
        journals,
        builder,
        runner,
    }
}

#[test]
fn a_defect_in_the_middle_of_17_commits_is_named_in_log2_builds() {
    let run = bisect(17, 9, 1.0, &[], &[], 1);
    let Ended::Finished(Outcome::Found { first_bad, .. }) = run.ended else {
        panic!("{:?}", run.ended)
    };
    assert_eq!(first_bad, 9);
    // The bad end (calibration), the good end, then 4 halvings of 16 commits.
    assert_eq!(run.builder.built, vec![16, 0, 8, 12, 10, 9]);
    let o = run.record.outcome.as_ref().unwrap();
    assert_eq!(
        o.first_bad.as_ref().unwrap().subject.as_deref(),
        Some("commit 9")
    );
    assert_eq!(
        o.last_good.as_ref().unwrap().subject.as_deref(),
        Some("commit 8")
    );
    assert!(run.record.finished_at.is_some());
    // One journal per step and one for the end.
    assert_eq!(run.journals, 7);
    // Calibration spends every run; each later step stops at its first hit.
    assert_eq!(run.runner.requests[0], (Phase::Calibrate, 16, 10, false));
    assert!(run.runner.requests[1..].iter().all(|r| r.2 == 3 && r.3));
    let steps = &run.record.steps;
    assert_eq!(steps.len(), 6);
    assert_eq!(steps[2].verdict, StepVerdict::Good);
    assert_eq!((steps[2].runs, steps[2].hits), (3, 0));
    assert_eq!(steps[3].verdict, StepVerdict::Bad);
    assert_eq!((steps[3].runs, steps[3].hits), (1, 1));
    assert_eq!(steps[3].confidence, Some(1.0));
    assert!(steps[2].confidence.is_some_and(|c| c > 0.97 && c < 1.0));
    assert_eq!(steps[3].results.as_deref(), Some("step-12"));
    assert_eq!(steps[3].boot_ms, Some(2100));
    assert_eq!(steps[0].build.as_ref().map(|b| b.compiled), Some(1348));
    let totals = run.record.totals;
    assert_eq!((totals.steps, totals.builds), (6, 6));
    assert!((totals.build_seconds - (600.0 + 5.0 * 60.0 + 6.0 * 2.0)).abs() < 1e-9);
    assert_eq!(run.record.runs_per_step, Some(3));
    assert_eq!(
        run.record.calibration.map(|c| (c.hits, c.runs)),
        Some((10, 10))
    );
}

#[test]
fn a_flaky_defect_gets_the_runs_its_probability_calls_for() {
    // p = 0.5: calibration measures about that, the plan gives each step ~12 runs.
    let mut right = 0;
    for seed in 0..30 {
        let run = bisect(20, 13, 0.5, &[], &[], seed);
        if matches!(
            run.ended,
            Ended::Finished(Outcome::Found { first_bad: 13, .. })
        ) {
            right += 1;
        }
        if let Some(per_step) = run.record.runs_per_step {
            assert!(per_step >= 5, "seed {seed}: {per_step} runs per step");
            // Good steps ran every planned run.
            for s in run
                .record
                .steps
                .iter()
                .filter(|s| s.verdict == StepVerdict::Good)
            {
                assert_eq!(s.runs, per_step);
            }
        }
    }
    assert!(right >= 27, "{right}/30 right");
}

#[test]
fn a_commit_that_does_not_build_or_boot_is_skipped_never_good() {
    let run = bisect(17, 10, 1.0, &[8], &[11], 1);
    let Ended::Finished(Outcome::Found {
        first_bad,
        last_good,
        ..
    }) = run.ended
    else {
        panic!("{:?}", run.ended)
    };
    assert_eq!((first_bad, last_good), (10, 9));
    let verdicts: Vec<(usize, StepVerdict)> = run
        .record
        .steps
        .iter()
        .map(|s| (s.index, s.verdict))
        .collect();
    use StepVerdict::{Bad, Good, Skip};
    assert_eq!(
        verdicts,
        vec![
            (16, Bad),
            (0, Good),
            (8, Skip),
            (7, Good),
            (11, Skip),
            (10, Bad),
            (9, Good)
        ]
    );
    let unbuilt = &run.record.steps[2];
    assert!(unbuilt
        .why
        .as_deref()
        .is_some_and(|w| w.contains("does not build")));
    assert_eq!(unbuilt.runs, 0);
    assert_eq!(unbuilt.results, None, "nothing ran");
    let unbooted = &run.record.steps[4];
    assert!(unbooted
        .why
        .as_deref()
        .is_some_and(|w| w.contains("did not boot")));
    // When the skips hide the boundary, the answer is "one of".
    let run = bisect(17, 9, 1.0, &[8, 9], &[], 1);
    let o = run.record.outcome.unwrap();
    assert_eq!(o.kind, "ambiguous");
    let subjects: Vec<_> = o
        .candidates
        .iter()
        .filter_map(|p| p.subject.clone())
        .collect();
    assert_eq!(subjects, ["commit 8", "commit 9", "commit 10"]);
}

#[test]
fn an_interrupted_bisection_resumes_from_its_record() {
    let whole = bisect(17, 9, 1.0, &[8], &[], 3);
    for interrupt_at in 1..5 {
        // Interrupted in the runs of step `interrupt_at` (or, odd steps, in its build).
        let mut planner = Planner::new(0, 16, OPTS).unwrap();
        let mut rec = record(17);
        let in_build = interrupt_at % 2 == 1 || whole.record.steps[interrupt_at].results.is_none();
        let index_at = whole.record.steps[interrupt_at].index;
        let mut builder = FakeBuilder {
            broken: [8].into(),
            built: Vec::new(),
            interrupt_at: in_build.then_some(index_at),
        };
        let mut runner = FakeRunner {
            first_bad: 9,
            p: 1.0,
            unbootable: BTreeSet::new(),
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(3),
            requests: Vec::new(),
            interrupt_at: None,
        };
        // The steps before the interrupted one ran (a broken commit makes no request).
        let runs_before = whole.record.steps[..interrupt_at]
            .iter()
            .filter(|s| s.results.is_some())
            .count();
        runner.interrupt_at = (!in_build).then_some(runs_before);
        let mut saved = None;
        let ended = drive(
            &mut planner,
            &mut rec,
            &mut builder,
            &mut runner,
            &mut |r| {
                saved = Some(r.clone());
                Ok(())
            },
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(ended, Ended::Interrupted, "at {interrupt_at}");
        let saved = saved.unwrap();
        assert_eq!(saved.steps.len(), interrupt_at);
        assert_eq!(saved.outcome, None);

        // Resume: a new plan replays the record and goes on from the interrupted step.
        let mut resumed = Planner::new(saved.good, saved.bad, OPTS).unwrap();
        resumed
            .replay(saved.steps.iter().map(|s| (s.phase, s.index, &s.observed)))
            .unwrap();
        let mut rec = saved.clone();
        let mut builder = FakeBuilder {
            broken: [8].into(),
            built: Vec::new(),
            interrupt_at: None,
        };
        runner.interrupt_at = None;
        let ended = drive(
            &mut resumed,
            &mut rec,
            &mut builder,
            &mut runner,
            &mut |_| Ok(()),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(ended, whole.ended, "at {interrupt_at}");
        assert_eq!(
            builder.built.first(),
            Some(&index_at),
            "it starts at the interrupted step"
        );
        let points: Vec<usize> = rec.steps.iter().map(|s| s.index).collect();
        let want: Vec<usize> = whole.record.steps.iter().map(|s| s.index).collect();
        assert_eq!(points, want, "no step is lost or repeated");
    }
}

#[test]
fn a_journal_that_cannot_be_written_stops_the_bisection() {
    let mut planner = Planner::new(0, 4, OPTS).unwrap();
    let mut rec = record(5);
    let mut builder = FakeBuilder {
        broken: BTreeSet::new(),
        built: Vec::new(),
        interrupt_at: None,
    };
    let mut runner = FakeRunner {
        first_bad: 2,
        p: 1.0,
        unbootable: BTreeSet::new(),
        rng: rand_chacha::ChaCha8Rng::seed_from_u64(0),
        requests: Vec::new(),
        interrupt_at: None,
    };
    let e = drive(
        &mut planner,
        &mut rec,
        &mut builder,
        &mut runner,
        &mut |_| Err("disk full".into()),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("disk full"), "{e}");
}

#[test]
fn step_directories_name_their_phase_and_point() {
    assert_eq!(step_dir(Phase::Calibrate, 16), "calibrate-16");
    assert_eq!(step_dir(Phase::CheckGood, 0), "good-0");
    assert_eq!(step_dir(Phase::Bisect, 8), "step-8");
}

#[test]
fn a_list_builder_hands_out_its_specs() {
    let mut b = ListBuilder {
        specs: vec![
            "debian:6.1.0-53-cloud".into(),
            "debian:6.1.0-56-cloud".into(),
        ],
    };
    assert_eq!(
        b.prepare(1).unwrap().kernel,
        Ok("debian:6.1.0-56-cloud".to_owned())
    );
    assert!(matches!(b.prepare(2), Err(BisectRunError::Host(_))));
}

#[test]
fn an_interrupted_steps_directory_is_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    let step = dir.path().join("step-8");
    std::fs::create_dir(&step).unwrap();
    std::fs::write(step.join("results.json"), "{}").unwrap();
    set_aside(&step).unwrap();
    assert!(!step.exists());
    assert!(dir
        .path()
        .join("step-8.interrupted-1/results.json")
        .exists());
    std::fs::create_dir(&step).unwrap();
    set_aside(&step).unwrap();
    assert!(dir.path().join("step-8.interrupted-2").exists());
    set_aside(&step).unwrap();
}
