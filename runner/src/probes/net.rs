//! The `net-latency` probe: round trips over loopback, timed by a client, the symptom of
//! incident 1b (TCP handshakes of 100 ms+ on a node whose CPU sat in the kernel reading
//! `memory.stat`). Native sockets: no `ping` or `curl` to spawn, whose start-up under
//! TCG (~7 ms a fork+exec) would be most of what is measured.
//!
//! With `cpu`, loopback's receive processing is steered to that CPU (RPS, as a NIC's
//! interrupts are steered to one) and the server runs there; the client, on
//! `client_cpu`, plays the remote peer. A packet then waits whenever that CPU cannot take
//! the interrupt that starts its processing, as the incident's packets waited in the
//! NIC's queue.
//!
//! A round trip is what the kernel timed, as `ping` reports it: for a handshake the
//! RTT sample the SYN-ACK gave (`TCP_INFO`), for an echo the reply's receive timestamp
//! (`SO_TIMESTAMPNS`) less the time it was sent. The client's own wake-up afterwards,
//! on a CPU the incident did not touch (and under TCG a few milliseconds of vCPU
//! scheduling), is not part of it; when the kernel gave no time, the client's is used.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::io::IoSliceMut;
use std::os::fd::AsRawFd;

use kchaos_model::scenario::{NetLatency, NetMode};
use nix::sys::socket::{self, sockopt, ControlMessageOwned, MsgFlags};
use nix::sys::time::TimeSpec;
use nix::time::{clock_gettime, ClockId};
use rtnetlink::LinkUnspec;

use super::pinned::{lock, pace};
use super::ProbeState;
use crate::kfile::{self, KernelFileError};
use crate::pin::pin_current_thread;

