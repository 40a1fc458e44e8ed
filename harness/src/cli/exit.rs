//! The exit-code contract (`docs/results.md`), in one place: commands return an [`Exit`]
//! or a [`CliError`], and `main` maps them once.

use std::process::ExitCode;

use kchaos_model::verdict::Verdict;

use crate::cli::run_error;
use kchaos_harness::results::RunResults;
use kchaos_harness::run::RunError;
use kchaos_harness::scenario::LoadErrors;

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// Everything passed or was skipped; or nothing reproduced.
    Ok,
    /// A cell failed, crashed or hung; a comparison found a regression; repro hit.
    Failures,
    /// Bad arguments, scenarios, kernel specs or input files.
    Usage,
    /// The host could not run what was asked (no QEMU, a kernel that cannot be fetched,
    /// results that could not be written), and nothing failed.
    Infrastructure,
    /// Nothing could be judged (`git bisect run` skips the commit).
    CannotTest,
    /// The user interrupted.
    Interrupted,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Failures => 1,
            Exit::Usage => 2,
            Exit::Infrastructure => 3,
            Exit::CannotTest => 125,
            Exit::Interrupted => 130,
        }
    }

    /// A finished run's exit: interrupted, else any failure, else any error, else ok.
    /// Results that could not be written make it an infrastructure failure even when
    /// every cell passed: a gate must never read a run it cannot see as green.
    pub fn of_run(results: &RunResults, interrupted: bool, write_failed: bool) -> Exit {
        if interrupted {
            return Exit::Interrupted;
        }
        // A failure a known issue describes is reported, but does not fail the run.
        let failed = results
            .cells
            .iter()
            .any(|c| c.verdict.is_failure() && c.known.is_none());
        if write_failed {
            return Exit::Infrastructure;
        }
        if failed {
            Exit::Failures
        } else if results.cells.iter().any(|c| c.verdict == Verdict::Error) {
            Exit::Infrastructure
        } else {
            Exit::Ok
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code())
    }
}

/// Why a command could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line or its inputs are wrong; one line saying how.
    #[error("{0}")]
    Usage(String),
    /// Scenario files are wrong: `FILE:LINE:COL: key: message` per problem.
    #[error("{0}")]
    Scenarios(LoadErrors),
    /// The host failed us.
    #[error(transparent)]
    Infrastructure(#[from] anyhow::Error),
}

impl CliError {
    pub fn usage(text: impl Into<String>) -> CliError {
        CliError::Usage(text.into())
    }

    /// Prints the error the way its kind reads best and returns the exit code.
    pub fn report(self) -> Exit {
        match self {
            CliError::Usage(text) => {
                eprintln!("kchaos: {text}");
                Exit::Usage
            }
            CliError::Scenarios(errors) => {
                // One problem per line, starting with its location (editors jump there).
                for e in errors.0 {
                    eprintln!("{e}");
                }
                Exit::Usage
            }
            CliError::Infrastructure(e) => {
                eprintln!("kchaos: error: {e:#}");
                Exit::Infrastructure
            }
        }
    }
}

impl From<RunError> for CliError {
    fn from(e: RunError) -> CliError {
        run_error(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kchaos_harness::results::store::empty_results;

    fn results(verdicts: &[Verdict]) -> RunResults {
        let mut r = empty_results();
        for v in verdicts {
            let mut c = kchaos_harness::results::CellResult::new(
                "s/k".into(),
                &kchaos_harness::scenario::LoadedScenario {
                    path: "s.toml".into(),
                    source: String::new(),
                    model: kchaos_model::scenario::parse(
                        "s.toml",
                        "[scenario]\nname = \"s\"\n[[probe]]\nkind = \"d-state\"\nname = \"d\"\n",
                    )
                    .unwrap_or_else(|e| panic!("{e}")),
                },
                kchaos_harness::results::KernelInfo::of("k", None),
                1,
                0,
                *v,
            );
            c.repeat = 0;
            r.cells.push(c);
        }
        r
    }

    #[test]
    fn run_exit_codes_follow_the_contract() {
        use Verdict::*;
        for (verdicts, interrupted, write_failed, want) in [
            (vec![Pass, Skip], false, false, Exit::Ok),
            (vec![Pass, Fail], false, false, Exit::Failures),
            (vec![Hang, Error], false, false, Exit::Failures),
            (vec![Pass, Error], false, false, Exit::Infrastructure),
            (vec![Pass], false, true, Exit::Infrastructure),
            (vec![Fail], false, true, Exit::Infrastructure),
            (vec![Fail], true, true, Exit::Interrupted),
            (vec![], false, false, Exit::Ok),
        ] {
            assert_eq!(
                Exit::of_run(&results(&verdicts), interrupted, write_failed),
                want,
                "{verdicts:?} interrupted {interrupted} write_failed {write_failed}"
            );
        }
        assert_eq!(Exit::CannotTest.code(), 125);
    }
}
