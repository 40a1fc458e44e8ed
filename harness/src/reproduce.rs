//! The `repro`, `replay` and `bisect` commands: argument handling and terminal output
//! around `repro.rs`, `bundle.rs` and the bisection in the model.

use std::path::{Path, PathBuf};

use anyhow::Context;
use kchaos_harness::bundle;
use kchaos_harness::cell::error_chain;
use kchaos_harness::qemu::accel::AccelChoice;
use kchaos_harness::qemu::Accel;
use kchaos_harness::repro::{self, Target, TrialOptions, Trials};
use kchaos_harness::run::RunOptions;
use kchaos_images::kernel_list::KernelList;
use kchaos_images::Cache;
use kchaos_model::bisect::{runs_needed, Bisection};
use kchaos_model::stats;

use crate::{AccelArg, BisectArgs, ReproArgs, VmArgs};

/// Exit code when nothing could be judged: `git bisect run` skips such a commit.
const CANNOT_TEST: u8 = 125;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn base_options(
    scenario: PathBuf,
    kernel: String,
    vm: &VmArgs,
    out: PathBuf,
    cache: &Cache,
) -> RunOptions {
    RunOptions {
        scenarios: vec![scenario],
        kernels: vec![kernel],
        repeat: 1,
        jobs: vm.jobs.map_or_else(
            || std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            |j| j as usize,
        ),
        shard: None,
        resume: false,
        out,
        db: None,
        accel: match vm.accel {
            AccelArg::Auto => AccelChoice::Auto,
            AccelArg::Kvm => AccelChoice::Force(Accel::Kvm),
            AccelArg::Tcg => AccelChoice::Force(Accel::Tcg),
        },
        runner: vm.runner.clone(),
        seed: vm.seed,
        // A fixed seed means exactly that run, again and again.
        same_seed: vm.seed.is_some(),
        guest_log: None,
        boot_timeout: None,
        dump: None,
        cache: cache.clone(),
    }
}

fn default_out(vm: &VmArgs, what: &str) -> PathBuf {
    vm.out
        .clone()
        .unwrap_or_else(|| PathBuf::from("results").join(format!("{what}-{}", crate::timestamp())))
}

/// A kernel-list name stands for its spec.
fn expand_one(list: &KernelList, kernel: &str) -> Result<String, String> {
    let specs = list
        .expand(&[kernel.to_owned()])
        .map_err(|e| error_chain(&e))?;
    match specs.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(format!(
            "`{kernel}` names {} kernels; give one",
            specs.len()
        )),
    }
}

fn usage(why: &str) -> u8 {
    eprintln!("kchaos: {why}");
    2
}

