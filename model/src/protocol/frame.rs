//! Frame codec, free of I/O: `encode` produces bytes, [`FrameDecoder`] consumes whatever
//! the transport delivered and yields frames or precise complaints.
//!
//! ```text
//! magic "KCH\x01" | length: u32 LE | crc32(payload): u32 LE | payload (JSON)
//! ```
//! The magic's last byte is a control character, which JSON never contains unescaped, so
//! it cannot appear inside a payload and resynchronisation is unambiguous.

use serde::de::DeserializeOwned;
use serde::Serialize;

pub const MAGIC: [u8; 4] = *b"KCH\x01";
const HEADER: usize = 12;
/// Larger frames are refused: the biggest legitimate message is a run report.
pub const MAX_FRAME: usize = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("Message of {0} bytes exceeds the {MAX_FRAME}-byte frame limit")]
    TooLarge(usize),
    #[error("Cannot encode message")]
    Encode(#[source] serde_json::Error),
    #[error("Frame payload is not a valid message")]
    Decode(#[source] serde_json::Error),
}

/// Serialises and frames one message.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let payload = serde_json::to_vec(message).map_err(FrameError::Encode)?;
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&l| l as usize <= MAX_FRAME)
        .ok_or(FrameError::TooLarge(payload.len()))?;
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Parses a frame payload into a message.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    serde_json::from_slice(payload).map_err(FrameError::Decode)
}

/// What the decoder found in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameEvent {
    /// A complete, checksummed payload.
    Frame(Vec<u8>),
    /// Bytes that are not part of any frame were skipped.
    Garbage { bytes: usize },
    /// A frame header was found but its checksum did not match; it was skipped.
    BadChecksum { len: usize },
    /// A header announced an impossible length; it was skipped as garbage.
    Oversized { len: usize },
}

/// Incremental decoder. Feed it with [`push`](Self::push), drain it with
/// [`next_event`](Self::next_event) until it returns `None`.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    pos: usize,
}

impl FrameDecoder {
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    pub fn push(&mut self, data: &[u8]) {
        if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes received but not yet consumed (a partial frame at the end of a stream).
    pub fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn next_event(&mut self) -> Option<FrameEvent> {
        let data = &self.buf[self.pos..];
        if data.is_empty() {
            return None;
        }
        match find_magic(data) {
            Some(0) => {}
            Some(skip) => {
                self.pos += skip;
                return Some(FrameEvent::Garbage { bytes: skip });
            }
            None => {
                // Keep a tail that could be the start of a magic split across reads.
                let keep = magic_prefix_suffix(data);
                let skip = data.len() - keep;
                if skip == 0 {
                    return None;
                }
                self.pos += skip;
                return Some(FrameEvent::Garbage { bytes: skip });
            }
        }
        if data.len() < HEADER {
            return None;
        }
        let len = u32::from_le_bytes([data[4], data[5], data[6], data[7]]) as usize;
        if len > MAX_FRAME {
            self.pos += MAGIC.len();
            return Some(FrameEvent::Oversized { len });
        }
        if data.len() < HEADER + len {
            return None;
        }
        let crc = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
        let payload = &data[HEADER..HEADER + len];
        if crc32fast::hash(payload) != crc {
            // Skip only the magic: the real next frame may start inside this one.
            self.pos += MAGIC.len();
            return Some(FrameEvent::BadChecksum { len });
        }
        let frame = payload.to_vec();
        self.pos += HEADER + len;
        Some(FrameEvent::Frame(frame))
    }
}

fn find_magic(data: &[u8]) -> Option<usize> {
    data.windows(MAGIC.len()).position(|w| w == MAGIC)
}

/// Length of the longest suffix of `data` that is a proper prefix of the magic.
fn magic_prefix_suffix(data: &[u8]) -> usize {
    (1..MAGIC.len())
        .rev()
        .find(|&n| data.len() >= n && data[data.len() - n..] == MAGIC[..n])
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(d: &mut FrameDecoder) -> Vec<FrameEvent> {
        std::iter::from_fn(|| d.next_event()).collect()
    }

    fn frame(payload: &serde_json::Value) -> Vec<u8> {
        match encode(payload) {
            Ok(f) => f,
            Err(e) => unreachable!("test payloads encode: {e}"),
        }
    }

    #[test]
    fn round_trip_byte_by_byte() {
        let msg = serde_json::json!({"type": "heartbeat", "seq": 7});
        let bytes = frame(&msg);
        let mut d = FrameDecoder::new();
        let mut events = Vec::new();
        for b in &bytes {
            d.push(std::slice::from_ref(b));
            events.extend(drain(&mut d));
        }
        assert_eq!(
            events,
            vec![FrameEvent::Frame(
                serde_json::to_vec(&msg).unwrap_or_default()
            )]
        );
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn garbage_before_and_between_frames_is_reported_and_skipped() {
        let a = frame(&serde_json::json!({"n": 1}));
        let b = frame(&serde_json::json!({"n": 2}));
        let mut stream = b"noise\x00\xff".to_vec();
        stream.extend_from_slice(&a);
        stream.extend_from_slice(b"KCH"); // a torn magic
        stream.extend_from_slice(&b);
        let mut d = FrameDecoder::new();
        d.push(&stream);
        let events = drain(&mut d);
        let frames = events
            .iter()
            .filter(|e| matches!(e, FrameEvent::Frame(_)))
            .count();
        let garbage: usize = events
            .iter()
            .map(|e| match e {
                FrameEvent::Garbage { bytes } => *bytes,
                _ => 0,
            })
            .sum();
        assert_eq!(frames, 2);
        assert_eq!(garbage, 7 + 3);
    }

    #[test]
    fn corrupted_payload_fails_its_checksum_and_the_next_frame_survives() {
        let mut a = frame(&serde_json::json!({"n": 1}));
        let last = a.len() - 2;
        a[last] ^= 0x20;
        let b = frame(&serde_json::json!({"n": 2}));
        let mut d = FrameDecoder::new();
        d.push(&a);
        d.push(&b);
        let events = drain(&mut d);
        assert!(matches!(
            events.first(),
            Some(FrameEvent::BadChecksum { .. })
        ));
        assert!(matches!(events.last(), Some(FrameEvent::Frame(p)) if p == br#"{"n":2}"#));
    }

    #[test]
    fn absurd_length_is_not_waited_for() {
        let mut bogus = MAGIC.to_vec();
        bogus.extend_from_slice(&u32::MAX.to_le_bytes());
        bogus.extend_from_slice(&[0; 4]);
        let mut d = FrameDecoder::new();
        d.push(&bogus);
        assert!(matches!(d.next_event(), Some(FrameEvent::Oversized { .. })));
    }

    #[test]
    fn partial_frame_waits_for_more() {
        let a = frame(&serde_json::json!({"n": 1}));
        let mut d = FrameDecoder::new();
        d.push(&a[..a.len() - 1]);
        assert_eq!(d.next_event(), None);
        d.push(&a[a.len() - 1..]);
        assert!(matches!(d.next_event(), Some(FrameEvent::Frame(_))));
    }
}
