//! The results store: an embedded SQLite database (`results.db` in each results
//! directory, or one shared with `--db`) holding runs, cells, metrics, samples, check
//! outcomes, signatures and artifact paths, for SQL and for `report`, `compare` and
//! `merge`.
//!
//! Every cell is also kept whole as its `cell.json` text, so reading a cell back is
//! lossless; the other tables are the same facts laid out for queries. `results.json`
//! stays the documented export.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kchaos_model::metrics::{Metric, Stat};
use kchaos_model::scenario::CheckResult;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::results::{Artifacts, CellResult, HostInfo, RunResults};

/// The schema as version 1 created it. A new database gets this, then every migration.
const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    dir TEXT NOT NULL UNIQUE,
    kchaos_version TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    qemu TEXT,
    accel TEXT,
    plan_json TEXT
);
CREATE TABLE IF NOT EXISTS cells (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    cell TEXT NOT NULL,
    scenario TEXT NOT NULL,
    kernel_spec TEXT NOT NULL,
    kernel_resolved TEXT,
    kernel_release TEXT,
    repeat INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    verdict TEXT NOT NULL,
    reasons_json TEXT NOT NULL,
    fingerprint TEXT,
    boot_ms INTEGER,
    duration_ms INTEGER NOT NULL,
    image_kind TEXT,
    image_key TEXT,
    started_at TEXT NOT NULL,
    result_json TEXT NOT NULL,
    UNIQUE (run_id, cell)
);
CREATE TABLE IF NOT EXISTS metrics (
    cell_id INTEGER NOT NULL REFERENCES cells(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    unit TEXT NOT NULL,
    count REAL, min REAL, mean REAL, p50 REAL, p90 REAL, p99 REAL, max REAL,
    value REAL, first REAL, last REAL,
    PRIMARY KEY (cell_id, name)
);
CREATE TABLE IF NOT EXISTS samples (
    cell_id INTEGER NOT NULL REFERENCES cells(id) ON DELETE CASCADE,
    metric TEXT NOT NULL,
    t_ms INTEGER NOT NULL,
    value REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS signatures (
    cell_id INTEGER NOT NULL REFERENCES cells(id) ON DELETE CASCADE,
    signature TEXT NOT NULL,
    severity TEXT NOT NULL,
    line TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS artifacts (
    cell_id INTEGER NOT NULL REFERENCES cells(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    path TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS cells_by_scenario ON cells (scenario, kernel_spec);
";

/// Schema changes in order: `MIGRATIONS[i]` takes a database from version `i + 1` to
/// `i + 2`. A database of an older version is migrated in place, in one transaction
/// with the version bump, so it is either wholly migrated or untouched; a newer one is
/// refused (this kchaos does not know what its tables mean).
const MIGRATIONS: &[&str] = &[
    // 2: every check's outcome per cell. Cells recorded under version 1 have none
    // (their results did not keep them), so nothing is backfilled.
    "
CREATE TABLE checks (
    cell_id INTEGER NOT NULL REFERENCES cells(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    assertion TEXT NOT NULL,
    because TEXT,
    metric TEXT NOT NULL,
    stat TEXT NOT NULL,
    op TEXT NOT NULL,
    unit TEXT NOT NULL,
    observed REAL,
    bound REAL NOT NULL,
    status TEXT NOT NULL,
    headroom REAL,
    margin REAL,
    PRIMARY KEY (cell_id, seq)
);
CREATE INDEX checks_by_assertion ON checks (assertion);
",
    // 3: the known issue a failing cell matched (known-issues.toml): its class.
    "
ALTER TABLE cells ADD COLUMN known_issue TEXT;
ALTER TABLE cells ADD COLUMN known_link TEXT;
",
    // 4: the cell's CPU topology on a topology axis (`--topology`); NULL off any axis,
    // and for every cell recorded before (they ran on their scenario's `[vm] cpus`).
    "
ALTER TABLE cells ADD COLUMN topology TEXT;
",
];

/// The version this kchaos writes.
const SCHEMA_VERSION: i64 = 1 + MIGRATIONS.len() as i64;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Results database {path}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("Results database {path} has schema version {found}; this kchaos reads versions 1 to {SCHEMA_VERSION} (a newer kchaos wrote it?): use that kchaos or a new --db file")]
    Version { path: String, found: String },
    #[error("Results database {path}: cell {cell} is not valid JSON")]
    Corrupt {
        path: String,
        cell: String,
        #[source]
        source: serde_json::Error,
    },
}

/// A run as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRow {
    pub id: i64,
    pub dir: String,
    pub started_at: String,
    pub finished_at: Option<String>,
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// The database file of a results directory.
    pub fn path_in(dir: &Path) -> PathBuf {
        dir.join("results.db")
    }

    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let err = |source| StoreError::Sqlite {
            path: path.display().to_string(),
            source,
        };
        let mut conn = Connection::open(path).map_err(err)?;
        // Several kchaos processes may share one database (`--db`): wait for each other.
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(err)?;
        conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA journal_mode = WAL;")
            .map_err(err)?;
        // Immediate: two processes opening one old database do not both migrate it.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        migrate(&tx, path)?;
        tx.commit().map_err(err)?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// The schema version of the open database.
    #[cfg(test)]
    fn version(&self) -> i64 {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get::<_, String>(0)
            })
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Sqlite {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// The run writing into `dir`: created, or the existing one when resuming.
    pub fn begin_run(
        &mut self,
        dir: &Path,
        results: &RunResults,
        plan_json: &str,
    ) -> Result<i64, StoreError> {
        let dir = canonical(dir);
        let err = self.err();
        self.conn
            .execute(
                "INSERT INTO runs (dir, kchaos_version, started_at, qemu, accel, plan_json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (dir) DO UPDATE SET qemu = excluded.qemu, accel = excluded.accel,
                     plan_json = excluded.plan_json, finished_at = NULL",
                params![
                    dir,
                    results.kchaos_version,
                    results.started_at,
                    results.host.qemu,
                    results.host.accel,
                    plan_json
                ],
            )
            .map_err(&err)?;
        self.conn
            .query_row("SELECT id FROM runs WHERE dir = ?1", params![dir], |r| {
                r.get(0)
            })
            .map_err(err)
    }

    pub fn finish_run(&mut self, run: i64, finished_at: &str) -> Result<(), StoreError> {
        let err = self.err();
        self.conn
            .execute(
                "UPDATE runs SET finished_at = ?1 WHERE id = ?2",
                params![finished_at, run],
            )
            .map_err(err)?;
        Ok(())
    }

    /// Records (or replaces) one cell of `run`, in one transaction.
    pub fn record_cell(&mut self, run: i64, cell: &CellResult) -> Result<(), StoreError> {
        let path = self.path.display().to_string();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let json = serde_json::to_string(cell).map_err(|source| StoreError::Corrupt {
            path: path.clone(),
            cell: cell.id.clone(),
            source,
        })?;
        let tx = self.conn.transaction().map_err(err)?;
        tx.execute(
            "DELETE FROM cells WHERE run_id = ?1 AND cell = ?2",
            params![run, cell.id],
        )
        .map_err(err)?;
        tx.execute(
            "INSERT INTO cells (run_id, cell, scenario, kernel_spec, kernel_resolved,
                 kernel_release, repeat, seed, verdict, reasons_json, fingerprint, boot_ms,
                 duration_ms, image_kind, image_key, started_at, result_json, known_issue,
                 known_link, topology)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                 ?18, ?19, ?20)",
            params![
                run,
                cell.id,
                cell.scenario,
                cell.kernel.spec,
                cell.kernel.resolved,
                cell.kernel.release,
                cell.repeat,
                // SQLite integers are signed; seeds are below 2^63 by construction.
                i64::try_from(cell.seed).unwrap_or(i64::MAX),
                cell.verdict.to_string(),
                serde_json::to_string(&cell.reasons).unwrap_or_default(),
                cell.fingerprint.as_ref().map(|f| f.id.clone()),
                cell.boot_ms.and_then(|v| i64::try_from(v).ok()),
                i64::try_from(cell.duration_ms).unwrap_or(i64::MAX),
                cell.image.as_ref().map(|i| i.kind.to_string()),
                cell.image.as_ref().map(|i| i.key.clone()),
                cell.started_at,
                json,
                cell.known.as_ref().map(|k| k.id.clone()),
                cell.known.as_ref().map(|k| k.link.clone()),
                cell.topology,
            ],
        )
        .map_err(err)?;
        let cell_id = tx.last_insert_rowid();
        insert_metrics(&tx, cell_id, &cell.metrics).map_err(err)?;
        for hit in &cell.signatures {
            tx.execute(
                "INSERT INTO signatures (cell_id, signature, severity, line) VALUES (?1, ?2, ?3, ?4)",
                params![cell_id, hit.id, format!("{:?}", hit.severity).to_lowercase(), hit.line],
            )
            .map_err(err)?;
        }
        insert_checks(&tx, cell_id, &cell.checks).map_err(err)?;
        insert_artifacts(&tx, cell_id, &cell.artifacts).map_err(err)?;
        tx.commit().map_err(err)
    }

    pub fn runs(&self) -> Result<Vec<RunRow>, StoreError> {
        let err = self.err();
        let mut stmt = self
            .conn
            .prepare("SELECT id, dir, started_at, finished_at FROM runs ORDER BY id")
            .map_err(&err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(RunRow {
                    id: r.get(0)?,
                    dir: r.get(1)?,
                    started_at: r.get(2)?,
                    finished_at: r.get(3)?,
                })
            })
            .map_err(&err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(&err)?;
        Ok(rows)
    }

    /// Every cell of `run` (or of all runs), whole, in the order they were recorded.
    pub fn cells(&self, run: Option<i64>) -> Result<Vec<CellResult>, StoreError> {
        let err = self.err();
        let mut stmt = self
            .conn
            .prepare(
                "SELECT cell, result_json FROM cells WHERE ?1 IS NULL OR run_id = ?1 ORDER BY id",
            )
            .map_err(&err)?;
        let rows = stmt
            .query_map(params![run], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(&err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(&err)?;
        rows.into_iter()
            .map(|(cell, json)| {
                serde_json::from_str(&json).map_err(|source| StoreError::Corrupt {
                    path: self.path.display().to_string(),
                    cell,
                    source,
                })
            })
            .collect()
    }
}

/// Creates a new database's schema or migrates an older one, inside `tx`.
fn migrate(tx: &Transaction<'_>, path: &Path) -> Result<(), StoreError> {
    let err = |source| StoreError::Sqlite {
        path: path.display().to_string(),
        source,
    };
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    )
    .map_err(err)?;
    let found: Option<String> = tx
        .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(err)?;
    let from = match found {
        None => {
            tx.execute_batch(SCHEMA_V1).map_err(err)?;
            1
        }
        Some(text) => match text.parse::<i64>() {
            Ok(v) if (1..=SCHEMA_VERSION).contains(&v) => v,
            _ => {
                return Err(StoreError::Version {
                    path: path.display().to_string(),
                    found: text,
                })
            }
        },
    };
    // `from` is in 1..=SCHEMA_VERSION, so the index is in range.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    for step in &MIGRATIONS[(from - 1) as usize..] {
        tx.execute_batch(step).map_err(err)?;
    }
    tx.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?1)",
        params![SCHEMA_VERSION.to_string()],
    )
    .map_err(err)?;
    Ok(())
}

