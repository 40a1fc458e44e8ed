//! Usage against allowance, per leaf, over the run: the measure behind `share_min` and
//! `share_max`.

use std::time::Instant;

use kchaos_model::scenario::workload::CfsQuota;
use kchaos_model::scenario::CgroupMode;

use super::{allowance, Bandwidth, Leaf};
use crate::workloads::Errors;

/// Each leaf's usage against what was allowed, added up interval by interval: a
/// checkpoint (each retune, and the end) closes the interval since the last one. It
/// keeps its own checkpoint so the loop and the end settle the same way.
pub(super) struct Ledger<'a> {
    pub(super) used_us: Vec<f64>,
    pub(super) allowed_us: Vec<f64>,
    /// Each leaf's usage at the last checkpoint; `None` until it could be read.
    last_usage: Vec<Option<f64>>,
    last_at: Instant,
    /// What the allowance depends on besides the bandwidth, fixed for the run.
    spec: &'a CfsQuota,
    thread_demand: f64,
    cpus: f64,
    mode: CgroupMode,
}

impl<'a> Ledger<'a> {
    /// The first checkpoint: nothing used, nothing allowed, each leaf's usage now.
    pub(super) fn open(
        leaves: &[Leaf],
        spec: &'a CfsQuota,
        thread_demand: f64,
        cpus: f64,
        mode: CgroupMode,
    ) -> Ledger<'a> {
        Ledger {
            used_us: vec![0.0; leaves.len()],
            allowed_us: vec![0.0; leaves.len()],
            last_usage: leaves.iter().map(|l| l.usage_us(mode).ok()).collect(),
            last_at: Instant::now(),
            spec,
            thread_demand,
            cpus,
            mode,
        }
    }

    /// Closes the interval since the last checkpoint: usage against allowance.
    pub(super) fn settle(&mut self, leaves: &[Leaf], bandwidth: &[Bandwidth], errors: &mut Errors) {
        let (spec, thread_demand, cpus, mode) =
            (self.spec, self.thread_demand, self.cpus, self.mode);
        let now = Instant::now();
        let dt_us = now.duration_since(self.last_at).as_secs_f64() * 1e6;
        let demand: Vec<f64> = bandwidth
            .iter()
            .map(|bw| bw.share().min(thread_demand))
            .collect();
        let allowed = allowance(
            &demand,
            spec.width as usize,
            spec.depth,
            spec.inner_share,
            cpus,
        );
        for (i, leaf) in leaves.iter().enumerate() {
            match (leaf.usage_us(mode), self.last_usage[i]) {
                (Ok(now_us), Some(before)) => {
                    self.used_us[i] += (now_us - before).max(0.0);
                    self.allowed_us[i] += allowed[i] * dt_us;
                    self.last_usage[i] = Some(now_us);
                }
                (Ok(now_us), None) => self.last_usage[i] = Some(now_us),
                (Err(e), _) => errors.push(kchaos_model::error_chain(&e)),
            }
        }
        self.last_at = now;
    }
}
