//! What a kernel is before anything is fetched or built: the specs users write, the
//! named lists of them (`kernels.toml`), the recipes `build:` may name, and what can be
//! read from a kernel's own files (the bzImage's release, the PVH entry QEMU boots, the
//! module closure a scenario needs).
//!
//! Nothing here resolves a spec: that is [`crate::resolve`](mod@crate::resolve), which dispatches to
//! [`crate::debian`], [`crate::recipe`] or a local build. Keeping the vocabulary apart
//! from the sources lets every source use it without the sources and the specs
//! importing each other.

pub mod bzimage;
pub mod list;
pub mod modules;
pub mod pvh;
pub mod recipes;
pub mod spec;
