//! The scenario model, the host↔guest wire protocol and the verdict rules of kchaos.
//!
//! This crate does no I/O (no files, no sockets, no processes): the harness and the
//! runner both depend on it, and everything here is unit-testable in isolation.

pub mod bisect;
pub mod fingerprint;
pub mod image;
pub mod kernel;
pub mod metrics;
pub mod protocol;
pub mod scenario;
pub mod signature;
pub mod stats;
pub mod units;
pub mod verdict;

/// The kchaos version, shared by harness and runner.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A seed for one part of a run (a workload, a probe), derived from the run's seed and
/// the part's name: stable across builds and platforms, so a recorded seed replays.
pub fn derive_seed(seed: u64, label: &str) -> u64 {
    seed ^ (u64::from(crc32fast::hash(label.as_bytes())) << 16)
}
