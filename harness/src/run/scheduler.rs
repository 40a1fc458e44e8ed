//! Keeps `--jobs` VMs busy: takes cells from a queue as slots free up, hands each
//! finished cell to a sink that records it and says whether to go on. A matrix and a
//! repro's open-ended trials use the same loop, so trials refill slots as cells finish
//! instead of waiting for a batch's slowest cell.
//!
//! Exactly one result per started cell: a cell task that fails (a panic anywhere in it)
//! becomes an `error` cell with the message, never a lost cell.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kchaos_model::verdict::Verdict;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::progress::Progress;
use super::session::{Job, Session};
use crate::results::CellResult;

/// What runs one cell: the session, or a stand-in in tests.
pub trait CellRunner: Send + Sync + 'static {
    fn run_cell(
        &self,
        job: &Job,
        dir: &Path,
        progress: &Progress,
    ) -> impl Future<Output = CellResult> + Send;

    /// Flips to `true` when the user interrupts.
    fn interrupt(&self) -> watch::Receiver<bool>;
}

impl CellRunner for Session {
    fn run_cell(
        &self,
        job: &Job,
        dir: &Path,
        progress: &Progress,
    ) -> impl Future<Output = CellResult> + Send {
        Session::run_cell(self, job, dir, progress)
    }

    fn interrupt(&self) -> watch::Receiver<bool> {
        Session::interrupt(self)
    }
}

/// What the sink wants after a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Start nothing more and abandon the cells still running (their VMs are killed and
    /// their results dropped): the question is answered.
    Stop,
}

/// How the drive ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Every job ran.
    Completed,
    /// The user interrupted; running cells recorded `error: interrupted`.
    Interrupted,
    /// The sink said stop.
    Stopped,
}

/// Runs `jobs` through `session` into results directory `dir`, at most `slots` at a
/// time, handing each result to `sink` in the order they finish.
pub async fn drive<R: CellRunner>(
    session: &Arc<R>,
    slots: usize,
    jobs: impl IntoIterator<Item = Job>,
    dir: &Path,
    progress: &Arc<Progress>,
    mut sink: impl FnMut(CellResult) -> Flow,
) -> Ended {
    let slots = slots.max(1);
    let mut queue = jobs.into_iter();
    let mut tasks: JoinSet<CellResult> = JoinSet::new();
    let mut running: HashMap<tokio::task::Id, Job> = HashMap::new();
    let mut interrupt = session.interrupt();
    let mut interrupted = *interrupt.borrow();
    // Until the interrupt's sender is gone (then nobody can interrupt any more).
    let mut watching = true;
    let mut stopped = false;
    let dir: PathBuf = dir.to_path_buf();
    loop {
        while tasks.len() < slots && !interrupted && !stopped {
            let Some(job) = queue.next() else { break };
            let (session, dir, progress, cell_job) = (
                Arc::clone(session),
                dir.clone(),
                Arc::clone(progress),
                job.clone(),
            );
            let handle =
                tasks.spawn(async move { session.run_cell(&cell_job, &dir, &progress).await });
            running.insert(handle.id(), job);
        }
        if tasks.is_empty() {
            break;
        }
        tokio::select! {
            done = tasks.join_next_with_id() => {
                let result = match done {
                    None => break,
                    Some(Ok((id, cell))) => {
                        running.remove(&id);
                        cell
                    }
                    Some(Err(e)) => {
                        let job = running.remove(&e.id());
                        // Abandoned on purpose (`Flow::Stop`): not a result.
                        if e.is_cancelled() {
                            continue;
                        }
                        let Some(job) = job else { continue };
                        let why = panic_message(e);
                        tracing::error!("cell task of {} failed: {why}", job.scenario.model.name);
                        let cell = job
                            .preboot(&dir, None)
                            .result(Verdict::Error, format!("the harness failed running this cell: {why}"));
                        progress.cell(&cell.id, &cell.id).done(&cell);
                        cell
                    }
                };
                if !stopped && sink(result) == Flow::Stop {
                    stopped = true;
                    tasks.abort_all();
                }
            }
            changed = interrupt.changed(), if watching && !interrupted => {
                // Running cells see the interrupt themselves and end `interrupted`.
                match changed {
                    Ok(()) => interrupted = *interrupt.borrow(),
                    Err(_) => watching = false,
                }
            }
        }
    }
    if interrupted {
        Ended::Interrupted
    } else if stopped {
        Ended::Stopped
    } else {
        Ended::Completed
    }
}

