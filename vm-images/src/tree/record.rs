//! What a build space writes down and hands back: `space.json` (what the space is for),
//! each built commit's `build.json`, and the commit's kernel ready to boot. Plain data,
//! so eviction can read a space's record without depending on the space that builds.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::kbuild::ccache::CcacheCounts;

/// What a space was made for, written as `space.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct SpaceInfo {
    pub(super) repo: String,
    pub(super) fragments: Vec<String>,
    pub(super) ccache: bool,
    pub(super) key: String,
}

/// What building one commit took and produced, kept as `build.json` beside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitBuild {
    pub commit: String,
    pub subject: String,
    /// `git describe` at build time.
    #[serde(default)]
    pub describe: Option<String>,
    /// `uname -r` of the kernel.
    pub release: String,
    /// build.sh's wall time: configuration, compiling, linking, installing modules.
    pub seconds: f64,
    /// Moving the worktree to the commit.
    pub checkout_seconds: f64,
    /// Files compiled (Kbuild's `CC`/`AS` steps), cache hits included.
    pub compiled: u64,
    /// What ccache did, when the build went through it.
    #[serde(default)]
    pub ccache: Option<CcacheCounts>,
    #[serde(default)]
    pub config_warnings: Vec<String>,
}

/// A commit's kernel, ready to boot.
#[derive(Debug, Clone, PartialEq)]
pub struct TreeBuild {
    /// `path:…,commit=<hash>`.
    pub spec: String,
    pub dir: PathBuf,
    /// Found already built (this run did not build it).
    pub cached: bool,
    pub record: CommitBuild,
}
