//! Checks against a run's metrics: margins, missing values, windows.
use super::*;
use crate::metrics::Gauge;

fn check(op: CmpOp, threshold: f64) -> Check {
    Check {
        text: format!("x.value {op} {threshold}"),
        because: Some("why".into()),
        metric: "x".into(),
        stat: Stat::Value,
        op,
        threshold,
        unit: Unit::Count,
        window: None,
        min_samples: None,
        kind: CheckKind::infer(Stat::Value, op, Unit::Count),
    }
}

fn metrics(value: f64) -> BTreeMap<String, Metric> {
    BTreeMap::from([(
        "x".to_owned(),
        Metric::Value(Gauge {
            unit: Unit::Count,
            value,
        }),
    )])
}

/// op, bound, observed, status, headroom, margin.
type Case = (CmpOp, f64, f64, CheckStatus, f64, Option<f64>);

/// Every operator, on the passing side, on the bound and past it; the margin is
/// positive with room left, zero on the bound, negative past it.
#[test]
fn margin_is_the_signed_room_left_as_a_fraction_of_the_bound() {
    use CheckStatus::{Fail, Pass};
    #[rustfmt::skip]
    let table: &[Case] = &[
        // op, bound, observed, status, headroom, margin
        (CmpOp::Le, 50.0, 10.0, Pass, 40.0, Some(0.8)),
        (CmpOp::Le, 50.0, 50.0, Pass, 0.0, Some(0.0)),
        (CmpOp::Le, 50.0, 75.0, Fail, -25.0, Some(-0.5)),
        (CmpOp::Lt, 50.0, 50.0, Fail, 0.0, Some(0.0)),
        (CmpOp::Lt, 50.0, 25.0, Pass, 25.0, Some(0.5)),
        (CmpOp::Ge, 10.0, 15.0, Pass, 5.0, Some(0.5)),
        (CmpOp::Ge, 10.0, 9.0, Fail, -1.0, Some(-0.1)),
        (CmpOp::Gt, 10.0, 10.0, Fail, 0.0, Some(0.0)),
        (CmpOp::Eq, 4.0, 4.0, Pass, 0.0, Some(0.0)),
        (CmpOp::Eq, 4.0, 5.0, Fail, -1.0, Some(-0.25)),
        (CmpOp::Eq, 4.0, 3.0, Fail, -1.0, Some(-0.25)),
        (CmpOp::Ne, 4.0, 6.0, Pass, 2.0, Some(0.5)),
        (CmpOp::Ne, 4.0, 4.0, Fail, 0.0, Some(0.0)),
        // A negative bound: the fraction is of its magnitude, so the sign still
        // says which side of the bound the value is on.
        (CmpOp::Ge, -10.0, -5.0, Pass, 5.0, Some(0.5)),
        (CmpOp::Le, -10.0, -5.0, Fail, -5.0, Some(-0.5)),
        // A zero bound has no fraction; the headroom alone says how far.
        (CmpOp::Le, 0.0, 3.0, Fail, -3.0, None),
        (CmpOp::Eq, 0.0, 0.0, Pass, 0.0, None),
        (CmpOp::Ge, 0.0, 2.0, Pass, 2.0, None),
    ];
    for &(op, bound, observed, status, headroom, margin) in table {
        let r = check(op, bound).result(&metrics(observed));
        let case = format!("{observed} {op} {bound}: {r:?}");
        assert_eq!(r.status, status, "{case}");
        assert_eq!(r.observed, Some(observed), "{case}");
        assert_eq!(r.bound, bound, "{case}");
        assert_eq!(r.headroom, Some(headroom), "{case}");
        match (r.margin, margin) {
            (Some(got), Some(want)) => assert!((got - want).abs() < 1e-12, "{case}"),
            (got, want) => assert_eq!(got, want, "{case}"),
        }
        // The verdict rules see the same answer.
        assert_eq!(
            matches!(r.outcome(), CheckOutcome::Pass),
            status == Pass,
            "{case}"
        );
    }
}

#[test]
fn no_value_or_a_non_finite_one_is_no_data_and_fails() {
    let c = check(CmpOp::Ne, 1.0);
    for metrics in [BTreeMap::new(), metrics(f64::NAN)] {
        let r = c.result(&metrics);
        assert_eq!(r.status, CheckStatus::NoData);
        assert_eq!((r.observed, r.headroom, r.margin), (None, None, None));
        assert!(matches!(r.outcome(), CheckOutcome::NoData(_)), "{r:?}");
    }
}

#[test]
fn a_violation_names_the_value_the_bound_and_why() {
    let r = check(CmpOp::Le, 50.0).result(&metrics(75.0));
    let CheckOutcome::Violated(msg) = r.outcome() else {
        panic!("{r:?}");
    };
    assert_eq!(
        msg,
        "check `x.value <= 50` failed: x.value = 75 (bound <= 50): why"
    );
    assert_eq!(r.margin_text(), "-50.0%");
    // results.json spells the status and operator as people read them.
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["status"], "fail");
    assert_eq!(json["op"], "<=");
    assert_eq!(json["margin"], -0.5);
}
