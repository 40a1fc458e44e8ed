//! `veth-storm`: pods come and go. For each: a network namespace, a veth pair with its
//! inside end born in the namespace (as CNI plugins do), addresses, a default route,
//! UDP both ways, then destruction and a wait until the kernel has let go of the device.
//! Everything goes through rtnetlink and syscalls; no `ip` binary.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use kchaos_model::metrics::Metric;
use kchaos_model::protocol::{GuestMessage, WorkloadReport};
use kchaos_model::scenario::workload::{DestroyOrder, VethStorm};
use kchaos_model::scenario::Workload;
use rtnetlink::packet_route::address::AddressHeaderFlags;
use rtnetlink::packet_route::link::{InfoData, InfoVeth};
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::{Env, Errors, Iterations};
use crate::histogram::Latency;
use crate::metrics::Named;
use crate::netns::NetnsFactory;

/// The inside end's name, as in a pod.
const POD_IF: &str = "eth0";

#[derive(Debug, Default)]
struct Stats {
    create: Latency,
    configure: Latency,
    traffic: Latency,
    delete: Latency,
    teardown: Latency,
    pairs: u64,
    /// Sends retried after a transient refusal (see [`retryable_send_error`]) and
    /// datagrams sent again because the first did not arrive (see [`exchange`]).
    send_retries: u64,
    leaked: Vec<String>,
    errors: Errors,
}

/// Addresses of the pod in slot `slot`: a /30 (and a /64) of its own, so pods alive at
/// the same time never collide.
fn addresses(slot: u32) -> (Ipv4Addr, Ipv4Addr, Ipv6Addr, Ipv6Addr) {
    let base = u32::from(Ipv4Addr::new(10, 200, 0, 0)) + slot * 4;
    let v6 = |host: u16| {
        Ipv6Addr::new(
            0xfd00,
            0x6b63,
            0,
            u16::try_from(slot).unwrap_or(u16::MAX),
            0,
            0,
            0,
            host,
        )
    };
    (
        Ipv4Addr::from(base + 1),
        Ipv4Addr::from(base + 2),
        v6(1),
        v6(2),
    )
}

struct Shared<'a> {
    spec: &'a VethStorm,
    host: Handle,
    factory: NetnsFactory,
    iterations: Iterations<'a>,
    inflight: Arc<AtomicU64>,
}

pub fn run(
    workload: &Workload,
    spec: &VethStorm,
    env: &Env,
) -> (WorkloadReport, Vec<(String, Metric)>) {
    let stats = match tokio::runtime::Handle::try_current() {
        Ok(rt) => rt.block_on(storm(workload, spec, env)),
        Err(e) => {
            let mut s = Stats::default();
            s.errors.push(format!("no async runtime: {e}"));
            s
        }
    };
    let name = &workload.name;
    let mut metrics = Named::new(name);
    metrics
        .latency("create", &stats.create)
        .latency("configure", &stats.configure)
        .latency("traffic", &stats.traffic)
        .latency("delete", &stats.delete)
        .latency("teardown", &stats.teardown)
        .count("pairs", stats.pairs)
        .count("send_retries", stats.send_retries)
        .count("leaked", stats.leaked.len() as u64)
        .count("errors", stats.errors.count);
    let mut errors = stats.errors;
    if !stats.leaked.is_empty() {
        env.reporter.note(format!(
            "devices still registered {:?} after the delete: {}",
            spec.teardown_timeout,
            stats.leaked.join(", ")
        ));
    }
    errors.samples.truncate(super::MAX_ERROR_SAMPLES);
    (
        WorkloadReport {
            name: name.clone(),
            iterations: stats.pairs,
            errors: errors.count,
            error_samples: errors.samples,
            findings: Vec::new(),
        },
        metrics.into_list(),
    )
}

