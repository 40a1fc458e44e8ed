//! Loading scenario files: expand directories, read only what is a reasonable scenario
//! file, parse and validate it for this host, and report every problem as
//! `FILE:LINE:COL: key: message` (or `FILE: message` when there is no position).

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kchaos_model::escape_controls;
use kchaos_model::scenario::{Host, Scenario, ScenarioError};
use kchaos_model::topology::Topology;

/// Scenario files are a few KiB; anything this large is not one (a symlink to
/// `/dev/zero` once made `validate` read 5 GB).
pub const MAX_SCENARIO_BYTES: u64 = 1 << 20;

/// The scenarios shipped with this build (`scenarios/**/*.toml`: relative path, text),
/// so an installed `kchaos` runs them outside a checkout.
pub const BUILTIN: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/builtin_scenarios.rs"));

/// The shipped scenarios as files (`<cache>/builtin/<version>-<hash>/scenarios`), written
/// once: runs record their scenario paths, and `--resume` reads them again.
pub fn builtin_dir(
    cache: &kchaos_images::Cache,
) -> Result<PathBuf, kchaos_images::cache::CacheError> {
    let mut h = kchaos_images::cache::KeyHasher::new("builtin-scenarios-v1");
    for (path, text) in BUILTIN {
        h.field(path.as_bytes()).field(text.as_bytes());
    }
    let key = h.finish();
    let dir = cache
        .dir("builtin")?
        .join(format!("{}-{}", kchaos_model::VERSION, &key[..16]));
    for (rel, text) in BUILTIN {
        let path = dir.join(rel);
        if !path.is_file() {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|source| {
                    kchaos_images::cache::CacheError::Create {
                        path: parent.display().to_string(),
                        source,
                    }
                })?;
            }
            kchaos_images::Cache::write_atomic(&path, text.as_bytes())?;
        }
    }
    Ok(dir.join("scenarios"))
}

/// A scenario file as loaded: where it came from, its text (kept as evidence) and model.
#[derive(Debug, Clone)]
pub struct LoadedScenario {
    pub path: PathBuf,
    pub source: String,
    pub model: Scenario,
}

impl LoadedScenario {
    /// This scenario on `topology` (one column of a topology axis): its VM has that
    /// shape, and its text, kept as the cell's `scenario.toml` and in replay bundles,
    /// says so (`[vm] cpus` set, every comment kept), so a replay boots the same machine.
    pub fn with_topology(&self, topology: Topology) -> Result<LoadedScenario, String> {
        let mut doc: toml_edit::DocumentMut = self
            .source
            .parse()
            .map_err(|e| format!("{}: {e}", shown(&self.path)))?;
        let value = if topology.sockets == 1 && topology.threads == 1 {
            toml_edit::value(i64::from(topology.cpus()))
        } else {
            toml_edit::value(topology.label())
        };
        // A `[vm]` table of its own when there is none (indexing would make an inline
        // one at the top, before the file's header comment).
        if !doc.contains_key("vm") {
            doc.insert("vm", toml_edit::Item::Table(toml_edit::Table::new()));
        }
        doc["vm"]["cpus"] = value;
        if let Some(v) = doc["vm"]["cpus"].as_value_mut() {
            v.decor_mut()
                .set_suffix(" # set by kchaos: this cell's column of the topology axis");
        }
        let mut model = self.model.clone();
        model.vm = model.vm.with_topology(topology);
        Ok(LoadedScenario {
            path: self.path.clone(),
            source: doc.to_string(),
            model,
        })
    }
}

