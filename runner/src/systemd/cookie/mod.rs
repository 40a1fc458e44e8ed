//! Cookie fast-forward: moves systemd's sd-bus cookie on its system-bus connection to a
//! chosen value, as the incident's engineers did with gdb on PID 1, so that a flood of
//! minutes crosses `0xffffffff` instead of waiting the months (2^32 messages) a node
//! took. Time compression, as `watchdog_thresh` is for lockups.
//!
//! Why the system bus: the incident's runtimes (runc via go-systemd) talked to systemd
//! through dbus-daemon, and the cookie that overflowed was PID 1's on that connection,
//! the one every client's requests and every job signal go through. Its private socket
//! (`/run/systemd/private`) gives each client a fresh `sd_bus` whose cookie starts at 1.
//!
//! How, without symbols: the word is found by what it does (see [`locate`]): the serial
//! of each of systemd's replies (dbus-daemon forwards it unchanged) equals the cookie
//! just used, so the one aligned heap word that follows the serials over rounds is it.
//! Right next to it in `struct sd_bus` sits `read_counter`, which counts incoming
//! messages and so moves in step with the replies to our pings: every round also sends
//! pings that expect no reply, which move that counter (and any other count of
//! incoming messages) but not the cookie.
//! PID 1 is then frozen (cgroup freezer), the word checked again and written, PID 1
//! thawed, and one more reply must carry the next serial after the written value. Any
//! step that does not hold is an error naming it: a fast-forward that did not happen
//! never lets the flood pass as if it had.

pub mod locate;
pub mod memory;

use std::time::Duration;

use nix::unistd::Pid;
use zbus::Connection;

use self::locate::{Located, Round};
use self::memory::{Frozen, MemoryError};

/// Messages systemd may seal between its reply and our read of its memory (other
/// clients, signals). Rounds move the serial further than this, twice over, before a
/// location counts.
const SLACK: u32 = 16;
/// Pings per round: the serial moves past the slack every round.
const BURST: u32 = SLACK + 1;
/// Pings per round that expect no reply: counters of incoming messages move this much
/// further than the cookie, out of its window.
const UNANSWERED: u32 = 4 * SLACK;
/// Rounds before several survivors count as ambiguous.
const MAX_ROUNDS: u32 = 12;
/// How long one call to systemd may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long PID 1 may take to stop once frozen.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);
/// How far the cookie may have moved between the last round and the freeze.
const DRIFT: u32 = 4096;

