//! Known issues: a versioned list of failures already triaged, so a known bug on one
//! kernel does not turn the nightly red forever and hide the next real regression
//! (KernelCI's issues, CKI's triager, kdevops' expunge lists). An entry matches failing
//! cells by scenario (glob), kernel (a name or set of the kernel list, a version range
//! on the release, or a glob on the spec), verdict, and a regular expression over the
//! cell's reasons, kernel-log signatures and fingerprint. Each carries a link; an entry
//! past its expiry date matches nothing and says so. Parsing is I/O-free; matching is
//! pure.

use std::collections::BTreeSet;
use std::path::Path;

use globset::{Glob, GlobMatcher};
use kchaos_images::kernel_list::KernelList;
use kchaos_model::kernel::{KernelVersion, VersionRange};
use kchaos_model::scenario::{error_at, locate_toml_error, ScenarioError};
use kchaos_model::verdict::Verdict;
use regex::Regex;
use serde::{Deserialize, Serialize};

use toml::Spanned;

/// Where `kchaos run` and `kchaos gate` look when no file is named.
pub const DEFAULT_PATH: &str = "known-issues.toml";

#[derive(Debug, thiserror::Error)]
pub enum KnownError {
    #[error(transparent)]
    Read(#[from] crate::scenario::LoadError),
    /// Every problem, `FILE:LINE:COL: key: message` per line.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ScenarioError>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    issue: Vec<RawIssue>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssue {
    id: Spanned<String>,
    link: Spanned<String>,
    #[serde(default)]
    scenario: Option<Spanned<String>>,
    #[serde(default)]
    kernel: Option<Spanned<String>>,
    #[serde(default)]
    verdict: Option<Spanned<Vec<String>>>,
    #[serde(default, rename = "match")]
    pattern: Option<Spanned<String>>,
    #[serde(default)]
    expires: Option<Spanned<String>>,
    #[serde(default)]
    note: Option<String>,
}

/// A calendar day, for expiry dates (`2027-01-31`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Day {
    pub year: i32,
    pub month: u32,
    pub day: u32,
}

impl Day {
    pub fn parse(text: &str) -> Option<Day> {
        let mut parts = text.trim().split('-');
        let year: i32 = parts.next()?.parse().ok()?;
        let month: u32 = parts.next()?.parse().ok()?;
        let day: u32 = parts.next()?.parse().ok()?;
        let valid = parts.next().is_none()
            && (1..=12).contains(&month)
            && (1..=31).contains(&day)
            && (1900..=9999).contains(&year);
        valid.then_some(Day { year, month, day })
    }

    /// Today in UTC.
    pub fn today() -> Day {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Day::from_unix_days(i64::try_from(secs / 86_400).unwrap_or(0))
    }

    /// The civil date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
    pub fn from_unix_days(days: i64) -> Day {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        Day {
            year: i32::try_from(year).unwrap_or(i32::MAX),
            month: u32::try_from(month).unwrap_or(1),
            day: u32::try_from(day).unwrap_or(1),
        }
    }
}

impl std::fmt::Display for Day {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// Which kernels an entry is about.
#[derive(Debug, Clone)]
pub enum KernelMatch {
    Any,
    /// Specs as asked, from a kernel-list name or set.
    Specs(BTreeSet<String>),
    /// A version range on `uname -r` (`>=6.12, <6.13`).
    Versions(VersionRange),
    /// A glob over the spec as asked, as resolved, or the release.
    Glob(GlobMatcher),
}

/// One known issue, validated.
#[derive(Debug, Clone)]
pub struct KnownIssue {
    pub id: String,
    pub link: String,
    pub note: Option<String>,
    scenario: Option<GlobMatcher>,
    kernel: KernelMatch,
    verdicts: Vec<Verdict>,
    pattern: Option<Regex>,
    pub expires: Option<Day>,
}

/// A parsed known-issues file.
#[derive(Debug, Clone, Default)]
pub struct KnownIssues {
    pub path: String,
    pub issues: Vec<KnownIssue>,
}

pub use crate::results::{KnownMatch, TriageSummary};

/// The facts of a cell that entries match against.
#[derive(Debug, Clone, Copy)]
pub struct CellFacts<'a> {
    pub scenario: &'a str,
    pub verdict: Verdict,
    /// The kernel as asked, as resolved, and its release.
    pub spec: &'a str,
    pub resolved: Option<&'a str>,
    pub release: Option<&'a str>,
    /// Reasons, signature lines and ids, fingerprint id and title.
    pub texts: &'a [&'a str],
}