/// One problem with the scenarios given.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A problem inside a file, at a line and column.
    #[error("{0}")]
    Invalid(ScenarioError),
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a regular file (a directory is expanded, a FIFO or device is refused)")]
    NotRegular { path: String },
    #[error(
        "{path}: {size} bytes is too large for a scenario file (at most {MAX_SCENARIO_BYTES})"
    )]
    TooLarge { path: String, size: u64 },
    #[error("{path}: not UTF-8 text")]
    NotText { path: String },
    #[error("{path}: no *.toml scenario files in this directory")]
    EmptyDir { path: String },
    #[error(
        "{path}: scenario name `{name}` is also used by {other}; names must be unique in a run"
    )]
    DuplicateName {
        path: String,
        name: String,
        other: String,
    },
}

/// Every problem found, one per line.
#[derive(Debug)]
pub struct LoadErrors(pub Vec<LoadError>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        kchaos_model::write_lines(f, &self.0)
    }
}

impl std::error::Error for LoadErrors {}

fn shown(path: &Path) -> String {
    escape_controls(&path.display().to_string()).into_owned()
}

/// The files named, with directories expanded to their `*.toml` files (sorted).
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, LoadErrors> {
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
                        errors.push(LoadError::EmptyDir { path: shown(path) });
                    }
                    files.extend(found);
                }
                Err(source) => errors.push(LoadError::Read {
                    path: shown(path),
                    source,
                }),
            }
        } else {
            files.push(path.clone());
        }
    }
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(LoadErrors(errors))
    }
}

