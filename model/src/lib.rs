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

/// `text` with control characters written as escapes (`\n`, `\t`, `\u{1b}`), so a name
/// from a file or the guest can never break a one-line message or a terminal.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(escape_controls("plain µs"), "plain µs");
        assert_eq!(escape_controls("a\nb\tc\u{1b}[0m"), "a\\nb\\tc\\u{1b}[0m");
    }
}
