//! The one way a command that boots runs (`run`, `repro`, `replay`, `bisect`,
//! `detect`): a runtime, a session opened on it and described, the command's work, and
//! at the end, however that work ended (finished, interrupted, failed), a wait for the
//! VMs kept for debugging. Each command once did this itself, and one (`detect`)
//! forgot the wait: its kept VMs died with the process the moment it returned.

use std::sync::Arc;

use tokio::runtime::Runtime;

use super::session::{Session, SessionOptions};

/// The async runtime could not start (no threads, no file descriptors left).
#[derive(Debug, thiserror::Error)]
#[error("Cannot start the async runtime")]
pub struct RuntimeError(#[source] pub std::io::Error);

/// The one async runtime a command needs (several threads: cells run in parallel).
pub fn runtime() -> Result<Runtime, RuntimeError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(RuntimeError)
}

/// Opens a session with `opts`, prints what it runs with, runs `body` on it, then
/// waits for the VMs `body`'s cells kept (see [`run_then_release`]).
pub fn with_session<T>(
    opts: SessionOptions,
    body: impl FnOnce(&Runtime, &Arc<Session>) -> T,
) -> Result<T, RuntimeError> {
    let rt = runtime()?;
    let session = Arc::new(rt.block_on(Session::open(opts)));
    eprintln!("{}", session.describe());
    Ok(run_then_release(&rt, &session, body))
}

/// Runs `body`, then, whatever it returned, waits until the kept VMs are released:
/// `body` writes every result first, so results never wait for a debugging session,
/// and a kept VM is never killed by the command returning under it.
fn run_then_release<T>(
    rt: &Runtime,
    session: &Arc<Session>,
    body: impl FnOnce(&Runtime, &Arc<Session>) -> T,
) -> T {
    let out = body(rt, session);
    rt.block_on(session.wait_kept());
    out
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use kchaos_images::Cache;

    use super::*;
    use crate::cell::KeepPolicy;
    use crate::run::session::InfraError;
    use crate::vm::QemuError;

    /// A session that boots nothing: no QEMU (the scope's wait does not need one).
    fn session(rt: &Runtime, cache: &std::path::Path) -> Arc<Session> {
        let opts = SessionOptions {
            keep: KeepPolicy::Failures,
            ..SessionOptions::new(Cache::new(cache.to_path_buf()), 1)
        };
        let infra = Err(Arc::new(InfraError::Qemu(QemuError::NotFound {
            name: "qemu-system-x86_64".to_owned(),
        })));
        let _guard = rt.enter();
        Arc::new(Session::with_infra(opts, infra))
    }

    /// The `detect --keep-on-failure` bug: a command that returned without waiting
    /// ended the process, and its kept VMs with it, before the engineer could look.
    #[test]
    fn the_scope_ends_only_when_the_kept_vms_are_released() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime().unwrap();
        // An early return (an interruption, an error) waits like a finished command.
        for early in [false, true] {
            let session = session(&rt, dir.path());
            let released = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&released);
            let out: Result<u32, &str> = run_then_release(&rt, &session, |rt, s| {
                // As a cell does it, from within the runtime.
                let _in_runtime = rt.enter();
                s.keeper().admit().map_err(|_| "no room")?;
                s.keeper().hold(async move {
                    // The engineer is done with the VM a little later.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    flag.store(true, Ordering::SeqCst);
                });
                if early {
                    return Err("interrupted");
                }
                Ok(7)
            });
            assert_eq!(out, if early { Err("interrupted") } else { Ok(7) });
            assert!(
                released.load(Ordering::SeqCst),
                "the command ended while its VM was still kept (early return: {early})"
            );
            assert_eq!(session.keeper().kept(), 0);
        }
    }
}
