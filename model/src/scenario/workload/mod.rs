//! `[[workload]]` entries: what the runner does to the kernel. Each kind lives in its own
//! module with its raw form, its validated form and the metrics it produces.

/// Declares a kind's raw table, `Raw`: the keys every workload has (`kind`, `name`,
/// `iterations`, `duration`, `max_errors`, `after`) and then the kind's own, unknown keys
/// rejected; `Raw::common()` hands the shared ones to [`Common::parse`] (through
/// [`Entry::read`]). (serde cannot
/// `flatten` into a struct that denies unknown fields, hence a macro.)
macro_rules! raw_workload {
    ($($(#[$attr:meta])* $field:ident: $ty:ty,)*) => {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            #[allow(dead_code)]
            kind: String,
            name: Option<toml::Spanned<String>>,
            iterations: Option<toml::Spanned<u64>>,
            duration: Option<toml::Spanned<String>>,
            max_errors: Option<u64>,
            after: Option<toml::Spanned<String>>,
            $($(#[$attr])* $field: $ty,)*
        }

        impl super::RawWorkload for Raw {
            fn common(&self) -> super::RawCommon<'_> {
                super::RawCommon {
                    name: &self.name,
                    iterations: &self.iterations,
                    duration: &self.duration,
                    max_errors: self.max_errors,
                    after: &self.after,
                }
            }
        }
    };
}

pub mod cfs_quota;
pub mod cgroup_churn;
pub mod exec;
pub mod hold;
pub mod memcg_reclaim;
pub mod selftest;
pub mod systemd_units;
pub mod veth_storm;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::de::DeValue;
use toml::Spanned;

pub use self::cfs_quota::CfsQuota;
pub use self::cgroup_churn::CgroupChurn;
pub use self::exec::Exec;
pub use self::hold::Hold;
pub use self::memcg_reclaim::MemcgReclaim;
pub use self::selftest::{Selftest, SelftestAction};
pub use self::systemd_units::{SystemdUnits, UnitKind};
pub use self::veth_storm::{DestroyOrder, VethStorm};
use super::ctx::{check_name, Ctx};
use super::VmSpec;
use crate::metrics::{MetricInfo, MetricKind};
use crate::units::{opt_duration_ms, Unit};

/// The workload kinds this version understands.
pub const KINDS: &[&str] = &[
    "cgroup-churn",
    "memcg-reclaim",
    "cfs-quota",
    "veth-storm",
    "systemd-units",
    "exec",
    "hold",
    "selftest",
];

/// A validated workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    pub name: String,
    /// Stop after this many iterations (what one iteration is depends on the kind).
    pub iterations: Option<u64>,
    /// Stop after this long; the scenario's `duration` caps it either way.
    #[serde(with = "opt_duration_ms")]
    pub duration: Option<Duration>,
    /// Operation errors tolerated before the cell fails (default 0: in the incidents, a
    /// failing mkdir was the symptom).
    pub max_errors: u64,
    /// Start only when this workload has finished (default: start with the others).
    pub after: Option<String>,
    pub spec: WorkloadSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum WorkloadSpec {
    CgroupChurn(CgroupChurn),
    MemcgReclaim(MemcgReclaim),
    CfsQuota(CfsQuota),
    VethStorm(VethStorm),
    SystemdUnits(SystemdUnits),
    Exec(Exec),
    Hold(Hold),
    Selftest(Selftest),
}

impl WorkloadSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            WorkloadSpec::CgroupChurn(_) => "cgroup-churn",
            WorkloadSpec::MemcgReclaim(_) => "memcg-reclaim",
            WorkloadSpec::CfsQuota(_) => "cfs-quota",
            WorkloadSpec::VethStorm(_) => "veth-storm",
            WorkloadSpec::SystemdUnits(_) => "systemd-units",
            WorkloadSpec::Exec(_) => "exec",
            WorkloadSpec::Hold(_) => "hold",
            WorkloadSpec::Selftest(_) => "selftest",
        }
    }

    /// Kernel modules the guest must load for this workload.
    pub fn modules(&self) -> &'static [&'static str] {
        match self {
            WorkloadSpec::VethStorm(_) => &["veth"],
            WorkloadSpec::CgroupChurn(_)
            | WorkloadSpec::MemcgReclaim(_)
            | WorkloadSpec::CfsQuota(_)
            | WorkloadSpec::Exec(_)
            | WorkloadSpec::Hold(_)
            | WorkloadSpec::SystemdUnits(_)
            | WorkloadSpec::Selftest(_) => &[],
        }
    }

    /// Metric suffixes and shapes this workload reports, appended to its name.
    fn metric_suffixes(&self) -> Vec<(&'static str, MetricKind, Unit)> {
        match self {
            WorkloadSpec::CgroupChurn(_) => cgroup_churn::METRICS.to_vec(),
            WorkloadSpec::MemcgReclaim(_) => memcg_reclaim::METRICS.to_vec(),
            WorkloadSpec::CfsQuota(spec) => cfs_quota::metrics(spec),
            WorkloadSpec::VethStorm(_) => veth_storm::METRICS.to_vec(),
            WorkloadSpec::SystemdUnits(_) => systemd_units::METRICS.to_vec(),
            WorkloadSpec::Exec(_) => exec::METRICS.to_vec(),
            WorkloadSpec::Hold(_) => hold::METRICS.to_vec(),
            WorkloadSpec::Selftest(_) => selftest::METRICS.to_vec(),
        }
    }
}

