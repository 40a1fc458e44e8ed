//! Resolution against a fake archive: which release and package a spec ends up with,
//! what happens offline, with a mirror missing the unsigned image, with an older cache.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::release::Release::*;
use super::*;
use crate::host_tool;
use crate::resolved::DebianPackage;

/// One package a fake release offers: name, version, suite.
type Offer = (&'static str, &'static str, &'static str);

#[derive(Default)]
struct Fake {
    offers: Vec<(Release, Vec<Offer>)>,
    /// Packages whose download fails (404 on a partial mirror).
    broken: Vec<&'static str>,
    offline: bool,
    downloads: RefCell<Vec<String>>,
}

impl Fake {
    fn offers(&self, release: Release) -> Vec<Offer> {
        self.offers
            .iter()
            .filter(|(r, _)| *r == release)
            .flat_map(|(_, o)| o.clone())
            .collect()
    }

    fn apt(&self) -> Result<(), DebianError> {
        if self.offline {
            return Err(DebianError::NoPackage {
                spec: "apt".to_owned(),
                detail: "offline".to_owned(),
            });
        }
        Ok(())
    }
}

impl PackageSource for Fake {
    fn names(&self, release: Release, prefix: &str) -> Result<Vec<String>, DebianError> {
        self.apt()?;
        Ok(self
            .offers(release)
            .iter()
            .filter(|(n, _, _)| n.starts_with(prefix))
            .map(|(n, _, _)| (*n).to_owned())
            .collect())
    }

    fn candidate(&self, release: Release, package: &str) -> Result<Option<Candidate>, DebianError> {
        self.apt()?;
        Ok(self
            .offers(release)
            .iter()
            .find(|(n, _, _)| *n == package)
            .map(|(_, v, s)| Candidate {
                version: (*v).to_owned(),
                suite: (*s).to_owned(),
                release,
            }))
    }

    fn download(
        &self,
        package: &str,
        candidate: &Candidate,
        dir: &Path,
    ) -> Result<PathBuf, DebianError> {
        if self.broken.contains(&package) {
            return Err(DebianError::BadPackage {
                package: package.to_owned(),
                what: "file on this mirror (404)".to_owned(),
            });
        }
        self.downloads.borrow_mut().push(package.to_owned());
        Ok(fake_deb(package, &candidate.version, dir))
    }
}

/// A `.deb` laid out like a kernel image package, built with dpkg-deb (which kchaos needs
/// anyway to unpack kernels).
fn fake_deb(package: &str, version: &str, dir: &Path) -> PathBuf {
    let abi = [Flavour::Cloud, Flavour::Rt, Flavour::Generic]
        .into_iter()
        .find_map(|f| abi_of(package, f).map(|a| format!("{a}-{}", f.package_suffix())))
        .unwrap();
    let root = dir.join("build");
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(root.join("boot")).unwrap();
    std::fs::create_dir_all(root.join(format!("lib/modules/{abi}/kernel"))).unwrap();
    std::fs::write(root.join(format!("boot/vmlinuz-{abi}")), b"bzImage").unwrap();
    std::fs::write(root.join(format!("boot/config-{abi}")), b"CONFIG_VETH=m\n").unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        format!("Package: {package}\nVersion: {version}\nArchitecture: amd64\nMaintainer: t <t@t>\nDescription: t\n"),
    )
    .unwrap();
    let deb = dir.join(format!("{package}_{version}_amd64.deb"));
    host_tool::run(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zgzip", "--build"])
            .arg(&root)
            .arg(&deb),
    )
    .unwrap();
    std::fs::remove_dir_all(&root).unwrap();
    deb
}

/// The archive as measured (2026-11), trimmed to what the rules need.
fn archive() -> Fake {
    Fake {
        offers: vec![
            (
                Bullseye,
                vec![
                    (
                        "linux-image-5.10.0-30-cloud-amd64-unsigned",
                        "5.10.218-1",
                        "bullseye",
                    ),
                    (
                        "linux-image-5.10.0-46-cloud-amd64-unsigned",
                        "5.10.262-1",
                        "bullseye-security",
                    ),
                    (
                        "linux-image-5.10.0-46-cloud-amd64",
                        "5.10.262-1",
                        "bullseye-security",
                    ),
                    (
                        "linux-image-6.1.0-0.deb11.50-cloud-amd64-unsigned",
                        "6.1.176-1~deb11u1",
                        "bullseye-security",
                    ),
                ],
            ),
            (
                Bookworm,
                vec![
                    (
                        "linux-image-6.1.0-9-cloud-amd64-unsigned",
                        "6.1.27-1",
                        "bookworm",
                    ),
                    (
                        "linux-image-6.1.0-56-cloud-amd64-unsigned",
                        "6.1.158-1",
                        "bookworm-security",
                    ),
                    (
                        "linux-image-6.1.0-57-rt-amd64-unsigned",
                        "6.1.159-1",
                        "bookworm-security",
                    ),
                    (
                        "linux-image-6.1.0-58-cloud-amd64-dbg",
                        "6.1.160-1",
                        "bookworm-security",
                    ),
                    (
                        "linux-image-6.12.117+deb12-cloud-amd64-unsigned",
                        "6.12.117-1~deb12u1",
                        "bookworm-security",
                    ),
                ],
            ),
            (
                BookwormBackports,
                vec![(
                    "linux-image-6.12.95+deb12-cloud-amd64-unsigned",
                    "6.12.95-1~bpo12+1",
                    "bookworm-backports",
                )],
            ),
            (
                Trixie,
                vec![
                    (
                        "linux-image-6.12.117+deb13-cloud-amd64-unsigned",
                        "6.12.117-1",
                        "trixie",
                    ),
                    (
                        "linux-image-6.12.118+deb13-cloud-amd64-unsigned",
                        "6.12.118-1",
                        "trixie-security",
                    ),
                ],
            ),
            (
                TrixieBackports,
                vec![(
                    "linux-image-7.1.7+deb13-cloud-amd64-unsigned",
                    "7.1.7-1~bpo13+1",
                    "trixie-backports",
                )],
            ),
        ],
        ..Fake::default()
    }
}