async fn storm(workload: &Workload, spec: &VethStorm, env: &Env) -> Stats {
    let mut total = Stats::default();
    let (factory, host) = match setup().await {
        Ok(x) => x,
        Err(e) => {
            total.errors.push(e);
            return total;
        }
    };
    let shared = Shared {
        spec,
        host,
        factory,
        iterations: Iterations::new(workload, env, spec.rate),
        inflight: Arc::new(AtomicU64::new(0)),
    };
    let started = Instant::now();
    let sampler = tokio::spawn(sample_inflight(
        Arc::clone(&shared.inflight),
        workload.name.clone(),
        env.reporter.clone(),
        started,
    ));
    let slots = (0..spec.concurrency).map(|slot| slot_loop(&shared, slot));
    for s in futures::future::join_all(slots).await {
        total.create.merge(&s.create);
        total.configure.merge(&s.configure);
        total.traffic.merge(&s.traffic);
        total.delete.merge(&s.delete);
        total.teardown.merge(&s.teardown);
        total.pairs += s.pairs;
        total.send_retries += s.send_retries;
        total.leaked.extend(s.leaked);
        total.errors.merge(s.errors);
    }
    sampler.abort();
    // A last sample after every pod is gone, so the series ends at the truth.
    env.reporter.send(GuestMessage::Sample {
        metric: format!("{}.inflight", workload.name),
        t_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        value: 0.0,
    });
    total
}

async fn setup() -> Result<(NetnsFactory, Handle), String> {
    let factory = NetnsFactory::start().map_err(|e| e.to_string())?;
    let (connection, host, _) =
        rtnetlink::new_connection().map_err(|e| format!("netlink socket: {e}"))?;
    tokio::spawn(connection);
    Ok((factory, host))
}

/// Streams how many pods exist (created, not yet gone) every half second.
async fn sample_inflight(
    inflight: Arc<AtomicU64>,
    name: String,
    reporter: crate::link::channel::Reporter,
    start: Instant,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let t_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        reporter.send(GuestMessage::Sample {
            metric: format!("{name}.inflight"),
            t_ms,
            value: inflight.load(Ordering::Relaxed) as f64,
        });
    }
}

async fn slot_loop(sh: &Shared<'_>, slot: u32) -> Stats {
    let mut stats = Stats::default();
    while let Some(n) = sh.iterations.claim().await {
        sh.inflight.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = pod(sh, slot, n, &mut stats).await {
            stats.errors.push(e);
        }
        sh.inflight.fetch_sub(1, Ordering::Relaxed);
        sh.iterations.done(n);
    }
    stats
}

/// One pod, start to finish.
async fn pod(sh: &Shared<'_>, slot: u32, n: u64, stats: &mut Stats) -> Result<(), String> {
    let spec = sh.spec;
    let name = format!("kcv{n}");
    let ns = sh
        .factory
        .create()
        .await
        .map_err(|e| format!("netns for {name}: {e}"))?;

    let t = Instant::now();
    let peer = LinkUnspec::new_with_name(POD_IF)
        .setns_by_fd(ns.as_raw_fd())
        .build();
    let veth = LinkVeth::new(&name, POD_IF)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    sh.host.link().add(veth).execute().await.map_err(|e| match &e {
        rtnetlink::Error::NetlinkError(m) if m.raw_code() == -libc::EOPNOTSUPP => {
            format!("create veth {name}: {e} (the kernel has no veth driver: CONFIG_VETH, module not loaded?)")
        }
        _ => format!("create veth {name}: {e}"),
    })?;
    stats.create.record(t.elapsed());
    stats.pairs += 1;

    let t = Instant::now();
    let configured = configure(sh, &ns, &name, slot).await;
    let (host_index, pod) = match configured {
        Ok(c) => c,
        Err((host_index, e)) => {
            // Still tear it down, or the next pods inherit the mess.
            if let Some(index) = host_index {
                let _ = destroy(sh, ns, index, &name, stats).await;
            }
            return Err(e);
        }
    };
    stats.configure.record(t.elapsed());

    let mut result = Ok(());
    if spec.traffic {
        let t = Instant::now();
        result = traffic(sh, &ns, slot, &mut stats.send_retries)
            .await
            .map_err(|e| format!("traffic over {name}: {e}"));
        stats.traffic.record(t.elapsed());
    }
    tokio::time::sleep(spec.lifetime).await;
    // The pod's netlink socket holds a reference on its namespace: close it first.
    pod.abort();
    let _ = pod.await;
    destroy(sh, ns, host_index, &name, stats).await?;
    result
}

