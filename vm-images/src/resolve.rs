//! A kernel ready to boot: image, modules, config and exact release, from a spec.

use std::path::Path;

use crate::cache::Cache;
use crate::debian::{self, AptSource, DebianError, PackageSource};
use crate::file_io::IoError;
use crate::kernel::bzimage::{self, BzImageError};
use crate::kernel::spec::{KernelSpec, SpecError};
use crate::recipe::{self, RecipeError};
use crate::resolved::{Kernel, SourceCommit};

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
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Recipe(#[from] RecipeError),
}

/// Resolves a spec, downloading and unpacking Debian packages into the cache as needed.
pub fn resolve(cache: &Cache, spec: &str) -> Result<Kernel, KernelError> {
    resolve_with(cache, spec, &AptSource::new(cache))
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
            source,
        } => local(
            spec,
            &bzimage,
            modules.as_deref(),
            config.as_deref(),
            source.commit.as_deref(),
        ),
        KernelSpec::Build {
            recipe,
            source_version,
        } => Ok(recipe::resolve(
            cache,
            spec,
            &recipe,
            source_version.as_deref(),
            &recipe::AptHost::new(source),
        )?),
    }
}

fn local(
    spec: &str,
    bzimage: &Path,
    modules: Option<&Path>,
    config: Option<&Path>,
    commit: Option<&str>,
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
            return Err(KernelError::Io(IoError {
                what: "read",
                path: c.display().to_string(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            }))
        }
        // A tree built in place has .config three levels above arch/x86/boot/bzImage.
        None => bzimage
            .ancestors()
            .skip(1)
            .take(4)
            .map(|d| d.join(".config"))
            .find(|p| p.is_file()),
    };
    let source = source_commit(commit, config_path.as_deref(), bzimage);
    Ok(Kernel {
        spec: spec.to_owned(),
        resolved: spec.to_owned(),
        release,
        package: None,
        debian: None,
        source,
        bzimage: bzimage
            .canonicalize()
            .unwrap_or_else(|_| bzimage.to_path_buf()),
        modules_dir,
        config_path,
    })
}

/// The commit a local build came from: `commit=` in its spec, completed (or supplied)
/// by the `kchaos-source` file `build.sh` leaves beside the `.config` it used.
fn source_commit(
    commit: Option<&str>,
    config: Option<&Path>,
    bzimage: &Path,
) -> Option<SourceCommit> {
    let beside_config = config
        .and_then(Path::parent)
        .map(|d| d.join(crate::resolved::SOURCE_FILE));
    let above_image = bzimage
        .ancestors()
        .skip(1)
        .take(4)
        .map(|d| d.join(crate::resolved::SOURCE_FILE));
    let recorded = beside_config
        .into_iter()
        .chain(above_image)
        .find_map(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| SourceCommit::parse(&t));
    match (commit, recorded) {
        // The file describes this build only if it names the same commit.
        (Some(c), Some(r)) if r.commit == c || r.commit.starts_with(c) => Some(r),
        (Some(c), _) => Some(SourceCommit {
            commit: c.to_owned(),
            describe: None,
            dirty: false,
        }),
        (None, recorded) => recorded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_build_names_its_commit_from_its_spec_or_its_source_file() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let boot = out.join("arch/x86/boot");
        std::fs::create_dir_all(&boot).unwrap();
        let image = boot.join("bzImage");
        let config = out.join(".config");
        // No file, no commit=: nothing known.
        assert_eq!(source_commit(None, Some(&config), &image), None);
        // commit= alone.
        let only = source_commit(Some("abc123"), Some(&config), &image).unwrap();
        assert_eq!(
            (only.commit.as_str(), only.describe, only.dirty),
            ("abc123", None, false)
        );
        std::fs::write(
            out.join(crate::resolved::SOURCE_FILE),
            "commit=abc123def\ndescribe=v6.1-2-gabc123def\ndirty=0\n",
        )
        .unwrap();
        // The file beside the config completes a commit= it agrees with ...
        let both = source_commit(Some("abc123"), Some(&config), &image).unwrap();
        assert_eq!(both.describe.as_deref(), Some("v6.1-2-gabc123def"));
        // ... is ignored when it names another commit ...
        let other = source_commit(Some("fff000"), Some(&config), &image).unwrap();
        assert_eq!((other.commit.as_str(), other.describe), ("fff000", None));
        // ... and serves alone, found above the bzImage when no config is named.
        let found = source_commit(None, None, &image).unwrap();
        assert_eq!(found.commit, "abc123def");
    }
}
