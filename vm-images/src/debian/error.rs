//! The errors of fetching Debian kernels.

use super::apt::AptError;
use super::apt_config::ConfigError;
use crate::cache::CacheError;
use crate::host_tool::CommandError;

#[derive(Debug, thiserror::Error)]
pub enum DebianError {
    #[error("No Debian kernel package matches `{spec}`: {detail}")]
    NoPackage { spec: String, detail: String },
    #[error("Package {package} has no {what}")]
    BadPackage { package: String, what: String },
    #[error(transparent)]
    Apt(#[from] AptError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("Cannot read {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Corrupt cache entry {path}; delete it and retry")]
    CorruptCache {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}
