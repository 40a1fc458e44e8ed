//! The window of a check: `memory_stat_read[hold].p50` judges the reads taken while the
//! workload `hold` ran, `memory_stat_read[while nr_dying_descendants >= 900].p50` those
//! taken while that counter stood at 900 or more. Parsed here from the text between the
//! brackets; cut from the run's timeline by [`crate::timeline`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::check::CmpOp;
use super::ctx::list_or;
use crate::metrics::{MetricInfo, MetricKind, Stat};
use crate::timeline::{self, Measured};
use crate::units::{self, Unit};

/// What part of the run a check judges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// As written between the brackets, for messages and results (`hold`).
    pub text: String,
    pub over: Over,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Over {
    /// While the workload of this name ran (its phase).
    Phase { name: String },
    /// While a counter series satisfied `metric op threshold` (threshold in its unit).
    While {
        metric: String,
        op: CmpOp,
        threshold: f64,
    },
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// What the validator knows when it reads a window.
pub(crate) struct Names<'a> {
    pub catalog: &'a BTreeMap<String, MetricInfo>,
    /// Workload names: the phases.
    pub phases: &'a [String],
    /// Metrics that come with the time of every sample: the probes'.
    pub timed: &'a BTreeSet<String>,
}

/// A problem in a window, with the byte range (within the text between the brackets)
/// it is about.
pub(crate) type WindowError = (Range<usize>, String);

/// `check` with its window taken out, the window's text and where it starts in `check`:
/// `memory_stat_read[hold].p50 <= 50ms` gives `memory_stat_read.p50 <= 50ms`, `hold`
/// and 17. `Ok(None)` when there is no window.
pub(crate) fn split(check: &str) -> Result<Option<(String, &str, usize)>, WindowError> {
    let Some(open) = check.find('[') else {
        if let Some(close) = check.find(']') {
            return Err((close..close + 1, "`]` closes no window".to_owned()));
        }
        return Ok(None);
    };
    let Some(len) = check[open + 1..].find(']') else {
        return Err((
            open..check.len(),
            "`[` opens a window that is never closed; write `metric[hold].p99` or `metric[while counter >= 900].p50`".to_owned(),
        ));
    };
    let close = open + 1 + len;
    let rest = &check[close + 1..];
    if let Some(again) = rest.find(['[', ']']) {
        let at = close + 1 + again;
        return Err((at..at + 1, "a check has one window".to_owned()));
    }
    if !rest.starts_with('.') {
        return Err((
            close..close + 1,
            "the window goes between the metric and its statistic: `metric[hold].p99`".to_owned(),
        ));
    }
    let without = format!("{}{}", &check[..open], rest);
    Ok(Some((without, &check[open + 1..close], open + 1)))
}

/// Validates the text between the brackets for a check on `metric`.
pub(crate) fn parse(text: &str, metric: &str, names: &Names<'_>) -> Result<Window, WindowError> {
    let lead = text.len() - text.trim_start().len();
    let body = text.trim();
    let whole = lead..lead + body.len();
    if body.is_empty() {
        return Err((
            0..text.len(),
            "empty window; name a phase (`[hold]`) or a condition (`[while nr_dying_descendants >= 900]`)".to_owned(),
        ));
    }
    if !names.timed.contains(metric) {
        let probes: Vec<&str> = names.timed.iter().map(String::as_str).collect();
        return Err((
            whole,
            format!(
                "`{metric}` has no timed samples to cut into windows; windows apply to probes: {}",
                list_or(&probes, "(none here)")
            ),
        ));
    }
    let over = match body.strip_prefix("while") {
        Some(cond) if cond.starts_with(char::is_whitespace) => {
            let at = lead + "while".len();
            condition(cond, at, names)?
        }
        _ => {
            if !names.phases.iter().any(|p| p == body) {
                let hint = if names.phases.is_empty() {
                    "this scenario has no workloads".to_owned()
                } else {
                    format!("phases are the workloads: {}", names.phases.join(", "))
                };
                return Err((
                    whole,
                    format!("unknown phase `{body}`; {hint}, or write `while COUNTER OP VALUE`"),
                ));
            }
            Over::Phase {
                name: body.to_owned(),
            }
        }
    };
    Ok(Window {
        text: body.to_owned(),
        over,
    })
}

