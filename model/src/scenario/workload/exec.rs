//! `exec`: run a program in the guest, as-is, and time it. For reproducers that exist
//! as shell scripts (bug reports), and for side-by-side comparisons with native
//! workloads. The program and its libraries come into the image through `[vm] tools`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{Entry, WorkloadSpec};
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
    env: Option<Spanned<BTreeMap<String, String>>>,
}

pub(super) fn parse(ctx: &mut Ctx<'_>, entry: &Entry<'_, '_>) -> Option<super::Workload> {
    let (raw, common) = entry.read::<Raw>(ctx)?;
    if raw
        .argv
        .get_ref()
        .first()
        .is_none_or(|p| !p.starts_with('/'))
    {
        ctx.error(raw.argv.span(), "`argv` starts with the program's absolute path in the guest, e.g. [\"/bin/sh\", \"-c\", \"...\"]");
        return None;
    }
    if let Some(arg) = raw.argv.get_ref().iter().find(|a| a.contains('\0')) {
        ctx.error(
            raw.argv.span(),
            format!("argument `{arg}` contains a NUL byte, which no program can receive"),
        );
        return None;
    }
    let env = match raw.env {
        Some(env) => {
            let span = env.span();
            let env = env.into_inner();
            if let Some(why) = env.iter().find_map(|(k, v)| check_env(k, v).err()) {
                ctx.error(span, why);
                return None;
            }
            env
        }
        None => BTreeMap::new(),
    };
    Some(common.with(WorkloadSpec::Exec(Exec {
        argv: raw.argv.into_inner(),
        env,
    })))
}

/// An environment entry the kernel can pass to a program: `execve` takes `KEY=VALUE`
/// C strings, so a key may not be empty or contain `=`, and neither may contain NUL.
fn check_env(key: &str, value: &str) -> Result<(), String> {
    if key.is_empty() || key.contains('=') || key.contains('\0') {
        return Err(format!(
            "environment variable name `{key}` is not valid: it must be non-empty, without `=` or NUL"
        ));
    }
    if value.contains('\0') {
        return Err(format!("the value of `{key}` contains a NUL byte"));
    }
    Ok(())
}
