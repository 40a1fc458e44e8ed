//! Kernel module closures: which `.ko` files the guest must load, in which order.
//!
//! Debian's packages ship no `modules.dep`, so dependencies are read from each module's
//! own `.modinfo` (`depends=`), which works the same for local builds. Compressed modules
//! (`.ko.xz`, `.ko.gz`) are decompressed here so the guest can `finit_module` them on
//! any kernel, whatever its `CONFIG_MODULE_DECOMPRESS`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use object::read::elf::ElfFile64;
use object::{Endianness, Object, ObjectSection};

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("Cannot read module directory {path}")]
    ReadDir {
        path: String,
        #[source]
        source: walkdir::Error,
    },
    #[error(
        "Kernel module `{name}` is neither in {dir} nor built into the kernel (modules.builtin)"
    )]
    NotFound { name: String, dir: String },
    #[error("Cannot read module {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Module {path} is compressed with {format}, which kchaos cannot unpack; install it uncompressed, or as .xz or .gz")]
    UnsupportedCompression { path: String, format: String },
    #[error("Module {path} is not a valid ELF object: {reason}")]
    BadElf { path: String, reason: String },
    #[error(
        "Module {path} was built for kernel {found}, not {expected} (wrong modules directory?)"
    )]
    VersionMismatch {
        path: String,
        found: String,
        expected: String,
    },
}

/// A module ready to be placed in an image.
#[derive(Debug, Clone)]
pub struct LoadableModule {
    /// Canonical name (`virtio_console`).
    pub name: String,
    /// Path inside the modules directory (`kernel/drivers/char/virtio_console.ko`),
    /// with any compression suffix removed.
    pub relative: PathBuf,
    /// Uncompressed ELF bytes.
    pub data: Vec<u8>,
}

/// The modules of one kernel (`lib/modules/<release>`).
#[derive(Debug)]
pub struct ModuleTree {
    dir: PathBuf,
    files: HashMap<String, PathBuf>,
    builtin: HashSet<String>,
    release: Option<String>,
}

impl ModuleTree {
    /// Indexes the directory. `release`, when known, is checked against each module's
    /// `vermagic` so a wrong modules directory fails here, not as `Invalid module format`
    /// inside the guest.
    pub fn open(dir: &Path, release: Option<&str>) -> Result<ModuleTree, ModuleError> {
        let mut files = HashMap::new();
        // Links inside the tree are not followed: `build` and `source`, which
        // `modules_install` leaves next to the modules, point into the kernel tree (which
        // may hold this very directory, a loop); depmod skips them too. A modules
        // directory that is itself a link is still followed.
        let walk = walkdir::WalkDir::new(dir)
            .follow_root_links(true)
            .into_iter()
            .filter_entry(|e| {
                !(e.depth() == 1 && matches!(e.file_name().to_str(), Some("build" | "source")))
            });
        for entry in walk {
            let entry = entry.map_err(|source| ModuleError::ReadDir {
                path: dir.display().to_string(),
                source,
            })?;
            let file_name = entry.file_name().to_string_lossy();
            if let Some(name) = module_name_of(&file_name) {
                files
                    .entry(name)
                    .or_insert_with(|| entry.path().to_path_buf());
            }
        }
        let builtin = std::fs::read_to_string(dir.join("modules.builtin"))
            .map(|text| {
                text.lines()
                    .filter_map(|l| l.rsplit('/').next())
                    .filter_map(module_name_of)
                    .collect()
            })
            .unwrap_or_default();
        Ok(ModuleTree {
            dir: dir.to_path_buf(),
            files,
            builtin,
            release: release.map(str::to_owned),
        })
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&canonical(name))
    }

    /// The load order for `wanted`: dependencies first, each module once, built-ins left out.
    pub fn resolve(&self, wanted: &[String]) -> Result<Vec<LoadableModule>, ModuleError> {
        let mut out = Vec::new();
        let mut done = BTreeSet::new();
        for name in wanted {
            self.visit(&canonical(name), &mut done, &mut out, 0)?;
        }
        Ok(out)
    }

    fn visit(
        &self,
        name: &str,
        done: &mut BTreeSet<String>,
        out: &mut Vec<LoadableModule>,
        depth: usize,
    ) -> Result<(), ModuleError> {
        // Module dependency graphs are acyclic; the depth guard keeps a corrupt tree from
        // recursing forever.
        if depth > 64 || !done.insert(name.to_owned()) {
            return Ok(());
        }
        let Some(path) = self.files.get(name) else {
            if self.builtin.contains(name) {
                return Ok(());
            }
            return Err(ModuleError::NotFound {
                name: name.to_owned(),
                dir: self.dir.display().to_string(),
            });
        };
        let data = read_module(path)?;
        let info = modinfo(path, &data)?;
        if let (Some(expected), Some(found)) = (
            &self.release,
            info.get("vermagic")
                .and_then(|v| v.split_whitespace().next()),
        ) {
            if found != expected {
                return Err(ModuleError::VersionMismatch {
                    path: path.display().to_string(),
                    found: found.to_owned(),
                    expected: expected.clone(),
                });
            }
        }
        for dep in info
            .get("depends")
            .map(String::as_str)
            .unwrap_or("")
            .split(',')
            .filter(|d| !d.is_empty())
        {
            self.visit(&canonical(dep), done, out, depth + 1)?;
        }
        let relative = path.strip_prefix(&self.dir).unwrap_or(path);
        let relative = strip_compression(relative);
        out.push(LoadableModule {
            name: name.to_owned(),
            relative,
            data,
        });
        Ok(())
    }
}

