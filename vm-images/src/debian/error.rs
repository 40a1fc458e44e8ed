//! The errors of fetching Debian kernels.

use super::apt::AptError;
use super::apt_config::ConfigError;
use crate::cache::{CacheError, RecordError};
use crate::file_io::IoError;
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
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Record(#[from] RecordError),
}
