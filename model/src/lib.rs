//! The scenario model, the host↔guest wire protocol and the verdict rules of kchaos.
//!
//! This crate does no I/O (no files, no sockets, no processes): the harness and the
//! runner both depend on it, and everything here is unit-testable in isolation.

/// `Display` for a type with an `as_str()`: it prints as it is spelled in scenario files
/// and reports, from the one table of spellings.
macro_rules! display_as_str {
    ($t:ty) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub mod bisect;
pub mod blocked;
pub mod fingerprint;
pub mod image;
pub mod kernel;
pub mod metrics;
pub mod protocol;
pub mod scenario;
pub mod signature;
pub mod stats;
pub mod timeline;
pub mod topology;
pub mod units;
pub mod verdict;

/// The kchaos version, shared by harness and runner.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A seed for one part of a run (a workload, a probe), derived from the run's seed and
/// the part's name: stable across builds and platforms, so a recorded seed replays.
pub fn derive_seed(seed: u64, label: &str) -> u64 {
    seed ^ (u64::from(crc32fast::hash(label.as_bytes())) << 16)
}

/// An error with all its causes on one line, `outer: inner: innermost`, the way a cell's
/// reasons, the runner's error samples and the terminal show it. A cause whose text its
/// parent already includes is left out; control characters are escaped.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    escape_controls(&text).into_owned()
}

/// Writes each item on a line of its own, without a newline after the last: how every
/// list of problems prints (a scenario file's errors, the files a run could not load),
/// one per line like a compiler's, whichever crate collected them.
pub fn write_lines<T: std::fmt::Display>(
    f: &mut std::fmt::Formatter<'_>,
    items: &[T],
) -> std::fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            writeln!(f)?;
        }
        write!(f, "{item}")?;
    }
    Ok(())
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

/// What the unit tests of several modules share.
#[cfg(test)]
pub(crate) mod test_support {
    /// A captured log (`testdata/*.log`) as the lines a reader is given.
    pub fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(escape_controls("plain µs"), "plain µs");
        assert_eq!(escape_controls("a\nb\tc\u{1b}[0m"), "a\\nb\\tc\\u{1b}[0m");
    }

    #[test]
    fn lines_are_joined_without_a_trailing_newline() {
        struct Lines<'a>(&'a [&'a str]);
        impl std::fmt::Display for Lines<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write_lines(f, self.0)
            }
        }
        assert_eq!(Lines(&["a:1: x", "b:2: y"]).to_string(), "a:1: x\nb:2: y");
        assert_eq!(Lines(&["alone"]).to_string(), "alone");
        assert_eq!(Lines(&[]).to_string(), "");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("Cannot write {path}")]
    struct Outer {
        path: String,
        #[source]
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("netns for kcv1: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn causes_are_joined_on_one_line() {
        let cases: [(&dyn std::error::Error, &str); 3] = [
            (
                &Outer {
                    path: "/x\ny".into(),
                    source: std::io::Error::other("disk full"),
                },
                "Cannot write /x\\ny: disk full",
            ),
            // A cause its parent already prints is not repeated.
            (
                &Repeats(std::io::Error::other("out of memory")),
                "netns for kcv1: out of memory",
            ),
            (&std::io::Error::other("alone"), "alone"),
        ];
        for (e, want) in cases {
            assert_eq!(error_chain(e), want);
        }
    }
}