fn resolve(cache: &Cache, spec: &str, source: &Fake) -> Result<Kernel, DebianError> {
    let rest = spec.strip_prefix("debian:").unwrap();
    let (rest, release) = match rest.split_once('@') {
        Some((r, rel)) => (r, Some(Release::parse(rel).unwrap())),
        None => (rest, None),
    };
    let (version, flavour) = rest.rsplit_once('-').unwrap();
    let version = if version.matches('.').count() == 1 && !version.contains(['-', '+']) {
        DebianVersion::Series(version.to_owned())
    } else {
        DebianVersion::Abi(version.to_owned())
    };
    fetch(
        cache,
        spec,
        &version,
        Flavour::parse(flavour).unwrap(),
        release,
        source,
    )
}

#[test]
fn specs_resolve_to_the_newest_package_of_the_right_release() {
    // (spec, resolved, package, version, suite)
    let table: &[(&str, &str, &str, &str, &str)] = &[
        (
            "5.10-cloud",
            "debian:5.10.0-46-cloud",
            "linux-image-5.10.0-46-cloud-amd64-unsigned",
            "5.10.262-1",
            "bullseye-security",
        ),
        (
            "6.1-cloud",
            "debian:6.1.0-56-cloud",
            "linux-image-6.1.0-56-cloud-amd64-unsigned",
            "6.1.158-1",
            "bookworm-security",
        ),
        (
            "6.1-cloud@bullseye",
            "debian:6.1.0-0.deb11.50-cloud",
            "linux-image-6.1.0-0.deb11.50-cloud-amd64-unsigned",
            "6.1.176-1~deb11u1",
            "bullseye-security",
        ),
        (
            "6.1.0-9-cloud",
            "debian:6.1.0-9-cloud",
            "linux-image-6.1.0-9-cloud-amd64-unsigned",
            "6.1.27-1",
            "bookworm",
        ),
        (
            "6.12-cloud",
            "debian:6.12.118+deb13-cloud",
            "linux-image-6.12.118+deb13-cloud-amd64-unsigned",
            "6.12.118-1",
            "trixie-security",
        ),
        (
            "6.12-cloud@bookworm",
            "debian:6.12.117+deb12-cloud",
            "linux-image-6.12.117+deb12-cloud-amd64-unsigned",
            "6.12.117-1~deb12u1",
            "bookworm-security",
        ),
        (
            "6.12-cloud@bookworm-backports",
            "debian:6.12.95+deb12-cloud@bookworm-backports",
            "linux-image-6.12.95+deb12-cloud-amd64-unsigned",
            "6.12.95-1~bpo12+1",
            "bookworm-backports",
        ),
        // An exact +deb12 ABI only backports has: found there, the second place it looks.
        (
            "6.12.95+deb12-cloud",
            "debian:6.12.95+deb12-cloud@bookworm-backports",
            "linux-image-6.12.95+deb12-cloud-amd64-unsigned",
            "6.12.95-1~bpo12+1",
            "bookworm-backports",
        ),
        (
            "7.1-cloud",
            "debian:7.1.7+deb13-cloud@trixie-backports",
            "linux-image-7.1.7+deb13-cloud-amd64-unsigned",
            "7.1.7-1~bpo13+1",
            "trixie-backports",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path());
    let apt = archive();
    for (spec, resolved, package, version, suite) in table {
        let spec = format!("debian:{spec}");
        let k = resolve(&cache, &spec, &apt).unwrap_or_else(|e| panic!("{spec}: {e}"));
        assert_eq!(k.spec, spec);
        assert_eq!(k.resolved, *resolved, "{spec}");
        let want = DebianPackage {
            name: (*package).to_owned(),
            version: (*version).to_owned(),
            suite: Some((*suite).to_owned()),
        };
        assert_eq!(k.debian.as_ref(), Some(&want), "{spec}");
        assert_eq!(k.package, Some(format!("{package} {version}")));
        assert!(k.bzimage.is_file() && k.config().is_some(), "{spec}");
        let abi = abi_of(package, Flavour::Cloud).unwrap();
        assert_eq!(k.release, format!("{abi}-cloud-amd64"));
    }
    // A resolved spec resolves to the same package again, from the cache.
    let downloads = apt.downloads.borrow().len();
    for (_, resolved, package, ..) in table {
        let k = resolve(&cache, resolved, &apt).unwrap();
        assert_eq!(k.debian.unwrap().name, *package);
    }
    assert_eq!(apt.downloads.borrow().len(), downloads);
}

#[test]
fn what_cannot_resolve_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path());
    let apt = archive();
    let table: &[(&str, &[&str])] = &[
        (
            "debian:6.1.0-1-cloud",
            &["linux-image-6.1.0-1-cloud-amd64-unsigned", "(bookworm)"],
        ),
        (
            "debian:6.12-rt",
            &["linux-image-6.12.*-rt-amd64", "(trixie)"],
        ),
        ("debian:6.12.118+deb13-cloud@bookworm", &["(bookworm)"]),
        (
            "debian:4.19-cloud",
            &[
                "buster and older are gone",
                "5.10 (bullseye), 6.1 (bookworm)",
            ],
        ),
        (
            "debian:6.6-cloud",
            &["(trixie-backports, trixie, bookworm-backports, bookworm, bullseye)"],
        ),
    ];
    for (spec, wanted) in table {
        let e = resolve(&cache, spec, &apt).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("No Debian kernel package matches `{spec}`")),
            "{e}"
        );
        for w in *wanted {
            assert!(e.contains(w), "{spec}: {e}");
        }
    }
}

