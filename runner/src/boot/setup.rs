//! Before the workload: sysctls (time-compression knobs) and the cgroup hierarchy.

use std::path::PathBuf;

use nix::errno::Errno;

#[derive(Debug, thiserror::Error)]
#[error("Cannot set sysctl {key} = {value} ({path}): {source}")]
pub struct SysctlError {
    key: String,
    value: String,
    path: String,
    #[source]
    source: std::io::Error,
}

/// What happened to one sysctl.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    Set,
    /// The knob does not exist on this kernel (e.g. added in a later version).
    Missing,
}

pub fn sysctl_path(key: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(key.replace('.', "/"))
}

pub fn apply_sysctl(key: &str, value: &str) -> Result<Applied, SysctlError> {
    let path = sysctl_path(key);
    match std::fs::write(&path, value) {
        Ok(()) => Ok(Applied::Set),
        Err(e) if e.raw_os_error() == Some(Errno::ENOENT as i32) => Ok(Applied::Missing),
        Err(source) => Err(SysctlError {
            key: key.to_owned(),
            value: value.to_owned(),
            path: path.display().to_string(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_keys_map_to_proc_sys() {
        assert_eq!(
            sysctl_path("kernel.hung_task_timeout_secs"),
            PathBuf::from("/proc/sys/kernel/hung_task_timeout_secs")
        );
        assert_eq!(
            sysctl_path("net.core.netdev_unregister_timeout_secs"),
            PathBuf::from("/proc/sys/net/core/netdev_unregister_timeout_secs")
        );
    }
}