/// What a failed task said.
fn panic_message(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let payload = e.into_panic();
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use super::*;
    use crate::results::KernelInfo;
    use crate::scenario::LoadedScenario;

    /// Passes every cell after a short while, panics on the repeats it is told to, and
    /// counts how many cells ran at once.
    struct Fake {
        panic_on: Vec<u32>,
        running: AtomicUsize,
        most: AtomicUsize,
        started: Mutex<Vec<u32>>,
        _interrupt: watch::Sender<bool>,
        rx: watch::Receiver<bool>,
    }

    impl Fake {
        fn new(panic_on: Vec<u32>) -> Arc<Fake> {
            let (tx, rx) = watch::channel(false);
            Arc::new(Fake {
                panic_on,
                running: AtomicUsize::new(0),
                most: AtomicUsize::new(0),
                started: Mutex::new(Vec::new()),
                _interrupt: tx,
                rx,
            })
        }
    }

    impl CellRunner for Fake {
        fn run_cell(
            &self,
            job: &Job,
            _dir: &Path,
            _progress: &Progress,
        ) -> impl Future<Output = CellResult> + Send {
            let job = job.clone();
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            self.started.lock().unwrap().push(job.repeat);
            let panics = self.panic_on.contains(&job.repeat);
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(
                    20 + u64::from(job.repeat % 3) * 10,
                ))
                .await;
                self.running.fetch_sub(1, Ordering::SeqCst);
                assert!(!panics, "overflow when adding durations");
                CellResult::new(
                    format!("s/k/r{}", job.repeat),
                    &job.scenario,
                    KernelInfo::of(&job.kernel, None),
                    job.seed,
                    job.repeat,
                    Verdict::Pass,
                )
            }
        }

        fn interrupt(&self) -> watch::Receiver<bool> {
            self.rx.clone()
        }
    }

    fn jobs(n: u32) -> Vec<Job> {
        let source = "[scenario]\nname = \"s\"\n[[probe]]\nkind = \"d-state\"\nname = \"d\"\n";
        let scenario = Arc::new(LoadedScenario {
            path: "s.toml".into(),
            source: source.to_owned(),
            model: kchaos_model::scenario::parse("s.toml", source).unwrap(),
        });
        (0..n)
            .map(|repeat| Job {
                scenario: Arc::clone(&scenario),
                kernel: "debian:6.1-cloud".into(),
                topology: None,
                repeat,
                repeats: n,
                seed: 1,
                until: None,
            })
            .collect()
    }

    #[tokio::test]
    async fn a_panicking_cell_becomes_an_error_cell_and_nothing_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new(vec![1, 4]);
        let progress = Arc::new(Progress::new(6));
        let mut got = Vec::new();
        let ended = drive(&fake, 2, jobs(6), dir.path(), &progress, |c| {
            got.push(c);
            Flow::Continue
        })
        .await;
        assert_eq!(ended, Ended::Completed);
        assert_eq!(got.len(), 6, "one result per cell");
        let mut repeats: Vec<u32> = got.iter().map(|c| c.repeat).collect();
        repeats.sort_unstable();
        assert_eq!(repeats, [0, 1, 2, 3, 4, 5]);
        for c in &got {
            if c.repeat == 1 || c.repeat == 4 {
                assert_eq!(c.verdict, Verdict::Error);
                assert!(
                    c.reasons[0].contains("overflow when adding durations"),
                    "{:?}",
                    c.reasons
                );
                // Written like any decided cell.
                assert!(dir
                    .path()
                    .join(c.artifacts.dir.as_deref().unwrap())
                    .join("cell.json")
                    .exists());
            } else {
                assert_eq!(c.verdict, Verdict::Pass);
            }
        }
        assert!(
            fake.most.load(Ordering::SeqCst) <= 2,
            "never more than the slots"
        );
        assert_eq!(fake.most.load(Ordering::SeqCst), 2, "slots are kept busy");
    }

    #[tokio::test]
    async fn stop_starts_nothing_more_and_drops_abandoned_cells() {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new(Vec::new());
        let progress = Arc::new(Progress::new(20));
        let mut got = 0;
        let ended = drive(&fake, 2, jobs(20), dir.path(), &progress, |_| {
            got += 1;
            if got == 3 {
                Flow::Stop
            } else {
                Flow::Continue
            }
        })
        .await;
        assert_eq!(ended, Ended::Stopped);
        assert_eq!(got, 3, "nothing recorded after the stop");
        assert!(
            fake.started.lock().unwrap().len() <= 4,
            "{:?}",
            fake.started.lock().unwrap()
        );
    }
}
