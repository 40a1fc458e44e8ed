//! What can go wrong building a `build:` kernel. Its own module so that the steps
//! (`source`, `build`, `record`) and the module that runs them share it without
//! importing each other.

use crate::cache::{CacheError, RecordError};
use crate::file_io::IoError;
use crate::host_tool::CommandError;
use crate::kernel::bzimage::BzImageError;

#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("Unknown kernel recipe `{0}`")]
    Unknown(String),
    #[error("Recipe `{recipe}` names `{file}`, which is not compiled in")]
    MissingFile { recipe: String, file: String },
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    BzImage(#[from] BzImageError),
    #[error("No source for `{spec}`: {detail}")]
    NoSource { spec: String, detail: String },
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("Patch {patch} does not apply to {package} {version}: {output}")]
    Patch {
        patch: String,
        package: String,
        version: String,
        output: String,
    },
    #[error("Building `{spec}` failed ({status}); the log is {log}; it ends with:\n{tail}")]
    Build {
        spec: String,
        status: String,
        log: String,
        tail: String,
    },
    #[error("build.sh printed `{0}`, not a path: kernel spec")]
    BadOutput(String),
    #[error("apt: {0}")]
    Apt(String),
    #[error("Source tarball {path}: {detail}")]
    BadTarball { path: String, detail: String },
    #[error(transparent)]
    Record(#[from] RecordError),
}
