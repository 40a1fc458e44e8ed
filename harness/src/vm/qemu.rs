//! Finding QEMU and its version.

use std::path::PathBuf;
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error("QEMU ({name}) was not found in PATH; install it (`kchaos setup`, or `apt-get install qemu-system-x86`) or point KCHAOS_QEMU at it")]
    NotFound { name: String },
    #[error("Cannot run {path} --version")]
    Version {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A usable QEMU binary and its version.
#[derive(Debug, Clone)]
pub struct Qemu {
    pub path: PathBuf,
    pub version: String,
    /// The firmware cells boot with: qboot when QEMU ships it (it hands the kernel over
    /// in a fraction of SeaBIOS's time under TCG), else QEMU's default (`None`).
    pub firmware: Option<PathBuf>,
}

const BINARY: &str = "qemu-system-x86_64";

impl Qemu {
    /// `$KCHAOS_QEMU`, else `qemu-system-x86_64` from PATH.
    pub fn find() -> Result<Qemu, QemuError> {
        let path = match std::env::var_os("KCHAOS_QEMU").filter(|v| !v.is_empty()) {
            Some(p) => PathBuf::from(p),
            None => find_in_path(BINARY).ok_or_else(|| QemuError::NotFound {
                name: BINARY.to_owned(),
            })?,
        };
        let out = Command::new(&path)
            .arg("--version")
            .output()
            .map_err(|source| QemuError::Version {
                path: path.display().to_string(),
                source,
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        let version = text
            .lines()
            .next()
            .and_then(|l| l.split("version ").nth(1))
            .and_then(|v| v.split_whitespace().next())
            .unwrap_or("unknown")
            .to_owned();
        let firmware = firmware(&path);
        Ok(Qemu {
            path,
            version,
            firmware,
        })
    }
}

/// Where distributions put qboot (Debian's qemu-system-data: /usr/share/qemu).
const QBOOT: &[&str] = &["share/qemu/qboot.rom", "share/qemu-kvm/qboot.rom"];

/// `$KCHAOS_FIRMWARE` (a file, or `default` for QEMU's own), else qboot from the data
/// directory next to QEMU's binary, else `None`.
fn firmware(qemu: &std::path::Path) -> Option<PathBuf> {
    match std::env::var_os("KCHAOS_FIRMWARE").filter(|v| !v.is_empty()) {
        Some(v) if v == "default" => return None,
        Some(v) => return Some(PathBuf::from(v)),
        None => {}
    }
    let canonical = std::fs::canonicalize(qemu).unwrap_or_else(|_| qemu.to_path_buf());
    let prefix = canonical.parent()?.parent()?.to_path_buf();
    [prefix.as_path(), std::path::Path::new("/usr")]
        .iter()
        .flat_map(|p| QBOOT.iter().map(move |q| p.join(q)))
        .find(|p| p.is_file())
}

pub use kchaos_images::tools::find_program as find_in_path;
