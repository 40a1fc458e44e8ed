//! A session: what every cell of one `kchaos` invocation shares, each prepared once —
//! QEMU and its accelerator, each kernel (resolved on first use), the guest runner
//! (located or built when the first cell boots), the image cache, the user's interrupt.
//! A matrix, a repro's trials, every step of a bisection run their cells through one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kchaos_images::pvh::BootKernel;
use kchaos_images::{Cache, Kernel, KernelError};
use kchaos_model::scenario::WorkloadSpec;
use kchaos_model::topology::Topology;
use kchaos_model::verdict::Verdict;
use tokio::sync::{watch, OnceCell};

use super::progress::Progress;
use crate::analysis::reproduction::Target;
use crate::cell::preboot::Preboot;
use crate::cell::{self, requirements, CellEnv, CellSpec, DumpPolicy, Gdb, KeepPolicy, Keeper};
use crate::results::CellResult;
use crate::scenario::LoadedScenario;
use crate::vm::runner::{self, RunnerBinError, RunnerBinary};
use crate::vm::{self, image, AccelChoice, AccelDecision, Qemu, QemuError};
use kchaos_model::error_chain;

/// How the session's VMs are run: the options every command that boots shares.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub accel: AccelChoice,
    /// A runner binary to use instead of locating or building one.
    pub runner: Option<PathBuf>,
    /// The runner's log level in the guest console.
    pub guest_log: Option<String>,
    pub boot_timeout: Option<Duration>,
    /// Dump guest memory of crashed or hung guests (`--dump-memory`).
    pub dump: Option<DumpPolicy>,
    /// Which decided cells keep their VM up for debugging (`--keep-on-failure`, `--keep`).
    pub keep: KeepPolicy,
    /// QEMU's gdb stub on every cell (`--gdb`), the guest waiting for the debugger
    /// before it boots (`--gdb-wait`).
    pub gdb: Option<GdbWait>,
    /// VMs at once.
    pub jobs: usize,
    pub cache: Cache,
    /// Run every cell to its end even once a kernel-log signature has decided it
    /// fails (`--full-duration`); by default the cell collects its evidence and ends.
    pub full_duration: bool,
}

impl SessionOptions {
    /// `jobs` VMs at once, with kchaos's defaults for the rest: the best accelerator
    /// QEMU offers, the runner located or built, no dumps, no debugger, no VM kept, a
    /// cell ended once a signature decides it. Callers change what their command asks
    /// for.
    pub fn new(cache: Cache, jobs: usize) -> SessionOptions {
        SessionOptions {
            accel: AccelChoice::Auto,
            runner: None,
            guest_log: None,
            boot_timeout: None,
            dump: None,
            keep: KeepPolicy::Never,
            gdb: None,
            jobs,
            cache,
            full_duration: false,
        }
    }
}

/// `--gdb`: whether the guest waits for the debugger before booting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GdbWait(pub bool);

