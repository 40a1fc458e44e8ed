//! `kind = "net-latency"`: round trips over the guest's loopback, the symptom of
//! incident 1b (TCP handshakes that took 100 ms+ on nodes whose CPU was busy in the
//! kernel reading `memory.stat`).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::super::ctx::Ctx;
use super::super::VmSpec;
use crate::units::duration_ms;

/// What one round trip is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    /// A TCP handshake: `connect()` until the SYN-ACK is in, as the write-up timed.
    Connect,
    /// A small UDP datagram to an echo server and its answer (what ping measures, with
    /// a user-space server).
    Echo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetLatency {
    pub mode: NetMode,
    /// The CPU whose latency is measured: loopback's receive processing is steered to it
    /// (RPS) and the server runs there.
    pub cpu: Option<u32>,
    /// Where the client that sends the requests runs (another CPU: the remote peer).
    pub client_cpu: Option<u32>,
    /// A round trip not completed within this is an error.
    #[serde(with = "duration_ms")]
    pub timeout: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNetLatency {
    #[allow(dead_code)]
    kind: String,
    pub name: Spanned<String>,
    pub interval: Option<Spanned<String>>,
    mode: Option<NetMode>,
    cpu: Option<Spanned<u32>>,
    client_cpu: Option<Spanned<u32>>,
    timeout: Option<Spanned<String>>,
}

pub(super) fn parse(ctx: &mut Ctx<'_>, raw: &RawNetLatency, vm: &VmSpec) -> Option<NetLatency> {
    let cpu = super::cpu(ctx, raw.cpu.as_ref(), vm);
    let client_cpu = super::cpu(ctx, raw.client_cpu.as_ref(), vm);
    if let (Some(c), Some(at)) = (raw.client_cpu.as_ref(), cpu) {
        if *c.get_ref() == at && vm.cpus > 1 {
            ctx.error(
                c.span(),
                "the client runs on the measured CPU: its requests then wait for that CPU like the packets; put it on another (`client_cpu`)",
            );
        }
    }
    let timeout = super::duration_or(ctx, &raw.timeout, Duration::from_secs(5));
    Some(NetLatency {
        mode: raw.mode.unwrap_or(NetMode::Connect),
        cpu,
        client_cpu,
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{parse, ProbeSpec};

    fn probe(cpus: u32, keys: &str) -> Result<ProbeSpec, String> {
        let src = format!(
            "[scenario]\nname = \"n\"\n[vm]\ncpus = {cpus}\n[[probe]]\nkind = \"net-latency\"\nname = \"rtt\"\n{keys}"
        );
        parse("n.toml", &src)
            .map(|mut s| s.probes.remove(0).spec)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_handshake_probe_by_default_and_its_cpus_checked() {
        let ProbeSpec::NetLatency(spec) = probe(1, "").unwrap() else {
            panic!("not a net-latency probe")
        };
        assert_eq!(spec.mode, NetMode::Connect);
        assert_eq!((spec.cpu, spec.client_cpu), (None, None));
        assert_eq!(spec.timeout, Duration::from_secs(5));

        let ProbeSpec::NetLatency(spec) = probe(
            2,
            "mode = \"echo\"\ncpu = 1\nclient_cpu = 0\ntimeout = \"1s\"\n",
        )
        .unwrap() else {
            panic!("not a net-latency probe")
        };
        assert_eq!(
            (spec.mode, spec.cpu, spec.client_cpu),
            (NetMode::Echo, Some(1), Some(0))
        );

        let same = probe(2, "cpu = 1\nclient_cpu = 1\n").unwrap_err();
        assert!(
            same.contains("n.toml:9:14: probe[0].client_cpu: the client runs on the measured CPU"),
            "{same}"
        );
        // With one vCPU there is no other CPU to put the client on.
        assert!(probe(1, "cpu = 0\nclient_cpu = 0\n").is_ok());
        let gone = probe(2, "cpu = 2\n").unwrap_err();
        assert!(gone.contains("CPU 2 does not exist"), "{gone}");
        let mode = probe(1, "mode = \"ping\"\n").unwrap_err();
        assert!(
            mode.contains("probe[0].mode") && mode.contains("connect"),
            "{mode}"
        );
    }
}
