//! `[[check]]` thresholds: `assert = "memory_stat_read.p99 <= 50ms"`, or over a window
//! of the run: `memory_stat_read[hold].p50 <= 20ms` (see [`super::window`]).

use std::collections::BTreeMap;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::check_kind::CheckKind;
use super::ctx::Ctx;
use super::raw::RawCheck;
use super::window::{self, Window};
use crate::metrics::{Metric, Stat};
use crate::timeline::{self, Measured};
use crate::units::{self, Unit};

/// The most samples a check may demand of its window (`min_samples`).
const MAX_MIN_SAMPLES: u64 = 1_000_000;

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

    /// The first comparison in `text`, longest first where two start at one place (so
    /// `<=` is not read as `<`): its spelling, the operator and where it starts.
    pub fn find(text: &str) -> Option<(&'static str, CmpOp, usize)> {
        CmpOp::ALL
            .iter()
            .filter_map(|&(t, op)| text.find(t).map(|at| (t, op, at)))
            .min_by_key(|&(t, _, at)| (at, usize::MAX - t.len()))
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

display_as_str!(CmpOp);

/// A validated check: `metric[window].stat op threshold`, the threshold in the metric's
/// base unit.
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
    /// The part of the run the statistic is computed over; `None`: the whole run.
    #[serde(default)]
    pub window: Option<Window>,
    /// The fewest samples the window must hold to be judged, as the check asked.
    #[serde(default)]
    pub min_samples: Option<u64>,
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
    /// The check's window held too few samples to judge (or never happened). A failure
    /// too: a window too thin to judge must never pass.
    NotTested(String),
}

/// Whether a check held, in one word (`results.json`: `"pass"`, `"fail"`, `"no-data"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckStatus {
    Pass,
    Fail,
    /// Nothing to compare: fails the cell like a violated bound.
    NoData,
    /// The window held too few samples to judge: fails the cell too.
    NotTested,
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Pass => "pass",
            CheckStatus::Fail => "fail",
            CheckStatus::NoData => "no-data",
            CheckStatus::NotTested => "not-tested",
        }
    }
}

