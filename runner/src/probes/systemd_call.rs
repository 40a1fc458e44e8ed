//! The `systemd-call` probe: a trivial call to systemd (reading the manager's
//! `Version`, uncached) on its own connection, timed. A call not answered within the
//! probe's timeout is an error: systemd is unresponsive, the incident's symptom.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use zbus_systemd::systemd1::ManagerProxy;

use super::ProbeState;

pub async fn run(
    interval: Duration,
    timeout: Duration,
    mut stop: watch::Receiver<bool>,
    state: std::sync::Arc<Mutex<ProbeState>>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut manager: Option<ManagerProxy<'static>> = None;
    loop {
        let stopping = tokio::select! {
            _ = ticker.tick() => *stop.borrow(),
            _ = stop.changed() => true,
        };
        if stopping {
            return;
        }
        let outcome = call(&mut manager, timeout).await;
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        match outcome {
            Ok(took) => {
                st.reads += 1;
                st.latency.record(took);
            }
            Err(e) => st.error(e),
        }
    }
}

/// One call; (re)connects first if needed. The connection's set-up is not timed.
async fn call(
    manager: &mut Option<ManagerProxy<'static>>,
    timeout: Duration,
) -> Result<Duration, String> {
    if manager.is_none() {
        let connected = tokio::time::timeout(timeout, crate::systemd::manager())
            .await
            .map_err(|_| format!("systemd unresponsive: no connection within {timeout:?}"))??;
        *manager = Some(connected.1);
    }
    let Some(m) = manager.as_ref() else {
        return Err("no connection".to_owned());
    };
    let start = Instant::now();
    match tokio::time::timeout(timeout, m.version()).await {
        Ok(Ok(_)) => Ok(start.elapsed()),
        Ok(Err(e)) => {
            // A broken connection is rebuilt on the next tick.
            *manager = None;
            Err(format!("Version: {e}"))
        }
        Err(_) => Err(format!(
            "systemd unresponsive: Version not answered within {timeout:?}"
        )),
    }
}
