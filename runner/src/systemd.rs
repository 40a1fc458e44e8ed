//! The runner's side of systemd (systemd image only): system-bus connections to the
//! manager, as container runtimes hold them, and the freezer that stops PID 1.

use std::time::{Duration, Instant};

use zbus::proxy::CacheProperties;
use zbus::Connection;
use zbus_systemd::systemd1::ManagerProxy;

/// A connection to the system bus and systemd's manager on it. Properties are never
/// cached: every read is a real round trip to PID 1.
pub async fn manager() -> Result<(Connection, ManagerProxy<'static>), String> {
    let conn = Connection::system()
        .await
        .map_err(|e| format!("connect to the system bus: {e}"))?;
    let proxy = ManagerProxy::builder(&conn)
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .map_err(|e| format!("systemd manager proxy: {e}"))?;
    Ok((conn, proxy))
}

/// Waits until systemd answers on the system bus (it joins the bus only once dbus is
/// up, which can be after the runner's service started) and returns its version.
pub async fn wait_ready(timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        match manager().await {
            Ok((_conn, m)) => match m.version().await {
                Ok(v) => return Ok(v),
                Err(e) => last = format!("Version: {e}"),
            },
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "systemd did not answer on the system bus within {timeout:?} ({last})"
    ))
}

/// Freezes PID 1 through the cgroup freezer: the kernel ignores SIGSTOP for init, the
/// freezer does not. systemd then answers nothing, as in the incident.
pub fn freeze_init() -> Result<(), String> {
    let path = "/sys/fs/cgroup/init.scope/cgroup.freeze";
    std::fs::write(path, b"1").map_err(|e| format!("write {path}: {e}"))
}
