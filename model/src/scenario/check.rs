//! `[[check]]` thresholds: `assert = "memory_stat_read.p99 <= 50ms"`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::check_kind::CheckKind;
use super::ctx::Ctx;
use super::raw::RawCheck;
use crate::metrics::{Metric, MetricInfo, Stat};
use crate::units::{self, Unit};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmpOp {
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
}

impl CmpOp {
    /// Longest first so `<=` is not read as `<`.
    const ALL: [(&'static str, CmpOp); 6] = [
        ("<=", CmpOp::Le),
        (">=", CmpOp::Ge),
        ("==", CmpOp::Eq),
        ("!=", CmpOp::Ne),
        ("<", CmpOp::Lt),
        (">", CmpOp::Gt),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
        }
    }

    pub fn holds(self, left: f64, right: f64) -> bool {
        match self {
            CmpOp::Lt => left < right,
            CmpOp::Le => left <= right,
            CmpOp::Gt => left > right,
            CmpOp::Ge => left >= right,
            CmpOp::Eq => left == right,
            CmpOp::Ne => left != right,
        }
    }
}

impl fmt::Display for CmpOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated check: `metric.stat op threshold`, the threshold in the metric's base unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// As written, for messages.
    pub text: String,
    pub because: Option<String>,
    pub metric: String,
    pub stat: Stat,
    pub op: CmpOp,
    pub threshold: f64,
    pub unit: Unit,
    /// What a failure of it tells (`kind = "..."`, else inferred): orders the reasons.
    #[serde(default)]
    pub kind: CheckKind,
}

/// The outcome of one check against a run's metrics, as the verdict rules need it.
/// Derived from [`CheckResult`], which keeps the numbers.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckOutcome {
    Pass,
    /// The bound was violated; the message says by what.
    Violated(String),
    /// There was nothing to compare (probe never read, histogram empty). Treated as a
    /// failure: a missing value must never pass as zero.
    NoData(String),
}

/// Whether a check held, in one word (`results.json`: `"pass"`, `"fail"`, `"no-data"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckStatus {
    Pass,
    Fail,
    /// Nothing to compare: fails the cell like a violated bound.
    NoData,
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Pass => "pass",
            CheckStatus::Fail => "fail",
            CheckStatus::NoData => "no-data",
        }
    }
}

impl fmt::Display for CheckStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One check's full outcome, kept for every check of every cell that reported, passing
/// or not: qualification is about how much room was left, not only whether a bound held.
///
/// The margin is how far the observed value is from the bound, on the passing side, as
/// a signed fraction of the bound's magnitude (`docs/results.md`):
///
/// | operator | `headroom` (in the unit) | passes when |
/// | --- | --- | --- |
/// | `<`, `<=` | `bound - observed` | `> 0`, `>= 0` |
/// | `>`, `>=` | `observed - bound` | `> 0`, `>= 0` |
/// | `==` | `-abs(observed - bound)` | `== 0` |
/// | `!=` | `abs(observed - bound)` | `> 0` |
///
/// and `margin = headroom / abs(bound)`: positive is room left, negative is how far past
/// the bound, zero is on it. A zero bound has no fraction, so `margin` is absent there
/// and `headroom` alone says how far; so it is when there was no value to compare.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// The assertion as written (`memory_stat_read.p99 <= 50ms`).
    pub assert: String,
    #[serde(default)]
    pub because: Option<String>,
    pub metric: String,
    pub stat: Stat,
    pub op: CmpOp,
    /// The unit of `observed`, `bound` and `headroom`.
    pub unit: Unit,
    /// The statistic as recorded; absent when there was none.
    pub observed: Option<f64>,
    pub bound: f64,
    pub status: CheckStatus,
    /// Signed distance from the bound in `unit`, positive on the passing side.
    pub headroom: Option<f64>,
    /// `headroom` as a fraction of `abs(bound)`; absent for a zero bound.
    pub margin: Option<f64>,
}

impl CheckResult {
    pub fn passed(&self) -> bool {
        self.status == CheckStatus::Pass
    }

    /// `2.30ms`, or `no data`.
    pub fn observed_text(&self) -> String {
        self.observed
            .map_or_else(|| "no data".to_owned(), |v| self.unit.format(v))
    }

    /// `<= 50.00ms`.
    pub fn bound_text(&self) -> String {
        format!("{} {}", self.op, self.unit.format(self.bound))
    }

    /// `+95.4%`, or empty when there is no margin.
    pub fn margin_text(&self) -> String {
        self.margin
            .map(|m| format!("{:+.1}%", m * 100.0))
            .unwrap_or_default()
    }

