//! `exec`: run a program in the guest, as-is, and time it. For reproducers that exist
//! as shell scripts (bug reports), and for side-by-side comparisons with native
//! workloads. The program and its libraries come into the image through `[vm] tools`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use toml::de::DeValue;
use toml::Spanned;

use super::{Common, WorkloadSpec};
use crate::metrics::MetricKind;
use crate::scenario::ctx::Ctx;
use crate::units::Unit;

pub(crate) const METRICS: &[(&str, MetricKind, Unit)] =
    &[("elapsed", MetricKind::Histogram, Unit::Ns)];

/// One iteration = one run of the program; a non-zero exit is an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exec {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
}

raw_workload! {
    argv: Spanned<Vec<String>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

pub(super) fn parse(
    ctx: &mut Ctx<'_>,
    index: usize,
    value: &Spanned<DeValue<'_>>,
) -> Option<super::Workload> {
    let raw: Raw = ctx.deserialize(value)?;
    let common = Common::parse(ctx, index, "exec", raw.common());
    if raw
        .argv
        .get_ref()
        .first()
        .is_none_or(|p| !p.starts_with('/'))
    {
        ctx.error(raw.argv.span(), "`argv` starts with the program's absolute path in the guest, e.g. [\"/bin/sh\", \"-c\", \"...\"]");
        return None;
    }
    Some(common.with(WorkloadSpec::Exec(Exec {
        argv: raw.argv.into_inner(),
        env: raw.env,
    })))
}
