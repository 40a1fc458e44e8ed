//! A kernel ready to boot: image, modules, config and exact release, from a spec.

use std::path::Path;

use crate::bzimage::{self, BzImageError};
use crate::cache::Cache;
use crate::debian::{self, AptSource, DebianError, PackageSource};
use crate::recipe::{self, RecipeError};
pub use crate::resolved::{DebianPackage, Kernel};
use crate::spec::{KernelSpec, SpecError};

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    BzImage(#[from] BzImageError),
    #[error(transparent)]
    Debian(#[from] DebianError),
    #[error("Kernel image {path} does not exist")]
    MissingImage { path: String },
    #[error("Modules directory {path} does not exist or has no modules for {release}")]
    MissingModules { path: String, release: String },
    #[error("Cannot read {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Recipe(#[from] RecipeError),
}

/// Resolves a spec, downloading and unpacking Debian packages into the cache as needed.
pub fn resolve(cache: &Cache, spec: &str) -> Result<Kernel, KernelError> {
    resolve_with(cache, spec, &AptSource)
}

pub fn resolve_with(
    cache: &Cache,
    spec: &str,
    source: &dyn PackageSource,
) -> Result<Kernel, KernelError> {
    match KernelSpec::parse(spec)? {
        KernelSpec::Debian {
            version,
            flavour,
            release,
        } => Ok(debian::fetch(
            cache, spec, &version, flavour, release, source,
        )?),
        KernelSpec::Path {
            bzimage,
            modules,
            config,
            ..
        } => local(spec, &bzimage, modules.as_deref(), config.as_deref()),
        KernelSpec::Build {
            recipe,
            source_version,
        } => Ok(recipe::resolve(
            cache,
            spec,
            &recipe,
            source_version.as_deref(),
            &recipe::AptHost::new(cache, source),
        )?),
    }
}

fn local(
    spec: &str,
    bzimage: &Path,
    modules: Option<&Path>,
    config: Option<&Path>,
) -> Result<Kernel, KernelError> {
    if !bzimage.is_file() {
        return Err(KernelError::MissingImage {
            path: bzimage.display().to_string(),
        });
    }
    let release = bzimage::release_of(bzimage)?;
    let modules_dir = match modules {
        None => None,
        Some(dir) => {
            // Accept the release directory itself or an install root holding lib/modules/<release>.
            let candidates = [dir.to_path_buf(), dir.join("lib/modules").join(&release)];
            let found = candidates
                .into_iter()
                .find(|d| d.join("modules.builtin").is_file() || d.join("kernel").is_dir());
            Some(found.ok_or_else(|| KernelError::MissingModules {
                path: dir.display().to_string(),
                release: release.clone(),
            })?)
        }
    };
    let config_path = match config {
        Some(c) if c.is_file() => Some(c.to_path_buf()),
        Some(c) => {
            return Err(KernelError::Io {
                path: c.display().to_string(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })
        }
        // A tree built in place has .config three levels above arch/x86/boot/bzImage.
        None => bzimage
            .ancestors()
            .skip(1)
            .take(4)
            .map(|d| d.join(".config"))
            .find(|p| p.is_file()),
    };
    Ok(Kernel {
        spec: spec.to_owned(),
        resolved: spec.to_owned(),
        release,
        package: None,
        debian: None,
        bzimage: bzimage
            .canonicalize()
            .unwrap_or_else(|_| bzimage.to_path_buf()),
        modules_dir,
        config_path,
    })
}
