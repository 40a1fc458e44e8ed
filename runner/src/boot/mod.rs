//! Bringing the guest up: the safety gate (a kchaos VM or nothing), the mounts, the
//! kernel modules, the sysctls and cgroup hierarchy a scenario asks for.

pub mod modules;
pub mod mounts;
pub mod safety;
pub mod setup;