/// What the fast-forward did, for the results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastForward {
    /// The cookie as found, just before the write.
    pub before: u64,
    /// The value written.
    pub start: u32,
    /// Where in PID 1 the cookie lives.
    pub address: u64,
    /// Rounds it took to single it out.
    pub rounds: u32,
    /// The serial of the first reply after the write.
    pub verified_serial: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum CookieError {
    #[error("Ping to systemd failed")]
    Ping(#[source] zbus::Error),
    #[error("systemd did not answer a Ping within {0:?}")]
    PingTimeout(Duration),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error("Cannot find PID 1's cgroup in /proc/1/cgroup")]
    NoCgroup(#[source] std::io::Error),
    #[error("No word in PID 1's heap followed the serials of systemd's replies (round {rounds}, last serial {serial:#x}): sd-bus's cookie is not where it is looked for, so it cannot be moved")]
    Lost { rounds: u32, serial: u32 },
    #[error("{count} words in PID 1's heap followed the serials of systemd's replies over {rounds} rounds ({addresses}): which is the cookie is ambiguous, so none is written")]
    Ambiguous {
        count: usize,
        rounds: u32,
        addresses: String,
    },
    #[error("The cookie word at {address:#x} held {found:#x} once PID 1 was frozen, not the serial {serial:#x} it followed: it is not written")]
    Moved {
        address: u64,
        serial: u32,
        found: u64,
    },
    #[error("systemd's cookie is already {cookie:#x}, at or past cookie_start {start:#x}: moving it back could reuse serials still awaited")]
    AlreadyPast { cookie: u64, start: u32 },
    #[error("Wrote {written:#x} to the cookie at {address:#x}, but it reads back {found:#x}")]
    NotWritten {
        address: u64,
        written: u32,
        found: u64,
    },
    #[error("Wrote {written:#x} to the cookie at {address:#x}, but systemd's next reply has serial {serial:#x}: the fast-forward did not take")]
    NotVerified {
        address: u64,
        written: u32,
        serial: u32,
    },
    #[error("The memory search failed to run")]
    Join(#[source] tokio::task::JoinError),
}

/// Moves systemd's cookie on its system-bus connection (the one `conn` reaches it
/// through) to `start`. See the module's documentation for how and why.
pub async fn fast_forward(conn: &Connection, start: u32) -> Result<FastForward, CookieError> {
    let pid = Pid::from_raw(1);
    let first = ping(conn).await?;
    let mut alive = tokio::task::spawn_blocking(move || initial_candidates(pid, first))
        .await
        .map_err(CookieError::Join)??;
    let mut rounds = 1;
    let mut serial = first;
    let address = loop {
        let spread = u64::from(serial.wrapping_sub(first));
        match locate::located(&alive, spread, SLACK, rounds, MAX_ROUNDS) {
            Located::At(address) => break address,
            Located::Lost => return Err(CookieError::Lost { rounds, serial }),
            Located::Ambiguous(found) => {
                return Err(CookieError::Ambiguous {
                    count: found.len(),
                    rounds,
                    addresses: found
                        .iter()
                        .take(8)
                        .map(|a| format!("{a:#x}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                })
            }
            Located::Narrowing(_) => {}
        }
        for _ in 0..UNANSWERED {
            ping_unanswered(conn).await?;
        }
        for _ in 0..BURST {
            serial = ping(conn).await?;
        }
        let values = alive
            .iter()
            .map(|&a| memory::read_word(pid, a).map(|v| (a, v)))
            .collect::<Result<Vec<_>, _>>()?;
        alive = locate::narrow(&Round { serial, values }, SLACK);
        rounds += 1;
    };
    let before = write(pid, address, serial, start)?;
    let verified_serial = ping(conn).await?;
    if !locate::verified(start, verified_serial, SLACK) {
        return Err(CookieError::NotVerified {
            address,
            written: start,
            serial: verified_serial,
        });
    }
    tracing::info!(
        before = format_args!("{before:#x}"),
        start = format_args!("{start:#x}"),
        address = format_args!("{address:#x}"),
        rounds,
        "moved systemd's D-Bus cookie"
    );
    Ok(FastForward {
        before,
        start,
        address,
        rounds,
        verified_serial,
    })
}

/// Every aligned word of PID 1's heap that can be the cookie after a reply with
/// `serial`.
fn initial_candidates(pid: Pid, serial: u32) -> Result<Vec<u64>, CookieError> {
    let mut found = Vec::new();
    for region in memory::regions(pid)? {
        let len = usize::try_from(region.end - region.start).unwrap_or(0);
        let bytes = memory::read(pid, region.start, len)?;
        found.extend(locate::candidates(region.start, &bytes, serial, SLACK));
    }
    Ok(found)
}

/// Freezes PID 1, checks the word still follows `serial`, writes `start`, reads it back
/// and thaws; returns the value it replaced.
fn write(pid: Pid, address: u64, serial: u32, start: u32) -> Result<u64, CookieError> {
    let _frozen = Frozen::new(init_cgroup()?, FREEZE_TIMEOUT)?;
    let before = memory::read_word(pid, address)?;
    if !locate::tracks(before, serial, DRIFT) {
        return Err(CookieError::Moved {
            address,
            serial,
            found: before,
        });
    }
    if before >= u64::from(start) {
        return Err(CookieError::AlreadyPast {
            cookie: before,
            start,
        });
    }
    memory::write_word(pid, address, u64::from(start))?;
    let found = memory::read_word(pid, address)?;
    if found != u64::from(start) {
        return Err(CookieError::NotWritten {
            address,
            written: start,
            found,
        });
    }
    Ok(before)
}

/// PID 1's cgroup directory (v2): `init.scope` under systemd.
fn init_cgroup() -> Result<std::path::PathBuf, CookieError> {
    let text = std::fs::read_to_string("/proc/1/cgroup").map_err(CookieError::NoCgroup)?;
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| {
            CookieError::NoCgroup(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no cgroup v2 line",
            ))
        })?;
    Ok(std::path::Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/')))
}

/// A `Ping` flagged NO_REPLY_EXPECTED: sd-bus reads it and sends nothing. Messages from
/// one sender arrive in order, so the next answered ping's reply comes after it.
async fn ping_unanswered(conn: &Connection) -> Result<(), CookieError> {
    let msg = zbus::Message::method_call("/org/freedesktop/systemd1", "Ping")
        .and_then(|b| b.destination("org.freedesktop.systemd1"))
        .and_then(|b| b.interface("org.freedesktop.DBus.Peer"))
        .and_then(|b| b.with_flags(zbus::message::Flags::NoReplyExpected))
        .and_then(|b| b.build(&()))
        .map_err(CookieError::Ping)?;
    tokio::time::timeout(CALL_TIMEOUT, conn.send(&msg))
        .await
        .map_err(|_| CookieError::PingTimeout(CALL_TIMEOUT))?
        .map_err(CookieError::Ping)
}

/// `org.freedesktop.DBus.Peer.Ping` to systemd; sd-bus answers it itself. Returns the
/// reply's serial: the cookie systemd sealed it with.
async fn ping(conn: &Connection) -> Result<u32, CookieError> {
    let call = conn.call_method(
        Some("org.freedesktop.systemd1"),
        "/org/freedesktop/systemd1",
        Some("org.freedesktop.DBus.Peer"),
        "Ping",
        &(),
    );
    let reply = tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| CookieError::PingTimeout(CALL_TIMEOUT))?
        .map_err(CookieError::Ping)?;
    Ok(reply.primary_header().serial_num().get())
}
