//! Builds what kchaos boots: kernels from Debian's apt, local builds or kchaos's own
//! recipe builds (with the defect patches listed in `defects.toml`), the module
//! closure a scenario needs, the initramfs with the runner as `/init`, and the systemd
//! disk image with the runner as a service.
//!
//! Everything slow is cached under [`cache::Cache`], keyed by its inputs.
//!
//! The folders follow the way a spec becomes a bootable VM:
//! - [`kernel`]: what a kernel is (specs, lists, recipe names, what its files say);
//! - where kernels come from: [`debian`] (`debian:`), [`recipe`] (`build:`), [`tree`]
//!   (a git tree's commits), the last two running [`kbuild`]; [`resolve`](mod@resolve) picks one
//!   for a spec and returns a [`Kernel`] ([`resolved`]);
//! - [`image`]: what boots with it;
//! - [`cache`] and [`host_tool`] (running host programs) under everything; [`defects`]
//!   on top.

pub mod cache;
pub mod debian;
pub mod defects;
pub mod file_io;
pub mod host_tool;
pub mod image;
pub mod kbuild;
pub mod kernel;
pub mod recipe;
pub mod resolve;
pub mod resolved;
pub mod tree;

pub use cache::Cache;
// Running host programs was `command`, a name the harness uses for QEMU's command line.
pub use host_tool as command;
// The paths these modules had before they were grouped into folders, so that callers
// (the harness, the benches) need no change.
pub use image::{initramfs, payload, systemd, tools};
pub use kernel::list as kernel_list;
pub use kernel::{bzimage, modules, pvh, spec};
pub use resolve::{resolve, KernelError};
pub use resolved::{DebianPackage, Kernel, SourceCommit};
