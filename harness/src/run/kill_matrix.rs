//! The kill matrix's loop (`kchaos detect`): every scenario declared to catch a defect
//! runs on the defect's kernel with the defect switched on (its kernel parameters
//! appended to the scenario's `[vm] cmdline`, on its image and topology), trials until
//! it names the mechanism or the budget is spent; then every declared scenario runs on
//! the same kernel without the defect (its stock twin), and every scenario on the stock
//! kernels asked for: both must pass. One session serves every run, so each kernel is
//! built or fetched once. The accounting is `analysis::detection`, the table and page
//! `report::detection_table`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kchaos_images::defects::Defect;
use kchaos_model::scenario::ImageKind;
use kchaos_model::topology::Topology;
use regex::Regex;

use super::matrix::{self, MatrixOptions};
use super::session::Session;
use super::trials::{run_trials, TrialOptions};
use super::RunError;
use crate::analysis::detection::{self, default_expect, Attempt, DefectRow, Detection, StockCell};
use crate::analysis::reproduction::{Pattern, Target};
use crate::results::now_rfc3339;
use crate::scenario::LoadedScenario;

/// What the kill matrix runs and where it records it.
#[derive(Debug)]
pub struct KillMatrixOptions<'a> {
    pub defects: Vec<&'a Defect>,
    /// The scenarios of the directory: the declared ones are found here by name, and
    /// all of them run on the stock kernels.
    pub scenarios: &'a [Arc<LoadedScenario>],
    /// Where `scenarios` came from (named when a declared one is missing).
    pub scenario_dir: &'a Path,
    /// Runs per (defect, scenario) before it counts as escaped.
    pub max_runs: u32,
    /// Stock kernel specs every scenario must pass on (the false-alarm sample).
    pub stock_kernels: Vec<String>,
    pub stock_repeat: u32,
    /// The results directory; its `variants/` must exist.
    pub out: PathBuf,
}

