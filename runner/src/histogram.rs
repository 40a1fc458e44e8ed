//! Latency recording: an HDR histogram (3 significant digits, auto-resizing), summarised
//! into the percentiles the results contract promises.

use std::time::Duration;

use hdrhistogram::Histogram;
use kchaos_model::metrics::Summary;
use kchaos_model::units::Unit;

#[derive(Debug, Clone)]
pub struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency::new()
    }
}

impl Latency {
    pub fn new() -> Latency {
        // 3 significant digits: 0.1% resolution, plenty for tail latencies.
        let mut hist = Histogram::new(3).unwrap_or_else(|_| {
            Histogram::new_with_max(u64::MAX / 2, 3).unwrap_or_else(|_| unreachable_hist())
        });
        hist.auto(true);
        Latency { hist }
    }

    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
        // With auto-resize enabled, recording cannot fail for any u64 value.
        let _ = self.hist.record(ns);
    }

    pub fn merge(&mut self, other: &Latency) {
        let _ = self.hist.add(&other.hist);
    }

    pub fn summary(&self) -> Summary {
        if self.hist.is_empty() {
            return Summary {
                unit: Unit::Ns,
                ..Summary::default()
            };
        }
        let q = |p: f64| self.hist.value_at_quantile(p);
        Summary {
            unit: Unit::Ns,
            count: self.hist.len(),
            min: self.hist.min(),
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            p999: q(0.999),
            max: self.hist.max(),
            mean: self.hist.mean(),
        }
    }
}

/// `Histogram::new(3)` only fails for sigfig > 5; kept separate so the constructor reads
/// plainly.
fn unreachable_hist() -> Histogram<u64> {
    #[allow(clippy::panic)]
    {
        panic!("hdrhistogram rejected 3 significant digits")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_percentiles() {
        let mut l = Latency::new();
        for ms in 1..=100 {
            l.record(Duration::from_millis(ms));
        }
        let s = l.summary();
        assert_eq!(s.count, 100);
        assert!((s.p50 as f64 - 50e6).abs() / 50e6 < 0.01, "{}", s.p50);
        assert!((s.p99 as f64 - 99e6).abs() / 99e6 < 0.01, "{}", s.p99);
        assert!(s.max >= 100_000_000 - 100_000);
        assert_eq!(Latency::new().summary().count, 0);
    }
}