/// Reads a scenario file's text: a regular file (after symlinks) of at most
/// [`MAX_SCENARIO_BYTES`], checked before reading, so a FIFO cannot block and a device
/// cannot fill memory.
pub fn read_source(path: &Path) -> Result<String, LoadError> {
    let read_err = |source| LoadError::Read {
        path: shown(path),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if !meta.is_file() {
        return Err(LoadError::NotRegular { path: shown(path) });
    }
    if meta.len() > MAX_SCENARIO_BYTES {
        return Err(LoadError::TooLarge {
            path: shown(path),
            size: meta.len(),
        });
    }
    // The file may grow between the check and the read: never take more than the limit.
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_SCENARIO_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_SCENARIO_BYTES {
        return Err(LoadError::TooLarge {
            path: shown(path),
            size: bytes.len() as u64,
        });
    }
    String::from_utf8(bytes).map_err(|_| LoadError::NotText { path: shown(path) })
}

/// Loads one file, validated for running on this host.
pub fn load_file(path: &Path) -> Result<LoadedScenario, LoadErrors> {
    let source = read_source(path).map_err(|e| LoadErrors(vec![e]))?;
    let label = shown(path);
    match kchaos_model::scenario::parse_for(&label, &source, &ThisHost) {
        Ok(model) => Ok(LoadedScenario {
            path: path.to_path_buf(),
            source,
            model,
        }),
        Err(errors) => Err(LoadErrors(
            errors.0.into_iter().map(LoadError::Invalid).collect(),
        )),
    }
}

/// Loads every scenario; all errors of all files, or the scenarios.
pub fn load_all(paths: &[PathBuf]) -> Result<Vec<Arc<LoadedScenario>>, LoadErrors> {
    let files = expand(paths)?;
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        match load_file(&file) {
            Ok(s) => out.push(Arc::new(s)),
            Err(e) => errors.extend(e.0),
        }
    }
    let mut names = std::collections::BTreeMap::new();
    for s in &out {
        if let Some(other) = names.insert(s.model.name.clone(), s.path.clone()) {
            errors.push(LoadError::DuplicateName {
                path: shown(&s.path),
                name: s.model.name.clone(),
                other: shown(&other),
            });
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(LoadErrors(errors))
    }
}

/// The machine the harness runs on, as scenario validation sees it.
#[derive(Debug, Clone, Copy)]
pub struct ThisHost;

impl Host for ThisHost {
    fn tool(&self, name: &str) -> Result<(), String> {
        // Exactly what building the image will do: find it, read it as ELF, resolve its
        // libraries.
        kchaos_images::tools::collect(&[name.to_owned()])
            .map(|_| ())
            .map_err(|e| kchaos_model::error_chain(&e))
    }

    fn memory_bytes(&self) -> Option<u64> {
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        let kib: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        kib.checked_mul(1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifos_devices_and_huge_files_are_refused_without_reading_them() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.toml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        // Reading a FIFO with no writer would block forever.
        assert!(matches!(
            read_source(&fifo),
            Err(LoadError::NotRegular { .. })
        ));
        let zero = dir.path().join("zero.toml");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(matches!(
            read_source(&zero),
            Err(LoadError::NotRegular { .. })
        ));
        let big = dir.path().join("big.toml");
        std::fs::write(
            &big,
            vec![b'#'; usize::try_from(MAX_SCENARIO_BYTES + 1).unwrap()],
        )
        .unwrap();
        let e = read_source(&big).unwrap_err();
        assert!(e.to_string().contains("too large"), "{e}");
        let binary = dir.path().join("bin.toml");
        std::fs::write(&binary, [0xff, 0xfe, 0x00]).unwrap();
        assert!(matches!(
            read_source(&binary),
            Err(LoadError::NotText { .. })
        ));
    }

    #[test]
    fn a_topology_column_is_in_the_model_and_the_text_kept_as_evidence() {
        let dir = tempfile::tempdir().unwrap();
        for (text, vm_line) in [
            // A scenario without [vm], and one with its own list.
            ("", None),
            (
                "[vm]\ncpus = [1, 2] # two columns\nmemory = \"512MiB\"\n",
                Some("cpus"),
            ),
        ] {
            let file = dir.path().join("t.toml");
            let source = format!(
                "# The incident this reproduces.\n[scenario]\nname = \"t\"\n{text}\
                 [[probe]]\nkind = \"d-state\"\nname = \"d\"\n"
            );
            std::fs::write(&file, &source).unwrap();
            let loaded = load_file(&file).unwrap();
            let column = loaded
                .with_topology(Topology::parse("2s1c").unwrap())
                .unwrap();
            assert_eq!(column.model.vm.cpus, 2);
            assert!(column.model.vm.topologies.is_empty());
            assert!(
                column.source.starts_with("# The incident"),
                "{}",
                column.source
            );
            assert!(
                column.source.contains("cpus = \"2s1c\""),
                "{}",
                column.source
            );
            // The text is the scenario as run: parsed again, it is the same machine.
            let again = kchaos_model::scenario::parse("t.toml", &column.source).unwrap();
            assert_eq!(again.vm, column.model.vm, "{vm_line:?}");
            let flat = loaded.with_topology(Topology::flat(4)).unwrap();
            assert!(flat.source.contains("cpus = 4"), "{}", flat.source);
        }
    }

    #[test]
    fn the_shipped_scenarios_are_built_in_and_valid() {
        assert!(BUILTIN
            .iter()
            .any(|(p, _)| *p == "scenarios/memcg-dying-cgroups.toml"));
        assert!(BUILTIN
            .iter()
            .any(|(p, _)| p.starts_with("scenarios/selftest/")));
        let cache = kchaos_images::Cache::new(tempfile::tempdir().unwrap().keep());
        let dir = builtin_dir(&cache).unwrap();
        let loaded = load_all(std::slice::from_ref(&dir)).unwrap();
        assert_eq!(
            loaded.len(),
            BUILTIN
                .iter()
                .filter(|(p, _)| !p.contains("selftest"))
                .count()
        );
    }

    #[test]
    fn tools_are_checked_on_this_host() {
        assert!(ThisHost.tool("sh").is_ok());
        let e = ThisHost.tool("kchaos-no-such-program").unwrap_err();
        assert!(e.contains("not found in PATH"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("script");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = ThisHost.tool(&script.display().to_string()).unwrap_err();
        assert!(e.contains("not an ELF program"), "{e}");
        assert!(ThisHost.memory_bytes().is_some_and(|b| b > 64 << 20));
    }
}