impl KnownIssue {
    /// Whether the entry describes this failing cell (ignoring expiry).
    pub fn describes(&self, cell: &CellFacts<'_>) -> bool {
        if !self.verdicts.contains(&cell.verdict) {
            return false;
        }
        if self
            .scenario
            .as_ref()
            .is_some_and(|g| !g.is_match(cell.scenario))
        {
            return false;
        }
        let kernel = match &self.kernel {
            KernelMatch::Any => true,
            KernelMatch::Specs(specs) => {
                specs.contains(cell.spec) || cell.resolved.is_some_and(|r| specs.contains(r))
            }
            KernelMatch::Versions(range) => cell
                .release
                .and_then(KernelVersion::from_release)
                .is_some_and(|v| range.matches(v)),
            KernelMatch::Glob(g) => {
                g.is_match(cell.spec)
                    || cell.resolved.is_some_and(|r| g.is_match(r))
                    || cell.release.is_some_and(|r| g.is_match(r))
            }
        };
        kernel
            && self
                .pattern
                .as_ref()
                .is_none_or(|re| cell.texts.iter().any(|t| re.is_match(t)))
    }

    pub fn expired(&self, today: Day) -> bool {
        self.expires.is_some_and(|e| e < today)
    }
}

/// What matching a cell found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Triage {
    /// Not a failure: nothing to triage.
    NotAFailure,
    Known(KnownMatch),
    /// Matched only by expired entries (their ids): it fails again.
    Expired(Vec<String>),
    Untriaged,
}

/// An entry's `verdict` list: each a failing verdict (others are errors, at the
/// list's span); an empty list matches nothing, so it is an error too.
fn failing_verdicts(
    list: &Spanned<Vec<String>>,
    err: &mut impl FnMut(std::ops::Range<usize>, String),
) -> Vec<Verdict> {
    let mut out = Vec::new();
    for v in list.get_ref() {
        match v.as_str() {
            "fail" => out.push(Verdict::Fail),
            "crash" => out.push(Verdict::Crash),
            "hang" => out.push(Verdict::Hang),
            other => err(
                list.span(),
                format!("`{other}` is not a failing verdict; allowed: fail, crash, hang"),
            ),
        }
    }
    if out.is_empty() && list.get_ref().is_empty() {
        err(
            list.span(),
            "an empty `verdict` list matches nothing".to_owned(),
        );
    }
    out
}

impl KnownIssues {
    /// Reads and validates `path`; every problem is reported, each located.
    pub fn load(path: &Path, kernels: &KernelList) -> Result<KnownIssues, KnownError> {
        let text = crate::scenario::read_source(path)?;
        KnownIssues::parse(&path.display().to_string(), &text, kernels)
    }

    /// `path` if it exists, else the default file if it exists, else no entries.
    pub fn load_optional(
        path: Option<&Path>,
        kernels: &KernelList,
    ) -> Result<KnownIssues, KnownError> {
        match path {
            Some(p) => KnownIssues::load(p, kernels),
            None if Path::new(DEFAULT_PATH).is_file() => {
                KnownIssues::load(Path::new(DEFAULT_PATH), kernels)
            }
            None => Ok(KnownIssues::default()),
        }
    }

    pub fn parse(file: &str, text: &str, kernels: &KernelList) -> Result<KnownIssues, KnownError> {
        let raw: RawFile = toml::from_str(text)
            .map_err(|e| KnownError::Invalid(vec![locate_toml_error(file, text, &e)]))?;
        let mut errors = Vec::new();
        let mut err = |span: std::ops::Range<usize>, msg: String| {
            errors.push(error_at(file, text, span, msg));
        };
        let mut issues = Vec::new();
        let mut ids = BTreeSet::new();
        for r in raw.issue {
            let id = r.id.get_ref().trim().to_owned();
            if id.is_empty() {
                err(r.id.span(), "an issue needs a non-empty `id`".to_owned());
            } else if !ids.insert(id.clone()) {
                err(
                    r.id.span(),
                    format!("`{id}` is used by an earlier entry; ids must be unique"),
                );
            }
            let link = r.link.get_ref().trim().to_owned();
            if !(link.starts_with("https://") || link.starts_with("http://")) {
                err(
                    r.link.span(),
                    format!("`{link}` is not a link; write the bug's URL (https://…)"),
                );
            }
            let scenario = match &r.scenario {
                Some(s) => match Glob::new(s.get_ref()) {
                    Ok(g) => Some(g.compile_matcher()),
                    Err(e) => {
                        err(s.span(), format!("not a glob: {e}"));
                        None
                    }
                },
                None => None,
            };
            let kernel = match &r.kernel {
                None => KernelMatch::Any,
                Some(k) => match kernel_match(k.get_ref(), kernels) {
                    Ok(m) => m,
                    Err(msg) => {
                        err(k.span(), msg);
                        KernelMatch::Any
                    }
                },
            };
            let verdicts = match &r.verdict {
                None => vec![Verdict::Fail, Verdict::Crash, Verdict::Hang],
                Some(list) => failing_verdicts(list, &mut err),
            };
            let pattern = match &r.pattern {
                Some(p) => match Regex::new(p.get_ref()) {
                    Ok(re) => Some(re),
                    Err(e) => {
                        let msg = e.to_string();
                        let last = msg.lines().last().unwrap_or("invalid").trim();
                        err(p.span(), format!("not a valid regular expression: {last}"));
                        None
                    }
                },
                None => None,
            };
            let expires = match &r.expires {
                Some(e) => match Day::parse(e.get_ref()) {
                    Some(d) => Some(d),
                    None => {
                        err(
                            e.span(),
                            format!("`{}` is not a date like 2027-01-31", e.get_ref()),
                        );
                        None
                    }
                },
                None => None,
            };
            if r.scenario.is_none() && r.kernel.is_none() && r.pattern.is_none() {
                err(
                    r.id.span(),
                    format!(
                        "`{id}` would match every failure: give a `scenario`, `kernel` or `match`"
                    ),
                );
            }
            issues.push(KnownIssue {
                id,
                link,
                note: r.note,
                scenario,
                kernel,
                verdicts,
                pattern,
                expires,
            });
        }
        if errors.is_empty() {
            Ok(KnownIssues {
                path: file.to_owned(),
                issues,
            })
        } else {
            Err(KnownError::Invalid(errors))
        }
    }

