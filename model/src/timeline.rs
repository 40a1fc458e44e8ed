//! Time inside a run: when each workload ran (its *phase*), the probes' samples with
//! the time each was taken, and the windows a check may restrict a statistic to — a
//! phase, or the time a counter's condition held. The runner reports the facts (spans,
//! timed samples); the host cuts them into windows here, so a statistic over "the 15 s
//! the cgroups were held dying" is not diluted by the rest of the run.
//!
//! Every time is in milliseconds since the workload phase began, the epoch of counter
//! samples too. Pure functions, table-tested.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::metrics::{Metric, Series, Stat, Summary};
use crate::protocol::RunReport;
use crate::units::Unit;

/// The fewest samples a window must hold for any statistic but `count` to be judged:
/// fewer, and the check is "not tested", never passed.
pub const MIN_WINDOW_SAMPLES: u64 = 10;

/// When one workload ran, in milliseconds since the workload phase began.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// The workload's name: the phase a check names (`memory_stat_read[hold].p50`).
    pub name: String,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// Closed intervals `[start, end]` in milliseconds, in time order.
pub type Intervals = Vec<(u64, u64)>;

/// What a run measured, as windowed checks read it: the metrics (counter series among
/// them), the probes' timed samples and the workloads' spans.
#[derive(Debug, Clone, Copy)]
pub struct Measured<'a> {
    pub metrics: &'a BTreeMap<String, Metric>,
    pub timelines: &'a BTreeMap<String, Series>,
    pub spans: &'a [Span],
}

impl<'a> Measured<'a> {
    /// The metrics, with the timed samples and spans of `report` when there is one.
    pub fn of(metrics: &'a BTreeMap<String, Metric>, report: Option<&'a RunReport>) -> Self {
        static EMPTY: BTreeMap<String, Series> = BTreeMap::new();
        Measured {
            metrics,
            timelines: report.map_or(&EMPTY, |r| &r.timelines),
            spans: report.map_or(&[], |r| r.spans.as_slice()),
        }
    }

    /// The timed samples of `metric`: a probe's latency timeline, or a counter series.
    /// `true` when they are latencies (a histogram's samples).
    pub fn samples(&self, metric: &str) -> Option<(&'a Series, bool)> {
        if let Some(t) = self.timelines.get(metric) {
            return Some((t, true));
        }
        match self.metrics.get(metric) {
            Some(Metric::Series(s)) => Some((s, false)),
            _ => None,
        }
    }
}

/// The span of the workload `name`, if it ran.
pub fn phase(spans: &[Span], name: &str) -> Option<Intervals> {
    let found: Intervals = spans
        .iter()
        .filter(|s| s.name == name)
        .map(|s| (s.start_ms, s.end_ms.max(s.start_ms)))
        .collect();
    (!found.is_empty()).then_some(found)
}

/// The intervals over which `holds` was true of a sampled series: from one sample to the
/// next whenever both satisfy it. Between two samples the value is unknown, so an
/// interval never extends past a sample that does not satisfy it, nor before the first
/// or after the last; a lone satisfying sample is the instant it was taken.
pub fn intervals_while(samples: &[(u64, f64)], holds: impl Fn(f64) -> bool) -> Intervals {
    let mut sorted: Vec<(u64, f64)> = samples.to_vec();
    sorted.sort_by_key(|&(t, _)| t);
    let mut out: Intervals = Vec::new();
    for (i, &(t, v)) in sorted.iter().enumerate() {
        if !holds(v) {
            continue;
        }
        let end = match sorted.get(i + 1) {
            Some(&(next, w)) if holds(w) => next,
            _ => t,
        };
        match out.last_mut() {
            Some(last) if last.1 >= t => last.1 = last.1.max(end),
            _ => out.push((t, end)),
        }
    }
    out
}

/// The samples taken inside any of `intervals` (ends included), in time order.
pub fn within(samples: &[(u64, f64)], intervals: &[(u64, u64)]) -> Vec<(u64, f64)> {
    let mut out: Vec<(u64, f64)> = samples
        .iter()
        .copied()
        .filter(|&(t, _)| intervals.iter().any(|&(a, b)| a <= t && t <= b))
        .collect();
    out.sort_by_key(|&(t, _)| t);
    out
}

/// Exact statistics of latency samples (nanoseconds): percentiles by nearest rank, the
/// smallest sample at or above the requested fraction of them.
pub fn summarize(unit: Unit, values: &[f64]) -> Summary {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return Summary {
            unit,
            ..Summary::default()
        };
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    // Latencies are non-negative nanoseconds far below 2^63.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let at = |q: f64| {
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        v[rank - 1].round().max(0.0) as u64
    };
    Summary {
        unit,
        count: n as u64,
        min: at(0.0),
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        p999: at(0.999),
        max: at(1.0),
        mean: v.iter().sum::<f64>() / n as f64,
    }
}

/// The fewest samples a window needs before `stat` is judged by default:
/// [`MIN_WINDOW_SAMPLES`], or more for a percentile whose tail needs more
/// ([`tail_samples`]). A `count` is judged whatever it is.
pub fn min_samples(stat: Stat) -> u64 {
    match stat {
        Stat::Count => 0,
        _ => MIN_WINDOW_SAMPLES.max(tail_samples(stat)),
    }
}

/// The fewest samples that put one in a percentile's tail, `1 / (1 - q)`: a p99 of 20
/// reads is only their maximum. 2 for `p50`, 10 for `p90`, 100 for `p99`, 1000 for
/// `p999`; 1 for the other statistics. A check's own `min_samples` cannot go below it.
pub fn tail_samples(stat: Stat) -> u64 {
    match stat {
        Stat::P50 => 2,
        Stat::P90 => 10,
        Stat::P99 => 100,
        Stat::P999 => 1000,
        _ => 1,
    }
}

/// `stat` of the samples selected from a metric: a histogram's samples are summarised
/// exactly, a series' keep their times.
pub fn stat_of(selected: &[(u64, f64)], unit: Unit, latency: bool, stat: Stat) -> Option<f64> {
    if latency {
        let values: Vec<f64> = selected.iter().map(|&(_, v)| v).collect();
        summarize(unit, &values).stat(stat)
    } else {
        Series {
            unit,
            samples: selected.to_vec(),
        }
        .stat(stat)
    }
}

/// One workload's phase with the latency statistics of every probe inside it: what the
/// results and the report show next to the whole-run histograms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseStats {
    pub name: String,
    pub start_ms: u64,
    pub end_ms: u64,
    /// Probe name → the statistics of its samples taken during the phase.
    pub latency: BTreeMap<String, Summary>,
}

/// Per-phase latency statistics of a run, phases in the order they started.
pub fn phase_stats(report: &RunReport) -> Vec<PhaseStats> {
    let mut spans = report.spans.clone();
    spans.sort_by_key(|s| (s.start_ms, s.end_ms));
    spans
        .into_iter()
        .map(|span| {
            let window = [(span.start_ms, span.end_ms.max(span.start_ms))];
            let latency = report
                .timelines
                .iter()
                .map(|(name, series)| {
                    let values: Vec<f64> = within(&series.samples, &window)
                        .into_iter()
                        .map(|(_, v)| v)
                        .collect();
                    (name.clone(), summarize(series.unit, &values))
                })
                .collect();
            PhaseStats {
                name: span.name,
                start_ms: span.start_ms,
                end_ms: span.end_ms,
                latency,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
