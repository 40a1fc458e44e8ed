//! The guest end of the control channel: a named virtio-serial port. One thread writes
//! (so heartbeats, kmsg and samples never wait on the async runtime), one reads.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kchaos_model::protocol::{self, FrameDecoder, FrameEvent, GuestMessage, HostMessage};

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("No virtio-serial port named `{name}` appeared within {waited:?} (is CONFIG_VIRTIO_CONSOLE loaded? /sys/class/virtio-ports has: {seen})")]
    PortNotFound {
        name: String,
        waited: Duration,
        seen: String,
    },
    #[error("Cannot open control port {path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot start the channel thread")]
    Thread(#[source] std::io::Error),
}

/// Waits for the port driver to probe and returns its device node.
pub fn find_port(name: &str, timeout: Duration) -> Result<PathBuf, ChannelError> {
    let start = Instant::now();
    let mut seen = String::new();
    loop {
        if let Ok(entries) = std::fs::read_dir("/sys/class/virtio-ports") {
            seen.clear();
            for entry in entries.filter_map(Result::ok) {
                let port_name =
                    std::fs::read_to_string(entry.path().join("name")).unwrap_or_default();
                let dev = Path::new("/dev").join(entry.file_name());
                seen.push_str(&format!(
                    "{}={} ",
                    entry.file_name().to_string_lossy(),
                    port_name.trim()
                ));
                if port_name.trim() == name && dev.exists() {
                    return Ok(dev);
                }
            }
        }
        if start.elapsed() > timeout {
            return Err(ChannelError::PortNotFound {
                name: name.to_owned(),
                waited: timeout,
                seen: if seen.is_empty() {
                    "nothing".into()
                } else {
                    seen
                },
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

enum WriterCmd {
    Send(Box<GuestMessage>),
    Flush(mpsc::Sender<()>),
    /// The session is over: stop writing (the port goes away during power-off).
    Shutdown,
    /// Self-test: drop everything from now on, as a stuck runner would.
    Silence,
}

/// Sends guest messages; cheap to clone, never blocks the caller.
#[derive(Clone, Debug)]
pub struct Reporter {
    tx: mpsc::Sender<WriterCmd>,
}

impl std::fmt::Debug for WriterCmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriterCmd")
    }
}

impl Reporter {
    pub fn send(&self, msg: GuestMessage) {
        // A closed channel means the writer died (host gone): nothing left to tell.
        let _ = self.tx.send(WriterCmd::Send(Box::new(msg)));
    }

    /// Waits until everything sent so far is written to the port.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(WriterCmd::Flush(tx)).is_err() {
            return false;
        }
        rx.recv_timeout(timeout).is_ok()
    }

    /// Flushes, then stops the writer; later sends are dropped silently.
    pub fn shutdown(&self, timeout: Duration) {
        self.flush(timeout);
        let _ = self.tx.send(WriterCmd::Shutdown);
    }

    /// Self-test only: the channel goes quiet for good, heartbeats included.
    pub fn silence(&self) {
        let _ = self.tx.send(WriterCmd::Silence);
    }

    pub fn note(&self, message: impl Into<String>) {
        self.send(GuestMessage::Note {
            message: message.into(),
        });
    }

    /// A reporter that drops everything, for unit tests.
    #[cfg(test)]
    pub fn discard() -> (Reporter, mpsc::Receiver<GuestMessage>) {
        let (tx, rx) = mpsc::channel();
        let (out_tx, out_rx) = mpsc::channel();
        std::thread::spawn(move || {
            while let Ok(cmd) = rx.recv() {
                match cmd {
                    WriterCmd::Send(m) => {
                        let _ = out_tx.send(*m);
                    }
                    WriterCmd::Flush(done) => {
                        let _ = done.send(());
                    }
                    WriterCmd::Shutdown | WriterCmd::Silence => return,
                }
            }
        });
        (Reporter { tx }, out_rx)
    }
}

/// Opens the port and starts the writer and reader threads. Host messages arrive on the
/// returned tokio receiver.
pub fn open(
    path: &Path,
) -> Result<(Reporter, tokio::sync::mpsc::UnboundedReceiver<HostMessage>), ChannelError> {
    let port = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| ChannelError::Open {
            path: path.display().to_string(),
            source,
        })?;
    let reader = port.try_clone().map_err(|source| ChannelError::Open {
        path: path.display().to_string(),
        source,
    })?;
    let (tx, rx) = mpsc::channel::<WriterCmd>();
    std::thread::Builder::new()
        .name("kchaos-tx".into())
        .spawn(move || write_loop(port, rx))
        .map_err(ChannelError::Thread)?;
    let (host_tx, host_rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("kchaos-rx".into())
        .spawn(move || read_loop(reader, host_tx))
        .map_err(ChannelError::Thread)?;
    Ok((Reporter { tx }, host_rx))
}

fn write_loop(mut port: File, rx: mpsc::Receiver<WriterCmd>) {
    while let Ok(cmd) = rx.recv() {
        match cmd {
            WriterCmd::Send(msg) => match protocol::encode(&*msg) {
                Ok(bytes) => {
                    if let Err(e) = port.write_all(&bytes) {
                        eprintln!("kchaos-runner: control channel write failed: {e}");
                        return;
                    }
                }
                Err(e) => eprintln!("kchaos-runner: cannot encode message: {e}"),
            },
            WriterCmd::Flush(done) => {
                let _ = port.flush();
                let _ = done.send(());
            }
            WriterCmd::Shutdown => return,
            WriterCmd::Silence => {
                // Keep the queue drained so senders never notice, but write nothing.
                while let Ok(cmd) = rx.recv() {
                    if let WriterCmd::Flush(done) = cmd {
                        let _ = done.send(());
                    }
                }
                return;
            }
        }
    }
}

fn read_loop(mut port: File, tx: tokio::sync::mpsc::UnboundedSender<HostMessage>) {
    let mut decoder = FrameDecoder::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match port.read(&mut buf) {
            // No host connected yet (or it went away): wait rather than spin.
            Ok(0) => std::thread::sleep(Duration::from_millis(20)),
            Ok(n) => {
                decoder.push(&buf[..n]);
                while let Some(event) = decoder.next_event() {
                    match event {
                        FrameEvent::Frame(payload) => {
                            match protocol::frame::decode::<HostMessage>(&payload) {
                                Ok(msg) => {
                                    if tx.send(msg).is_err() {
                                        return;
                                    }
                                }
                                Err(e) => eprintln!("kchaos-runner: undecodable host message: {e}"),
                            }
                        }
                        other => eprintln!("kchaos-runner: control channel: {other:?}"),
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("kchaos-runner: control channel read failed: {e}");
                return;
            }
        }
    }
}
