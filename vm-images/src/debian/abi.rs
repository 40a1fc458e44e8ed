//! Debian kernel package names and ABIs: `linux-image-<abi>-<flavour suffix>[-unsigned]`,
//! where the ABI (`6.1.0-56`, `6.12.118+deb13`, `6.1.0-0.deb11.50`) is what `uname -r`
//! starts with and what a spec names. Pure text rules, no apt.

use std::cmp::Ordering;

/// Debian kernel flavours on amd64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    Cloud,
    Rt,
    Generic,
}

impl Flavour {
    pub fn as_str(self) -> &'static str {
        match self {
            Flavour::Cloud => "cloud",
            Flavour::Rt => "rt",
            Flavour::Generic => "generic",
        }
    }

    /// The suffix Debian's package names use after the ABI.
    pub fn package_suffix(self) -> &'static str {
        match self {
            Flavour::Cloud => "cloud-amd64",
            Flavour::Rt => "rt-amd64",
            Flavour::Generic => "amd64",
        }
    }

    /// A flavour as a spec names it (`generic` or Debian's own `amd64`).
    pub fn parse(text: &str) -> Option<Flavour> {
        match text {
            "cloud" => Some(Flavour::Cloud),
            "rt" => Some(Flavour::Rt),
            "generic" | "amd64" => Some(Flavour::Generic),
            _ => None,
        }
    }
}

/// What version of a Debian kernel is wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DebianVersion {
    /// An exact ABI such as `6.1.0-56` or `6.12.117+deb12`.
    Abi(String),
    /// A series such as `6.1`: the newest ABI available.
    Series(String),
}

/// What an ABI says about the Debian release that built it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbiTag {
    /// `6.12.118+deb13`, `6.12.115+deb13.1`, `6.1.0-0.deb11.50`: built for Debian 13, 13, 11.
    Debian(u32),
    /// `5.10.0-0.bpo.15`, `6.12.9+bpo`: a backport, release not named.
    Backport,
    /// `6.1.0-56`, `5.10.0-46`: a release's own kernel line; only the series tells which.
    None,
}

/// The image package of `abi` in `flavour`. The `-unsigned` variant is what kernel
/// developers boot; the signed one carries the same kernel with a Secure Boot signature.
pub fn package_name(abi: &str, flavour: Flavour, unsigned: bool) -> String {
    let suffix = if unsigned { "-unsigned" } else { "" };
    format!("linux-image-{abi}-{}{suffix}", flavour.package_suffix())
}

/// The ABI in a package name of this flavour, if it is one
/// (`linux-image-6.1.0-56-cloud-amd64-unsigned` → `6.1.0-56`). Metapackages
/// (`linux-image-6.1-cloud-amd64`), `-dbg` packages and other flavours are not.
pub fn abi_of(name: &str, flavour: Flavour) -> Option<String> {
    let rest = name.strip_prefix("linux-image-")?;
    let rest = rest.strip_suffix("-unsigned").unwrap_or(rest);
    let abi = rest.strip_suffix(&format!("-{}", flavour.package_suffix()))?;
    is_abi(abi).then(|| abi.to_owned())
}

/// Whether `text` has the shape of a Debian kernel ABI: dot- or dash-separated numbers,
/// at least `major.minor`, where `debNN` and `bpo` may appear as release markers and one
/// `+` suffix (`+deb13`, `+deb13.1`, `+bpo`) is allowed. Flavour names (`-rt`, `-cloud`)
/// are not, so `linux-image-6.1.0-56-rt-amd64` is never read as a generic ABI.
pub fn is_abi(text: &str) -> bool {
    let (base, tag) = match text.split_once('+') {
        Some((base, tag)) => (base, Some(tag)),
        None => (text, None),
    };
    let numeric = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let marker = |t: &str| t == "bpo" || t.strip_prefix("deb").is_some_and(numeric);
    let mut tokens = base.split(['.', '-']);
    let starts = tokens.next().is_some_and(numeric) && tokens.next().is_some_and(numeric);
    let tag_ok = tag.is_none_or(|t| {
        let mut parts = t.split('.');
        parts.next().is_some_and(marker) && parts.all(numeric)
    });
    starts && tokens.all(|t| numeric(t) || marker(t)) && tag_ok
}

/// Series `6.1` matches ABIs `6.1.*`, never `6.12.*`.
pub fn in_series(abi: &str, series: &str) -> bool {
    abi.strip_prefix(series).is_some_and(|r| r.starts_with('.'))
}

/// The series of an ABI: `6.1.0-56` → `6.1`.
pub fn series_of(abi: &str) -> Option<String> {
    let mut parts = abi.split(['.', '-', '+']);
    let major = parts.next()?;
    let minor = parts.next()?;
    Some(format!("{major}.{minor}"))
}

/// The release marker of an ABI.
pub fn tag_of(abi: &str) -> AbiTag {
    let debian = |t: &str| t.strip_prefix("deb").and_then(|n| n.parse::<u32>().ok());
    // `+deb13.1`: the marker is the first part after `+`; `-0.deb11.50`: any token.
    let tokens = abi.split(['.', '-', '+']);
    let mut backport = false;
    for token in tokens {
        if let Some(n) = debian(token) {
            return AbiTag::Debian(n);
        }
        backport |= token == "bpo";
    }
    if backport {
        AbiTag::Backport
    } else {
        AbiTag::None
    }
}

