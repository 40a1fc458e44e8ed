//! Shared helpers for stage-two validation: they record an error and carry on, so one
//! pass over a file reports every problem.

use std::ops::Range;
use std::time::Duration;

use serde::de::DeserializeOwned;
use toml::de::{DeValue, ValueDeserializer};
use toml::Spanned;

use super::error::{Locator, ScenarioError};
use crate::units;

/// The longest duration anything in a scenario may ask for: a day. Far beyond any useful
/// cell, and small enough that the harness and the runner can add a few of them to a
/// clock reading without overflowing (`18446744073709551615s` once panicked a cell).
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

pub(crate) struct Ctx<'a> {
    pub loc: Locator<'a>,
    pub errors: Vec<ScenarioError>,
}

impl<'a> Ctx<'a> {
    pub fn new(loc: Locator<'a>) -> Ctx<'a> {
        Ctx {
            loc,
            errors: Vec::new(),
        }
    }

    pub fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        let e = self.loc.at(span, message);
        self.errors.push(e);
    }

    /// Records that `kind` is no kind of `what` (`probe`, `workload`) this version
    /// knows, naming those it does; there is nothing to parse.
    pub fn unknown_kind<T>(
        &mut self,
        what: &str,
        kind: &Spanned<String>,
        known: &[&str],
    ) -> Option<T> {
        self.error(
            kind.span(),
            format!(
                "unknown {what} kind `{}`; this version knows: {}",
                kind.get_ref(),
                known.join(", ")
            ),
        );
        None
    }

