//! Loading scenario files: expand directories, parse and validate every file, report every
//! error as `FILE:LINE:COL: key: message`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cell::LoadedScenario;

/// The files named, with directories expanded to their `*.toml` files (sorted).
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Vec<String>> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        if path.is_dir() {
            match std::fs::read_dir(path) {
                Ok(entries) => {
                    let mut found: Vec<PathBuf> = entries
                        .filter_map(Result::ok)
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                        .collect();
                    found.sort();
                    if found.is_empty() {
                        errors.push(format!(
                            "{}: no *.toml scenario files in this directory",
                            path.display()
                        ));
                    }
                    files.extend(found);
                }
                Err(e) => errors.push(format!("{}: {e}", path.display())),
            }
        } else {
            files.push(path.clone());
        }
    }
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(errors)
    }
}

pub fn load_file(path: &Path) -> Result<LoadedScenario, Vec<String>> {
    let source = std::fs::read_to_string(path)
        .map_err(|e| vec![format!("{}: cannot read: {e}", path.display())])?;
    let label = path.display().to_string();
    match kchaos_model::scenario::parse(&label, &source) {
        Ok(model) => Ok(LoadedScenario {
            path: path.to_path_buf(),
            source,
            model,
        }),
        Err(errors) => Err(errors.0.iter().map(ToString::to_string).collect()),
    }
}

/// Loads every scenario; all errors of all files, or the scenarios.
pub fn load_all(paths: &[PathBuf]) -> Result<Vec<Arc<LoadedScenario>>, Vec<String>> {
    let files = expand(paths)?;
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        match load_file(&file) {
            Ok(s) => out.push(Arc::new(s)),
            Err(e) => errors.extend(e),
        }
    }
    let mut names = std::collections::BTreeMap::new();
    for s in &out {
        if let Some(other) = names.insert(s.model.name.clone(), s.path.clone()) {
            errors.push(format!(
                "{}: scenario name `{}` is also used by {}; names must be unique in a run",
                s.path.display(),
                s.model.name,
                other.display()
            ));
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}
