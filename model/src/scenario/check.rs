//! `[[check]]` thresholds: `assert = "memory_stat_read.p99 <= 50ms"`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

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
}

/// The outcome of one check against a run's metrics.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckOutcome {
    Pass,
    /// The bound was violated; the message says by what.
    Violated(String),
    /// There was nothing to compare (probe never read, histogram empty). Treated as a
    /// failure: a missing value must never pass as zero.
    NoData(String),
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
        Some(Check {
            text: text.to_owned(),
            because: raw.because.clone(),
            metric: metric.to_owned(),
            stat,
            op,
            threshold,
            unit,
        })
    }

    pub fn evaluate(&self, metrics: &BTreeMap<String, Metric>) -> CheckOutcome {
        let Some(metric) = metrics.get(&self.metric) else {
            return CheckOutcome::NoData(format!(
                "check `{}`: metric `{}` was not recorded",
                self.text, self.metric
            ));
        };
        let Some(value) = metric.stat(self.stat) else {
            return CheckOutcome::NoData(format!(
                "check `{}`: `{}` has no data for {}",
                self.text, self.metric, self.stat
            ));
        };
        if self.op.holds(value, self.threshold) {
            CheckOutcome::Pass
        } else {
            let mut msg = format!(
                "check `{}` failed: {}.{} = {} (bound {} {})",
                self.text,
                self.metric,
                self.stat,
                self.unit.format(value),
                self.op,
                self.unit.format(self.threshold)
            );
            if let Some(because) = &self.because {
                msg.push_str(&format!(": {because}"));
            }
            CheckOutcome::Violated(msg)
        }
    }
}
