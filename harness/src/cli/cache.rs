//! `kchaos fetch`, `build-runner` and `cache`: what kchaos keeps ready before a run
//! (kernels and guest images in the cache, the guest runner) and the cache itself.

use anyhow::Context;
use kchaos_harness::vm::{self, runner};
use kchaos_images::Cache;
use kchaos_model::error_chain;

use super::args::KernelListArgs;
use super::exit::{CliError, Exit};

pub fn fetch(kernels: &[String], list: &KernelListArgs, cache: &Cache) -> Result<Exit, CliError> {
    // `image:<kind>` builds a guest root filesystem instead of fetching a kernel.
    let (images, kernels): (Vec<&String>, Vec<&String>) =
        kernels.iter().partition(|k| k.starts_with("image:"));
    let mut failed = false;
    for spec in images {
        match fetch_image(spec, cache) {
            Ok(dir) => println!("{spec} -> {}", dir.display()),
            Err(e) => {
                eprintln!("kchaos: {spec}: {e}");
                failed = true;
            }
        }
    }
    let kernels: Vec<String> = kernels.into_iter().cloned().collect();
    // Images alone fetch no kernel (an empty list would expand to the default set).
    let specs = if kernels.is_empty() {
        Vec::new()
    } else {
        list.expand(&kernels)?
    };
    for spec in specs {
        match kchaos_images::resolve(cache, &spec) {
            Ok(k) => println!(
                "{spec} -> {} (release {}, image {})",
                k.resolved,
                k.release,
                k.bzimage.display()
            ),
            Err(e) => {
                eprintln!("kchaos: {spec}: {}", error_chain(&e));
                failed = true;
            }
        }
    }
    Ok(if failed {
        Exit::Infrastructure
    } else {
        Exit::Ok
    })
}

/// Builds the root filesystem of `image:<kind>` (`systemd`, `systemd-defects`); the
/// disk made from it per runner build takes a second.
fn fetch_image(spec: &str, cache: &Cache) -> Result<std::path::PathBuf, String> {
    use kchaos_images::systemd;
    let kind = spec.trim_start_matches("image:");
    let recipe = systemd::Recipe::builtin().map_err(|e| error_chain(&e))?;
    let stock = || systemd::rootfs(cache, &recipe).map_err(|e| error_chain(&e));
    match kind {
        "systemd" => Ok(stock()?.dir),
        "systemd-defects" => systemd::defects::rootfs(cache, &stock()?)
            .map(|r| r.dir)
            .map_err(|e| error_chain(&e)),
        other => Err(format!(
            "no image `{other}` to build; images: image:systemd, image:systemd-defects (the initramfs is made per cell in a second)"
        )),
    }
}

pub fn build_runner() -> Result<Exit, CliError> {
    let bin = runner::locate(None)
        .map_err(|e| CliError::Infrastructure(anyhow::anyhow!(error_chain(&e))))?;
    println!("{}", bin.path.display());
    Ok(Exit::Ok)
}

#[derive(Debug, clap::Subcommand)]
pub enum CacheAction {
    /// Remove what the cache bounds allow (old initramfs archives and disks, leftovers
    /// of interrupted builds); with --all, everything (downloads start again).
    Prune {
        #[arg(long)]
        all: bool,
    },
}

/// `kchaos cache`: what each part of the cache holds; `prune` shrinks it.
pub fn cache(action: Option<CacheAction>, cache: &Cache) -> Result<Exit, CliError> {
    let root = cache.root();
    match action {
        None => {
            println!("cache: {}", root.display());
            let mut total = 0;
            let mut parts: Vec<_> = std::fs::read_dir(root)
                .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
                .unwrap_or_default();
            parts.sort();
            for part in parts {
                let (bytes, files) = kchaos_images::cache::disk_usage(&part);
                total += bytes;
                println!(
                    "  {:<12} {:>10}  {files} files",
                    part.file_name()
                        .map(|n| n.to_string_lossy())
                        .unwrap_or_default(),
                    kchaos_model::units::format_bytes(bytes as f64)
                );
            }
            println!(
                "  total        {:>10}",
                kchaos_model::units::format_bytes(total as f64)
            );
            Ok(Exit::Ok)
        }
        Some(CacheAction::Prune { all: true }) => {
            if root.exists() {
                std::fs::remove_dir_all(root)
                    .with_context(|| format!("removing {}", root.display()))?;
            }
            println!("removed {}", root.display());
            Ok(Exit::Ok)
        }
        Some(CacheAction::Prune { all: false }) => {
            let mut removed = kchaos_images::cache::evict_lru(
                &root.join("initramfs"),
                "cpio",
                kchaos_images::initramfs::KEEP_INITRAMFS,
                None,
            );
            removed += kchaos_images::cache::evict_lru(
                &root.join("images/systemd-disks"),
                "img",
                kchaos_images::systemd::KEEP_DISKS,
                None,
            );
            removed += vm::sockets::sweep(&std::env::temp_dir(), &vm::sockets::alive);
            println!("removed {removed} files beyond the cache's bounds");
            Ok(Exit::Ok)
        }
    }
}