/// Where `lo`'s receive processing is steered.
const RPS_CPUS: &str = "/sys/class/net/lo/queues/rx-0/rps_cpus";
/// How long the echo server waits for a datagram before it looks at its stop flag.
const SERVER_POLL: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum NetProbeError {
    #[error("Cannot bring the loopback device up: {0}")]
    LoopbackUp(String),
    #[error("Cannot steer loopback's receive processing to CPU {cpu} (RPS)")]
    Steer {
        cpu: u32,
        #[source]
        source: KernelFileError,
    },
    #[error("Cannot open the probe's {what} socket")]
    Socket {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot start the probe's {what} thread")]
    Thread {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The probe's threads; [`Running::stop`] ends them, the client first.
#[derive(Debug, Default)]
pub struct Running {
    /// Tells the client to stop; it is set, and the client joined, before the servers
    /// are told, so the client's last round trip meets a live server.
    client_stop: Arc<AtomicBool>,
    client: Option<std::thread::JoinHandle<()>>,
    /// Tells the servers (the TCP acceptor, the UDP echo) to stop.
    server_stop: Arc<AtomicBool>,
    servers: Vec<std::thread::JoinHandle<()>>,
    /// The TCP listener, which a blocked `accept` needs one more connection to leave.
    listener: Option<SocketAddr>,
}

impl Running {
    /// Stops the client, then the servers, and waits for them (blocking). In that
    /// order because a round trip the client starts while the server is going away
    /// fails (`Connection refused`, or an echo that never comes back): the probe
    /// would record its own shutdown as the kernel's error.
    pub fn stop(self) {
        self.client_stop.store(true, Ordering::Relaxed);
        if let Some(client) = self.client {
            let _ = client.join();
        }
        self.server_stop.store(true, Ordering::Relaxed);
        if let Some(addr) = self.listener {
            let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
        }
        for t in self.servers {
            let _ = t.join();
        }
    }
}

/// Starts the server and the client; a set-up failure is recorded as a probe error
/// (which fails the cell) and nothing runs.
pub async fn start(
    spec: &NetLatency,
    interval: Duration,
    epoch: Instant,
    state: Arc<Mutex<ProbeState>>,
) -> Running {
    let mut running = Running::default();
    let started = match prepare(spec).await {
        Ok(()) => start_threads(spec, interval, epoch, &state, &mut running),
        Err(e) => Err(e),
    };
    if let Err(e) = started {
        lock(&state).error(kchaos_model::error_chain(&e));
        running.stop();
        return Running::default();
    }
    running
}

/// Brings the loopback up and, with a `cpu`, steers its receive processing there
/// (RPS), so the round trips are handled on the CPU the probe watches.
async fn prepare(spec: &NetLatency) -> Result<(), NetProbeError> {
    loopback_up().await?;
    if let Some(cpu) = spec.cpu {
        kfile::write(std::path::Path::new(RPS_CPUS), &rps_mask(cpu))
            .map_err(|source| NetProbeError::Steer { cpu, source })?;
    }
    Ok(())
}

/// The server and the client, over a loopback that is up.
fn start_threads(
    spec: &NetLatency,
    interval: Duration,
    epoch: Instant,
    state: &Arc<Mutex<ProbeState>>,
    running: &mut Running,
) -> Result<(), NetProbeError> {
    let socket = |what| move |source| NetProbeError::Socket { what, source };
    let client: Box<dyn FnMut() -> Result<Duration, String> + Send> = match spec.mode {
        NetMode::Connect => {
            let listener = TcpListener::bind("127.0.0.1:0").map_err(socket("listening"))?;
            let addr = listener.local_addr().map_err(socket("listening"))?;
            running.listener = Some(addr);
            let server = spawn(
                &running.server_stop,
                "accept",
                spec.cpu,
                state,
                move |stop| {
                    accept_until(&listener, stop);
                },
            )?;
            running.servers.push(server);
            let timeout = spec.timeout;
            Box::new(move || handshake(addr, timeout))
        }
        NetMode::Echo => {
            let server = UdpSocket::bind("127.0.0.1:0").map_err(socket("echo server"))?;
            server
                .set_read_timeout(Some(SERVER_POLL))
                .map_err(socket("echo server"))?;
            let addr = server.local_addr().map_err(socket("echo server"))?;
            let echoer = spawn(&running.server_stop, "echo", spec.cpu, state, move |stop| {
                echo_until(&server, stop);
            })?;
            running.servers.push(echoer);
            let client = UdpSocket::bind("127.0.0.1:0").map_err(socket("echo client"))?;
            client.connect(addr).map_err(socket("echo client"))?;
            socket::setsockopt(&client, sockopt::ReceiveTimestampns, &true).map_err(|e| {
                NetProbeError::Socket {
                    what: "echo client",
                    source: e.into(),
                }
            })?;
            client
                .set_read_timeout(Some(spec.timeout))
                .map_err(socket("echo client"))?;
            let mut seq = 0u64;
            let timeout = spec.timeout;
            Box::new(move || {
                seq += 1;
                echo(&client, seq, timeout)
            })
        }
    };
    let mut client = client;
    let st = Arc::clone(state);
    let client = spawn(
        &running.client_stop,
        "client",
        spec.client_cpu,
        state,
        move |stop| {
            pace(interval, stop, || {
                let start = Instant::now();
                let result = client();
                let mut s = lock(&st);
                match result {
                    Ok(took) => s.latency_at(epoch, start, took),
                    Err(e) => s.error(e),
                }
            });
        },
    )?;
    running.client = Some(client);
    Ok(())
}

/// Starts one of the probe's threads, pinned to `cpu` when given, ending when `stop`
/// is set.
fn spawn(
    stop: &Arc<AtomicBool>,
    what: &'static str,
    cpu: Option<u32>,
    state: &Arc<Mutex<ProbeState>>,
    body: impl FnOnce(&AtomicBool) + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, NetProbeError> {
    let stop = Arc::clone(stop);
    let state = Arc::clone(state);
    let handle = std::thread::Builder::new()
        .name(format!("kchaos-net-{what}"))
        .spawn(move || {
            if let Some(cpu) = cpu {
                if let Err(e) = pin_current_thread(cpu) {
                    lock(&state).error(kchaos_model::error_chain(&e));
                    return;
                }
            }
            body(&stop);
        })
        .map_err(|source| NetProbeError::Thread { what, source })?;
    Ok(handle)
}

async fn loopback_up() -> Result<(), NetProbeError> {
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(|e| NetProbeError::LoopbackUp(e.to_string()))?;
    let task = tokio::spawn(connection);
    let result = handle
        .link()
        .set(LinkUnspec::new_with_name("lo").up().build())
        .execute()
        .await
        .map_err(|e| NetProbeError::LoopbackUp(e.to_string()));
    task.abort();
    result
}

/// `rps_cpus` for one CPU: a hex bitmap in comma-separated 32-bit groups, as the
/// kernel's bitmap parser reads it.
fn rps_mask(cpu: u32) -> String {
    let group = cpu / 32;
    let mut text = format!("{:x}", 1u32 << (cpu % 32));
    for _ in 0..group {
        text.push_str(",00000000");
    }
    text
}

/// One TCP handshake: `connect` returns once the SYN-ACK is in. Closed with a reset (no
/// TIME_WAIT left behind, thousands of handshakes later).
fn handshake(addr: SocketAddr, timeout: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| match e.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => {
            format!("no SYN-ACK within {timeout:?} (connect to {addr})")
        }
        _ => format!("connect to {addr}: {e}"),
    })?;
    let took = start.elapsed();
    let rtt = syn_ack_rtt(&stream).unwrap_or(took);
    let reset = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let _ = socket::setsockopt(&stream, sockopt::Linger, &reset);
    Ok(rtt)
}

/// The handshake as the kernel timed it: right after `connect`, the only RTT sample is
/// the SYN-ACK's (from the SYN's transmission to the SYN-ACK's processing), and
/// `tcpi_rtt` is that sample. `None` when the kernel has none (a retransmitted SYN).
fn syn_ack_rtt(stream: &TcpStream) -> Option<Duration> {
    let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = libc::socklen_t::try_from(size_of::<libc::tcp_info>()).ok()?;
    // SAFETY: the descriptor is an open TCP socket for the duration of the call; `info`
    // points to `len` writable bytes, of which the kernel writes at most `len`.
    let done = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if done != 0 {
        return None;
    }
    // SAFETY: `tcp_info` is plain integers, valid zeroed, and the kernel filled it in.
    let info = unsafe { info.assume_init() };
    (info.tcpi_rtt > 0).then(|| Duration::from_micros(u64::from(info.tcpi_rtt)))
}

/// One datagram to the echo server and its answer; stale answers are skipped.
fn echo(client: &UdpSocket, seq: u64, timeout: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let sent = clock_gettime(ClockId::CLOCK_REALTIME).ok();
    client
        .send(&seq.to_le_bytes())
        .map_err(|e| format!("send to the echo server: {e}"))?;
    loop {
        match receive(client) {
            Ok((8, bytes, stamp)) if bytes == seq.to_le_bytes() => {
                let took = start.elapsed();
                let kernel = match (sent, stamp) {
                    (Some(sent), Some(stamp)) => since(sent, stamp),
                    _ => None,
                };
                return Ok(kernel.unwrap_or(took));
            }
            Ok(_) if start.elapsed() < timeout => {}
            Ok(_) => return Err(format!("no echo within {timeout:?}")),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::ETIMEDOUT) => {
                return Err(format!("no echo within {timeout:?}"));
            }
            Err(e) => return Err(format!("receive the echo: {e}")),
        }
    }
}

/// One datagram: its length, its first 8 bytes and its receive timestamp.
fn receive(client: &UdpSocket) -> nix::Result<(usize, [u8; 8], Option<TimeSpec>)> {
    let mut buf = [0u8; 16];
    let mut space = nix::cmsg_space!(TimeSpec);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = socket::recvmsg::<()>(
        client.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )?;
    let stamp = msg.cmsgs()?.find_map(|c| match c {
        ControlMessageOwned::ScmTimestampns(ts) => Some(ts),
        _ => None,
    });
    let n = msg.bytes;
    let mut head = [0u8; 8];
    head.copy_from_slice(&buf[..8]);
    Ok((n, head, stamp))
}

/// `to - from`, when it is not negative.
fn since(from: TimeSpec, to: TimeSpec) -> Option<Duration> {
    Duration::from(to).checked_sub(Duration::from(from))
}

fn accept_until(listener: &TcpListener, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        // Dropped at once: the handshake is what is measured.
        let _ = listener.accept();
    }
}

