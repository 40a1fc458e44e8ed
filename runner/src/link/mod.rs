//! The link to the host: the framed control channel over virtio-serial, the kernel log
//! forwarded record by record, and the heartbeat whose silence means a hang.

pub mod channel;
pub mod heartbeat;
pub mod kmsg;
