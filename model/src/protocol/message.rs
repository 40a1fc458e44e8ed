//! The messages. The guest reports facts (boot, samples, kernel log lines, results); the
//! host owns the decisions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::metrics::{Metric, Series};
use crate::scenario::Scenario;
use crate::timeline::Span;

/// Guest → host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GuestMessage {
    /// First message on the channel.
    Hello(Hello),
    /// Sent every second from a dedicated thread; silence means a hang.
    Heartbeat {
        seq: u64,
        uptime_ms: u64,
    },
    Phase {
        phase: Phase,
    },
    /// One `/dev/kmsg` record, forwarded as it is read (from boot on).
    Kmsg(KmsgRecord),
    /// One counter sample, streamed so a crash or hang keeps the trend leading to it.
    Sample {
        metric: String,
        t_ms: u64,
        value: f64,
    },
    Progress {
        workload: String,
        done: u64,
        total: Option<u64>,
    },
    /// Something worth recording that is not a failure (e.g. a knob the kernel refused).
    Note {
        message: String,
    },
    /// A requirement is missing in the guest; nothing was run.
    Skip {
        reason: String,
    },
    Finished(RunReport),
    /// The runner cannot continue; infrastructure error.
    Fatal {
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    pub runner_version: String,
    /// `uname -r` in the guest.
    pub kernel_release: String,
    /// CLOCK_BOOTTIME when the runner was ready, i.e. guest-side boot time.
    pub uptime_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Setup,
    Workload,
    Settle,
    Collect,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmsgRecord {
    pub seq: u64,
    /// syslog level 0 (emerg) … 7 (debug).
    pub level: u8,
    /// Kernel timestamp in microseconds since boot.
    pub ts_us: u64,
    pub text: String,
}

/// What the runner measured. Series metrics are not in here: they arrive as `Sample`s.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub metrics: BTreeMap<String, Metric>,
    pub workloads: Vec<WorkloadReport>,
    pub probes: Vec<ProbeReport>,
    /// How long the workload phase took, in milliseconds.
    pub workload_ms: u64,
    /// When each workload ran (milliseconds since the workload phase began): the
    /// phases a check may judge on their own (protocol 2).
    #[serde(default)]
    pub spans: Vec<Span>,
    /// Every sample of the latency probes with the time it was taken (milliseconds
    /// since the workload phase began, nanoseconds), so the host can cut them by phase
    /// or condition; the histograms in `metrics` summarise the whole run (protocol 2).
    #[serde(default)]
    pub timelines: BTreeMap<String, Series>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadReport {
    pub name: String,
    pub iterations: u64,
    pub errors: u64,
    /// The first few errors, verbatim (errno and path).
    pub error_samples: Vec<String>,
    /// What the workload diagnosed from what it saw, naming a mechanism (systemd's
    /// cookie overflowed): facts of the kind a kernel signature is, so a failed cell's
    /// reasons put them first. Each also counts among `errors`.
    #[serde(default)]
    pub findings: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReport {
    pub name: String,
    pub reads: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
}

/// Host → guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HostMessage {
    /// Answer to `Hello`: what to run.
    Run(Box<RunRequest>),
    /// The results arrived; the guest may power off.
    Ack,
    /// Stop now (harness interrupted); the guest powers off.
    Abort { reason: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRequest {
    pub protocol: u32,
    pub scenario: Scenario,
    /// The seed actually used (the scenario's, or one the harness chose and recorded).
    pub seed: u64,
    /// Cell identifier, for the guest's log lines.
    pub cell: String,
}