fn echo_until(server: &UdpSocket, stop: &AtomicBool) {
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, from)) = server.recv_from(&mut buf) {
            let _ = server.send_to(&buf[..n], from);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rps_masks_are_hex_bitmaps_in_32_bit_groups() {
        for (cpu, mask) in [
            (0, "1"),
            (1, "2"),
            (5, "20"),
            (31, "80000000"),
            (32, "1,00000000"),
            (63, "80000000,00000000"),
        ] {
            assert_eq!(rps_mask(cpu), mask, "CPU {cpu}");
        }
    }

    /// Both modes against their own server on the host's loopback (up on any host).
    #[test]
    fn round_trips_are_timed_and_a_dead_peer_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let start = Instant::now();
        let took = handshake(addr, Duration::from_secs(5)).unwrap();
        assert!(took <= start.elapsed(), "{took:?}");
        drop(listener);
        let refused = handshake(addr, Duration::from_secs(5)).unwrap_err();
        assert!(refused.contains(&addr.to_string()), "{refused}");

        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_read_timeout(Some(SERVER_POLL)).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.connect(server.local_addr().unwrap()).unwrap();
        client
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let echoing = std::thread::spawn(move || echo_until(&server, &flag));
        socket::setsockopt(&client, sockopt::ReceiveTimestampns, &true).unwrap();
        for seq in 1..=3 {
            let start = Instant::now();
            let rtt = echo(&client, seq, Duration::from_millis(300)).unwrap();
            // The kernel's time of the round trip is within the client's.
            assert!(rtt <= start.elapsed(), "{rtt:?}");
        }
        stop.store(true, Ordering::Relaxed);
        echoing.join().unwrap();
        // The server is gone: refused (its port unreachable) or unanswered, an error.
        let gone = echo(&client, 4, Duration::from_millis(300)).unwrap_err();
        assert!(gone.contains("echo"), "{gone}");
    }

    /// Stopping the probe is not a failed round trip: the client stops (its last
    /// round trip done) before the server goes away. When both stopped together, a
    /// handshake started as the listener closed was refused and failed the cell
    /// (1 in 2328 round trips, on a stock kernel).
    #[test]
    fn stopping_the_probe_records_no_error() {
        for mode in [NetMode::Connect, NetMode::Echo] {
            let spec = NetLatency {
                mode,
                cpu: None,
                client_cpu: None,
                timeout: Duration::from_secs(2),
            };
            // Stopped at varying points of the client's round trip.
            for i in 0..40u64 {
                let state = Arc::new(Mutex::new(ProbeState::new(Instant::now())));
                let mut running = Running::default();
                start_threads(&spec, Duration::ZERO, Instant::now(), &state, &mut running).unwrap();
                std::thread::sleep(Duration::from_micros(200 * i));
                running.stop();
                let s = lock(&state);
                assert_eq!(s.errors, 0, "{mode:?}, stop {i}: {:?}", s.error_samples);
            }
        }
    }
}
