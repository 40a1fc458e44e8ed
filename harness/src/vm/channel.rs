//! The host end of the control channel: a Unix socket QEMU connects to. A reader task
//! turns bytes into events; the cell loop keeps the write half.

use std::path::Path;
use std::time::Duration;

use kchaos_model::protocol::{self, FrameDecoder, FrameEvent, GuestMessage, HostMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixListener;
use tokio::sync::mpsc;

use kchaos_model::error_chain;

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("Cannot listen on {path}")]
    Bind {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("QEMU did not connect to the control socket within {0:?}")]
    NoConnection(Duration),
    #[error("Accepting the control connection failed")]
    Accept(#[source] std::io::Error),
    #[error("Cannot send to the guest")]
    Send(#[source] std::io::Error),
    #[error("Cannot encode a host message")]
    Encode(#[source] protocol::FrameError),
}

/// What the reader task reports.
#[derive(Debug)]
pub enum ChannelEvent {
    Message(Box<GuestMessage>),
    /// Bytes that were not a valid frame (garbage, bad checksum, bad JSON).
    Corrupt {
        bytes: usize,
        what: String,
    },
    Closed,
}

pub fn listen(path: &Path) -> Result<UnixListener, ChannelError> {
    UnixListener::bind(path).map_err(|source| ChannelError::Bind {
        path: path.display().to_string(),
        source,
    })
}

/// Waits for QEMU's connection and starts the reader task.
pub async fn accept(
    listener: &UnixListener,
    timeout: Duration,
    events: mpsc::UnboundedSender<ChannelEvent>,
) -> Result<Sender, ChannelError> {
    let (stream, _) = tokio::time::timeout(timeout, listener.accept())
        .await
        .map_err(|_| ChannelError::NoConnection(timeout))?
        .map_err(ChannelError::Accept)?;
    let (read, write) = stream.into_split();
    tokio::spawn(read_loop(read, events));
    Ok(Sender { write })
}

/// Sends host messages.
#[derive(Debug)]
pub struct Sender {
    write: OwnedWriteHalf,
}

impl Sender {
    pub async fn send(&mut self, msg: &HostMessage) -> Result<(), ChannelError> {
        let bytes = protocol::encode(msg).map_err(ChannelError::Encode)?;
        self.write
            .write_all(&bytes)
            .await
            .map_err(ChannelError::Send)
    }
}

async fn read_loop(mut read: OwnedReadHalf, events: mpsc::UnboundedSender<ChannelEvent>) {
    let mut decoder = FrameDecoder::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match read.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let pending = decoder.pending();
                if pending > 0 {
                    let _ = events.send(ChannelEvent::Corrupt {
                        bytes: pending,
                        what: "a truncated frame at the end of the stream".to_owned(),
                    });
                }
                let _ = events.send(ChannelEvent::Closed);
                return;
            }
            Ok(n) => n,
        };
        decoder.push(&buf[..n]);
        while let Some(event) = decoder.next_event() {
            let out = match event {
                FrameEvent::Frame(payload) => {
                    match protocol::frame::decode::<GuestMessage>(&payload) {
                        Ok(msg) => ChannelEvent::Message(Box::new(msg)),
                        Err(e) => ChannelEvent::Corrupt {
                            bytes: payload.len(),
                            what: format!("an undecodable message ({})", error_chain(&e)),
                        },
                    }
                }
                FrameEvent::Garbage { bytes } => ChannelEvent::Corrupt {
                    bytes,
                    what: "bytes outside any frame".to_owned(),
                },
                FrameEvent::BadChecksum { len } => ChannelEvent::Corrupt {
                    bytes: len,
                    what: "a frame with a bad checksum".to_owned(),
                },
                FrameEvent::Oversized { len } => ChannelEvent::Corrupt {
                    bytes: 4,
                    what: format!("a frame header announcing {len} bytes"),
                },
            };
            if events.send(out).is_err() {
                return;
            }
        }
    }
}
