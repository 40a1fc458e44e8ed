//! The `report`, `compare` and `merge` commands, and the report written after `run`:
//! argument handling and terminal output around the library's modules.

use std::path::{Path, PathBuf};

use kchaos_harness::cell::error_chain;
use kchaos_harness::compare::{self, CompareOptions, Comparison, Side};
use kchaos_harness::run::RunOutcome;
use kchaos_harness::sources::{self, LoadedRun};
use kchaos_harness::{merge as merging, report as reporting};
use kchaos_images::kernel_list::KernelList;

use crate::CompareArgs;

/// After a run: its report and JUnit file, next to its results. A failure to write them
/// is reported; the results themselves are already safe.
pub fn after_run(outcome: RunOutcome) {
    let run = LoadedRun {
        dir: outcome.dir,
        results: outcome.results,
    };
    match reporting::write(std::slice::from_ref(&run), None, &run.dir) {
        Ok(w) => println!("report: {}\njunit: {}", w.html.display(), w.junit.display()),
        Err(e) => eprintln!("kchaos: {}", error_chain(&e)),
    }
}

pub fn report(sources: &[PathBuf], out: Option<PathBuf>, args: &CompareArgs) -> anyhow::Result<u8> {
    let runs = match sources::load_all(sources) {
        Ok(r) => r,
        Err(e) => return Ok(usage(&error_chain(&e))),
    };
    let out = match out {
        Some(o) => o,
        None if sources.len() == 1 && sources[0].is_dir() => sources[0].clone(),
        None => {
            return Ok(usage(
                "several sources or a database: say where with --out DIR",
            ))
        }
    };
    let comparison = match (&args.baseline, &args.candidate) {
        (Some(b), Some(c)) => match comparison(sources, &runs, b, c, args) {
            Ok((cmp, _)) => Some(cmp),
            Err(why) => return Ok(usage(&why)),
        },
        (Some(_), None) => return Ok(usage("--baseline needs --candidate")),
        _ => None,
    };
    std::fs::create_dir_all(&out)?;
    let w = reporting::write(&runs, comparison.as_ref(), &out)
        .map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
    println!("report: {}\njunit: {}", w.html.display(), w.junit.display());
    Ok(0)
}

pub fn compare(
    sources: &[PathBuf],
    args: &CompareArgs,
    all: bool,
    report: Option<PathBuf>,
    json: Option<PathBuf>,
) -> anyhow::Result<u8> {
    let (Some(baseline), Some(candidate)) = (&args.baseline, &args.candidate) else {
        return Ok(usage("compare needs --baseline and --candidate"));
    };
    let runs = match sources::load_all(sources) {
        Ok(r) => r,
        Err(e) => return Ok(usage(&error_chain(&e))),
    };
    let (cmp, side_runs) = match comparison(sources, &runs, baseline, candidate, args) {
        Ok(c) => c,
        Err(why) => return Ok(usage(&why)),
    };
    print!("{}", compare::table(&cmp, all));
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&cmp)?;
        std::fs::write(&path, text + "\n")?;
    }
    if let Some(dir) = report {
        // The report shows every cell compared, from wherever each side came from.
        let mut shown = runs;
        shown.extend(side_runs);
        std::fs::create_dir_all(&dir)?;
        let w = reporting::write(&shown, Some(&cmp), &dir)
            .map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
        println!("report: {}", w.html.display());
    }
    Ok(u8::from(cmp.regressions() > 0))
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
) -> Result<(Comparison, Vec<LoadedRun>), String> {
    let valid = (0.0..=1e6).contains(&args.threshold) && args.alpha > 0.0 && args.alpha < 1.0;
    if !valid {
        return Err("--threshold must be >= 0 and --alpha between 0 and 1".to_owned());
    }
    let list = KernelList::load_default().ok();
    let load_side = |text: &str| -> Result<Vec<LoadedRun>, String> {
        if compare::is_results_path(text) {
            sources::load(Path::new(text)).map_err(|e| error_chain(&e))
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
            return Err(if runs.is_empty() {
                format!("`{name}` is not a results directory or database; to compare kernels, name the results that hold them")
            } else {
                format!(
                    "no cells for kernel `{name}` in the results given; kernels there: {}",
                    kernels.join(", ")
                )
            });
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

pub fn merge(dirs: &[PathBuf], out: &Path) -> anyhow::Result<u8> {
    let merged = match merging::merge(dirs, out) {
        Ok(m) => m,
        // Bad input (unreadable results, a cell twice, a used output) is the user's to
        // fix, like any usage error; only writing the merge is an infrastructure error.
        Err(
            e @ (merging::MergeError::Duplicate { .. }
            | merging::MergeError::NotEmpty { .. }
            | merging::MergeError::Source(_)),
        ) => return Ok(usage(&error_chain(&e))),
        Err(e) => return Err(anyhow::anyhow!(error_chain(&e))),
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
    let w = reporting::write(std::slice::from_ref(&run), None, out)
        .map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
    println!("report: {}\njunit: {}", w.html.display(), w.junit.display());
    Ok(0)
}

fn usage(why: &str) -> u8 {
    eprintln!("kchaos: {why}");
    2
}
