//! Rendering results for people and CI systems: the self-contained HTML report with its
//! plots, JUnit XML, KCIDB I/O JSON for KernelCI, and the terminal's summary table.
//! Reports are derived from `results.json`; rendering them never changes a result.

pub mod compare_table;
pub mod detection_table;
pub mod html;
pub mod junit;
pub mod kcidb;
pub mod labels;
pub mod plot;
pub mod table;

use std::path::{Path, PathBuf};

use crate::analysis::compare::Comparison;
use crate::results::sources::LoadedRun;

pub use self::html::{escape, render, render_bisection, verdict_colour};
pub use self::labels::KernelNames;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("Cannot write {path}")]
    Write {
        path: String,
        #[source]
        source: kchaos_images::cache::CacheError,
    },
    #[error(transparent)]
    Junit(#[from] junit::JunitError),
}

/// What [`write`] produced: each file, or why it could not be written. Both are always
/// attempted, JUnit first (CI systems read it).
#[derive(Debug)]
pub struct Written {
    pub junit: Result<PathBuf, ReportError>,
    pub html: Result<PathBuf, ReportError>,
}

impl Written {
    /// The errors, if any.
    pub fn errors(&self) -> impl Iterator<Item = &ReportError> {
        [&self.junit, &self.html]
            .into_iter()
            .filter_map(|r| r.as_ref().err())
    }
}

/// Writes `junit.xml` and `report.html` for `runs` into `dir`, kernels labelled by the
/// default kernel list's names where it has them.
pub fn write(runs: &[LoadedRun], comparison: Option<&Comparison>, dir: &Path) -> Written {
    write_named(runs, comparison, dir, &KernelNames::from_default_list())
}

/// [`write`], with the kernel names given (from the `--kernel-list` the user named).
pub fn write_named(
    runs: &[LoadedRun],
    comparison: Option<&Comparison>,
    dir: &Path,
    names: &KernelNames,
) -> Written {
    write_page(runs, dir, &|| render(runs, comparison, dir, names))
}

/// `junit.xml` and `report.html` of a bisection: its answer and steps, then every
/// step's cells.
pub fn write_bisection(
    runs: &[LoadedRun],
    bisection: &crate::analysis::bisect::BisectRecord,
    dir: &Path,
    names: &KernelNames,
) -> Written {
    write_page(runs, dir, &|| render_bisection(runs, bisection, dir, names))
}

fn write_page(runs: &[LoadedRun], dir: &Path, html: &dyn Fn() -> String) -> Written {
    let put = |path: PathBuf, bytes: Result<String, ReportError>| {
        let bytes = bytes?;
        kchaos_images::Cache::write_atomic(&path, bytes.as_bytes()).map_err(|source| {
            ReportError::Write {
                path: path.display().to_string(),
                source,
            }
        })?;
        // Reports are for sharing (CI artifacts, web servers): readable by all, like
        // any file the user writes, not private like a temporary file.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644));
        Ok(path)
    };
    let cells = runs.iter().flat_map(|r| &r.results.cells);
    let junit = put(
        dir.join("junit.xml"),
        junit::render(cells).map_err(Into::into),
    );
    let html = put(dir.join("report.html"), Ok(html()));
    Written { junit, html }
}