/// Both ends up, addresses, the pod's default route. Returns the host end's index and
/// the pod-side netlink connection task.
async fn configure(
    sh: &Shared<'_>,
    ns: &OwnedFd,
    name: &str,
    slot: u32,
) -> Result<(u32, tokio::task::JoinHandle<()>), (Option<u32>, String)> {
    let host_index = index_of(&sh.host, name).await.map_err(|e| (None, e))?;
    let fail = |e: String| (Some(host_index), e);
    let (connection, pod, _) = sh
        .factory
        .within(ns, rtnetlink::new_connection)
        .await
        .map_err(|e| fail(e.to_string()))?
        .map_err(|e| fail(format!("netlink socket in {name}'s namespace: {e}")))?;
    let task = tokio::spawn(connection);
    let result = async {
        let pod_index = index_of(&pod, POD_IF).await?;
        let (host4, pod4, host6, pod6) = addresses(slot);
        let nl = |what: &str| {
            let what = format!("{what} ({name})");
            move |e: rtnetlink::Error| format!("{what}: {e}")
        };
        sh.host
            .address()
            .add(host_index, IpAddr::V4(host4), 30)
            .execute()
            .await
            .map_err(nl("host address"))?;
        pod.address()
            .add(pod_index, IpAddr::V4(pod4), 30)
            .execute()
            .await
            .map_err(nl("pod address"))?;
        if sh.spec.ipv6 {
            for (handle, index, addr) in [(&sh.host, host_index, host6), (&pod, pod_index, pod6)] {
                let mut req = handle.address().add(index, IpAddr::V6(addr), 64);
                // No duplicate address detection: the address must be usable at once.
                req.message_mut().header.flags |= AddressHeaderFlags::Nodad;
                req.execute().await.map_err(nl("IPv6 address"))?;
            }
        }
        sh.host
            .link()
            .set(LinkUnspec::new_with_index(host_index).up().build())
            .execute()
            .await
            .map_err(nl("host end up"))?;
        pod.link()
            .set(LinkUnspec::new_with_index(pod_index).up().build())
            .execute()
            .await
            .map_err(nl("pod end up"))?;
        pod.route()
            .add(
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway(host4)
                    .build(),
            )
            .execute()
            .await
            .map_err(nl("pod default route"))?;
        if sh.spec.ipv6 {
            pod.route()
                .add(
                    RouteMessageBuilder::<Ipv6Addr>::new()
                        .gateway(host6)
                        .build(),
                )
                .execute()
                .await
                .map_err(nl("pod IPv6 route"))?;
        }
        Ok::<(), String>(())
    }
    .await;
    match result {
        Ok(()) => Ok((host_index, task)),
        Err(e) => {
            task.abort();
            let _ = task.await;
            Err(fail(e))
        }
    }
}

async fn index_of(handle: &Handle, name: &str) -> Result<u32, String> {
    let link = handle
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await
        .map_err(|e| format!("look up {name}: {e}"))?;
    link.map(|l| l.header.index)
        .ok_or_else(|| format!("{name} does not exist after creation"))
}

