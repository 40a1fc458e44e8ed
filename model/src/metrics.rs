//! Metric values as the runner reports them and `results.json` records them: latency
//! histograms summarised into percentiles, counters sampled over time, and single values.

use serde::{Deserialize, Serialize};

use crate::units::Unit;

/// What shape a metric has; decides which statistics a check may ask of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricKind {
    Histogram,
    Series,
    Value,
}

/// A metric a scenario will produce, known before it runs (used to validate checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricInfo {
    pub kind: MetricKind,
    pub unit: Unit,
}

/// A statistic a check can compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Stat {
    Count,
    Min,
    Max,
    Mean,
    P50,
    P90,
    P99,
    P999,
    First,
    Last,
    Delta,
    Value,
}

impl Stat {
    const HISTOGRAM: &'static [Stat] = &[
        Stat::Count,
        Stat::Min,
        Stat::Mean,
        Stat::P50,
        Stat::P90,
        Stat::P99,
        Stat::P999,
        Stat::Max,
    ];
    const SERIES: &'static [Stat] = &[
        Stat::First,
        Stat::Last,
        Stat::Min,
        Stat::Max,
        Stat::Mean,
        Stat::Delta,
        Stat::Count,
    ];
    const VALUE: &'static [Stat] = &[Stat::Value];

    pub fn parse(text: &str) -> Option<Stat> {
        Some(match text {
            "count" => Stat::Count,
            "min" => Stat::Min,
            "max" => Stat::Max,
            "mean" => Stat::Mean,
            "p50" => Stat::P50,
            "p90" => Stat::P90,
            "p99" => Stat::P99,
            "p999" => Stat::P999,
            "first" => Stat::First,
            "last" => Stat::Last,
            "delta" => Stat::Delta,
            "value" => Stat::Value,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Stat::Count => "count",
            Stat::Min => "min",
            Stat::Max => "max",
            Stat::Mean => "mean",
            Stat::P50 => "p50",
            Stat::P90 => "p90",
            Stat::P99 => "p99",
            Stat::P999 => "p999",
            Stat::First => "first",
            Stat::Last => "last",
            Stat::Delta => "delta",
            Stat::Value => "value",
        }
    }

    /// The statistics that make sense for a metric kind.
    pub fn allowed(kind: MetricKind) -> &'static [Stat] {
        match kind {
            MetricKind::Histogram => Stat::HISTOGRAM,
            MetricKind::Series => Stat::SERIES,
            MetricKind::Value => Stat::VALUE,
        }
    }

    /// `count` is a number of events whatever the metric's unit.
    pub fn unit_for(self, metric_unit: Unit) -> Unit {
        match self {
            Stat::Count => Unit::Count,
            _ => metric_unit,
        }
    }
}

display_as_str!(Stat);

/// A recorded metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Metric {
    Histogram(Summary),
    Series(Series),
    Value(Gauge),
}

impl Metric {
    pub fn kind(&self) -> MetricKind {
        match self {
            Metric::Histogram(_) => MetricKind::Histogram,
            Metric::Series(_) => MetricKind::Series,
            Metric::Value(_) => MetricKind::Value,
        }
    }

    pub fn unit(&self) -> Unit {
        match self {
            Metric::Histogram(s) => s.unit,
            Metric::Series(s) => s.unit,
            Metric::Value(g) => g.unit,
        }
    }

    /// The value of `stat`, or `None` when the metric has no data for it (an empty
    /// histogram has no p99; a check on it must not pass by reading zero).
    pub fn stat(&self, stat: Stat) -> Option<f64> {
        match self {
            Metric::Histogram(s) => s.stat(stat),
            Metric::Series(s) => s.stat(stat),
            Metric::Value(g) => (stat == Stat::Value).then_some(g.value),
        }
    }

    /// A one-line human summary for terminal tables.
    pub fn brief(&self) -> String {
        match self {
            Metric::Histogram(s) if s.count == 0 => "no samples".to_owned(),
            Metric::Histogram(s) => format!(
                "n={} p50={} p99={} max={}",
                s.count,
                s.unit.format(s.p50 as f64),
                s.unit.format(s.p99 as f64),
                s.unit.format(s.max as f64)
            ),
            Metric::Series(s) => match (s.stat(Stat::First), s.stat(Stat::Last), s.stat(Stat::Max))
            {
                (Some(first), Some(last), Some(max)) => format!(
                    "{} -> {} (max {}, {} samples)",
                    s.unit.format(first),
                    s.unit.format(last),
                    s.unit.format(max),
                    s.samples.len()
                ),
                _ => "no samples".to_owned(),
            },
            Metric::Value(g) => g.unit.format(g.value),
        }
    }
}