display_as_str!(CheckStatus);

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
    /// The window the statistic was computed over, as written (`hold`, `while
    /// nr_dying_descendants >= 900`); absent for the whole run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// How many samples the window held; absent for the whole run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<u64>,
    /// The fewest it needed to be judged; absent for the whole run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_samples: Option<u64>,
    /// Why a windowed check was not tested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_tested: Option<String>,
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

    /// `memory_stat_read.p50`, or `memory_stat_read[hold].p50`.
    pub fn statistic(&self) -> String {
        match &self.window {
            Some(w) => format!("{}[{w}].{}", self.metric, self.stat),
            None => format!("{}.{}", self.metric, self.stat),
        }
    }

    /// What the verdict rules need: pass, or why not (the reason a failed cell shows).
    pub fn outcome(&self) -> CheckOutcome {
        match (self.status, self.observed) {
            (CheckStatus::Pass, _) => CheckOutcome::Pass,
            (CheckStatus::NotTested, _) => CheckOutcome::NotTested(format!(
                "check `{}` not tested: {} (a window too thin to judge never passes)",
                self.assert,
                self.not_tested
                    .as_deref()
                    .unwrap_or("too few samples in its window")
            )),
            (CheckStatus::Fail, Some(value)) => {
                let over = self
                    .samples
                    .map(|n| format!(" over {n} samples"))
                    .unwrap_or_default();
                let mut msg = format!(
                    "check `{}` failed: {} = {}{over} (bound {})",
                    self.assert,
                    self.statistic(),
                    self.unit.format(value),
                    self.bound_text()
                );
                if let Some(because) = &self.because {
                    msg.push_str(&format!(": {because}"));
                }
                CheckOutcome::Violated(msg)
            }
            (CheckStatus::Fail | CheckStatus::NoData, _) => CheckOutcome::NoData(format!(
                "check `{}`: no value of {} was recorded (a missing value never passes)",
                self.assert,
                self.statistic()
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
        names: &window::Names<'_>,
    ) -> Option<Check> {
        let written = Written::of(ctx, raw);
        let text = written.text;
        let span = raw.expr.span();
        let (plain, window_text) = match window::split(text) {
            Ok(Some((plain, w, from))) => (plain, Some((w, from))),
            Ok(None) => (text.to_owned(), None),
            Err((r, msg)) => {
                ctx.error(written.at(r), msg);
                return None;
            }
        };
        let (left, op, right) = comparison(ctx, &plain, text, &span)?;
        let (metric, stat, unit) = statistic(ctx, left, names, &span)?;
        let threshold = ctx.or_error(span, units::parse_threshold(right, unit))?;
        let kind = check_kind(ctx, raw, stat, op, unit)?;
        let window = match window_text {
            Some((w, from)) => Some(window_of(ctx, &written, (w, from), metric, names)?),
            None => None,
        };
        let min_samples = min_samples(ctx, raw, window.is_some());
        Some(Check {
            text: text.to_owned(),
            because: raw.because.clone(),
            metric: metric.to_owned(),
            stat,
            op,
            threshold,
            unit,
            kind,
            window,
            min_samples,
        })
    }

    /// The check against a run's metrics, over the whole run; see [`Check::result_in`].
    pub fn result(&self, metrics: &BTreeMap<String, Metric>) -> CheckResult {
        self.result_in(&Measured::of(metrics, None))
    }

    /// The check against what a run measured, with the numbers. A metric that was not
    /// recorded, a statistic with no data, or a value that is not a finite number (it
    /// would compare false against anything) fails: a missing value never passes. A
    /// windowed check whose window holds fewer samples than it needs (or never
    /// happened) is not tested, which fails too.
    pub fn result_in(&self, data: &Measured<'_>) -> CheckResult {
        let Some(window) = &self.window else {
            let observed = data
                .metrics
                .get(&self.metric)
                .and_then(|m| m.stat(self.stat));
            return self.judge(observed);
        };
        let needed = window::needed(self.stat, self.min_samples);
        let (samples, not_tested, observed) = match window::select(window, &self.metric, data) {
            Err(why) => (0, Some(why), None),
            Ok(selected) => {
                let n = selected.samples.len() as u64;
                if n < needed {
                    let why = format!(
                        "{n} samples of `{}` in its window `{window}`, {needed} needed to judge {}",
                        self.metric, self.stat
                    );
                    (n, Some(why), None)
                } else {
                    let value = timeline::stat_of(
                        &selected.samples,
                        selected.unit,
                        selected.latency,
                        self.stat,
                    );
                    (n, None, value)
                }
            }
        };
        let mut result = self.judge(observed);
        result.window = Some(window.text.clone());
        result.samples = Some(samples);
        result.min_samples = Some(needed);
        if not_tested.is_some() {
            result.status = CheckStatus::NotTested;
            result.not_tested = not_tested;
        }
        result
    }

    /// `observed` held against the bound.
    fn judge(&self, observed: Option<f64>) -> CheckResult {
        let observed = observed.filter(|v| v.is_finite());
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
            window: None,
            samples: None,
            min_samples: None,
            not_tested: None,
        }
    }

    pub fn evaluate(&self, metrics: &BTreeMap<String, Metric>) -> CheckOutcome {
        self.result(metrics).outcome()
    }
}

/// A check's text as written in the file, trimmed, and where its bytes are: an error in
/// a window points inside the string when it is written verbatim (no escapes), else at
/// the whole string.
struct Written<'s> {
    text: &'s str,
    span: Range<usize>,
    /// Where `text` starts in the file, when it is there verbatim.
    start: Option<usize>,
}

impl<'s> Written<'s> {
    fn of(ctx: &Ctx<'_>, raw: &'s RawCheck) -> Written<'s> {
        let written = raw.expr.get_ref();
        let span = raw.expr.span();
        let lead = written.len() - written.trim_start().len();
        let verbatim = span.len() == written.len() + 2
            && ctx
                .loc
                .source()
                .get(span.start + 1..span.end - 1)
                .is_some_and(|inner| inner == written);
        Written {
            text: written.trim(),
            start: verbatim.then_some(span.start + 1 + lead),
            span,
        }
    }

    /// Where bytes `r` of the text are in the file.
    fn at(&self, r: Range<usize>) -> Range<usize> {
        match self.start {
            Some(start) => start + r.start..start + r.end,
            None => self.span.clone(),
        }
    }
}

