//! `kchaos report` (HTML, JUnit, KCIDB), `compare`, `merge` and `analyze` (a cell's
//! memory dump), and the report written after a run: argument handling and terminal
//! output around the library's modules.

use std::path::{Path, PathBuf};

use anyhow::Context;
use kchaos_harness::analysis::compare::{self, CompareOptions, Comparison, Side};
use kchaos_harness::analysis::known::{retriage, Day};
use kchaos_harness::report::kcidb::schema::TestMisc;
use kchaos_harness::report::kcidb::{self, IssueEntry};
use kchaos_harness::report::{self as reporting, KernelNames, Written};
use kchaos_harness::results::merge as merging;
use kchaos_harness::results::sources::{self, LoadedRun};
use kchaos_harness::run::RunOutcome;
use kchaos_images::kernel_list::KernelList;
use kchaos_images::Cache;
use kchaos_model::error_chain;

use super::args::{CompareArgs, KcidbArgs, KernelListArgs, KnownArgs};
use super::exit::{CliError, Exit};

/// Prints what was written and what failed; returns whether everything was written.
pub fn print_written(w: &Written) -> bool {
    if let Ok(p) = &w.html {
        println!("report: {}", p.display());
    }
    if let Ok(p) = &w.junit {
        println!("junit: {}", p.display());
    }
    let mut ok = true;
    for e in w.errors() {
        eprintln!("kchaos: error: {}", error_chain(e));
        ok = false;
    }
    ok
}

/// After a run: its report and JUnit file, next to its results (already written).
/// Returns whether both were written.
pub fn after_run(outcome: &RunOutcome) -> bool {
    let run = LoadedRun {
        dir: outcome.dir.clone(),
        results: outcome.results.clone(),
    };
    print_written(&reporting::write(
        std::slice::from_ref(&run),
        None,
        &run.dir,
    ))
}

/// Kernel names for the report's labels: the list named with --kernel-list, else the
/// default list if there is one.
fn kernel_names(list: &KernelListArgs) -> Result<KernelNames, CliError> {
    Ok(match &list.kernel_list {
        Some(_) => KernelNames::from_list(&list.load()?),
        None => KernelNames::from_default_list(),
    })
}

fn load(sources: &[PathBuf]) -> Result<Vec<LoadedRun>, CliError> {
    sources::load_all(sources).map_err(|e| CliError::usage(error_chain(&e)))
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    #[arg(required = true, value_name = "DIR|DB")]
    pub sources: Vec<PathBuf>,
    /// Where to write report.html and junit.xml [default: the results directory, when
    /// there is one; with --kcidb and no such place, only the KCIDB file is written].
    #[arg(short, long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub compare: CompareArgs,
    #[command(flatten)]
    pub list: KernelListArgs,
    #[command(flatten)]
    pub known: KnownArgs,
    #[command(flatten)]
    pub kcidb: KcidbArgs,
}