    /// The value of `result`, or its message recorded at `span`: for the parsers that
    /// return `Result<T, String>` (units, versions, names).
    pub fn or_error<T>(&mut self, span: Range<usize>, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(msg) => {
                self.error(span, msg);
                None
            }
        }
    }

    /// Deserialises one spanned TOML value into a raw struct, keeping serde's precise
    /// span for any error.
    pub fn deserialize<T: DeserializeOwned>(&mut self, value: &Spanned<DeValue<'_>>) -> Option<T> {
        match T::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(v) => Some(v),
            Err(e) => {
                let e = self.loc.toml_error(&e);
                self.errors.push(e);
                None
            }
        }
    }

    /// A duration from zero up to [`MAX_DURATION`].
    pub fn duration(&mut self, value: &Option<Spanned<String>>) -> Option<Duration> {
        self.duration_in(value, Duration::ZERO)
    }

    /// A duration from `min` up to [`MAX_DURATION`]; the error names the allowed range.
    pub fn duration_in(
        &mut self,
        value: &Option<Spanned<String>>,
        min: Duration,
    ) -> Option<Duration> {
        let value = value.as_ref()?;
        match units::parse_duration(value.get_ref()) {
            Ok(d) if d >= min && d <= MAX_DURATION => Some(d),
            Ok(_) => {
                self.error(
                    value.span(),
                    format!(
                        "`{}` is out of range; allowed: {} to {}",
                        value.get_ref().trim(),
                        humantime::format_duration(min),
                        humantime::format_duration(MAX_DURATION)
                    ),
                );
                None
            }
            Err(msg) => {
                self.error(value.span(), msg);
                None
            }
        }
    }

    pub fn size(&mut self, value: &Option<Spanned<String>>) -> Option<u64> {
        let value = value.as_ref()?;
        match units::parse_size(value.get_ref()) {
            Ok(d) => Some(d),
            Err(msg) => {
                self.error(value.span(), msg);
                None
            }
        }
    }

    /// A size within `min..=max` bytes; the error names the allowed range.
    pub fn size_in(&mut self, value: &Option<Spanned<String>>, min: u64, max: u64) -> Option<u64> {
        let bytes = self.size(value)?;
        if bytes < min || bytes > max {
            if let Some(v) = value {
                self.error(
                    v.span(),
                    format!(
                        "`{}` is out of range; allowed: {} to {}",
                        v.get_ref().trim(),
                        units::format_bytes(min as f64),
                        units::format_bytes(max as f64)
                    ),
                );
            }
            return None;
        }
        Some(bytes)
    }

    /// A duration or a `[min, max]` range of durations: `"5ms"` or `["2ms", "8ms"]`.
    pub fn duration_range(
        &mut self,
        value: &Option<Spanned<toml::Value>>,
    ) -> Option<(Duration, Duration)> {
        let value = value.as_ref()?;
        let span = value.span();
        let parse = |ctx: &mut Ctx<'_>, v: &toml::Value| -> Option<Duration> {
            let text = v.as_str().or_else(|| {
                ctx.error(
                    span.clone(),
                    "write a duration like \"5ms\", or a range like [\"2ms\", \"8ms\"]",
                );
                None
            })?;
            match units::parse_duration(text) {
                Ok(d) => Some(d),
                Err(msg) => {
                    ctx.error(span.clone(), msg);
                    None
                }
            }
        };
        let (lo, hi) = match value.get_ref() {
            toml::Value::Array(items) if items.len() == 2 => {
                (parse(self, &items[0])?, parse(self, &items[1])?)
            }
            toml::Value::Array(_) => {
                self.error(
                    span,
                    "a range has exactly two durations: [\"min\", \"max\"]",
                );
                return None;
            }
            single => {
                let d = parse(self, single)?;
                (d, d)
            }
        };
        if lo > hi || lo.is_zero() || hi > MAX_DURATION {
            self.error(
                span,
                format!(
                    "range {lo:?}..{hi:?} must be non-empty, above zero and at most {}",
                    humantime::format_duration(MAX_DURATION)
                ),
            );
            return None;
        }
        Some((lo, hi))
    }

    /// Cgroup controller names, each checked against the kernel's names.
    pub fn controllers(&mut self, names: &[Spanned<String>]) -> Vec<String> {
        let mut out = Vec::new();
        for c in names {
            if KNOWN_CONTROLLERS.contains(&c.get_ref().as_str()) {
                out.push(c.get_ref().clone());
            } else {
                let known = KNOWN_CONTROLLERS.join(", ");
                self.error(
                    c.span(),
                    format!(
                        "unknown cgroup controller `{}`; known: {known}",
                        c.get_ref()
                    ),
                );
            }
        }
        out
    }

    /// A positive integer with an upper bound that keeps a typo from exhausting the VM.
    pub fn count(&mut self, value: &Option<Spanned<u64>>, min: u64, max: u64) -> Option<u64> {
        let value = value.as_ref()?;
        let v = *value.get_ref();
        if v < min || v > max {
            self.error(
                value.span(),
                format!("{v} is out of range; allowed: {min}..={max}"),
            );
            return None;
        }
        Some(v)
    }

    /// [`Ctx::count`] for a field held in 32 bits (threads, slots, levels); `default`
    /// when absent or refused.
    pub fn count_u32(
        &mut self,
        value: &Option<Spanned<u64>>,
        min: u64,
        max: u64,
        default: u32,
    ) -> u32 {
        self.count(value, min, max)
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(default)
    }

    /// A number above 0 and at most `max` (a rate, a share of a CPU); `message` says
    /// what it is when it is not.
    pub fn positive(
        &mut self,
        value: &Option<Spanned<f64>>,
        max: f64,
        message: &str,
    ) -> Option<f64> {
        let value = value.as_ref()?;
        let v = *value.get_ref();
        if v > 0.0 && v <= max {
            Some(v)
        } else {
            self.error(value.span(), message);
            None
        }
    }

    /// Records `message` at the key `raw` when `refused`: a bound checked on a value
    /// already parsed (or defaulted: then there is no key to blame and nothing is said).
    pub fn refuse_if<T>(
        &mut self,
        refused: bool,
        raw: &Option<Spanned<T>>,
        message: impl Into<String>,
    ) {
        if let (true, Some(key)) = (refused, raw) {
            self.error(key.span(), message);
        }
    }
}

/// Controllers the kernel knows under these names (v1 and v2 spellings).
pub(crate) const KNOWN_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "io",
    "blkio",
    "pids",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "perf_event",
    "hugetlb",
    "rdma",
    "misc",
];

/// Names of scenarios, workloads and probes become directory and metric names: keep them
/// to a safe alphabet.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid name; use 1-64 letters, digits, `-` or `_`, starting with a letter or digit"
        ))
    }
}

/// `names` joined for an error message that lists what is allowed, or `none` when there
/// is nothing to list (each message says "none" in its own words).
pub(crate) fn list_or(names: &[&str], none: &str) -> String {
    if names.is_empty() {
        none.to_owned()
    } else {
        names.join(", ")
    }
}
