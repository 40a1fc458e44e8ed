//! Trials: fresh runs of one scenario on one kernel until a wanted outcome shows up or
//! the budget is spent. This module is the accounting — what counts as a hit, the
//! probability with its interval, when to stop; `run::trials` drives the VMs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use kchaos_model::signature::{Severity, SignatureHit};
use kchaos_model::stats;
use kchaos_model::verdict::Verdict;

use crate::results::CellResult;

/// What counts as a hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `fail`, `crash` or `hang`.
    AnyFailure,
    Verdict(Verdict),
    /// Text in a reason, a kernel-log signature or the fingerprint (case-insensitive).
    Text(String),
    /// A regular expression over the same (`kchaos detect`: the defect's mechanism).
    Pattern(Pattern),
}

/// A regular expression that compares by its text (targets are compared in tests).
#[derive(Debug, Clone)]
pub struct Pattern(pub regex::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for Pattern {}

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
            Target::Pattern(p) => crate::analysis::detection::names_mechanism(cell, &p.0).is_some(),
        }
    }

    /// Whether a kernel-log signature, seen while the cell still runs, already decides
    /// this target: the cell will be a hit whatever else happens, so it can end at once
    /// instead of running to its duration (the stalled teardown of a netdev leak keeps a
    /// workload alive for minutes after the kernel said `unregister_netdevice: waiting`).
    /// Agrees with [`Target::hit`]: a failure signature makes the verdict `fail` (or
    /// `crash`), and its line is one of the cell's signatures and reasons.
    pub fn decided_by(&self, hit: &SignatureHit) -> bool {
        let failing = matches!(hit.severity, Severity::Fail | Severity::Crash);
        match self {
            Target::AnyFailure => failing,
            Target::Verdict(Verdict::Fail) => hit.severity == Severity::Fail,
            Target::Verdict(Verdict::Crash) => hit.severity == Severity::Crash,
            // A hang is decided by silence, never by a line; pass/skip/error are no
            // targets a signature could reach.
            Target::Verdict(_) => false,
            Target::Text(t) => {
                let t = t.to_lowercase();
                failing
                    && (hit.line.to_lowercase().contains(&t) || hit.id.to_lowercase().contains(&t))
            }
            Target::Pattern(p) => failing && (p.0.is_match(&hit.line) || p.0.is_match(&hit.id)),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Target::AnyFailure => "fail, crash or hang".to_owned(),
            Target::Verdict(v) => v.to_string(),
            Target::Text(t) => format!("`{t}`"),
            Target::Pattern(p) => format!("/{}/", p.0.as_str()),
        }
    }
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
    /// Runs that could not be judged: infrastructure errors, and with
    /// [`Trials::requiring_boot`] runs whose kernel never reached the runner.
    pub errors: u32,
    /// Of `errors`, runs whose kernel did not boot (counted only when boot is required).
    pub unbooted: u32,
    /// A run whose kernel never reached the runner judges nothing (`bisect`: a kernel
    /// that does not boot is skipped, as `git bisect run` exit 125).
    pub require_boot: bool,
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
    /// Results that could not be written, each naming its path.
    pub write_failures: Vec<String>,
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

impl Trials {
    pub fn new(dir: PathBuf) -> Trials {
        Trials {
            dir,
            runs: 0,
            hits: 0,
            errors: 0,
            unbooted: 0,
            require_boot: false,
            skipped: None,
            first_hit: None,
            fingerprints: BTreeMap::new(),
            mean_run: Duration::ZERO,
            interrupted: false,
            seeds: Vec::new(),
            write_failures: Vec::new(),
        }
    }

    /// Trials where a run whose kernel never reached the runner counts as an error.
    pub fn requiring_boot(mut self) -> Trials {
        self.require_boot = true;
        self
    }

    /// Counts one finished run, `elapsed` after the trials started; returns whether it
    /// was a hit.
    pub fn record(&mut self, cell: &CellResult, target: &Target, elapsed: Duration) -> bool {
        match cell.verdict {
            Verdict::Error => {
                self.errors += 1;
                return false;
            }
            Verdict::Skip => {
                self.skipped = cell.reasons.first().cloned();
                return false;
            }
            _ if self.require_boot && cell.boot_ms.is_none() => {
                self.errors += 1;
                self.unbooted += 1;
                return false;
            }
            _ => {}
        }
        let total =
            self.mean_run.saturating_mul(self.runs) + Duration::from_millis(cell.duration_ms);
        self.runs += 1;
        self.mean_run = total / self.runs;
        let hit = target.hit(cell);
        self.seeds.push((cell.id.clone(), cell.seed, hit));
        if hit {
            self.hits += 1;
            if self.first_hit.is_none() {
                self.first_hit = Some((cell.id.clone(), cell.seed, elapsed));
            }
        }
        if let Some(fp) = &cell.fingerprint {
            self.fingerprints
                .entry(fp.id.clone())
                .or_insert_with(|| Seen {
                    title: fp.title.clone(),
                    count: 0,
                    first_cell: cell.id.clone(),
                })
                .count += 1;
        }
        hit
    }

