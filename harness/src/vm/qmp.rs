//! A minimal QMP client: QEMU's JSON monitor protocol over a Unix socket. kchaos uses it
//! to collect evidence from a guest that stopped answering: sysrq keys (handled by the
//! guest kernel in interrupt context, so they work on a wedged guest) and a dump of guest
//! memory for `crash`.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("Cannot connect to QEMU's monitor at {path}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("QEMU's monitor did not answer within {0:?}")]
    Timeout(Duration),
    #[error("QEMU's monitor closed the connection")]
    Closed,
    #[error("QEMU's monitor connection failed")]
    Io(#[source] std::io::Error),
    #[error("QEMU's monitor sent something that is not JSON")]
    Json(#[source] serde_json::Error),
    #[error("QEMU refused `{command}`: {message}")]
    Refused { command: String, message: String },
}

#[derive(Debug)]
pub struct Qmp {
    read: tokio::io::Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
}

impl Qmp {
    /// Connects, reads the greeting and enters command mode.
    pub async fn connect(path: &Path) -> Result<Qmp, QmpError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| QmpError::Connect {
                path: path.display().to_string(),
                source,
            })?;
        let (read, write) = stream.into_split();
        let mut qmp = Qmp {
            read: BufReader::new(read).lines(),
            write,
        };
        let _greeting = qmp.next(Duration::from_secs(5)).await?;
        qmp.execute("qmp_capabilities", json!({}), Duration::from_secs(5))
            .await?;
        Ok(qmp)
    }

    async fn next(&mut self, timeout: Duration) -> Result<Value, QmpError> {
        let line = tokio::time::timeout(timeout, self.read.next_line())
            .await
            .map_err(|_| QmpError::Timeout(timeout))?
            .map_err(QmpError::Io)?;
        serde_json::from_str(&line.ok_or(QmpError::Closed)?).map_err(QmpError::Json)
    }

    /// Runs a command and returns its `return` value; asynchronous events in between are
    /// skipped.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Value,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        let mut request = json!({ "execute": command });
        if arguments.as_object().is_some_and(|a| !a.is_empty()) {
            request["arguments"] = arguments;
        }
        let mut line = request.to_string();
        line.push('\n');
        self.write
            .write_all(line.as_bytes())
            .await
            .map_err(QmpError::Io)?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let reply = self.next(left).await?;
            if let Some(ret) = reply.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = reply.get("error") {
                let message = err
                    .get("desc")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error")
                    .to_owned();
                return Err(QmpError::Refused {
                    command: command.to_owned(),
                    message,
                });
            }
        }
    }

    /// Alt+SysRq+`key` on the guest's keyboard.
    pub async fn sysrq(&mut self, key: char) -> Result<(), QmpError> {
        let keys = json!([{"type": "qcode", "data": "alt"}, {"type": "qcode", "data": "sysrq"}, {"type": "qcode", "data": key.to_string()}]);
        self.execute("send-key", json!({ "keys": keys }), Duration::from_secs(5))
            .await
            .map(|_| ())
    }

    /// A non-maskable interrupt on every vCPU (x86). With `unknown_nmi_panic` the guest
    /// kernel panics on it, wherever its CPUs were, even with interrupts off.
    pub async fn inject_nmi(&mut self) -> Result<(), QmpError> {
        self.execute("inject-nmi", json!({}), Duration::from_secs(5))
            .await
            .map(|_| ())
    }

    /// Writes guest memory to `path` as a zlib-compressed kdump file, which the `crash`
    /// utility reads. Blocks until QEMU has finished.
    pub async fn dump_memory(&mut self, path: &Path, timeout: Duration) -> Result<(), QmpError> {
        let args = json!({ "paging": false, "protocol": format!("file:{}", path.display()), "format": "kdump-zlib" });
        self.execute("dump-guest-memory", args, timeout)
            .await
            .map(|_| ())
    }
}