/// Each metric's summary row and, for a series, its samples.
fn insert_metrics(
    tx: &Transaction<'_>,
    cell_id: i64,
    metrics: &BTreeMap<String, Metric>,
) -> Result<(), rusqlite::Error> {
    for (name, metric) in metrics {
        let s = |stat| metric.stat(stat);
        tx.execute(
            "INSERT INTO metrics (cell_id, name, kind, unit, count, min, mean, p50, p90,
                 p99, max, value, first, last)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            params![
                cell_id,
                name,
                format!("{:?}", metric.kind()).to_lowercase(),
                metric.unit().as_str(),
                s(Stat::Count),
                s(Stat::Min),
                s(Stat::Mean),
                s(Stat::P50),
                s(Stat::P90),
                s(Stat::P99),
                s(Stat::Max),
                s(Stat::Value),
                s(Stat::First),
                s(Stat::Last),
            ],
        )?;
        if let Metric::Series(series) = metric {
            let mut insert = tx.prepare_cached(
                "INSERT INTO samples (cell_id, metric, t_ms, value) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (t, v) in &series.samples {
                insert.execute(params![
                    cell_id,
                    name,
                    i64::try_from(*t).unwrap_or(i64::MAX),
                    v
                ])?;
            }
        }
    }
    Ok(())
}