/// Why no VM can boot in this session; recorded on every cell.
#[derive(Debug, thiserror::Error)]
pub enum InfraError {
    #[error(transparent)]
    Qemu(#[from] QemuError),
    #[error(transparent)]
    Cache(#[from] kchaos_images::cache::CacheError),
}

/// QEMU and the accelerator it runs with.
#[derive(Debug, Clone)]
pub struct Infra {
    pub qemu: Qemu,
    pub accel: AccelDecision,
}

/// Why a kernel or the runner could not be prepared; shared by every cell that needs it.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Runner(#[from] RunnerBinError),
    #[error("{what} failed unexpectedly: {why}")]
    Task { what: &'static str, why: String },
}

type Prepared<T> = Result<Arc<T>, Arc<PrepareError>>;
type KernelCell = Arc<OnceCell<Prepared<Kernel>>>;
type VmlinuxCell = Arc<OnceCell<Result<PathBuf, String>>>;
type BootCell = Arc<OnceCell<Result<BootKernel, String>>>;

#[derive(Debug)]
pub struct Session {
    pub opts: SessionOptions,
    infra: Result<Infra, Arc<InfraError>>,
    /// One entry per kernel spec, resolved when its first cell needs it.
    kernels: Mutex<HashMap<String, KernelCell>>,
    runner: OnceCell<Prepared<RunnerBinary>>,
    /// One image build at a time: two cells wanting the same new image build it once.
    image_lock: tokio::sync::Mutex<()>,
    interrupt: watch::Receiver<bool>,
    /// The VMs kept for debugging, up to one per slot, until the user interrupts.
    keeper: Arc<Keeper>,
    /// Each kernel's debug vmlinux for `--gdb`, located (or downloaded) once.
    vmlinux: Mutex<HashMap<String, VmlinuxCell>>,
    /// Each kernel's file for QEMU (its PVH ELF or bzImage), chosen once: finding it
    /// reads and hashes the whole bzImage.
    boot: Mutex<HashMap<String, BootCell>>,
}

/// One cell to run.
#[derive(Debug, Clone)]
pub struct Job {
    pub scenario: Arc<LoadedScenario>,
    /// The kernel as asked.
    pub kernel: String,
    /// The column of a topology axis this cell runs (its scenario already has that
    /// topology as its VM's); `None` off any axis.
    pub topology: Option<Topology>,
    pub repeat: u32,
    /// Repeats planned (the id names the repeat when there are several).
    pub repeats: u32,
    pub seed: u64,
    /// The outcome the run stops at (trials, replay): a kernel-log signature that
    /// decides it ends the cell at once. `None` for a matrix run.
    pub until: Option<Target>,
}

impl Job {
    /// The cell as a pre-boot decision would record it.
    pub fn preboot<'a>(&'a self, dir: &'a Path, kernel: Option<&'a Kernel>) -> Preboot<'a> {
        Preboot {
            dir,
            scenario: &self.scenario,
            spec: &self.kernel,
            kernel,
            topology: self.topology,
            seed: self.seed,
            repeat: self.repeat,
            repeats: self.repeats,
        }
    }
}

impl Session {
    /// Finds QEMU and decides the accelerator (probing KVM in bounded time), and starts
    /// listening for Ctrl-C and SIGTERM. A missing QEMU is no error here: every cell
    /// records it.
    pub async fn open(opts: SessionOptions) -> Session {
        let infra = prepare_infra(&opts).await.map_err(Arc::new);
        Session::with_infra(opts, infra)
    }

    /// A session on `infra` as found (or why there is none); needs a tokio runtime for
    /// its interrupt listener.
    pub(crate) fn with_infra(
        opts: SessionOptions,
        infra: Result<Infra, Arc<InfraError>>,
    ) -> Session {
        Session {
            infra,
            kernels: Mutex::new(HashMap::new()),
            runner: OnceCell::new(),
            image_lock: tokio::sync::Mutex::new(()),
            interrupt: interrupt_signal(),
            keeper: Arc::new(Keeper::new(opts.jobs)),
            vmlinux: Mutex::new(HashMap::new()),
            boot: Mutex::new(HashMap::new()),
            opts,
        }
    }

    /// Waits until the VMs kept for debugging are released: the user interrupts
    /// (Ctrl-C) or ends them from their monitor. Call after the results are written;
    /// returns at once when none is kept.
    pub async fn wait_kept(&self) {
        let kept = self.keeper.kept();
        if kept == 0 {
            return;
        }
        eprintln!(
            "kchaos: {kept} VM{} kept for debugging (see above how to reach {}); results are written; press Ctrl-C to end {}",
            if kept == 1 { "" } else { "s" },
            if kept == 1 { "it" } else { "them" },
            if kept == 1 { "it" } else { "them" },
        );
        self.keeper.wait().await;
    }

    /// What the session runs with (QEMU, accelerator, slots), or why no VM can boot:
    /// the line every command that boots prints first.
    pub fn describe(&self) -> String {
        match self.infra() {
            Ok(i) => {
                let jobs = self.opts.jobs;
                format!(
                    "kchaos: QEMU {} with {} ({}), {jobs} VM{} at once",
                    i.qemu.version,
                    i.accel.accel.as_str(),
                    i.accel.reason,
                    if jobs == 1 { "" } else { "s" }
                )
            }
            Err(e) => format!("kchaos: no VM can boot: {}", error_chain(e)),
        }
    }

    /// The VMs kept for debugging (the scope's tests keep one).
    #[cfg(test)]
    pub(crate) fn keeper(&self) -> &Keeper {
        &self.keeper
    }

    pub fn infra(&self) -> Result<&Infra, &InfraError> {
        self.infra.as_ref().map_err(AsRef::as_ref)
    }

