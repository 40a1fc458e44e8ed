//! A cell as a KCIDB test (`kchaos.<scenario>`) and each of its checks as a test
//! below it (`kchaos.<scenario>.<check>`): status, times, environment, the excerpt
//! that says why, links to its files, and the observed value with its unit.

use std::path::Path;

use kchaos_model::scenario::{CheckOutcome, CheckResult, CheckStatus};
use kchaos_model::units::Unit;
use kchaos_model::verdict::Verdict;

use super::names::{self, BaseUrl, Origin};
use super::schema::{
    CellMisc, CheckMisc, Environment, EnvironmentMisc, FingerprintMisc, Number, Prefix, Resource,
    Status, Test, TestMisc,
};
use super::{ARCHITECTURE, LOG_EXCERPT_MAX};
use crate::results::CellResult;

/// kchaos's verdict as KCIDB's status. A failure a known issue describes keeps its
/// status (what the kernel did); its incident says it is known.
pub fn status(verdict: Verdict) -> Status {
    match verdict {
        Verdict::Pass => Status::Pass,
        Verdict::Fail | Verdict::Crash | Verdict::Hang => Status::Fail,
        Verdict::Error => Status::Error,
        Verdict::Skip => Status::Skip,
    }
}

/// A check's status: a missing value never passes, so `no-data` is a FAIL too, as it
/// fails the cell; so is `not-tested` (a window too thin to judge).
pub fn check_status(status: CheckStatus) -> Status {
    match status {
        CheckStatus::Pass => Status::Pass,
        CheckStatus::Fail | CheckStatus::NoData | CheckStatus::NotTested => Status::Fail,
    }
}

/// A value in kchaos's base unit as KCIDB shows it: nanoseconds as seconds with metric
/// prefixes (ms, µs), bytes with binary ones (KiB, MiB), counts with metric ones.
/// `None` for a value that is not a finite number (KCIDB has no NaN).
pub fn number(unit: Unit, value: f64) -> Option<Number> {
    if !value.is_finite() {
        return None;
    }
    let (value, unit, prefix) = match unit {
        Unit::Ns => (value / 1e9, Some("s"), Some(Prefix::Metric)),
        Unit::Bytes => (value, Some("B"), Some(Prefix::Binary)),
        Unit::Count => (value, None, Some(Prefix::Metric)),
        Unit::Ratio => (value, None, None),
    };
    Some(Number {
        value,
        unit: unit.map(str::to_owned),
        prefix,
    })
}

pub(super) fn cell_test(
    cell: &CellResult,
    id: &str,
    build_id: &str,
    origin: &Origin,
    links: Option<(&BaseUrl, &Path)>,
) -> Test {
    let kernel = cell.kernel.resolved.as_deref().unwrap_or(&cell.kernel.spec);
    let mut comment = format!(
        "{} on {kernel}, repeat {}: {}",
        cell.scenario, cell.repeat, cell.verdict
    );
    if let Some(k) = cell.known.as_ref().filter(|_| cell.verdict.is_failure()) {
        comment.push_str(&format!(" (known issue {})", k.id));
    }
    let (log_url, output_files) =
        links.map_or((None, Vec::new()), |(base, dir)| files(cell, base, dir));
    Test {
        id: id.to_owned(),
        build_id: build_id.to_owned(),
        origin: origin.as_str().to_owned(),
        path: format!("{}.{}", names::PATH_ROOT, names::path_part(&cell.scenario)),
        status: status(cell.verdict),
        comment: Some(names::excerpt(&comment, LOG_EXCERPT_MAX)),
        number: None,
        start_time: names::start_time(&cell.started_at),
        duration: Some(seconds(cell.duration_ms)),
        environment: Some(Environment {
            comment: format!(
                "QEMU {ARCHITECTURE} VM ({}){}",
                cell.accel.as_deref().unwrap_or("no accelerator recorded"),
                cell.topology
                    .as_deref()
                    .map(|t| format!(", CPU topology {t}"))
                    .unwrap_or_default()
            ),
            misc: EnvironmentMisc {
                accel: cell.accel.clone(),
                image: cell.image.as_ref().map(|i| i.kind.to_string()),
                topology: cell.topology.clone(),
            },
        }),
        log_excerpt: cell_excerpt(cell),
        log_url,
        output_files,
        misc: TestMisc::Cell(CellMisc {
            cell: cell.id.clone(),
            verdict: cell.verdict.as_str().to_owned(),
            reasons: cell.reasons.clone(),
            known: cell.known.clone().filter(|_| cell.verdict.is_failure()),
            fingerprint: cell.fingerprint.as_ref().map(|f| FingerprintMisc {
                id: f.id.clone(),
                title: f.title.clone(),
            }),
            scenario_file: cell.scenario_file.clone(),
            seed: cell.seed,
            repeat: cell.repeat,
            boot_ms: cell.boot_ms,
            first_signature_ms: cell.first_signature_ms,
        }),
    }
}

