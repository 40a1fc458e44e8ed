//! Debian's debug kernels (`linux-image-…-dbg`): the vmlinux with symbols that `crash`
//! needs, from the same release as the kernel that ran.

use std::path::PathBuf;
use std::process::Command;

use super::abi::{abi_of, DebianVersion, Flavour};
use super::error::DebianError;
use super::release::{self, Release};
use super::source::PackageSource;
use crate::cache::Cache;
use crate::file_io::io;
use crate::host_tool;
use crate::resolved::{DebianPackage, Kernel};

/// The release a Debian kernel came from: its recorded suite, else where its ABI points.
fn release_of(package: &DebianPackage) -> Option<Release> {
    if let Some(suite) = &package.suite {
        return Release::of_suite(suite);
    }
    let abi = [Flavour::Cloud, Flavour::Rt, Flavour::Generic]
        .into_iter()
        .find_map(|f| abi_of(&package.name, f))?;
    release::candidates(&DebianVersion::Abi(abi), None)
        .first()
        .copied()
}

/// The debug vmlinux (with symbols) of a Debian kernel, from its `-dbg` package in the
/// same release, for `crash`. Only the vmlinux is extracted (the package unpacks to
/// ~1.7 GB) and cached.
pub fn debug_vmlinux(
    cache: &Cache,
    kernel: &Kernel,
    source: &dyn PackageSource,
) -> Result<PathBuf, DebianError> {
    let no_package = |detail: String| DebianError::NoPackage {
        spec: kernel.spec.clone(),
        detail,
    };
    let package = kernel.debian.as_ref().ok_or_else(|| {
        no_package(
            "it is not a Debian package; pass the vmlinux of the build with --vmlinux".to_owned(),
        )
    })?;
    let name = &package.name;
    let dbg = format!("{}-dbg", name.strip_suffix("-unsigned").unwrap_or(name));
    let dir = cache
        .dir("kernels/debian-dbg")?
        .join(format!("{dbg}_{}", package.version));
    let vmlinux = dir.join(format!("vmlinux-{}", kernel.release));
    if vmlinux.is_file() {
        return Ok(vmlinux);
    }
    let rel = release_of(package)
        .ok_or_else(|| no_package(format!("cannot tell which Debian release {name} is from")))?;
    let candidate = source
        .candidate(rel, &dbg)?
        .filter(|c| c.version == package.version)
        .ok_or_else(|| {
            no_package(format!(
                "{rel} offers no {dbg} {} (Debian keeps -dbg packages for some ABIs only)",
                package.version
            ))
        })?;
    tracing::info!("downloading {dbg} (large: about 300 MB) for its vmlinux");
    let scratch = cache.scratch("kernels/debian-dbg")?;
    let deb = source.download(&dbg, &candidate, scratch.path())?;
    let member = format!("./usr/lib/debug/boot/vmlinux-{}", kernel.release);
    // dpkg-deb streams the data archive; tar extracts the one member we need.
    let script = format!(
        "dpkg-deb --fsys-tarfile '{}' | tar -x -C '{}' '{member}'",
        deb.display(),
        scratch.path().display()
    );
    host_tool::run(Command::new("sh").arg("-c").arg(&script))?;
    let extracted = scratch.path().join(member.trim_start_matches("./"));
    std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
    std::fs::rename(&extracted, &vmlinux).map_err(io("move into place", &vmlinux))?;
    Ok(vmlinux)
}
