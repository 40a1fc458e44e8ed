//! The kernel recipes kchaos carries, compiled in from `vm-images/recipes/kernel/`:
//! their names (what `build:<recipe>` may say) and their files (build.sh, config
//! fragments, patches). A leaf module: kernel specs check recipe names here, and both
//! builders (`crate::recipe` for `build:` kernels, `crate::tree` for a git tree's
//! commits) take build.sh and the fragments from here, without either depending on the
//! other.

/// A kernel recipe: which Debian source, which fragments after `kchaos.config`, which
/// patches, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelRecipe {
    pub name: &'static str,
    pub description: &'static str,
    /// Debian's source package (`apt-get install` puts its tarball in `/usr/src`).
    pub source_package: &'static str,
    /// Config fragments merged after `kchaos.config` (names [`file()`] finds).
    pub fragments: &'static [&'static str],
    /// Patches applied with `patch -p1` in this order (names [`file()`] finds).
    pub patches: &'static [&'static str],
}

/// The recipe files, as compiled in (names relative to `vm-images/recipes/kernel/`).
const FILES: &[(&str, &[u8])] = &[
    ("build.sh", include_bytes!("../../recipes/kernel/build.sh")),
    (
        "kchaos.config",
        include_bytes!("../../recipes/kernel/kchaos.config"),
    ),
    (
        "defects.config",
        include_bytes!("../../recipes/kernel/defects.config"),
    ),
    (
        "debuginfo.config",
        include_bytes!("../../recipes/kernel/debuginfo.config"),
    ),
    (
        "debug.config",
        include_bytes!("../../recipes/kernel/debug.config"),
    ),
    (
        "patches/6.1/0001-netdev-ref-leak.patch",
        include_bytes!("../../recipes/kernel/patches/6.1/0001-netdev-ref-leak.patch"),
    ),
    (
        "patches/6.1/0002-memcg-ref-leak.patch",
        include_bytes!("../../recipes/kernel/patches/6.1/0002-memcg-ref-leak.patch"),
    ),
    (
        "patches/6.1/0003-cfs-over-throttle.patch",
        include_bytes!("../../recipes/kernel/patches/6.1/0003-cfs-over-throttle.patch"),
    ),
    (
        "patches/6.1/0004-cfs-period-lockup.patch",
        include_bytes!("../../recipes/kernel/patches/6.1/0004-cfs-period-lockup.patch"),
    ),
    (
        "patches/6.1/0005-fault-memcg.patch",
        include_bytes!("../../recipes/kernel/patches/6.1/0005-fault-memcg.patch"),
    ),
    (
        "patches/6.1/0006-memcg-stat-stall.patch",
        include_bytes!("../../recipes/kernel/patches/6.1/0006-memcg-stat-stall.patch"),
    ),
    (
        "patches/6.1/0007-cfs-cpu-unthrottle-skip.patch",
        include_bytes!("../../recipes/kernel/patches/6.1/0007-cfs-cpu-unthrottle-skip.patch"),
    ),
    (
        "patches/6.1/0008-cgroup-rmdir-stall.patch",
        include_bytes!("../../recipes/kernel/patches/6.1/0008-cgroup-rmdir-stall.patch"),
    ),
    (
        "patches/6.1/0009-cfs-remote-package-skip.patch",
        include_bytes!("../../recipes/kernel/patches/6.1/0009-cfs-remote-package-skip.patch"),
    ),
    (
        "patches/6.1/0010-memcg-id-hold.patch",
        include_bytes!("../../recipes/kernel/patches/6.1/0010-memcg-id-hold.patch"),
    ),
    (
        "patches/6.1/0011-netns-rtnl-stall.patch",
        include_bytes!("../../recipes/kernel/patches/6.1/0011-netns-rtnl-stall.patch"),
    ),
];

/// Every recipe `build:` knows.
pub const RECIPES: &[KernelRecipe] = &[KernelRecipe {
    name: "defects",
    description: "Debian's 6.1 source, minimal VM config, fault injection, DWARF, and every \
                  kchaos defect patch (each off until its kchaos_defect.* boot parameter is given)",
    source_package: "linux-source-6.1",
    // Debug information: the defect kernels are the ones whose crashes and hangs get
    // analysed with `crash` and gdb.
    fragments: &["defects.config", "debuginfo.config"],
    patches: &[
        "patches/6.1/0001-netdev-ref-leak.patch",
        "patches/6.1/0002-memcg-ref-leak.patch",
        "patches/6.1/0003-cfs-over-throttle.patch",
        "patches/6.1/0004-cfs-period-lockup.patch",
        "patches/6.1/0005-fault-memcg.patch",
        "patches/6.1/0006-memcg-stat-stall.patch",
        "patches/6.1/0007-cfs-cpu-unthrottle-skip.patch",
        "patches/6.1/0008-cgroup-rmdir-stall.patch",
        "patches/6.1/0009-cfs-remote-package-skip.patch",
        "patches/6.1/0010-memcg-id-hold.patch",
        "patches/6.1/0011-netns-rtnl-stall.patch",
    ],
}];

/// The recipe called `name`.
pub fn find(name: &str) -> Option<&'static KernelRecipe> {
    RECIPES.iter().find(|r| r.name == name)
}

/// Recipe names, for messages.
pub fn names() -> Vec<&'static str> {
    RECIPES.iter().map(|r| r.name).collect()
}

/// A compiled-in recipe file by name (`build.sh`, `kchaos.config`, `defects.config`, a
/// patch): builds of a git tree's commits ([`crate::tree`]) hand build.sh the same
/// bytes `build:` recipes use.
pub fn file(name: &str) -> Option<&'static [u8]> {
    FILES.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

/// The compiled-in config fragments a build may add after `kchaos.config`.
pub fn fragment_names() -> Vec<&'static str> {
    FILES
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| n.ends_with(".config") && *n != "kchaos.config")
        .collect()
}
