//! Glue between a cell and `kchaos-images`: the initramfs for a kernel and a scenario.

use kchaos_images::initramfs::{self, Initramfs, InitramfsInput};
use kchaos_images::modules::{ModuleError, ModuleTree};
use kchaos_images::{Cache, Kernel};

use crate::qemu::command::CHANNEL_MODULES;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Modules(#[from] ModuleError),
    #[error(transparent)]
    Tools(#[from] kchaos_images::tools::ToolError),
    #[error(transparent)]
    Initramfs(#[from] initramfs::InitramfsError),
    #[error("Kernel {release} has {option}=m but no modules directory was given (path:<bzImage>,modules=<dir>)")]
    NeedsModules { release: String, option: String },
}

/// The kernel options behind the channel modules, to explain a missing modules dir.
const CHANNEL_OPTIONS: &[&str] = &["CONFIG_VIRTIO_PCI", "CONFIG_VIRTIO_CONSOLE"];

pub fn initramfs_for(
    cache: &Cache,
    kernel: &Kernel,
    runner: &[u8],
    scenario_modules: &[String],
    tools: &[String],
) -> Result<Initramfs, ImageError> {
    let tools = kchaos_images::tools::collect(tools)?;
    let mut wanted: Vec<String> = CHANNEL_MODULES.iter().map(|m| (*m).to_owned()).collect();
    wanted.extend(scenario_modules.iter().cloned());
    let modules = match &kernel.modules_dir {
        Some(dir) => ModuleTree::open(dir, Some(&kernel.release))?.resolve(&wanted)?,
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
            Vec::new()
        }
    };
    Ok(initramfs::build(
        cache,
        &InitramfsInput {
            runner,
            release: &kernel.release,
            modules: &modules,
            tools: &tools,
        },
    )?)
}