/// The cell's files, one row per kind that exists.
fn insert_artifacts(
    tx: &Transaction<'_>,
    cell_id: i64,
    a: &Artifacts,
) -> Result<(), rusqlite::Error> {
    for (kind, path) in a.present() {
        tx.execute(
            "INSERT INTO artifacts (cell_id, kind, path) VALUES (?1, ?2, ?3)",
            params![cell_id, kind, path],
        )?;
    }
    Ok(())
}

fn insert_checks(
    tx: &Transaction<'_>,
    cell_id: i64,
    checks: &[CheckResult],
) -> Result<(), rusqlite::Error> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO checks (cell_id, seq, assertion, because, metric, stat, op, unit,
             observed, bound, status, headroom, margin)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?;
    for (seq, c) in checks.iter().enumerate() {
        insert.execute(params![
            cell_id,
            i64::try_from(seq).unwrap_or(i64::MAX),
            c.assert,
            c.because,
            c.metric,
            c.stat.as_str(),
            c.op.as_str(),
            c.unit.as_str(),
            c.observed,
            c.bound,
            c.status.as_str(),
            c.headroom,
            c.margin,
        ])?;
    }
    Ok(())
}

/// Runs are identified by their directory, absolute so a shared database can tell two
/// `results/` apart.
fn canonical(dir: &Path) -> String {
    std::fs::canonicalize(dir)
        .unwrap_or_else(|_| dir.to_path_buf())
        .display()
        .to_string()
}