    /// Triage of one cell on `today`: the first live entry that describes it.
    pub fn triage(&self, cell: &CellFacts<'_>, today: Day) -> Triage {
        if !cell.verdict.is_failure() {
            return Triage::NotAFailure;
        }
        let mut expired = Vec::new();
        for issue in &self.issues {
            if issue.describes(cell) {
                if issue.expired(today) {
                    expired.push(issue.id.clone());
                } else {
                    return Triage::Known(KnownMatch {
                        id: issue.id.clone(),
                        link: issue.link.clone(),
                    });
                }
            }
        }
        if expired.is_empty() {
            Triage::Untriaged
        } else {
            Triage::Expired(expired)
        }
    }
}

/// The texts of a cell an entry's `match` looks at: reasons, signature lines and ids,
/// the fingerprint's id and title.
pub fn cell_texts(cell: &crate::results::CellResult) -> Vec<String> {
    let mut texts = cell.reasons.clone();
    for s in &cell.signatures {
        texts.push(s.line.clone());
        texts.push(s.id.clone());
    }
    if let Some(fp) = &cell.fingerprint {
        texts.push(fp.id.clone());
        texts.push(fp.title.clone());
    }
    texts
}

/// Triage of a recorded cell.
pub fn triage_cell(known: &KnownIssues, cell: &crate::results::CellResult, today: Day) -> Triage {
    let texts = cell_texts(cell);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    known.triage(
        &CellFacts {
            scenario: &cell.scenario,
            verdict: cell.verdict,
            spec: &cell.kernel.spec,
            resolved: cell.kernel.resolved.as_deref(),
            release: cell.kernel.release.as_deref(),
            texts: &refs,
        },
        today,
    )
}

/// Triages every cell with the list as it is on `today`, replacing what each cell
/// recorded (the list is versioned with the tests, not with the runs), and sums it up.
pub fn retriage<'a>(
    known: &KnownIssues,
    cells: impl IntoIterator<Item = &'a mut crate::results::CellResult>,
    today: Day,
) -> TriageSummary {
    let triaged: Vec<Triage> = cells
        .into_iter()
        .map(|cell| {
            let t = triage_cell(known, cell, today);
            cell.known = match &t {
                Triage::Known(m) => Some(m.clone()),
                _ => None,
            };
            t
        })
        .collect();
    TriageSummary::of(known, &triaged)
}

impl TriageSummary {
    /// Summarises the triage of every cell of a run.
    pub fn of<'a>(
        known: &KnownIssues,
        triaged: impl IntoIterator<Item = &'a Triage>,
    ) -> TriageSummary {
        let mut summary = TriageSummary {
            file: known.path.clone(),
            ..TriageSummary::default()
        };
        let mut expired = BTreeSet::new();
        for t in triaged {
            match t {
                Triage::Known(m) => *summary.matched.entry(m.id.clone()).or_default() += 1,
                Triage::Expired(ids) => expired.extend(ids.iter().cloned()),
                Triage::NotAFailure | Triage::Untriaged => {}
            }
        }
        summary.expired = expired.into_iter().collect();
        summary.possibly_fixed = known
            .issues
            .iter()
            .filter(|i| !summary.matched.contains_key(&i.id) && !summary.expired.contains(&i.id))
            .map(|i| i.id.clone())
            .collect();
        summary
    }
}

/// `deb612`, `@nightly`, `>=6.12, <6.13`, or a glob (`debian:6.12*`).
fn kernel_match(text: &str, kernels: &KernelList) -> Result<KernelMatch, String> {
    let text = text.trim();
    if text.starts_with(['<', '>', '=']) {
        return VersionRange::parse(text).map(KernelMatch::Versions);
    }
    if text.starts_with('@') || kernels.kernels.contains_key(text) {
        return kernels
            .expand(&[text.to_owned()])
            .map(|specs| KernelMatch::Specs(specs.into_iter().collect()))
            .map_err(|e| e.to_string());
    }
    Glob::new(text)
        .map(|g| KernelMatch::Glob(g.compile_matcher()))
        .map_err(|e| format!("not a kernel name, set, version range or glob: {e}"))
}

#[cfg(test)]
mod tests;
