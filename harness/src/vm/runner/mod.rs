//! Finding the static runner binary that becomes the guest's `/init`.
//!
//! Order: `--runner` / `$KCHAOS_RUNNER`; the runner embedded in this binary at build
//! time (release builds: `cargo install`, `cargo kchaos`; rebuilt whenever the runner's
//! sources change); in a source checkout, build it with cargo (a no-op when up to date,
//! so edits are always picked up); else `kchaos-runner` next to the `kchaos` binary (the
//! container image's layout). It must be statically linked: the initramfs has no libc.

use std::path::{Path, PathBuf};

use object::read::elf::ElfFile64;
use object::{Endianness, Object};

mod cargo_build;

pub use self::cargo_build::{PROFILE, TARGET};

#[derive(Debug, thiserror::Error)]
pub enum RunnerBinError {
    #[error("Cannot read the runner binary {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is dynamically linked; the guest has no libc. Build it with RUSTFLAGS='-C target-feature=+crt-static' cargo build --profile {PROFILE} -p kchaos-runner --target {TARGET}")]
    NotStatic { path: String },
    #[error("{path} is not an x86-64 ELF executable")]
    NotElf { path: String },
    #[error("Building the runner failed (`{command}` exited with {status}); see the compiler output above")]
    Build { command: String, status: String },
    #[error("Cannot run cargo to build the runner")]
    Cargo(#[source] std::io::Error),
    #[error("No runner binary: not in a kchaos source checkout and no kchaos-runner next to {exe}; pass --runner PATH")]
    NotFound { exe: String },
}

#[derive(Debug, Clone)]
pub struct RunnerBinary {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

/// The checkout this harness was built from, if it is still there.
fn workspace_root() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()?
        .to_path_buf();
    root.join("runner/Cargo.toml").is_file().then_some(root)
}

pub fn locate(explicit: Option<&Path>) -> Result<RunnerBinary, RunnerBinError> {
    if let Some(path) = explicit.map(Path::to_path_buf).or_else(|| {
        std::env::var_os("KCHAOS_RUNNER")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    }) {
        return load(&path);
    }
    if let Some(bytes) = embedded() {
        let path = PathBuf::from("(embedded in kchaos)");
        // Copied first: `include_bytes!` data has alignment 1, and the ELF parser
        // refuses a header that is not 8-byte aligned (a heap copy always is).
        let bytes = bytes.to_vec();
        check_static(&path, &bytes)?;
        return Ok(RunnerBinary { path, bytes });
    }
    if let Some(root) = workspace_root() {
        return load(&build(&root)?);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let sibling = exe.with_file_name("kchaos-runner");
    if sibling.is_file() {
        return load(&sibling);
    }
    Err(RunnerBinError::NotFound {
        exe: exe.display().to_string(),
    })
}

/// The runner embedded at build time, if this build has one.
pub fn embedded() -> Option<&'static [u8]> {
    #[cfg(kchaos_embedded_runner)]
    {
        Some(include_bytes!(env!("KCHAOS_EMBEDDED_RUNNER")))
    }
    #[cfg(not(kchaos_embedded_runner))]
    {
        None
    }
}

/// Builds the runner statically. `--target` must be explicit so RUSTFLAGS apply to the
/// runner only, not to build scripts and proc macros (which cannot be static).
pub fn build(root: &Path) -> Result<PathBuf, RunnerBinError> {
    let target_dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = cargo_build::command(&cargo, root, &target_dir);
    // cargo's own progress goes to the terminal: the first build takes minutes.
    eprintln!("kchaos: building the static guest runner (cargo build --profile {PROFILE} -p kchaos-runner --target {TARGET}); the first build takes a few minutes, later ones seconds");
    let status = cmd.status().map_err(RunnerBinError::Cargo)?;
    if !status.success() {
        return Err(RunnerBinError::Build {
            command: format!("{cmd:?}"),
            status: status.to_string(),
        });
    }
    Ok(cargo_build::output(&target_dir))
}

fn load(path: &Path) -> Result<RunnerBinary, RunnerBinError> {
    let bytes = std::fs::read(path).map_err(|source| RunnerBinError::Read {
        path: path.display().to_string(),
        source,
    })?;
    check_static(path, &bytes)?;
    Ok(RunnerBinary {
        path: path.to_path_buf(),
        bytes,
    })
}

fn check_static(path: &Path, bytes: &[u8]) -> Result<(), RunnerBinError> {
    let elf = ElfFile64::<Endianness>::parse(bytes).map_err(|_| RunnerBinError::NotElf {
        path: path.display().to_string(),
    })?;
    if elf.section_by_name(".interp").is_some() {
        return Err(RunnerBinError::NotStatic {
            path: path.display().to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_binaries_are_refused_with_the_fix() {
        // The test binary itself is dynamically linked.
        let exe = std::env::current_exe().unwrap();
        let e = load(&exe).unwrap_err();
        assert!(
            e.to_string().contains("dynamically linked") && e.to_string().contains("crt-static"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk");
        std::fs::write(&junk, b"#!/bin/sh\n").unwrap();
        assert!(matches!(load(&junk), Err(RunnerBinError::NotElf { .. })));
    }

    #[test]
    fn a_static_binary_is_accepted_at_any_alignment() {
        // A minimal static ELF64 header: no program interpreter. Checked at an odd
        // offset too, as `include_bytes!` data may be: the caller must copy it.
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2; // 64-bit
        elf[5] = 1; // little-endian
        elf[6] = 1; // version
        elf[16] = 2; // ET_EXEC
        elf[18] = 62; // EM_X86_64
        elf[20] = 1;
        elf[52] = 64; // e_ehsize
        let path = Path::new("x");
        check_static(path, &elf).unwrap();
        let mut shifted = [0u8; 65];
        shifted[1..].copy_from_slice(&elf);
        let copy = shifted[1..].to_vec();
        check_static(path, &copy).unwrap();
    }
}
