//! `kchaos detect`: the kill matrix. Every scenario declared to catch a defect runs on
//! the defect's kernel with the defect switched on (its kernel parameters appended to
//! the scenario's `[vm] cmdline`), repeating until it names the mechanism or the budget
//! is spent; every declared scenario also runs on the same kernel without the defect
//! (its stock twin) and on the stock kernels asked for, which must pass. One session
//! serves every trial: each kernel is built or fetched once.

use std::path::{Path, PathBuf};

use anyhow::Context;
use kchaos_harness::analysis::detect::{self, Attempt, DefectRow, Detection, StockCell};
use kchaos_harness::analysis::trials::{Pattern, Target};
use kchaos_harness::results::now_rfc3339;
use kchaos_harness::run::matrix::{self, MatrixOptions};
use kchaos_harness::run::trials::{run_trials, TrialOptions};
use kchaos_images::defects::{DefectList, Family};
use kchaos_images::Cache;
use kchaos_model::error_chain;
use kchaos_model::scenario::ImageKind;
use kchaos_model::topology::Topology;
use regex::Regex;

use super::args::{default_out, KernelListArgs, VmArgs};
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
    /// Results directory [default: results/detect-<timestamp>].
    #[arg(short, long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub vm: VmArgs,
}

/// What a detection must name, per family, when the defect list says nothing: the
/// kernel's signature or the check that names the leaked object, starving group or
/// stalled operation — never a throughput bound or the run's overrun.
pub fn default_expect(family: Family) -> &'static str {
    match family {
        Family::Netdev => r"unregister_netdevice|net_devices|leaked|teardown|D state",
        Family::Memcg => {
            r"dying|SLUB: Unable to allocate|page allocation failure|Cannot allocate memory|mkdir|rmdir|D state|hung_task|blocked"
        }
        Family::Cfs => r"share_min|share_max|throttl|starv|lockup|LOCKUP|rcu.*stall|RCU",
        Family::Systemd => {
            r"systemd unresponsive|silence|job of .* ended|no JobRemoved|leaked|Operation not supported"
        }
    }
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
    let loaded = kchaos_harness::scenario::load_all(std::slice::from_ref(&scenario_dir))
        .map_err(CliError::Scenarios)?;
    let find = |name: &str| -> Result<PathBuf, CliError> {
        loaded
            .iter()
            .find(|s| s.model.name == name)
            .map(|s| s.path.clone())
            .ok_or_else(|| {
                CliError::usage(format!(
                    "the defect list declares scenario `{name}`, which {} does not have",
                    scenario_dir.display()
                ))
            })
    };
    let stock_specs = if args.stock_kernels.is_empty() {
        Vec::new()
    } else {
        args.list.expand(&args.stock_kernels)?
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(Some("detect")));
    std::fs::create_dir_all(out.join("variants"))
        .with_context(|| format!("creating {}", out.display()))?;
    with_session(args.vm.session(cache), |rt, session| {
        let started_at = now_rfc3339();
        let mut rows = Vec::new();
        // (kernel, scenario file) of each stock twin: the original scenario, or for a
        // defect that lives in an image, a variant on that image without the parameters.
        let mut twins: Vec<(String, PathBuf)> = Vec::new();
        for d in &defects {
            let expect_text = d
                .expect
                .clone()
                .unwrap_or_else(|| default_expect(d.family).to_owned());
            let expect = Regex::new(&expect_text)
                .map_err(|e| CliError::usage(format!("defect {}: expect: {e}", d.name)))?;
            let cmdline: Vec<String> = d.cmdline.iter().map(|p| p.as_str().to_owned()).collect();
            let mut attempts = Vec::new();
            for scenario in &d.scenarios {
                let file = find(scenario.as_str())?;
                let twin = if d.image.is_some() || d.topology.is_some() {
                    let name = [
                        d.image.map(|i| i.to_string()),
                        d.topology.map(|t| format!("topo-{t}")),
                    ]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join("-");
                    let shape = Shape {
                        image: d.image,
                        topology: d.topology,
                    };
                    variant(
                        &file,
                        shape,
                        &[],
                        &out.join("variants").join(format!("{name}-twin")),
                    )
                    .map_err(CliError::Usage)?
                } else {
                    file.clone()
                };
                if !twins.iter().any(|(k, f)| *k == d.kernel_spec && *f == twin) {
                    twins.push((d.kernel_spec.clone(), twin));
                }
                let shape = Shape {
                    image: d.image,
                    topology: d.topology,
                };
                let defect_file =
                    variant(&file, shape, &cmdline, &out.join("variants").join(&d.name))
                        .map_err(CliError::Usage)?;
                let rel = format!("{}/{}", d.name, scenario.as_str());
                eprintln!(
                    "kchaos: detect: {} on {} with {}{}{}",
                    scenario.as_str(),
                    d.name,
                    cmdline.join(" "),
                    d.image.map(|i| format!(" (image {i})")).unwrap_or_default(),
                    d.topology
                        .map(|t| format!(" (topology {t})"))
                        .unwrap_or_default()
                );
                let trials = rt
                    .block_on(run_trials(
                        session,
                        &TrialOptions::new(
                            defect_file,
                            d.kernel_spec.clone(),
                            Target::Pattern(Pattern(expect.clone())),
                            args.max_runs,
                            out.join(&rel),
                        ),
                    ))
                    .map_err(run_error)?;
                if trials.interrupted {
                    return Ok(Exit::Interrupted);
                }
                let cells = kchaos_harness::results::sources::load_dir(&out.join(&rel))
                    .map(|r| r.results.cells)
                    .unwrap_or_default();
                attempts.push(Attempt::from_cells(
                    scenario.as_str(),
                    &cells,
                    &expect,
                    trials.runs + trials.errors,
                    rel,
                ));
            }
            rows.push(DefectRow {
                defect: d.name.clone(),
                incident: d.incident.as_str().to_owned(),
                family: d.family.to_string(),
                kernel: d.kernel_spec.clone(),
                cmdline,
                expect: expect_text,
                attempts,
            });
        }
        // The stock twins (each defect kernel without a defect) and the stock kernels.
        let mut stock = Vec::new();
        let mut matrices: Vec<(Vec<String>, Vec<PathBuf>, u32, String)> = Vec::new();
        let mut twin_kernels: Vec<String> = twins.iter().map(|(k, _)| k.clone()).collect();
        twin_kernels.dedup();
        for k in &twin_kernels {
            let files: Vec<PathBuf> = twins
                .iter()
                .filter(|(t, _)| t == k)
                .map(|(_, f)| f.clone())
                .collect();
            matrices.push((
                vec![k.clone()],
                files,
                1,
                format!("stock-twin-{}", sanitize(k)),
            ));
        }
        if !stock_specs.is_empty() {
            // The false-alarm sample: every scenario in the directory, declared for a
            // defect or not (a scenario that catches nothing must still stay quiet).
            let mut files: Vec<PathBuf> = loaded.iter().map(|s| s.path.clone()).collect();
            files.sort();
            files.dedup();
            matrices.push((stock_specs, files, args.stock_repeat, "stock".to_owned()));
        }
        for (kernels, files, repeat, dir) in matrices {
            // A defect's topology is in its variant's `[vm] cpus`: no topology axis.
            let opts = MatrixOptions {
                repeat,
                ..MatrixOptions::new(files, kernels, out.join(&dir))
            };
            let outcome = rt
                .block_on(matrix::run(session, &opts))
                .map_err(run_error)?;
            if outcome.interrupted {
                return Ok(Exit::Interrupted);
            }
            stock.extend(outcome.results.cells.iter().map(|c| {
                StockCell {
                    scenario: c.scenario.clone(),
                    kernel: c
                        .kernel
                        .resolved
                        .clone()
                        .unwrap_or_else(|| c.kernel.spec.clone()),
                    repeat: c.repeat,
                    verdict: c.verdict,
                    reasons: c.reasons.clone(),
                }
            }));
        }
        let detection = Detection {
            kchaos_version: kchaos_model::VERSION.to_owned(),
            started_at,
            false_alarms: detect::false_alarms(&stock),
            defects: rows,
            stock,
        };
        print!("{}", detect::table(&detection));
        let json = serde_json::to_string_pretty(&detection).context("encoding the detection")?;
        let mut wrote = true;
        for (name, bytes) in [
            ("detection.json", json + "\n"),
            ("detection.html", detect::html(&detection)),
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
    })
}

