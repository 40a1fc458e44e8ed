//! `systemd-units`: a flood of transient units through systemd's D-Bus API, as container
//! runtimes do (incident 3): `StartTransientUnit`, wait for `JobRemoved`, `StopUnit`,
//! wait again; slices, scopes with a real process, services, and runc's check that
//! creates and removes `libcontainer_<pid>_systemd_test_default.slice`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{Common, Entry, RawWorkload, WorkloadSpec};
use crate::metrics::MetricKind;
use crate::scenario::ctx::Ctx;
use crate::units::{duration_ms, Unit};

pub(crate) const METRICS: &[(&str, MetricKind, Unit)] = &[
    ("start", MetricKind::Histogram, Unit::Ns),
    ("stop", MetricKind::Histogram, Unit::Ns),
    ("units", MetricKind::Value, Unit::Count),
    ("leaked", MetricKind::Value, Unit::Count),
    // The longest time systemd sent nothing while the flood waited on it.
    ("silence", MetricKind::Value, Unit::Ns),
    // systemd's D-Bus cookie (sd-bus message serial) on its system-bus connection: the
    // newest seen, how far it advanced during the flood, and per second.
    ("cookie", MetricKind::Value, Unit::Count),
    ("messages", MetricKind::Value, Unit::Count),
    ("message_rate", MetricKind::Value, Unit::Count),
    // With `cookie_start`: systemd's cookie as found before the fast-forward and the
    // value it was moved to (verified by the next reply's serial).
    ("cookie_before", MetricKind::Value, Unit::Count),
    ("cookie_start", MetricKind::Value, Unit::Count),
    // Times the flood saw the cookie pass 0xffffffff and cycle to 0x80000000 (the fix),
    // and how many messages systemd sent after the first cycle: a run that never
    // crossed the top tested nothing of the overflow.
    ("cookie_cycles", MetricKind::Value, Unit::Count),
    ("messages_after_cycle", MetricKind::Value, Unit::Count),
];

/// The largest cookie classic D-Bus can carry: the serial is 32 bits on the wire.
pub const COOKIE_MAX: u64 = 0xffff_ffff;
/// The highest `cookie_start`: 256 messages below the top, so the reply that verifies
/// the fast-forward and the flood's first units come before the overflow (a systemd
/// without the fix would otherwise fall silent before the flood began).
pub const COOKIE_START_MAX: u64 = COOKIE_MAX - 0xff;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnitKind {
    Slice,
    /// A scope with a process of the runner's moved into it (`PIDs`).
    Scope,
    /// A service running `sleep`, stopped again.
    Service,
    /// runc's `UseSystemd()` check: `libcontainer_<pid>_systemd_test_default.slice`
    /// created and removed.
    RuncCheck,
}

impl UnitKind {
    const ALL: [UnitKind; 4] = [
        UnitKind::Slice,
        UnitKind::Scope,
        UnitKind::Service,
        UnitKind::RuncCheck,
    ];
}

/// One iteration = one unit started and stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemdUnits {
    /// Units in flight at once.
    pub concurrency: u32,
    /// D-Bus connections the workers share (runtimes mostly use one).
    pub connections: u32,
    /// Kinds, used in turn.
    pub kinds: Vec<UnitKind>,
    /// At most this many new units per second.
    pub rate: Option<f64>,
    /// How long a unit stays active before it is stopped.
    #[serde(with = "duration_ms")]
    pub lifetime: Duration,
    /// How long a job may take to finish (its `JobRemoved`) before it counts as failed.
    #[serde(with = "duration_ms")]
    pub job_timeout: Duration,
    /// Move systemd's sd-bus cookie on its system-bus connection to this value before
    /// the flood (time compression: the 2^32 messages of months on a node, skipped as
    /// the incident's engineers did with gdb). `None`: the cookie is left where it is.
    #[serde(default)]
    pub cookie_start: Option<u32>,
}

/// `cookie_start` as written: a TOML integer (`0xffffff00` is one) or a string holding
/// one in decimal or `0x` hex, as the sd-bus sources print it.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum CookieRaw {
    Int(u64),
    Text(String),
}

