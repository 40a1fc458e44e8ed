//! The serial console: the kernel's own witness. Written to `console.log` byte for byte
//! and delivered line by line for classification, even when the control channel is dead.

use std::fs::File;
use std::io::Write;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;

#[derive(Debug)]
pub enum ConsoleEvent {
    Line(String),
    Closed,
}

pub fn spawn<R: AsyncRead + Unpin + Send + 'static>(
    stream: R,
    mut log: File,
    events: mpsc::UnboundedSender<ConsoleEvent>,
) {
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::with_capacity(256);
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    // Logging is best effort: a full disk must not stop classification.
                    let _ = log.write_all(&line);
                    let text = String::from_utf8_lossy(&line)
                        .trim_end_matches(['\r', '\n'])
                        .to_owned();
                    if events.send(ConsoleEvent::Line(text)).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = log.flush();
        let _ = events.send(ConsoleEvent::Closed);
    });
}

/// Reads a child's stderr fully into a file and returns the text (for error messages).
pub fn collect<R: AsyncRead + Unpin + Send + 'static>(
    stream: R,
    mut log: File,
) -> tokio::task::JoinHandle<String> {
    tokio::spawn(async move {
        let mut text = String::new();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        while reader.read_line(&mut line).await.is_ok_and(|n| n > 0) {
            let _ = log.write_all(line.as_bytes());
            if text.len() < 64 * 1024 {
                text.push_str(&line);
            }
            line.clear();
        }
        text
    })
}
