//! `hold`: do nothing to the kernel for a stated time, so the state the workloads before
//! it left (a thousand removed memory cgroups still dying) lasts long enough to be
//! measured, and is its own phase for the checks (`memory_stat_read[hold].p50`).

use serde::{Deserialize, Serialize};

use super::{Entry, WorkloadSpec};
use crate::metrics::MetricKind;
use crate::scenario::ctx::Ctx;
use crate::units::Unit;

pub(crate) const METRICS: &[(&str, MetricKind, Unit)] = &[];

/// Holds for the workload's `duration` (required), or until the run is stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {}

raw_workload! {}

pub(super) fn parse(ctx: &mut Ctx<'_>, entry: &Entry<'_, '_>) -> Option<super::Workload> {
    let (raw, common) = entry.read::<Raw>(ctx)?;
    if raw.duration.is_none() {
        ctx.error(
            entry.value.span(),
            "a `hold` needs `duration`: how long to hold the state, e.g. duration = \"15s\"",
        );
        return None;
    }
    if let Some(it) = &raw.iterations {
        ctx.error(
            it.span(),
            "a `hold` has no iterations; it lasts its `duration`",
        );
        return None;
    }
    Some(common.with(WorkloadSpec::Hold(Hold {})))
}

#[cfg(test)]
mod tests {
    use crate::scenario::{parse, WorkloadSpec};

    fn hold(keys: &str) -> Result<crate::scenario::Scenario, String> {
        let src = format!(
            "[scenario]\nname = \"h\"\n[[workload]]\nkind = \"cgroup-churn\"\nname = \"churn\"\n[[workload]]\nkind = \"hold\"\nname = \"hold\"\nafter = \"churn\"\n{keys}"
        );
        parse("h.toml", &src).map_err(|e| e.to_string())
    }

    #[test]
    fn a_hold_lasts_its_stated_duration_and_nothing_else() {
        let s = hold("duration = \"15s\"\n").unwrap();
        let w = &s.workloads[1];
        assert_eq!(w.spec, WorkloadSpec::Hold(super::Hold {}));
        assert_eq!(w.duration, Some(std::time::Duration::from_secs(15)));
        assert_eq!(w.after.as_deref(), Some("churn"));
        let none = hold("").unwrap_err();
        assert!(
            none.contains("h.toml:6:1: workload[1]: a `hold` needs `duration`"),
            "{none}"
        );
        let counted = hold("duration = \"1s\"\niterations = 3\n").unwrap_err();
        assert!(
            counted.contains("workload[1].iterations: a `hold` has no iterations"),
            "{counted}"
        );
    }
}
