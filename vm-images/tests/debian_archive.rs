//! Against the real Debian archive (or `$KCHAOS_DEBIAN_MIRROR`): kchaos's own apt state
//! resolves and downloads a release the host's apt does not list, and refuses lists
//! whose signatures do not verify. Skipped, saying so, only when the archive cannot be
//! reached at all; CI has it.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use kchaos_images::debian::apt::{AptError, AptState};
use kchaos_images::debian::apt_config::AptConfig;
use kchaos_images::debian::Release;
use kchaos_images::Cache;

/// The mirror's host and port if a TCP connection to it opens, else why not.
fn archive_reachable(config: &AptConfig) -> Result<(), String> {
    let url = &config.mirror;
    let Some(rest) = url.split_once("://").map(|(_, r)| r) else {
        return Ok(()); // file: mirrors need no network
    };
    let host = rest.split('/').next().unwrap_or(rest);
    let port = if url.starts_with("https") { 443 } else { 80 };
    let address = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:{port}")
    };
    let addrs = address
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {address}: {e}"))?;
    let mut last = String::from("no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("cannot connect to {address} ({addr}): {e}"),
        }
    }
    Err(last)
}

fn skip_without_network(config: &AptConfig) -> bool {
    match archive_reachable(config) {
        Ok(()) => false,
        Err(why) => {
            eprintln!("skipped: the Debian archive is unreachable: {why}");
            true
        }
    }
}

/// bullseye's 5.10, which bookworm hosts' apt never lists.
#[test]
fn a_bullseye_kernel_resolves_and_unpacks_through_kchaos_own_apt_state() {
    let config = AptConfig::from_env().unwrap();
    if skip_without_network(&config) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path());
    let kernel = kchaos_images::resolve(&cache, "debian:5.10-cloud").unwrap();
    assert!(kernel.release.starts_with("5.10.0-"), "{kernel:?}");
    assert!(kernel.release.ends_with("-cloud-amd64"), "{kernel:?}");
    let debian = kernel.debian.clone().unwrap();
    assert!(
        debian.suite.as_deref().unwrap().starts_with("bullseye"),
        "{debian:?}"
    );
    assert!(debian.name.starts_with("linux-image-5.10.0-"), "{debian:?}");
    assert!(kernel.bzimage.is_file());
    let config = kernel.config().unwrap();
    assert_eq!(config.get("CONFIG_VIRTIO_CONSOLE"), Some("m"));
    // The state is the cache's own; lists are there, compressed.
    let lists = dir.path().join("apt/bullseye/lists");
    let names: Vec<String> = std::fs::read_dir(&lists)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.contains("bullseye-security_InRelease")),
        "{names:?}"
    );
    // The resolved spec finds the same package again, without the network.
    let again = kchaos_images::resolve(&cache, &kernel.resolved).unwrap();
    assert_eq!(again.debian, kernel.debian);
}

/// Lists are only used when they verify against the keyring: a keyring without the
/// archive's keys fails the update with a hint, and nothing is listed.
#[test]
fn lists_signed_by_keys_not_in_the_keyring_are_refused() {
    let mut config = AptConfig::from_env().unwrap();
    if skip_without_network(&config) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut keyring = tempfile::NamedTempFile::new().unwrap();
    keyring.write_all(b"not a keyring").unwrap();
    config.keyring = keyring.path().to_path_buf();
    let state =
        AptState::open(&Cache::new(dir.path()), Release::BookwormBackports, &config).unwrap();
    let e = state.refresh_if_stale().unwrap_err();
    assert!(matches!(e, AptError::Update { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("signatures could not be verified"), "{text}");
    assert!(state.pkgnames("linux-image-").unwrap().is_empty());
}
