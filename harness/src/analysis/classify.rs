//! The gate: what a candidate (a kernel, or a run) means for CI against a baseline, per
//! scenario, in KernelCI's classes (`kci-dev results compare`): regression, fixed,
//! unstable, persistent failure, new, missing — plus known (every failure triaged) and
//! pass — with the ecosystem's exit contract: 0 nothing new, 1 a policy violation (a
//! regression or an untriaged failure), 3 infrastructure incomplete (cells missing or
//! `error`). Pure: the cells come in already triaged (`CellResult::known`).

use std::collections::BTreeMap;

use kchaos_model::verdict::Verdict;
use serde::Serialize;

use crate::results::CellResult;

/// What happened to a scenario between baseline and candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    /// Passed before, fails now.
    Regression,
    /// Fails now, in some repeats and not others.
    Unstable,
    /// Failed before and fails now, untriaged.
    PersistentFailure,
    /// Not on the baseline.
    New,
    /// On the baseline, absent (or never judged) on the candidate.
    Missing,
    /// Every candidate cell is `error` or absent: nothing could be judged.
    Incomplete,
    /// Every failure matches a known issue.
    Known,
    /// Failed before, passes now.
    Fixed,
    Pass,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Regression => "regression",
            Class::Unstable => "unstable",
            Class::PersistentFailure => "persistent-failure",
            Class::New => "new",
            Class::Missing => "missing",
            Class::Incomplete => "incomplete",
            Class::Known => "known",
            Class::Fixed => "fixed",
            Class::Pass => "pass",
        }
    }
}

/// Verdict counts of one side of one scenario.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub pass: usize,
    /// Failures (fail, crash, hang) not matched by a known issue.
    pub untriaged: usize,
    /// Failures matched by a known issue.
    pub known: usize,
    pub skip: usize,
    pub error: usize,
}

impl Counts {
    pub fn of<'a>(cells: impl IntoIterator<Item = &'a CellResult>) -> Counts {
        let mut c = Counts::default();
        for cell in cells {
            match cell.verdict {
                Verdict::Pass => c.pass += 1,
                Verdict::Skip => c.skip += 1,
                Verdict::Error => c.error += 1,
                Verdict::Fail | Verdict::Crash | Verdict::Hang => {
                    if cell.known.is_some() {
                        c.known += 1;
                    } else {
                        c.untriaged += 1;
                    }
                }
            }
        }
        c
    }

    pub fn failures(&self) -> usize {
        self.untriaged + self.known
    }

    /// Cells that said something about the kernel.
    pub fn judged(&self) -> usize {
        self.pass + self.failures() + self.skip
    }

    pub fn text(&self) -> String {
        let mut parts = Vec::new();
        for (n, what) in [
            (self.pass, "pass"),
            (self.untriaged, "fail"),
            (self.known, "known"),
            (self.skip, "skip"),
            (self.error, "error"),
        ] {
            if n > 0 {
                parts.push(format!("{what} {n}"));
            }
        }
        if parts.is_empty() {
            "no cells".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// One scenario's class (on one topology, when the runs had a topology axis).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GateRow {
    pub scenario: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topology: Option<String>,
    pub class: Class,
    pub baseline: Option<Counts>,
    pub candidate: Counts,
    /// The known issues the candidate's failures matched.
    pub known: Vec<String>,
}

/// Classifies one scenario from its verdict counts (`baseline` `None`: not there).
pub fn classify(baseline: Option<Counts>, candidate: Counts) -> Class {
    if candidate.judged() == 0 {
        return match baseline {
            Some(b) if b.judged() > 0 && candidate.error == 0 => Class::Missing,
            _ => Class::Incomplete,
        };
    }
    let Some(base) = baseline.filter(|b| b.judged() > 0) else {
        return if candidate.untriaged > 0 {
            Class::New
        } else if candidate.known > 0 {
            Class::Known
        } else {
            Class::New
        };
    };
    if candidate.untriaged > 0 {
        if candidate.pass > 0 {
            Class::Unstable
        } else if base.failures() == 0 {
            Class::Regression
        } else {
            Class::PersistentFailure
        }
    } else if candidate.known > 0 {
        Class::Known
    } else if base.untriaged > 0 {
        Class::Fixed
    } else {
        Class::Pass
    }
}

/// The gate's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GateExit {
    /// Nothing new.
    Ok,
    /// A regression or an untriaged failure.
    Violation,
    /// Cells missing or in error: the answer is incomplete.
    Incomplete,
}

/// Every scenario's class, and the gate.
#[derive(Debug, Clone, Serialize)]
pub struct Gate {
    pub baseline: Option<String>,
    pub candidate: String,
    pub rows: Vec<GateRow>,
    pub exit: GateExit,
}

