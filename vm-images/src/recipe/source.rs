//! Where a recipe's kernel source comes from: Debian's `linux-source-*` package, never
//! through the host's package database. The tarball `apt-get install` left in
//! `/usr/src` serves when it is the version wanted; otherwise `apt-get download` (no
//! root needed) into the cache, which also keeps it for offline rebuilds.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::error::RecipeError;
use super::record::{BuildRecord, CACHE_SUB};
use crate::cache::{read_record, Cache};
use crate::debian::abi::compare_abi;
use crate::debian::{Candidate, DebianError, PackageSource, Release};
use crate::file_io::{entries, io, IoError};
use crate::host_tool::{self, CommandError};
use crate::kernel::recipes::KernelRecipe;

/// The host's view of Debian source packages: apt and dpkg on a real machine, a fake in
/// tests.
pub trait SourceHost {
    /// The version apt would download, if apt knows the package.
    fn candidate(&self, package: &str) -> Result<Option<String>, RecipeError>;
    /// The installed version and its tarball (`/usr/src/<package>.tar.xz`), if both exist.
    fn installed(&self, package: &str) -> Option<(String, PathBuf)>;
    /// Downloads `package` at `version` into `dir` and returns the `.deb`.
    fn download(&self, package: &str, version: &str, dir: &Path) -> Result<PathBuf, RecipeError>;
}

/// apt for candidates and downloads (through [`PackageSource`], kchaos's own apt state
/// for bookworm, whose source line the recipes build), dpkg-query for what is installed.
#[derive(Debug)]
pub struct AptHost<'a, P: PackageSource + ?Sized> {
    packages: &'a P,
}

/// The release whose `linux-source-6.1` the recipes build.
const RELEASE: Release = Release::Bookworm;

impl<'a, P: PackageSource + ?Sized> AptHost<'a, P> {
    pub fn new(packages: &'a P) -> Self {
        AptHost { packages }
    }
}

fn from_debian(e: DebianError) -> RecipeError {
    RecipeError::Apt(kchaos_model::error_chain(&e))
}

impl<P: PackageSource + ?Sized> SourceHost for AptHost<'_, P> {
    fn candidate(&self, package: &str) -> Result<Option<String>, RecipeError> {
        Ok(self
            .packages
            .candidate(RELEASE, package)
            .map_err(from_debian)?
            .map(|c| c.version))
    }

    fn installed(&self, package: &str) -> Option<(String, PathBuf)> {
        let out = host_tool::run(Command::new("dpkg-query").args([
            "-W",
            "-f",
            "${Version} ${db:Status-Abbrev}",
            package,
        ]))
        .ok()?;
        let (version, status) = out.trim().split_once(' ')?;
        let tarball = PathBuf::from(format!("/usr/src/{package}.tar.xz"));
        (status.starts_with("ii") && tarball.is_file()).then(|| (version.to_owned(), tarball))
    }

    fn download(&self, package: &str, version: &str, dir: &Path) -> Result<PathBuf, RecipeError> {
        let candidate = self
            .packages
            .candidate(RELEASE, package)
            .map_err(from_debian)?;
        // A pinned version apt still lists in another suite downloads as well: apt
        // resolves `package=version` across the release's suites.
        let wanted = Candidate {
            version: version.to_owned(),
            suite: candidate.map_or_else(|| RELEASE.to_string(), |c| c.suite),
            release: RELEASE,
        };
        self.packages
            .download(package, &wanted, dir)
            .map_err(from_debian)
    }
}

/// Everything known about the source before deciding where to take it from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceFacts {
    pub package: String,
    /// `build:<recipe>@<version>`.
    pub pinned: Option<String>,
    /// What apt offers now.
    pub candidate: Option<String>,
    /// Installed version and its tarball.
    pub installed: Option<(String, PathBuf)>,
    /// Source packages downloaded earlier (`sources/<package>/<version>.deb`).
    pub cached_debs: Vec<(String, PathBuf)>,
    /// Versions this recipe, byte for byte, has a finished build of.
    pub built: Vec<String>,
}

/// Where the source comes from. `Built`: nothing to fetch, the cache has the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourcePlan {
    Built { version: String },
    Tarball { version: String, path: PathBuf },
    Deb { version: String, path: PathBuf },
    Download { version: String },
}

impl SourcePlan {
    pub fn version(&self) -> &str {
        match self {
            SourcePlan::Built { version }
            | SourcePlan::Tarball { version, .. }
            | SourcePlan::Deb { version, .. }
            | SourcePlan::Download { version } => version,
        }
    }
}

