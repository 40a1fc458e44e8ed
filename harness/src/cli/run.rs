//! `kchaos run` and `kchaos validate`.

use std::path::PathBuf;

use kchaos_harness::plan::Shard;
use kchaos_harness::report::table::summary_table;
use kchaos_harness::run::matrix::{self, MatrixOptions};
use kchaos_harness::scenario;
use kchaos_images::Cache;
use kchaos_model::topology::Topology;

use super::args::{default_out, KernelListArgs, KnownArgs, VmArgs};
use super::exit::{CliError, Exit};
use super::{results, run_error, with_session};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Scenario files or directories [default: ./scenarios].
    #[arg(value_name = "SCENARIO|DIR")]
    pub scenarios: Vec<PathBuf>,
    /// Kernel to run on (repeatable, in matrix order): a spec, debian:<version>[-<flavour>]
    /// or path:<bzImage>[,modules=<dir>][,config=<file>][,commit=<sha1>,tree=,repo=,branch=];
    /// a name from the kernel list; or
    /// @SET for a set of it [default: the list's `default` set, else debian:6.1-cloud].
    #[arg(short, long = "kernel", value_name = "SPEC|NAME|@SET")]
    pub kernels: Vec<String>,
    #[command(flatten)]
    pub list: KernelListArgs,
    /// CPU topologies every scenario runs on, each a column of the matrix
    /// (comma-separated): a CPU count (`4`), or sockets and cores per socket (`2s2c`:
    /// one NUMA node per socket), optionally threads per core (`2s2c2t`)
    /// [default: each scenario's `[vm] cpus`].
    #[arg(long, value_name = "LIST")]
    pub topology: Option<String>,
    /// Cells per scenario and kernel (for latency distributions and `compare`).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub repeat: u32,
    /// Run only shard I of N of the matrix (disjoint, together complete; see `kchaos merge`).
    #[arg(long, value_name = "I/N", value_parser = Shard::parse)]
    pub shard: Option<Shard>,
    /// Print the planned cells (scenario, kernel, repeat) and exit.
    #[arg(long)]
    pub plan: bool,
    /// Continue the interrupted run in DIR: its finished cells are kept, the rest run
    /// with the plan it recorded.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["scenarios", "kernels", "topology", "repeat", "shard", "out"])]
    pub resume: Option<PathBuf>,
    /// Results directory [default: results/<timestamp>]. It must not hold results yet
    /// (use --resume to continue one); it is locked while the run writes it.
    #[arg(short, long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Results database to add this run to [default: results.db in the results directory].
    #[arg(long, value_name = "FILE")]
    pub db: Option<PathBuf>,
    /// Seed for every cell (default: the scenario's, else random; always recorded).
    #[arg(long)]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub known: KnownArgs,
    #[command(flatten)]
    pub vm: VmArgs,
}

pub fn run(args: RunArgs, cache: Cache) -> Result<Exit, CliError> {
    let opts = matrix_options(&args, &cache)?;
    if args.plan {
        let lines = matrix::plan_lines(&opts).map_err(run_error)?;
        println!("SCENARIO\tKERNEL\tTOPOLOGY\tREPEAT");
        for l in &lines {
            println!("{l}");
        }
        eprintln!("kchaos: {} cells", lines.len());
        return Ok(Exit::Ok);
    }
    with_session(args.vm.session(&cache), |rt, session| {
        let outcome = rt.block_on(matrix::run(session, &opts))?;
        print!("{}", summary_table(&outcome.results));
        if let Some(triage) = &outcome.results.triage {
            super::gate::print_triage(triage);
        }
        println!(
            "results: {}",
            kchaos_harness::results::RunResults::path(&outcome.dir).display()
        );
        let mut write_failed = !outcome.write_failures.is_empty();
        for failure in &outcome.write_failures {
            eprintln!("kchaos: error: results not written: {failure}");
        }
        write_failed |= !results::after_run(&outcome);
        // Everything is written: the session waits for kept VMs only after this.
        Ok(Exit::of_run(
            &outcome.results,
            outcome.interrupted,
            write_failed,
        ))
    })
}

