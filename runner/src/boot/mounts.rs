//! Filesystems the runner mounts as PID 1, from a table; and the cgroup hierarchy the
//! scenario asks for.

use std::path::{Path, PathBuf};

use kchaos_model::scenario::CgroupMode;
use nix::errno::Errno;
use nix::mount::{mount, MsFlags};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("Cannot mount {fstype} on {target}: {errno}")]
    Mount {
        fstype: String,
        target: String,
        errno: Errno,
    },
    #[error("Cannot create {path}")]
    Mkdir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot enable controller `{controller}` in {path}")]
    Enable {
        controller: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

struct Mount {
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: MsFlags,
    data: Option<&'static str>,
}

const NOSUID_NODEV: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);

/// What an init must provide before anything else runs.
const EARLY: &[Mount] = &[
    Mount {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV.union(MsFlags::MS_NOEXEC),
        data: None,
    },
    Mount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV.union(MsFlags::MS_NOEXEC),
        data: None,
    },
    Mount {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MsFlags::MS_NOSUID,
        data: Some("mode=0755"),
    },
    Mount {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: NOSUID_NODEV,
        data: Some("mode=1777"),
    },
    Mount {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: NOSUID_NODEV,
        data: Some("mode=0755"),
    },
];

/// The mount point, created if missing.
fn mkdir(target: &Path) -> Result<(), MountError> {
    std::fs::create_dir_all(target).map_err(|source| MountError::Mkdir {
        path: target.display().to_string(),
        source,
    })
}

fn do_mount(m: &Mount) -> Result<(), MountError> {
    mkdir(Path::new(m.target))?;
    match mount(Some(m.source), m.target, Some(m.fstype), m.flags, m.data) {
        // Already mounted (a kernel with devtmpfs automount, or a second call).
        Ok(()) | Err(Errno::EBUSY) => Ok(()),
        Err(errno) => Err(MountError::Mount {
            fstype: m.fstype.to_owned(),
            target: m.target.to_owned(),
            errno,
        }),
    }
}

/// Mounts proc only: needed to read `/proc/cmdline` for the safety check.
pub fn proc_only() -> Result<(), MountError> {
    EARLY.first().map_or(Ok(()), do_mount)
}

pub fn early() -> Result<(), MountError> {
    EARLY.iter().try_for_each(do_mount)
}

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Creating the cgroups a workload works in (not measured).
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("Cannot create cgroup {path}")]
    Mkdir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Enable(#[from] MountError),
}

/// Where each hierarchy lives once mounted.
#[derive(Debug, Clone)]
pub struct CgroupLayout {
    pub mode: CgroupMode,
    /// v1 controller name → mount point.
    pub v1: Vec<(String, PathBuf)>,
    /// The cgroup2 mount point, if any.
    pub unified: Option<PathBuf>,
}

impl CgroupLayout {
    /// The directories that make up cgroup `rel` for these controllers: one per v1
    /// hierarchy, or the single unified one.
    pub fn dirs(&self, controllers: &[String], rel: &str) -> Vec<PathBuf> {
        match self.mode {
            CgroupMode::V2 => self.unified.iter().map(|u| u.join(rel)).collect(),
            CgroupMode::V1 | CgroupMode::Hybrid => self
                .v1
                .iter()
                .filter(|(c, _)| controllers.is_empty() || controllers.contains(c))
                .map(|(_, root)| root.join(rel))
                .collect(),
        }
    }
}

/// Why the scenario's cgroup setup cannot work on this kernel: a skip, not a failure.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unsupported(pub String);

