//! The layout contract between the images kchaos builds and the runner that boots from
//! them. Both sides use these constants, so they cannot drift apart.

/// The runner, as the kernel's init.
pub const INIT_PATH: &str = "/init";
/// Module files to load, one path per line, dependencies first.
pub const MODULE_ORDER_PATH: &str = "/kchaos/modules.order";
/// Image metadata (JSON) for the evidence trail.
pub const IMAGE_INFO_PATH: &str = "/kchaos/image.json";
/// The runner in the systemd image, started by `kchaos-runner.service`.
pub const SERVICE_RUNNER_PATH: &str = "/usr/local/bin/kchaos-runner";