impl Workload {
    /// The metrics this workload reports: `<name>.<suffix>`, plus `<name>.errors` and
    /// `<name>.wall` (how long it ran).
    pub fn metrics(&self) -> Vec<(String, MetricInfo)> {
        let mut out: Vec<(String, MetricInfo)> = self
            .spec
            .metric_suffixes()
            .into_iter()
            .map(|(suffix, kind, unit)| {
                (format!("{}.{suffix}", self.name), MetricInfo { kind, unit })
            })
            .collect();
        out.push((
            format!("{}.errors", self.name),
            MetricInfo {
                kind: MetricKind::Value,
                unit: Unit::Count,
            },
        ));
        out.push((
            format!("{}.wall", self.name),
            MetricInfo {
                kind: MetricKind::Value,
                unit: Unit::Ns,
            },
        ));
        out
    }

    pub(crate) fn parse(
        ctx: &mut Ctx<'_>,
        index: usize,
        kind: &Spanned<String>,
        value: &Spanned<DeValue<'_>>,
        vm: &VmSpec,
    ) -> Option<Workload> {
        let entry = Entry {
            index,
            kind,
            value,
            vm,
        };
        match kind.get_ref().as_str() {
            "cgroup-churn" => cgroup_churn::parse(ctx, &entry),
            "memcg-reclaim" => memcg_reclaim::parse(ctx, &entry),
            "cfs-quota" => cfs_quota::parse(ctx, &entry),
            "veth-storm" => veth_storm::parse(ctx, &entry),
            "systemd-units" => systemd_units::parse(ctx, &entry),
            "exec" => exec::parse(ctx, &entry),
            "hold" => hold::parse(ctx, &entry),
            "selftest" => selftest::parse(ctx, &entry),
            _ => ctx.unknown_kind("workload", kind, KINDS),
        }
    }
}

/// A cgroup path relative to a hierarchy root (`kchaos`, `kubepods/burstable`), or
/// `default` when absent.
pub(crate) fn cgroup_path(
    ctx: &mut Ctx<'_>,
    raw: &Option<Spanned<String>>,
    default: &str,
) -> String {
    let Some(p) = raw else {
        return default.to_owned();
    };
    let text = p.get_ref();
    let ok = !text.is_empty()
        && text.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        });
    if !ok {
        ctx.error(
            p.span(),
            format!("`{text}` is not a relative cgroup path like `kchaos` or `kubepods/burstable`"),
        );
    }
    text.clone()
}

/// One `[[workload]]` table as its kind's parser gets it: its place in the file, its
/// kind, and the `[vm]` it will run in.
pub(crate) struct Entry<'a, 'de> {
    pub index: usize,
    pub kind: &'a Spanned<String>,
    pub value: &'a Spanned<DeValue<'de>>,
    pub vm: &'a VmSpec,
}

impl Entry<'_, '_> {
    /// The first step of every kind's parser, in one place so the kinds cannot drift:
    /// the table as the kind's `Raw` (unknown keys rejected), and the keys every kind
    /// shares, validated.
    fn read<R: RawWorkload>(&self, ctx: &mut Ctx<'_>) -> Option<(R, Common)> {
        let raw: R = ctx.deserialize(self.value)?;
        let common = Common::parse(ctx, self.index, self.kind.get_ref(), raw.common());
        Some((raw, common))
    }
}

/// A kind's raw table, as `raw_workload!` declares it.
trait RawWorkload: serde::de::DeserializeOwned {
    fn common(&self) -> RawCommon<'_>;
}

/// The keys every workload kind accepts, validated the same way for each.
#[derive(Debug)]
pub(crate) struct RawCommon<'a> {
    pub name: &'a Option<Spanned<String>>,
    pub iterations: &'a Option<Spanned<u64>>,
    pub duration: &'a Option<Spanned<String>>,
    pub max_errors: Option<u64>,
    pub after: &'a Option<Spanned<String>>,
}

/// The common part of a validated workload, before its spec is attached.
pub(crate) struct Common {
    pub name: String,
    pub iterations: Option<u64>,
    pub duration: Option<Duration>,
    pub max_errors: u64,
    pub after: Option<String>,
}

impl Common {
    pub fn parse(ctx: &mut Ctx<'_>, index: usize, kind: &str, raw: RawCommon<'_>) -> Common {
        let name = match raw.name {
            Some(n) => {
                if let Err(msg) = check_name(n.get_ref()) {
                    ctx.error(n.span(), msg);
                }
                n.get_ref().clone()
            }
            None => format!("{}-{index}", kind.replace('-', "_")),
        };
        Common {
            name,
            iterations: ctx.count(raw.iterations, 1, 10_000_000),
            duration: ctx.duration_in(raw.duration, Duration::from_millis(1)),
            max_errors: raw.max_errors.unwrap_or(0),
            after: raw.after.as_ref().map(|a| a.get_ref().clone()),
        }
    }

    pub fn with(self, spec: WorkloadSpec) -> Workload {
        Workload {
            name: self.name,
            iterations: self.iterations,
            duration: self.duration,
            max_errors: self.max_errors,
            after: self.after,
            spec,
        }
    }
}
