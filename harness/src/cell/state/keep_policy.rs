//! Which decided cells keep their VM for the engineer: a decision of the state machine
//! (it ends a cell in `Kept` instead of killing it), so it lives beside it, apart from
//! the keeper that holds the kept VMs on the runtime (`cell/keep.rs`).

use kchaos_model::verdict::Verdict;

/// Which cells keep their VM at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeepPolicy {
    /// Every VM is killed at its verdict (the default).
    #[default]
    Never,
    /// `--keep-on-failure`: cells that end `fail`, `crash` or `hang`.
    Failures,
    /// `--keep`: every cell whose VM is still up at its end, pass included.
    Always,
}

impl KeepPolicy {
    /// Whether a VM still up when its cell ends with `verdict` is kept.
    pub fn keeps(self, verdict: Verdict) -> bool {
        match self {
            KeepPolicy::Never => false,
            KeepPolicy::Always => true,
            KeepPolicy::Failures => verdict.is_failure(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_policy_keeps_the_verdicts_it_names() {
        use Verdict::*;
        let all = [Pass, Fail, Crash, Hang, Skip, Error];
        let kept = |policy: KeepPolicy| {
            all.iter()
                .copied()
                .filter(|v| policy.keeps(*v))
                .collect::<Vec<_>>()
        };
        assert_eq!(kept(KeepPolicy::Never), []);
        assert_eq!(kept(KeepPolicy::Failures), [Fail, Crash, Hang]);
        assert_eq!(kept(KeepPolicy::Always), all);
    }
}
