//! Builds what kchaos boots: kernels from Debian's apt, local builds or kchaos's own
//! recipe builds (with the defect patches listed in `defects.toml`), the module
//! closure a scenario needs, the initramfs with the runner as `/init`, and the systemd
//! disk image with the runner as a service.
//!
//! Everything slow is cached under [`cache::Cache`], keyed by its inputs.

pub mod bzimage;
pub mod cache;
pub mod command;
pub mod debian;
pub mod defects;
pub mod initramfs;
pub mod kernel;
pub mod kernel_list;
pub mod modules;
pub mod payload;
pub mod pvh;
pub mod recipe;
pub mod resolved;
pub mod spec;
pub mod systemd;
pub mod tools;
pub mod tree;

pub use cache::Cache;
pub use kernel::{resolve, Kernel, KernelError};
pub use resolved::{DebianPackage, SourceCommit};