/// The matrix the arguments ask for: resumed from its directory, or from the scenarios
/// and kernels given (kernel specs checked before anything starts).
fn matrix_options(args: &RunArgs, cache: &Cache) -> Result<MatrixOptions, CliError> {
    if let Some(dir) = &args.resume {
        let (plan, _) = matrix::stored_plan(dir).map_err(run_error)?;
        super::args::check_specs(&plan.kernels)?;
        let topologies = plan
            .topologies
            .iter()
            .map(|t| Topology::parse(t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|why| {
                CliError::usage(format!("{}: its plan's topology {why}", dir.display()))
            })?;
        return Ok(MatrixOptions {
            topologies,
            repeat: plan.repeat,
            shard: plan.shard,
            resume: true,
            db: args.db.clone(),
            seed: args.seed.or(plan.seed),
            known: args.known.load(&args.list)?,
            ..MatrixOptions::new(
                plan.scenarios.iter().map(PathBuf::from).collect(),
                plan.kernels,
                dir.clone(),
            )
        });
    }
    let kernels = args.list.expand(&args.kernels)?;
    let scenarios = if !args.scenarios.is_empty() {
        args.scenarios.clone()
    } else if std::path::Path::new("scenarios").is_dir() {
        vec![PathBuf::from("scenarios")]
    } else {
        // Outside a checkout: the scenarios shipped with this build.
        let dir = scenario::builtin_dir(cache).map_err(|e| {
            CliError::Infrastructure(anyhow::anyhow!(kchaos_model::error_chain(&e)))
        })?;
        eprintln!(
            "kchaos: no ./scenarios here: running the {} scenarios shipped with kchaos ({})",
            scenario::BUILTIN.len(),
            dir.display()
        );
        vec![dir]
    };
    if scenarios.len() == 1 && !scenarios[0].exists() {
        return Err(CliError::usage(format!(
            "{}: no such file or directory (run from the kchaos checkout, or name scenario files)",
            scenarios[0].display()
        )));
    }
    let topologies = match &args.topology {
        Some(list) => Topology::parse_list(list)
            .map_err(|why| CliError::usage(format!("--topology: {why}")))?,
        None => Vec::new(),
    };
    Ok(MatrixOptions {
        topologies,
        repeat: args.repeat,
        shard: args.shard,
        db: args.db.clone(),
        seed: args.seed,
        known: args.known.load(&args.list)?,
        ..MatrixOptions::new(
            scenarios,
            kernels,
            args.out.clone().unwrap_or_else(|| default_out(None)),
        )
    })
}

/// `kchaos validate`: every file, every problem; exit 2 if any.
pub fn validate(files: &[PathBuf]) -> Exit {
    let paths = match scenario::expand(files) {
        Ok(p) => p,
        Err(errors) => return CliError::Scenarios(errors).report(),
    };
    let mut bad = false;
    for path in paths {
        if is_known_issues_file(&path) {
            bad |= !validate_known(&path);
            continue;
        }
        match scenario::load_file(&path) {
            Ok(s) => println!(
                "ok: {} ({}: {} workloads, {} probes, {} checks)",
                path.display(),
                s.model.name,
                s.model.workloads.len(),
                s.model.probes.len(),
                s.model.checks.len()
            ),
            Err(errors) => {
                bad = true;
                for e in errors.0 {
                    println!("{e}");
                }
            }
        }
    }
    if bad {
        Exit::Usage
    } else {
        Exit::Ok
    }
}

/// A known-issues file (its top level is `[[issue]]` entries) rather than a scenario.
fn is_known_issues_file(path: &std::path::Path) -> bool {
    scenario::read_source(path)
        .ok()
        .and_then(|text| toml::from_str::<toml::Table>(&text).ok())
        .is_some_and(|t| t.contains_key("issue") && !t.contains_key("scenario"))
}

fn validate_known(path: &std::path::Path) -> bool {
    use kchaos_harness::analysis::known::KnownIssues;
    let kernels = match kchaos_images::kernel_list::KernelList::load_default() {
        Ok(k) => k,
        Err(e) => {
            println!("{}", kchaos_model::error_chain(&e));
            return false;
        }
    };
    match KnownIssues::load(path, &kernels) {
        Ok(k) => {
            println!("ok: {} ({} known issues)", path.display(), k.issues.len());
            true
        }
        Err(e) => {
            println!("{e}");
            false
        }
    }
}