/// Seen on a partial mirror: the security archive served the signed 5.10 image but
/// answered 404 for the unsigned one.
#[test]
fn a_mirror_without_the_unsigned_image_gives_the_signed_one() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path());
    let apt = Fake {
        broken: vec!["linux-image-5.10.0-46-cloud-amd64-unsigned"],
        ..archive()
    };
    let k = resolve(&cache, "debian:5.10-cloud", &apt).unwrap();
    assert_eq!(k.debian.unwrap().name, "linux-image-5.10.0-46-cloud-amd64");
    assert_eq!(k.resolved, "debian:5.10.0-46-cloud");
}

#[test]
fn offline_the_cache_answers_for_its_own_release_only() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path());
    let online = archive();
    for spec in ["debian:6.12-cloud@bookworm", "debian:6.1-cloud"] {
        resolve(&cache, spec, &online).unwrap();
    }
    let offline = Fake {
        offline: true,
        ..archive()
    };
    let k = resolve(&cache, "debian:6.1-cloud", &offline).unwrap();
    assert_eq!(k.resolved, "debian:6.1.0-56-cloud");
    assert_eq!(
        k.debian.unwrap().suite.as_deref(),
        Some("bookworm-security")
    );
    let k = resolve(&cache, "debian:6.12-cloud@bookworm", &offline).unwrap();
    assert_eq!(k.resolved, "debian:6.12.117+deb12-cloud");
    // 6.12 means trixie's: bookworm's cached 6.12 must not stand in for it.
    let e = resolve(&cache, "debian:6.12-cloud", &offline)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("apt could not answer") && e.contains("offline"),
        "{e}"
    );
}

/// A kernel unpacked before suites were recorded keeps working, and learns its suite
/// the next time apt is asked.
#[test]
fn a_cache_entry_without_a_suite_is_used_and_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path());
    let apt = archive();
    let k = resolve(&cache, "debian:6.1-cloud", &apt).unwrap();
    let meta = k.bzimage.ancestors().nth(3).unwrap().join("kernel.json");
    let mut old: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    old.as_object_mut().unwrap().remove("debian");
    std::fs::write(&meta, serde_json::to_vec(&old).unwrap()).unwrap();

    let offline = Fake {
        offline: true,
        ..archive()
    };
    let k = resolve(&cache, "debian:6.1-cloud", &offline).unwrap();
    let d = k.debian.unwrap();
    assert_eq!(
        (d.name.as_str(), d.suite),
        ("linux-image-6.1.0-56-cloud-amd64-unsigned", None)
    );

    resolve(&cache, "debian:6.1-cloud", &apt).unwrap();
    let k = resolve(&cache, "debian:6.1-cloud", &offline).unwrap();
    assert_eq!(
        k.debian.unwrap().suite.as_deref(),
        Some("bookworm-security")
    );
}

#[test]
fn debug_packages_come_from_the_kernels_release() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path());
    let apt = archive();
    let k = resolve(&cache, "debian:6.1-cloud", &apt).unwrap();
    // The fake archive has no -dbg for 6.1.0-56: the error names release and package.
    let e = debug_vmlinux(&cache, &k, &apt).unwrap_err().to_string();
    assert!(
        e.contains("bookworm offers no linux-image-6.1.0-56-cloud-amd64-dbg 6.1.158-1"),
        "{e}"
    );
}
