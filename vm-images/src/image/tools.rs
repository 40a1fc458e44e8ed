//! Host programs in the guest (`[vm] tools = ["sh", "ip"]`): each program with its ELF
//! interpreter and the closure of its shared libraries (`DT_NEEDED`), copied into the
//! image. kchaos's own workloads need none of this; it is for running existing shell
//! reproducers and for side-by-side comparisons with them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use object::read::elf::{ElfFile64, ProgramHeader};
use object::Endianness;

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("Host program `{0}` was not found in PATH (nor in /usr/sbin, /sbin)")]
    NotFound(String),
    #[error("{0} does not exist on this host")]
    Missing(String),
    #[error("{0} is not an executable file")]
    NotExecutable(String),
    #[error("Cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not an ELF program (scripts are not supported; list their interpreter instead)"
    )]
    NotElf { path: String },
    #[error("Library {library}, needed by {needed_by}, is not in the host's library directories")]
    Library { library: String, needed_by: String },
}

/// A file to place in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolFile {
    /// Absolute path in the guest.
    pub path: String,
    pub data: Vec<u8>,
    pub executable: bool,
}

const LIBRARY_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// An executable host program: `name` itself if it is a path, else the first match in
/// `$PATH` or in the sbin directories a non-root `$PATH` often lacks.
pub fn find_program(name: &str) -> Option<PathBuf> {
    if name.starts_with('/') {
        return is_executable(Path::new(name)).then(|| PathBuf::from(name));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Every file the programs need; programs go to `/bin/<name>`, libraries to their host
/// paths.
pub fn collect(tools: &[String]) -> Result<Vec<ToolFile>, ToolError> {
    let mut files: BTreeMap<String, ToolFile> = BTreeMap::new();
    for tool in tools {
        let host = find_program(tool).ok_or_else(|| not_found(tool))?;
        let data = read(&host)?;
        let name = Path::new(tool)
            .file_name()
            .map_or_else(|| tool.clone(), |n| n.to_string_lossy().into_owned());
        add_closure(&host, &data, &mut files)?;
        files.insert(
            format!("/bin/{name}"),
            ToolFile {
                path: format!("/bin/{name}"),
                data,
                executable: true,
            },
        );
    }
    Ok(files.into_values().collect())
}

/// Why `tool` cannot be used: a path says what is wrong with the file, a name that it is
/// not in `PATH`.
fn not_found(tool: &str) -> ToolError {
    if !tool.starts_with('/') {
        return ToolError::NotFound(tool.to_owned());
    }
    if Path::new(tool).exists() {
        ToolError::NotExecutable(tool.to_owned())
    } else {
        ToolError::Missing(tool.to_owned())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ToolError> {
    std::fs::read(path).map_err(|source| ToolError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The interpreter and libraries of one ELF file, recursively.
fn add_closure(
    path: &Path,
    data: &[u8],
    files: &mut BTreeMap<String, ToolFile>,
) -> Result<(), ToolError> {
    let (interp, needed) = dependencies(path, data)?;
    if let Some(interp) = interp {
        if !files.contains_key(&interp) {
            let bytes = read(Path::new(&interp))?;
            files.insert(
                interp.clone(),
                ToolFile {
                    path: interp.clone(),
                    data: bytes,
                    executable: true,
                },
            );
        }
    }
    for lib in needed {
        let Some(host) = LIBRARY_DIRS
            .iter()
            .map(|d| Path::new(d).join(&lib))
            .find(|p| p.is_file())
        else {
            return Err(ToolError::Library {
                library: lib,
                needed_by: path.display().to_string(),
            });
        };
        let key = host.display().to_string();
        if files.contains_key(&key) {
            continue;
        }
        let bytes = read(&host)?;
        add_closure(&host, &bytes, files)?;
        files.insert(
            key.clone(),
            ToolFile {
                path: key,
                data: bytes,
                executable: false,
            },
        );
    }
    Ok(())
}

/// `PT_INTERP` and the `DT_NEEDED` names of an ELF file.
fn dependencies(path: &Path, data: &[u8]) -> Result<(Option<String>, Vec<String>), ToolError> {
    let not_elf = || ToolError::NotElf {
        path: path.display().to_string(),
    };
    let elf = ElfFile64::<Endianness>::parse(data).map_err(|_| not_elf())?;
    let endian = elf.endian();
    let mut interp = None;
    for ph in elf.elf_program_headers() {
        if let Ok(Some(i)) = ph.interpreter(endian, data) {
            interp = Some(String::from_utf8_lossy(i).into_owned());
        }
    }
    let mut needed = Vec::new();
    let sections = elf.elf_section_table();
    if let Ok(Some((entries, strings_index))) = sections.dynamic(endian, data) {
        let strings = sections
            .strings(endian, data, strings_index)
            .map_err(|_| not_elf())?;
        for entry in entries {
            use object::read::elf::Dyn;
            if entry.tag32(endian) == Some(object::elf::DT_NEEDED) {
                if let Ok(name) = entry.string(endian, strings) {
                    needed.push(String::from_utf8_lossy(name).into_owned());
                }
            }
        }
    }
    Ok((interp, needed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_program_brings_its_loader_and_libraries() {
        // The test binary itself: dynamically linked against libc at least.
        let exe = std::env::current_exe().unwrap();
        let files = collect(&[exe.display().to_string()]).unwrap();
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert!(paths.iter().any(|p| p.starts_with("/bin/")), "{paths:?}");
        assert!(
            paths.iter().any(|p| p.contains("ld-linux")),
            "the loader: {paths:?}"
        );
        assert!(
            paths.iter().any(|p| p.contains("libc.so")),
            "libc: {paths:?}"
        );
    }

    #[test]
    fn missing_programs_and_scripts_are_clear_errors() {
        assert!(collect(&["no-such-program-kchaos".into()])
            .unwrap_err()
            .to_string()
            .contains("was not found in PATH"));
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("s.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        assert!(collect(&[script.display().to_string()])
            .unwrap_err()
            .to_string()
            .contains("not an ELF program"));
    }
}
