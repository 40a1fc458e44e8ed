//! `kchaos detect`: the kill matrix's flags. The defect list, the scenarios and the
//! stock kernels are resolved here; the matrix runs in `run::kill_matrix`, its table
//! and page come from `report::detection_table`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use kchaos_harness::report::detection_table;
use kchaos_harness::run::kill_matrix::{self, Ended, KillMatrixError, KillMatrixOptions};
use kchaos_images::defects::DefectList;
use kchaos_images::Cache;
use kchaos_model::error_chain;

use super::args::{default_out, KernelListArgs, RecordArgs};
use super::exit::{CliError, Exit};
use super::{run_error, with_session};

#[derive(Debug, clap::Args)]
pub struct DetectArgs {
    /// The defect list [default: vm-images/defects.toml, else the one built in].
    #[arg(long, value_name = "FILE")]
    pub defects: Option<PathBuf>,
    /// Only these defects (repeatable) [default: all].
    #[arg(long = "defect", value_name = "NAME")]
    pub only: Vec<String>,
    /// Where the declared scenarios are found [default: ./scenarios, else the built-in].
    #[arg(long, value_name = "DIR")]
    pub scenarios: Option<PathBuf>,
    /// Runs per (defect, scenario) before it counts as escaped.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_runs: u32,
    /// Stock kernels every scenario in the directory must pass on, besides each defect
    /// kernel without its defect (repeatable: specs, names, @sets) [default: none].
    #[arg(long = "stock-kernel", value_name = "SPEC|NAME|@SET")]
    pub stock_kernels: Vec<String>,
    /// Repeats of each scenario on the stock kernels (the false-alarm sample).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub stock_repeat: u32,
    #[command(flatten)]
    pub list: KernelListArgs,
    #[command(flatten)]
    pub record: RecordArgs,
}

pub fn detect(args: &DetectArgs, cache: &Cache) -> Result<Exit, CliError> {
    let kernels = args.list.load()?;
    let list = match &args.defects {
        Some(path) => DefectList::load(path, &kernels),
        None => DefectList::load_default(&kernels),
    }
    .map_err(|e| CliError::usage(error_chain(&e)))?;
    let defects: Vec<_> = list
        .defects
        .iter()
        .filter(|d| args.only.is_empty() || args.only.contains(&d.name))
        .collect();
    if defects.is_empty() {
        return Err(CliError::usage(format!(
            "no defects to try (known: {})",
            list.defects
                .iter()
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let scenario_dir = match &args.scenarios {
        Some(d) => d.clone(),
        None if Path::new("scenarios").is_dir() => PathBuf::from("scenarios"),
        None => kchaos_harness::scenario::builtin_dir(cache)
            .map_err(|e| CliError::Infrastructure(anyhow::anyhow!(error_chain(&e))))?,
    };
    let scenarios = kchaos_harness::scenario::load_all(std::slice::from_ref(&scenario_dir))
        .map_err(CliError::Scenarios)?;
    let stock_kernels = if args.stock_kernels.is_empty() {
        Vec::new()
    } else {
        args.list.expand(&args.stock_kernels)?
    };
    let out = args
        .record
        .out
        .clone()
        .unwrap_or_else(|| default_out(Some("detect")));
    std::fs::create_dir_all(out.join("variants"))
        .with_context(|| format!("creating {}", out.display()))?;
    let opts = KillMatrixOptions {
        defects,
        scenarios: &scenarios,
        scenario_dir: &scenario_dir,
        max_runs: args.max_runs,
        stock_kernels,
        stock_repeat: args.stock_repeat,
        out: out.clone(),
    };
    let ended = with_session(args.record.vm.session(cache), |rt, session| {
        rt.block_on(kill_matrix::run(session, &opts))
            .map_err(kill_matrix_error)
    })?;
    let Ended::Finished(detection) = ended else {
        return Ok(Exit::Interrupted);
    };
    print!("{}", detection_table::table(&detection));
    let json = serde_json::to_string_pretty(&detection).context("encoding the detection")?;
    let mut wrote = true;
    for (name, bytes) in [
        ("detection.json", json + "\n"),
        ("detection.html", detection_table::html(&detection)),
    ] {
        if let Err(e) = Cache::write_atomic(&out.join(name), bytes.as_bytes()) {
            eprintln!("kchaos: error: {}", error_chain(&e));
            wrote = false;
        } else {
            println!("{name}: {}", out.join(name).display());
        }
    }
    Ok(if !wrote {
        Exit::Infrastructure
    } else if detection.failed() {
        Exit::Failures
    } else {
        Exit::Ok
    })
}

/// A kill matrix that could not run: a broken defect list or scenario is the user's
/// to fix (exit 2); a run that could not start is mapped like any other.
fn kill_matrix_error(e: KillMatrixError) -> CliError {
    match e {
        KillMatrixError::Run(e) => run_error(e),
        e => CliError::Usage(error_chain(&e)),
    }
}
