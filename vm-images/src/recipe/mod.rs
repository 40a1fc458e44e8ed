//! Kernels kchaos builds itself (`build:<recipe>`): Debian's kernel source package,
//! the recipe's patches, `vm-images/recipes/kernel/build.sh` with the recipe's config
//! fragments. Built on first use (minutes) and cached, keyed by the source package's
//! version and every byte of the recipe files it uses.
//!
//! The recipe files are compiled in, so an installed `kchaos` needs no checkout, and
//! the build steps live in one place: `build.sh`, which users also run on their own
//! trees. This module only fetches the source, patches it, runs the script and keeps
//! what it produced.

mod build;
mod error;
mod record;
mod source;

use std::path::Path;

pub use self::error::RecipeError;
pub use self::record::BuildRecord;
use self::record::CACHE_SUB;
pub use self::source::{plan, AptHost, SourceFacts, SourceHost, SourcePlan};
use crate::cache::Cache;
// The catalog lives with the kernel specs that name its recipes; these are its old paths.
use crate::kernel::bzimage;
pub use crate::kernel::recipes::{file, find, fragment_names, names, KernelRecipe, RECIPES};
use crate::resolved::Kernel;

/// Resolves `build:<recipe>[@version]`: the cached build for the source version in
/// use, or a new build.
pub fn resolve(
    cache: &Cache,
    spec: &str,
    recipe_name: &str,
    pinned: Option<&str>,
    host: &dyn SourceHost,
) -> Result<Kernel, RecipeError> {
    let recipe = find(recipe_name).ok_or_else(|| RecipeError::Unknown(recipe_name.to_owned()))?;
    let root = cache.dir(CACHE_SUB)?;
    let facts = SourceFacts::gather(cache, recipe, pinned, host, &|v| {
        recipe
            .dir_name(v)
            .map(|d| root.join(d).join(".complete").exists())
            .unwrap_or(false)
    })?;
    let plan = plan(&facts).map_err(|detail| RecipeError::NoSource {
        spec: spec.to_owned(),
        detail,
    })?;
    let version = plan.version().to_owned();
    let dir = root.join(recipe.dir_name(&version)?);
    if !dir.join(".complete").exists() {
        // One build per key at a time: a second kchaos waits here, then finds it done.
        let _lock = build::lock(&root.join(format!("{}.lock", recipe.dir_name(&version)?)))?;
        if !dir.join(".complete").exists() {
            build::build(cache, spec, recipe, &plan, host, &dir)?;
        }
    }
    load(&dir, spec)
}

/// A cached build as a [`Kernel`]. `package` stays `None`: the source version is in
/// `resolved`, and `kchaos analyze` looks for `vmlinux` next to the bzImage of a kernel
/// that is not a Debian binary package, which is where the build keeps it.
fn load(dir: &Path, spec: &str) -> Result<Kernel, RecipeError> {
    let record: BuildRecord = crate::cache::read_record(&dir.join("build.json"))?;
    let bzimage = dir.join("bzImage");
    let release = bzimage::release_of(&bzimage)?;
    let modules = dir.join("lib/modules").join(&release);
    Ok(Kernel {
        spec: spec.to_owned(),
        resolved: format!("build:{}@{}", record.recipe, record.source_version),
        release,
        package: None,
        debian: None,
        source: None,
        bzimage,
        modules_dir: modules.is_dir().then_some(modules),
        config_path: Some(dir.join("config")),
    })
}
