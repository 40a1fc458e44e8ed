//! Recording a run as its cells finish: a replay bundle for each cell that did not pass,
//! then `results.json` (written atomically and synced first, so a full disk loses the
//! least), then the SQLite store. A write that fails never stops the run or loses the
//! cell in memory: it is remembered, named with its path, and fails the run's exit
//! status at the end.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use kchaos_model::verdict::Verdict;

use crate::plan::CellKey;
use crate::results::store::Store;
use crate::results::{bundle, now_rfc3339, write_json, CellResult, RunResults};
use kchaos_model::error_chain;

#[derive(Debug)]
pub struct Recorder {
    dir: PathBuf,
    pub results: RunResults,
    /// `None` when the database could not be opened (a failure already remembered).
    store: Option<(Store, i64)>,
    db_path: PathBuf,
    /// Canonical position of each cell, to keep `results.json` in matrix order.
    order: HashMap<CellKey, usize>,
    failures: Vec<String>,
}

/// A cell the run must not keep when resuming: it was cut short by the interrupt.
pub fn was_interrupted(cell: &CellResult) -> bool {
    cell.verdict == Verdict::Error && cell.reasons.iter().any(|r| r == "interrupted")
}

impl Recorder {
    /// Starts recording `results` (which may hold cells kept from an interrupted run)
    /// into `dir`, and into the database at `db` (default `dir/results.db`).
    pub fn open(
        dir: &Path,
        db: Option<&Path>,
        results: RunResults,
        plan_json: &str,
        order: HashMap<CellKey, usize>,
    ) -> Recorder {
        let mut rec = Recorder {
            dir: dir.to_path_buf(),
            results,
            store: None,
            db_path: db.map_or_else(|| Store::path_in(dir), Path::to_path_buf),
            order,
            failures: Vec::new(),
        };
        rec.write_results();
        let db_path = rec.db_path.clone();
        let opened = Store::open(&db_path).and_then(|mut store| {
            let run_id = store.begin_run(dir, &rec.results, plan_json)?;
            // A resumed run's database is rebuilt from what is kept, so it never holds a
            // cell the interrupt cut short.
            for cell in &rec.results.cells {
                store.record_cell(run_id, cell)?;
            }
            Ok((store, run_id))
        });
        match opened {
            Ok(s) => rec.store = Some(s),
            Err(e) => rec.fail(format!("{}: {}", db_path.display(), error_chain(&e))),
        }
        rec
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every write that failed, each naming its path.
    pub fn failures(&self) -> &[String] {
        &self.failures
    }

    fn fail(&mut self, what: String) {
        tracing::error!("cannot record results: {what}");
        self.failures.push(what);
    }

    fn write_results(&mut self) {
        let path = RunResults::path(&self.dir);
        if let Err(e) = write_json(&path, &self.results) {
            self.fail(error_chain(&e));
        }
    }

    /// Records a finished cell.
    pub fn push(&mut self, mut cell: CellResult) {
        if cell.verdict != Verdict::Pass && !was_interrupted(&cell) {
            self.bundle(&mut cell);
        }
        let record = self
            .store
            .as_mut()
            .map(|(store, run_id)| store.record_cell(*run_id, &cell));
        self.results.cells.push(cell);
        let order = &self.order;
        self.results
            .cells
            .sort_by_key(|c| order.get(&c.key()).copied().unwrap_or(usize::MAX));
        // results.json first: it is the contract, the database is derived from it.
        self.write_results();
        if let Some(Err(e)) = record {
            let msg = format!("{}: {}", self.db_path.display(), error_chain(&e));
            self.fail(msg);
        }
    }

    /// Leaves a replay bundle in the cell's directory; a failure to write it is a note
    /// on the cell (the cell itself is recorded anyway).
    fn bundle(&self, cell: &mut CellResult) {
        let Some(rel) = cell.artifacts.dir.clone() else {
            return;
        };
        let dir = self.dir.join(&rel);
        // Only cells that booted have a scenario as run to replay.
        if !dir.join("scenario.toml").exists() {
            return;
        }
        match bundle::write(&dir, cell, self.results.host.qemu.as_deref()) {
            Ok(_) => {
                cell.artifacts.bundle = Some(format!("{rel}/{}", bundle::FILE));
                // cell.json names its bundle too.
                if let Err(e) = write_json(&dir.join("cell.json"), &*cell) {
                    cell.notes
                        .push(format!("cell.json not updated: {}", error_chain(&e)));
                }
            }
            Err(e) => cell
                .notes
                .push(format!("no replay bundle: {}", error_chain(&e))),
        }
    }

    /// The run is over (or interrupted): its end time, the harness's peak memory.
    pub fn finish(&mut self, interrupted: bool) {
        self.results.finished_at = Some(now_rfc3339());
        self.results.host.harness_peak_rss_kib = crate::vm::process::peak_rss_kib();
        self.write_results();
        if !interrupted {
            let finished = self.results.finished_at.clone().unwrap_or_default();
            if let Some((store, run_id)) = self.store.as_mut() {
                if let Err(e) = store.finish_run(*run_id, &finished) {
                    let msg = format!("{}: {}", self.db_path.display(), error_chain(&e));
                    self.fail(msg);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::store::empty_results;
    use crate::results::test_cell;

    #[test]
    fn a_write_that_fails_is_remembered_with_its_path_and_the_cell_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut rec = Recorder::open(dir.path(), None, empty_results(), "{}", HashMap::new());
        assert!(rec.failures().is_empty(), "{:?}", rec.failures());
        rec.push(test_cell("s/k", Verdict::Pass, 1e6));
        assert!(rec.failures().is_empty());
        // results.json can no longer be replaced (a directory is in its way), as on a
        // full or broken disk.
        let results = RunResults::path(dir.path());
        std::fs::remove_file(&results).unwrap();
        std::fs::create_dir_all(results.join("x")).unwrap();
        rec.push(test_cell("t/k", Verdict::Fail, 1e6));
        assert_eq!(rec.results.cells.len(), 2, "the cell is kept in memory");
        assert!(
            rec.failures().iter().any(|f| f.contains("results.json")),
            "{:?}",
            rec.failures()
        );
    }
}