/// Milliseconds as seconds (exact for any duration a cell can have: below 2^52 ms).
#[allow(clippy::cast_precision_loss)]
fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// What decided a cell that did not pass, most important first: its reasons, the
/// fingerprint with its frames, the kernel-log lines that matched a signature (each
/// line once: a signature's line is often its reason too).
fn cell_excerpt(cell: &CellResult) -> Option<String> {
    if cell.verdict == Verdict::Pass {
        return None;
    }
    let mut lines: Vec<String> = Vec::new();
    let mut add = |line: String| {
        if !lines.contains(&line) {
            lines.push(line);
        }
    };
    cell.reasons.iter().cloned().for_each(&mut add);
    if let Some(fp) = &cell.fingerprint {
        add(format!("fingerprint {}: {}", fp.id, fp.title));
        fp.frames
            .iter()
            .map(|f| format!("  {f}"))
            .for_each(&mut add);
    }
    cell.signatures
        .iter()
        .map(ToString::to_string)
        .for_each(&mut add);
    (!lines.is_empty()).then(|| names::excerpt(&(lines.join("\n") + "\n"), LOG_EXCERPT_MAX))
}

/// The console as the log and every other file of the cell, as links.
fn files(cell: &CellResult, base: &BaseUrl, dir: &Path) -> (Option<String>, Vec<Resource>) {
    let a = &cell.artifacts;
    let cell_json = a.dir.as_ref().map(|d| format!("{d}/cell.json"));
    let files = a.present().filter(|(kind, _)| *kind != "dir");
    let mut out = Vec::new();
    for path in cell_json
        .as_deref()
        .into_iter()
        .chain(files.map(|(_, p)| p))
    {
        let name = path.rsplit('/').next().unwrap_or(path).replace('\0', "?");
        if !name.is_empty() {
            out.push(Resource {
                name,
                url: base.file(dir, path),
            });
        }
    }
    let log = a.console.as_ref().map(|c| base.file(dir, c));
    (log, out)
}

pub(super) fn check_test(
    cell: &CellResult,
    check: &CheckResult,
    name: &str,
    id: String,
    build_id: &str,
    origin: &Origin,
) -> Test {
    let excerpt = match check.outcome() {
        CheckOutcome::Pass => None,
        CheckOutcome::Violated(m) | CheckOutcome::NoData(m) | CheckOutcome::NotTested(m) => {
            Some(names::excerpt(&(m + "\n"), LOG_EXCERPT_MAX))
        }
    };
    Test {
        id,
        build_id: build_id.to_owned(),
        origin: origin.as_str().to_owned(),
        path: format!(
            "{}.{}.{name}",
            names::PATH_ROOT,
            names::path_part(&cell.scenario)
        ),
        status: check_status(check.status),
        comment: Some(names::excerpt(&check.assert, LOG_EXCERPT_MAX)),
        number: check.observed.and_then(|v| number(check.unit, v)),
        start_time: None,
        duration: None,
        environment: None,
        log_excerpt: excerpt,
        log_url: None,
        output_files: Vec::new(),
        misc: TestMisc::Check(CheckMisc {
            assert: check.assert.clone(),
            because: check.because.clone(),
            op: check.op.as_str().to_owned(),
            bound: number(check.unit, check.bound),
            check_status: check.status.as_str().to_owned(),
            margin: check.margin.filter(|m| m.is_finite()),
        }),
    }
}
