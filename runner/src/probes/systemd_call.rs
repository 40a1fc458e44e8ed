//! The `systemd-call` probe: a trivial call to systemd (reading the manager's
//! `Version`, uncached) on its own connection, timed. A call not answered within the
//! probe's timeout is an error: systemd is unresponsive, the incident's symptom.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use zbus_systemd::systemd1::ManagerProxy;

use super::ProbeState;
use crate::systemd::SystemdError;

/// One call that did not produce a latency. The messages of the two unresponsive
/// cases are what a failed cell says, so they name the symptom first.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("systemd unresponsive: no connection to the system bus within {0:?}")]
    NoConnection(Duration),
    #[error("systemd unresponsive: Version not answered within {0:?}")]
    Unanswered(Duration),
    #[error(transparent)]
    Connect(SystemdError),
    #[error("Version call failed")]
    Call(#[source] zbus::Error),
}

impl CallError {
    /// Whether the connection must be rebuilt before the next call. A call that fails
    /// outright may have broken the connection; an unanswered one says nothing about
    /// it, and the next tick asks systemd again on the same connection, as a client
    /// that keeps its bus would.
    fn drops_connection(&self) -> bool {
        match self {
            CallError::Call(_) => true,
            CallError::NoConnection(_) | CallError::Unanswered(_) | CallError::Connect(_) => false,
        }
    }
}

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
        if outcome.as_ref().is_err_and(CallError::drops_connection) {
            manager = None;
        }
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        match outcome {
            Ok(took) => st.record_latency(took),
            Err(e) => st.error(kchaos_model::error_chain(&e)),
        }
    }
}

/// One call; connects first if needed. The connection's set-up is not timed.
async fn call(
    manager: &mut Option<ManagerProxy<'static>>,
    timeout: Duration,
) -> Result<Duration, CallError> {
    let m = match manager {
        Some(m) => m,
        None => {
            let (_conn, m) = tokio::time::timeout(timeout, crate::systemd::manager())
                .await
                .map_err(|_| CallError::NoConnection(timeout))?
                .map_err(CallError::Connect)?;
            manager.insert(m)
        }
    };
    let start = Instant::now();
    match tokio::time::timeout(timeout, m.version()).await {
        Ok(Ok(_)) => Ok(start.elapsed()),
        Ok(Err(e)) => Err(CallError::Call(e)),
        Err(_) => Err(CallError::Unanswered(timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_failed_call_rebuilds_the_connection() {
        let d = Duration::from_secs(2);
        for (error, drops) in [
            (CallError::Call(zbus::Error::InvalidReply), true),
            (CallError::Unanswered(d), false),
            (CallError::NoConnection(d), false),
            (
                CallError::Connect(SystemdError::Connect(zbus::Error::InvalidReply)),
                false,
            ),
        ] {
            assert_eq!(error.drops_connection(), drops, "{error}");
        }
    }

    #[test]
    fn an_unanswered_call_names_the_symptom() {
        assert_eq!(
            CallError::Unanswered(Duration::from_secs(2)).to_string(),
            "systemd unresponsive: Version not answered within 2s"
        );
    }
}
