//! What an installed `kchaos` needs without a checkout, embedded at build time:
//!
//! - the shipped scenarios (`scenarios/**/*.toml`), always: `kchaos run` outside a
//!   checkout runs them;
//! - the static guest runner, in release builds (`cargo install`, `cargo kchaos`): built
//!   with the same cargo into its own target directory (so it never waits for the outer
//!   build's lock) and included as bytes. Debug builds (the test suite) build it at run
//!   time instead, as before. `KCHAOS_EMBED_RUNNER=1` forces it (`cargo install
//!   --debug`), `=0` turns it off.

use std::path::{Path, PathBuf};

#[path = "src/vm/runner/cargo_build.rs"]
mod cargo_build;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let Some(root) = manifest.parent().map(Path::to_path_buf) else {
        return;
    };
    println!("cargo::rustc-check-cfg=cfg(kchaos_embedded_runner)");
    println!("cargo::rerun-if-env-changed=KCHAOS_EMBED_RUNNER");
    embed_scenarios(&root, &out);
    let wanted = match std::env::var("KCHAOS_EMBED_RUNNER").as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        _ => std::env::var("PROFILE").as_deref() == Ok("release"),
    };
    if wanted {
        embed_runner(&root, &out);
    }
}

/// `OUT_DIR/builtin_scenarios.rs`: `&[(relative path, text)]` of every shipped scenario.
fn embed_scenarios(root: &Path, out: &Path) {
    let dir = root.join("scenarios");
    println!("cargo::rerun-if-changed={}", dir.display());
    let mut files = Vec::new();
    collect(&dir, &mut files);
    files.sort();
    let mut code = String::from("&[\n");
    for file in files {
        let rel = file.strip_prefix(root).unwrap_or(&file);
        println!("cargo::rerun-if-changed={}", file.display());
        code.push_str(&format!(
            "    ({:?}, include_str!({:?})),\n",
            rel.display().to_string(),
            file.display().to_string()
        ));
    }
    code.push_str("]\n");
    if let Err(e) = std::fs::write(out.join("builtin_scenarios.rs"), code) {
        println!("cargo::warning=cannot write the embedded scenario list: {e}");
    }
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            println!("cargo::rerun-if-changed={}", path.display());
            collect(&path, files);
        } else if path.extension().is_some_and(|e| e == "toml") {
            files.push(path);
        }
    }
}

fn embed_runner(root: &Path, out: &Path) {
    for watched in ["runner", "model", "Cargo.lock", "Cargo.toml"] {
        println!("cargo::rerun-if-changed={}", root.join(watched).display());
    }
    if !root.join("runner/Cargo.toml").is_file() {
        println!("cargo::warning=no runner sources next to the harness: kchaos will need --runner");
        return;
    }
    // A cargo building into the workspace's target directory holds its lock: the runner
    // then gets its own (stable, so it stays incremental). A build elsewhere (`cargo
    // install --target-dir`) shares the workspace's, where run-time builds left it.
    let workspace_target = root.join("target");
    let target_dir = if out.starts_with(&workspace_target) {
        workspace_target.join("embedded-runner")
    } else {
        workspace_target
    };
    println!("cargo::warning=building the static guest runner to embed (the first time takes a few minutes)");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = cargo_build::command(&cargo, root, &target_dir);
    match cmd.status() {
        Ok(s) if s.success() => {}
        Ok(s) => {
            println!("cargo::warning=building the guest runner failed ({s}); kchaos will build it at run time");
            return;
        }
        Err(e) => {
            println!("cargo::warning=cannot run cargo to build the guest runner ({e}); kchaos will build it at run time");
            return;
        }
    }
    let built = cargo_build::output(&target_dir);
    let copy = out.join("kchaos-runner");
    match std::fs::copy(&built, &copy) {
        Ok(_) => {
            println!("cargo::rustc-cfg=kchaos_embedded_runner");
            println!("cargo::rustc-env=KCHAOS_EMBEDDED_RUNNER={}", copy.display());
        }
        Err(e) => println!(
            "cargo::warning=cannot copy the guest runner {}: {e}",
            built.display()
        ),
    }
}