/// What a defect changes of the scenario's VM besides its command line.
#[derive(Debug, Clone, Copy, Default)]
struct Shape {
    image: Option<ImageKind>,
    topology: Option<Topology>,
}

/// A copy of scenario `file` with `params` appended to its `[vm] cmdline` and, if
/// given, the shape's image as its `[vm] image` and topology as its `[vm] cpus`, in
/// `dir`.
fn variant(file: &Path, shape: Shape, params: &[String], dir: &Path) -> Result<PathBuf, String> {
    let Shape { image, topology } = shape;
    let text = kchaos_harness::scenario::read_source(file).map_err(|e| e.to_string())?;
    let mut doc: toml::Table =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    let vm = doc
        .entry("vm")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let Some(vm) = vm.as_table_mut() else {
        return Err(format!("{}: `vm` is not a table", file.display()));
    };
    let cmdline = vm
        .entry("cmdline")
        .or_insert_with(|| toml::Value::Array(Vec::new()));
    let Some(list) = cmdline.as_array_mut() else {
        return Err(format!("{}: `vm.cmdline` is not an array", file.display()));
    };
    list.extend(params.iter().cloned().map(toml::Value::String));
    if let Some(image) = image {
        vm.insert("image".to_owned(), toml::Value::String(image.to_string()));
    }
    if let Some(t) = topology {
        let cpus = if t.sockets == 1 && t.threads == 1 {
            toml::Value::Integer(i64::from(t.cpus()))
        } else {
            toml::Value::String(t.label())
        };
        vm.insert("cpus".to_owned(), cpus);
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let name = file
        .file_name()
        .map_or_else(|| "scenario.toml".into(), |n| n.to_owned());
    let path = dir.join(name);
    let body = toml::to_string(&doc).map_err(|e| e.to_string())?;
    let image_note = image.map(|i| format!(" on image {i}")).unwrap_or_default()
        + &topology
            .map(|t| format!(" on topology {t}"))
            .unwrap_or_default();
    std::fs::write(
        &path,
        format!(
            "# {} with {}{image_note}\n{body}",
            file.display(),
            params.join(" ")
        ),
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    // The variant must still be a valid scenario.
    kchaos_model::scenario::parse(&path.display().to_string(), &body).map_err(|e| e.to_string())?;
    Ok(path)
}

fn sanitize(text: &str) -> String {
    kchaos_harness::cell::preboot::sanitize(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_defect_variant_carries_its_parameters_image_and_topology() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cfs.toml");
        std::fs::write(
            &file,
            "[scenario]\nname = \"cfs\"\n[vm]\ncpus = 2\ncmdline = [\"quiet\"]\n[[probe]]\nkind = \"d-state\"\nname = \"d\"\n",
        )
        .unwrap();
        let shape = Shape {
            image: None,
            topology: Topology::parse("2s1c").ok(),
        };
        let path = variant(
            &file,
            shape,
            &["kchaos_defect.cfs_remote_package_skip=1".to_owned()],
            &dir.path().join("v"),
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let s = kchaos_model::scenario::parse("v.toml", &text).unwrap();
        assert_eq!(s.vm.topology.label(), "2s1c");
        assert_eq!(
            s.vm.cmdline,
            ["quiet", "kchaos_defect.cfs_remote_package_skip=1"]
        );
        assert!(
            text.starts_with("# ") && text.contains("on topology 2s1c"),
            "{text}"
        );
        // The stock twin: the topology, no parameters.
        let twin = variant(&file, shape, &[], &dir.path().join("t")).unwrap();
        let s = kchaos_model::scenario::parse("t.toml", &std::fs::read_to_string(twin).unwrap())
            .unwrap();
        assert_eq!((s.vm.cpus, s.vm.cmdline.len()), (2, 1));
    }
}
