//! Messages between the runner and its spawn helpers: one JSON document per datagram on
//! a `SOCK_SEQPACKET` socketpair (message boundaries kept), file descriptors alongside
//! as `SCM_RIGHTS`.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest message: requests carry a few cgroup paths, replies an error text.
const MAX_MESSAGE: usize = 16 * 1024;
/// Most descriptors one message carries (a stop pipe and an output pipe).
pub const MAX_FDS: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("Cannot create a socketpair for a spawn helper")]
    Socketpair(#[source] nix::Error),
    #[error("Cannot send to the spawn helper socket")]
    Send(#[source] nix::Error),
    #[error("Cannot receive from the spawn helper socket")]
    Recv(#[source] nix::Error),
    #[error("The other end of the spawn helper socket closed it")]
    Closed,
    #[error("A spawn helper message of more than {MAX_MESSAGE} bytes")]
    TooLong,
    #[error("A malformed spawn helper message")]
    Malformed(#[source] serde_json::Error),
}

/// A connected pair, both ends close-on-exec.
pub fn pair() -> Result<(OwnedFd, OwnedFd), WireError> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(WireError::Socketpair)
}

pub fn send<T: Serialize>(sock: BorrowedFd<'_>, msg: &T, fds: &[RawFd]) -> Result<(), WireError> {
    let bytes = serde_json::to_vec(msg).map_err(WireError::Malformed)?;
    if bytes.len() > MAX_MESSAGE {
        return Err(WireError::TooLong);
    }
    let cmsgs = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsgs };
    loop {
        match sendmsg::<()>(
            sock.as_raw_fd(),
            &[IoSlice::new(&bytes)],
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(_) => return Ok(()),
            Err(nix::Error::EINTR) => continue,
            Err(nix::Error::EPIPE | nix::Error::ECONNRESET) => return Err(WireError::Closed),
            Err(e) => return Err(WireError::Send(e)),
        }
    }
}

/// The next message and the descriptors that came with it (close-on-exec).
pub fn recv<T: DeserializeOwned>(sock: BorrowedFd<'_>) -> Result<(T, Vec<OwnedFd>), WireError> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (len, fds) = loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                let mut fds = Vec::new();
                for cmsg in msg.cmsgs().map_err(WireError::Recv)? {
                    if let ControlMessageOwned::ScmRights(raw) = cmsg {
                        // SAFETY: the kernel just installed these descriptors in this
                        // process for this message; nothing else owns them.
                        fds.extend(
                            raw.into_iter()
                                .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                        );
                    }
                }
                if msg.flags.contains(MsgFlags::MSG_TRUNC) {
                    return Err(WireError::TooLong);
                }
                break (msg.bytes, fds);
            }
            Err(nix::Error::EINTR) => continue,
            Err(nix::Error::ECONNRESET) => return Err(WireError::Closed),
            Err(e) => return Err(WireError::Recv(e)),
        }
    };
    if len == 0 {
        return Err(WireError::Closed);
    }
    let msg = serde_json::from_slice(&buf[..len]).map_err(WireError::Malformed)?;
    Ok((msg, fds))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn messages_keep_their_boundaries_and_carry_descriptors() {
        let (a, b) = pair().unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        send(a.as_fd(), &("first", 1u32), &[w.as_raw_fd()]).unwrap();
        send(a.as_fd(), &("second", 2u32), &[]).unwrap();
        drop(w);
        let ((text, n), fds): ((String, u32), _) = recv(b.as_fd()).unwrap();
        assert_eq!((text.as_str(), n, fds.len()), ("first", 1, 1));
        // The received descriptor is the pipe's write end: what goes in comes out of r.
        let mut wf = std::fs::File::from(fds.into_iter().next().unwrap());
        wf.write_all(b"x").unwrap();
        drop(wf);
        let mut got = String::new();
        std::fs::File::from(r).read_to_string(&mut got).unwrap();
        assert_eq!(got, "x");
        let ((text, _), fds): ((String, u32), _) = recv(b.as_fd()).unwrap();
        assert_eq!((text.as_str(), fds.len()), ("second", 0));
        drop(a);
        assert!(matches!(
            recv::<(String, u32)>(b.as_fd()),
            Err(WireError::Closed)
        ));
    }
}