pub fn repro(args: ReproArgs, cache: Cache) -> anyhow::Result<u8> {
    let kernel = match KernelList::load_default()
        .map_err(|e| error_chain(&e))
        .and_then(|list| expand_one(&list, &args.kernel))
    {
        Ok(k) => k,
        Err(why) => return Ok(usage(&why)),
    };
    if let Err(lines) = kchaos_harness::scenarios::load_all(std::slice::from_ref(&args.scenario)) {
        for l in lines {
            eprintln!("{l}");
        }
        return Ok(2);
    }
    let target = Target::parse(&args.until);
    let out = default_out(&args.vm, "repro");
    let variants = match sweep::variants(&args.scenario, &args.sets, &out) {
        Ok(v) => v,
        Err(why) => return Ok(usage(&why)),
    };
    let rt = runtime()?;
    let mut results: Vec<(String, Trials)> = Vec::new();
    for (label, file) in &variants {
        // One results directory per variant, named like its scenario file.
        let dir = match file.file_stem() {
            Some(stem) if variants.len() > 1 => out.join(stem),
            _ => out.clone(),
        };
        let opts = TrialOptions {
            run: base_options(file.clone(), kernel.clone(), &args.vm, dir, &cache),
            target: target.clone(),
            max_runs: args.max_runs,
            stop_at_first: !args.all,
        };
        let trials = rt
            .block_on(repro::run_trials(opts))
            .map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
        let name = if variants.len() == 1 {
            args.scenario.display().to_string()
        } else {
            format!("{} [{label}]", args.scenario.display())
        };
        print!("{}", repro::summary(&name, &kernel, &target, &trials));
        let stop = trials.interrupted;
        results.push((label.clone(), trials));
        if stop {
            return Ok(130);
        }
    }
    if results.len() > 1 {
        println!("sweep: expected time to a hit per configuration (mean run time / probability)");
        let mut best: Option<(&str, f64)> = None;
        for (label, t) in &results {
            let (p, lo, hi) = t.probability();
            let eta = t.expected_time_to_hit().map(|d| d.as_secs_f64());
            println!(
                "  {label}: {}/{} hits, p {p:.2} [{lo:.2}-{hi:.2}], {}",
                t.hits,
                t.runs,
                eta.map_or_else(|| "never hit".to_owned(), |s| format!("{s:.0}s to a hit"))
            );
            if let Some(s) = eta {
                if best.is_none_or(|(_, b)| s < b) {
                    best = Some((label, s));
                }
            }
        }
        match best {
            Some((label, s)) => {
                println!("cheapest configuration that reproduces: {label} (~{s:.0}s to a hit)");
            }
            None => println!("no configuration reproduced"),
        }
    }
    let judged = results.iter().any(|(_, t)| t.runs > 0);
    let hit = results.iter().any(|(_, t)| t.hits > 0);
    Ok(if hit {
        1
    } else if judged {
        0
    } else {
        CANNOT_TEST
    })
}

pub fn replay(bundle_path: &Path, runs: u32, vm: VmArgs, cache: Cache) -> anyhow::Result<u8> {
    let out = default_out(&vm, "replay");
    let (manifest, scenario) = match bundle::open(bundle_path, &out.join("bundle")) {
        Ok(x) => x,
        Err(e) => return Ok(usage(&error_chain(&e))),
    };
    let mut opts = base_options(
        scenario,
        manifest.kernel_spec().to_owned(),
        &vm,
        out.clone(),
        &cache,
    );
    opts.repeat = runs;
    opts.seed = Some(manifest.seed);
    opts.same_seed = true;
    // The same accelerator, unless the user says otherwise: timing bugs depend on it.
    if matches!(vm.accel, AccelArg::Auto) {
        opts.accel = match manifest.accel.as_deref() {
            Some("tcg") => AccelChoice::Force(Accel::Tcg),
            Some("kvm") => AccelChoice::Force(Accel::Kvm),
            _ => AccelChoice::Auto,
        };
    }
    println!(
        "replaying {} ({}: {}) on {}, seed {}, {} run{}",
        manifest.cell,
        manifest.verdict,
        manifest.reasons.first().map_or("", String::as_str),
        manifest.kernel_spec(),
        manifest.seed,
        runs,
        if runs == 1 { "" } else { "s" }
    );
    if manifest.kchaos_version != kchaos_model::VERSION {
        println!(
            "note: recorded with kchaos {}, replayed with {}",
            manifest.kchaos_version,
            kchaos_model::VERSION
        );
    }
    let outcome = runtime()?
        .block_on(kchaos_harness::run::run(opts))
        .map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
    let mut recurred = 0u32;
    let mut judged = 0u32;
    for cell in &outcome.results.cells {
        let same_fp = match (&manifest.fingerprint, &cell.fingerprint) {
            (Some(want), Some(got)) => *want == got.id,
            (Some(_), None) => false,
            (None, _) => true,
        };
        let again = cell.verdict == manifest.verdict && same_fp;
        if cell.verdict != kchaos_model::verdict::Verdict::Error {
            judged += 1;
        }
        recurred += u32::from(again);
        let cmdline = std::fs::read_to_string(
            outcome
                .dir
                .join(cell.artifacts.dir.as_deref().unwrap_or(""))
                .join("qemu.cmdline"),
        )
        .ok()
        .and_then(|c| bundle::kernel_cmdline(c.trim()));
        let same_cmdline = match (&manifest.kernel_cmdline, &cmdline) {
            (Some(a), Some(b)) => {
                if bundle::comparable_cmdline(a) == bundle::comparable_cmdline(b) {
                    "same kernel command line"
                } else {
                    "DIFFERENT kernel command line"
                }
            }
            _ => "kernel command line not compared",
        };
        let release = cell.kernel.release.as_deref().unwrap_or("?");
        println!(
            "  {}: {}{} (seed {}, uname -r {release}, {same_cmdline}){}",
            cell.id,
            cell.verdict,
            cell.fingerprint
                .as_ref()
                .map(|f| format!(" {}", f.id))
                .unwrap_or_default(),
            cell.seed,
            if again { " - recurred" } else { "" }
        );
        if manifest
            .kernel
            .release
            .as_deref()
            .is_some_and(|r| r != release)
        {
            println!(
                "  warning: the bundle ran on {}",
                manifest.kernel.release.as_deref().unwrap_or("?")
            );
        }
    }
    let (lo, hi) = stats::wilson(u64::from(recurred), u64::from(judged), stats::Z95);
    println!(
        "recurred {recurred}/{judged} (95% Wilson interval {lo:.2}-{hi:.2}); results: {}",
        outcome.dir.display()
    );
    if outcome.interrupted {
        return Ok(130);
    }
    Ok(if recurred > 0 {
        1
    } else if judged > 0 {
        0
    } else {
        CANNOT_TEST
    })
}