/// `virtio-console` and `virtio_console` are the same module to the kernel.
fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

fn module_name_of(file_name: &str) -> Option<String> {
    let stem = file_name
        .split_once(".ko")
        .filter(|(_, rest)| rest.is_empty() || rest.starts_with('.'))?
        .0;
    (!stem.is_empty()).then(|| canonical(stem))
}

fn strip_compression(path: &Path) -> PathBuf {
    let text = path.to_string_lossy();
    match text.find(".ko") {
        Some(i) => PathBuf::from(format!("{}.ko", &text[..i])),
        None => path.to_path_buf(),
    }
}

fn read_module(path: &Path) -> Result<Vec<u8>, ModuleError> {
    let err = |source| ModuleError::Read {
        path: path.display().to_string(),
        source,
    };
    let raw = std::fs::read(path).map_err(err)?;
    let name = path.to_string_lossy();
    let mut decoder: Box<dyn Read> = if name.ends_with(".ko") {
        return Ok(raw);
    } else if name.ends_with(".ko.xz") {
        Box::new(xz2::read::XzDecoder::new(raw.as_slice()))
    } else if name.ends_with(".ko.gz") {
        Box::new(flate2::read::GzDecoder::new(raw.as_slice()))
    } else {
        let format = name.rsplit('.').next().unwrap_or("unknown").to_owned();
        return Err(ModuleError::UnsupportedCompression {
            path: path.display().to_string(),
            format,
        });
    };
    let mut out = Vec::with_capacity(raw.len() * 4);
    decoder.read_to_end(&mut out).map_err(err)?;
    Ok(out)
}

/// The `key=value` strings of a module's `.modinfo` section.
fn modinfo(path: &Path, data: &[u8]) -> Result<HashMap<String, String>, ModuleError> {
    let bad = |reason: String| ModuleError::BadElf {
        path: path.display().to_string(),
        reason,
    };
    let elf = ElfFile64::<Endianness>::parse(data).map_err(|e| bad(e.to_string()))?;
    let section = elf
        .section_by_name(".modinfo")
        .ok_or_else(|| bad("no .modinfo section".to_owned()))?;
    let bytes = section.data().map_err(|e| bad(e.to_string()))?;
    Ok(parse_modinfo(bytes))
}

