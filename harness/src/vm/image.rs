//! Glue between a cell and `kchaos-images`: the guest image for a kernel and a scenario,
//! an initramfs or a systemd disk as the scenario's `[vm] image` says.

use std::path::PathBuf;

use kchaos_images::modules::{LoadableModule, ModuleError, ModuleTree};
use kchaos_images::payload::Payload;
use kchaos_images::pvh::{self, BootKernel};
use kchaos_images::{initramfs, systemd, Cache, Kernel};
use kchaos_model::scenario::{ImageKind, Scenario};
use serde::{Deserialize, Serialize};

use crate::vm::command::{BootMedia, CHANNEL_MODULES};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Modules(#[from] ModuleError),
    #[error(transparent)]
    Tools(#[from] kchaos_images::tools::ToolError),
    #[error(transparent)]
    Initramfs(#[from] initramfs::InitramfsError),
    #[error(transparent)]
    Systemd(#[from] systemd::SystemdImageError),
    #[error("Kernel {release} has {option}=m but no modules directory was given (path:<bzImage>,modules=<dir>)")]
    NeedsModules { release: String, option: String },
    #[error("KCHAOS_BOOT is `{0}`: it must be `pvh` (the default: the kernel's PVH entry when it has one) or `bzimage`")]
    BootChoice(String),
}

/// How QEMU enters the kernel, from `KCHAOS_BOOT`: the PVH entry when the kernel has
/// one (the default), or always the bzImage (its real-mode setup, decompressor and
/// KASLR, as on hardware).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootEntry {
    Pvh,
    BzImage,
}

impl BootEntry {
    pub fn from_env() -> Result<BootEntry, ImageError> {
        BootEntry::parse(std::env::var("KCHAOS_BOOT").ok().as_deref())
    }

    fn parse(value: Option<&str>) -> Result<BootEntry, ImageError> {
        match value.map(str::trim) {
            None | Some("" | "pvh") => Ok(BootEntry::Pvh),
            Some("bzimage") => Ok(BootEntry::BzImage),
            Some(other) => Err(ImageError::BootChoice(other.to_owned())),
        }
    }
}

/// The kernel options behind the channel modules, to explain a missing modules dir.
const CHANNEL_OPTIONS: &[&str] = &["CONFIG_VIRTIO_PCI", "CONFIG_VIRTIO_CONSOLE"];

/// What a cell boots, ready for QEMU.
#[derive(Debug, Clone)]
pub struct GuestImage {
    /// The file QEMU's `-kernel` boots: the kernel's PVH ELF, or its bzImage.
    pub kernel: BootKernel,
    pub media: BootMedia,
    /// Kernel parameters the image needs.
    pub cmdline: Vec<String>,
    pub info: ImageInfo,
    pub size: u64,
}

/// Which image a cell booted, recorded with its result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    pub kind: ImageKind,
    /// Content hash of everything in the image (runner, modules, tools, recipe).
    pub key: String,
}

/// The file QEMU boots for `kernel`, as `KCHAOS_BOOT` says: its PVH ELF when it has
/// one, else its bzImage. Reads and hashes the whole bzImage: once per kernel and run,
/// not per cell.
pub fn boot_kernel(cache: &Cache, kernel: &Kernel) -> Result<BootKernel, ImageError> {
    let boot = match BootEntry::from_env()? {
        BootEntry::Pvh => pvh::boot_kernel(cache, &kernel.bzimage),
        BootEntry::BzImage => BootKernel {
            path: kernel.bzimage.clone(),
            fallback: Some("KCHAOS_BOOT=bzimage".to_owned()),
        },
    };
    if let Some(why) = &boot.fallback {
        tracing::debug!(kernel = %kernel.release, "booting the bzImage, not the PVH entry: {why}");
    }
    Ok(boot)
}

/// Builds (or finds in the cache) the image `scenario` runs in on `kernel`, booted
/// from `boot` (see [`boot_kernel`]).
pub fn image_for(
    cache: &Cache,
    kernel: &Kernel,
    boot: &BootKernel,
    runner: &[u8],
    scenario: &Scenario,
) -> Result<GuestImage, ImageError> {
    let tools = kchaos_images::tools::collect(&scenario.vm.tools)?;
    let modules = modules_for(kernel, &scenario.modules())?;
    let payload = Payload {
        runner,
        release: &kernel.release,
        modules: &modules,
        tools: &tools,
    };
    Ok(match scenario.vm.image {
        ImageKind::Initramfs => {
            let built = initramfs::build(cache, &payload)?;
            GuestImage {
                kernel: boot.clone(),
                media: BootMedia::Initrd(built.path),
                cmdline: Vec::new(),
                info: ImageInfo {
                    kind: ImageKind::Initramfs,
                    key: built.key,
                },
                size: built.size,
            }
        }
        kind @ (ImageKind::Systemd | ImageKind::SystemdDefects) => {
            let variant = if kind == ImageKind::SystemdDefects {
                systemd::Variant::Defects
            } else {
                systemd::Variant::Stock
            };
            let built = systemd::build(cache, &payload, variant)?;
            GuestImage {
                kernel: boot.clone(),
                media: BootMedia::Disk(built.path),
                cmdline: built.cmdline,
                info: ImageInfo {
                    kind,
                    key: built.key,
                },
                size: built.size,
            }
        }
    })
}

impl GuestImage {
    /// The image file, for messages.
    pub fn path(&self) -> &PathBuf {
        match &self.media {
            BootMedia::Initrd(p) | BootMedia::Disk(p) => p,
        }
    }
}

/// The channel's modules plus the scenario's, with their dependencies, load order first.
fn modules_for(
    kernel: &Kernel,
    scenario_modules: &[String],
) -> Result<Vec<LoadableModule>, ImageError> {
    let mut wanted: Vec<String> = CHANNEL_MODULES.iter().map(|m| (*m).to_owned()).collect();
    wanted.extend(scenario_modules.iter().cloned());
    match &kernel.modules_dir {
        Some(dir) => Ok(ModuleTree::open(dir, Some(&kernel.release))?.resolve(&wanted)?),
        None => {
            if let Some(config) = kernel.config() {
                if let Some(option) = CHANNEL_OPTIONS.iter().find(|o| config.get(o) == Some("m")) {
                    return Err(ImageError::NeedsModules {
                        release: kernel.release.clone(),
                        option: (*option).to_owned(),
                    });
                }
            }
            if let Some(m) = scenario_modules.first() {
                return Err(ModuleError::NotFound {
                    name: m.clone(),
                    dir: "(no modules directory given)".to_owned(),
                }
                .into());
            }
            Ok(Vec::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kchaos_boot_chooses_the_entry_or_says_what_is_allowed() {
        let cases: Vec<(Option<&str>, Result<BootEntry, String>)> = vec![
            (None, Ok(BootEntry::Pvh)),
            (Some(""), Ok(BootEntry::Pvh)),
            (Some("pvh"), Ok(BootEntry::Pvh)),
            (Some(" bzimage\n"), Ok(BootEntry::BzImage)),
            (
                Some("bzImage"),
                Err("KCHAOS_BOOT is `bzImage`: it must be `pvh`".to_owned()),
            ),
            (Some("uefi"), Err("KCHAOS_BOOT is `uefi`".to_owned())),
        ];
        for (value, want) in cases {
            match (BootEntry::parse(value), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{value:?}"),
                (Err(e), Err(want)) => assert!(e.to_string().starts_with(&want), "{e}"),
                (got, want) => panic!("{value:?}: {got:?}, wanted {want:?}"),
            }
        }
    }
}