/// Why the kill matrix could not run.
#[derive(Debug, thiserror::Error)]
pub enum KillMatrixError {
    #[error("Defect {defect}: invalid `expect`")]
    Expect {
        defect: String,
        #[source]
        source: regex::Error,
    },
    #[error("The defect list declares scenario `{name}`, which {dir} does not have")]
    MissingScenario { name: String, dir: String },
    #[error("Cannot make a defect's variant of a scenario: {0}")]
    Variant(String),
    #[error(transparent)]
    Run(#[from] RunError),
}

/// How the kill matrix ended.
#[derive(Debug)]
pub enum Ended {
    Finished(Detection),
    /// The user interrupted it; what ran is recorded in its results directories.
    Interrupted,
}

/// A stock kernel's matrix: kernel specs, scenario files, repeats, directory.
type StockMatrix = (Vec<String>, Vec<PathBuf>, u32, String);

/// Runs the kill matrix through `session`.
pub async fn run(
    session: &Arc<Session>,
    opts: &KillMatrixOptions<'_>,
) -> Result<Ended, KillMatrixError> {
    let started_at = now_rfc3339();
    let mut rows = Vec::new();
    // (kernel, scenario file) of each stock twin: the original scenario, or for a
    // defect that lives in an image or a topology, a variant without the parameters.
    let mut twins: Vec<(String, PathBuf)> = Vec::new();
    for d in &opts.defects {
        match defect_row(session, opts, d, &mut twins).await? {
            Some(row) => rows.push(row),
            None => return Ok(Ended::Interrupted),
        }
    }
    let mut stock = Vec::new();
    for (kernels, files, repeat, dir) in stock_matrices(&twins, opts) {
        // A defect's topology is in its variant's `[vm] cpus`: no topology axis.
        let matrix = MatrixOptions {
            repeat,
            ..MatrixOptions::new(files, kernels, opts.out.join(&dir))
        };
        let outcome = matrix::run(session, &matrix).await?;
        if outcome.interrupted {
            return Ok(Ended::Interrupted);
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
    Ok(Ended::Finished(Detection {
        kchaos_version: kchaos_model::VERSION.to_owned(),
        started_at,
        false_alarms: detection::false_alarms(&stock),
        defects: rows,
        stock,
    }))
}

/// One defect: trials of each scenario declared for it on its kernel with the defect
/// on, until the mechanism is named; its stock twins are added to `twins`. `None` when
/// the user interrupted.
async fn defect_row(
    session: &Arc<Session>,
    opts: &KillMatrixOptions<'_>,
    d: &Defect,
    twins: &mut Vec<(String, PathBuf)>,
) -> Result<Option<DefectRow>, KillMatrixError> {
    let expect_text = d
        .expect
        .clone()
        .unwrap_or_else(|| default_expect(d.family).to_owned());
    let expect = Regex::new(&expect_text).map_err(|source| KillMatrixError::Expect {
        defect: d.name.clone(),
        source,
    })?;
    let cmdline: Vec<String> = d.cmdline.iter().map(|p| p.as_str().to_owned()).collect();
    let shape = Shape {
        image: d.image,
        topology: d.topology,
    };
    let variants = opts.out.join("variants");
    let mut attempts = Vec::new();
    for scenario in &d.scenarios {
        let file = find(opts, scenario.as_str())?;
        let twin = if d.image.is_some() || d.topology.is_some() {
            let name = [
                d.image.map(|i| i.to_string()),
                d.topology.map(|t| format!("topo-{t}")),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("-");
            variant(&file, shape, &[], &variants.join(format!("{name}-twin")))
                .map_err(KillMatrixError::Variant)?
        } else {
            file.clone()
        };
        if !twins.iter().any(|(k, f)| *k == d.kernel_spec && *f == twin) {
            twins.push((d.kernel_spec.clone(), twin));
        }
        let defect_file = variant(&file, shape, &cmdline, &variants.join(&d.name))
            .map_err(KillMatrixError::Variant)?;
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
        let trials = run_trials(
            session,
            &TrialOptions::new(
                defect_file,
                d.kernel_spec.clone(),
                Target::Pattern(Pattern(expect.clone())),
                opts.max_runs,
                opts.out.join(&rel),
            ),
        )
        .await?;
        if trials.interrupted {
            return Ok(None);
        }
        let cells = crate::results::sources::load_dir(&opts.out.join(&rel))
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
    Ok(Some(DefectRow {
        defect: d.name.clone(),
        incident: d.incident.as_str().to_owned(),
        family: d.family.to_string(),
        kernel: d.kernel_spec.clone(),
        cmdline,
        expect: expect_text,
        attempts,
    }))
}

/// The declared scenario `name`'s file.
fn find(opts: &KillMatrixOptions<'_>, name: &str) -> Result<PathBuf, KillMatrixError> {
    opts.scenarios
        .iter()
        .find(|s| s.model.name == name)
        .map(|s| s.path.clone())
        .ok_or_else(|| KillMatrixError::MissingScenario {
            name: name.to_owned(),
            dir: opts.scenario_dir.display().to_string(),
        })
}

/// The matrices that must pass: each defect kernel without a defect (its stock twins),
/// then every scenario on the stock kernels.
fn stock_matrices(twins: &[(String, PathBuf)], opts: &KillMatrixOptions<'_>) -> Vec<StockMatrix> {
    let mut matrices = Vec::new();
    // One matrix per kernel and folder: a twin made for an image or a topology is a
    // copy of a shipped scenario under the same name (detection.json pairs twins with
    // attempts by name), and one run cannot hold two scenarios of one name.
    let mut groups: Vec<(&String, Option<&Path>)> = Vec::new();
    for (k, f) in twins {
        let key = (k, f.parent());
        if !groups.contains(&key) {
            groups.push(key);
        }
    }
    for (k, folder) in groups {
        let files: Vec<PathBuf> = twins
            .iter()
            .filter(|(t, f)| t == k && f.parent() == folder)
            .map(|(_, f)| f.clone())
            .collect();
        let mut dir = format!("stock-twin-{}", crate::cell::preboot::sanitize(k));
        if let Some(name) = folder
            .and_then(|f| f.file_name())
            .map(|n| n.to_string_lossy())
            .filter(|n| n.ends_with("-twin"))
        {
            dir = format!("{dir}-{name}");
        }
        matrices.push((vec![k.clone()], files, 1, dir));
    }
    if !opts.stock_kernels.is_empty() {
        // The false-alarm sample: every scenario in the directory, declared for a
        // defect or not (a scenario that catches nothing must still stay quiet).
        let mut files: Vec<PathBuf> = opts.scenarios.iter().map(|s| s.path.clone()).collect();
        files.sort();
        files.dedup();
        matrices.push((
            opts.stock_kernels.clone(),
            files,
            opts.stock_repeat,
            "stock".to_owned(),
        ));
    }
    matrices
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
    let text = crate::scenario::read_source(file).map_err(|e| e.to_string())?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A twin made for a topology keeps its scenario's name, so it runs apart from the
    /// shipped scenario of that name on the same kernel (one run refuses two of a
    /// name); twins of one kernel and folder share a run, wherever they come in the
    /// list.
    #[test]
    fn twins_of_one_name_on_one_kernel_run_apart() {
        let p = PathBuf::from;
        let twins = vec![
            ("deb61-defects".to_owned(), p("scenarios/cfs.toml")),
            ("deb61".to_owned(), p("out/variants/image-twin/flood.toml")),
            ("deb61-defects".to_owned(), p("scenarios/memcg.toml")),
            (
                "deb61-defects".to_owned(),
                p("out/variants/topo-2s1c-twin/cfs.toml"),
            ),
        ];
        let opts = KillMatrixOptions {
            defects: Vec::new(),
            scenarios: &[],
            scenario_dir: Path::new("scenarios"),
            max_runs: 1,
            stock_kernels: Vec::new(),
            stock_repeat: 1,
            out: p("out"),
        };
        let got: Vec<(Vec<String>, Vec<PathBuf>, String)> = stock_matrices(&twins, &opts)
            .into_iter()
            .map(|(k, f, _, d)| (k, f, d))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    vec!["deb61-defects".to_owned()],
                    vec![p("scenarios/cfs.toml"), p("scenarios/memcg.toml")],
                    "stock-twin-deb61-defects".to_owned()
                ),
                (
                    vec!["deb61".to_owned()],
                    vec![p("out/variants/image-twin/flood.toml")],
                    "stock-twin-deb61-image-twin".to_owned()
                ),
                (
                    vec!["deb61-defects".to_owned()],
                    vec![p("out/variants/topo-2s1c-twin/cfs.toml")],
                    "stock-twin-deb61-defects-topo-2s1c-twin".to_owned()
                ),
            ]
        );
    }

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
