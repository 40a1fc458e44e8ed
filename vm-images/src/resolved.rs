//! What a kernel spec resolves to: the files QEMU boots and what the results record.
//! It depends on nothing in the crate but the cache's naming, so that every way of
//! producing a kernel (Debian packages, recipe builds, local builds) can build one
//! without depending on `resolve`, the module that dispatches to them.

use std::path::PathBuf;

use kchaos_model::kernel::KernelConfig;
use serde::{Deserialize, Serialize};

/// A resolved kernel.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Kernel {
    /// The spec as the user wrote it (`debian:6.1-cloud`).
    pub spec: String,
    /// The exact spec it resolved to (`debian:6.1.0-56-cloud`): rerunning with this picks
    /// the same kernel even after the mirror moves on.
    pub resolved: String,
    /// `uname -r`.
    pub release: String,
    /// Debian package and version (`linux-image-6.1.0-56-cloud-amd64-unsigned 6.1.158-1`),
    /// for the evidence trail; [`Kernel::debian`] has them as fields.
    pub package: Option<String>,
    /// Where a Debian kernel came from; `None` for local builds.
    #[serde(default)]
    pub debian: Option<DebianPackage>,
    /// The git commit a local build came from (`path:…,commit=`, or the
    /// `kchaos-source` file `build.sh` leaves next to its `.config`); `None` for Debian
    /// packages and trees that are not git checkouts.
    #[serde(default)]
    pub source: Option<SourceCommit>,
    pub bzimage: PathBuf,
    /// `lib/modules/<release>`, when modules exist.
    pub modules_dir: Option<PathBuf>,
    pub config_path: Option<PathBuf>,
}

/// The Debian package a kernel was unpacked from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DebianPackage {
    /// `linux-image-6.1.0-56-cloud-amd64-unsigned`.
    pub name: String,
    /// `6.1.158-1`.
    pub version: String,
    /// The archive suite apt took it from (`bookworm-security`). `None` only for a
    /// package an older kchaos unpacked (it did not record suites) that the lists no
    /// longer offer.
    pub suite: Option<String>,
}

/// Where in a git history a kernel was built, as the results record it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SourceCommit {
    /// The full commit hash (or the revision `commit=` named).
    pub commit: String,
    /// `git describe --always --dirty` of the tree when it was built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub describe: Option<String>,
    /// Built from a tree with uncommitted changes: the commit alone does not rebuild it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dirty: bool,
}

/// The file `build.sh` writes into its output directory when the source is a git tree.
pub const SOURCE_FILE: &str = "kchaos-source";

impl SourceCommit {
    /// Reads a `kchaos-source` file: `key=value` lines `commit`, `describe`, `dirty`
    /// (`1` or `0`); unknown keys are ignored (fields are only added). `None` without a
    /// commit.
    pub fn parse(text: &str) -> Option<SourceCommit> {
        let mut commit = None;
        let mut describe = None;
        let mut dirty = false;
        for line in text.lines() {
            match line.trim().split_once('=') {
                Some(("commit", v)) if !v.is_empty() => commit = Some(v.to_owned()),
                Some(("describe", v)) if !v.is_empty() => describe = Some(v.to_owned()),
                Some(("dirty", v)) => dirty = v == "1",
                _ => {}
            }
        }
        Some(SourceCommit {
            commit: commit?,
            describe,
            dirty,
        })
    }
}

impl Kernel {
    /// The build configuration, when known.
    pub fn config(&self) -> Option<KernelConfig> {
        let path = self.config_path.as_ref()?;
        std::fs::read_to_string(path)
            .ok()
            .map(|t| KernelConfig::parse(&t))
    }

    /// A filesystem-safe label for result directories (`debian-6.1.0-56-cloud`).
    pub fn label(&self) -> String {
        let text = self.resolved.replace(':', "-");
        let text = match self.resolved.strip_prefix("path:") {
            Some(_) => format!("local-{}", self.release),
            None => text,
        };
        crate::cache::dir_safe(&text, &['.', '-', '_', '+'])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_file_names_the_commit() {
        let full = "commit=3f2a9c1e\ndescribe=v6.1-3-g3f2a9c1e-dirty\ndirty=1\nfuture=x\n";
        assert_eq!(
            SourceCommit::parse(full),
            Some(SourceCommit {
                commit: "3f2a9c1e".into(),
                describe: Some("v6.1-3-g3f2a9c1e-dirty".into()),
                dirty: true,
            })
        );
        assert_eq!(
            SourceCommit::parse("commit=abc\n").map(|s| (s.describe, s.dirty)),
            Some((None, false))
        );
        assert_eq!(SourceCommit::parse("describe=v6.1\n"), None);
        assert_eq!(SourceCommit::parse(""), None);
    }
}
