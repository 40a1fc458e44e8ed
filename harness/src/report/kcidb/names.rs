//! Names in a KCIDB export: the origin, the run's key in every id, test paths, a
//! path-safe name per check, and links to a cell's files. All pure; each is documented
//! in `docs/results.md` because other systems store the ids and merge on them.

use std::path::Path;

use kchaos_model::scenario::{CheckResult, CmpOp};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use super::KcidbError;

/// The root of every kchaos test path (`kchaos.<scenario>[.<check>]`).
pub const PATH_ROOT: &str = "kchaos";

/// The placeholder in a base URL that stands for a run's directory name.
pub const DIR_PLACEHOLDER: &str = "{dir}";

/// The name of the CI system every object comes from: KCIDB's `[a-z0-9_]+`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin(String);

impl Origin {
    pub fn parse(text: &str) -> Result<Origin, KcidbError> {
        let ok = !text.is_empty()
            && text
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if ok {
            Ok(Origin(text.to_owned()))
        } else {
            Err(KcidbError::Origin {
                origin: text.to_owned(),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `origin:rest`, the form of every KCIDB id. KCIDB ids may hold anything but NUL.
    pub fn id(&self, rest: &str) -> String {
        format!("{}:{}", self.0, rest.replace('\0', "?"))
    }
}

impl Default for Origin {
    fn default() -> Origin {
        Origin("kchaos".to_owned())
    }
}

/// A run's part of every id: its start in UTC, to the second (`20261123T033400Z`).
/// It is fixed when the run starts (a `--resume` keeps it) and recorded alike in
/// `results.json` and the database, so every export of a run names it the same.
pub fn run_key(started_at: &str, dir: &Path) -> Result<String, KcidbError> {
    let time = humantime::parse_rfc3339_weak(started_at.trim()).map_err(|_| KcidbError::Start {
        dir: dir.display().to_string(),
        value: started_at.to_owned(),
    })?;
    Ok(humantime::format_rfc3339_seconds(time)
        .to_string()
        .replace(['-', ':'], ""))
}

/// A recorded time in the form KCIDB's `date-time` takes, or `None` when the record
/// holds no valid time (the field is then left out, never guessed).
pub fn start_time(text: &str) -> Option<String> {
    humantime::parse_rfc3339_weak(text.trim())
        .ok()
        .map(|t| humantime::format_rfc3339_seconds(t).to_string())
}

/// One component of a test path: KCIDB allows `[A-Za-z0-9_-]` between the dots.
pub fn path_part(text: &str) -> String {
    let part: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if part.is_empty() {
        "_".to_owned()
    } else {
        part
    }
}

/// The operator as a word, for names that cannot hold `<` or `=`.
fn op_word(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Lt => "lt",
        CmpOp::Le => "le",
        CmpOp::Gt => "gt",
        CmpOp::Ge => "ge",
        CmpOp::Eq => "eq",
        CmpOp::Ne => "ne",
    }
}

/// The path-safe name of one check: `<metric>-<stat>-<op>-<bound as written>`, every
/// character outside `[A-Za-z0-9_-]` (the dots of a metric name and of a number
/// included) made `_`: `memory_stat_read.p99 <= 50ms` is `memory_stat_read-p99-le-50ms`,
/// `cfs.share_min.value >= 0.5` is `cfs_share_min-value-ge-0_5`. A check over a window
/// has the window after the metric, its operators as words:
/// `memory_stat_read[while nr_dying_descendants >= 900].p50 <= 20ms` is
/// `memory_stat_read-while_nr_dying_descendants_ge_900-p50-le-20ms`.
pub fn check_name(check: &CheckResult) -> String {
    let op = check.op.as_str();
    // The last comparison is the check's own: a window may hold one too.
    let bound = check
        .assert
        .rsplit_once(op)
        .map(|(_, right)| right.trim().to_owned())
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| format!("{}", check.bound));
    let window = check
        .window
        .as_deref()
        .map(|w| format!("-{}", window_words(w)))
        .unwrap_or_default();
    path_part(&format!(
        "{}{window}-{}-{}-{bound}",
        check.metric,
        check.stat,
        op_word(check.op)
    ))
}

/// `while nr_dying_descendants >= 900` as `while_nr_dying_descendants_ge_900`.
fn window_words(window: &str) -> String {
    let mut text = window.to_owned();
    for (symbol, word) in [
        ("<=", " le "),
        (">=", " ge "),
        ("==", " eq "),
        ("!=", " ne "),
        ("<", " lt "),
        (">", " gt "),
    ] {
        text = text.replace(symbol, word);
    }
    text.split_whitespace().collect::<Vec<_>>().join("_")
}

/// The names of a cell's checks, in scenario order. Two checks that come out alike (the
/// same assertion twice, or `a.b` and `a_b`) are told apart by `-2`, `-3`, … in order, so
/// every name is unique within its cell and stable across exports.
pub fn check_names(checks: &[CheckResult]) -> Vec<String> {
    let mut names: Vec<String> = Vec::with_capacity(checks.len());
    for check in checks {
        let base = check_name(check);
        let mut name = base.clone();
        let mut n = 1;
        while names.contains(&name) {
            n += 1;
            name = format!("{base}-{n}");
        }
        names.push(name);
    }
    names
}

/// What no URL may carry as it is, whoever wrote it: controls, space, quotes, angle
/// brackets and the other characters RFC 3986 forbids. `%` stays: a link as the user
/// wrote it may hold escapes already.
const LINK: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'<')
    .add(b'>')
    .add(b'[')
    .add(b']')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Characters a URL cannot carry as they are in a path segment: [`LINK`]'s, and what
/// RFC 3986 reserves there (`%` too, so a file name is never read as an escape).
const PATH_SEGMENT: &AsciiSet = &LINK.add(b'#').add(b'%').add(b'?');

/// A link as written, with what no URL may carry (spaces, quotes) escaped.
pub fn link(text: &str) -> String {
    utf8_percent_encode(text.trim(), LINK).to_string()
}

/// Where a results directory is published: cells' files get links under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl(String);

impl BaseUrl {
    /// An absolute URL (`https://ci.example/results/{dir}`); `{dir}` stands for each
    /// run directory's name.
    pub fn parse(text: &str) -> Result<BaseUrl, KcidbError> {
        let bad = |reason: &str| KcidbError::BaseUrl {
            url: text.to_owned(),
            reason: reason.to_owned(),
        };
        let text = text.trim();
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| bad("it is not an absolute URL with a host (scheme://host/path)"))?;
        let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !scheme_ok || rest.is_empty() || rest.starts_with('/') {
            return Err(bad(
                "it is not an absolute URL with a host (scheme://host/path)",
            ));
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("it holds white space; escape it (%20)"));
        }
        Ok(BaseUrl(text.trim_end_matches('/').to_owned()))
    }

    pub fn has_dir(&self) -> bool {
        self.0.contains(DIR_PLACEHOLDER)
    }

    /// The URL of a file at `relative` (a path in the results directory) of the run
    /// kept in `dir`.
    pub fn file(&self, dir: &Path, relative: &str) -> String {
        let dir_name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let base = link(
            &self
                .0
                .replace(DIR_PLACEHOLDER, &segment(&dir_name).to_string()),
        );
        let path: Vec<String> = relative
            .split('/')
            .filter(|s| !s.is_empty() && *s != ".")
            .map(|s| segment(s).to_string())
            .collect();
        format!("{base}/{}", path.join("/"))
    }
}

