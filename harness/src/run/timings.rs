//! How long each scenario's cells took in earlier runs on this machine, kept in the
//! cache (`timings.json`) so the next run can start its longest cells first
//! ([`crate::plan::longest_first`]). A hint only: a missing, unreadable or corrupt file
//! means no history (logged), never an error, and a failed save loses nothing but the
//! hint. Two runs saving at once: the last one's file wins, whole (atomic rename).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kchaos_images::Cache;
use kchaos_model::stats;
use kchaos_model::verdict::Verdict;
use serde::{Deserialize, Serialize};

use crate::results::CellResult;

const FILE: &str = "timings.json";
const VERSION: u32 = 1;

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Stored {
    version: u32,
    /// Scenario name → milliseconds a cell took, boot to verdict.
    cell_ms: BTreeMap<String, u64>,
}

#[derive(Debug)]
pub struct Timings {
    path: PathBuf,
    stored: Stored,
}

impl Timings {
    pub fn load(cache: &Cache) -> Timings {
        let path = cache.root().join(FILE);
        let stored = read(&path).unwrap_or_default();
        Timings { path, stored }
    }

    /// How long a cell of `scenario` took last time, if it ever ran here.
    pub fn estimate(&self, scenario: &str) -> Option<Duration> {
        self.stored
            .cell_ms
            .get(scenario)
            .map(|ms| Duration::from_millis(*ms))
    }

    /// Takes each scenario's median cell time from `cells`. Cells that say nothing about
    /// how long the scenario runs (skipped, or ended by infrastructure) are left out.
    pub fn learn(&mut self, cells: &[CellResult]) {
        let mut by_scenario: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for cell in cells {
            if matches!(cell.verdict, Verdict::Skip | Verdict::Error) {
                continue;
            }
            by_scenario
                .entry(cell.scenario.as_str())
                .or_default()
                .push(cell.duration_ms as f64);
        }
        for (scenario, ms) in by_scenario {
            if let Some(median) = stats::median(&ms) {
                // A median of millisecond counts: finite, non-negative, within u64.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                self.stored
                    .cell_ms
                    .insert(scenario.to_owned(), median.round() as u64);
            }
        }
        self.stored.version = VERSION;
    }

    pub fn save(&self) {
        let bytes = match serde_json::to_vec_pretty(&self.stored) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode cell timings");
                return;
            }
        };
        if let Err(e) = Cache::write_atomic(&self.path, &bytes) {
            tracing::warn!(path = %self.path.display(), error = %kchaos_model::error_chain(&e), "cannot save cell timings (the next run orders its cells without them)");
        }
    }
}

fn read(path: &Path) -> Option<Stored> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read cell timings; ordering cells without them");
            return None;
        }
    };
    match serde_json::from_slice::<Stored>(&bytes) {
        Ok(s) if s.version == VERSION => Some(s),
        Ok(s) => {
            tracing::info!(path = %path.display(), version = s.version, "cell timings from another kchaos version; starting afresh");
            None
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "corrupt cell timings; starting afresh");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(scenario: &str, verdict: Verdict, ms: u64) -> CellResult {
        let mut c = crate::results::test_cell(scenario, verdict, 1e6);
        c.duration_ms = ms;
        c
    }

    #[test]
    fn learns_the_median_of_cells_that_ran_and_survives_a_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let mut t = Timings::load(&cache);
        assert_eq!(t.estimate("flood"), None);
        t.learn(&[
            cell("flood", Verdict::Pass, 120_000),
            cell("flood", Verdict::Fail, 100_000),
            cell("flood", Verdict::Hang, 300_000),
            // Skipped and infrastructure cells say nothing about the scenario's length.
            cell("flood", Verdict::Error, 1),
            cell("veth", Verdict::Skip, 5),
            cell("cfs", Verdict::Pass, 35_000),
        ]);
        t.save();
        let again = Timings::load(&cache);
        assert_eq!(again.estimate("flood"), Some(Duration::from_secs(120)));
        assert_eq!(again.estimate("cfs"), Some(Duration::from_secs(35)));
        assert_eq!(again.estimate("veth"), None);
    }

    #[test]
    fn a_corrupt_or_foreign_file_is_no_history() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        for text in [
            "{ not json",
            "{\"version\": 99, \"cell_ms\": {\"a\": 5}}",
            "[]",
        ] {
            std::fs::write(dir.path().join(FILE), text).unwrap();
            assert_eq!(Timings::load(&cache).estimate("a"), None, "{text}");
        }
    }
}