    /// The user's interrupt: flips to `true` on Ctrl-C or SIGTERM.
    pub fn interrupt(&self) -> watch::Receiver<bool> {
        self.interrupt.clone()
    }

    pub fn interrupted(&self) -> bool {
        *self.interrupt.borrow()
    }

    /// A kernel, resolved (downloaded, unpacked) once per spec for the whole session.
    pub async fn kernel(&self, spec: &str, progress: &Progress) -> Prepared<Kernel> {
        let cell = {
            let mut kernels = self.kernels.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(kernels.entry(spec.to_owned()).or_default())
        };
        cell.get_or_init(|| async {
            progress.info(&format!("preparing kernel {spec}"));
            let cache = self.opts.cache.clone();
            let owned = spec.to_owned();
            let resolved =
                match tokio::task::spawn_blocking(move || kchaos_images::resolve(&cache, &owned))
                    .await
                {
                    Ok(r) => r.map_err(PrepareError::from),
                    Err(e) => Err(PrepareError::Task {
                        what: "preparing the kernel",
                        why: e.to_string(),
                    }),
                };
            match resolved {
                Ok(k) => {
                    progress.info(&format!("kernel {spec} is {} ({})", k.resolved, k.release));
                    Ok(Arc::new(k))
                }
                Err(e) => Err(Arc::new(e)),
            }
        })
        .await
        .clone()
    }

    /// The symbols of `kernel` for gdb (the same lookup as `kchaos analyze`: Debian's
    /// `-dbg` package, about 300 MB, downloaded once; a local build's vmlinux), or why
    /// there are none. Once per kernel for the whole session.
    async fn debug_vmlinux(
        &self,
        kernel: &Arc<Kernel>,
        progress: &Progress,
    ) -> Result<PathBuf, String> {
        let cell = {
            let mut all = self.vmlinux.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(all.entry(kernel.resolved.clone()).or_default())
        };
        cell.get_or_init(|| async {
            progress.info(&format!(
                "locating the debug vmlinux of {} for gdb (a Debian kernel's -dbg package is about 300 MB, downloaded once)",
                kernel.resolved
            ));
            let (cache, k) = (self.opts.cache.clone(), Arc::clone(kernel));
            match tokio::task::spawn_blocking(move || crate::analysis::crash::debug_vmlinux(&k, &cache)).await {
                Ok(found) => found.map_err(|e| e.detail),
                Err(e) => Err(format!("locating it failed unexpectedly: {e}")),
            }
        })
        .await
        .clone()
    }

    /// The file QEMU boots for `kernel` ([`image::boot_kernel`]), once per kernel.
    async fn boot_kernel(&self, kernel: &Arc<Kernel>) -> Result<BootKernel, String> {
        let cell = {
            let mut all = self.boot.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(all.entry(kernel.resolved.clone()).or_default())
        };
        cell.get_or_init(|| async {
            let (cache, k) = (self.opts.cache.clone(), Arc::clone(kernel));
            match tokio::task::spawn_blocking(move || image::boot_kernel(&cache, &k)).await {
                Ok(found) => found.map_err(|e| error_chain(&e)),
                Err(e) => Err(format!("choosing the kernel file to boot failed: {e}")),
            }
        })
        .await
        .clone()
    }

    /// The guest runner, located (or built) when the first cell needs to boot: a
    /// session whose cells are all skipped or lack a kernel never waits for a build.
    async fn runner(&self, progress: &Progress) -> Prepared<RunnerBinary> {
        self.runner
            .get_or_init(|| async {
                progress.info("preparing the guest runner");
                let explicit = self.opts.runner.clone();
                match tokio::task::spawn_blocking(move || runner::locate(explicit.as_deref())).await
                {
                    Ok(r) => r.map(Arc::new).map_err(|e| Arc::new(e.into())),
                    Err(e) => Err(Arc::new(PrepareError::Task {
                        what: "preparing the guest runner",
                        why: e.to_string(),
                    })),
                }
            })
            .await
            .clone()
    }

