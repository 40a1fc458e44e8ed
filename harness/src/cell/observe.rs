//! What a cell has seen so far: classified kernel-log lines (and the lines themselves, to
//! fingerprint a crash), counter samples, channel corruption, notes.

use std::collections::{BTreeMap, HashSet, VecDeque};

use kchaos_model::fingerprint::{self, Fingerprint};
use kchaos_model::metrics::Series;
use kchaos_model::protocol::{KmsgRecord, RUNNER_CONSOLE_PREFIX};
use kchaos_model::signature::{LogSource, Severity, SignatureHit, SignatureSet};
use kchaos_model::units::Unit;
use kchaos_model::verdict::Observations;

/// Lines kept per log for fingerprinting; a runaway console must not eat the host.
const MAX_LINES: usize = 50_000;
const CONSOLE_TAIL: usize = 20;

/// Where the line that decided a hit is, to fingerprint the report that follows it.
#[derive(Debug, Clone, Copy)]
struct HitAt {
    source: LogSource,
    index: usize,
    severity: Severity,
}

/// Classifies what the cell's VM says and keeps it for the verdict (named apart from
/// tokio's `watch`, which the cell's I/O also uses).
#[derive(Debug)]
pub(crate) struct Observer {
    signatures: SignatureSet,
    seen_hits: HashSet<(String, String)>,
    pub obs: Observations,
    pub series: BTreeMap<String, Series>,
    units: BTreeMap<String, Unit>,
    pub notes: Vec<String>,
    console_tail: VecDeque<String>,
    pub console_lines: Vec<String>,
    kmsg_lines: Vec<String>,
    first_crash: Option<HitAt>,
    first_fail: Option<HitAt>,
    pub corrupt_bytes: usize,
    pub corrupt_first: Option<String>,
}

impl Observer {
    pub fn new(signatures: SignatureSet, units: BTreeMap<String, Unit>) -> Observer {
        Observer {
            signatures,
            seen_hits: HashSet::new(),
            obs: Observations::default(),
            series: BTreeMap::new(),
            units,
            notes: Vec::new(),
            console_tail: VecDeque::new(),
            console_lines: Vec::new(),
            kmsg_lines: Vec::new(),
            first_crash: None,
            first_fail: None,
            corrupt_bytes: 0,
            corrupt_first: None,
        }
    }

    /// Classifies a line; returns the hit if it is a new one (the same line twice, on
    /// the console and in kmsg, is one hit).
    fn classify(&mut self, line: &str, source: LogSource, index: usize) -> Option<SignatureHit> {
        let hit = self.signatures.classify(line, source)?;
        let at = HitAt {
            source,
            index,
            severity: hit.severity,
        };
        match hit.severity {
            Severity::Crash => {
                self.first_crash.get_or_insert(at);
            }
            Severity::Fail => {
                self.first_fail.get_or_insert(at);
            }
            Severity::Infra => {}
        }
        if self.seen_hits.insert((hit.id.clone(), hit.line.clone())) {
            self.obs.hits.push(hit.clone());
            return Some(hit);
        }
        None
    }

    /// Whether `line` repeats a kernel-log signature line already seen (timestamps
    /// aside): a defect that keeps printing (`unregister_netdevice: waiting for …`
    /// every 2 s) says nothing new, so it must not hold the evidence window open.
    pub fn repeats_signature(&self, line: &str) -> bool {
        self.signatures
            .classify(line, LogSource::Console)
            .is_some_and(|h| self.seen_hits.contains(&(h.id, h.line)))
    }

    /// A console line; returns the signature it carried, if new.
    pub fn console(&mut self, line: String) -> Option<SignatureHit> {
        let index = self.console_lines.len();
        // The runner's own lines are not the kernel's log.
        let hit = if line.starts_with(RUNNER_CONSOLE_PREFIX) {
            None
        } else {
            self.classify(&line, LogSource::Console, index)
        };
        self.record_console(line);
        hit
    }

    /// A console line kept as evidence but not judged: what the kernel prints after the
    /// harness made it panic is the harness's doing, not a finding.
    pub fn console_unjudged(&mut self, line: String) {
        self.record_console(line);
    }

    fn record_console(&mut self, line: String) {
        if self.console_tail.len() == CONSOLE_TAIL {
            self.console_tail.pop_front();
        }
        self.console_tail.push_back(line.clone());
        if self.console_lines.len() < MAX_LINES {
            self.console_lines.push(line);
        }
    }

    /// A `/dev/kmsg` record from the runner; returns the signature it carried, if new.
    pub fn kmsg(&mut self, record: &KmsgRecord) -> Option<SignatureHit> {
        let index = self.kmsg_lines.len();
        let hit = self.classify(&record.text, LogSource::Kmsg, index);
        if self.kmsg_lines.len() < MAX_LINES {
            self.kmsg_lines.push(record.text.clone());
        }
        hit
    }

    /// The kmsg records' text so far.
    pub fn kmsg_lines(&self) -> &[String] {
        &self.kmsg_lines
    }

    pub fn sample(&mut self, metric: String, t_ms: u64, value: f64) {
        let unit = self.units.get(&metric).copied().unwrap_or_default();
        self.series
            .entry(metric)
            .or_insert_with(|| Series::new(unit))
            .samples
            .push((t_ms, value));
    }

    pub fn corrupt(&mut self, bytes: usize, what: String) {
        self.corrupt_bytes += bytes;
        self.corrupt_first.get_or_insert(what);
    }

    /// The last console lines, for a reason that has nothing better to quote.
    pub fn tail(&self) -> String {
        let lines: Vec<&str> = self
            .console_tail
            .iter()
            .rev()
            .take(3)
            .rev()
            .map(String::as_str)
            .collect();
        if lines.is_empty() {
            "the console printed nothing".to_owned()
        } else {
            format!("last console lines: {}", lines.join(" | "))
        }
    }

    pub fn has_crash(&self) -> bool {
        self.obs.hits.iter().any(|h| h.severity != Severity::Fail)
    }

    /// The fingerprint of the report that decided the cell: the first crash, else the
    /// first failure that came with a stack.
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        let lines = |at: HitAt| match at.source {
            LogSource::Console => &self.console_lines,
            LogSource::Kmsg => &self.kmsg_lines,
        };
        if let Some(at) = self.first_crash {
            // The console usually has the whole trace; the channel may have died first.
            let fp = fingerprint::fingerprint(lines(at), at.index);
            return Some(fp);
        }
        let at = self.first_fail.filter(|a| a.severity == Severity::Fail)?;
        let fp = fingerprint::fingerprint(lines(at), at.index);
        (!fp.frames.is_empty()).then_some(fp)
    }
}
