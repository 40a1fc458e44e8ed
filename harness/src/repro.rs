//! Reproduce on demand: run fresh VMs of one scenario on one kernel until the wanted
//! outcome shows up or the budget is spent, and say how likely it is per run.
//!
//! Trials are one growing matrix (`--repeat` raised batch by batch, resumed in the same
//! results directory), so every run is an ordinary cell: recorded, reported, replayable.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kchaos_model::stats;
use kchaos_model::verdict::Verdict;

use crate::results::CellResult;
use crate::run::{self, RunError, RunOptions};

/// What counts as a hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `fail`, `crash` or `hang`.
    AnyFailure,
    Verdict(Verdict),
    /// Text in a reason, a kernel-log signature or the fingerprint (case-insensitive).
    Text(String),
}

impl Target {
    pub fn parse(text: &str) -> Target {
        match text {
            "any" | "failure" => Target::AnyFailure,
            "fail" => Target::Verdict(Verdict::Fail),
            "crash" => Target::Verdict(Verdict::Crash),
            "hang" => Target::Verdict(Verdict::Hang),
            other => Target::Text(other.to_owned()),
        }
    }

    pub fn hit(&self, cell: &CellResult) -> bool {
        match self {
            Target::AnyFailure => cell.verdict.is_failure(),
            Target::Verdict(v) => cell.verdict == *v,
            Target::Text(t) => {
                let t = t.to_lowercase();
                let has = |s: &str| s.to_lowercase().contains(&t);
                cell.verdict.is_failure()
                    && (cell.reasons.iter().any(|r| has(r))
                        || cell.signatures.iter().any(|s| has(&s.line) || has(&s.id))
                        || cell
                            .fingerprint
                            .as_ref()
                            .is_some_and(|f| has(&f.title) || has(&f.id)))
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Target::AnyFailure => "fail, crash or hang".to_owned(),
            Target::Verdict(v) => v.to_string(),
            Target::Text(t) => format!("`{t}`"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TrialOptions {
    /// One scenario, one kernel; `repeat`, `resume` are managed here.
    pub run: RunOptions,
    pub target: Target,
    pub max_runs: u32,
    /// Stop at the first hit (false: spend the whole budget, for a probability).
    pub stop_at_first: bool,
}

/// A distinct crash or hang seen, by fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub title: String,
    pub count: u32,
    pub first_cell: String,
}

#[derive(Debug, Clone)]
pub struct Trials {
    pub dir: PathBuf,
    /// Runs that were judged (not `error` or `skip`).
    pub runs: u32,
    pub hits: u32,
    pub errors: u32,
    /// Why runs were skipped, if they were (the kernel cannot run the scenario).
    pub skipped: Option<String>,
    /// The first hit: its cell, its seed, and the wall time from the start until it.
    pub first_hit: Option<(String, u64, Duration)>,
    pub fingerprints: BTreeMap<String, Seen>,
    /// Mean duration of a judged run (the cost of one more run).
    pub mean_run: Duration,
    pub interrupted: bool,
    /// Every run: cell id, seed, hit.
    pub seeds: Vec<(String, u64, bool)>,
}

impl Trials {
    /// Hits / runs with a 95% Wilson interval.
    pub fn probability(&self) -> (f64, f64, f64) {
        let p = if self.runs == 0 {
            0.0
        } else {
            f64::from(self.hits) / f64::from(self.runs)
        };
        let (lo, hi) = stats::wilson(u64::from(self.hits), u64::from(self.runs), stats::Z95);
        (p, lo, hi)
    }

    /// Expected wall time to a hit (mean run / p); `None` when nothing hit.
    pub fn expected_time_to_hit(&self) -> Option<Duration> {
        let (p, _, _) = self.probability();
        (p > 0.0).then(|| self.mean_run.div_f64(p))
    }
}

pub async fn run_trials(opts: TrialOptions) -> Result<Trials, RunError> {
    let start = Instant::now();
    let batch = u32::try_from(opts.run.jobs.max(1)).unwrap_or(1);
    let mut t = Trials {
        dir: opts.run.out.clone(),
        runs: 0,
        hits: 0,
        errors: 0,
        skipped: None,
        first_hit: None,
        fingerprints: BTreeMap::new(),
        mean_run: Duration::ZERO,
        interrupted: false,
        seeds: Vec::new(),
    };
    let mut done = 0u32;
    let mut total_ms = 0u64;
    while done < opts.max_runs {
        let upto = (done + batch).min(opts.max_runs);
        let mut run_opts = opts.run.clone();
        run_opts.repeat = upto;
        run_opts.resume = done > 0;
        let outcome = run::run(run_opts).await?;
        let mut new: Vec<&CellResult> = outcome
            .results
            .cells
            .iter()
            .filter(|c| c.repeat >= done)
            .collect();
        new.sort_by_key(|c| c.repeat);
        for cell in new {
            match cell.verdict {
                Verdict::Error => {
                    t.errors += 1;
                    continue;
                }
                Verdict::Skip => {
                    t.skipped = cell.reasons.first().cloned();
                    continue;
                }
                _ => {}
            }
            t.runs += 1;
            total_ms += cell.duration_ms;
            let hit = opts.target.hit(cell);
            t.seeds.push((cell.id.clone(), cell.seed, hit));
            if hit {
                t.hits += 1;
                if t.first_hit.is_none() {
                    t.first_hit = Some((cell.id.clone(), cell.seed, start.elapsed()));
                }
            }
            if let Some(fp) = &cell.fingerprint {
                t.fingerprints
                    .entry(fp.id.clone())
                    .or_insert_with(|| Seen {
                        title: fp.title.clone(),
                        count: 0,
                        first_cell: cell.id.clone(),
                    })
                    .count += 1;
            }
        }
        done = upto;
        if outcome.interrupted {
            t.interrupted = true;
            break;
        }
        // Nothing can be learnt from a kernel that skips the scenario or from a broken
        // setup: stop instead of spending the budget on it.
        if t.runs == 0 && (t.skipped.is_some() || t.errors >= batch) {
            break;
        }
        if opts.stop_at_first && t.hits > 0 {
            break;
        }
    }
    if t.runs > 0 {
        t.mean_run = Duration::from_millis(total_ms / u64::from(t.runs));
    }
    Ok(t)
}

/// The report of a trial series, for the terminal.
pub fn summary(scenario: &str, kernel: &str, target: &Target, t: &Trials) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let (p, lo, hi) = t.probability();
    let _ = writeln!(
        out,
        "{scenario} on {kernel}, until {}: {} hit{} in {} run{}{}",
        target.describe(),
        t.hits,
        if t.hits == 1 { "" } else { "s" },
        t.runs,
        if t.runs == 1 { "" } else { "s" },
        if t.errors > 0 {
            format!(" ({} runs could not be judged: error)", t.errors)
        } else {
            String::new()
        }
    );
    if let Some(why) = &t.skipped {
        let _ = writeln!(out, "  skipped on this kernel: {why}");
    }
    if t.runs > 0 {
        let _ = writeln!(
            out,
            "  reproduction probability {p:.2} per run (95% Wilson interval {lo:.2}-{hi:.2})"
        );
    }
    match &t.first_hit {
        Some((cell, seed, after)) => {
            let _ = writeln!(
                out,
                "  first hit: {cell} (seed {seed}) after {:.0}s",
                after.as_secs_f64()
            );
        }
        None if t.runs > 0 => {
            let _ = writeln!(
                out,
                "  not reproduced; if it reproduces at all, p < {hi:.2} per run (95%)"
            );
        }
        None => {}
    }
    if let Some(eta) = t.expected_time_to_hit() {
        let _ = writeln!(
            out,
            "  one run takes {:.0}s; expected time to a hit {:.0}s",
            t.mean_run.as_secs_f64(),
            eta.as_secs_f64()
        );
    }
    for (id, seen) in &t.fingerprints {
        let _ = writeln!(
            out,
            "  fingerprint {id} x{}: {} (first in {})",
            seen.count, seen.title, seen.first_cell
        );
    }
    let _ = writeln!(out, "  results: {}", t.dir.display());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::test_cell;

    #[test]
    fn targets_match_verdicts_and_text() {
        let mut cell = test_cell("memcg/k", Verdict::Fail, 1e6);
        assert!(Target::parse("any").hit(&cell));
        assert!(Target::parse("fail").hit(&cell));
        assert!(!Target::parse("crash").hit(&cell));
        assert!(Target::parse("LAT.P99").hit(&cell));
        assert!(!Target::parse("soft lockup").hit(&cell));
        cell.verdict = Verdict::Pass;
        cell.reasons.clear();
        assert!(!Target::parse("any").hit(&cell));
        // Text only counts on a failing cell: a pass that mentions it is no hit.
        cell.notes.push("lat.p99".into());
        assert!(!Target::parse("lat.p99").hit(&cell));
    }

    #[test]
    fn probability_and_expected_time() {
        let t = Trials {
            dir: PathBuf::new(),
            runs: 20,
            hits: 5,
            errors: 0,
            skipped: None,
            first_hit: None,
            fingerprints: BTreeMap::new(),
            mean_run: Duration::from_secs(10),
            interrupted: false,
            seeds: Vec::new(),
        };
        let (p, lo, hi) = t.probability();
        assert_eq!(p, 0.25);
        // Wilson 95% for 5/20: 0.112-0.469.
        assert!(
            (lo - 0.112).abs() < 0.002 && (hi - 0.469).abs() < 0.002,
            "{lo} {hi}"
        );
        assert_eq!(t.expected_time_to_hit(), Some(Duration::from_secs(40)));
    }
}
