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
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    done: usize,
    verdicts: BTreeMap<Verdict, usize>,
}

impl Progress {
    pub fn new(total: usize) -> Progress {
        let bars = std::io::stderr().is_terminal().then(|| {
            let mp = MultiProgress::new();
            let overall = mp.add(ProgressBar::new(total as u64));
            overall.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} cells, ETA {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            overall.enable_steady_tick(Duration::from_millis(200));
            (mp, overall)
        });
        Progress {
            bars,
            total,
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
        let index = self.state.lock().map(|s| s.done + 1).unwrap_or(0);
        CellProgress {
            progress: self,
            bar,
            id: id.to_owned(),
            index,
            last_line: Mutex::new(Instant::now()),
        }
    }

    fn finished(&self, result: &CellResult) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.done += 1;
        *state.verdicts.entry(result.verdict).or_default() += 1;
        let counts: Vec<String> = state
            .verdicts
            .iter()
            .map(|(v, n)| format!("{v} {n}"))
            .collect();
        if let Some((_, overall)) = &self.bars {
            overall.set_position(state.done as u64);
            overall.set_message(counts.join(", "));
        }
    }

    pub fn finish(&self) {
        if let Some((mp, overall)) = &self.bars {
            overall.finish_and_clear();
            let _ = mp.clear();
        }
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
        self.progress.info(&line);
        self.progress.finished(result);
    }
}