    /// Whether more runs can teach anything: not after the first hit when that is all
    /// that was asked, and not on a kernel that skips the scenario or a setup whose
    /// every run so far (at least `slots` of them) failed to run.
    pub fn should_stop(&self, stop_at_first: bool, slots: u32) -> bool {
        if stop_at_first && self.hits > 0 {
            return true;
        }
        self.runs == 0 && (self.skipped.is_some() || self.errors >= slots.max(1))
    }
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
    fn signatures_decide_targets_they_cannot_miss() {
        let hit = |id: &str, severity, line: &str| SignatureHit {
            id: id.into(),
            severity,
            line: line.into(),
            source: kchaos_model::signature::LogSource::Kmsg,
        };
        let leak = hit(
            "unregister-netdevice",
            Severity::Fail,
            "unregister_netdevice: waiting for veth3 to become free. Usage count = 1",
        );
        let panic = hit("panic", Severity::Crash, "Kernel panic - not syncing: x");
        let init = hit("init-exited", Severity::Infra, "Attempted to kill init!");
        // (target, signature, decided)
        let cases = [
            ("any", &leak, true),
            ("fail", &leak, true),
            ("crash", &leak, false),
            ("hang", &leak, false),
            ("Unregister_Netdevice: waiting", &leak, true),
            ("unregister-netdevice", &leak, true),
            ("soft lockup", &leak, false),
            ("any", &panic, true),
            ("crash", &panic, true),
            ("fail", &panic, false),
            ("any", &init, false),
            ("init", &init, false),
        ];
        for (target, sig, want) in cases {
            assert_eq!(
                Target::parse(target).decided_by(sig),
                want,
                "{target} by {}",
                sig.line
            );
        }
    }

    #[test]
    fn recording_counts_hits_errors_skips_and_the_mean_run() {
        let mut t = Trials::new(PathBuf::new());
        let target = Target::parse("fail");
        let mut fail = test_cell("s/k/r0", Verdict::Fail, 1e6);
        fail.duration_ms = 10_000;
        let mut pass = test_cell("s/k/r1", Verdict::Pass, 1e6);
        pass.duration_ms = 20_000;
        assert!(!t.record(&pass, &target, Duration::from_secs(20)));
        assert!(!t.should_stop(true, 2));
        assert!(t.record(&fail, &target, Duration::from_secs(25)));
        assert_eq!((t.runs, t.hits), (2, 1));
        assert_eq!(t.mean_run, Duration::from_secs(15));
        assert_eq!(
            t.first_hit.as_ref().map(|h| h.2),
            Some(Duration::from_secs(25))
        );
        assert!(t.should_stop(true, 2) && !t.should_stop(false, 2));

        let mut broken = Trials::new(PathBuf::new());
        let error = test_cell("s/k/r0", Verdict::Error, 1e6);
        broken.record(&error, &target, Duration::ZERO);
        assert!(
            !broken.should_stop(false, 2),
            "one error in two slots: keep going"
        );
        broken.record(&error, &target, Duration::ZERO);
        assert!(broken.should_stop(false, 2), "nothing but errors: stop");
        let mut skipped = Trials::new(PathBuf::new());
        skipped.record(
            &test_cell("s/k/r0", Verdict::Skip, 1e6),
            &target,
            Duration::ZERO,
        );
        assert!(skipped.should_stop(false, 2));
    }

    #[test]
    fn a_kernel_that_does_not_boot_judges_nothing_when_boot_is_required() {
        let target = Target::parse("any");
        let mut crashed = test_cell("s/k/r0", Verdict::Crash, 1e6);
        crashed.boot_ms = None;
        // repro: a crash is a hit, booted or not.
        let mut repro = Trials::new(PathBuf::new());
        assert!(repro.record(&crashed, &target, Duration::ZERO));
        // bisect: a kernel that panics before the runner starts is skipped, not bad.
        let mut bisect = Trials::new(PathBuf::new()).requiring_boot();
        assert!(!bisect.record(&crashed, &target, Duration::ZERO));
        assert_eq!((bisect.runs, bisect.errors, bisect.unbooted), (0, 1, 1));
        crashed.boot_ms = Some(3000);
        assert!(bisect.record(&crashed, &target, Duration::ZERO));
        assert_eq!((bisect.runs, bisect.hits), (1, 1));
    }

    #[test]
    fn probability_and_expected_time() {
        let t = Trials {
            runs: 20,
            hits: 5,
            mean_run: Duration::from_secs(10),
            ..Trials::new(PathBuf::new())
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
