//! `kchaos merge`: shard results (or any runs) into one results directory, losslessly:
//! every cell's result as recorded and its whole directory of artifacts, one database,
//! one report. A cell present in two inputs is an error, never a silent pick.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::plan::CellKey;
use crate::results::sources::{self, LoadedRun, SourceError};
use crate::results::store::{Store, StoreError};
use crate::results::{write_json, CellResult, PlanInfo, ResultsError, RunResults};

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{out} already holds results; merge into a new directory")]
    NotEmpty { out: String },
    #[error("Cell {key} is in both {first} and {second}")]
    Duplicate {
        key: String,
        first: String,
        second: String,
    },
    #[error("Cannot copy {from} to {to}")]
    Copy {
        from: String,
        to: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Results(#[from] ResultsError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a merge did, for the terminal.
#[derive(Debug)]
pub struct Merged {
    pub results: RunResults,
    /// Shards seen per plan, and how many the plan has: `(seen, of)`.
    pub shards: Option<(Vec<u32>, u32)>,
}

pub fn merge(inputs: &[PathBuf], out: &Path) -> Result<Merged, MergeError> {
    if RunResults::path(out).exists() {
        return Err(MergeError::NotEmpty {
            out: out.display().to_string(),
        });
    }
    let runs: Vec<LoadedRun> = inputs
        .iter()
        .map(|p| sources::load_dir(p))
        .collect::<Result<_, _>>()?;
    let mut seen: HashMap<CellKey, &Path> = HashMap::new();
    let mut seen_ids: HashMap<&str, &Path> = HashMap::new();
    for run in &runs {
        for cell in &run.results.cells {
            let dup = |first: &Path| MergeError::Duplicate {
                key: cell.key().to_string(),
                first: first.display().to_string(),
                second: run.dir.display().to_string(),
            };
            if let Some(first) = seen.insert(cell.key(), &run.dir) {
                return Err(dup(first));
            }
            if let Some(first) = seen_ids.insert(&cell.id, &run.dir) {
                return Err(dup(first));
            }
        }
    }
    std::fs::create_dir_all(out).map_err(|source| MergeError::Copy {
        from: String::new(),
        to: out.display().to_string(),
        source,
    })?;
    for run in &runs {
        for cell in &run.results.cells {
            if let Some(dir) = &cell.artifacts.dir {
                copy_tree(&run.dir.join(dir), &out.join(dir))?;
            }
        }
    }
    let merged = combine(&runs);
    let mut store = Store::open(&Store::path_in(out))?;
    let plan_json = serde_json::to_string(&merged.plan).unwrap_or_default();
    let run_id = store.begin_run(out, &merged, &plan_json)?;
    for cell in &merged.cells {
        store.record_cell(run_id, cell)?;
    }
    if let Some(finished) = &merged.finished_at {
        store.finish_run(run_id, finished)?;
    }
    write_json(&RunResults::path(out), &merged)?;
    Ok(Merged {
        shards: shards_seen(&runs),
        results: merged,
    })
}

/// The runs as one: earliest start, latest finish, cells in matrix order (kernel as
/// planned, then scenario, then topology, then repeat).
fn combine(runs: &[LoadedRun]) -> RunResults {
    let first = runs.first().map(|r| &r.results);
    let plan: Option<PlanInfo> = first.and_then(|r| r.plan.clone()).map(|mut p| {
        p.shard = None;
        p
    });
    let mut cells: Vec<CellResult> = runs
        .iter()
        .flat_map(|r| r.results.cells.iter().cloned())
        .collect();
    let kernel_pos = |c: &CellResult| {
        plan.as_ref()
            .and_then(|p| p.kernels.iter().position(|k| *k == c.kernel.spec))
            .unwrap_or(usize::MAX)
    };
    let mut scenario_order: Vec<String> = Vec::new();
    let mut topology_order: Vec<Option<String>> = Vec::new();
    for c in &cells {
        if !scenario_order.contains(&c.scenario) {
            scenario_order.push(c.scenario.clone());
        }
        if !topology_order.contains(&c.topology) {
            topology_order.push(c.topology.clone());
        }
    }
    cells.sort_by_key(|c| {
        (
            kernel_pos(c),
            scenario_order.iter().position(|s| *s == c.scenario),
            topology_order.iter().position(|t| *t == c.topology),
            c.repeat,
        )
    });
    RunResults {
        kchaos_version: first.map_or_else(
            || kchaos_model::VERSION.to_owned(),
            |r| r.kchaos_version.clone(),
        ),
        started_at: runs
            .iter()
            .map(|r| r.results.started_at.clone())
            .min()
            .unwrap_or_default(),
        finished_at: runs
            .iter()
            .map(|r| r.results.finished_at.clone())
            .collect::<Option<Vec<_>>>()
            .and_then(|f| f.into_iter().max()),
        host: first.map(|r| r.host.clone()).unwrap_or_default(),
        plan,
        cells,
        // Shards triaged with the same file agree; a merge does not re-triage.
        triage: first.and_then(|r| r.triage.clone()),
    }
}

fn shards_seen(runs: &[LoadedRun]) -> Option<(Vec<u32>, u32)> {
    let mut seen = Vec::new();
    let mut of = None;
    for run in runs {
        let shard = run.results.plan.as_ref()?.shard?;
        if *of.get_or_insert(shard.count) != shard.count {
            return None;
        }
        seen.push(shard.index);
    }
    seen.sort_unstable();
    Some((seen, of?))
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), MergeError> {
    let err = |source| MergeError::Copy {
        from: from.display().to_string(),
        to: to.display().to_string(),
        source,
    };
    if !from.exists() {
        // A cell decided before it had files; its result is still merged.
        return Ok(());
    }
    std::fs::create_dir_all(to).map_err(err)?;
    for entry in std::fs::read_dir(from).map_err(err)? {
        let entry = entry.map_err(err)?;
        let target = to.join(entry.file_name());
        if entry.file_type().map_err(err)?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).map_err(err)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Shard;
    use crate::results::store::empty_results;
    use crate::results::test_cell;
    use kchaos_model::verdict::Verdict;

    /// A results directory holding `ids` as shard `index` of 2, with a console log each.
    fn shard_dir(ids: &[&str], index: u32) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut results = empty_results();
        results.plan = Some(PlanInfo {
            scenarios: vec!["scenarios".into()],
            kernels: vec!["debian:k1".into(), "debian:k2".into()],
            repeat: 1,
            shard: Some(Shard { index, count: 2 }),
            seed: None,
            topologies: Vec::new(),
        });
        for id in ids {
            let cell = test_cell(id, Verdict::Pass, 1e6);
            let cell_dir = dir.path().join(id);
            std::fs::create_dir_all(&cell_dir).unwrap();
            std::fs::write(cell_dir.join("console.log"), format!("console of {id}\n")).unwrap();
            write_json(&cell_dir.join("cell.json"), &cell).unwrap();
            results.cells.push(cell);
        }
        write_json(&RunResults::path(dir.path()), &results).unwrap();
        dir
    }

    #[test]
    fn merge_is_lossless_and_refuses_duplicates() {
        let a = shard_dir(&["memcg/k1", "veth/k2"], 1);
        let b = shard_dir(&["veth/k1", "memcg/k2"], 2);
        let out = tempfile::tempdir().unwrap();
        let out = out.path().join("merged");
        let merged = merge(&[a.path().into(), b.path().into()], &out).unwrap();
        assert_eq!(merged.shards, Some((vec![1, 2], 2)));
        // Every input cell, unchanged, in matrix order (kernel, scenario, repeat).
        let ids: Vec<&str> = merged.results.cells.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["memcg/k1", "veth/k1", "memcg/k2", "veth/k2"]);
        let back = sources::load_dir(&out).unwrap();
        let mut inputs: Vec<CellResult> = [&a, &b]
            .iter()
            .flat_map(|d| sources::load_dir(d.path()).unwrap().results.cells)
            .collect();
        let mut outputs = back.results.cells.clone();
        inputs.sort_by(|x, y| x.id.cmp(&y.id));
        outputs.sort_by(|x, y| x.id.cmp(&y.id));
        assert_eq!(inputs, outputs);
        // The database has them too, and the artifacts came along byte for byte.
        let store = Store::open(&Store::path_in(&out)).unwrap();
        assert_eq!(store.cells(None).unwrap().len(), 4);
        for id in ids {
            assert_eq!(
                std::fs::read_to_string(out.join(id).join("console.log")).unwrap(),
                format!("console of {id}\n")
            );
        }
        assert!(back.results.plan.unwrap().shard.is_none());
        // Merging again into the same place, or a cell twice, is refused.
        let again = merge(&[a.path().into()], &out).unwrap_err().to_string();
        assert!(again.contains("already holds results"), "{again}");
        let twice = merge(
            &[a.path().into(), a.path().into()],
            &out.with_extension("2"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            twice.contains("memcg on debian:k1 #0 is in both"),
            "{twice}"
        );
    }
}