fn parse_modinfo(bytes: &[u8]) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for entry in bytes.split(|&b| b == 0).filter(|e| !e.is_empty()) {
        let text = String::from_utf8_lossy(entry);
        if let Some((k, v)) = text.split_once('=') {
            // `alias=` and friends repeat; the keys we use appear once.
            map.entry(k.to_owned()).or_insert_with(|| v.to_owned());
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use object::write::Object as WriteObject;
    use object::{Architecture, BinaryFormat, SectionKind};

    use super::*;

    fn fake_module(name: &str, depends: &str, vermagic: &str) -> Vec<u8> {
        let mut obj = WriteObject::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
        let section = obj.add_section(
            Vec::new(),
            b".modinfo".to_vec(),
            SectionKind::ReadOnlyString,
        );
        let info = format!(
            "license=GPL\0depends={depends}\0name={name}\0vermagic={vermagic} SMP mod_unload \0"
        );
        obj.append_section_data(section, info.as_bytes(), 1);
        obj.write().unwrap()
    }

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let put = |rel: &str, bytes: &[u8]| {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        };
        put(
            "kernel/drivers/virtio/virtio.ko",
            &fake_module("virtio", "", "6.1.0-test"),
        );
        put(
            "kernel/drivers/virtio/virtio_ring.ko",
            &fake_module("virtio_ring", "", "6.1.0-test"),
        );
        put(
            "kernel/drivers/char/virtio_console.ko",
            &fake_module("virtio_console", "virtio,virtio_ring", "6.1.0-test"),
        );
        let mut xz = xz2::write::XzEncoder::new(Vec::new(), 6);
        xz.write_all(&fake_module("veth", "", "6.1.0-test"))
            .unwrap();
        put("kernel/drivers/net/veth.ko.xz", &xz.finish().unwrap());
        put("modules.builtin", b"kernel/drivers/virtio/virtio_pci.ko\n");
        dir
    }

    #[test]
    fn closure_is_ordered_dependencies_first_and_skips_builtins() {
        let dir = tree();
        let tree = ModuleTree::open(dir.path(), Some("6.1.0-test")).unwrap();
        let mods = tree
            .resolve(&[
                "virtio-console".into(),
                "virtio_pci".into(),
                "virtio".into(),
            ])
            .unwrap();
        let names: Vec<&str> = mods.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["virtio", "virtio_ring", "virtio_console"]);
        assert!(tree.is_builtin("virtio_pci"));
    }

    #[test]
    fn xz_modules_are_decompressed() {
        let dir = tree();
        let tree = ModuleTree::open(dir.path(), None).unwrap();
        let mods = tree.resolve(&["veth".into()]).unwrap();
        assert_eq!(
            mods[0].relative,
            PathBuf::from("kernel/drivers/net/veth.ko")
        );
        assert_eq!(&mods[0].data[..4], b"\x7fELF");
    }

    #[test]
    fn missing_modules_and_wrong_trees_are_clear_errors() {
        let dir = tree();
        let tree = ModuleTree::open(dir.path(), Some("6.12.1")).unwrap();
        let e = tree.resolve(&["nope".into()]).unwrap_err();
        assert!(e.to_string().contains("`nope` is neither in"), "{e}");
        let e = tree.resolve(&["virtio".into()]).unwrap_err();
        assert!(
            e.to_string()
                .contains("built for kernel 6.1.0-test, not 6.12.1"),
            "{e}"
        );
    }

    /// `modules_install` of a local build leaves `build` (and `source`) pointing into
    /// the build tree, which may contain the modules directory: a loop if followed.
    #[test]
    fn build_and_source_links_of_a_local_build_are_not_followed() {
        let dir = tree();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("build")).unwrap();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("source")).unwrap();
        let tree = ModuleTree::open(dir.path(), Some("6.1.0-test")).unwrap();
        let mods = tree.resolve(&["virtio_console".into()]).unwrap();
        assert_eq!(mods.len(), 3);
        assert!(mods.iter().all(|m| !m.relative.starts_with("build")));
    }

    #[test]
    fn module_names_from_file_names() {
        assert_eq!(
            module_name_of("virtio_console.ko").as_deref(),
            Some("virtio_console")
        );
        assert_eq!(module_name_of("nf-nat.ko.xz").as_deref(), Some("nf_nat"));
        assert_eq!(module_name_of("modules.dep"), None);
        assert_eq!(module_name_of("foo.kofoo"), None);
    }
}
