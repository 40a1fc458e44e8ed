//! Where Debian packages come from: a trait, so resolution is tested against a fake
//! archive, and its real implementation on kchaos's own apt state.

use std::path::{Path, PathBuf};

use super::apt::AptState;
use super::apt_config::AptConfig;
use super::apt_output::Candidate;
use super::error::DebianError;
use super::release::Release;
use crate::cache::Cache;

/// Where packages come from: kchaos's apt state on a real machine, a fake in tests.
pub trait PackageSource {
    /// Package names starting with `prefix` that `release` offers.
    fn names(&self, release: Release, prefix: &str) -> Result<Vec<String>, DebianError>;
    /// apt's candidate of `package` in `release`, if it offers one.
    fn candidate(&self, release: Release, package: &str) -> Result<Option<Candidate>, DebianError>;
    /// Downloads `package` at the candidate's version, from the candidate's release,
    /// into `dir`; returns the `.deb`.
    fn download(
        &self,
        package: &str,
        candidate: &Candidate,
        dir: &Path,
    ) -> Result<PathBuf, DebianError>;
}

/// kchaos's own apt state under the cache (`$KCHAOS_CACHE/apt/<release>`), configured
/// from the environment ([`AptConfig::from_env`]); lists are refreshed when stale.
#[derive(Debug, Clone, Copy)]
pub struct AptSource<'a> {
    cache: &'a Cache,
}

impl<'a> AptSource<'a> {
    pub fn new(cache: &'a Cache) -> AptSource<'a> {
        AptSource { cache }
    }

    fn state(&self, release: Release) -> Result<AptState, DebianError> {
        Ok(AptState::open(
            self.cache,
            release,
            &AptConfig::from_env()?,
        )?)
    }

    /// The state with its lists refreshed when stale: what a look-up needs. A download
    /// asks for a version a look-up just found, so it takes the lists as they are.
    fn fresh_state(&self, release: Release) -> Result<AptState, DebianError> {
        let state = self.state(release)?;
        state.refresh_if_stale()?;
        Ok(state)
    }
}

impl PackageSource for AptSource<'_> {
    fn names(&self, release: Release, prefix: &str) -> Result<Vec<String>, DebianError> {
        Ok(self.fresh_state(release)?.pkgnames(prefix)?)
    }

    fn candidate(&self, release: Release, package: &str) -> Result<Option<Candidate>, DebianError> {
        Ok(self.fresh_state(release)?.candidate(package)?)
    }

    fn download(
        &self,
        package: &str,
        candidate: &Candidate,
        dir: &Path,
    ) -> Result<PathBuf, DebianError> {
        let state = self.state(candidate.release)?;
        Ok(state.download(package, &candidate.version, &candidate.suite, dir)?)
    }
}
