//! Running cells: a long-lived [`session::Session`] (QEMU, the accelerator, kernels, the
//! guest runner; each prepared once) and a [`scheduler`] that keeps `--jobs` VMs busy —
//! for a whole matrix ([`matrix`], `kchaos run`) or for trials until an outcome
//! ([`trials`], `repro`, `bisect`). Each results directory is locked for its run and
//! recorded cell by cell ([`recorder`]).

pub mod bisect;
pub mod kill_matrix;
pub mod lock;
pub mod matrix;
pub mod progress;
pub mod recorder;
pub mod scheduler;
pub mod scope;
pub mod session;
pub mod timings;
pub mod trials;

use std::path::PathBuf;

use crate::results::RunResults;
use crate::scenario::LoadErrors;

/// The kernel a run uses when none is named and the kernel list has no `default` set.
pub const DEFAULT_KERNEL: &str = "debian:6.1-cloud";

/// What stops a run before its first cell. Everything after is recorded on the cells.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("Invalid scenarios:\n{0}")]
    Scenarios(LoadErrors),
    #[error("{path} holds {count} scenarios; name one scenario file")]
    NotOneScenario { path: String, count: usize },
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    #[error("{dir} already holds the results of an earlier run; continue it with --resume {dir}, or choose another --out")]
    Exists { dir: String },
    #[error("Cannot resume {path}: {why}")]
    Resume { path: String, why: String },
    #[error("Cannot put scenario {scenario} on its topologies: {why}")]
    Topology { scenario: String, why: String },
}

impl RunError {
    /// Whether the user can fix it by changing the command (exit 2) rather than the
    /// host (exit 3).
    pub fn is_usage(&self) -> bool {
        match self {
            RunError::Lock(lock::LockError::Io { .. }) | RunError::Topology { .. } => false,
            RunError::Scenarios(_)
            | RunError::NotOneScenario { .. }
            | RunError::Lock(_)
            | RunError::Exists { .. }
            | RunError::Resume { .. } => true,
        }
    }
}

/// A finished (or interrupted) run.
#[derive(Debug)]
pub struct RunOutcome {
    pub results: RunResults,
    pub dir: PathBuf,
    pub interrupted: bool,
    /// Results that could not be written, each naming its path: the run fails (exit 3)
    /// even if every cell passed.
    pub write_failures: Vec<String>,
}