/// `nr_dying_descendants >= 900`, starting at byte `at` of the window text.
fn condition(cond: &str, at: usize, names: &Names<'_>) -> Result<Over, WindowError> {
    let lead = cond.len() - cond.trim_start().len();
    let at = at + lead;
    let cond = cond.trim();
    let whole = at..at + cond.len();
    let Some((op_text, op, pos)) = CmpOp::find(cond) else {
        return Err((
            whole,
            "a condition compares a counter: `while nr_dying_descendants >= 900`".to_owned(),
        ));
    };
    let metric = cond[..pos].trim();
    let value = cond[pos + op_text.len()..].trim();
    let metric_at = at..at + pos;
    let Some(info) = names.catalog.get(metric) else {
        let series: Vec<&str> = names
            .catalog
            .iter()
            .filter(|(_, i)| i.kind == MetricKind::Series)
            .map(|(n, _)| n.as_str())
            .collect();
        return Err((
            metric_at,
            format!(
                "unknown counter `{metric}`; this scenario's counters: {}",
                list_or(&series, "(none)")
            ),
        ));
    };
    if info.kind != MetricKind::Series {
        return Err((
            metric_at,
            format!("`{metric}` is not a counter series; a condition needs one sampled over time (a `counter` or `d-state` probe)"),
        ));
    }
    let after = &cond[pos + op_text.len()..];
    let value_from = at + pos + op_text.len() + (after.len() - after.trim_start().len());
    let value_at = value_from..at + cond.len();
    let threshold = units::parse_threshold(value, info.unit).map_err(|msg| (value_at, msg))?;
    Ok(Over::While {
        metric: metric.to_owned(),
        op,
        threshold,
    })
}

/// The samples of a metric a window selected.
#[derive(Debug, Clone, PartialEq)]
pub struct Selected {
    /// `(ms, value)` in time order.
    pub samples: Vec<(u64, f64)>,
    pub unit: Unit,
    /// A latency probe's samples (summarised as a histogram) rather than a series'.
    pub latency: bool,
}

/// The samples of `metric` inside the window; `Err` says why there is nothing to cut
/// (a phase that never ran, a runner that reported no timed samples).
pub fn select(window: &Window, metric: &str, data: &Measured<'_>) -> Result<Selected, String> {
    let Some((series, latency)) = data.samples(metric) else {
        return Err(format!("no timed samples of `{metric}` were reported"));
    };
    let intervals = match &window.over {
        Over::Phase { name } => timeline::phase(data.spans, name)
            .ok_or_else(|| format!("the workload `{name}` never ran"))?,
        Over::While {
            metric: counter,
            op,
            threshold,
        } => {
            let Some((cond, _)) = data.samples(counter) else {
                return Err(format!("no samples of `{counter}` were reported"));
            };
            timeline::intervals_while(&cond.samples, |v| op.holds(v, *threshold))
        }
    };
    Ok(Selected {
        samples: timeline::within(&series.samples, &intervals),
        unit: series.unit,
        latency,
    })
}

/// The fewest samples a check of `stat` over a window needs: what the check asks
/// (`min_samples`) or the default, never fewer than a percentile's tail needs; none
/// for `count`.
pub fn needed(stat: Stat, asked: Option<u64>) -> u64 {
    match (stat, asked) {
        (Stat::Count, _) => 0,
        (_, Some(n)) => n.max(timeline::tail_samples(stat)),
        (_, None) => timeline::min_samples(stat),
    }
}

#[cfg(test)]
mod tests;
