//! How the static guest runner is built with cargo: one definition for the harness's
//! build script (which embeds it in release builds) and for `vm::runner` (which
//! builds it at run time in a checkout). Standard library only: the build script
//! includes this file by path.

use std::path::Path;
use std::process::Command;

/// An explicit target, so RUSTFLAGS apply to the runner only, not to build scripts and
/// proc macros (which cannot be static).
pub const TARGET: &str = "x86_64-unknown-linux-gnu";
/// Built for size: every byte is unpacked into the VM on every boot.
pub const PROFILE: &str = "guest";

/// `cargo build` of the runner in workspace `root` into `target_dir`, statically linked,
/// with none of an outer cargo's settings leaking in.
pub fn command(cargo: &std::ffi::OsStr, root: &Path, target_dir: &Path) -> Command {
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args([
            "build",
            "--profile",
            PROFILE,
            "-p",
            "kchaos-runner",
            "--target",
            TARGET,
        ])
        .env("CARGO_TARGET_DIR", target_dir)
        // A classic static executable, not a static PIE: nothing to self-relocate at
        // each boot (~14k relocations) and 0.35 MiB less to unpack into every VM; the
        // guest has no use for ASLR of its init.
        .env(
            "RUSTFLAGS",
            "-C target-feature=+crt-static -C relocation-model=static",
        )
        // Set by an outer cargo (cargo test/run/build scripts); it would override
        // RUSTFLAGS.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTC_WRAPPER");
    cmd
}

/// Where that build leaves the binary.
pub fn output(target_dir: &Path) -> std::path::PathBuf {
    target_dir.join(TARGET).join(PROFILE).join("kchaos-runner")
}
