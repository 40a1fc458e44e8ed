//! A bisection as recorded: `bisect.json` (docs/results.md), written after every step
//! so an interrupted bisection resumes (`--resume`) from what it finished. This module
//! is the record and the accounting around it (a step's summary from its trials, the
//! outcome in words, the commit range a nightly's two recorded runs give); the steps
//! are driven by `run::bisect`, drawn by `report::html::bisect`.

use std::path::Path;

use kchaos_model::bisect::plan::{Observed, Outcome, Phase};
use kchaos_model::bisect::StepVerdict;
use kchaos_model::stats;
use kchaos_model::verdict::Verdict;
use serde::{Deserialize, Serialize};

use crate::analysis::reproduction::{Target, Trials};
use crate::results::CellResult;

/// The file name, in the bisection's directory.
pub const FILE: &str = "bisect.json";

/// A bisection, as far as it went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BisectRecord {
    pub kchaos_version: String,
    pub started_at: String,
    /// Set when the bisection ended (found, or why not); `null` while it runs or after
    /// an interruption.
    pub finished_at: Option<String>,
    /// The scenario file as given, and what counts as a hit (`--until`).
    pub scenario: String,
    pub until: String,
    /// `--set PATH=VALUE` applied to the scenario.
    #[serde(default)]
    pub sets: Vec<String>,
    pub options: PlanOptionsRecord,
    /// For `--source`: the repository and how its commits were built.
    pub source: Option<SourceRange>,
    /// What is bisected, oldest first: kernels of a list, or commits.
    pub points: Vec<Point>,
    /// Indexes into `points` of the good and the bad end.
    pub good: usize,
    pub bad: usize,
    /// The reproduction probability measured on the bad end.
    pub calibration: Option<Calibration>,
    pub runs_per_step: Option<u32>,
    pub steps: Vec<StepRecord>,
    pub outcome: Option<OutcomeRecord>,
    pub totals: Totals,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PlanOptionsRecord {
    pub calibrate: u32,
    pub runs: Option<u32>,
    pub confidence: f64,
    pub seed: Option<u64>,
}

/// The repository a `--source` bisection builds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRange {
    pub repo: String,
    /// The revisions as given (or as a recorded run named them).
    pub good_rev: String,
    pub bad_rev: String,
    /// Config fragments after `kchaos.config`.
    pub fragments: Vec<String>,
    /// Where the worktree, build directory and built commits are.
    pub build_space: String,
    pub ccache: bool,
}

/// One kernel or commit of the range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Point {
    /// A kernel spec, or a full commit hash.
    pub id: String,
    /// A commit's subject line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub hits: u32,
    pub runs: u32,
    pub probability: f64,
    pub interval95: (f64, f64),
}

/// One step: a point built, booted and run, or why it could not be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub phase: Phase,
    pub index: usize,
    /// The point's id (commit hash or kernel spec) and subject.
    pub point: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The kernel the runs booted.
    pub kernel: Option<String>,
    pub verdict: StepVerdict,
    /// What the plan was told (replayed by `--resume`).
    pub observed: Observed,
    /// Runs judged, runs that hit, runs that could not be judged (errors, no boot).
    pub runs: u32,
    pub hits: u32,
    pub errors: u32,
    /// Runs the plan asked for.
    pub planned_runs: u32,
    /// hits / runs and its 95% Wilson interval (none without a judged run).
    pub probability: Option<f64>,
    pub interval95: Option<(f64, f64)>,
    /// How sure the verdict is: 1 for bad, `1 - (1 - p_low)^runs` for good.
    pub confidence: Option<f64>,
    pub build: Option<StepBuild>,
    /// Median boot time of the runs (QEMU start to the runner's hello).
    pub boot_ms: Option<u64>,
    /// Wall time of the runs.
    pub run_seconds: f64,
    /// The step's results directory, relative to the bisection's.
    pub results: Option<String>,
    /// Why a skipped step could not be judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// How a step's kernel was built (`--source`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepBuild {
    /// build.sh's wall time (0 when the commit was already built).
    pub seconds: f64,
    pub checkout_seconds: f64,
    /// Found built earlier (this step built nothing).
    pub cached: bool,
    /// Files compiled (cache hits included) and what ccache did.
    pub compiled: u64,
    pub ccache_hits: Option<u64>,
    pub ccache_misses: Option<u64>,
    /// The build log (a failed build's, for a skip).
    pub log: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeRecord {
    /// `found`, `ambiguous`, `bad-does-not-reproduce`, `good-reproduces`,
    /// `end-untestable`, `probability-too-low`.
    pub kind: String,
    pub first_bad: Option<Point>,
    pub last_good: Option<Point>,
    /// With `ambiguous`: the points the first bad is one of.
    #[serde(default)]
    pub candidates: Vec<Point>,
    /// A lower bound on the chance the answer is right.
    pub confidence: Option<f64>,
    /// The answer in words, as the terminal printed it.
    pub message: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub steps: u32,
    /// Steps whose kernel this bisection built (not found built).
    pub builds: u32,
    pub build_seconds: f64,
    pub run_seconds: f64,
    /// From the start to the end, interruptions not counted.
    pub wall_seconds: f64,
}

