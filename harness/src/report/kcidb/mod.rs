//! Results as KCIDB I/O JSON, the schema KernelCI's database takes from every lab, so a
//! team that reads KernelCI's dashboard sees kchaos next to its other labs without a
//! converter. Each kernel is a checkout (its source: a Debian package, a local tree's
//! git commit, a recipe) and a build; each cell a test (`kchaos.<scenario>`); each
//! check a test below it (`kchaos.<scenario>.<check>`) with the observed value; each
//! known issue a KCIDB issue, and each failure it describes an incident.
//!
//! The mapping is pure ([`export`]): the same results give the same objects in the same
//! order, and ids are made from what the run recorded (`origin:run:cell`), so exporting
//! a run twice gives objects KCIDB merges instead of duplicates. Submitting is the
//! user's (`kcidb-submit`, docs/results.md): kchaos sends nothing over the network.

pub mod names;
pub mod schema;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::Path;

use kchaos_images::spec::KernelSpec;
use kchaos_model::scenario::{CheckOutcome, CheckResult, CheckStatus};
use kchaos_model::units::Unit;
use kchaos_model::verdict::Verdict;

pub use self::names::{BaseUrl, Origin};
use self::schema::{
    Build, BuildMisc, CellMisc, CheckMisc, Checkout, CheckoutMisc, DebianMisc, Environment,
    EnvironmentMisc, FingerprintMisc, Incident, Issue, IssueMisc, Number, Prefix, Report, Resource,
    SchemaVersion, Status, Test, TestMisc,
};
use crate::analysis::known::KnownIssue;
use crate::results::sources::LoadedRun;
use crate::results::{CellResult, KernelInfo};

/// kchaos boots `qemu-system-x86_64` guests only.
pub const ARCHITECTURE: &str = "x86_64";
/// KCIDB's bound on `log_excerpt`, in characters.
pub const LOG_EXCERPT_MAX: usize = 16_384;
/// kchaos keeps no history of an entry: every issue is version 0.
pub const ISSUE_VERSION: u32 = 0;

#[derive(Debug, thiserror::Error)]
pub enum KcidbError {
    #[error("`{origin}` is not a KCIDB origin: use lower-case letters, digits and `_`")]
    Origin { origin: String },
    #[error("Base URL `{url}`: {reason}")]
    BaseUrl { url: String, reason: String },
    #[error(
        "{runs} runs would get one base URL: put {{dir}} where each run's directory name goes"
    )]
    BaseUrlNeedsDir { runs: usize },
    #[error("Run {dir} has no valid start time (`{value}`): KCIDB ids are made from it")]
    Start { dir: String, value: String },
    #[error("Two different results would both be the KCIDB {kind} `{id}`; export them apart")]
    Conflict { kind: &'static str, id: String },
    #[error("Cannot encode the KCIDB report")]
    Encode(#[source] serde_json::Error),
    #[error("Cannot write {path}")]
    Write {
        path: String,
        #[source]
        source: kchaos_images::cache::CacheError,
    },
}

/// How objects are named and linked.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub origin: Origin,
    /// Where the results directory is published; without it no links are made.
    pub base_url: Option<BaseUrl>,
}

/// A known issue as KCIDB gets it: from a known-issues entry, or from what a cell
/// recorded when the file is not at hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueEntry {
    pub id: String,
    pub link: String,
    pub note: Option<String>,
    pub expires: Option<String>,
}

