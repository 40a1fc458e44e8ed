//! Debian kernel packages: find a spec's package in the release it names or its version
//! implies ([`release`]), download it through kchaos's own apt state ([`apt`]), unpack
//! it into the cache, keyed by package and version (the mirror drops old ABIs, the cache
//! keeps them, so offline reruns work).

pub mod abi;
pub mod apt;
pub mod apt_config;
pub mod apt_output;
mod dbg;
mod error;
pub mod release;
mod source;
mod store;

use abi::{abi_of, compare_abi, in_series, package_name};
pub use abi::{DebianVersion, Flavour};
pub use apt_output::Candidate;
pub use dbg::debug_vmlinux;
pub use error::DebianError;
pub use release::Release;
pub use source::{AptSource, PackageSource};
use store::{cached, load, unpack, Cached};

use crate::cache::Cache;
use crate::resolved::Kernel;

/// Resolves a Debian spec: the releases to look in, in order ([`release::candidates`]);
/// in the first that has the version, the newest ABI of a series, its unsigned image
/// (what kernel developers boot) or else the signed one (the same kernel). When apt cannot
/// answer (offline, no lists yet), what the cache holds still resolves.
pub(crate) fn fetch(
    cache: &Cache,
    spec: &str,
    version: &DebianVersion,
    flavour: Flavour,
    explicit: Option<Release>,
    source: &dyn PackageSource,
) -> Result<Kernel, DebianError> {
    let releases = release::candidates(version, explicit);
    let no_package = |detail: String| DebianError::NoPackage {
        spec: spec.to_owned(),
        detail,
    };
    if releases.is_empty() {
        return Err(no_package(format!(
            "no release the Debian archive serves ships it (buster and older are gone); kernels by release: {}",
            release::describe()
        )));
    }
    let cached = cached(cache, flavour);
    let mut apt_problems = Vec::new();
    for &rel in &releases {
        let abi = match version {
            DebianVersion::Abi(abi) => Some(abi.clone()),
            DebianVersion::Series(series) => {
                newest_abi(rel, series, flavour, &cached, source, &mut apt_problems)
            }
        };
        let Some(abi) = abi else { continue };
        if let Some(kernel) = package_in(
            cache,
            spec,
            rel,
            &abi,
            flavour,
            &cached,
            source,
            &mut apt_problems,
        )? {
            return Ok(kernel);
        }
    }
    let wanted = match version {
        DebianVersion::Series(series) => format!(
            "linux-image-{series}.*-{}[-unsigned]",
            flavour.package_suffix()
        ),
        DebianVersion::Abi(abi) => package_name(abi, flavour, true),
    };
    let names: Vec<&str> = releases.iter().map(|r| r.name()).collect();
    // The same failure is met once per question asked.
    apt_problems.sort();
    apt_problems.dedup();
    let apt = if apt_problems.is_empty() {
        String::new()
    } else {
        format!("; apt could not answer: {}", apt_problems.join("; "))
    };
    Err(no_package(format!(
        "neither apt ({}) nor the cache ({}) has {wanted}, nor its signed variant{apt}",
        names.join(", "),
        cache.root().join("kernels/debian").display()
    )))
}

/// The newest ABI of `series` in `rel`: what apt offers there plus what the cache holds
/// from there.
fn newest_abi(
    rel: Release,
    series: &str,
    flavour: Flavour,
    cached: &[Cached],
    source: &dyn PackageSource,
    apt_problems: &mut Vec<String>,
) -> Option<String> {
    let mut abis: Vec<String> = match source.names(rel, &format!("linux-image-{series}.")) {
        Ok(names) => names
            .iter()
            .filter_map(|n| abi_of(n, flavour))
            .filter(|a| in_series(a, series))
            .collect(),
        Err(e) => {
            tracing::warn!("{e}; looking in the cache only");
            apt_problems.push(e.to_string());
            Vec::new()
        }
    };
    abis.extend(
        cached
            .iter()
            .filter(|c| c.release == Some(rel) && in_series(&c.abi, series))
            .map(|c| c.abi.clone()),
    );
    abis.into_iter().max_by(|a, b| compare_abi(a, b))
}

/// The kernel of `abi` in `rel`, downloaded or from the cache; `None` when neither apt
/// nor the cache has it there.
#[allow(clippy::too_many_arguments)]
fn package_in(
    cache: &Cache,
    spec: &str,
    rel: Release,
    abi: &str,
    flavour: Flavour,
    cached: &[Cached],
    source: &dyn PackageSource,
    apt_problems: &mut Vec<String>,
) -> Result<Option<Kernel>, DebianError> {
    let packages = [true, false].map(|unsigned| package_name(abi, flavour, unsigned));
    let resolved = release::resolved_spec(abi, flavour, rel);
    let mut offered = Vec::new();
    for package in &packages {
        match source.candidate(rel, package) {
            Ok(Some(candidate)) => offered.push((package, candidate)),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("{e}; looking in the cache only");
                apt_problems.push(e.to_string());
            }
        }
    }
    // What the cache already holds at apt's version needs no download, signed or not;
    // the sort is stable, so the unsigned image stays first otherwise.
    offered.sort_by_key(|(package, candidate)| {
        !cached
            .iter()
            .any(|c| &c.package == *package && c.version == candidate.version)
    });
    let mut failed = None;
    for (i, (package, candidate)) in offered.iter().enumerate() {
        match unpack(cache, spec, &resolved, package, candidate, source) {
            Ok(kernel) => return Ok(Some(kernel)),
            // Some mirrors carry only the signed image: try it before failing.
            Err(e) => {
                if let Some((next, _)) = offered.get(i + 1) {
                    tracing::warn!(
                        "cannot fetch {package} {}: {}; trying {next}",
                        candidate.version,
                        apt::first_error(&e.to_string())
                    );
                }
                failed = Some(e);
            }
        }
    }
    let from_cache = cached
        .iter()
        .filter(|c| c.release == Some(rel) && packages.contains(&c.package))
        .max_by(|a, b| compare_abi(&a.version, &b.version));
    if let Some(entry) = from_cache {
        tracing::info!(
            "apt does not offer {} {} now; using the cached copy in {}",
            entry.package,
            entry.version,
            entry.dir.display()
        );
        let mut kernel = load(&entry.dir, spec)?;
        kernel.resolved = resolved;
        return Ok(Some(kernel));
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests;
