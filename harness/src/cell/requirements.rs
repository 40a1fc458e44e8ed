//! Requirements decided on the host, before booting: kernel version and build config.
//! (Cgroup controllers are checked in the guest, where they are mounted.)

use kchaos_images::Kernel;
use kchaos_model::kernel::{ConfigRequirement, KernelVersion};
use kchaos_model::scenario::Scenario;

/// The systemd image boots from an ext4 disk on NVMe with no initramfs to load drivers:
/// both must be built in (they are in Debian's cloud flavour; `=m` is not enough).
const DISK_BOOT_CONFIG: &[&str] = &["CONFIG_BLK_DEV_NVME=y", "CONFIG_EXT4_FS=y"];

/// `Err(reason)` when the kernel cannot run the scenario; `Ok(notes)` otherwise.
pub fn check(scenario: &Scenario, kernel: &Kernel) -> Result<Vec<String>, String> {
    let mut notes = Vec::new();
    if let Some(range) = &scenario.requires.kernel {
        match KernelVersion::from_release(&kernel.release) {
            Some(v) if !range.matches(v) => {
                return Err(format!(
                    "kernel {v} ({}) is outside the scenario's range {range}",
                    kernel.release
                ))
            }
            Some(_) => {}
            None => notes.push(format!(
                "cannot read a version from release `{}`; requires.kernel not checked",
                kernel.release
            )),
        }
    }
    let mut wanted: Vec<ConfigRequirement> = scenario.requires.config.clone();
    if scenario.vm.image.runs_systemd() {
        wanted.extend(
            DISK_BOOT_CONFIG
                .iter()
                .filter_map(|c| ConfigRequirement::try_from((*c).to_owned()).ok()),
        );
    }
    if !wanted.is_empty() {
        match kernel.config() {
            Some(config) => {
                let unmet: Vec<String> = wanted.iter().filter_map(|r| r.unmet(&config)).collect();
                if !unmet.is_empty() {
                    return Err(format!("kernel config: {}", unmet.join(", ")));
                }
            }
            None => notes.push(
                "the kernel's config is unknown (no config file); requires.config not checked"
                    .to_owned(),
            ),
        }
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel(release: &str, config: Option<&std::path::Path>) -> Kernel {
        Kernel {
            spec: "x".into(),
            resolved: "x".into(),
            release: release.into(),
            package: None,
            debian: None,
            source: None,
            bzimage: "/k".into(),
            modules_dir: None,
            config_path: config.map(Into::into),
        }
    }

    fn scenario(requires: &str) -> Scenario {
        kchaos_model::scenario::parse(
            "t.toml",
            &format!("[scenario]\nname = \"t\"\n[requires]\n{requires}\n[[probe]]\nkind = \"d-state\"\nname = \"d\"\n"),
        )
        .unwrap()
    }

    #[test]
    fn version_range_decides_before_boot() {
        let s = scenario("kernel = \"<6.12\"");
        assert!(check(&s, &kernel("6.1.0-56-cloud-amd64", None)).is_ok());
        let e = check(&s, &kernel("6.12.117+deb12-cloud-amd64", None)).unwrap_err();
        assert!(e.contains("6.12.117") && e.contains("<6.12"), "{e}");
    }

    #[test]
    fn config_is_checked_when_known_and_noted_when_not() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        std::fs::write(&config, "CONFIG_MEMCG=y\n# CONFIG_MEMCG_V1 is not set\n").unwrap();
        let s = scenario("config = [\"CONFIG_MEMCG\", \"CONFIG_MEMCG_V1\"]");
        let e = check(&s, &kernel("6.12.1", Some(&config))).unwrap_err();
        assert_eq!(e, "kernel config: CONFIG_MEMCG_V1 is not set");
        let notes = check(&s, &kernel("6.12.1", None)).unwrap();
        assert!(notes[0].contains("not checked"));
    }

    #[test]
    fn the_systemd_image_needs_nvme_and_ext4_built_in() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        std::fs::write(&config, "CONFIG_BLK_DEV_NVME=m\nCONFIG_EXT4_FS=y\n").unwrap();
        let s = kchaos_model::scenario::parse(
            "t.toml",
            "[scenario]\nname = \"t\"\n[vm]\nimage = \"systemd\"\ncgroup = \"v2\"\n[[probe]]\nkind = \"d-state\"\nname = \"d\"\n",
        )
        .unwrap();
        let e = check(&s, &kernel("6.1.0-1-amd64", Some(&config))).unwrap_err();
        assert_eq!(e, "kernel config: CONFIG_BLK_DEV_NVME=m (needs y)");
        std::fs::write(&config, "CONFIG_BLK_DEV_NVME=y\nCONFIG_EXT4_FS=y\n").unwrap();
        assert!(check(&s, &kernel("6.1.0-1-amd64", Some(&config))).is_ok());
    }
}
