//! What a kernel spec resolves to: the files QEMU boots and what the results record.
//! A leaf module (it depends on nothing in the crate) so that every way of producing a
//! kernel (Debian packages, local builds) can build one without depending on
//! `kernel`, the module that dispatches to them.

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
        text.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }
}
