use rand::{Rng, SeedableRng};

use super::*;
use crate::stats;

const OPTS: PlanOptions = PlanOptions {
    calibrate: 10,
    runs: None,
    confidence: 0.95,
};

/// A fake point: its per-run reproduction probability, or `None` when it cannot be
/// built or booted.
type Oracle = dyn Fn(usize) -> Option<f64>;

/// Drives a planner to its end with `oracle` and a seeded random source, the way the
/// harness does with real builds and runs; returns the outcome and every step taken
/// (phase, point, what it saw).
fn drive(
    good: usize,
    bad: usize,
    opts: PlanOptions,
    oracle: &Oracle,
    seed: u64,
) -> (Outcome, Vec<(Phase, usize, Observed)>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut planner = Planner::new(good, bad, opts).unwrap();
    let mut steps = Vec::new();
    loop {
        match planner.next() {
            Action::Finished(o) => return (o, steps),
            Action::Run {
                phase,
                index,
                runs,
                stop_at_first,
            } => {
                let observed = match oracle(index) {
                    None => Observed::Skipped {
                        why: "build failed".into(),
                    },
                    Some(p) => {
                        let (mut made, mut hits) = (0, 0);
                        while made < runs && !(stop_at_first && hits > 0) {
                            made += 1;
                            hits += u32::from(rng.random_bool(p));
                        }
                        Observed::Judged { runs: made, hits }
                    }
                };
                planner.record(&observed).unwrap();
                steps.push((phase, index, observed));
            }
        }
    }
}

/// A range whose first bad point is `first_bad`, reproducing with probability `p`,
/// with the points in `broken` unbuildable.
fn range(first_bad: usize, p: f64, broken: &'static [usize]) -> Box<Oracle> {
    Box::new(move |i| {
        if broken.contains(&i) {
            None
        } else if i >= first_bad {
            Some(p)
        } else {
            Some(0.0)
        }
    })
}

fn points(steps: &[(Phase, usize, Observed)]) -> Vec<usize> {
    steps.iter().map(|s| s.1).collect()
}

#[test]
fn a_certain_defect_is_found_in_log2_steps_after_calibration_and_the_good_check() {
    // 17 commits, good = #0, bad = #16, the defect at #9.
    let (outcome, steps) = drive(0, 16, OPTS, &*range(9, 1.0, &[]), 1);
    match outcome {
        Outcome::Found {
            first_bad,
            last_good,
            confidence,
        } => {
            assert_eq!((first_bad, last_good), (9, 8));
            // One good step (#8) of 3 runs at p >= 0.722 (10/10's 95% lower bound).
            let lo = stats::wilson(10, 10, stats::Z95).0;
            assert!((confidence - (1.0 - (1.0 - lo).powi(3))).abs() < 1e-12);
            assert!(confidence > 0.97, "{confidence}");
        }
        other => panic!("{other:?}"),
    }
    // Calibration on #16 (all 10 runs), the good end, then 4 halvings.
    assert_eq!(points(&steps), vec![16, 0, 8, 12, 10, 9]);
    assert_eq!(steps[0].2, Observed::Judged { runs: 10, hits: 10 });
    assert_eq!(steps[0].0, Phase::Calibrate);
    // p = 10/10, whose 95% lower bound is 0.72: 3 runs per step for 95%, and a bad
    // point stops at its first hit.
    assert_eq!(steps[1].2, Observed::Judged { runs: 3, hits: 0 });
    assert_eq!(steps[3].2, Observed::Judged { runs: 1, hits: 1 });
}

#[test]
fn runs_per_step_follow_the_measured_probability() {
    // (hits in 10 calibration runs, --runs, --confidence, runs per step)
    let table = [
        (10, None, 0.95, 3),
        (5, None, 0.95, 12),
        (5, None, 0.99, 18),
        (2, None, 0.95, 52),
        (5, Some(4), 0.95, 4),
    ];
    for (hits, runs, confidence, want) in table {
        let mut p = Planner::new(
            0,
            8,
            PlanOptions {
                calibrate: 10,
                runs,
                confidence,
            },
        )
        .unwrap();
        p.record(&Observed::Judged { runs: 10, hits }).unwrap();
        assert_eq!(p.runs_per_step(), Some(want), "{hits}/10 at {confidence}");
        let lo = p.p_low();
        assert!(miss_probability(lo, want) <= 1.0 - confidence || runs.is_some());
        assert_eq!(
            p.next(),
            Action::Run {
                phase: Phase::CheckGood,
                index: 0,
                runs: want,
                stop_at_first: true
            }
        );
    }
}

