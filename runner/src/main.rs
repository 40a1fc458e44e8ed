//! kchaos-runner: the guest agent. PID 1 of a disposable kchaos VM (or its systemd
//! service): mounts, loads modules, opens the control channel, runs what the host sends,
//! reports, powers off.

mod agent;
mod boot;
mod cpus;
mod histogram;
mod keep;
mod kfile;
mod limits;
mod link;
mod metrics;
mod netns;
mod pin;
mod probes;
mod spawn;
mod systemd;
mod workloads;

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use kchaos_model::protocol::{CONTROL_PORT_NAME, RUNNER_CONSOLE_PREFIX};

pub const VERSION: &str = kchaos_model::VERSION;
/// The child that only exists to be adopted by a transient scope (`systemd-units`).
pub const HOLD_SUBCOMMAND: &str = "__hold";

/// The kchaos guest agent. Runs as PID 1 of a kchaos VM; refuses to run anywhere else.
#[derive(Debug, Parser)]
#[command(name = "kchaos-runner", version = VERSION)]
struct Cli {
    /// Run although this is not a kchaos VM. The scenarios churn cgroups, network
    /// devices and systemd units: this can wreck the machine.
    #[arg(long)]
    force_outside_vm: bool,
    /// Run as a service under an existing init (the systemd image) instead of as PID 1.
    #[arg(long)]
    service: bool,
    /// Words of the kernel command line the kernel itself does not know (`nokaslr`,
    /// which only the decompressor reads): the kernel hands them to init as arguments.
    /// They are not the runner's; refusing them would stop the VM before it began.
    #[arg(hide = true, num_args = 0.., allow_hyphen_values = true)]
    kernel_leftovers: Vec<String>,
}

fn main() -> ExitCode {
    let entered_ms = link::heartbeat::uptime_ms();
    let args: Vec<OsString> = std::env::args_os().collect();
    // The process a transient scope adopts (systemd-units): runs until stdin closes.
    if args.get(1).and_then(|a| a.to_str()) == Some(HOLD_SUBCOMMAND) {
        spawn::cfs_worker::wait_for_eof(std::io::stdin());
        return ExitCode::SUCCESS;
    }
    let pid1 = std::process::id() == 1;
    if pid1 {
        // /proc is needed to read the command line for the safety check.
        if let Err(e) = boot::mounts::proc_only() {
            eprintln!("kchaos-runner: {e}");
        }
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let marker = boot::safety::has_marker(&cmdline);
    let cli = Cli::parse();
    init_tracing(&cmdline);
    if !cli.kernel_leftovers.is_empty() {
        tracing::debug!(words = ?cli.kernel_leftovers, "kernel command line words passed to init");
    }
    let situation = boot::safety::Situation {
        pid1,
        service: cli.service,
        marker,
    };
    let allowed = boot::safety::check(situation, cli.force_outside_vm);
    // The zygote every child process is forked from must be a copy of the runner while
    // it is single-threaded: before the module loader, the tracing subscriber, tokio.
    let zygote = allowed.is_ok().then(spawn::start_zygote);
    // Module loading is the longest step of the boot (signature checks under TCG) and
    // needs nothing else mounted: once this is known to be a kchaos VM, start it,
    // overlapping everything up to the control port.
    let modules = (pid1 && marker).then(|| std::thread::spawn(boot::modules::load_all));
    init_tracing(&cmdline);
    if let Some(Err(e)) = zygote {
        // Workloads that need child processes will report it; the rest can run.
        eprintln!("kchaos-runner: {}", kchaos_model::error_chain(&e));
    }
    if let Err(why) = allowed {
        eprintln!("kchaos-runner: refusing to run: {why}");
        if pid1 {
            power_off();
        }
        return ExitCode::from(2);
    }
    if pid1 || cli.service {
        install_panic_hook();
    }
    let result = run(pid1, &cmdline, entered_ms, modules);
    if let Err(e) = &result {
        eprintln!("kchaos-runner: {e:#}");
    }
    if pid1 || cli.service {
        power_off();
    }
    if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

type ModuleLoad =
    std::thread::JoinHandle<Result<Vec<(String, Duration)>, boot::modules::ModuleLoadError>>;

fn run(
    pid1: bool,
    cmdline: &str,
    entered_ms: u64,
    modules: Option<ModuleLoad>,
) -> anyhow::Result<()> {
    let uptime = link::heartbeat::uptime_ms;
    tracing::debug!(uptime_ms = uptime(), entered_ms, "runner started");
    if pid1 {
        boot::mounts::early().context("mounting the early filesystems")?;
    }
    keep::init(cmdline);
    let loaded = match modules {
        Some(handle) => handle
            .join()
            .map_err(|_| anyhow::anyhow!("the module loader panicked"))?,
        None => boot::modules::load_all(),
    }
    .context("loading kernel modules")?;
    for (module, took) in &loaded {
        tracing::debug!(
            module = module.rsplit('/').next().unwrap_or(module),
            took_ms = took.as_millis(),
            "module"
        );
    }
    tracing::debug!(
        uptime_ms = uptime(),
        loaded = loaded.len(),
        "modules loaded"
    );
    let port_name = cmdline_option(cmdline, "port").unwrap_or(CONTROL_PORT_NAME);
    let port = link::channel::find_port(port_name, Duration::from_secs(20))?;
    tracing::debug!(uptime_ms = uptime(), port = %port.display(), "control port found");
    let (reporter, inbox) = link::channel::open(&port)?;
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    reporter.send(agent::hello(release));
    link::heartbeat::spawn(reporter.clone()).context("starting the heartbeat thread")?;
    if let Err(e) = link::kmsg::spawn(reporter.clone()) {
        reporter.note(format!(
            "cannot read /dev/kmsg ({e}); the kernel log comes from the console only"
        ));
    }
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    // Under systemd the unified hierarchy is already mounted.
    let cgroups_mounted = !pid1;
    let outcome = runtime.block_on(agent::session(reporter.clone(), inbox, cgroups_mounted));
    reporter.shutdown(Duration::from_secs(5));
    outcome.map_err(Into::into)
}

/// `kchaos.<name>=<value>` from the kernel command line.
fn cmdline_option<'a>(cmdline: &'a str, name: &str) -> Option<&'a str> {
    cmdline.split_whitespace().find_map(|p| {
        p.strip_prefix("kchaos.")?
            .strip_prefix(name)?
            .strip_prefix('=')
    })
}