/// UDP both ways between the pod and the host end, over IPv4 (and IPv6): routes,
/// neighbour entries and cached dsts now reference the devices.
async fn traffic(
    sh: &Shared<'_>,
    ns: &OwnedFd,
    slot: u32,
    retries: &mut u64,
) -> Result<(), String> {
    let (host4, pod4, host6, pod6) = addresses(slot);
    let mut pairs = vec![(IpAddr::V4(host4), IpAddr::V4(pod4))];
    if sh.spec.ipv6 {
        pairs.push((IpAddr::V6(host6), IpAddr::V6(pod6)));
    }
    for (host_ip, pod_ip) in pairs {
        let pod_std = sh
            .factory
            .within(ns, move || {
                std::net::UdpSocket::bind(SocketAddr::new(pod_ip, 0))
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("bind {pod_ip} in the pod: {e}"))?;
        let host_std = std::net::UdpSocket::bind(SocketAddr::new(host_ip, 0))
            .map_err(|e| format!("bind {host_ip}: {e}"))?;
        let pod_sock = udp(pod_std)?;
        let host_sock = udp(host_std)?;
        let (host_addr, pod_addr) = (local(&host_sock)?, local(&pod_sock)?);
        for _ in 0..sh.spec.packets {
            exchange(&pod_sock, &host_sock, host_addr, ARRIVAL_WAIT, retries).await?;
            exchange(&host_sock, &pod_sock, pod_addr, ARRIVAL_WAIT, retries).await?;
        }
    }
    Ok(())
}

fn udp(s: std::net::UdpSocket) -> Result<tokio::net::UdpSocket, String> {
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    tokio::net::UdpSocket::from_std(s).map_err(|e| e.to_string())
}

fn local(s: &tokio::net::UdpSocket) -> Result<SocketAddr, String> {
    s.local_addr().map_err(|e| e.to_string())
}

/// How long a send refused with a transient error is retried before it counts as a
/// workload error.
const SEND_RETRY_WINDOW: Duration = Duration::from_secs(1);

/// Whether a refused send is worth retrying. Under a storm the kernel's route lookup can
/// miss a route that is configured (the IPv6 FIB is rebuilt by every pod coming and
/// going), and queues can be briefly full; the incident is about devices that never go
/// away, not about one lookup that misses. Each retry is counted (`send_retries`), so a
/// scenario that cares can check it.
fn retryable_send_error(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::ENOBUFS)
    )
}

/// How many times a datagram is sent before its loss counts as a workload error, and
/// how long each one is waited for.
const SENDS: u32 = 3;
const ARRIVAL_WAIT: Duration = Duration::from_secs(2);

/// One datagram from `from` to `to`. A datagram that does not arrive is sent again (up
/// to [`SENDS`] times, each counted in `retries`): UDP may drop one under the storm
/// (a neighbour still being resolved on a link that just came up, a full backlog under
/// load), which is not the incident; a path that never delivers still fails the pod.
async fn exchange(
    from: &tokio::net::UdpSocket,
    to: &tokio::net::UdpSocket,
    to_addr: SocketAddr,
    wait: Duration,
    retries: &mut u64,
) -> Result<(), String> {
    let mut buf = [0u8; 16];
    for sent in 1..=SENDS {
        if sent > 1 {
            *retries += 1;
        }
        send(from, to_addr, retries).await?;
        match tokio::time::timeout(wait, to.recv_from(&mut buf)).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => return Err(format!("receive at {to_addr}: {e}")),
            Err(_) => {}
        }
    }
    Err(format!(
        "no datagram arrived at {to_addr} within {wait:?} of any of {SENDS} sends"
    ))
}

/// Sends one datagram, retrying a send the kernel refuses transiently.
async fn send(
    from: &tokio::net::UdpSocket,
    to_addr: SocketAddr,
    retries: &mut u64,
) -> Result<(), String> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    let mut attempts = 0u64;
    loop {
        match from.send_to(b"kchaos", to_addr).await {
            Ok(_) => return Ok(()),
            Err(e) if retryable_send_error(&e) && started.elapsed() < SEND_RETRY_WINDOW => {
                attempts += 1;
                *retries += 1;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            Err(e) => {
                return Err(match attempts {
                    0 => format!("send to {to_addr}: {e}"),
                    n => format!(
                        "send to {to_addr}: {e} (still, after {n} retries over {:?})",
                        started.elapsed()
                    ),
                })
            }
        }
    }
}

