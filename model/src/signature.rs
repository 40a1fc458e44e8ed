//! Kernel-log signatures: the lines that decide a run whatever the control channel says.
//! Classification is pure so the console reader (host) and tests share it.

use std::fmt;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::scenario::SignaturePolicy;

/// What a signature does to the cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// A non-fatal kernel problem: the cell fails.
    Fail,
    /// The kernel is dead or dying: the cell is a crash.
    Crash,
    /// kchaos's own agent (PID 1) exited: an infrastructure error, not a kernel verdict.
    Infra,
}

/// Where a line was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSource {
    /// The serial console, read by the host: survives a dead guest.
    Console,
    /// `/dev/kmsg` forwarded by the runner over the control channel.
    Kmsg,
}

/// A classified kernel-log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureHit {
    /// Short stable id, e.g. `soft-lockup`, or `custom` for scenario-defined ones.
    pub id: String,
    pub severity: Severity,
    /// The line, without its timestamp.
    pub line: String,
    pub source: LogSource,
}

impl fmt::Display for SignatureHit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kernel log [{}]: {}", self.id, self.line)
    }
}

/// The built-in signatures, most specific first: the first match names the line.
const BUILTIN: &[(&str, Severity, &str)] = &[
    ("init-exited", Severity::Infra, r"Attempted to kill init"),
    ("panic", Severity::Crash, r"Kernel panic - not syncing"),
    ("soft-lockup", Severity::Fail, r"BUG: soft lockup"),
    (
        "hard-lockup",
        Severity::Fail,
        r"(?i)watchdog detected hard lockup",
    ),
    (
        "rcu-stall",
        Severity::Fail,
        r"rcu_\w+ (self-detected stall|detected stalls?)|rcu: INFO: .*detected stall",
    ),
    (
        "hung-task",
        Severity::Fail,
        r"INFO: task \S+ blocked for more than \d+ seconds",
    ),
    ("oops", Severity::Crash, r"\bOops: "),
    (
        "bug-crash",
        Severity::Crash,
        r"BUG: unable to handle|BUG: kernel NULL pointer dereference|kernel BUG at |general protection fault",
    ),
    ("bug", Severity::Fail, r"\bBUG: "),
    ("warning", Severity::Fail, r"^WARNING: |\] WARNING: "),
    (
        "slub-alloc-failure",
        Severity::Fail,
        r"SLUB: Unable to allocate memory",
    ),
    (
        "page-alloc-failure",
        Severity::Fail,
        r"page allocation failure",
    ),
    (
        "unregister-netdevice",
        Severity::Fail,
        r"unregister_netdevice: waiting for \S+ to become free",
    ),
    ("ref-tracker", Severity::Fail, r"ref_tracker: "),
];

#[derive(Debug, Clone)]
struct Rule {
    id: String,
    severity: Severity,
    regex: Regex,
}

/// A compiled signature policy.
#[derive(Debug, Clone)]
pub struct SignatureSet {
    ignore: Vec<Regex>,
    rules: Vec<Rule>,
}

impl SignatureSet {
    /// Compiles the policy. Scenario regexes were checked at validation, so an error here
    /// means the model was built by hand with a bad one.
    pub fn new(policy: &SignaturePolicy) -> Result<SignatureSet, regex::Error> {
        let mut rules = Vec::new();
        // Scenario-defined signatures are more specific than the built-ins, so they win.
        for (list, severity) in [
            (&policy.crash, Severity::Crash),
            (&policy.fail, Severity::Fail),
        ] {
            for pattern in list {
                rules.push(Rule {
                    id: "custom".to_owned(),
                    severity,
                    regex: Regex::new(pattern)?,
                });
            }
        }
        if policy.defaults {
            for &(id, severity, pattern) in BUILTIN {
                rules.push(Rule {
                    id: id.to_owned(),
                    severity,
                    regex: Regex::new(pattern)?,
                });
            }
        } else if let Some(&(id, severity, pattern)) = BUILTIN.first() {
            // The runner exiting is never a kernel verdict; keep recognising it.
            rules.push(Rule {
                id: id.to_owned(),
                severity,
                regex: Regex::new(pattern)?,
            });
        }
        let ignore = policy
            .ignore
            .iter()
            .map(|p| Regex::new(p))
            .collect::<Result<_, _>>()?;
        Ok(SignatureSet { ignore, rules })
    }

    /// Classifies one line (console or kmsg). Timestamps are stripped first.
    pub fn classify(&self, line: &str, source: LogSource) -> Option<SignatureHit> {
        let text = strip_log_prefix(line);
        if text.is_empty() || self.ignore.iter().any(|r| r.is_match(text)) {
            return None;
        }
        let rule = self.rules.iter().find(|r| r.regex.is_match(text))?;
        Some(SignatureHit {
            id: rule.id.clone(),
            severity: rule.severity,
            line: text.to_owned(),
            source,
        })
    }
}

