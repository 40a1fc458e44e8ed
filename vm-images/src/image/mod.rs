//! What the guest boots from besides its kernel: the payload every image carries (the
//! runner, the module closure, host programs and their libraries), packed as an
//! initramfs or as the systemd image's ext4 disk.

pub mod initramfs;
pub mod payload;
pub mod systemd;
pub mod tools;
