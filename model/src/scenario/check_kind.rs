//! What a check tells when it fails, so a failed cell's reasons come in the order a
//! person acting on them needs: the kernel stalled, something leaked, how the kernel
//! behaved, and last whether the workload did enough to test anything at all.

use serde::{Deserialize, Serialize};

use super::CmpOp;
use crate::metrics::Stat;
use crate::units::Unit;

/// The class of a check, from most to least telling.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// An operation, or the system, blocked for a long time (`mkdir.max <= 10s`,
    /// `silence.value <= 5s`).
    Stall,
    /// Something the run made is still there (`leaked == 0`, `dying <= 2`,
    /// `d_state.last == 0`).
    Leak,
    /// How the kernel behaved: latencies, shares (`p99 <= 50ms`, `share_min >= 0.5`).
    #[default]
    Behaviour,
    /// Whether the run did enough to test anything (`cgroups >= 1000`,
    /// `cookie_cycles >= 1`): a failure here says the test was not made.
    Coverage,
}

impl CheckKind {
    pub const ALL: [CheckKind; 4] = [
        CheckKind::Stall,
        CheckKind::Leak,
        CheckKind::Behaviour,
        CheckKind::Coverage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Stall => "stall",
            CheckKind::Leak => "leak",
            CheckKind::Behaviour => "behaviour",
            CheckKind::Coverage => "coverage",
        }
    }

    pub fn parse(text: &str) -> Option<CheckKind> {
        CheckKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// The class a check has when the scenario does not say: an upper bound on the
    /// longest of a time is a stall; an upper bound (or `==`) on a count, a leak; a
    /// lower bound on a count, coverage; anything else, behaviour (a ratio's lower
    /// bound is a share: `share_min >= 0.5` is starvation, not coverage).
    pub fn infer(stat: Stat, op: CmpOp, unit: Unit) -> CheckKind {
        let upper = matches!(op, CmpOp::Lt | CmpOp::Le | CmpOp::Eq);
        let lower = matches!(op, CmpOp::Gt | CmpOp::Ge);
        match unit {
            Unit::Ns if upper && matches!(stat, Stat::Max | Stat::Value | Stat::Last) => {
                CheckKind::Stall
            }
            Unit::Count | Unit::Bytes if upper => CheckKind::Leak,
            Unit::Count if lower => CheckKind::Coverage,
            _ => CheckKind::Behaviour,
        }
    }
}

display_as_str!(CheckKind);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_kinds_of_check_are_inferred_as_a_person_reads_them() {
        use CmpOp::*;
        for (what, stat, op, unit, kind) in [
            (
                "churn.rmdir.max <= 10s",
                Stat::Max,
                Le,
                Unit::Ns,
                CheckKind::Stall,
            ),
            (
                "units.silence.value <= 5s",
                Stat::Value,
                Le,
                Unit::Ns,
                CheckKind::Stall,
            ),
            (
                "memory_stat_read.p50 <= 50ms",
                Stat::P50,
                Le,
                Unit::Ns,
                CheckKind::Behaviour,
            ),
            (
                "pods.teardown.p99 <= 3s",
                Stat::P99,
                Le,
                Unit::Ns,
                CheckKind::Behaviour,
            ),
            (
                "units.leaked.value == 0",
                Stat::Value,
                Eq,
                Unit::Count,
                CheckKind::Leak,
            ),
            (
                "reclaim.dying.value <= 2",
                Stat::Value,
                Le,
                Unit::Count,
                CheckKind::Leak,
            ),
            (
                "d_state.last == 0",
                Stat::Last,
                Eq,
                Unit::Count,
                CheckKind::Leak,
            ),
            (
                "net_devices.delta <= 0",
                Stat::Delta,
                Le,
                Unit::Count,
                CheckKind::Leak,
            ),
            (
                "churn.cgroups.value >= 1000",
                Stat::Value,
                Ge,
                Unit::Count,
                CheckKind::Coverage,
            ),
            (
                "cfs.retunes.value >= 20",
                Stat::Value,
                Ge,
                Unit::Count,
                CheckKind::Coverage,
            ),
            (
                "cfs.share_min.value >= 0.5",
                Stat::Value,
                Ge,
                Unit::Ratio,
                CheckKind::Behaviour,
            ),
            (
                "cfs.share_max.value <= 1.5",
                Stat::Value,
                Le,
                Unit::Ratio,
                CheckKind::Behaviour,
            ),
        ] {
            assert_eq!(CheckKind::infer(stat, op, unit), kind, "{what}");
        }
    }

    #[test]
    fn kinds_order_from_most_to_least_telling_and_parse_back() {
        let mut sorted = CheckKind::ALL;
        sorted.sort();
        assert_eq!(sorted, CheckKind::ALL);
        for k in CheckKind::ALL {
            assert_eq!(CheckKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(CheckKind::parse("throughput"), None);
    }
}