fn segment(text: &str) -> percent_encoding::PercentEncode<'_> {
    utf8_percent_encode(text, PATH_SEGMENT)
}

/// `text` cut to at most `max` characters (KCIDB counts characters, not bytes), NUL
/// (which KCIDB refuses in text) shown as `?`. A cut says so on its last line.
pub fn excerpt(text: &str, max: usize) -> String {
    let clean = text.replace('\0', "?");
    if clean.chars().count() <= max {
        return clean;
    }
    const CUT: &str = "\n[… cut]";
    let keep = max.saturating_sub(CUT.chars().count());
    let mut out: String = clean.chars().take(keep).collect();
    out.push_str(CUT);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_what_kcidb_takes() {
        for good in ["kchaos", "lab_2", "k8s"] {
            assert_eq!(Origin::parse(good).unwrap().as_str(), good);
        }
        for bad in ["", "KChaos", "my-lab", "a:b", "lab 1"] {
            let e = Origin::parse(bad).unwrap_err().to_string();
            assert!(
                e.contains("lower-case letters, digits and `_`"),
                "{bad}: {e}"
            );
        }
        assert_eq!(Origin::default().id("a\0b"), "kchaos:a?b");
    }

    #[test]
    fn the_run_key_is_its_start_in_utc_to_the_second() {
        let dir = Path::new("results/x");
        for (started, key) in [
            ("2026-11-23T03:34:00Z", "20261123T033400Z"),
            ("2026-11-23T03:34:00.123456Z", "20261123T033400Z"),
            ("2026-11-23 03:34:00", "20261123T033400Z"),
        ] {
            assert_eq!(run_key(started, dir).unwrap(), key, "{started}");
        }
        let e = run_key("yesterday", dir).unwrap_err().to_string();
        assert!(e.contains("results/x") && e.contains("`yesterday`"), "{e}");
        assert_eq!(
            start_time("2026-11-23T03:34:01Z").as_deref(),
            Some("2026-11-23T03:34:01Z")
        );
        assert_eq!(start_time(""), None);
    }

    #[test]
    fn check_names_are_path_safe_readable_and_unique_in_their_cell() {
        use kchaos_model::metrics::Stat;
        use kchaos_model::scenario::CheckStatus;
        use kchaos_model::units::Unit;
        let check = |assert: &str, metric: &str, stat: Stat, op: CmpOp| CheckResult {
            assert: assert.to_owned(),
            because: None,
            metric: metric.to_owned(),
            stat,
            op,
            unit: Unit::Count,
            observed: Some(1.0),
            bound: 0.5,
            status: CheckStatus::Pass,
            headroom: None,
            margin: None,
            window: assert
                .split_once('[')
                .and_then(|(_, w)| w.split_once(']'))
                .map(|(w, _)| w.to_owned()),
            samples: None,
            min_samples: None,
            not_tested: None,
        };
        let checks = [
            check(
                "memory_stat_read.p99 <= 50ms",
                "memory_stat_read",
                Stat::P99,
                CmpOp::Le,
            ),
            check(
                "cfs.share_min.value >= 0.5",
                "cfs.share_min",
                Stat::Value,
                CmpOp::Ge,
            ),
            check("d_state.last == 0", "d_state", Stat::Last, CmpOp::Eq),
            check("d_state.last == 0", "d_state", Stat::Last, CmpOp::Eq),
            check("net.delta != -1", "net", Stat::Delta, CmpOp::Ne),
            check("lat.p50 < 1s", "lat", Stat::P50, CmpOp::Lt),
            check("x.max > 2 KiB", "x", Stat::Max, CmpOp::Gt),
            check(
                "lat[while dying <= 900].p50 <= 20ms",
                "lat",
                Stat::P50,
                CmpOp::Le,
            ),
            check("lat[hold].p50 <= 20ms", "lat", Stat::P50, CmpOp::Le),
        ];
        assert_eq!(
            check_names(&checks),
            [
                "memory_stat_read-p99-le-50ms",
                "cfs_share_min-value-ge-0_5",
                "d_state-last-eq-0",
                "d_state-last-eq-0-2",
                "net-delta-ne--1",
                "lat-p50-lt-1s",
                "x-max-gt-2_KiB",
                "lat-while_dying_le_900-p50-le-20ms",
                "lat-hold-p50-le-20ms",
            ]
        );
        assert_eq!(path_part(""), "_");
        assert_eq!(path_part("selftest/panic"), "selftest_panic");
    }

    #[test]
    fn links_to_files_are_escaped_and_placed_per_run() {
        let base = BaseUrl::parse("https://ci.example/runs/{dir}/").unwrap();
        assert!(base.has_dir());
        assert_eq!(
            base.file(
                Path::new("/srv/results/nightly 7"),
                "memcg/debian-6.12.118+deb13-cloud/r1/console.log"
            ),
            "https://ci.example/runs/nightly%207/memcg/debian-6.12.118+deb13-cloud/r1/console.log"
        );
        let plain = BaseUrl::parse("file:///srv/r").unwrap_err().to_string();
        assert!(plain.contains("not an absolute URL"), "{plain}");
        for bad in ["ci.example/r", "https://", "https://ci.example/a b", "://x"] {
            assert!(BaseUrl::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            link("https://bugs.example/q?a=1 2"),
            "https://bugs.example/q?a=1%202"
        );
    }

    #[test]
    fn excerpts_fit_kcidb_and_say_when_cut() {
        assert_eq!(excerpt("a\0b", 10), "a?b");
        let long = "é".repeat(20);
        let cut = excerpt(&long, 12);
        assert_eq!(cut.chars().count(), 12);
        assert!(cut.ends_with("[… cut]"), "{cut}");
    }
}