/// Destroys the pod in the configured order, then waits until the host end is really
/// gone from the kernel (the incident's device never was).
async fn destroy(
    sh: &Shared<'_>,
    ns: OwnedFd,
    host_index: u32,
    name: &str,
    stats: &mut Stats,
) -> Result<(), String> {
    let t = Instant::now();
    match sh.spec.destroy {
        DestroyOrder::Link => {
            let deleted = sh
                .host
                .link()
                .del(host_index)
                .execute()
                .await
                .map_err(|e| format!("delete {name}: {e}"));
            drop(ns);
            deleted?;
        }
        // The last reference: the kernel dismantles the namespace and both ends.
        DestroyOrder::Netns => drop(ns),
    }
    stats.delete.record(t.elapsed());
    let mut pause = Duration::from_millis(1);
    loop {
        match sh
            .host
            .link()
            .get()
            .match_index(host_index)
            .execute()
            .try_next()
            .await
        {
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {
                stats.teardown.record(t.elapsed());
                return Ok(());
            }
            Err(e) => return Err(format!("watch {name} go away: {e}")),
            Ok(_) if t.elapsed() >= sh.spec.teardown_timeout => {
                stats.leaked.push(name.to_owned());
                return Ok(());
            }
            Ok(_) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(20));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_send_refusals_are_retried() {
        use std::io::Error;
        let cases = [
            (Error::from_raw_os_error(libc::ENETUNREACH), true),
            (Error::from_raw_os_error(libc::EHOSTUNREACH), true),
            (Error::from_raw_os_error(libc::ENOBUFS), true),
            (Error::from_raw_os_error(libc::EADDRNOTAVAIL), false),
            (Error::from_raw_os_error(libc::EINVAL), false),
            (Error::from_raw_os_error(libc::EPERM), false),
            (Error::other("not an errno"), false),
        ];
        for (e, want) in cases {
            assert_eq!(retryable_send_error(&e), want, "{e}");
        }
    }

    async fn udp_on_loopback() -> (tokio::net::UdpSocket, SocketAddr) {
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap();
        (s, addr)
    }

    /// A datagram lost on the way is sent again and counted; one that never arrives
    /// fails after the last send, saying so.
    #[tokio::test]
    async fn a_lost_datagram_is_sent_again_and_counted() {
        let wait = Duration::from_millis(200);
        let (from, _) = udp_on_loopback().await;
        let (to, to_addr) = udp_on_loopback().await;
        // A relay that drops the first datagram and forwards the rest to `to`.
        let (relay, relay_addr) = udp_on_loopback().await;
        let forward = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            let mut seen = 0;
            loop {
                let (n, _) = relay.recv_from(&mut buf).await.unwrap();
                seen += 1;
                if seen > 1 {
                    relay.send_to(&buf[..n], to_addr).await.unwrap();
                }
            }
        });
        let mut retries = 0;
        exchange(&from, &to, relay_addr, wait, &mut retries)
            .await
            .unwrap();
        assert_eq!(retries, 1);
        forward.abort();
        // Wait until the relay and its socket are gone.
        let _ = forward.await;

        // Nothing listens on the relay's address any more: every send is lost.
        let mut retries = 0;
        let err = exchange(&from, &to, relay_addr, wait, &mut retries)
            .await
            .unwrap_err();
        assert_eq!(retries, u64::from(SENDS - 1));
        assert!(err.contains("of any of 3 sends"), "{err}");
    }

    #[test]
    fn slots_get_disjoint_subnets() {
        let (h0, p0, h6, p6) = addresses(0);
        assert_eq!(
            (h0, p0),
            (Ipv4Addr::new(10, 200, 0, 1), Ipv4Addr::new(10, 200, 0, 2))
        );
        assert_eq!(h6.segments()[3], 0);
        assert_ne!(h6, p6);
        let (h, p, _, _) = addresses(64);
        assert_eq!(
            (h, p),
            (Ipv4Addr::new(10, 200, 1, 1), Ipv4Addr::new(10, 200, 1, 2))
        );
        let (last, _, _, _) = addresses(16_383);
        assert_eq!(last, Ipv4Addr::new(10, 200, 255, 253));
    }
}
