//! What QEMU itself says about its guest, asked through its monitor: is QEMU alive (a
//! silent guest is called hung only if it is), is the guest held by a debugger, has a
//! guest started paused (`--gdb-wait`) begun to run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::vm::qmp::Qmp;
use kchaos_model::error_chain;

/// QEMU run states in which the guest is held on purpose (a gdb session, the monitor's
/// `stop`): a silent guest then is not hung.
pub(super) const STOPPED: &[&str] = &["debug", "paused"];

/// Is QEMU itself alive? Its monitor answers `query-status` unless the process is
/// stopped (SIGSTOP), wedged or gone; a stopped process is named as such. The answer is
/// QEMU's run state (`running`, `debug`, ...).
pub(super) async fn liveness(
    qmp_sock: &Path,
    pid: Option<u32>,
    timeout: Duration,
) -> Result<String, String> {
    let state = pid.and_then(process_state);
    if state == Some('T') || state == Some('t') {
        return Err("its process is stopped".to_owned());
    }
    let asked = tokio::time::timeout(timeout, async {
        let mut qmp = Qmp::connect(qmp_sock).await?;
        qmp.execute("query-status", serde_json::json!({}), timeout)
            .await
    })
    .await;
    match asked {
        Ok(Ok(status)) => Ok(run_state(&status)),
        Ok(Err(e)) => Err(format!("its monitor failed: {}", error_chain(&e))),
        Err(_) => Err(format!("its monitor did not answer within {timeout:?}")),
    }
}

/// The run state in a `query-status` answer; `running` when QEMU does not say.
fn run_state(status: &serde_json::Value) -> String {
    status
        .get("status")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("running")
        .to_owned()
}

/// Waits until QEMU, started with `-S`, runs its guest (a debugger said `continue`, or
/// the monitor `cont`), then says so. Gives up when the cell no longer listens.
pub(super) async fn watch_resume(qmp_sock: PathBuf, resumed: tokio::sync::oneshot::Sender<()>) {
    const POLL: Duration = Duration::from_millis(250);
    let mut qmp: Option<Qmp> = None;
    while !resumed.is_closed() {
        tokio::time::sleep(POLL).await;
        if qmp.is_none() {
            // QEMU may not be listening yet; try again at the next poll.
            qmp = Qmp::connect(&qmp_sock).await.ok();
        }
        let Some(q) = qmp.as_mut() else { continue };
        match q
            .execute("query-status", serde_json::json!({}), POLL * 8)
            .await
        {
            Ok(status) if run_state(&status) == "running" => {
                let _ = resumed.send(());
                return;
            }
            Ok(_) => {}
            Err(_) => qmp = None,
        }
    }
}

/// The state letter of `/proc/PID/stat` (`R`, `S`, `D`, `T`, ...).
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything; the state follows
    // the last `)`.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_state_is_read_past_the_command_name() {
        let me = std::process::id();
        assert!(matches!(process_state(me), Some('R' | 'S')));
        assert_eq!(process_state(u32::MAX), None);
    }
}