    /// Runs one cell into results directory `dir`: its kernel, requirements, image,
    /// then the VM. Never fails: every problem becomes the cell's verdict.
    pub async fn run_cell(&self, job: &Job, dir: &Path, progress: &Progress) -> CellResult {
        let decided = |r: CellResult| {
            progress.cell(&r.id, &r.id).done(&r);
            r
        };
        let infra = match &self.infra {
            Ok(i) => i,
            Err(e) => {
                return decided(
                    job.preboot(dir, None)
                        .result(Verdict::Error, error_chain(e.as_ref())),
                )
            }
        };
        let kernel = match self.kernel(&job.kernel, progress).await {
            Ok(k) => k,
            Err(e) => {
                return decided(
                    job.preboot(dir, None)
                        .result(Verdict::Error, error_chain(e.as_ref())),
                )
            }
        };
        let pre = job.preboot(dir, Some(&kernel));
        let scenario = &job.scenario;
        let mut notes = match requirements::check(&scenario.model, &kernel) {
            Ok(notes) => notes,
            Err(reason) => return decided(pre.result(Verdict::Skip, reason)),
        };
        // Cells that break the guest on purpose say so, whatever their verdict.
        for w in &scenario.model.workloads {
            if let WorkloadSpec::Selftest(t) = &w.spec {
                notes.push(t.describe());
            }
        }
        let runner = match self.runner(progress).await {
            Ok(r) => r,
            Err(e) => return decided(pre.result(Verdict::Error, error_chain(e.as_ref()))),
        };
        let boot = match self.boot_kernel(&kernel).await {
            Ok(b) => b,
            Err(e) => return decided(pre.result(Verdict::Error, e)),
        };
        let kind = scenario.model.vm.image;
        let built = {
            let _one_build_at_a_time = self.image_lock.lock().await;
            let (cache, k, r, s) = (
                self.opts.cache.clone(),
                Arc::clone(&kernel),
                Arc::clone(&runner),
                Arc::clone(scenario),
            );
            tokio::task::spawn_blocking(move || {
                image::image_for(&cache, &k, &boot, &r.bytes, &s.model)
            })
            .await
        };
        let image = match built {
            Ok(Ok(image)) => image,
            Ok(Err(e)) => {
                return decided(pre.result(
                    Verdict::Error,
                    format!("building the {kind} image: {}", error_chain(&e)),
                ))
            }
            Err(e) => {
                return decided(pre.result(
                    Verdict::Error,
                    format!("building the {kind} image failed: {e}"),
                ))
            }
        };
        let id = pre.id();
        let spec = CellSpec {
            id: id.clone(),
            scenario: Arc::clone(scenario),
            kernel: Arc::clone(&kernel),
            image,
            seed: job.seed,
            topology: job.topology,
            repeat: job.repeat,
            results_dir: dir.to_path_buf(),
            dir: dir.join(&id),
        };
        let env = CellEnv {
            qemu: infra.qemu.clone(),
            accel: infra.accel.accel,
            cancel: self.interrupt(),
            guest_log: self.opts.guest_log.clone(),
            boot_timeout: self.opts.boot_timeout,
            dump: self.opts.dump,
            until: job.until.clone(),
            keep: self.opts.keep,
            full_duration: self.opts.full_duration,
            keeper: Arc::clone(&self.keeper),
            gdb: match self.opts.gdb {
                Some(GdbWait(wait)) => Some(Gdb {
                    wait,
                    vmlinux: self.debug_vmlinux(&kernel, progress).await,
                }),
                None => None,
            },
        };
        let cell_progress = progress.cell(&id, &id);
        let mut result = cell::run(&spec, &env, &|u| cell_progress.update(&u)).await;
        result.notes.splice(0..0, notes);
        cell_progress.done(&result);
        result
    }
}

async fn prepare_infra(opts: &SessionOptions) -> Result<Infra, InfraError> {
    let qemu = Qemu::find()?;
    let accel_dir = opts.cache.dir("accel")?;
    let accel = vm::detect_accel(&qemu, opts.accel, &accel_dir).await;
    Ok(Infra { qemu, accel })
}

/// A seed for runs that did not fix one (recorded in the results, so replayable).
pub fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut bytes);
    }
    u64::from_le_bytes(bytes) >> 1
}

/// Ctrl-C or SIGTERM flips the returned flag; running cells abort their VM and record
/// `error: interrupted`, finished cells stay recorded.
fn interrupt_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("kchaos: interrupted; stopping the running cells (and kept VMs), keeping finished results");
        let _ = tx.send(true);
        // Keep the flag's sender alive: a dropped sender is not an interruption.
        std::future::pending::<()>().await;
    });
    rx
}