#[test]
fn a_flaky_defect_is_still_named_with_the_computed_runs() {
    // p = 0.4 per run: the plan's runs per step make the answer right almost always.
    let right = (0..100)
        .filter(|&seed| {
            matches!(
                drive(0, 20, OPTS, &*range(13, 0.4, &[]), seed).0,
                Outcome::Found { first_bad: 13, .. }
            )
        })
        .count();
    assert!(right >= 90, "{right}/100");
    // The stated confidence is a lower bound of what happened.
    let (outcome, steps) = drive(0, 20, OPTS, &*range(13, 0.4, &[]), 7);
    let Outcome::Found { confidence, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(confidence > 0.5 && confidence < 1.0, "{confidence}");
    let per_step = steps
        .iter()
        .filter(|s| s.0 == Phase::CheckGood)
        .map(|s| match s.2 {
            Observed::Judged { runs, .. } => runs,
            Observed::Skipped { .. } => 0,
        })
        .next();
    assert!(per_step.is_some_and(|r| r > 3), "{per_step:?}");
}

#[test]
fn endpoints_that_cannot_be_judged_or_disagree_end_the_procedure() {
    // (oracle, outcome wanted)
    let cases: Vec<(Box<Oracle>, &str)> = vec![
        (range(5, 1.0, &[16]), "EndUntestable { phase: Calibrate"),
        (range(5, 1.0, &[0]), "EndUntestable { phase: CheckGood"),
        (range(0, 1.0, &[]), "GoodReproduces"),
        (range(5, 0.0, &[]), "BadDoesNotReproduce { runs: 10 }"),
    ];
    for (oracle, want) in cases {
        let (outcome, _) = drive(0, 16, OPTS, &*oracle, 3);
        let text = format!("{outcome:?}");
        assert!(text.starts_with(want), "{text}, wanted {want}");
    }
}

#[test]
fn an_unbuildable_commit_is_skipped_and_a_neighbour_tried() {
    let (outcome, steps) = drive(0, 16, OPTS, &*range(9, 1.0, &[12]), 1);
    assert!(
        matches!(
            outcome,
            Outcome::Found {
                first_bad: 9,
                last_good: 8,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(points(&steps), vec![16, 0, 8, 12, 11, 9]);
    assert_eq!(
        verdict_of(&steps[3].2),
        StepVerdict::Skip,
        "the build failure is a skip, never good"
    );
    // When skips hide the boundary, the answer says so: #8 and #9 do not build, #10
    // is bad, #7 good.
    let (outcome, _) = drive(0, 16, OPTS, &*range(9, 1.0, &[8, 9]), 1);
    match outcome {
        Outcome::Ambiguous {
            candidates,
            last_good,
            ..
        } => assert_eq!((candidates, last_good), (vec![8, 9, 10], 7)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_recorded_bisection_resumes_where_it_stopped() {
    let oracle = range(11, 0.5, &[6]);
    let (outcome, steps) = drive(0, 24, OPTS, &*oracle, 5);
    for cut in 0..steps.len() {
        let mut resumed = Planner::new(0, 24, OPTS).unwrap();
        resumed
            .replay(steps[..cut].iter().map(|(ph, i, o)| (*ph, *i, o)))
            .unwrap();
        // It asks for exactly the step that was next, and then ends the same way.
        let Action::Run { phase, index, .. } = resumed.next() else {
            panic!("over too early at {cut}")
        };
        assert_eq!((phase, index), (steps[cut].0, steps[cut].1));
        resumed
            .replay(steps[cut..].iter().map(|(ph, i, o)| (*ph, *i, o)))
            .unwrap();
        assert_eq!(resumed.next(), Action::Finished(outcome.clone()));
    }
}

#[test]
fn steps_of_another_bisection_are_refused() {
    let mut p = Planner::new(0, 16, OPTS).unwrap();
    let calibrated = Observed::Judged { runs: 10, hits: 9 };
    let good = Observed::Judged { runs: 3, hits: 0 };
    let e = p
        .replay([
            (Phase::Calibrate, 16, &calibrated),
            (Phase::CheckGood, 0, &good),
            (Phase::Bisect, 5, &good),
        ])
        .unwrap_err();
    assert!(
        matches!(
            e,
            PlanError::Diverged {
                step: 2,
                recorded: 5,
                wanted: 8,
                ..
            }
        ),
        "{e}"
    );
    let mut done = Planner::new(0, 1, OPTS).unwrap();
    done.replay([
        (Phase::Calibrate, 1, &calibrated),
        (Phase::CheckGood, 0, &good),
    ])
    .unwrap();
    assert!(matches!(
        done.next(),
        Action::Finished(Outcome::Found { first_bad: 1, .. })
    ));
    assert_eq!(done.record(&good), Err(PlanError::Finished));
}

#[test]
fn bad_options_are_refused() {
    let bad_confidence = PlanOptions {
        confidence: 1.0,
        ..OPTS
    };
    assert!(Planner::new(0, 4, bad_confidence).is_err());
    let no_calibration = PlanOptions {
        calibrate: 0,
        ..OPTS
    };
    assert_eq!(
        Planner::new(0, 4, no_calibration).unwrap_err(),
        PlanError::NoCalibration
    );
    assert!(Planner::new(4, 4, OPTS).is_err());
}

#[test]
fn step_confidence_is_certain_for_bad_and_bounded_for_good() {
    let mut p = Planner::new(0, 8, OPTS).unwrap();
    p.record(&Observed::Judged { runs: 10, hits: 5 }).unwrap();
    let lo = p.p_low();
    assert_eq!(p.step_confidence(StepVerdict::Bad, 1), Some(1.0));
    let good = p.step_confidence(StepVerdict::Good, 12).unwrap();
    assert!((good - (1.0 - (1.0 - lo).powi(12))).abs() < 1e-12);
    assert!(good >= 0.95);
    assert_eq!(p.step_confidence(StepVerdict::Skip, 0), None);
    let (hits, runs, prob, (l, h)) = p.calibration().unwrap();
    assert_eq!((hits, runs, prob), (5, 10, 0.5));
    assert!(l < 0.5 && h > 0.5 && (l - lo).abs() < 1e-12);
}