#[derive(Debug, thiserror::Error)]
pub enum CgroupSetupError {
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
    #[error(transparent)]
    Mount(#[from] MountError),
}

/// Mounts the hierarchy for `mode` with `controllers` usable, or says why it cannot.
pub fn mount_cgroups(
    mode: CgroupMode,
    controllers: &[String],
    already_mounted: bool,
) -> Result<CgroupLayout, CgroupSetupError> {
    let root = Path::new(CGROUP_ROOT);
    let mut layout = CgroupLayout {
        mode,
        v1: Vec::new(),
        unified: None,
    };
    if matches!(mode, CgroupMode::V1 | CgroupMode::Hybrid) {
        if !already_mounted {
            do_mount(&Mount {
                source: "tmpfs",
                target: CGROUP_ROOT,
                fstype: "tmpfs",
                flags: NOSUID_NODEV.union(MsFlags::MS_NOEXEC),
                data: Some("mode=0755"),
            })?;
        }
        for c in controllers {
            let target = root.join(c);
            mkdir(&target)?;
            match mount(
                Some("cgroup"),
                &target,
                Some("cgroup"),
                NOSUID_NODEV.union(MsFlags::MS_NOEXEC),
                Some(c.as_str()),
            ) {
                Ok(()) | Err(Errno::EBUSY) => layout.v1.push((c.clone(), target)),
                Err(errno @ (Errno::EINVAL | Errno::ENOENT | Errno::ENODEV)) => {
                    return Err(Unsupported(format!(
                        "the cgroup v1 `{c}` controller cannot be mounted on this kernel ({errno}); kernels built without v1 support for it (e.g. CONFIG_MEMCG_V1 unset) cannot run this scenario"
                    ))
                    .into());
                }
                Err(errno) => {
                    return Err(MountError::Mount {
                        fstype: format!("cgroup ({c})"),
                        target: target.display().to_string(),
                        errno,
                    }
                    .into())
                }
            }
        }
    }
    if matches!(mode, CgroupMode::V2 | CgroupMode::Hybrid) {
        let target = if mode == CgroupMode::V2 {
            root.to_path_buf()
        } else {
            root.join("unified")
        };
        if !(already_mounted && mode == CgroupMode::V2) {
            mkdir(&target)?;
            match mount(
                Some("cgroup2"),
                &target,
                Some("cgroup2"),
                NOSUID_NODEV.union(MsFlags::MS_NOEXEC),
                None::<&str>,
            ) {
                Ok(()) | Err(Errno::EBUSY) => {}
                Err(errno) => {
                    return Err(MountError::Mount {
                        fstype: "cgroup2".to_owned(),
                        target: target.display().to_string(),
                        errno,
                    }
                    .into())
                }
            }
        }
        if mode == CgroupMode::V2 {
            let available =
                std::fs::read_to_string(target.join("cgroup.controllers")).unwrap_or_default();
            for c in controllers {
                if !available.split_whitespace().any(|a| a == c) {
                    return Err(Unsupported(format!("the cgroup v2 `{c}` controller is not available (cgroup.controllers: `{}`)", available.trim())).into());
                }
            }
        }
        layout.unified = Some(target);
    }
    Ok(layout)
}

/// Enables v2 controllers for the children of `dir`, one per write: a combined write
/// fails as a whole if one controller is still bound to a v1 hierarchy.
pub fn enable_controllers(dir: &Path, controllers: &[String]) -> Result<(), MountError> {
    let file = dir.join("cgroup.subtree_control");
    for c in controllers {
        std::fs::write(&file, format!("+{c}")).map_err(|source| MountError::Enable {
            controller: c.clone(),
            path: file.display().to_string(),
            source,
        })?;
    }
    Ok(())
}

/// Creates cgroup `rel` (every level) in each hierarchy of `controllers`. In v2 each
/// level delegates the controllers to the next; `delegate` says whether `rel` itself
/// does too (an inner node), or stays a leaf that can hold processes (v2 forbids
/// processes in a cgroup whose `subtree_control` is set).
pub fn create_cgroup(
    layout: &CgroupLayout,
    rel: &str,
    controllers: &[String],
    delegate: bool,
) -> Result<(), CgroupError> {
    if let (CgroupMode::V2, Some(root)) = (layout.mode, layout.unified.as_deref()) {
        let mut dir = root.to_path_buf();
        enable_controllers(&dir, controllers)?;
        let parts: Vec<&str> = rel.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            dir.push(part);
            mkdir_existing_ok(&dir)?;
            if i + 1 < parts.len() || delegate {
                enable_controllers(&dir, controllers)?;
            }
        }
        return Ok(());
    }
    for dir in layout.dirs(controllers, rel) {
        std::fs::create_dir_all(&dir).map_err(|source| CgroupError::Mkdir { path: dir, source })?;
    }
    Ok(())
}

fn mkdir_existing_ok(dir: &Path) -> Result<(), CgroupError> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(CgroupError::Mkdir {
            path: dir.to_path_buf(),
            source,
        }),
    }
}
