//! The runner's side of systemd (systemd image only): system-bus connections to the
//! manager, as container runtimes hold them, and the freezer that stops PID 1.

pub mod cookie;

use std::time::{Duration, Instant};

use zbus::proxy::CacheProperties;
use zbus::Connection;
use zbus_systemd::systemd1::ManagerProxy;

/// Why the runner could not talk to systemd. The session gives up on `NotReady`; the
/// probe and the flood tell a bus that is gone from a systemd that does not answer.
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error("Cannot connect to the system bus")]
    Connect(#[source] zbus::Error),
    #[error("Cannot build a proxy for systemd's manager")]
    Proxy(#[source] zbus::Error),
    #[error("systemd's manager did not answer `Version`")]
    Version(#[source] zbus::Error),
    #[error("systemd did not answer on the system bus within {timeout:?}")]
    NotReady {
        timeout: Duration,
        /// The last attempt's error, if any attempt finished at all.
        #[source]
        last: Option<Box<SystemdError>>,
    },
    #[error("Cannot freeze PID 1: writing 1 to {path} failed")]
    Freeze {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// A connection to the system bus and systemd's manager on it. Properties are never
/// cached: every read is a real round trip to PID 1.
pub async fn manager() -> Result<(Connection, ManagerProxy<'static>), SystemdError> {
    let conn = Connection::system().await.map_err(SystemdError::Connect)?;
    let proxy = ManagerProxy::builder(&conn)
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .map_err(SystemdError::Proxy)?;
    Ok((conn, proxy))
}

/// Waits until systemd answers on the system bus (it joins the bus only once dbus is
/// up, which can be after the runner's service started) and returns its version.
pub async fn wait_ready(timeout: Duration) -> Result<String, SystemdError> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    while Instant::now() < deadline {
        match manager().await {
            Ok((_conn, m)) => match m.version().await {
                Ok(v) => return Ok(v),
                Err(e) => last = Some(SystemdError::Version(e)),
            },
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(SystemdError::NotReady {
        timeout,
        last: last.map(Box::new),
    })
}

/// Freezes PID 1 through the cgroup freezer: the kernel ignores SIGSTOP for init, the
/// freezer does not. systemd then answers nothing, as in the incident.
pub fn freeze_init() -> Result<(), SystemdError> {
    let path = "/sys/fs/cgroup/init.scope/cgroup.freeze";
    std::fs::write(path, b"1").map_err(|source| SystemdError::Freeze { path, source })
}