/// Decides the source version and where to get it. The version is the pinned one, else
/// apt's candidate (like `debian:6.1-cloud`, the newest the mirror offers), else, with
/// apt unavailable, the installed one, else the newest already built or downloaded.
/// The cheapest way to that version wins: a finished build, the installed tarball, a
/// downloaded `.deb`, a download.
pub fn plan(facts: &SourceFacts) -> Result<SourcePlan, String> {
    let newest = |versions: Vec<&String>| {
        versions
            .into_iter()
            .max_by(|a, b| compare_abi(a, b))
            .cloned()
    };
    let version = facts
        .pinned
        .clone()
        .or_else(|| facts.candidate.clone())
        .or_else(|| facts.installed.as_ref().map(|(v, _)| v.clone()))
        .or_else(|| newest(facts.built.iter().collect()))
        .or_else(|| newest(facts.cached_debs.iter().map(|(v, _)| v).collect()))
        .ok_or_else(|| {
            format!(
                "apt knows no {0} (is a Debian apt source configured? run `apt-get update`), \
                 it is not installed, and nothing is cached; `apt-get install {0}` or a \
                 Debian bookworm apt source fixes it",
                facts.package
            )
        })?;
    if facts.built.contains(&version) {
        return Ok(SourcePlan::Built { version });
    }
    if let Some((v, path)) = &facts.installed {
        if *v == version {
            return Ok(SourcePlan::Tarball {
                version,
                path: path.clone(),
            });
        }
    }
    if let Some((_, path)) = facts.cached_debs.iter().find(|(v, _)| *v == version) {
        return Ok(SourcePlan::Deb {
            version,
            path: path.clone(),
        });
    }
    Ok(SourcePlan::Download { version })
}

/// Where downloaded source packages are kept.
pub(super) fn debs_dir(cache: &Cache, package: &str) -> Result<PathBuf, RecipeError> {
    Ok(cache.dir(&format!("sources/{package}"))?)
}

impl SourceFacts {
    /// Asks the host and looks in the cache. apt failing (offline, no sources) is not an
    /// error here: the cache may still have what is needed.
    pub(super) fn gather(
        cache: &Cache,
        recipe: &KernelRecipe,
        pinned: Option<&str>,
        host: &dyn SourceHost,
        is_built: &dyn Fn(&str) -> bool,
    ) -> Result<SourceFacts, RecipeError> {
        let package = recipe.source_package;
        let candidate = match host.candidate(package) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(
                    "apt cannot tell the version of {package}, looking in the cache: {e}"
                );
                None
            }
        };
        let cached_debs = list_debs(&debs_dir(cache, package)?);
        let built = built_versions(&cache.dir(CACHE_SUB)?, recipe.name)
            .into_iter()
            .filter(|v| is_built(v))
            .collect();
        Ok(SourceFacts {
            package: package.to_owned(),
            pinned: pinned.map(str::to_owned),
            candidate,
            installed: host.installed(package),
            cached_debs,
            built,
        })
    }
}

fn list_debs(dir: &Path) -> Vec<(String, PathBuf)> {
    entries(dir)
        .filter_map(|p| {
            let version = p.file_name()?.to_str()?.strip_suffix(".deb")?.to_owned();
            Some((version, p))
        })
        .collect()
}

/// Source versions of finished builds of `recipe` (any recipe bytes; the caller checks
/// which match).
fn built_versions(root: &Path, recipe: &str) -> Vec<String> {
    entries(root)
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{recipe}_")))
                && p.join(".complete").exists()
        })
        .filter_map(|p| {
            let record: BuildRecord = read_record(&p.join("build.json")).ok()?;
            Some(record.source_version)
        })
        .collect()
}

