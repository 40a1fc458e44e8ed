//! A kernel as KCIDB sees it: a checkout (where its source came from: a Debian
//! package, a local tree's git commit, a recipe on Debian's source) and a build (the
//! kernel booted). What a cell did not record is left out, never claimed.

use kchaos_images::spec::KernelSpec;

use super::names::{self, Origin};
use super::schema::{Build, BuildMisc, Checkout, CheckoutMisc, DebianMisc, Status};
use super::ARCHITECTURE;
use crate::results::KernelInfo;

/// The spec a kernel resolved to, parsed (`None` for one that never resolved and
/// does not parse).
fn parsed_spec(kernel: &KernelInfo) -> Option<KernelSpec> {
    KernelSpec::parse(kernel.resolved.as_deref().unwrap_or(&kernel.spec)).ok()
}

pub(super) fn checkout(kernel: &KernelInfo, id: &str, origin: &Origin) -> Checkout {
    let mut out = Checkout {
        id: id.to_owned(),
        origin: origin.as_str().to_owned(),
        tree_name: None,
        git_repository_url: None,
        git_repository_branch: None,
        git_commit_hash: None,
        comment: None,
        valid: kernel.resolved.is_some().then_some(true),
        misc: CheckoutMisc {
            debian: None,
            recipe: None,
            source_version: None,
        },
    };
    let debian = kernel.debian.as_ref().map_or_else(
        || {
            // Results from before `debian` was recorded carry "name version".
            kernel.package.as_deref().and_then(|p| {
                p.split_once(' ').map(|(name, version)| DebianMisc {
                    package: name.to_owned(),
                    version: version.to_owned(),
                    suite: None,
                })
            })
        },
        |d| {
            Some(DebianMisc {
                package: d.name.clone(),
                version: d.version.clone(),
                suite: d.suite.clone(),
            })
        },
    );
    if let Some(d) = debian {
        out.comment = Some(match &d.suite {
            Some(suite) => format!("Debian {} {} from {suite}", d.package, d.version),
            None => format!("Debian {} {}", d.package, d.version),
        });
        out.misc.debian = Some(d);
        return out;
    }
    match parsed_spec(kernel) {
        Some(KernelSpec::Path { source, .. }) => {
            out.tree_name = source.tree;
            out.git_repository_url = source.repo.map(|r| names::link(&r));
            out.git_repository_branch = source.branch;
            // KCIDB takes only a full hash; a `git describe` name or a short hash
            // stays in the spec, which the build's misc records.
            out.git_commit_hash = source
                .commit
                .filter(|c| kchaos_images::spec::is_full_hash(c))
                .or_else(|| {
                    kernel
                        .source
                        .as_ref()
                        .map(|s| s.commit.clone())
                        .filter(|c| kchaos_images::spec::is_full_hash(c))
                });
            out.comment = Some(match &kernel.release {
                Some(release) => format!("a local build of {release}"),
                None => "a local build".to_owned(),
            });
        }
        Some(KernelSpec::Build {
            recipe,
            source_version,
        }) => {
            out.comment = Some(match &source_version {
                Some(v) => format!("Debian's kernel source {v} with kchaos's recipe `{recipe}`"),
                None => format!("Debian's kernel source with kchaos's recipe `{recipe}`"),
            });
            out.misc.recipe = Some(recipe);
            out.misc.source_version = source_version;
        }
        _ => {
            out.comment = Some(match &kernel.resolved {
                Some(resolved) => resolved.clone(),
                None => format!("{} (not resolved)", kernel.spec),
            });
        }
    }
    out
}

pub(super) fn build(kernel: &KernelInfo, id: &str, origin: &Origin) -> Build {
    let config_name = match parsed_spec(kernel) {
        Some(KernelSpec::Debian { flavour, .. }) => Some(flavour.as_str().to_owned()),
        Some(KernelSpec::Build { recipe, .. }) => Some(recipe),
        _ => None,
    };
    Build {
        id: id.to_owned(),
        checkout_id: id.to_owned(),
        origin: origin.as_str().to_owned(),
        architecture: Some(ARCHITECTURE.to_owned()),
        config_name,
        comment: Some(
            kernel
                .resolved
                .clone()
                .unwrap_or_else(|| kernel.spec.clone()),
        ),
        // A kernel that resolved is one that exists to boot; one that did not is
        // unknown, not a failed build.
        status: kernel.resolved.is_some().then_some(Status::Pass),
        misc: BuildMisc {
            spec: kernel.spec.clone(),
            resolved: kernel.resolved.clone(),
            release: kernel.release.clone(),
        },
    }
}