impl IssueEntry {
    pub fn of(issue: &KnownIssue) -> IssueEntry {
        IssueEntry {
            id: issue.id.clone(),
            link: issue.link.clone(),
            note: issue.note.clone(),
            expires: issue.expires.map(|d| d.to_string()),
        }
    }
}

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
/// fails the cell.
pub fn check_status(status: CheckStatus) -> Status {
    match status {
        CheckStatus::Pass => Status::Pass,
        CheckStatus::Fail | CheckStatus::NoData => Status::Fail,
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

/// The KCIDB objects of `runs`, each list in id order. `issues` are the known issues
/// in effect; an issue a cell recorded that is not among them is added from the cell.
pub fn export(
    runs: &[LoadedRun],
    issues: &[IssueEntry],
    opts: &Options,
) -> Result<Report, KcidbError> {
    if runs.len() > 1 && opts.base_url.as_ref().is_some_and(|b| !b.has_dir()) {
        return Err(KcidbError::BaseUrlNeedsDir { runs: runs.len() });
    }
    let mut objects = Objects::default();
    for entry in issues {
        objects
            .issues
            .entry(opts.origin.id(&entry.id))
            .or_insert_with(|| issue(&opts.origin, entry));
    }
    for run in runs {
        let key = names::run_key(&run.results.started_at, &run.dir)?;
        for cell in &run.results.cells {
            objects.add_cell(cell, &key, &run.dir, opts)?;
        }
    }
    Ok(objects.into_report())
}

/// The objects so far, by id: a test or incident seen twice must be the same object
/// (the same run from two sources); a kernel's checkout and build come from its most
/// completely recorded cell, whatever order the cells come in.
#[derive(Debug, Default)]
struct Objects {
    kernels: BTreeMap<String, (KernelRank, Checkout, Build)>,
    tests: BTreeMap<String, Test>,
    issues: BTreeMap<String, Issue>,
    incidents: BTreeMap<String, Incident>,
}

/// Which cell describes a kernel best: resolved, with a release, then the lowest id.
type KernelRank = (bool, bool, String);

impl Objects {
    fn add_cell(
        &mut self,
        cell: &CellResult,
        run_key: &str,
        dir: &Path,
        opts: &Options,
    ) -> Result<(), KcidbError> {
        let origin = &opts.origin;
        let kernel_id = origin.id(&format!("{run_key}:{}", cell.kernel_label()));
        let rank = (
            cell.kernel.resolved.is_none(),
            cell.kernel.release.is_none(),
            cell.id.clone(),
        );
        let better = self
            .kernels
            .get(&kernel_id)
            .is_none_or(|(known, _, _)| rank < *known);
        if better {
            let kernel = &cell.kernel;
            let pair = (
                checkout(kernel, &kernel_id, origin),
                build(kernel, &kernel_id, origin),
            );
            self.kernels
                .insert(kernel_id.clone(), (rank, pair.0, pair.1));
        }
        let test_id = origin.id(&format!("{run_key}:{}", cell.id));
        let links = opts.base_url.as_ref().map(|b| (b, dir));
        unique(
            &mut self.tests,
            "test",
            cell_test(cell, &test_id, &kernel_id, origin, links),
        )?;
        let names = names::check_names(&cell.checks);
        for (check, name) in cell.checks.iter().zip(names) {
            let id = format!("{test_id}:{name}");
            unique(
                &mut self.tests,
                "test",
                check_test(cell, check, &name, id, &kernel_id, origin),
            )?;
        }
        if let Some(known) = cell.known.as_ref().filter(|_| cell.verdict.is_failure()) {
            let issue_id = origin.id(&known.id);
            self.issues.entry(issue_id.clone()).or_insert_with(|| {
                issue(
                    origin,
                    &IssueEntry {
                        id: known.id.clone(),
                        link: known.link.clone(),
                        note: None,
                        expires: None,
                    },
                )
            });
            let incident = Incident {
                id: format!("{test_id}:{}", known.id.replace('\0', "?")),
                origin: origin.as_str().to_owned(),
                issue_id,
                issue_version: ISSUE_VERSION,
                build_id: kernel_id,
                test_id,
                present: true,
            };
            unique(&mut self.incidents, "incident", incident)?;
        }
        Ok(())
    }

    fn into_report(self) -> Report {
        let (checkouts, builds) = self
            .kernels
            .into_values()
            .map(|(_, checkout, build)| (checkout, build))
            .unzip();
        Report {
            version: SchemaVersion::CURRENT,
            checkouts,
            builds,
            tests: self.tests.into_values().collect(),
            issues: self.issues.into_values().collect(),
            incidents: self.incidents.into_values().collect(),
        }
    }
}

trait HasId {
    fn id(&self) -> &str;
}

impl HasId for Test {
    fn id(&self) -> &str {
        &self.id
    }
}

impl HasId for Incident {
    fn id(&self) -> &str {
        &self.id
    }
}

/// Adds `object` unless the same object is there; a different one under its id is a
/// conflict, never silently replaced.
fn unique<T: HasId + PartialEq>(
    map: &mut BTreeMap<String, T>,
    kind: &'static str,
    object: T,
) -> Result<(), KcidbError> {
    match map.get(object.id()) {
        Some(existing) if *existing == object => Ok(()),
        Some(_) => Err(KcidbError::Conflict {
            kind,
            id: object.id().to_owned(),
        }),
        None => {
            map.insert(object.id().to_owned(), object);
            Ok(())
        }
    }
}

/// The spec a kernel resolved to, parsed (`None` for one that never resolved and
/// does not parse).
fn parsed_spec(kernel: &KernelInfo) -> Option<KernelSpec> {
    KernelSpec::parse(kernel.resolved.as_deref().unwrap_or(&kernel.spec)).ok()
}

fn checkout(kernel: &KernelInfo, id: &str, origin: &Origin) -> Checkout {
    let mut out = Checkout {
        id: id.to_owned(),
        origin: origin.as_str().to_owned(),
        tree_name: None,
        git_repository_url: None,
        git_repository_branch: None,
        git_commit_hash: None,
        comment: None,
        valid: kernel.resolved.is_some().then_some(true),
        misc: CheckoutMisc {
            debian: None,
            recipe: None,
            source_version: None,
        },
    };
    let debian = kernel.debian.as_ref().map_or_else(
        || {
            // Results from before `debian` was recorded carry "name version".
            kernel.package.as_deref().and_then(|p| {
                p.split_once(' ').map(|(name, version)| DebianMisc {
                    package: name.to_owned(),
                    version: version.to_owned(),
                    suite: None,
                })
            })
        },
        |d| {
            Some(DebianMisc {
                package: d.name.clone(),
                version: d.version.clone(),
                suite: d.suite.clone(),
            })
        },
    );
    if let Some(d) = debian {
        out.comment = Some(match &d.suite {
            Some(suite) => format!("Debian {} {} from {suite}", d.package, d.version),
            None => format!("Debian {} {}", d.package, d.version),
        });
        out.misc.debian = Some(d);
        return out;
    }
    match parsed_spec(kernel) {
        Some(KernelSpec::Path { source, .. }) => {
            out.tree_name = source.tree;
            out.git_repository_url = source.repo.map(|r| names::link(&r));
            out.git_repository_branch = source.branch;
            out.git_commit_hash = source.commit;
            out.comment = Some(match &kernel.release {
                Some(release) => format!("a local build of {release}"),
                None => "a local build".to_owned(),
            });
        }
        Some(KernelSpec::Build {
            recipe,
            source_version,
        }) => {
            out.comment = Some(match &source_version {
                Some(v) => format!("Debian's kernel source {v} with kchaos's recipe `{recipe}`"),
                None => format!("Debian's kernel source with kchaos's recipe `{recipe}`"),
            });
            out.misc.recipe = Some(recipe);
            out.misc.source_version = source_version;
        }
        _ => {
            out.comment = Some(match &kernel.resolved {
                Some(resolved) => resolved.clone(),
                None => format!("{} (not resolved)", kernel.spec),
            });
        }
    }
    out
}

fn build(kernel: &KernelInfo, id: &str, origin: &Origin) -> Build {
    let config_name = match parsed_spec(kernel) {
        Some(KernelSpec::Debian { flavour, .. }) => Some(flavour.as_str().to_owned()),
        Some(KernelSpec::Build { recipe, .. }) => Some(recipe),
        _ => None,
    };
    Build {
        id: id.to_owned(),
        checkout_id: id.to_owned(),
        origin: origin.as_str().to_owned(),
        architecture: Some(ARCHITECTURE.to_owned()),
        config_name,
        comment: Some(
            kernel
                .resolved
                .clone()
                .unwrap_or_else(|| kernel.spec.clone()),
        ),
        // A kernel that resolved is one that exists to boot; one that did not is
        // unknown, not a failed build.
        status: kernel.resolved.is_some().then_some(Status::Pass),
        misc: BuildMisc {
            spec: kernel.spec.clone(),
            resolved: kernel.resolved.clone(),
            release: kernel.release.clone(),
        },
    }
}

fn cell_test(
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
                "QEMU {ARCHITECTURE} VM ({})",
                cell.accel.as_deref().unwrap_or("no accelerator recorded")
            ),
            misc: EnvironmentMisc {
                accel: cell.accel.clone(),
                image: cell.image.as_ref().map(|i| i.kind.to_string()),
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
    let mut out = Vec::new();
    for path in [
        &cell_json,
        &a.console,
        &a.kmsg,
        &a.qemu_log,
        &a.sysrq,
        &a.vmcore,
        &a.bundle,
    ]
    .into_iter()
    .flatten()
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

fn check_test(
    cell: &CellResult,
    check: &CheckResult,
    name: &str,
    id: String,
    build_id: &str,
    origin: &Origin,
) -> Test {
    let excerpt = match check.outcome() {
        CheckOutcome::Pass => None,
        CheckOutcome::Violated(m) | CheckOutcome::NoData(m) => {
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

fn issue(origin: &Origin, entry: &IssueEntry) -> Issue {
    Issue {
        id: origin.id(&entry.id),
        version: ISSUE_VERSION,
        origin: origin.as_str().to_owned(),
        report_url: Some(names::link(&entry.link)),
        comment: entry.note.as_ref().map(|n| n.replace('\0', "?")),
        misc: IssueMisc {
            known_issue: entry.id.clone(),
            expires: entry.expires.clone(),
        },
    }
}

/// The document as JSON, one object per line of indentation (stable bytes).
pub fn render(report: &Report) -> Result<String, KcidbError> {
    let mut text = serde_json::to_string_pretty(report).map_err(KcidbError::Encode)?;
    text.push('\n');
    Ok(text)
}

/// Writes the document to `path` atomically, readable by all (it is for sharing).
pub fn write(report: &Report, path: &Path) -> Result<(), KcidbError> {
    let text = render(report)?;
    kchaos_images::Cache::write_atomic(path, text.as_bytes()).map_err(|source| {
        KcidbError::Write {
            path: path.display().to_string(),
            source,
        }
    })?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644));
    Ok(())
}
