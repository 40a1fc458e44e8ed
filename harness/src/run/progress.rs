//! Progress on the terminal: bars when stderr is a terminal, plain lines otherwise (CI
//! logs), so a long run always says what it is doing.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use kchaos_model::protocol::Phase;
use kchaos_model::units::format_ns;
use kchaos_model::verdict::Verdict;

use crate::cell::CellUpdate;
use crate::results::CellResult;

#[derive(Debug)]
pub struct Progress {
    bars: Option<(MultiProgress, ProgressBar)>,
    total: usize,
    started_at: Instant,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Cells handed a slot so far; numbers each cell in the order it started.
    started: usize,
    done: usize,
    verdicts: BTreeMap<Verdict, usize>,
}

impl State {
    fn running(&self) -> usize {
        self.started.saturating_sub(self.done)
    }

    /// `2/6 done, 2 running, pass 1, skip 1, ETA 1m20s`. The ETA assumes the remaining
    /// cells take as long on average as the finished ones did, slots included.
    fn summary(&self, total: usize, elapsed: Duration) -> String {
        let mut parts = vec![format!("{}/{total} done", self.done)];
        if self.running() > 0 {
            parts.push(format!("{} running", self.running()));
        }
        parts.extend(self.verdicts.iter().map(|(v, n)| format!("{v} {n}")));
        if self.done > 0 && self.done < total {
            let per_cell = elapsed.as_secs_f64() / self.done as f64;
            let eta = per_cell * (total - self.done) as f64;
            parts.push(format!("ETA {}", format_eta(eta)));
        }
        parts.join(", ")
    }
}

impl Progress {
    pub fn new(total: usize) -> Progress {
        let bars = std::io::stderr().is_terminal().then(|| {
            let mp = MultiProgress::new();
            let overall = mp.add(ProgressBar::new(total as u64));
            overall.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            overall.enable_steady_tick(Duration::from_millis(200));
            (mp, overall)
        });
        Progress {
            bars,
            total,
            started_at: Instant::now(),
            state: Mutex::new(State::default()),
        }
    }

    /// A line above the bars (or on stderr).
    pub fn info(&self, text: &str) {
        match &self.bars {
            Some((mp, _)) => {
                let _ = mp.println(text);
            }
            None => eprintln!("kchaos: {text}"),
        }
    }

    pub fn cell(&self, id: &str, label: &str) -> CellProgress<'_> {
        let bar = self.bars.as_ref().map(|(mp, _)| {
            let bar = mp.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("  {spinner} {prefix}: {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(label.to_owned());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        let index = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.started += 1;
            let index = state.started;
            self.show(&state);
            index
        };
        CellProgress {
            progress: self,
            bar,
            id: id.to_owned(),
            index,
            last_line: Mutex::new(Instant::now()),
        }
    }

    /// Records a finished cell; returns the run's summary line after it.
    fn finished(&self, result: &CellResult) -> String {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.done += 1;
        *state.verdicts.entry(result.verdict).or_default() += 1;
        self.show(&state);
        state.summary(self.total, self.started_at.elapsed())
    }

    fn show(&self, state: &State) {
        if let Some((_, overall)) = &self.bars {
            overall.set_position(state.done as u64);
            overall.set_message(state.summary(self.total, self.started_at.elapsed()));
        }
    }

    pub fn finish(&self) {
        if let Some((mp, overall)) = &self.bars {
            overall.finish_and_clear();
            let _ = mp.clear();
        }
    }
}

/// `45s`, `2m05s`, `1h02m`: coarse on purpose, an ETA is an estimate.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn format_eta(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

#[derive(Debug)]
pub struct CellProgress<'a> {
    progress: &'a Progress,
    bar: Option<ProgressBar>,
    id: String,
    index: usize,
    /// When plain mode last printed a line for this cell.
    last_line: Mutex<Instant>,
}

/// Plain mode prints workload progress at most this often (CI logs stay readable).
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(10);

impl CellProgress<'_> {
    pub fn update(&self, update: &CellUpdate) {
        let text = match update {
            CellUpdate::Info(text) => {
                self.progress.info(&format!("{}: {text}", self.id));
                return;
            }
            CellUpdate::Booting => "booting".to_owned(),
            CellUpdate::Phase(p) => match p {
                Phase::Setup => "setting up".to_owned(),
                Phase::Workload => "workload running".to_owned(),
                Phase::Settle => "settling".to_owned(),
                Phase::Collect => "collecting".to_owned(),
            },
            CellUpdate::Progress {
                workload,
                done,
                total,
            } => match total {
                Some(t) => format!("{workload}: {done}/{t}"),
                None => format!("{workload}: {done}"),
            },
        };
        match &self.bar {
            Some(bar) => bar.set_message(text),
            None => {
                // Phase changes always; per-iteration progress throttled.
                let mut last = self.last_line.lock().unwrap_or_else(|p| p.into_inner());
                let is_progress = matches!(update, CellUpdate::Progress { .. });
                if !is_progress || last.elapsed() >= PLAIN_PROGRESS_EVERY {
                    *last = Instant::now();
                    eprintln!(
                        "kchaos: [{}/{}] {}: {text}",
                        self.index, self.progress.total, self.id
                    );
                }
            }
        }
    }

    pub fn done(self, result: &CellResult) {
        let line = format!(
            "[{}/{}] {}: {} ({}){}",
            self.index,
            self.progress.total,
            self.id,
            result.verdict,
            format_ns(result.duration_ms as f64 * 1e6),
            result
                .reasons
                .first()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let summary = self.progress.finished(result);
        match self.bar {
            // The bar already shows the summary.
            Some(_) => self.progress.info(&line),
            None => self.progress.info(&format!("{line}\n  [{summary}]")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_running_cells_verdicts_and_eta() {
        let mut state = State {
            started: 3,
            done: 1,
            ..State::default()
        };
        state.verdicts.insert(Verdict::Pass, 1);
        assert_eq!(
            state.summary(5, Duration::from_secs(30)),
            "1/5 done, 2 running, pass 1, ETA 2m00s"
        );
        state.done = 5;
        state.started = 5;
        assert_eq!(
            state.summary(5, Duration::from_secs(30)),
            "5/5 done, pass 1"
        );
        assert_eq!(format_eta(7322.0), "2h02m");
        assert_eq!(format_eta(9.6), "10s");
    }
}