/// What [`Store::begin_run`] needs from a run that has not recorded a host yet.
pub fn empty_results() -> RunResults {
    RunResults {
        kchaos_version: kchaos_model::VERSION.to_owned(),
        started_at: crate::results::now_rfc3339(),
        finished_at: None,
        host: HostInfo::default(),
        plan: None,
        cells: Vec::new(),
        triage: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::test_cell;

    #[test]
    fn cells_round_trip_losslessly_and_replace_on_rerecord() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&Store::path_in(dir.path())).unwrap();
        let run = store.begin_run(dir.path(), &empty_results(), "{}").unwrap();
        let a = test_cell(
            "memcg/debian-6.1",
            kchaos_model::verdict::Verdict::Pass,
            1.5e6,
        );
        let mut b = test_cell("veth/debian-6.1", kchaos_model::verdict::Verdict::Fail, 9e6);
        store.record_cell(run, &a).unwrap();
        store.record_cell(run, &b).unwrap();
        b.reasons = vec!["changed".into()];
        store.record_cell(run, &b).unwrap();
        let back = store.cells(Some(run)).unwrap();
        assert_eq!(back, vec![a.clone(), b.clone()]);
        // The same directory is the same run (a resume), a new one is a new run.
        assert_eq!(
            store.begin_run(dir.path(), &empty_results(), "{}").unwrap(),
            run
        );
        let other = tempfile::tempdir().unwrap();
        let run2 = store
            .begin_run(other.path(), &empty_results(), "{}")
            .unwrap();
        assert_ne!(run2, run);
        assert_eq!(store.cells(Some(run2)).unwrap(), vec![]);
        // The query tables carry the same facts.
        let p99: f64 = store
            .conn
            .query_row(
                "SELECT m.p99 FROM metrics m JOIN cells c ON c.id = m.cell_id WHERE c.cell = 'veth/debian-6.1' AND m.name = 'lat'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(p99, 9e6);
        let samples: i64 = store
            .conn
            .query_row("SELECT count(*) FROM samples", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            samples, 8,
            "two cells of two series of two samples; the replaced ones are gone"
        );
    }

    #[test]
    fn every_check_of_a_cell_has_a_row() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&Store::path_in(dir.path())).unwrap();
        let run = store.begin_run(dir.path(), &empty_results(), "{}").unwrap();
        let cell = test_cell("memcg/k", kchaos_model::verdict::Verdict::Pass, 1e6);
        store.record_cell(run, &cell).unwrap();
        let row: (String, String, f64, f64, String, f64) = store
            .conn
            .query_row(
                "SELECT assertion, op, observed, bound, status, margin FROM checks",
                [],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )
            .unwrap();
        assert_eq!(
            row,
            (
                "lat.p99 <= 4ms".into(),
                "<=".into(),
                1e6,
                4e6,
                "pass".into(),
                0.75
            )
        );
        // Re-recording replaces the cell and, with it, its checks.
        store.record_cell(run, &cell).unwrap();
        let n: i64 = store
            .conn
            .query_row("SELECT count(*) FROM checks", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }

    /// A database written by a kchaos of schema version 1 (no `checks` table, cells
    /// without checks in their JSON) is migrated in place: its cells still read back,
    /// new cells record their checks and topology, and the version is the newest.
    #[test]
    fn a_version_1_database_is_migrated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = Store::path_in(dir.path());
        let mut old = test_cell("memcg/old", kchaos_model::verdict::Verdict::Pass, 1e6);
        old.checks.clear();
        let mut old_json = serde_json::to_value(&old).unwrap();
        old_json.as_object_mut().unwrap().remove("checks");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 INSERT INTO meta VALUES ('schema', '1');",
            )
            .unwrap();
            conn.execute_batch(SCHEMA_V1).unwrap();
            conn.execute(
                "INSERT INTO runs (id, dir, kchaos_version, started_at) VALUES (1, '/r', '0.1.0', 'now')",
                [],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO cells (run_id, cell, scenario, kernel_spec, repeat, seed, verdict,
                     reasons_json, duration_ms, started_at, result_json)
                 VALUES (1, 'memcg/old', 'memcg', 'debian:old', 0, 42, 'pass', '[]', 1, 'now', ?1)",
                params![old_json.to_string()],
            )
            .unwrap();
            let tables: i64 = conn
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE name = 'checks'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(tables, 0, "a version 1 database has no checks table");
        }
        let mut store = Store::open(&path).unwrap();
        assert_eq!(store.version(), SCHEMA_VERSION);
        assert_eq!(store.cells(Some(1)).unwrap(), vec![old]);
        let mut new = test_cell("memcg/new", kchaos_model::verdict::Verdict::Pass, 1e6);
        new.topology = Some("2s1c".to_owned());
        store.record_cell(1, &new).unwrap();
        let n: i64 = store
            .conn
            .query_row("SELECT count(*) FROM checks", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        // The topology column: the new cell's, none for the cell recorded before.
        let topologies: Vec<(String, Option<String>)> = store
            .conn
            .prepare("SELECT cell, topology FROM cells ORDER BY cell")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            topologies,
            [
                ("memcg/new".to_owned(), Some("2s1c".to_owned())),
                ("memcg/old".to_owned(), None)
            ]
        );
        assert_eq!(store.cells(Some(1)).unwrap()[1], new, "read back whole");
        // Opening it again migrates nothing twice.
        drop(store);
        assert_eq!(Store::open(&path).unwrap().version(), SCHEMA_VERSION);
    }

    #[test]
    fn a_database_from_another_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = Store::path_in(dir.path());
        drop(Store::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema'", [])
            .unwrap();
        drop(conn);
        let e = Store::open(&path).unwrap_err().to_string();
        assert!(e.contains("schema version 99"), "{e}");
        // Refused without being touched.
        let conn = Connection::open(&path).unwrap();
        let v: String = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(v, "99");
        conn.execute("UPDATE meta SET value = 'garbage' WHERE key = 'schema'", [])
            .unwrap();
        drop(conn);
        assert!(Store::open(&path).is_err());
    }
}
