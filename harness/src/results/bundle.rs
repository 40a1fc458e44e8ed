//! Replay bundles: every cell that did not pass leaves `replay.tar.gz` in its directory,
//! one file to attach to a bug report. It holds what reruns exactly that cell (the
//! scenario as run, the exact kernel, seed, accelerator) and what shows it was the same
//! (kernel command line, QEMU version and command line, image key, runner version),
//! with the cell's evidence and a `REPLAY.txt` saying how. Guest memory dumps stay out
//! (hundreds of MiB); they remain in the results directory.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::results::{CellResult, KernelInfo};

/// The file name of a cell's bundle.
pub const FILE: &str = "replay.tar.gz";
/// The directory inside the archive.
const ROOT: &str = "kchaos-replay";
/// Evidence copied from the cell directory when present.
const FILES: [&str; 7] = [
    "scenario.toml",
    "cell.json",
    "console.log",
    "kmsg.log",
    "qemu.log",
    "qemu.cmdline",
    "sysrq.txt",
];

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("Cannot write the replay bundle {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot read the replay bundle {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a kchaos replay bundle: {why}")]
    Invalid { path: String, why: String },
}

/// `bundle.json`: what the replay needs and what it checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub kchaos_version: String,
    pub cell: String,
    pub scenario: String,
    pub seed: u64,
    pub kernel: KernelInfo,
    pub image: Option<crate::vm::image::ImageInfo>,
    pub accel: Option<String>,
    pub qemu_version: Option<String>,
    pub qemu_cmdline: Option<String>,
    /// The guest kernel's command line (QEMU's `-append`).
    pub kernel_cmdline: Option<String>,
    pub verdict: kchaos_model::verdict::Verdict,
    pub reasons: Vec<String>,
    pub fingerprint: Option<String>,
}

impl Manifest {
    /// The exact kernel to replay on: as resolved (`debian:6.1.0-56-cloud`), not as
    /// asked (`debian:6.1-cloud` may mean a newer ABI by now).
    pub fn kernel_spec(&self) -> &str {
        self.kernel.resolved.as_deref().unwrap_or(&self.kernel.spec)
    }
}

/// The `-append` argument of a recorded QEMU command line.
pub fn kernel_cmdline(qemu_cmdline: &str) -> Option<String> {
    // Recorded space-joined; the kernel command line is everything between `-append`
    // and the next option.
    let after = qemu_cmdline.split_once(" -append ")?.1;
    let end = after.find(" -").unwrap_or(after.len());
    Some(after[..end].trim().to_owned())
}

/// The kernel command line without what names the cell (`kchaos.cell=…`), for
/// comparing a replay with its original.
pub fn comparable_cmdline(cmdline: &str) -> String {
    cmdline
        .split_whitespace()
        .filter(|w| !w.starts_with("kchaos.cell="))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Writes `cell_dir/replay.tar.gz` for `cell`.
pub fn write(
    cell_dir: &Path,
    cell: &CellResult,
    qemu_version: Option<&str>,
) -> Result<PathBuf, BundleError> {
    let path = cell_dir.join(FILE);
    let err = |source| BundleError::Write {
        path: path.display().to_string(),
        source,
    };
    let qemu_cmdline = std::fs::read_to_string(cell_dir.join("qemu.cmdline"))
        .ok()
        .map(|s| s.trim().to_owned());
    let manifest = Manifest {
        format: 1,
        kchaos_version: kchaos_model::VERSION.to_owned(),
        cell: cell.id.clone(),
        scenario: cell.scenario.clone(),
        seed: cell.seed,
        kernel: cell.kernel.clone(),
        image: cell.image.clone(),
        accel: cell.accel.clone(),
        qemu_version: qemu_version.map(str::to_owned),
        kernel_cmdline: qemu_cmdline.as_deref().and_then(kernel_cmdline),
        qemu_cmdline,
        verdict: cell.verdict,
        reasons: cell.reasons.clone(),
        fingerprint: cell.fingerprint.as_ref().map(|f| f.id.clone()),
    };
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(std::io::Error::other)
        .map_err(err)?;
    let tmp = cell_dir.join(format!(".{FILE}.tmp"));
    let file = std::fs::File::create(&tmp).map_err(err)?;
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        file,
        flate2::Compression::default(),
    ));
    let mut add = |name: &str, bytes: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, format!("{ROOT}/{name}"), bytes)
    };
    add("bundle.json", &json).map_err(err)?;
    add("REPLAY.txt", replay_text(&manifest).as_bytes()).map_err(err)?;
    // The scenario with every default filled in, for reading (the replay runs the
    // file as written, with the defaults of the recorded kchaos version).
    if let Ok(text) = std::fs::read_to_string(cell_dir.join("scenario.toml")) {
        if let Ok(s) = kchaos_model::scenario::parse("scenario.toml", &text) {
            if let Ok(resolved) = serde_json::to_vec_pretty(&s) {
                add("scenario.resolved.json", &resolved).map_err(err)?;
            }
        }
    }
    for name in FILES {
        if let Ok(bytes) = std::fs::read(cell_dir.join(name)) {
            add(name, &bytes).map_err(err)?;
        }
    }
    tar.into_inner()
        .and_then(flate2::write::GzEncoder::finish)
        .map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)?;
    Ok(path)
}