/// Unpacks the source tarball member of a `linux-source-*` package into `dir`, without
/// unpacking the rest: `dpkg-deb --fsys-tarfile` piped into `tar`.
pub(super) fn tarball_from_deb(
    deb: &Path,
    package: &str,
    dir: &Path,
) -> Result<PathBuf, RecipeError> {
    let member = format!("./usr/src/{package}.tar.xz");
    let describe = format!(
        "dpkg-deb --fsys-tarfile {} | tar -x {member}",
        deb.display()
    );
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|source| CommandError::Spawn {
            command: "dpkg-deb".to_owned(),
            source,
        })?;
    let stdout = dpkg.stdout.take().ok_or_else(|| CommandError::Failed {
        command: describe.clone(),
        status: "no pipe".to_owned(),
        stderr: String::new(),
    })?;
    let tar = host_tool::run(
        Command::new("tar")
            .arg("-x")
            .arg("-C")
            .arg(dir)
            .arg(&member)
            .stdin(stdout),
    );
    let status = dpkg.wait().map_err(io_err(deb))?;
    tar?;
    if !status.success() {
        return Err(CommandError::Failed {
            command: describe,
            status: status.to_string(),
            stderr: String::new(),
        }
        .into());
    }
    Ok(dir.join(member.trim_start_matches("./")))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> IoError {
    io("read", path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> SourceFacts {
        SourceFacts {
            package: "linux-source-6.1".into(),
            ..SourceFacts::default()
        }
    }

    #[test]
    fn the_cheapest_way_to_the_wanted_version_wins() {
        let installed = Some(("6.1.192-2".to_owned(), PathBuf::from("/usr/src/l.tar.xz")));
        let deb = |v: &str| (v.to_owned(), PathBuf::from(format!("/c/{v}.deb")));
        let cases: Vec<(&str, SourceFacts, Result<SourcePlan, &str>)> = vec![
            (
                "apt's candidate, already built",
                SourceFacts {
                    candidate: Some("6.1.192-2".into()),
                    installed: installed.clone(),
                    built: vec!["6.1.192-2".into()],
                    ..facts()
                },
                Ok(SourcePlan::Built {
                    version: "6.1.192-2".into(),
                }),
            ),
            (
                "candidate installed: its tarball",
                SourceFacts {
                    candidate: Some("6.1.192-2".into()),
                    installed: installed.clone(),
                    ..facts()
                },
                Ok(SourcePlan::Tarball {
                    version: "6.1.192-2".into(),
                    path: "/usr/src/l.tar.xz".into(),
                }),
            ),
            (
                "newer candidate than installed: download, not the stale tarball",
                SourceFacts {
                    candidate: Some("6.1.193-1".into()),
                    installed: installed.clone(),
                    ..facts()
                },
                Ok(SourcePlan::Download {
                    version: "6.1.193-1".into(),
                }),
            ),
            (
                "downloaded before",
                SourceFacts {
                    candidate: Some("6.1.193-1".into()),
                    cached_debs: vec![deb("6.1.190-1"), deb("6.1.193-1")],
                    ..facts()
                },
                Ok(SourcePlan::Deb {
                    version: "6.1.193-1".into(),
                    path: "/c/6.1.193-1.deb".into(),
                }),
            ),
            (
                "pinned beats the candidate",
                SourceFacts {
                    pinned: Some("6.1.190-1".into()),
                    candidate: Some("6.1.193-1".into()),
                    cached_debs: vec![deb("6.1.190-1")],
                    ..facts()
                },
                Ok(SourcePlan::Deb {
                    version: "6.1.190-1".into(),
                    path: "/c/6.1.190-1.deb".into(),
                }),
            ),
            (
                "offline, not installed: the newest finished build",
                SourceFacts {
                    built: vec!["6.1.9-1".into(), "6.1.192-2".into()],
                    cached_debs: vec![deb("6.1.100-1")],
                    ..facts()
                },
                Ok(SourcePlan::Built {
                    version: "6.1.192-2".into(),
                }),
            ),
            (
                "offline with a download only",
                SourceFacts {
                    cached_debs: vec![deb("6.1.100-1")],
                    ..facts()
                },
                Ok(SourcePlan::Deb {
                    version: "6.1.100-1".into(),
                    path: "/c/6.1.100-1.deb".into(),
                }),
            ),
            (
                "nothing anywhere",
                facts(),
                Err("apt knows no linux-source-6.1"),
            ),
        ];
        for (what, facts, want) in cases {
            match (plan(&facts), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{what}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{what}: {got}"),
                (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
            }
        }
    }

    /// The real tools on a tiny package: only the tarball member comes out.
    #[test]
    fn the_tarball_is_the_only_member_unpacked_from_the_deb() {
        if host_tool::run(Command::new("dpkg-deb").arg("--version")).is_err() {
            eprintln!("skipped: dpkg-deb is not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let pkg = dir.path().join("pkg");
        std::fs::create_dir_all(pkg.join("DEBIAN")).unwrap();
        std::fs::create_dir_all(pkg.join("usr/src")).unwrap();
        std::fs::create_dir_all(pkg.join("usr/share/doc")).unwrap();
        std::fs::write(
            pkg.join("DEBIAN/control"),
            "Package: linux-source-9.9\nVersion: 9.9.1-1\nArchitecture: all\nMaintainer: t <t@t>\nDescription: t\n",
        )
        .unwrap();
        std::fs::write(
            pkg.join("usr/src/linux-source-9.9.tar.xz"),
            b"not really xz",
        )
        .unwrap();
        std::fs::write(pkg.join("usr/share/doc/README"), b"left in the deb").unwrap();
        let deb = dir.path().join("p.deb");
        host_tool::run(
            Command::new("dpkg-deb")
                .args(["--root-owner-group", "-Zgzip", "--build"])
                .arg(&pkg)
                .arg(&deb),
        )
        .unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        let tarball = tarball_from_deb(&deb, "linux-source-9.9", &out).unwrap();
        assert_eq!(tarball, out.join("usr/src/linux-source-9.9.tar.xz"));
        assert_eq!(std::fs::read(&tarball).unwrap(), b"not really xz");
        assert!(!out.join("usr/share/doc/README").exists());
        let e = tarball_from_deb(&deb, "linux-source-1.0", &out).unwrap_err();
        assert!(e.to_string().contains("linux-source-1.0.tar.xz"), "{e}");
    }

    #[test]
    fn cached_debs_are_listed_by_version() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("6.1.192-2.deb"), b"x").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        assert_eq!(
            list_debs(dir.path()),
            vec![("6.1.192-2".to_owned(), dir.path().join("6.1.192-2.deb"))]
        );
        assert!(list_debs(&dir.path().join("missing")).is_empty());
    }
}