/// Removes the console's `[   12.345678] ` timestamp (and a `[    T1] ` caller id) so
/// console and kmsg copies of one line compare equal.
pub fn strip_log_prefix(line: &str) -> &str {
    let mut text = line.trim_end_matches(['\r', '\n']);
    for _ in 0..2 {
        let trimmed = text.trim_start();
        if let Some(rest) = trimmed.strip_prefix('[') {
            if let Some(end) = rest.find(']') {
                let inner = rest[..end].trim();
                let is_stamp = !inner.is_empty()
                    && (inner.chars().all(|c| c.is_ascii_digit() || c == '.')
                        || (inner.starts_with(['T', 'C'])
                            && inner[1..].chars().all(|c| c.is_ascii_digit())));
                if is_stamp {
                    text = rest[end + 1..]
                        .strip_prefix(' ')
                        .unwrap_or(&rest[end + 1..]);
                    continue;
                }
            }
        }
        break;
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> SignatureSet {
        match SignatureSet::new(&SignaturePolicy::default()) {
            Ok(s) => s,
            Err(e) => unreachable!("built-in signatures must compile: {e}"),
        }
    }

    fn id(line: &str) -> Option<String> {
        set().classify(line, LogSource::Console).map(|h| h.id)
    }

    #[test]
    fn incident_signatures_are_named() {
        // Lines as the kernel prints them (6.1 / 6.12 formats), each with the signature
        // that must name it (`None`: no signature).
        #[rustfmt::skip]
        let cases: &[(Option<&str>, &str)] = &[
            (Some("panic"),                "[   42.000000] Kernel panic - not syncing: sysrq triggered crash"),
            (Some("soft-lockup"),          "[   10.1] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [kworker/0:1:12]"),
            (Some("hard-lockup"),          "[  5.0] NMI watchdog: Watchdog detected hard LOCKUP on cpu 1"),
            (Some("rcu-stall"),            "[ 60.0] rcu: INFO: rcu_preempt self-detected stall on CPU"),
            (Some("rcu-stall"),            "[ 60.0] rcu: INFO: rcu_sched detected stalls on CPUs/tasks:"),
            (Some("hung-task"),            "[120.0] INFO: task kworker/u2:1:35 blocked for more than 120 seconds."),
            (Some("oops"),                 "[  1.0] Oops: 0002 [#1] PREEMPT SMP NOPTI"),
            (Some("bug-crash"),            "[  1.0] BUG: kernel NULL pointer dereference, address: 0000000000000000"),
            (Some("warning"),              "[  1.0] WARNING: CPU: 0 PID: 1 at mm/slub.c:1234 foo+0x1/0x2"),
            (Some("slub-alloc-failure"),   "SLUB: Unable to allocate memory on node -1, gfp=0x8020(GFP_ATOMIC)"),
            (Some("page-alloc-failure"),   "kworker/0:1: page allocation failure: order:0, mode:0x20"),
            (Some("unregister-netdevice"), "unregister_netdevice: waiting for eth0 to become free. Usage count = 1"),
            (Some("init-exited"),          "[ 3.0] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100"),
            (None,                         "[  0.5] Run /init as init process"),
            (None,                         "random WARNING: text in the middle"),
        ];
        for (want, line) in cases {
            assert_eq!(id(line).as_deref(), *want, "{line}");
        }
    }

    #[test]
    fn scenario_signatures_and_ignores_take_precedence() -> Result<(), regex::Error> {
        let policy = SignaturePolicy {
            defaults: true,
            crash: vec!["my driver exploded".to_owned()],
            fail: vec![],
            ignore: vec!["WARNING: .* at drivers/noisy".to_owned()],
        };
        let set = SignatureSet::new(&policy)?;
        let hit = set.classify("my driver exploded at 3", LogSource::Kmsg);
        assert_eq!(
            hit.map(|h| (h.id, h.severity)),
            Some(("custom".to_owned(), Severity::Crash))
        );
        assert_eq!(
            set.classify(
                "WARNING: CPU: 0 PID: 1 at drivers/noisy/x.c:1",
                LogSource::Kmsg
            ),
            None
        );
        Ok(())
    }

    #[test]
    fn console_prefixes_are_stripped() {
        assert_eq!(strip_log_prefix("[   12.345678] hello"), "hello");
        assert_eq!(
            strip_log_prefix("[   12.345678][    T1] hello\r\n"),
            "hello"
        );
        assert_eq!(
            strip_log_prefix("[not a stamp] hello"),
            "[not a stamp] hello"
        );
    }
}
