//! Reads the kernel version string from a bzImage's setup header, so a local build's
//! release is known before it boots (for `requires.kernel` and for the results).

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum BzImageError {
    #[error("Cannot read kernel image {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a bzImage (no `HdrS` setup header)")]
    NotBzImage { path: String },
    #[error("{path}: the setup header has no usable kernel version string")]
    NoVersion { path: String },
}

/// The release (`uname -r`) a bzImage will report, e.g. `6.1.0-56-cloud-amd64`.
pub fn release_of(path: &Path) -> Result<String, BzImageError> {
    let data = std::fs::read(path).map_err(|source| BzImageError::Read {
        path: path.display().to_string(),
        source,
    })?;
    release_from_bytes(&data).map_err(|kind| match kind {
        HeaderProblem::NotBzImage => BzImageError::NotBzImage {
            path: path.display().to_string(),
        },
        HeaderProblem::NoVersion => BzImageError::NoVersion {
            path: path.display().to_string(),
        },
    })
}

#[derive(Debug, PartialEq, Eq)]
enum HeaderProblem {
    NotBzImage,
    NoVersion,
}

/// Boot protocol: `HdrS` at 0x202; `kernel_version` (u16 at 0x20E) points 0x200 bytes
/// before the version string, which is NUL-terminated and starts with the release.
fn release_from_bytes(data: &[u8]) -> Result<String, HeaderProblem> {
    if data.get(0x202..0x206) != Some(b"HdrS".as_slice()) {
        return Err(HeaderProblem::NotBzImage);
    }
    let ptr = data
        .get(0x20E..0x210)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or(HeaderProblem::NotBzImage)?;
    let start = usize::from(ptr) + 0x200;
    let tail = data.get(start..).ok_or(HeaderProblem::NoVersion)?;
    let end = tail
        .iter()
        .take(256)
        .position(|&b| b == 0)
        .ok_or(HeaderProblem::NoVersion)?;
    let text = std::str::from_utf8(&tail[..end]).map_err(|_| HeaderProblem::NoVersion)?;
    text.split_whitespace()
        .next()
        .filter(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        .map(str::to_owned)
        .ok_or(HeaderProblem::NoVersion)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(version: &str) -> Vec<u8> {
        let mut data = vec![0u8; 0x1000];
        data[0x202..0x206].copy_from_slice(b"HdrS");
        let at: u16 = 0x300;
        data[0x20E..0x210].copy_from_slice(&at.to_le_bytes());
        let start = usize::from(at) + 0x200;
        data[start..start + version.len()].copy_from_slice(version.as_bytes());
        data
    }

    #[test]
    fn reads_the_release() {
        let data = fake("6.12.117+deb12-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP");
        assert_eq!(
            release_from_bytes(&data),
            Ok("6.12.117+deb12-cloud-amd64".to_owned())
        );
    }

    #[test]
    fn rejects_other_files() {
        assert_eq!(
            release_from_bytes(b"\x7fELF"),
            Err(HeaderProblem::NotBzImage)
        );
        let mut data = fake("");
        data[0x20E..0x210].copy_from_slice(&0xFFFFu16.to_le_bytes());
        assert_eq!(release_from_bytes(&data), Err(HeaderProblem::NoVersion));
    }
}
