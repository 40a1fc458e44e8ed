//! Shared helpers for stage-two validation: they record an error and carry on, so one
//! pass over a file reports every problem.

use std::ops::Range;
use std::time::Duration;

use serde::de::DeserializeOwned;
use toml::de::{DeValue, ValueDeserializer};
use toml::Spanned;

use super::error::{Locator, ScenarioError};
use crate::units;

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

    pub fn duration(&mut self, value: &Option<Spanned<String>>) -> Option<Duration> {
        let value = value.as_ref()?;
        match units::parse_duration(value.get_ref()) {
            Ok(d) => Some(d),
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
