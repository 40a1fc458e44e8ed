//! A cell decided without booting: a `skip` (the kernel cannot run the scenario) or an
//! `error` (no QEMU, no kernel, no image, a cell task that failed). It is recorded like
//! any other cell, with its own `cell.json`.

use std::path::Path;

use kchaos_images::Kernel;
use kchaos_model::topology::Topology;
use kchaos_model::verdict::Verdict;

use crate::plan;
use crate::results::{write_json, Artifacts, CellResult, KernelInfo};
use crate::scenario::LoadedScenario;

/// Who the cell is, before anything about it is known.
#[derive(Debug, Clone, Copy)]
pub struct Preboot<'a> {
    /// The results directory.
    pub dir: &'a Path,
    pub scenario: &'a LoadedScenario,
    /// The kernel as asked.
    pub spec: &'a str,
    /// The kernel as resolved, when it was.
    pub kernel: Option<&'a Kernel>,
    /// The topology axis's column, when the run has one.
    pub topology: Option<Topology>,
    pub seed: u64,
    pub repeat: u32,
    /// Repeats in the run (the id names the repeat when there are several).
    pub repeats: u32,
}

impl Preboot<'_> {
    /// The kernel's part of the cell id: its label when resolved, else the spec made
    /// safe for a directory name.
    pub fn label(&self) -> String {
        match self.kernel {
            Some(k) => k.label(),
            None => sanitize(self.spec),
        }
    }

    pub fn id(&self) -> String {
        plan::cell_id(
            &self.scenario.model.name,
            &self.label(),
            self.topology,
            self.repeat,
            self.repeats,
        )
    }

    /// The decided cell, also written to its `cell.json` (best effort: the run records
    /// it in `results.json` whatever happens here).
    pub fn result(&self, verdict: Verdict, reason: String) -> CellResult {
        let id = self.id();
        let cell_dir = self.dir.join(&id);
        let result = CellResult {
            reasons: vec![reason],
            topology: self.topology.map(|t| t.label()),
            artifacts: Artifacts {
                dir: cell_dir
                    .strip_prefix(self.dir)
                    .ok()
                    .map(|p| p.display().to_string()),
                ..Artifacts::default()
            },
            ..CellResult::new(
                id,
                self.scenario,
                KernelInfo::of(self.spec, self.kernel),
                self.seed,
                self.repeat,
                verdict,
            )
        };
        if std::fs::create_dir_all(&cell_dir).is_ok() {
            if let Err(e) = write_json(&cell_dir.join("cell.json"), &result) {
                tracing::warn!("{}", kchaos_model::error_chain(&e));
            }
        }
        result
    }
}

/// A kernel spec as a directory name: anything but `[A-Za-z0-9.+_-]` becomes `-`.
pub fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_become_safe_directory_names() {
        assert_eq!(sanitize("path:/a b/bzImage,x=1"), "path--a-b-bzImage-x-1");
        assert_eq!(sanitize("debian:6.1-cloud"), "debian-6.1-cloud");
    }
}