fn init_tracing(cmdline: &str) {
    let level = cmdline_option(cmdline, "log").unwrap_or("warn");
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| ConsoleWriter)
        .with_ansi(false)
        .with_target(false)
        .without_time()
        .try_init();
}

/// The runner's log lines on the console (stderr), each with the prefix that tells the
/// harness they are not the kernel's. The formatter hands over one event per write.
struct ConsoleWriter;

impl std::io::Write for ConsoleWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let mut out = String::with_capacity(buf.len() + 32);
        for line in text.split_inclusive('\n') {
            out.push_str(RUNNER_CONSOLE_PREFIX);
            out.push_str(line.trim_start());
        }
        std::io::stderr().write_all(out.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// As PID 1, a panic must not become "Attempted to kill init" (which the host would read
/// as a kernel crash); as the service, it must not leave the VM idling until the host's
/// timeout. Either way: report it on the console and power off.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(move |info| {
        eprintln!("{RUNNER_CONSOLE_PREFIX}panic: {info}; powering off");
        power_off();
    }));
}

fn power_off() {
    nix::unistd::sync();
    // Only returns on failure; nothing better to do then than exit.
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: `--gdb` boots with `nokaslr`, which the kernel passes to init as an
    /// argument; the runner exited with a usage error and the guest panicked.
    #[test]
    fn kernel_words_passed_to_init_are_ignored() {
        let cli = Cli::try_parse_from(["/init", "nokaslr", "-x"]).unwrap();
        assert_eq!(cli.kernel_leftovers, ["nokaslr", "-x"]);
        assert!(!cli.service);
        assert!(Cli::try_parse_from(["/init", "--service"]).unwrap().service);
    }

    #[test]
    fn cmdline_options_are_prefixed() {
        let cmdline = "console=ttyS0 kchaos.vm=1 kchaos.log=debug kchaos.port=x.y";
        assert_eq!(cmdline_option(cmdline, "log"), Some("debug"));
        assert_eq!(cmdline_option(cmdline, "port"), Some("x.y"));
        assert_eq!(cmdline_option(cmdline, "seed"), None);
    }
}