/// Percentile summary of a latency (or other) histogram. Values are in `unit`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub unit: Unit,
    pub count: u64,
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Summary {
    pub fn stat(&self, stat: Stat) -> Option<f64> {
        if stat == Stat::Count {
            return Some(self.count as f64);
        }
        if self.count == 0 {
            return None;
        }
        Some(match stat {
            Stat::Min => self.min as f64,
            Stat::Max => self.max as f64,
            Stat::Mean => self.mean,
            Stat::P50 => self.p50 as f64,
            Stat::P90 => self.p90 as f64,
            Stat::P99 => self.p99 as f64,
            Stat::P999 => self.p999 as f64,
            _ => return None,
        })
    }
}

/// A counter sampled over time: `(milliseconds since the workload phase began, value)`.
/// Serialised with its first/last/min/max so scripts need not recompute them.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub unit: Unit,
    pub samples: Vec<(u64, f64)>,
}

impl Series {
    pub fn new(unit: Unit) -> Series {
        Series {
            unit,
            samples: Vec::new(),
        }
    }

    pub fn stat(&self, stat: Stat) -> Option<f64> {
        let values = || self.samples.iter().map(|&(_, v)| v);
        match stat {
            Stat::Count => Some(self.samples.len() as f64),
            Stat::First => self.samples.first().map(|&(_, v)| v),
            Stat::Last => self.samples.last().map(|&(_, v)| v),
            Stat::Min => values().reduce(f64::min),
            Stat::Max => values().reduce(f64::max),
            Stat::Mean => (!self.samples.is_empty())
                .then(|| values().sum::<f64>() / self.samples.len() as f64),
            Stat::Delta => Some(self.stat(Stat::Last)? - self.stat(Stat::First)?),
            _ => None,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct SeriesRepr {
    unit: Unit,
    samples: Vec<(u64, f64)>,
    #[serde(default, skip_deserializing)]
    first: Option<f64>,
    #[serde(default, skip_deserializing)]
    last: Option<f64>,
    #[serde(default, skip_deserializing)]
    min: Option<f64>,
    #[serde(default, skip_deserializing)]
    max: Option<f64>,
}

impl Serialize for Series {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        SeriesRepr {
            unit: self.unit,
            samples: self.samples.clone(),
            first: self.stat(Stat::First),
            last: self.stat(Stat::Last),
            min: self.stat(Stat::Min),
            max: self.stat(Stat::Max),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Series {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let repr = SeriesRepr::deserialize(d)?;
        Ok(Series {
            unit: repr.unit,
            samples: repr.samples,
        })
    }
}

/// A single number, e.g. how many cgroups a workload created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gauge {
    pub unit: Unit,
    pub value: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_histograms_have_no_percentiles() {
        let empty = Metric::Histogram(Summary {
            unit: Unit::Ns,
            ..Summary::default()
        });
        assert_eq!(empty.stat(Stat::P99), None);
        assert_eq!(empty.stat(Stat::Count), Some(0.0));
    }

    #[test]
    fn series_statistics() {
        let series = Series {
            unit: Unit::Count,
            samples: vec![(0, 3.0), (500, 10.0), (1000, 7.0)],
        };
        assert_eq!(series.stat(Stat::First), Some(3.0));
        assert_eq!(series.stat(Stat::Last), Some(7.0));
        assert_eq!(series.stat(Stat::Max), Some(10.0));
        assert_eq!(series.stat(Stat::Delta), Some(4.0));
        assert_eq!(Series::new(Unit::Count).stat(Stat::Last), None);
    }

    #[test]
    fn series_json_carries_its_summary_and_round_trips() -> Result<(), serde_json::Error> {
        let metric = Metric::Series(Series {
            unit: Unit::Bytes,
            samples: vec![(0, 1.0), (10, 2.0)],
        });
        let json = serde_json::to_value(&metric)?;
        assert_eq!(json["kind"], "series");
        assert_eq!(json["last"], 2.0);
        let back: Metric = serde_json::from_value(json)?;
        assert_eq!(back, metric);
        Ok(())
    }
}
