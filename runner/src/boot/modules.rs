//! Loads the kernel modules the image carries, in the order the image lists them.

use std::ffi::CString;
use std::fs::File;
use std::time::{Duration, Instant};

use kchaos_model::image::MODULE_ORDER_PATH;
use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};

#[derive(Debug, thiserror::Error)]
pub enum ModuleLoadError {
    #[error("Cannot open module {path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Kernel refused module {path}: {errno}")]
    Load { path: String, errno: Errno },
}

/// Loads every module in the image, in order. Returns each module's path and how long
/// the kernel took (signature check, relocation, init); a module the kernel already has
/// (EEXIST) counts as loaded.
pub fn load_all() -> Result<Vec<(String, Duration)>, ModuleLoadError> {
    let Ok(order) = std::fs::read_to_string(MODULE_ORDER_PATH) else {
        return Ok(Vec::new());
    };
    let mut loaded = Vec::new();
    for path in order.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let file = File::open(path).map_err(|source| ModuleLoadError::Open {
            path: path.to_owned(),
            source,
        })?;
        let params = CString::default();
        let start = Instant::now();
        match finit_module(&file, &params, ModuleInitFlags::empty()) {
            Ok(()) | Err(Errno::EEXIST) => loaded.push((path.to_owned(), start.elapsed())),
            Err(errno) => {
                return Err(ModuleLoadError::Load {
                    path: path.to_owned(),
                    errno,
                })
            }
        }
    }
    Ok(loaded)
}