impl BisectRecord {
    /// Adds a finished step and its costs.
    pub fn push(&mut self, step: StepRecord) {
        self.totals.steps += 1;
        if let Some(b) = &step.build {
            if !b.cached {
                self.totals.builds += 1;
            }
            self.totals.build_seconds += b.seconds + b.checkout_seconds;
        }
        self.totals.run_seconds += step.run_seconds;
        self.steps.push(step);
    }

    /// Reads `dir/bisect.json`.
    pub fn load(dir: &Path) -> Result<BisectRecord, String> {
        let path = dir.join(FILE);
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn point(&self, index: usize) -> Option<Point> {
        self.points.get(index).cloned()
    }

    /// Records how the bisection ended, with the answer in words.
    pub fn finish(&mut self, outcome: &Outcome, finished_at: String) {
        self.outcome = Some(self.outcome_record(outcome));
        self.finished_at = Some(finished_at);
    }

    fn outcome_record(&self, outcome: &Outcome) -> OutcomeRecord {
        let name = |i: usize| {
            self.points.get(i).map_or_else(
                || format!("#{i}"),
                |p| match &p.subject {
                    Some(s) => format!("{} ({s})", short(&p.id)),
                    None => p.id.clone(),
                },
            )
        };
        let blank = |kind: &str, message: String| OutcomeRecord {
            kind: kind.to_owned(),
            first_bad: None,
            last_good: None,
            candidates: Vec::new(),
            confidence: None,
            message,
        };
        let p = self.calibration.map_or(0.0, |c| c.interval95.0);
        match outcome {
            Outcome::Found {
                first_bad,
                last_good,
                confidence,
            } => OutcomeRecord {
                kind: "found".into(),
                first_bad: self.point(*first_bad),
                last_good: self.point(*last_good),
                candidates: Vec::new(),
                confidence: Some(*confidence),
                message: format!(
                    "first bad: {} (last good: {}); confidence >= {confidence:.3} at p >= {p:.2}",
                    name(*first_bad),
                    name(*last_good)
                ),
            },
            Outcome::Ambiguous {
                candidates,
                last_good,
                confidence,
            } => OutcomeRecord {
                kind: "ambiguous".into(),
                first_bad: None,
                last_good: self.point(*last_good),
                candidates: candidates.iter().filter_map(|i| self.point(*i)).collect(),
                confidence: Some(*confidence),
                message: format!(
                    "first bad is one of {} (skipped steps hide the boundary; last good: {}); confidence >= {confidence:.3} at p >= {p:.2}",
                    candidates.iter().map(|i| name(*i)).collect::<Vec<_>>().join(", "),
                    name(*last_good)
                ),
            },
            Outcome::BadDoesNotReproduce { runs } => blank(
                "bad-does-not-reproduce",
                format!(
                    "the bad end {} did not reproduce in {runs} runs: nothing to bisect",
                    name(self.bad)
                ),
            ),
            Outcome::GoodReproduces { hits, runs } => blank(
                "good-reproduces",
                format!(
                    "the good end {} reproduces too ({hits}/{runs} runs): not a regression inside this range",
                    name(self.good)
                ),
            ),
            Outcome::EndUntestable { phase, why } => {
                let end = if *phase == Phase::Calibrate { self.bad } else { self.good };
                blank(
                    "end-untestable",
                    format!("{} could not be judged: {why}", name(end)),
                )
            }
            Outcome::ProbabilityTooLow { p_low } => blank(
                "probability-too-low",
                format!("the reproduction probability (>= {p_low:.3}) is too low to plan runs per step; give --runs"),
            ),
        }
    }
}

/// A duration for people: seconds below 90 s, else minutes and seconds (`68m47s`).
pub fn duration_text(seconds: f64) -> String {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let whole = seconds.max(0.0).round() as u64;
    if whole < 90 {
        format!("{whole}s")
    } else {
        format!("{}m{:02}s", whole / 60, whole % 60)
    }
}

/// The first 12 characters of a commit hash; a kernel spec as it is.
pub fn short(id: &str) -> &str {
    if id.len() >= 40 && id.chars().all(|c| c.is_ascii_hexdigit()) {
        &id[..12]
    } else {
        id
    }
}

/// What a step's trials come to for the plan: judged runs and hits, or why nothing
/// could be judged. A run whose kernel never reached the runner (no boot) is not a
/// judgement of the scenario: `git bisect run`'s 125.
pub fn observe(t: &Trials) -> Observed {
    if t.runs > 0 {
        return Observed::Judged {
            runs: t.runs,
            hits: t.hits,
        };
    }
    let why = match (&t.skipped, t.unbooted, t.errors) {
        (Some(why), _, _) => format!("the scenario skips on this kernel: {why}"),
        (None, n, _) if n > 0 => format!("the kernel did not boot ({n} runs)"),
        (None, _, n) if n > 0 => format!("every run was an infrastructure error ({n} runs)"),
        _ => "no run could be judged".to_owned(),
    };
    Observed::Skipped { why }
}

/// A step's probability and interval from its trials.
pub fn probability(t: &Trials) -> (Option<f64>, Option<(f64, f64)>) {
    if t.runs == 0 {
        return (None, None);
    }
    let (p, lo, hi) = t.probability();
    (Some(p), Some((lo, hi)))
}

/// The median boot time of a step's cells.
pub fn median_boot_ms(cells: &[CellResult]) -> Option<u64> {
    #[allow(clippy::cast_precision_loss)]
    let boots: Vec<f64> = cells
        .iter()
        .filter_map(|c| c.boot_ms)
        .map(|b| b as f64)
        .collect();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    stats::median(&boots).map(|m| m.round() as u64)
}

/// Why the commits two recorded runs name cannot bound a bisection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("{which} run has no cell of scenario `{scenario}`")]
    NoCell {
        which: &'static str,
        scenario: String,
    },
    #[error("the good run's cell {cell} is a hit for --until {until}: it cannot be the good end")]
    GoodHits { cell: String, until: String },
    #[error("the bad run has no cell of `{scenario}` that is a hit for --until {until} (verdicts: {verdicts})")]
    BadPasses {
        scenario: String,
        until: String,
        verdicts: String,
    },
    #[error("cell {cell} ran kernel {kernel}, which records no source commit (build it with vm-images/recipes/kernel/build.sh from a git tree, or add commit=<rev> to its path: spec)")]
    NoCommit { cell: String, kernel: String },
    #[error(
        "cell {cell} ran a kernel built from a modified tree ({describe}): no commit rebuilds it"
    )]
    Dirty { cell: String, describe: String },
    #[error("the {which} run's cells of `{scenario}` ran kernels of different commits ({commits}): point at one cell's directory")]
    Several {
        which: &'static str,
        scenario: String,
        commits: String,
    },
}