pub fn report(args: ReportArgs) -> Result<Exit, CliError> {
    let ReportArgs {
        sources,
        out,
        compare: compare_args,
        list,
        known,
        kcidb,
    } = args;
    let sources = sources.as_slice();
    let mut runs = load(sources)?;
    let kcidb = kcidb.options()?;
    let out = match out {
        Some(o) => Some(o),
        None if sources.len() == 1 && sources[0].is_dir() => Some(sources[0].clone()),
        None if kcidb.is_some() => None,
        None => {
            return Err(CliError::usage(
                "several sources or a database: say where with --out DIR",
            ))
        }
    };
    // Failures are triaged with the known-issues file as it is today, as `gate` does;
    // without one, each cell keeps what its run recorded.
    let known = known.load(&list)?;
    if let Some(k) = &known {
        let cells = runs.iter_mut().flat_map(|r| r.results.cells.iter_mut());
        retriage(k, cells, Day::today());
    }
    let mut ok = true;
    if let Some(out) = out {
        let comparison = match (&compare_args.baseline, &compare_args.candidate) {
            (Some(b), Some(c)) => Some(comparison(sources, &runs, b, c, &compare_args, &list)?.0),
            (Some(_), None) => return Err(CliError::usage("--baseline needs --candidate")),
            _ => None,
        };
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        let names = kernel_names(&list)?;
        let written = reporting::write_named(&runs, comparison.as_ref(), &out, &names);
        ok &= print_written(&written);
    }
    if let Some((path, opts)) = kcidb {
        let issues: Vec<IssueEntry> = known
            .iter()
            .flat_map(|k| k.issues.iter().map(IssueEntry::of))
            .collect();
        let report =
            kcidb::export(&runs, &issues, &opts).map_err(|e| CliError::usage(error_chain(&e)))?;
        match kcidb::write(&report, &path) {
            Ok(()) => {
                let checks = report
                    .tests
                    .iter()
                    .filter(|t| matches!(t.misc, TestMisc::Check(_)));
                println!(
                    "kcidb: {} ({} tests, {} of them checks; {} incidents)",
                    path.display(),
                    report.tests.len(),
                    checks.count(),
                    report.incidents.len()
                );
            }
            Err(e) => {
                eprintln!("kchaos: error: {}", error_chain(&e));
                ok = false;
            }
        }
    }
    Ok(if ok { Exit::Ok } else { Exit::Infrastructure })
}

pub fn compare(
    sources: &[PathBuf],
    args: &CompareArgs,
    list: &KernelListArgs,
    all: bool,
    report: Option<PathBuf>,
    json: Option<PathBuf>,
) -> Result<Exit, CliError> {
    let (Some(baseline), Some(candidate)) = (&args.baseline, &args.candidate) else {
        return Err(CliError::usage("compare needs --baseline and --candidate"));
    };
    let runs = load(sources)?;
    let (cmp, side_runs) = comparison(sources, &runs, baseline, candidate, args, list)?;
    print!(
        "{}",
        kchaos_harness::report::compare_table::table(&cmp, all)
    );
    let mut written_ok = true;
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&cmp).context("encoding the comparison")?;
        if let Err(e) = Cache::write_atomic(&path, (text + "\n").as_bytes()) {
            eprintln!("kchaos: error: {}", error_chain(&e));
            written_ok = false;
        }
    }
    if let Some(dir) = report {
        // The report shows every cell compared, from wherever each side came from.
        let mut shown = runs;
        shown.extend(side_runs);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let names = kernel_names(list)?;
        written_ok &= print_written(&reporting::write_named(&shown, Some(&cmp), &dir, &names));
    }
    Ok(if !written_ok {
        Exit::Infrastructure
    } else if cmp.regressions() > 0 {
        Exit::Failures
    } else {
        Exit::Ok
    })
}