/// `left op right` of a check without its window.
fn comparison<'p>(
    ctx: &mut Ctx<'_>,
    plain: &'p str,
    text: &str,
    span: &Range<usize>,
) -> Option<(&'p str, CmpOp, &'p str)> {
    let Some((op_text, op, op_at)) = CmpOp::find(plain) else {
        ctx.error(
            span.clone(),
            format!("`{text}` has no comparison; write it like \"memory_stat_read.p99 <= 50ms\""),
        );
        return None;
    };
    let left = plain[..op_at].trim();
    let right = plain[op_at + op_text.len()..].trim();
    Some((left, op, right))
}

/// `metric.stat`: a metric of this scenario, a statistic it has, and the unit of that
/// statistic.
fn statistic<'l>(
    ctx: &mut Ctx<'_>,
    left: &'l str,
    names: &window::Names<'_>,
    span: &Range<usize>,
) -> Option<(&'l str, Stat, Unit)> {
    let Some((metric, stat_text)) = left.rsplit_once('.') else {
        ctx.error(
            span.clone(),
            format!("`{left}` needs a statistic, like `{left}.p99` or `{left}.last`"),
        );
        return None;
    };
    let Some(info) = names.catalog.get(metric) else {
        let known: Vec<&str> = names.catalog.keys().map(String::as_str).collect();
        ctx.error(
            span.clone(),
            format!(
                "unknown metric `{metric}`; this scenario has: {}",
                known.join(", ")
            ),
        );
        return None;
    };
    let allowed = Stat::allowed(info.kind);
    let Some(stat) = Stat::parse(stat_text).filter(|s| allowed.contains(s)) else {
        let stats: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
        ctx.error(
            span.clone(),
            format!(
                "`{stat_text}` is not a statistic of `{metric}`; allowed: {}",
                stats.join(", ")
            ),
        );
        return None;
    };
    Some((metric, stat, stat.unit_for(info.unit)))
}

/// `kind = "..."` as written, else inferred from the check.
fn check_kind(
    ctx: &mut Ctx<'_>,
    raw: &RawCheck,
    stat: Stat,
    op: CmpOp,
    unit: Unit,
) -> Option<CheckKind> {
    let Some(k) = &raw.kind else {
        return Some(CheckKind::infer(stat, op, unit));
    };
    let kind = CheckKind::parse(k.get_ref());
    if kind.is_none() {
        let allowed: Vec<&str> = CheckKind::ALL.iter().map(|k| k.as_str()).collect();
        ctx.error(
            k.span(),
            format!(
                "`{}` is not a kind of check; allowed: {}",
                k.get_ref(),
                allowed.join(", ")
            ),
        );
    }
    kind
}

/// The window `w`, which starts at byte `from` of the check's text.
fn window_of(
    ctx: &mut Ctx<'_>,
    written: &Written<'_>,
    (w, from): (&str, usize),
    metric: &str,
    names: &window::Names<'_>,
) -> Option<Window> {
    match window::parse(w, metric, names) {
        Ok(window) => Some(window),
        Err((r, msg)) => {
            ctx.error(written.at(from + r.start..from + r.end), msg);
            None
        }
    }
}

/// `min_samples`, which only a windowed check has.
fn min_samples(ctx: &mut Ctx<'_>, raw: &RawCheck, windowed: bool) -> Option<u64> {
    let n = raw.min_samples.as_ref()?;
    if !windowed {
        ctx.error(
            n.span(),
            "`min_samples` is for a check over a window (`metric[hold].p50`); the whole run is judged on whatever it recorded",
        );
        return None;
    }
    ctx.count(&Some(n.clone()), 1, MAX_MIN_SAMPLES)
}

#[cfg(test)]
mod tests;