/// The good and bad commits of a nightly's two recorded runs: the passing cells of
/// `scenario` in `good` (none may hit), the hitting cells in `bad`, each run's cells
/// all on kernels of one commit.
pub fn range_from_runs(
    scenario: &str,
    target: &Target,
    good: &[CellResult],
    bad: &[CellResult],
) -> Result<(String, String), RangeError> {
    let mine = |cells: &[CellResult]| -> Vec<CellResult> {
        cells
            .iter()
            .filter(|c| {
                c.scenario == scenario && !matches!(c.verdict, Verdict::Error | Verdict::Skip)
            })
            .cloned()
            .collect()
    };
    let (good, bad) = (mine(good), mine(bad));
    if good.is_empty() {
        return Err(RangeError::NoCell {
            which: "the good",
            scenario: scenario.to_owned(),
        });
    }
    if bad.is_empty() {
        return Err(RangeError::NoCell {
            which: "the bad",
            scenario: scenario.to_owned(),
        });
    }
    if let Some(c) = good.iter().find(|c| target.hit(c)) {
        return Err(RangeError::GoodHits {
            cell: c.id.clone(),
            until: target.describe(),
        });
    }
    let hits: Vec<CellResult> = bad.iter().filter(|c| target.hit(c)).cloned().collect();
    if hits.is_empty() {
        return Err(RangeError::BadPasses {
            scenario: scenario.to_owned(),
            until: target.describe(),
            verdicts: bad
                .iter()
                .map(|c| c.verdict.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok((
        one_commit("good", scenario, &good)?,
        one_commit("bad", scenario, &hits)?,
    ))
}

fn one_commit(
    which: &'static str,
    scenario: &str,
    cells: &[CellResult],
) -> Result<String, RangeError> {
    let mut commits: Vec<String> = Vec::new();
    for c in cells {
        let source = c
            .kernel
            .source
            .as_ref()
            .ok_or_else(|| RangeError::NoCommit {
                cell: c.id.clone(),
                kernel: c
                    .kernel
                    .resolved
                    .clone()
                    .unwrap_or_else(|| c.kernel.spec.clone()),
            })?;
        if source.dirty {
            return Err(RangeError::Dirty {
                cell: c.id.clone(),
                describe: source
                    .describe
                    .clone()
                    .unwrap_or_else(|| source.commit.clone()),
            });
        }
        if !commits.contains(&source.commit) {
            commits.push(source.commit.clone());
        }
    }
    match commits.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(RangeError::Several {
            which,
            scenario: scenario.to_owned(),
            commits: commits.join(", "),
        }),
    }
}

#[cfg(test)]
#[path = "bisect_tests.rs"]
mod tests;