/// A cookie value from its raw form; `Err` says what is allowed.
fn cookie_value(raw: &CookieRaw) -> Result<u32, String> {
    let parsed = match raw {
        CookieRaw::Int(v) => Some(*v),
        CookieRaw::Text(t) => {
            let t = t.trim();
            match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16).ok(),
                None => t.replace('_', "").parse().ok(),
            }
        }
    };
    match parsed {
        Some(v) if (1..=COOKIE_START_MAX).contains(&v) => {
            u32::try_from(v).map_err(|e| e.to_string())
        }
        Some(v) => Err(format!(
            "{v:#x} is out of range; allowed: 0x1..=0xffffff00 (0xffffff00 leaves 256 messages before the overflow at 0xffffffff)"
        )),
        None => Err(
            "`cookie_start` is an integer, e.g. 0xffffff00 (TOML hex) or \"0xffffff00\"".to_owned(),
        ),
    }
}
raw_workload! {
    concurrency: Option<Spanned<u64>>,
    connections: Option<Spanned<u64>>,
    kinds: Option<Vec<UnitKind>>,
    rate: Option<Spanned<f64>>,
    lifetime: Option<Spanned<String>>,
    job_timeout: Option<Spanned<String>>,
    cookie_start: Option<Spanned<CookieRaw>>,
}

pub(super) fn parse(ctx: &mut Ctx<'_>, entry: &Entry<'_, '_>) -> Option<super::Workload> {
    // Not `entry.read`: the image check stands between reading the table and the common
    // keys, so an author sees it first.
    let raw: Raw = ctx.deserialize(entry.value)?;
    if !entry.vm.image.runs_systemd() {
        ctx.error(
            entry.kind.span(),
            "`systemd-units` needs systemd: set `[vm] image = \"systemd\"` (or \"systemd-defects\")",
        );
    }
    let common = Common::parse(ctx, entry.index, "systemd-units", raw.common());
    let kinds = raw.kinds.unwrap_or_else(|| UnitKind::ALL.to_vec());
    if kinds.is_empty() {
        ctx.error(
            entry.value.span(),
            "`kinds` needs at least one of: slice, scope, service, runc-check",
        );
    }
    let rate = ctx.positive(
        &raw.rate,
        f64::INFINITY,
        "`rate` is units per second, above 0",
    );
    let spec = SystemdUnits {
        concurrency: ctx.count_u32(&raw.concurrency, 1, 1024, 4),
        connections: ctx.count_u32(&raw.connections, 1, 64, 1),
        kinds,
        rate,
        lifetime: ctx.duration(&raw.lifetime).unwrap_or(Duration::ZERO),
        job_timeout: ctx
            .duration(&raw.job_timeout)
            .unwrap_or(Duration::from_secs(30)),
        cookie_start: raw
            .cookie_start
            .as_ref()
            .and_then(|c| ctx.or_error(c.span(), cookie_value(c.get_ref()))),
    };
    Some(common.with(WorkloadSpec::SystemdUnits(spec)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_start_takes_integers_and_hex_text_within_32_bits() {
        for (raw, want) in [
            (CookieRaw::Int(0xffff_ff00), Ok(0xffff_ff00)),
            (CookieRaw::Text("0xffffff00".into()), Ok(0xffff_ff00)),
            (CookieRaw::Text("0XFFFF_FF00".into()), Ok(0xffff_ff00)),
            (CookieRaw::Text("4294967040".into()), Ok(0xffff_ff00)),
            (CookieRaw::Int(COOKIE_START_MAX), Ok(0xffff_ff00)),
            (CookieRaw::Int(1), Ok(1)),
        ] {
            assert_eq!(cookie_value(&raw), want, "{raw:?}");
        }
        for raw in [
            CookieRaw::Int(0),
            CookieRaw::Int(COOKIE_START_MAX + 1),
            CookieRaw::Int(COOKIE_MAX),
            CookieRaw::Int(COOKIE_MAX + 1),
            CookieRaw::Text("0x1_0000_0000".into()),
            CookieRaw::Text("soon".into()),
            CookieRaw::Text("-5".into()),
        ] {
            assert!(cookie_value(&raw).is_err(), "{raw:?} must be refused");
        }
    }
}
