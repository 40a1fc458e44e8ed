//! The Debian releases kchaos takes kernels from, their archive suites, and which release
//! a spec's version resolves in. Pure rules with table tests; apt is elsewhere.
//!
//! A series resolves in the release whose own kernel line it is (5.10 → bullseye, 6.1 →
//! bookworm, 6.12 → trixie): that is the kernel users of the release run and Debian
//! supports longest. 6.12 is also built for bookworm (`+deb12`, in bookworm-security)
//! and in bookworm-backports: name them with `@bookworm` or `@bookworm-backports`. A
//! series that is no release's own line (7.1 from trixie-backports) resolves in the
//! first release, newest first, that has it. An exact ABI resolves where its marker
//! points (`+deb12` → bookworm, then bookworm-backports; `0.deb11` → bullseye), else as
//! its series.
//!
//! The table below is the archive as it is (measured 2026-11: buster gone, forky still
//! testing); when Debian releases forky or drops bullseye, it changes here and only here.

use std::fmt;

use super::abi::{self, AbiTag, DebianVersion, Flavour};

/// The two archives Debian serves releases from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Archive {
    /// `http://deb.debian.org/debian`: the release, its point-release updates, backports.
    Debian,
    /// `http://deb.debian.org/debian-security`: security updates (where new kernel ABIs
    /// of a stable release land first).
    Security,
}

/// One suite of the archive (`bookworm-security`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suite {
    pub archive: Archive,
    pub name: &'static str,
}

/// A Debian release, or a release's backports, whose kernels kchaos can fetch. Buster
/// and older are no longer on the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Release {
    Bullseye,
    Bookworm,
    BookwormBackports,
    Trixie,
    TrixieBackports,
}

