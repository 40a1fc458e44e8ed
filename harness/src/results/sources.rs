//! Where `report`, `compare` and `merge` read results from: a results directory (its
//! `results.json`) or a results database (`results.db`, possibly shared by many runs via
//! `--db`). Each run comes back with its directory, so a cell's artifacts (its
//! `scenario.toml`, console and kernel log) can be found next to it.

use std::path::{Path, PathBuf};

use crate::results::store::{Store, StoreError};
use crate::results::{CellResult, RunResults};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "{path} is neither a results directory (with results.json) nor a results database (.db)"
    )]
    Unknown { path: String },
    #[error("Cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a kchaos results file")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One run's results and the directory its artifact paths are relative to.
#[derive(Debug, Clone)]
pub struct LoadedRun {
    pub dir: PathBuf,
    pub results: RunResults,
}

impl LoadedRun {
    /// The scenario file as the cell ran it (kept in the cell's directory).
    pub fn scenario_copy(&self, cell: &CellResult) -> Option<PathBuf> {
        let dir = cell.artifacts.dir.as_ref()?;
        let path = self.dir.join(dir).join("scenario.toml");
        path.exists().then_some(path)
    }
}

/// Reads every run at `path`.
pub fn load(path: &Path) -> Result<Vec<LoadedRun>, SourceError> {
    if path.is_dir() {
        return Ok(vec![load_dir(path)?]);
    }
    if path.is_file() && path.extension().is_some_and(|e| e == "db") {
        let store = Store::open(path)?;
        let mut runs = Vec::new();
        for run in store.runs()? {
            let mut results = crate::results::store::empty_results();
            results.started_at = run.started_at.clone();
            results.finished_at = run.finished_at.clone();
            results.cells = store.cells(Some(run.id))?;
            runs.push(LoadedRun {
                dir: PathBuf::from(&run.dir),
                results,
            });
        }
        return Ok(runs);
    }
    Err(SourceError::Unknown {
        path: path.display().to_string(),
    })
}

/// Reads `dir/results.json`.
pub fn load_dir(dir: &Path) -> Result<LoadedRun, SourceError> {
    let path = RunResults::path(dir);
    let bytes = std::fs::read(&path).map_err(|source| SourceError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let results = serde_json::from_slice(&bytes).map_err(|source| SourceError::Parse {
        path: path.display().to_string(),
        source,
    })?;
    Ok(LoadedRun {
        dir: dir.to_path_buf(),
        results,
    })
}

/// Reads several sources, in order.
pub fn load_all(paths: &[PathBuf]) -> Result<Vec<LoadedRun>, SourceError> {
    let mut runs = Vec::new();
    for path in paths {
        runs.extend(load(path)?);
    }
    Ok(runs)
}
