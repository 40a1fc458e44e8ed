//! `kchaos setup` and `doctor`: what this host needs to run kchaos (QEMU, dpkg and apt
//! tools, debootstrap, the Debian keyring), installed by the one and checked by the
//! other from the same list.

use std::io::IsTerminal;

use anyhow::Context;
use kchaos_harness::vm::{self, find_in_path, AccelChoice, Qemu};
use kchaos_images::Cache;
use kchaos_model::error_chain;

use super::exit::{CliError, Exit};

/// Host packages kchaos uses: QEMU, dpkg-deb/apt to fetch Debian kernels, debootstrap
/// and mkfs.ext4 to build the systemd image.
const PACKAGES: &[(&str, &str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86", "no VM can boot"),
    ("dpkg-deb", "dpkg", "Debian kernels cannot be fetched"),
    ("apt-get", "apt", "Debian kernels cannot be fetched"),
    (
        "debootstrap",
        "debootstrap",
        "the systemd image cannot be built",
    ),
    (
        "mkfs.ext4",
        "e2fsprogs",
        "the systemd image cannot be built",
    ),
];

/// What apt would do, from `apt-get -s install`: the lines that install, upgrade or
/// remove packages, so a removal is seen before it happens.
pub fn apt_plan(simulation: &str) -> Vec<String> {
    simulation
        .lines()
        .filter(|l| l.starts_with("Inst ") || l.starts_with("Remv ") || l.starts_with("Conf "))
        .filter(|l| !l.starts_with("Conf "))
        .map(|l| {
            let mut words = l.split_whitespace();
            let verb = match words.next() {
                Some("Remv") => "remove",
                _ => "install",
            };
            let rest: Vec<&str> = words.collect();
            format!("{verb} {}", rest.join(" "))
        })
        .collect()
}

/// The keyring kchaos's own apt state checks Debian's signatures with, when it is not
/// there: its package.
fn missing_keyring() -> Option<(String, &'static str)> {
    let keyring = kchaos_images::debian::apt_config::AptConfig::from_env()
        .map(|c| c.keyring)
        .unwrap_or_else(|_| kchaos_images::debian::apt_config::DEFAULT_KEYRING.into());
    (!keyring.is_file()).then(|| (keyring.display().to_string(), "debian-archive-keyring"))
}

pub fn setup(dry_run: bool, yes: bool) -> Result<Exit, CliError> {
    let mut missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(bin, _, _)| find_in_path(bin).is_none())
        .map(|(_, pkg, _)| *pkg)
        .collect();
    if let Some((_, pkg)) = missing_keyring() {
        missing.push(pkg);
    }
    if missing.is_empty() {
        println!("kchaos setup: everything needed is installed");
        return Ok(Exit::Ok);
    }
    let root = nix::unistd::geteuid().is_root();
    let sudo = if root { "" } else { "sudo " };
    let update = format!("{sudo}apt-get update");
    let install = format!(
        "{sudo}apt-get install -y --no-install-recommends {}",
        missing.join(" ")
    );
    println!("kchaos setup: missing packages: {}", missing.join(" "));
    println!("kchaos setup: will run:\n  {update}\n  {install}");
    // apt's own plan (a simulation needs no root): what else it would install, upgrade
    // or remove.
    let simulated = std::process::Command::new("apt-get")
        .args(["-s", "-q", "install", "--no-install-recommends"])
        .args(&missing)
        .output();
    match simulated {
        Ok(out) if out.status.success() => {
            let plan = apt_plan(&String::from_utf8_lossy(&out.stdout));
            println!("kchaos setup: apt's plan ({} changes):", plan.len());
            for line in &plan {
                println!("  {line}");
            }
            if plan.iter().any(|l| l.starts_with("remove ")) {
                println!("kchaos setup: NOTE: apt would REMOVE the packages marked `remove` above");
            }
        }
        _ => println!(
            "kchaos setup: (apt could not simulate the install; its plan is shown when it runs)"
        ),
    }
    if dry_run {
        return Ok(Exit::Ok);
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(CliError::usage(
                "kchaos setup changes this host's packages: rerun with --yes to proceed",
            ));
        }
        print!("Proceed? [y/N] ");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("kchaos setup: nothing changed");
            return Ok(Exit::Ok);
        }
    }
    for c in [&update, &install] {
        println!("kchaos setup: {c}");
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(c)
            .status()
            .with_context(|| format!("running `{c}`"))?;
        if !status.success() {
            return Err(CliError::Infrastructure(anyhow::anyhow!(
                "`{c}` failed ({status})"
            )));
        }
    }
    Ok(Exit::Ok)
}

pub fn doctor(cache: &Cache) -> Result<Exit, CliError> {
    let mut ok = true;
    println!("cache: {}", cache.root().display());
    match Qemu::find() {
        Ok(q) => {
            println!("qemu: {} ({})", q.path.display(), q.version);
            let runtime = super::runtime()?;
            let dir = cache
                .dir("accel")
                .map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
            let d = runtime.block_on(vm::detect_accel(&q, AccelChoice::Auto, &dir));
            println!("accelerator: {} ({})", d.accel.as_str(), d.reason);
        }
        Err(e) => {
            ok = false;
            println!("qemu: MISSING: {}", error_chain(&e));
        }
    }
    for (bin, pkg, without) in PACKAGES.iter().skip(1) {
        match find_in_path(bin) {
            Some(p) => println!("{bin}: {}", p.display()),
            None => {
                ok = false;
                println!("{bin}: MISSING (package {pkg}; {without})");
            }
        }
    }
    match missing_keyring() {
        Some((path, pkg)) => {
            ok = false;
            println!(
                "debian keyring: MISSING {path} (package {pkg}; Debian kernels cannot be verified)"
            );
        }
        None => println!("debian keyring: present"),
    }
    if !nix::unistd::geteuid().is_root() {
        println!("user: not root; scenarios with `[vm] image = \"systemd\"` need root to build their image");
    }
    if ok {
        println!("ready: `kchaos run` will work");
        Ok(Exit::Ok)
    } else {
        println!("not ready: run `kchaos setup`");
        Ok(Exit::Infrastructure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apts_plan_names_removals() {
        let sim = "NOTE: This is only a simulation!\nRemv qemu-utils [1:10.0.2+ds-2]\nInst qemu-system-x86 (1:7.2+dfsg-7 Debian:12/stable [amd64])\nConf qemu-system-x86 (1:7.2+dfsg-7 Debian:12/stable [amd64])\n";
        assert_eq!(
            apt_plan(sim),
            [
                "remove qemu-utils [1:10.0.2+ds-2]",
                "install qemu-system-x86 (1:7.2+dfsg-7 Debian:12/stable [amd64])"
            ]
        );
    }
}