/// Orders Debian ABIs numerically: `6.1.0-56` > `6.1.0-9`, `6.12.117+deb12` > `6.12.100+deb12`,
/// `6.12.115+deb13.1` (a rebuild) > `6.12.115+deb13`.
pub fn compare_abi(a: &str, b: &str) -> Ordering {
    fn numbers(s: &str) -> Vec<u64> {
        s.split(|c: char| !c.is_ascii_digit())
            .filter(|p| !p.is_empty())
            .filter_map(|p| p.parse().ok())
            .collect()
    }
    numbers(a).cmp(&numbers(b))
}

/// A series as numbers, for ordering (`5.10` < `6.1` < `6.12`).
pub fn series_key(series: &str) -> Option<(u32, u32)> {
    let (major, minor) = series.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abis_are_read_from_package_names_of_the_right_flavour() {
        let table: &[(&str, Flavour, Option<&str>)] = &[
            (
                "linux-image-6.1.0-56-cloud-amd64-unsigned",
                Flavour::Cloud,
                Some("6.1.0-56"),
            ),
            (
                "linux-image-6.1.0-56-cloud-amd64",
                Flavour::Cloud,
                Some("6.1.0-56"),
            ),
            (
                "linux-image-6.12.117+deb12-cloud-amd64",
                Flavour::Cloud,
                Some("6.12.117+deb12"),
            ),
            (
                "linux-image-6.12.115+deb13.1-cloud-amd64",
                Flavour::Cloud,
                Some("6.12.115+deb13.1"),
            ),
            (
                "linux-image-6.1.0-0.deb11.50-cloud-amd64",
                Flavour::Cloud,
                Some("6.1.0-0.deb11.50"),
            ),
            (
                "linux-image-5.10.0-0.bpo.15-cloud-amd64",
                Flavour::Cloud,
                Some("5.10.0-0.bpo.15"),
            ),
            (
                "linux-image-5.10.0-46-rt-amd64-unsigned",
                Flavour::Rt,
                Some("5.10.0-46"),
            ),
            (
                "linux-image-6.1.0-56-amd64",
                Flavour::Generic,
                Some("6.1.0-56"),
            ),
            // Metapackage: a series, not an ABI.
            ("linux-image-6.12-cloud-amd64", Flavour::Cloud, Some("6.12")),
            ("linux-image-cloud-amd64", Flavour::Cloud, None),
            ("linux-image-6.1.0-56-cloud-amd64-dbg", Flavour::Cloud, None),
            // Other flavours never read as generic ABIs.
            ("linux-image-6.1.0-56-cloud-amd64", Flavour::Generic, None),
            ("linux-image-6.1.0-56-rt-amd64", Flavour::Generic, None),
            (
                "linux-image-6.1-amd64-signed-template",
                Flavour::Generic,
                None,
            ),
            ("linux-headers-6.1.0-56-cloud-amd64", Flavour::Cloud, None),
        ];
        for (name, flavour, want) in table {
            assert_eq!(
                abi_of(name, *flavour).as_deref(),
                *want,
                "{name} as {flavour:?}"
            );
        }
    }

    #[test]
    fn series_membership_and_series_of_an_abi() {
        let table: &[(&str, &str, bool)] = &[
            ("6.1.0-56", "6.1", true),
            ("6.1.0-0.deb11.50", "6.1", true),
            ("6.12.117+deb12", "6.1", false),
            ("6.12.117+deb12", "6.12", true),
            ("6.12", "6.12", false),
            ("5.10.0-46", "5.10", true),
        ];
        for (abi, series, want) in table {
            assert_eq!(in_series(abi, series), *want, "{abi} in {series}");
        }
        assert_eq!(series_of("6.12.118+deb13").as_deref(), Some("6.12"));
        assert_eq!(series_of("5.10.0-46").as_deref(), Some("5.10"));
        assert_eq!(series_key("6.12"), Some((6, 12)));
        assert!(series_key("5.10") < series_key("6.1"));
        assert!(series_key("6.1") < series_key("6.12"));
        assert_eq!(series_key("latest"), None);
    }

    #[test]
    fn release_markers_of_abis() {
        let table: &[(&str, AbiTag)] = &[
            ("6.12.118+deb13", AbiTag::Debian(13)),
            ("6.12.115+deb13.1", AbiTag::Debian(13)),
            ("6.12.95+deb12", AbiTag::Debian(12)),
            ("6.1.0-0.deb11.50", AbiTag::Debian(11)),
            ("5.10.0-0.bpo.15", AbiTag::Backport),
            ("6.1.0-56", AbiTag::None),
            ("5.10.0-46", AbiTag::None),
        ];
        for (abi, want) in table {
            assert_eq!(tag_of(abi), *want, "{abi}");
        }
    }

    #[test]
    fn abi_ordering_is_numeric() {
        use std::cmp::Ordering::*;
        let table: &[(&str, &str, Ordering)] = &[
            ("6.1.0-56", "6.1.0-9", Greater),
            ("6.12.117+deb12", "6.12.100+deb12", Greater),
            ("6.12.115+deb13.1", "6.12.115+deb13", Greater),
            ("6.12.116+deb13", "6.12.115+deb13.1", Greater),
            ("5.10.0-46", "5.10.0-100", Less),
            ("6.1.0-47", "6.1.0-47", Equal),
        ];
        for (a, b, want) in table {
            assert_eq!(compare_abi(a, b), *want, "{a} vs {b}");
        }
    }
}
