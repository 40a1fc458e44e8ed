//! The KCIDB I/O objects kchaos writes, as serde types: the fields of KCIDB's schema
//! v5.3 (kcidb-io's `kcidb_io.schema.V5_3`) that kchaos has something true to say in.
//! KCIDB allows no `null`: an unknown field is left out (`skip_serializing_if`), never
//! written empty. Field order is fixed by the structs, so the same objects always
//! serialise to the same bytes.

use serde::{Deserialize, Serialize};

/// The schema version written into every file.
pub const SCHEMA_MAJOR: u32 = 5;
pub const SCHEMA_MINOR: u32 = 3;

/// A KCIDB I/O document: the objects of one or more runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub version: SchemaVersion,
    pub checkouts: Vec<Checkout>,
    pub builds: Vec<Build>,
    pub tests: Vec<Test>,
    pub issues: Vec<Issue>,
    pub incidents: Vec<Incident>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaVersion {
    pub major: u32,
    pub minor: u32,
}

impl SchemaVersion {
    pub const CURRENT: SchemaVersion = SchemaVersion {
        major: SCHEMA_MAJOR,
        minor: SCHEMA_MINOR,
    };
}

/// KCIDB's status of a test or build, highest priority first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Fail,
    Error,
    Miss,
    Pass,
    Done,
    Skip,
}

/// The source a kernel was built from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkout {
    pub id: String,
    pub origin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_repository_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_repository_branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_commit_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid: Option<bool>,
    pub misc: CheckoutMisc,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutMisc {
    /// The Debian package the kernel came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debian: Option<DebianMisc>,
    /// `build:` kernels: the recipe and the Debian source version it was applied to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebianMisc {
    pub package: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suite: Option<String>,
}

/// The kernel a cell booted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Build {
    pub id: String,
    pub checkout_id: String,
    pub origin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    pub misc: BuildMisc,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildMisc {
    /// The kernel spec as asked (`debian:6.1-cloud`).
    pub spec: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<String>,
    /// `uname -r`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
}

/// A cell, or one check of a cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Test {
    pub id: String,
    pub build_id: String,
    pub origin: String,
    pub path: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_excerpt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_files: Vec<Resource>,
    pub misc: TestMisc,
}

/// A cell's misc and a check's misc have different fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TestMisc {
    Cell(CellMisc),
    Check(CheckMisc),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellMisc {
    /// The cell id in the results (`memcg-dying-cgroups/debian-6.1.0-56-cloud/r2`).
    pub cell: String,
    /// kchaos's verdict: KCIDB's FAIL covers `fail`, `crash` and `hang`.
    pub verdict: String,
    pub reasons: Vec<String>,
    /// The known issue the failure matched (its incident says so too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known: Option<crate::results::KnownMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<FingerprintMisc>,
    pub scenario_file: String,
    pub seed: u64,
    pub repeat: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_signature_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FingerprintMisc {
    pub id: String,
    pub title: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckMisc {
    /// The assertion as written (`memory_stat_read.p99 <= 50ms`).
    pub assert: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub because: Option<String>,
    pub op: String,
    /// The bound, in the unit of the test's `number`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound: Option<Number>,
    /// `pass`, `fail`, `no-data` (nothing recorded to compare) or `not-tested` (its
    /// window held too few samples): the last two are KCIDB's FAIL.
    pub check_status: String,
    /// Room left as a fraction of the bound (negative: how far past it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin: Option<f64>,
}

/// A value with its unit, as KCIDB displays it (`prefix` scales it for display).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Number {
    pub value: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<Prefix>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Prefix {
    Metric,
    Binary,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    pub comment: String,
    pub misc: EnvironmentMisc,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentMisc {
    /// `tcg` or `kvm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accel: Option<String>,
    /// `initramfs` or `systemd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The VM's CPU topology (`2`, `2s2c`) when the run had a topology axis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<String>,
}

/// A file with its URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    pub name: String,
    pub url: String,
}

/// A known issue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issue {
    pub id: String,
    pub version: u32,
    pub origin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub misc: IssueMisc,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueMisc {
    /// The entry's id in `known-issues.toml`.
    pub known_issue: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

/// A failing cell a known issue describes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    pub id: String,
    pub origin: String,
    pub issue_id: String,
    pub issue_version: u32,
    pub build_id: String,
    pub test_id: String,
    pub present: bool,
}