    /// What the verdict rules need: pass, or why not (the reason a failed cell shows).
    pub fn outcome(&self) -> CheckOutcome {
        match (self.status, self.observed) {
            (CheckStatus::Pass, _) => CheckOutcome::Pass,
            (CheckStatus::Fail, Some(value)) => {
                let mut msg = format!(
                    "check `{}` failed: {}.{} = {} (bound {})",
                    self.assert,
                    self.metric,
                    self.stat,
                    self.unit.format(value),
                    self.bound_text()
                );
                if let Some(because) = &self.because {
                    msg.push_str(&format!(": {because}"));
                }
                CheckOutcome::Violated(msg)
            }
            (CheckStatus::Fail | CheckStatus::NoData, _) => CheckOutcome::NoData(format!(
                "check `{}`: no value of {}.{} was recorded (a missing value never passes)",
                self.assert, self.metric, self.stat
            )),
        }
    }
}

/// `(headroom, margin)` of `observed` against `bound` under `op`; see [`CheckResult`].
pub fn margin(op: CmpOp, observed: f64, bound: f64) -> (f64, Option<f64>) {
    let headroom = match op {
        CmpOp::Lt | CmpOp::Le => bound - observed,
        CmpOp::Gt | CmpOp::Ge => observed - bound,
        CmpOp::Eq => -(observed - bound).abs(),
        CmpOp::Ne => (observed - bound).abs(),
    };
    let margin = (bound != 0.0).then(|| headroom / bound.abs());
    (headroom, margin)
}

impl Check {
    pub(crate) fn parse(
        ctx: &mut Ctx<'_>,
        raw: &RawCheck,
        catalog: &BTreeMap<String, MetricInfo>,
    ) -> Option<Check> {
        let text = raw.expr.get_ref().trim();
        let span = raw.expr.span();
        let Some((op_text, op, at)) = CmpOp::ALL
            .iter()
            .filter_map(|&(t, op)| text.find(t).map(|at| (t, op, at)))
            .min_by_key(|&(t, _, at)| (at, usize::MAX - t.len()))
        else {
            ctx.error(
                span,
                format!(
                    "`{text}` has no comparison; write it like \"memory_stat_read.p99 <= 50ms\""
                ),
            );
            return None;
        };
        let left = text[..at].trim();
        let right = text[at + op_text.len()..].trim();
        let Some((metric, stat_text)) = left.rsplit_once('.') else {
            ctx.error(
                span,
                format!("`{left}` needs a statistic, like `{left}.p99` or `{left}.last`"),
            );
            return None;
        };
        let Some(info) = catalog.get(metric) else {
            let known: Vec<&str> = catalog.keys().map(String::as_str).collect();
            ctx.error(
                span,
                format!(
                    "unknown metric `{metric}`; this scenario has: {}",
                    known.join(", ")
                ),
            );
            return None;
        };
        let allowed = Stat::allowed(info.kind);
        let Some(stat) = Stat::parse(stat_text).filter(|s| allowed.contains(s)) else {
            let names: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
            ctx.error(
                span,
                format!(
                    "`{stat_text}` is not a statistic of `{metric}`; allowed: {}",
                    names.join(", ")
                ),
            );
            return None;
        };
        let unit = stat.unit_for(info.unit);
        let threshold = match units::parse_threshold(right, unit) {
            Ok(t) => t,
            Err(msg) => {
                ctx.error(span, msg);
                return None;
            }
        };
        let kind = match &raw.kind {
            Some(k) => match CheckKind::parse(k.get_ref()) {
                Some(kind) => kind,
                None => {
                    let allowed: Vec<&str> = CheckKind::ALL.iter().map(|k| k.as_str()).collect();
                    ctx.error(
                        k.span(),
                        format!(
                            "`{}` is not a kind of check; allowed: {}",
                            k.get_ref(),
                            allowed.join(", ")
                        ),
                    );
                    return None;
                }
            },
            None => CheckKind::infer(stat, op, unit),
        };
        Some(Check {
            text: text.to_owned(),
            because: raw.because.clone(),
            metric: metric.to_owned(),
            stat,
            op,
            threshold,
            unit,
            kind,
        })
    }

    /// The check against a run's metrics, with the numbers. A metric that was not
    /// recorded, a statistic with no data, or a value that is not a finite number (it
    /// would compare false against anything) fails: a missing value never passes.
    pub fn result(&self, metrics: &BTreeMap<String, Metric>) -> CheckResult {
        let observed = metrics
            .get(&self.metric)
            .and_then(|m| m.stat(self.stat))
            .filter(|v| v.is_finite());
        let (status, headroom, margin) = match observed {
            None => (CheckStatus::NoData, None, None),
            Some(value) => {
                let (headroom, margin) = margin(self.op, value, self.threshold);
                let status = if self.op.holds(value, self.threshold) {
                    CheckStatus::Pass
                } else {
                    CheckStatus::Fail
                };
                (status, Some(headroom), margin)
            }
        };
        CheckResult {
            assert: self.text.clone(),
            because: self.because.clone(),
            metric: self.metric.clone(),
            stat: self.stat,
            op: self.op,
            unit: self.unit,
            observed,
            bound: self.threshold,
            status,
            headroom,
            margin,
        }
    }

    pub fn evaluate(&self, metrics: &BTreeMap<String, Metric>) -> CheckOutcome {
        self.result(metrics).outcome()
    }
}

#[cfg(test)]
mod tests {
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
}
