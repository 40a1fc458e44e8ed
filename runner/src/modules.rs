//! Loads the kernel modules the image carries, in the order the image lists them.

use std::ffi::CString;
use std::fs::File;

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

/// Loads every module in the image. Returns how many were loaded; a module the kernel
/// already has (EEXIST) counts as loaded.
pub fn load_all() -> Result<usize, ModuleLoadError> {
    let Ok(order) = std::fs::read_to_string(MODULE_ORDER_PATH) else {
        return Ok(0);
    };
    let mut loaded = 0;
    for path in order.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let file = File::open(path).map_err(|source| ModuleLoadError::Open {
            path: path.to_owned(),
            source,
        })?;
        let params = CString::default();
        match finit_module(&file, &params, ModuleInitFlags::empty()) {
            Ok(()) | Err(Errno::EEXIST) => loaded += 1,
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