/// Classifies every scenario of the candidate (and those only the baseline has).
pub fn gate(baseline: Option<(&str, &[&CellResult])>, candidate: (&str, &[&CellResult])) -> Gate {
    // Per scenario and topology: a baseline and a candidate are matched per topology.
    let group = |cells: &[&CellResult]| {
        let mut map: BTreeMap<(String, Option<String>), Vec<CellResult>> = BTreeMap::new();
        for c in cells {
            map.entry(c.column()).or_default().push((*c).clone());
        }
        map
    };
    let cand = group(candidate.1);
    let base = baseline.map(|(_, cells)| group(cells));
    let mut scenarios: Vec<(String, Option<String>)> = cand.keys().cloned().collect();
    if let Some(b) = &base {
        scenarios.extend(b.keys().filter(|s| !cand.contains_key(*s)).cloned());
    }
    scenarios.sort();
    let mut rows = Vec::new();
    for scenario in scenarios {
        let cand_cells = cand.get(&scenario).map(Vec::as_slice).unwrap_or_default();
        let counts = Counts::of(cand_cells);
        let base_counts = base
            .as_ref()
            .and_then(|b| b.get(&scenario))
            .map(|cells| Counts::of(cells.iter()));
        let mut known: Vec<String> = cand_cells
            .iter()
            .filter_map(|c| c.known.as_ref().map(|k| k.id.clone()))
            .collect();
        known.sort();
        known.dedup();
        let (scenario, topology) = scenario;
        rows.push(GateRow {
            class: classify(base_counts, counts),
            scenario,
            topology,
            baseline: base_counts,
            candidate: counts,
            known,
        });
    }
    let violation = rows.iter().any(|r| {
        matches!(
            r.class,
            Class::Regression | Class::Unstable | Class::PersistentFailure
        ) || (r.class == Class::New && r.candidate.untriaged > 0)
    });
    let incomplete = rows
        .iter()
        .any(|r| matches!(r.class, Class::Missing | Class::Incomplete) || r.candidate.error > 0);
    Gate {
        baseline: baseline.map(|(name, _)| name.to_owned()),
        candidate: candidate.0.to_owned(),
        // A failure found is an answer even when other cells are missing: it wins.
        exit: if violation {
            GateExit::Violation
        } else if incomplete {
            GateExit::Incomplete
        } else {
            GateExit::Ok
        },
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pass: usize, untriaged: usize, known: usize, error: usize) -> Counts {
        Counts {
            pass,
            untriaged,
            known,
            skip: 0,
            error,
        }
    }

    #[test]
    fn classes_follow_the_verdicts_on_both_sides() {
        let ok = counts(3, 0, 0, 0);
        let failing = counts(0, 3, 0, 0);
        for (base, cand, want) in [
            (Some(ok), failing, Class::Regression),
            (Some(ok), counts(2, 1, 0, 0), Class::Unstable),
            (Some(failing), failing, Class::PersistentFailure),
            (Some(failing), ok, Class::Fixed),
            (Some(ok), ok, Class::Pass),
            (Some(ok), counts(0, 0, 3, 0), Class::Known),
            (Some(failing), counts(1, 0, 2, 0), Class::Known),
            (None, failing, Class::New),
            (None, ok, Class::New),
            (Some(ok), counts(0, 0, 0, 0), Class::Missing),
            (Some(ok), counts(0, 0, 0, 3), Class::Incomplete),
            (None, counts(0, 0, 0, 2), Class::Incomplete),
        ] {
            assert_eq!(classify(base, cand), want, "{base:?} -> {cand:?}");
        }
    }

    #[test]
    fn the_gate_fails_on_violations_before_incompleteness() {
        use crate::results::test_cell;
        let pass = test_cell("a/k", Verdict::Pass, 1e6);
        let fail = test_cell("b/k", Verdict::Fail, 1e6);
        let mut known_fail = test_cell("c/k", Verdict::Fail, 1e6);
        known_fail.known = Some(crate::analysis::known::KnownMatch {
            id: "bug-1".into(),
            link: "https://x".into(),
        });
        let error = test_cell("d/k", Verdict::Error, 1e6);
        let base = [
            &pass,
            &test_cell("b/k", Verdict::Pass, 1e6),
            &test_cell("c/k", Verdict::Pass, 1e6),
            &test_cell("d/k", Verdict::Pass, 1e6),
        ];
        let g = gate(Some(("old", &base)), ("new", &[&pass, &known_fail]));
        let class = |g: &Gate, s: &str| g.rows.iter().find(|r| r.scenario == s).map(|r| r.class);
        assert_eq!(class(&g, "c"), Some(Class::Known));
        assert_eq!(class(&g, "b"), Some(Class::Missing));
        assert_eq!(g.exit, GateExit::Incomplete, "missing cells: incomplete");
        let g = gate(
            Some(("old", &base)),
            ("new", &[&pass, &fail, &known_fail, &error]),
        );
        assert_eq!(class(&g, "b"), Some(Class::Regression));
        assert_eq!(class(&g, "d"), Some(Class::Incomplete));
        assert_eq!(g.exit, GateExit::Violation);
        let g = gate(
            Some(("old", &base)),
            (
                "new",
                &[
                    &pass,
                    &known_fail,
                    &test_cell("b/k", Verdict::Pass, 1e6),
                    &test_cell("d/k", Verdict::Pass, 1e6),
                ],
            ),
        );
        assert_eq!(g.exit, GateExit::Ok, "{g:?}");
        // How this gate reads in the terminal: report::table's test of gate_table.
    }
}
