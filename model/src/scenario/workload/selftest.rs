//! `selftest`: deliberately break the guest, to prove that kchaos notices. Never part of
//! a regression suite: these scenarios live in `scenarios/selftest/`, and every cell that
//! runs one carries a note saying so.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{Entry, WorkloadSpec};
use crate::metrics::MetricKind;
use crate::scenario::ctx::Ctx;
use crate::units::{duration_ms, Unit};

pub(crate) const METRICS: &[(&str, MetricKind, Unit)] = &[];

pub const ACTIONS: &[&str] = &["panic", "kmsg", "wedge", "silence", "freeze-systemd"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selftest {
    pub action: SelftestAction,
    /// How long after the workload starts.
    #[serde(with = "duration_ms")]
    pub delay: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum SelftestAction {
    /// `echo c > /proc/sysrq-trigger`: a real kernel panic.
    Panic,
    /// Write a line to `/dev/kmsg`, e.g. an incident's signature, to drive the detection
    /// path end to end.
    Kmsg { line: String },
    /// SCHED_FIFO busy loops on every CPU with RT throttling off: the guest stops
    /// scheduling anything else, the heartbeat thread included.
    Wedge,
    /// The runner stops writing to the control channel (as if it were stuck).
    Silence,
    /// systemd (PID 1) frozen through its cgroup (`init.scope/cgroup.freeze`): the
    /// kernel ignores SIGSTOP for PID 1, the freezer does not. Needs the systemd image.
    FreezeSystemd,
}

impl Selftest {
    pub fn describe(&self) -> String {
        let what = match &self.action {
            SelftestAction::Panic => "panics the kernel (sysrq c)".to_owned(),
            SelftestAction::Kmsg { line } => format!("writes `{line}` to /dev/kmsg"),
            SelftestAction::Wedge => "wedges every CPU with SCHED_FIFO busy loops".to_owned(),
            SelftestAction::Silence => "silences the runner".to_owned(),
            SelftestAction::FreezeSystemd => {
                "freezes systemd (PID 1) through its cgroup".to_owned()
            }
        };
        format!(
            "self-test: this scenario deliberately {what} after {:?}",
            self.delay
        )
    }
}

raw_workload! {
    action: Spanned<String>,
    delay: Option<Spanned<String>>,
    line: Option<Spanned<String>>,
}

pub(super) fn parse(ctx: &mut Ctx<'_>, entry: &Entry<'_, '_>) -> Option<super::Workload> {
    let (raw, common) = entry.read::<Raw>(ctx)?;
    let action = match (raw.action.get_ref().as_str(), &raw.line) {
        ("kmsg", Some(line)) if !line.get_ref().trim().is_empty() => SelftestAction::Kmsg {
            line: line.get_ref().clone(),
        },
        ("kmsg", _) => {
            ctx.error(
                raw.action.span(),
                "action `kmsg` needs `line`, the text to write to /dev/kmsg",
            );
            return None;
        }
        (_, Some(line)) => {
            ctx.error(line.span(), "`line` belongs to action `kmsg` only");
            return None;
        }
        ("panic", None) => SelftestAction::Panic,
        ("wedge", None) => SelftestAction::Wedge,
        ("silence", None) => SelftestAction::Silence,
        ("freeze-systemd", None) => {
            if !entry.vm.image.runs_systemd() {
                ctx.error(
                    raw.action.span(),
                    "`freeze-systemd` needs systemd: set `[vm] image = \"systemd\"`",
                );
            }
            SelftestAction::FreezeSystemd
        }
        (other, None) => {
            ctx.error(
                raw.action.span(),
                format!(
                    "unknown self-test action `{other}`; allowed: {}",
                    ACTIONS.join(", ")
                ),
            );
            return None;
        }
    };
    let delay = ctx.duration(&raw.delay).unwrap_or(Duration::from_secs(1));
    Some(common.with(WorkloadSpec::Selftest(Selftest { action, delay })))
}
