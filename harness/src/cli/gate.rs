//! `kchaos gate`: the nightly's verdict. Classifies every scenario of a candidate against
//! a baseline (KernelCI's classes, plus known), triaging failures with the known-issues
//! file as it is today, and exits with the ecosystem's contract: 0 nothing new, 1 a
//! regression or an untriaged failure, 2 usage, 3 cells missing or in error.

use std::path::{Path, PathBuf};

use anyhow::Context;
use kchaos_harness::analysis::classify::{self, GateExit};
use kchaos_harness::analysis::compare::{is_results_path, Side};
use kchaos_harness::analysis::known::{retriage, Day, TriageSummary};
use kchaos_harness::results::sources::{self, LoadedRun};
use kchaos_harness::results::CellResult;
use kchaos_model::error_chain;

use super::args::{KernelListArgs, KnownArgs};
use super::exit::{CliError, Exit};

#[derive(Debug, clap::Args)]
pub struct GateArgs {
    /// Results directories or databases holding the cells (not needed when --baseline
    /// and --candidate are themselves results).
    #[arg(value_name = "DIR|DB")]
    pub sources: Vec<PathBuf>,
    /// The reference: a kernel (as in `compare`) or a results directory/database. Without
    /// it every scenario is `new` and only untriaged failures fail the gate.
    #[arg(long, value_name = "KERNEL|DIR|DB")]
    pub baseline: Option<String>,
    /// What is judged: a kernel or results [default: every cell of the sources].
    #[arg(long, value_name = "KERNEL|DIR|DB")]
    pub candidate: Option<String>,
    #[command(flatten)]
    pub known: KnownArgs,
    #[command(flatten)]
    pub list: KernelListArgs,
    /// Also write the classes as JSON, for CI systems.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

pub fn gate(args: &GateArgs) -> Result<Exit, CliError> {
    let runs = sources::load_all(&args.sources).map_err(|e| CliError::usage(error_chain(&e)))?;
    let known = args.known.load(&args.list)?;
    let list = args.list.load()?;
    let kernel_of = |text: &str| -> String {
        list.kernels
            .get(text)
            .map_or_else(|| text.to_owned(), |k| k.spec.clone())
    };
    let load_side = |text: &str| -> Result<Vec<LoadedRun>, CliError> {
        if is_results_path(text) {
            sources::load(Path::new(text)).map_err(|e| CliError::usage(error_chain(&e)))
        } else {
            Ok(Vec::new())
        }
    };
    let (base_runs, cand_runs) = (
        args.baseline
            .as_deref()
            .map(load_side)
            .transpose()?
            .unwrap_or_default(),
        args.candidate
            .as_deref()
            .map(load_side)
            .transpose()?
            .unwrap_or_default(),
    );
    let pick = |name: &str, own: &[LoadedRun]| -> Vec<CellResult> {
        let side = if own.is_empty() {
            Side::kernel(&kernel_of(name), &runs)
        } else {
            Side::runs(name, own)
        };
        side.cells.into_iter().map(|(_, c)| c.clone()).collect()
    };
    let mut candidate: Vec<CellResult> = match &args.candidate {
        Some(name) => pick(name, &cand_runs),
        None => runs
            .iter()
            .flat_map(|r| r.results.cells.iter().cloned())
            .collect(),
    };
    let mut baseline: Option<Vec<CellResult>> =
        args.baseline.as_deref().map(|name| pick(name, &base_runs));
    if candidate.is_empty() {
        return Err(CliError::usage(format!(
            "no candidate cells in the results given{}",
            args.candidate
                .as_deref()
                .map(|c| format!(" for `{c}`"))
                .unwrap_or_default()
        )));
    }
    if let (Some(name), Some(cells)) = (&args.baseline, &baseline) {
        if cells.is_empty() {
            return Err(CliError::usage(format!(
                "no baseline cells for `{name}` in the results given"
            )));
        }
    }
    // Triage with the list as it is today (it is versioned with the tests, not the runs).
    let today = Day::today();
    let mut summary = None;
    if let Some(k) = &known {
        let cells = candidate.iter_mut().chain(baseline.iter_mut().flatten());
        summary = Some(retriage(k, cells, today));
    }
    let cand_refs: Vec<&CellResult> = candidate.iter().collect();
    let base_refs: Option<Vec<&CellResult>> = baseline.as_ref().map(|b| b.iter().collect());
    let g = classify::gate(
        args.baseline.as_deref().zip(base_refs.as_deref()),
        (
            args.candidate.as_deref().unwrap_or("the results given"),
            &cand_refs,
        ),
    );
    print!("{}", kchaos_harness::report::table::gate_table(&g));
    if let Some(s) = &summary {
        print_triage(s);
    }
    if let Some(path) = &args.json {
        let json = serde_json::json!({ "gate": g, "triage": summary });
        let text = serde_json::to_string_pretty(&json).context("encoding the gate")?;
        kchaos_images::Cache::write_atomic(path, (text + "\n").as_bytes())
            .map_err(|e| CliError::Infrastructure(anyhow::anyhow!(error_chain(&e))))?;
    }
    Ok(match g.exit {
        GateExit::Ok => Exit::Ok,
        GateExit::Violation => Exit::Failures,
        GateExit::Incomplete => Exit::Infrastructure,
    })
}

/// Which known issues matched, which look fixed, which expired.
pub fn print_triage(s: &TriageSummary) {
    if !s.matched.is_empty() {
        let m: Vec<String> = s
            .matched
            .iter()
            .map(|(id, n)| format!("{id} ({n})"))
            .collect();
        println!("known issues matched: {}", m.join(", "));
    }
    if !s.possibly_fixed.is_empty() {
        println!(
            "possibly fixed (matched nothing): {}",
            s.possibly_fixed.join(", ")
        );
    }
    if !s.expired.is_empty() {
        println!(
            "expired (no longer excuse their failures): {}",
            s.expired.join(", ")
        );
    }
}
