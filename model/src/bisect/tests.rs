use rand::{Rng, SeedableRng};

use super::*;

#[test]
fn runs_needed_follows_the_geometric_bound() {
    // (1 - 0.5)^5 = 0.031 <= 0.05 < (1 - 0.5)^4.
    assert_eq!(runs_needed(0.5, 0.95), Some(5));
    assert_eq!(runs_needed(0.3, 0.95), Some(9));
    assert_eq!(runs_needed(0.1, 0.99), Some(44));
    assert_eq!(runs_needed(1.0, 0.95), Some(1));
    assert_eq!(runs_needed(0.0, 0.95), None);
    assert_eq!(runs_needed(0.5, 1.0), None);
    assert!(miss_probability(0.3, 9) <= 0.05 && miss_probability(0.3, 8) > 0.05);
}

/// Bisects `len` points whose first bad one is `first_bad`, where a bad point
/// reproduces with probability `p` per run; returns the answer.
fn simulate(len: usize, first_bad: usize, p: f64, runs: u32, seed: u64) -> usize {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut b = Bisection::new(0, len - 1).unwrap();
    while let Some(i) = b.next() {
        let hits = if i >= first_bad {
            (0..runs).filter(|_| rng.random_bool(p)).count()
        } else {
            0
        };
        b.record(i, runs, u32::try_from(hits).unwrap()).unwrap();
    }
    b.first_bad().unwrap()
}

#[test]
fn a_deterministic_oracle_finds_every_first_bad_point() {
    for len in 2..12 {
        for first_bad in 1..len {
            assert_eq!(simulate(len, first_bad, 1.0, 1, 0), first_bad);
        }
    }
    let mut b = Bisection::new(0, 16).unwrap();
    let mut steps = 0;
    while let Some(i) = b.next() {
        b.record(i, 1, u32::from(i >= 5)).unwrap();
        steps += 1;
    }
    assert_eq!((b.first_bad(), b.last_good(), steps), (Some(5), 4, 4));
    assert_eq!(b.confidence(1.0), 1.0);
    assert!(Bisection::new(3, 3).is_err());
}

#[test]
fn steps_are_about_log2_of_the_range() {
    // (points, most steps): ceil(log2(points - 1)) for the points between the ends.
    for (len, most) in [
        (3, 1),
        (5, 2),
        (17, 4),
        (18, 5),
        (33, 5),
        (65, 6),
        (1025, 10),
    ] {
        for first_bad in 1..len {
            let mut b = Bisection::new(0, len - 1).unwrap();
            let mut steps = 0;
            while let Some(i) = b.next() {
                b.record(i, 1, u32::from(i >= first_bad)).unwrap();
                steps += 1;
            }
            assert_eq!(b.first_bad(), Some(first_bad));
            assert!(
                steps <= most,
                "{len} points, first bad {first_bad}: {steps} steps"
            );
        }
    }
}

#[test]
fn a_flaky_oracle_needs_the_computed_number_of_runs() {
    // p = 0.3: with the runs for 99% per step, almost every bisection is right;
    // with one run per step, most are wrong.
    let p = 0.3;
    let runs = runs_needed(p, 0.99).unwrap();
    let right = |runs: u32| {
        (0..200)
            .filter(|&seed| simulate(16, 9, p, runs, seed) == 9)
            .count()
    };
    let (enough, one) = (right(runs), right(1));
    assert!(
        enough >= 190,
        "{enough}/200 right with {runs} runs per step"
    );
    assert!(one < 100, "{one}/200 right with 1 run per step");
    // The stated confidence is a true lower bound here.
    let mut b = Bisection::new(0, 15).unwrap();
    b.record(7, runs, 0).unwrap();
    b.record(11, runs, 2).unwrap();
    b.record(9, runs, 1).unwrap();
    b.record(8, runs, 0).unwrap();
    assert_eq!(b.first_bad(), Some(9));
    let c = b.confidence(p);
    assert!((0.98..1.0).contains(&c), "{c}");
}

/// What `oracle` says of each point: `Some(bad)`, or `None` for a skip.
fn bisect_with(len: usize, oracle: impl Fn(usize) -> Option<bool>) -> (Answer, Vec<usize>) {
    let mut b = Bisection::new(0, len - 1).unwrap();
    let mut tried = Vec::new();
    while let Some(i) = b.next() {
        tried.push(i);
        match oracle(i) {
            Some(bad) => b.record(i, 1, u32::from(bad)).unwrap(),
            None => b.skip(i).unwrap(),
        }
    }
    (b.answer().unwrap(), tried)
}

#[test]
fn skipped_points_are_gone_around_like_git_bisect_skip() {
    use Answer::{FirstBad, OneOf};
    // (points, first bad, skipped, answer, points tried in order)
    type Row = (usize, usize, Vec<usize>, Answer, Vec<usize>);
    let table: Vec<Row> = vec![
        // No skips: the plain halving.
        (17, 5, vec![], FirstBad(5), vec![8, 4, 6, 5]),
        // The middle does not build: its earlier neighbour first, then on as usual.
        (17, 5, vec![8], FirstBad(5), vec![8, 7, 3, 5, 4]),
        // A skip far from the boundary costs one step and changes nothing.
        (17, 12, vec![4, 8], FirstBad(12), vec![8, 7, 11, 13, 12]),
        // The first bad itself cannot be built: the answer names it and the next bad.
        (17, 5, vec![5], OneOf(vec![5, 6]), vec![8, 4, 6, 5]),
        // The last good cannot be built either: all three are candidates.
        (17, 5, vec![4, 5], OneOf(vec![4, 5, 6]), vec![8, 4, 3, 5, 6]),
        // Everything between the ends is untestable.
        (4, 2, vec![1, 2], OneOf(vec![1, 2, 3]), vec![1, 2]),
    ];
    for (len, first_bad, skipped, answer, tried) in table {
        let got = bisect_with(len, |i| (!skipped.contains(&i)).then_some(i >= first_bad));
        assert_eq!(
            got,
            (answer, tried),
            "{len} points, first bad {first_bad}, skip {skipped:?}"
        );
    }
}

#[test]
fn a_step_outside_the_range_is_refused() {
    let mut b = Bisection::new(0, 8).unwrap();
    b.record(4, 1, 1).unwrap();
    assert_eq!(
        b.record(6, 1, 0),
        Err(BisectError::OutOfRange {
            index: 6,
            good: 0,
            bad: 4
        })
    );
    assert!(b.skip(0).is_err() && b.skip(4).is_err());
    assert!(b.skip(2).is_ok());
    assert_eq!(b.steps.len(), 2, "a refused step is not recorded");
}

#[test]
fn skips_do_not_count_against_the_confidence() {
    let mut b = Bisection::new(0, 4).unwrap();
    b.skip(2).unwrap();
    b.record(1, 5, 0).unwrap();
    b.record(3, 5, 1).unwrap();
    assert_eq!(b.answer(), Some(Answer::OneOf(vec![2, 3])));
    assert_eq!(b.first_bad(), None);
    let c = b.confidence(0.5);
    assert!((c - (1.0 - 0.5f64.powi(5))).abs() < 1e-12, "{c}");
}