fn replay_text(m: &Manifest) -> String {
    format!(
        "kchaos replay bundle\n\
         ====================\n\n\
         Cell {cell}: {verdict}{why}\n\
         Scenario {scenario}, seed {seed}\n\
         Kernel {kernel} (uname -r {release})\n\
         Accelerator {accel}, QEMU {qemu}, kchaos {version}\n\n\
         To rerun exactly this cell (same scenario file, kernel, seed and accelerator)\n\
         from a kchaos checkout:\n\n    \
         cargo kchaos replay replay.tar.gz\n\n\
         and to see how often it recurs:\n\n    \
         cargo kchaos replay replay.tar.gz --runs 20\n\n\
         The evidence is next to this file: console.log (serial console), kmsg.log\n\
         (every kernel log record), cell.json (the verdict with metrics), qemu.cmdline\n\
         and scenario.toml (as run; scenario.resolved.json has every default filled in).\n",
        cell = m.cell,
        verdict = m.verdict,
        why = m
            .reasons
            .first()
            .map(|r| format!(": {r}"))
            .unwrap_or_default(),
        scenario = m.scenario,
        seed = m.seed,
        kernel = m.kernel_spec(),
        release = m.kernel.release.as_deref().unwrap_or("unknown"),
        accel = m.accel.as_deref().unwrap_or("unknown"),
        qemu = m.qemu_version.as_deref().unwrap_or("unknown"),
        version = m.kchaos_version,
    )
}

/// Unpacks `bundle` into `into` and reads its manifest; returns it with the path of the
/// scenario file to run.
pub fn open(bundle: &Path, into: &Path) -> Result<(Manifest, PathBuf), BundleError> {
    let read_err = |source| BundleError::Read {
        path: bundle.display().to_string(),
        source,
    };
    let invalid = |why: &str| BundleError::Invalid {
        path: bundle.display().to_string(),
        why: why.to_owned(),
    };
    let file = std::fs::File::open(bundle).map_err(read_err)?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    std::fs::create_dir_all(into).map_err(read_err)?;
    let mut manifest = None;
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let name = entry.path().map_err(read_err)?.into_owned();
        // Only plain files directly under the bundle's root: nothing may escape `into`.
        let Some(file_name) = name
            .strip_prefix(ROOT)
            .ok()
            .filter(|rest| rest.components().count() == 1)
            .and_then(Path::file_name)
            .map(Path::new)
        else {
            return Err(invalid(&format!("unexpected entry {}", name.display())));
        };
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(read_err)?;
        if file_name == Path::new("bundle.json") {
            manifest = Some(
                serde_json::from_slice::<Manifest>(&bytes)
                    .map_err(|e| invalid(&format!("bundle.json: {e}")))?,
            );
        }
        std::fs::write(into.join(file_name), &bytes).map_err(read_err)?;
    }
    let manifest = manifest.ok_or_else(|| invalid("no bundle.json"))?;
    let scenario = into.join("scenario.toml");
    if !scenario.exists() {
        return Err(invalid("no scenario.toml"));
    }
    Ok((manifest, scenario))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::test_cell;
    use kchaos_model::verdict::Verdict;

    const SCENARIO: &str = "[scenario]\nname = \"memcg\"\nduration = \"2s\"\n[[probe]]\nkind = \"d-state\"\nname = \"d\"\n";

    #[test]
    fn a_bundle_round_trips_scenario_kernel_seed_and_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let cell_dir = dir.path().join("memcg/k");
        std::fs::create_dir_all(&cell_dir).unwrap();
        std::fs::write(cell_dir.join("scenario.toml"), SCENARIO).unwrap();
        std::fs::write(cell_dir.join("console.log"), "[    1.0] Kernel panic\n").unwrap();
        let cmdline = "/usr/bin/qemu-system-x86_64 -machine q35 -kernel /k/vmlinuz -append console=ttyS0 panic=-1 kchaos.cell=memcg/k/r3 quiet -nographic";
        std::fs::write(cell_dir.join("qemu.cmdline"), format!("{cmdline}\n")).unwrap();
        std::fs::write(cell_dir.join("vmcore.kdump"), vec![0u8; 4096]).unwrap();
        let mut cell = test_cell("memcg/k", Verdict::Crash, 1e6);
        cell.seed = 987_654_321;
        cell.kernel.spec = "debian:6.1-cloud".into();
        cell.kernel.resolved = Some("debian:6.1.0-56-cloud".into());
        let path = write(&cell_dir, &cell, Some("7.2.22")).unwrap();
        assert_eq!(path, cell_dir.join(FILE));

        let out = dir.path().join("replay");
        let (m, scenario) = open(&path, &out).unwrap();
        assert_eq!(std::fs::read_to_string(&scenario).unwrap(), SCENARIO);
        assert_eq!(m.seed, 987_654_321);
        assert_eq!(m.kernel_spec(), "debian:6.1.0-56-cloud");
        assert_eq!(m.verdict, Verdict::Crash);
        assert_eq!(m.qemu_version.as_deref(), Some("7.2.22"));
        assert_eq!(
            m.kernel_cmdline.as_deref(),
            Some("console=ttyS0 panic=-1 kchaos.cell=memcg/k/r3 quiet")
        );
        assert_eq!(
            comparable_cmdline(m.kernel_cmdline.as_deref().unwrap()),
            "console=ttyS0 panic=-1 quiet"
        );
        assert!(std::fs::read_to_string(out.join("REPLAY.txt"))
            .unwrap()
            .contains("kchaos replay replay.tar.gz"));
        assert!(out.join("console.log").exists() && out.join("scenario.resolved.json").exists());
        // The memory dump stays out of the bundle.
        assert!(!out.join("vmcore.kdump").exists());
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let bogus = dir.path().join("bogus.tar.gz");
        std::fs::write(&bogus, b"not a bundle").unwrap();
        let e = open(&bogus, &dir.path().join("x")).unwrap_err().to_string();
        assert!(e.contains("Cannot read the replay bundle"), "{e}");
    }
}