impl Release {
    /// Oldest first.
    pub const ALL: [Release; 5] = [
        Release::Bullseye,
        Release::Bookworm,
        Release::BookwormBackports,
        Release::Trixie,
        Release::TrixieBackports,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Release::Bullseye => "bullseye",
            Release::Bookworm => "bookworm",
            Release::BookwormBackports => "bookworm-backports",
            Release::Trixie => "trixie",
            Release::TrixieBackports => "trixie-backports",
        }
    }

    /// The Debian version number (`debNN` in ABIs and package versions).
    pub fn debian_major(self) -> u32 {
        match self {
            Release::Bullseye => 11,
            Release::Bookworm | Release::BookwormBackports => 12,
            Release::Trixie | Release::TrixieBackports => 13,
        }
    }

    /// The kernel series the release itself ships, if it is a release (not backports).
    pub fn home_series(self) -> Option<&'static str> {
        match self {
            Release::Bullseye => Some("5.10"),
            Release::Bookworm => Some("6.1"),
            Release::Trixie => Some("6.12"),
            Release::BookwormBackports | Release::TrixieBackports => None,
        }
    }

    pub fn is_backports(self) -> bool {
        self.home_series().is_none()
    }

    /// The suites apt reads for this release. A release includes its `-updates` and
    /// `-security` suites (a stable release's newest kernels are in `-security`);
    /// backports are their own suite.
    pub fn suites(self) -> Vec<Suite> {
        let name = self.name();
        let main = |name: &'static str| Suite {
            archive: Archive::Debian,
            name,
        };
        match self {
            Release::BookwormBackports | Release::TrixieBackports => vec![main(name)],
            Release::Bullseye => vec![
                main("bullseye"),
                main("bullseye-updates"),
                Suite {
                    archive: Archive::Security,
                    name: "bullseye-security",
                },
            ],
            Release::Bookworm => vec![
                main("bookworm"),
                main("bookworm-updates"),
                Suite {
                    archive: Archive::Security,
                    name: "bookworm-security",
                },
            ],
            Release::Trixie => vec![
                main("trixie"),
                main("trixie-updates"),
                Suite {
                    archive: Archive::Security,
                    name: "trixie-security",
                },
            ],
        }
    }

    /// The release a suite belongs to (`bookworm-security` → bookworm).
    pub fn of_suite(suite: &str) -> Option<Release> {
        Release::ALL
            .into_iter()
            .find(|r| r.suites().iter().any(|s| s.name == suite))
    }

    /// A release as a spec names it after `@`. The error says what is allowed.
    pub fn parse(name: &str) -> Result<Release, String> {
        if let Some(release) = Release::ALL.into_iter().find(|r| r.name() == name) {
            return Ok(release);
        }
        let allowed = Release::ALL.map(Release::name).join(", ");
        let why = match name {
            "buster" | "stretch" | "jessie" | "buster-backports" => {
                format!("{name} is no longer on the Debian archive")
            }
            _ if Release::of_suite(name).is_some() => {
                format!("`{name}` is a suite; name its release")
            }
            _ => format!("unknown Debian release `{name}`"),
        };
        Err(format!("{why}; releases: {allowed}"))
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where to look for `version`, in order; the first release that has it wins. Empty when
/// no release the archive serves can have it (a series older than bullseye's).
pub fn candidates(version: &DebianVersion, explicit: Option<Release>) -> Vec<Release> {
    if let Some(release) = explicit {
        return vec![release];
    }
    match version {
        DebianVersion::Series(series) => for_series(series),
        DebianVersion::Abi(abi) => for_abi(abi),
    }
}

fn for_series(series: &str) -> Vec<Release> {
    if let Some(home) = Release::ALL
        .into_iter()
        .find(|r| r.home_series() == Some(series))
    {
        return vec![home];
    }
    let oldest = Release::ALL
        .into_iter()
        .filter_map(|r| r.home_series())
        .filter_map(abi::series_key)
        .min();
    match (abi::series_key(series), oldest) {
        (Some(key), Some(oldest)) if key < oldest => Vec::new(),
        _ => Release::ALL.into_iter().rev().collect(),
    }
}

fn for_abi(abi_text: &str) -> Vec<Release> {
    match abi::tag_of(abi_text) {
        // Releases before their backports.
        AbiTag::Debian(major) => {
            let mut found: Vec<Release> = Release::ALL
                .into_iter()
                .filter(|r| r.debian_major() == major)
                .collect();
            found.sort_by_key(|r| r.is_backports());
            found
        }
        AbiTag::Backport => Release::ALL
            .into_iter()
            .rev()
            .filter(|r| r.is_backports())
            .collect(),
        AbiTag::None => abi::series_of(abi_text)
            .map(|s| for_series(&s))
            .unwrap_or_default(),
    }
}

/// The exact spec a resolved kernel is recorded under: `debian:<abi>-<flavour>`, with
/// `@<release>` only where the ABI alone would look elsewhere first, so a rerun with it
/// finds the same package and the common case stays short.
pub fn resolved_spec(abi_text: &str, flavour: Flavour, release: Release) -> String {
    let first = for_abi(abi_text).first().copied();
    let base = format!("debian:{abi_text}-{}", flavour.as_str());
    if first == Some(release) {
        base
    } else {
        format!("{base}@{release}")
    }
}

/// For messages: each release with what it ships (`5.10 (bullseye), 6.1 (bookworm), …`).
pub fn describe() -> String {
    Release::ALL
        .into_iter()
        .map(|r| match r.home_series() {
            Some(series) => format!("{series} ({r})"),
            None => format!("newer lines ({r})"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::Release::*;
    use super::*;

    fn series(s: &str) -> DebianVersion {
        DebianVersion::Series(s.to_owned())
    }

    fn abi(s: &str) -> DebianVersion {
        DebianVersion::Abi(s.to_owned())
    }

    #[test]
    fn where_each_version_is_looked_for() {
        let newest_first = vec![
            TrixieBackports,
            Trixie,
            BookwormBackports,
            Bookworm,
            Bullseye,
        ];
        let table: Vec<(DebianVersion, Option<Release>, Vec<Release>)> = vec![
            (series("5.10"), None, vec![Bullseye]),
            (series("6.1"), None, vec![Bookworm]),
            // 6.12 is trixie's own line; bookworm's builds only when asked for.
            (series("6.12"), None, vec![Trixie]),
            (
                series("6.12"),
                Some(BookwormBackports),
                vec![BookwormBackports],
            ),
            (series("6.12"), Some(Bookworm), vec![Bookworm]),
            // No release's own line: every release, newest first.
            (series("7.1"), None, newest_first.clone()),
            (series("6.6"), None, newest_first.clone()),
            // Older than anything the archive serves.
            (series("4.19"), None, vec![]),
            (abi("6.1.0-56"), None, vec![Bookworm]),
            (abi("5.10.0-46"), None, vec![Bullseye]),
            (abi("6.1.0-0.deb11.50"), None, vec![Bullseye]),
            (
                abi("6.12.117+deb12"),
                None,
                vec![Bookworm, BookwormBackports],
            ),
            (abi("6.12.118+deb13"), None, vec![Trixie, TrixieBackports]),
            (abi("7.1.7+deb13"), None, vec![Trixie, TrixieBackports]),
            (
                abi("5.10.0-0.bpo.15"),
                None,
                vec![TrixieBackports, BookwormBackports],
            ),
            (abi("6.12.118+deb13"), Some(Bookworm), vec![Bookworm]),
        ];
        for (version, explicit, want) in table {
            assert_eq!(
                candidates(&version, explicit),
                want,
                "{version:?} @{explicit:?}"
            );
        }
    }

    #[test]
    fn resolved_specs_name_the_release_only_when_the_abi_does_not() {
        let table: &[(&str, Flavour, Release, &str)] = &[
            (
                "6.1.0-56",
                Flavour::Cloud,
                Bookworm,
                "debian:6.1.0-56-cloud",
            ),
            ("5.10.0-46", Flavour::Rt, Bullseye, "debian:5.10.0-46-rt"),
            (
                "6.12.118+deb13",
                Flavour::Cloud,
                Trixie,
                "debian:6.12.118+deb13-cloud",
            ),
            (
                "6.12.117+deb12",
                Flavour::Cloud,
                Bookworm,
                "debian:6.12.117+deb12-cloud",
            ),
            (
                "6.12.95+deb12",
                Flavour::Cloud,
                BookwormBackports,
                "debian:6.12.95+deb12-cloud@bookworm-backports",
            ),
            (
                "7.1.7+deb13",
                Flavour::Generic,
                TrixieBackports,
                "debian:7.1.7+deb13-generic@trixie-backports",
            ),
        ];
        for (abi, flavour, release, want) in table {
            assert_eq!(resolved_spec(abi, *flavour, *release), *want);
        }
    }

    #[test]
    fn releases_by_name_and_by_suite() {
        for release in Release::ALL {
            assert_eq!(Release::parse(release.name()), Ok(release));
            for suite in release.suites() {
                assert_eq!(
                    Release::of_suite(suite.name),
                    Some(release),
                    "{}",
                    suite.name
                );
            }
        }
        let table: &[(&str, &str)] = &[
            ("buster", "buster is no longer on the Debian archive"),
            (
                "bookworm-security",
                "`bookworm-security` is a suite; name its release",
            ),
            ("sid", "unknown Debian release `sid`"),
        ];
        for (name, why) in table {
            let e = Release::parse(name).unwrap_err();
            assert!(e.starts_with(why), "{e}");
            assert!(
                e.ends_with(
                    "releases: bullseye, bookworm, bookworm-backports, trixie, trixie-backports"
                ),
                "{e}"
            );
        }
    }

    #[test]
    fn security_suites_come_from_the_security_archive() {
        for release in Release::ALL {
            for suite in release.suites() {
                let security = suite.name.ends_with("-security");
                assert_eq!(
                    suite.archive == Archive::Security,
                    security,
                    "{}",
                    suite.name
                );
            }
        }
    }
}