/// Builds the comparison of `baseline` and `candidate`, each a results path or a kernel
/// found in `runs` (read from `sources`). Also returns the runs a side named by path
/// loaded that are not among `sources`, for the report.
fn comparison(
    sources: &[PathBuf],
    runs: &[LoadedRun],
    baseline: &str,
    candidate: &str,
    args: &CompareArgs,
    list: &KernelListArgs,
) -> Result<(Comparison, Vec<LoadedRun>), CliError> {
    let valid = (0.0..=1e6).contains(&args.threshold) && args.alpha > 0.0 && args.alpha < 1.0;
    if !valid {
        return Err(CliError::usage(
            "--threshold must be >= 0 and --alpha between 0 and 1",
        ));
    }
    // Names on the command line mean what the named list says; a broken list named
    // with --kernel-list is an error, the default list is optional here.
    let list: Option<KernelList> = match &list.kernel_list {
        Some(_) => Some(list.load()?),
        None => KernelList::load_default().ok(),
    };
    let load_side = |text: &str| -> Result<Vec<LoadedRun>, CliError> {
        if compare::is_results_path(text) {
            sources::load(Path::new(text)).map_err(|e| CliError::usage(error_chain(&e)))
        } else {
            Ok(Vec::new())
        }
    };
    let (base_runs, cand_runs) = (load_side(baseline)?, load_side(candidate)?);
    let kernel_of = |text: &str| -> String {
        // A kernel-list name stands for its spec.
        list.as_ref()
            .and_then(|l| l.kernels.get(text))
            .map_or_else(|| text.to_owned(), |k| k.spec.clone())
    };
    let base = if base_runs.is_empty() {
        Side::kernel(&kernel_of(baseline), runs)
    } else {
        Side::runs(baseline, &base_runs)
    };
    let cand = if cand_runs.is_empty() {
        Side::kernel(&kernel_of(candidate), runs)
    } else {
        Side::runs(candidate, &cand_runs)
    };
    for (name, side) in [(baseline, &base), (candidate, &cand)] {
        if side.cells.is_empty() {
            let mut kernels: Vec<String> = runs
                .iter()
                .flat_map(|r| r.results.cells.iter())
                .map(|c| {
                    c.kernel
                        .resolved
                        .clone()
                        .unwrap_or_else(|| c.kernel.spec.clone())
                })
                .collect();
            kernels.sort();
            kernels.dedup();
            return Err(CliError::Usage(if runs.is_empty() {
                format!("`{name}` is not a results directory or database; to compare kernels, name the results that hold them")
            } else {
                format!(
                    "no cells for kernel `{name}` in the results given; kernels there: {}",
                    kernels.join(", ")
                )
            }));
        }
    }
    let mut cmp = compare::compare(
        &base,
        &cand,
        CompareOptions {
            threshold: args.threshold / 100.0,
            alpha: args.alpha,
            ..CompareOptions::default()
        },
    );
    cmp.baseline = baseline.to_owned();
    cmp.candidate = candidate.to_owned();
    // A side named by a path that is also a source is already in `runs`.
    let in_sources = |text: &str| sources.iter().any(|s| Path::new(text) == s);
    let mut extra = Vec::new();
    for (text, side_runs) in [(baseline, base_runs), (candidate, cand_runs)] {
        if !in_sources(text) {
            extra.extend(side_runs);
        }
    }
    Ok((cmp, extra))
}

pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<Exit, CliError> {
    let merged = match merging::merge(dirs, out) {
        Ok(m) => m,
        // Bad input (unreadable results, a cell twice, a used output) is the user's to
        // fix, like any usage error; only writing the merge is an infrastructure error.
        Err(
            e @ (merging::MergeError::Duplicate { .. }
            | merging::MergeError::NotEmpty { .. }
            | merging::MergeError::Source(_)),
        ) => return Err(CliError::usage(error_chain(&e))),
        Err(e) => return Err(CliError::Infrastructure(anyhow::anyhow!(error_chain(&e)))),
    };
    println!(
        "merged {} cells from {} directories into {}",
        merged.results.cells.len(),
        dirs.len(),
        out.display()
    );
    if let Some((seen, of)) = &merged.shards {
        let missing: Vec<String> = (1..=*of)
            .filter(|i| !seen.contains(i))
            .map(|i| format!("{i}/{of}"))
            .collect();
        if missing.is_empty() {
            println!("all {of} shards present");
        } else {
            eprintln!("kchaos: warning: shards missing: {}", missing.join(", "));
        }
    }
    let run = LoadedRun {
        dir: out.to_path_buf(),
        results: merged.results,
    };
    Ok(
        if print_written(&reporting::write(std::slice::from_ref(&run), None, out)) {
            Exit::Ok
        } else {
            Exit::Infrastructure
        },
    )
}

/// `kchaos analyze`: the `crash` utility on a cell's memory dump; prints where it
/// kept its output (analysis.txt in the cell's directory).
pub fn analyze(dir: &Path, vmlinux: Option<&Path>, cache: &Cache) -> Result<Exit, CliError> {
    match kchaos_harness::analysis::crash::analyze(dir, vmlinux, cache) {
        Ok(report) => {
            println!("{}", report.display());
            Ok(Exit::Ok)
        }
        Err(e) => Err(CliError::Infrastructure(anyhow::anyhow!(error_chain(&e)))),
    }
}
