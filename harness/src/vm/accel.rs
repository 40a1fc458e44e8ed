//! Does KVM really work here? `/dev/kvm` existing is not enough: on some hosts QEMU
//! aborts setting MSRs, on others a guest spins without output. The probe boots a
//! 16-byte firmware that writes one byte to the serial port and exits through
//! `isa-debug-exit`, with the same CPU model a cell would use, under a hard deadline.
//! The answer is cached per host boot and QEMU version.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::qemu::Qemu;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    /// `-accel` and `-cpu` arguments. Under TCG `la57=off` spawns processes ~25% faster
    /// than plain `max` (fewer page-table levels to emulate).
    pub fn args(self) -> [&'static str; 4] {
        match self {
            Accel::Kvm => ["-accel", "kvm", "-cpu", "host"],
            Accel::Tcg => ["-accel", "tcg", "-cpu", "max,la57=off"],
        }
    }

    /// How much slower than KVM to expect: timeouts are multiplied by this.
    pub fn slowdown(self) -> u32 {
        match self {
            Accel::Kvm => 1,
            Accel::Tcg => 4,
        }
    }
}

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccelChoice {
    Auto,
    Force(Accel),
}

/// The result of detection, with why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccelDecision {
    pub accel: Accel,
    pub reason: String,
}

const PROBE_DEADLINE: Duration = Duration::from_secs(5);

/// A 64 KiB BIOS image whose reset vector (at 0xFFF0) does:
/// `mov dx,0x3f8; mov al,'K'; out dx,al; mov dx,0xf4; mov al,0; out dx,al; hlt; jmp $`.
pub fn probe_firmware() -> Vec<u8> {
    let code: [u8; 15] = [
        0xBA, 0xF8, 0x03, 0xB0, b'K', 0xEE, 0xBA, 0xF4, 0x00, 0xB0, 0x00, 0xEE, 0xF4, 0xEB, 0xFE,
    ];
    let mut image = vec![0xF4u8; 0x10000];
    image[0xFFF0..0xFFF0 + code.len()].copy_from_slice(&code);
    image
}

pub async fn detect(qemu: &Qemu, choice: AccelChoice, cache_dir: &Path) -> AccelDecision {
    if let AccelChoice::Force(accel) = choice {
        return AccelDecision {
            accel,
            reason: "chosen with --accel".to_owned(),
        };
    }
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return AccelDecision {
            accel: Accel::Tcg,
            reason: "/dev/kvm cannot be opened".to_owned(),
        };
    }
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let cache_file = cache_dir.join(format!("accel-{}-{}.json", boot_id.trim(), qemu.version));
    if let Some(cached) = std::fs::read(&cache_file)
        .ok()
        .and_then(|b| serde_json::from_slice::<AccelDecision>(&b).ok())
    {
        return cached;
    }
    let decision = probe(qemu, cache_dir).await;
    if let Ok(bytes) = serde_json::to_vec(&decision) {
        let _ = kchaos_images::cache::Cache::write_atomic(&cache_file, &bytes);
    }
    decision
}

async fn probe(qemu: &Qemu, dir: &Path) -> AccelDecision {
    let tcg = |reason: String| AccelDecision {
        accel: Accel::Tcg,
        reason,
    };
    let firmware = dir.join("kvm-probe.bin");
    if let Err(e) =
        std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&firmware, probe_firmware()))
    {
        return tcg(format!("cannot write the KVM probe firmware: {e}"));
    }
    let mut cmd = tokio::process::Command::new(&qemu.path);
    cmd.args(Accel::Kvm.args())
        .args([
            "-machine",
            "q35",
            "-m",
            "16",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-serial",
            "stdio",
        ])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-bios"])
        .arg(&firmware)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return tcg(format!("cannot start QEMU for the KVM probe: {e}")),
    };
    match tokio::time::timeout(PROBE_DEADLINE, child.wait_with_output()).await {
        Err(_) => tcg(format!(
            "a KVM guest produced no output within {PROBE_DEADLINE:?}"
        )),
        Ok(Err(e)) => tcg(format!("KVM probe failed: {e}")),
        // isa-debug-exit with value 0 exits with status (0 << 1) | 1 = 1.
        Ok(Ok(out)) if out.stdout.contains(&b'K') && out.status.code() == Some(1) => {
            AccelDecision {
                accel: Accel::Kvm,
                reason: "KVM probe guest ran".to_owned(),
            }
        }
        Ok(Ok(out)) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let first = stderr
                .lines()
                .next()
                .unwrap_or("no output")
                .trim()
                .to_owned();
            tcg(format!("QEMU with KVM failed ({}): {first}", out.status))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firmware_has_the_reset_vector_code() {
        let fw = probe_firmware();
        assert_eq!(fw.len(), 65536);
        assert_eq!(&fw[0xFFF0..0xFFF3], &[0xBA, 0xF8, 0x03]);
    }
}
