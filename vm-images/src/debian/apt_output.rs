//! Reading what apt prints (run with `LC_ALL=C`): `apt-cache policy` for a package's
//! candidate and the suite it comes from, the `dlstatus:` lines of `APT::Status-Fd`
//! for progress. Pure, so the parsing is tested on apt's real output.

use std::time::{Duration, Instant};

use super::release::Release;

/// apt's candidate version of a package, the archive suite that offers it, and the
/// release whose apt state found it: the state that downloads it, so a download never
/// asks another release's lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub version: String,
    /// `bookworm-security`.
    pub suite: String,
    pub release: Release,
}

/// The candidate of the first package in `apt-cache policy` output:
///
/// ```text
/// linux-image-5.10.0-46-cloud-amd64:
///   Installed: (none)
///   Candidate: 5.10.262-1
///   Version table:
///      5.10.262-1 500
///         500 http://deb.debian.org/debian-security bullseye-security/main amd64 Packages
/// ```
///
/// `None` when apt knows no such package (it prints nothing) or has no candidate.
/// `release` is the release of the apt state that printed it.
pub fn parse_policy(text: &str, release: Release) -> Option<Candidate> {
    let mut lines = text.lines();
    let version = lines
        .by_ref()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .filter(|v| *v != "(none)")?
        .to_owned();
    // In the version table, the candidate's line is followed by its sources (more
    // indented, starting with a priority) until the next version line.
    let mut in_candidate = false;
    for line in lines {
        let words: Vec<&str> = line.split_whitespace().collect();
        let is_source = words.len() >= 3 && words[1].contains("://");
        if !is_source {
            let first = words.iter().find(|w| **w != "***");
            in_candidate = first == Some(&version.as_str());
            continue;
        }
        if in_candidate {
            // `http://… bullseye-security/main amd64 Packages`: the suite is before `/`.
            let suite = words[2].split('/').next().unwrap_or(words[2]);
            return Some(Candidate {
                version,
                suite: suite.to_owned(),
                release,
            });
        }
    }
    None
}

/// The `Size:` of `apt-cache show` output, in bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("Size: "))
        .and_then(|s| s.trim().parse().ok())
}

/// A `dlstatus:<item>:<percent>:<text>` line of `APT::Status-Fd`: the overall percent
/// of the acquire run and apt's description (`Retrieving file 3 of 9`).
pub fn parse_dlstatus(line: &str) -> Option<(f64, &str)> {
    let rest = line.strip_prefix("dlstatus:")?;
    let mut parts = rest.splitn(3, ':');
    let _item = parts.next()?;
    let percent = parts.next()?.parse::<f64>().ok()?;
    Some((percent, parts.next().unwrap_or("").trim()))
}

/// Decides when a progress line is worth printing: the first one after `first`, then at
/// most one per `every`, and never the same percent twice. Downloads are seconds to
/// minutes; a line every few seconds says it is alive without flooding the log.
#[derive(Debug)]
pub struct Throttle {
    started: Instant,
    first: Duration,
    every: Duration,
    last: Option<(Instant, u32)>,
}

impl Throttle {
    pub fn new(started: Instant, first: Duration, every: Duration) -> Throttle {
        Throttle {
            started,
            first,
            every,
            last: None,
        }
    }

    /// Whether to report `percent` at `now`.
    pub fn report(&mut self, now: Instant, percent: f64) -> bool {
        // Whole percents: `percent` is within 0..=100, so the cast cannot truncate.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let whole = percent.clamp(0.0, 100.0) as u32;
        let due = match self.last {
            None => now.duration_since(self.started) >= self.first,
            Some((at, seen)) => now.duration_since(at) >= self.every && whole != seen,
        };
        if due {
            self.last = Some((now, whole));
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY_SECURITY: &str = "\
linux-image-5.10.0-46-cloud-amd64:
  Installed: (none)
  Candidate: 5.10.262-1
  Version table:
     5.10.262-1 500
        500 http://deb.debian.org/debian-security bullseye-security/main amd64 Packages
";

    /// The same version in two suites, an older one in a third, an installed one.
    const POLICY_SEVERAL: &str = "\
linux-image-6.1.0-56-cloud-amd64:
  Installed: 6.1.150-1
  Candidate: 6.1.158-1
  Version table:
     6.1.158-1 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
        500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
 *** 6.1.150-1 100
        100 /var/lib/dpkg/status
";

    const POLICY_OLDER_FIRST: &str = "\
linux-image-cloud-amd64:
  Installed: (none)
  Candidate: 6.12.95-1~bpo12+1
  Version table:
     6.12.95-1~bpo12+1 100
        100 http://deb.debian.org/debian bookworm-backports/main amd64 Packages
     6.1.158-1 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
";

    #[test]
    fn candidates_and_their_suites_from_apt_cache_policy() {
        let c = |v: &str, s: &str| {
            Some(Candidate {
                version: v.to_owned(),
                suite: s.to_owned(),
                release: Release::Bookworm,
            })
        };
        let table: &[(&str, Option<Candidate>)] = &[
            (POLICY_SECURITY, c("5.10.262-1", "bullseye-security")),
            (POLICY_SEVERAL, c("6.1.158-1", "bookworm")),
            (
                POLICY_OLDER_FIRST,
                c("6.12.95-1~bpo12+1", "bookworm-backports"),
            ),
            ("", None),
            (
                "x:\n  Installed: (none)\n  Candidate: (none)\n  Version table:\n",
                None,
            ),
        ];
        for (text, want) in table {
            assert_eq!(&parse_policy(text, Release::Bookworm), want, "{text}");
        }
    }

    #[test]
    fn sizes_and_status_lines() {
        assert_eq!(
            parse_size("Package: x\nVersion: 1\nSize: 20701288\n"),
            Some(20_701_288)
        );
        assert_eq!(parse_size("Package: x\n"), None);
        assert_eq!(
            parse_dlstatus("dlstatus:7:88.9696:Retrieving file 7 of 9"),
            Some((88.9696, "Retrieving file 7 of 9"))
        );
        assert_eq!(parse_dlstatus("Get:1 http://deb.debian.org/debian x"), None);
        assert_eq!(parse_dlstatus("dlstatus:1:nan?:x"), None);
    }

    #[test]
    fn progress_is_throttled() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut throttle = Throttle::new(t0, s(2), s(5));
        // (seconds since start, percent, reported)
        let table: &[(u64, f64, bool)] = &[
            (0, 0.0, false), // a fast run stays quiet
            (1, 10.0, false),
            (2, 20.0, true),  // first line after 2 s
            (4, 30.0, false), // within 5 s of the last
            (7, 40.0, true),
            (13, 40.2, false), // same whole percent
            (14, 55.0, true),
            (30, 100.0, true),
        ];
        for (at, percent, want) in table {
            assert_eq!(
                throttle.report(t0 + s(*at), *percent),
                *want,
                "at {at}s, {percent}%"
            );
        }
    }
}