pub fn bisect(args: BisectArgs, cache: Cache) -> anyhow::Result<u8> {
    let vm = &args.vm;
    let list = match KernelList::load_default() {
        Ok(l) => l,
        Err(e) => return Ok(usage(&error_chain(&e))),
    };
    let kernels = match list.expand(&args.kernels) {
        Ok(k) => k,
        Err(e) => return Ok(usage(&error_chain(&e))),
    };
    let find = |k: &str| -> Result<usize, String> {
        let spec = expand_one(&list, k)?;
        kernels.iter().position(|s| *s == spec).ok_or_else(|| {
            format!(
                "`{k}` is not in the kernel list given: {}",
                kernels.join(", ")
            )
        })
    };
    let (good, bad) = match (find(&args.good), find(&args.bad)) {
        (Ok(g), Ok(b)) => (g, b),
        (Err(why), _) | (_, Err(why)) => return Ok(usage(&why)),
    };
    let mut state = match Bisection::new(good, bad) {
        Ok(s) => s,
        Err(e) => return Ok(usage(&e.to_string())),
    };
    if !(args.confidence > 0.0 && args.confidence < 1.0) {
        return Ok(usage("--confidence must be between 0 and 1"));
    }
    let target = Target::parse(&args.until);
    let out = default_out(vm, "bisect");
    let rt = runtime()?;
    let trial = |index: usize, runs: u32, stop_at_first: bool, tag: &str| {
        let dir = out.join(format!("{tag}-{index}"));
        let opts = TrialOptions {
            run: base_options(
                args.scenario.clone(),
                kernels[index].clone(),
                vm,
                dir,
                &cache,
            ),
            target: target.clone(),
            max_runs: runs,
            stop_at_first,
        };
        rt.block_on(repro::run_trials(opts))
            .map_err(|e| anyhow::anyhow!(error_chain(&e)))
    };
    println!(
        "bisecting {} over {} kernels: good {} (#{good}), bad {} (#{bad}), until {}",
        args.scenario.display(),
        kernels.len(),
        kernels[good],
        kernels[bad],
        target.describe()
    );
    // The probability on the bad end sets the runs per step.
    let cal = trial(bad, args.calibrate, false, "calibrate")?;
    let (p, lo, hi) = cal.probability();
    println!(
        "calibration on {}: {}/{} hits, p {p:.2} (95% interval {lo:.2}-{hi:.2})",
        kernels[bad], cal.hits, cal.runs
    );
    if cal.hits == 0 {
        println!(
            "the bad kernel did not reproduce in {} runs: nothing to bisect",
            cal.runs
        );
        return Ok(CANNOT_TEST);
    }
    // Plan with the pessimistic end of the interval: fewer hits than measured must
    // still be caught.
    let runs = match args.runs {
        Some(r) => r,
        None => match runs_needed(lo.max(1e-6), args.confidence) {
            Some(r) => r,
            None => {
                return Ok(usage(
                    "the reproduction probability is too low to plan runs",
                ))
            }
        },
    };
    println!(
        "{runs} runs per step: a bad kernel with p >= {lo:.2} shows no hit in {runs} runs with probability <= {:.3}",
        kchaos_model::bisect::miss_probability(lo, runs)
    );
    let good_check = trial(good, runs, true, "good")?;
    if good_check.hits > 0 {
        println!(
            "the good kernel {} reproduces too: not a regression in this list",
            kernels[good]
        );
        return Ok(CANNOT_TEST);
    }
    println!("  {} good: 0/{} hits", kernels[good], good_check.runs);
    while let Some(i) = state.next() {
        let t = trial(i, runs, true, "step")?;
        if t.runs == 0 {
            println!(
                "  {}: could not be judged ({}); stopping",
                kernels[i],
                t.skipped.as_deref().unwrap_or("errors")
            );
            return Ok(CANNOT_TEST);
        }
        state.record(i, t.runs, t.hits);
        println!(
            "  {}: {} ({}/{} hits)",
            kernels[i],
            if t.hits > 0 { "bad" } else { "good" },
            t.hits,
            t.runs
        );
    }
    let first = state.first_bad().unwrap_or(bad);
    println!(
        "first bad kernel: {} (last good: {}); confidence >= {:.3} at p = {lo:.2}; results: {}",
        kernels[first],
        kernels[state.last_good()],
        state.confidence(lo),
        out.display()
    );
    Ok(0)
}

