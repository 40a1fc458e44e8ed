//! A probe's samples with the time each was taken, for the host to cut by phase or
//! condition. Bounded: past [`MAX_SAMPLES`] every other sample is dropped and from then
//! on only every second one is kept (then every fourth, …), so a long run at a short
//! interval still covers its whole length evenly within a frame the channel carries.

use std::time::{Duration, Instant};

use kchaos_model::metrics::Series;
use kchaos_model::units::Unit;

/// Samples kept per probe: a 1 ms wake-up probe for 50 s, about 1 MiB of JSON.
pub const MAX_SAMPLES: usize = 50_000;

#[derive(Debug, Clone)]
pub struct Timeline {
    samples: Vec<(u64, f64)>,
    /// Keep one sample in `stride`.
    stride: u64,
    seen: u64,
    cap: usize,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline::with_cap(MAX_SAMPLES)
    }
}

impl Timeline {
    pub fn with_cap(cap: usize) -> Timeline {
        Timeline {
            samples: Vec::new(),
            stride: 1,
            seen: 0,
            cap: cap.max(2),
        }
    }

    /// A latency measured from `start`, `epoch` being time zero of the run.
    pub fn latency(&mut self, epoch: Instant, start: Instant, took: Duration) {
        let t_ms =
            u64::try_from(start.saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX);
        self.push(t_ms, took.as_nanos() as f64);
    }

    pub fn push(&mut self, t_ms: u64, value: f64) {
        let keep = self.seen % self.stride == 0;
        self.seen += 1;
        if !keep {
            return;
        }
        if self.samples.len() >= self.cap {
            let mut i = 0;
            self.samples.retain(|_| {
                i += 1;
                i % 2 == 1
            });
            self.stride *= 2;
            // This sample's index may no longer be a multiple of the new stride.
            if (self.seen - 1) % self.stride != 0 {
                return;
            }
        }
        self.samples.push((t_ms, value));
    }

    /// One sample in how many was kept (1: all).
    pub fn stride(&self) -> u64 {
        self.stride
    }

    pub fn into_series(self) -> Series {
        Series {
            unit: Unit::Ns,
            samples: self.samples,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_is_kept_below_the_cap() {
        let mut t = Timeline::with_cap(10);
        for i in 0..10 {
            t.push(i, i as f64);
        }
        assert_eq!(t.stride(), 1);
        assert_eq!(t.into_series().samples.len(), 10);
    }

    /// Past the cap the kept samples stay evenly spread over the whole run: every
    /// stride-th one, from the first to the last.
    #[test]
    fn past_the_cap_the_samples_thin_out_evenly() {
        for (cap, n) in [(10usize, 11u64), (10, 100), (8, 1000), (16, 12_345)] {
            let mut t = Timeline::with_cap(cap);
            for i in 0..n {
                t.push(i, i as f64);
            }
            let stride = t.stride();
            let kept: Vec<u64> = t.into_series().samples.iter().map(|s| s.0).collect();
            assert!(kept.len() <= cap, "{cap} {n}: {}", kept.len());
            let want: Vec<u64> = (0..n).step_by(usize::try_from(stride).unwrap()).collect();
            assert_eq!(kept, want, "cap {cap}, {n} samples, stride {stride}");
        }
    }

    #[test]
    fn latencies_are_placed_at_their_start() {
        let epoch = Instant::now();
        let mut t = Timeline::default();
        t.latency(
            epoch,
            epoch + Duration::from_millis(1500),
            Duration::from_micros(250),
        );
        // A start before the epoch (a clock read just before it) is time zero.
        t.latency(
            epoch + Duration::from_millis(1),
            epoch,
            Duration::from_millis(2),
        );
        assert_eq!(
            t.into_series().samples,
            [(1500, 250_000.0), (0, 2_000_000.0)]
        );
    }
}
