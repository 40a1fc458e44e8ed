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

mod cell;
mod kernel;
pub mod names;
pub mod schema;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::Path;

use self::cell::{cell_test, check_test};
pub use self::cell::{check_status, number, status};
use self::kernel::{build, checkout};
pub use self::names::{BaseUrl, Origin};
use self::schema::{Build, Checkout, Incident, Issue, IssueMisc, Report, SchemaVersion, Test};
use crate::analysis::known::KnownIssue;
use crate::results::sources::LoadedRun;
use crate::results::CellResult;

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