/// `--set PATH=V1,V2`: scenario variants written next to the results.
mod sweep {
    use std::path::{Path, PathBuf};

    /// `(label, file)` per combination; the scenario itself when nothing is swept.
    pub fn variants(
        scenario: &Path,
        sets: &[String],
        out: &Path,
    ) -> Result<Vec<(String, PathBuf)>, String> {
        if sets.is_empty() {
            return Ok(vec![(String::new(), scenario.to_path_buf())]);
        }
        let text = std::fs::read_to_string(scenario)
            .map_err(|e| format!("{}: {e}", scenario.display()))?;
        let base: toml::Value =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", scenario.display()))?;
        let mut axes: Vec<(String, Vec<toml::Value>)> = Vec::new();
        for set in sets {
            let (path, values) = set
                .split_once('=')
                .ok_or_else(|| format!("`{set}`: a sweep is PATH=V1,V2,..."))?;
            axes.push((
                path.trim().to_owned(),
                values.split(',').map(value).collect(),
            ));
        }
        let mut combos: Vec<Vec<(String, toml::Value)>> = vec![Vec::new()];
        for (path, values) in &axes {
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    values.iter().map(move |v| {
                        let mut c = c.clone();
                        c.push((path.clone(), v.clone()));
                        c
                    })
                })
                .collect();
        }
        let dir = out.join("variants");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut files = Vec::new();
        for combo in combos {
            let mut doc = base.clone();
            let mut label = Vec::new();
            for (path, v) in &combo {
                set_path(&mut doc, path, v.clone())?;
                label.push(format!("{}={}", path, plain(v)));
            }
            let label = label.join(",");
            let slug: String = label
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect();
            let file = dir.join(format!("{slug}.toml"));
            let body = toml::to_string(&doc).map_err(|e| e.to_string())?;
            std::fs::write(
                &file,
                format!("# {} with {label}\n{body}", base_name(&base)),
            )
            .map_err(|e| format!("{}: {e}", file.display()))?;
            // A variant must still be a valid scenario.
            kchaos_model::scenario::parse(&file.display().to_string(), &body)
                .map_err(|e| format!("{label}: {e}"))?;
            files.push((label, file));
        }
        Ok(files)
    }

    fn base_name(doc: &toml::Value) -> String {
        doc.get("scenario")
            .and_then(|s| s.get("name"))
            .and_then(toml::Value::as_str)
            .unwrap_or("scenario")
            .to_owned()
    }

    fn plain(v: &toml::Value) -> String {
        match v {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }

    /// `8` → integer, `0.5` → float, `true` → bool, anything else a string (`10s`).
    fn value(text: &str) -> toml::Value {
        let t = text.trim();
        if let Ok(i) = t.parse::<i64>() {
            toml::Value::Integer(i)
        } else if let Ok(f) = t.parse::<f64>() {
            toml::Value::Float(f)
        } else if let Ok(b) = t.parse::<bool>() {
            toml::Value::Boolean(b)
        } else {
            toml::Value::String(t.to_owned())
        }
    }

    /// Sets `workload.0.concurrency` (tables by key, arrays by index).
    fn set_path(doc: &mut toml::Value, path: &str, v: toml::Value) -> Result<(), String> {
        let parts: Vec<&str> = path.split('.').collect();
        let Some((last, init)) = parts.split_last() else {
            return Err(format!("`{path}`: empty path"));
        };
        let mut at = doc;
        for part in init {
            at = match at {
                toml::Value::Table(t) => t
                    .get_mut(*part)
                    .ok_or_else(|| format!("`{path}`: no `{part}` in the scenario"))?,
                toml::Value::Array(a) => {
                    let i: usize = part
                        .parse()
                        .map_err(|_| format!("`{path}`: `{part}` is not an index"))?;
                    let len = a.len();
                    a.get_mut(i)
                        .ok_or_else(|| format!("`{path}`: index {i} out of {len}"))?
                }
                _ => return Err(format!("`{path}`: `{part}` is not a table or array")),
            };
        }
        match at {
            toml::Value::Table(t) => {
                t.insert((*last).to_owned(), v);
                Ok(())
            }
            _ => Err(format!("`{path}`: cannot set `{last}` there")),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn sweeps_make_every_combination_as_valid_scenarios() {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("s.toml");
            std::fs::write(
                &file,
                "[scenario]\nname = \"s\"\nduration = \"5s\"\n\n[vm]\ncpus = 2\n\n[[probe]]\nkind = \"d-state\"\nname = \"d\"\n",
            )
            .unwrap();
            let v = variants(
                &file,
                &["vm.cpus=1,2".into(), "scenario.duration=3s,9s".into()],
                dir.path(),
            )
            .unwrap();
            let labels: Vec<&str> = v.iter().map(|(l, _)| l.as_str()).collect();
            assert_eq!(
                labels,
                [
                    "vm.cpus=1,scenario.duration=3s",
                    "vm.cpus=1,scenario.duration=9s",
                    "vm.cpus=2,scenario.duration=3s",
                    "vm.cpus=2,scenario.duration=9s"
                ]
            );
            let text = std::fs::read_to_string(&v[1].1).unwrap();
            assert!(
                text.contains("cpus = 1") && text.contains("duration = \"9s\""),
                "{text}"
            );
            let bad = variants(&file, &["vm.nope.x=1".into()], dir.path()).unwrap_err();
            assert!(bad.contains("no `nope`"), "{bad}");
            let invalid = variants(&file, &["vm.cpus=zero".into()], dir.path()).unwrap_err();
            assert!(invalid.contains("vm.cpus=zero"), "{invalid}");
        }
    }
}
