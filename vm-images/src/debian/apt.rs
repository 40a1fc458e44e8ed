//! kchaos's own apt state, one per [`Release`], under `$KCHAOS_CACHE/apt/<release>/`:
//! its own sources list, lists, package cache and (empty) dpkg status, so any host with
//! apt can fetch kernels of any release the Debian archive serves, as any user, without
//! reading or changing the host's apt configuration or state.
//!
//! apt is pointed at the state with `APT_CONFIG` rather than `-o` options: apt reads
//! `APT_CONFIG` before `/etc/apt/apt.conf.d`, so setting `Dir::Etc` there keeps the
//! host's configuration out entirely (its proxies, but also hooks such as Docker images'
//! `APT::Update::Post-Invoke`, which would delete the host's own downloaded packages).
//! Signatures are checked as apt checks them: every source is `signed-by` the Debian
//! archive keyring, and insecure repositories are refused.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use nix::fcntl::{Flock, FlockArg};

use super::apt_config::{apt_conf, sources_list, AptConfig};
use super::apt_output::{self, Candidate, Throttle};
use super::release::Release;
use crate::cache::{Cache, CacheError};
use crate::host_tool::{self, CommandError};

/// Backstops; apt's own per-connection timeout (below) catches a stalled transfer first.
const UPDATE_DEADLINE: Duration = Duration::from_secs(10 * 60);
const DOWNLOAD_DEADLINE: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, thiserror::Error)]
pub enum AptError {
    #[error("The Debian archive keyring {path} does not exist; install the debian-archive-keyring package (Debian and Ubuntu both ship it) or point $KCHAOS_DEBIAN_KEYRING at a copy")]
    NoKeyring { path: String },
    #[error("The cache path {path} cannot be written into an apt configuration (it must be UTF-8 without quotes or newlines); set $KCHAOS_CACHE")]
    BadPath { path: String },
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("Cannot write {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot lock {path}")]
    Lock {
        path: String,
        #[source]
        source: nix::Error,
    },
    #[error("Cannot refresh the package lists of {release} from {mirrors}{hint}: {detail}")]
    Update {
        release: Release,
        mirrors: String,
        hint: &'static str,
        detail: String,
    },
    #[error(transparent)]
    Command(#[from] CommandError),
}

/// Whether a state's lists may be used as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    /// Never updated.
    Missing,
    /// Updated from other sources (the mirror changed).
    SourcesChanged,
    Stale {
        age: Duration,
    },
}

/// Decides from the last successful update (the sources it used and when) whether the
/// lists must be refreshed.
pub fn freshness(
    last: Option<(&str, SystemTime)>,
    sources: &str,
    now: SystemTime,
    max_age: Duration,
) -> Freshness {
    match last {
        None => Freshness::Missing,
        Some((used, _)) if used != sources => Freshness::SourcesChanged,
        Some((_, at)) => {
            // A stamp from the future (clock skew) counts as new.
            let age = now.duration_since(at).unwrap_or_default();
            if age > max_age {
                Freshness::Stale { age }
            } else {
                Freshness::Fresh
            }
        }
    }
}

/// What a failed `apt-get update` most likely needs, from what apt printed.
fn update_hint(stderr: &str) -> &'static str {
    if stderr.contains("NO_PUBKEY") || stderr.contains("is not signed") {
        " (the archive's signatures could not be verified with the keyring: a debian-archive-keyring too old for this release? point $KCHAOS_DEBIAN_KEYRING at a newer one)"
    } else if stderr.contains("Temporary failure resolving")
        || stderr.contains("Could not resolve")
        || stderr.contains("Could not connect")
        || stderr.contains("Connection timed out")
    {
        " (no network? set $KCHAOS_DEBIAN_MIRROR to a reachable mirror)"
    } else if stderr.contains("is not valid yet") || stderr.contains("is expired") {
        " (check the clock, or the mirror is out of date)"
    } else {
        ""
    }
}

/// The first `E:` message in apt's error text, with a count of the others: apt repeats
/// one cause for every index (`Temporary failure resolving …` three times per release).
pub fn first_error(text: &str) -> String {
    let mut errors = text.split("E: ").skip(1).map(str::trim);
    match errors.next() {
        None => text.to_owned(),
        Some(first) => match errors.count() {
            0 => first.to_owned(),
            more => format!("{first} (and {more} more)"),
        },
    }
}

/// States refreshed (or tried) in this process, by directory, with the failure if any:
/// a failed refresh is retried by the next process, not by every kernel of this one (an
/// offline run would otherwise wait on the network once per kernel).
type Outcome = Result<(), String>;
static REFRESHED: Mutex<Vec<(PathBuf, Outcome)>> = Mutex::new(Vec::new());

/// The apt state of one release.
#[derive(Debug)]
pub struct AptState {
    dir: PathBuf,
    release: Release,
    config: AptConfig,
    sources: String,
}

impl AptState {
    /// Creates (or rewrites) the state's configuration; touches no network.
    pub fn open(cache: &Cache, release: Release, config: &AptConfig) -> Result<AptState, AptError> {
        let dir = cache.dir(&format!("apt/{}", release.name()))?;
        let text = dir
            .to_str()
            .filter(|t| !t.contains(['"', '\n']))
            .ok_or_else(|| AptError::BadPath {
                path: dir.display().to_string(),
            })?
            .to_owned();
        for sub in [
            "etc/apt.conf.d",
            "etc/sources.list.d",
            "etc/preferences.d",
            "etc/trusted.gpg.d",
            "lists/partial",
            "cache/archives/partial",
            "log",
        ] {
            cache.dir(&format!("apt/{}/{sub}", release.name()))?;
        }
        let sources = sources_list(release, config);
        write_if_changed(&dir.join("apt.conf"), &apt_conf(&text))?;
        write_if_changed(&dir.join("etc/sources.list"), &sources)?;
        if !dir.join("status").exists() {
            write_if_changed(&dir.join("status"), "")?;
        }
        Ok(AptState {
            dir,
            release,
            config: config.clone(),
            sources,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("APT_CONFIG", self.dir.join("apt.conf"))
            .env("LC_ALL", "C")
            .env_remove("LANGUAGE");
        cmd
    }

    fn lock(&self, arg: FlockArg) -> Result<Flock<File>, AptError> {
        let path = self.dir.join("kchaos.lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| AptError::Write {
                path: path.display().to_string(),
                source,
            })?;
        Flock::lock(file, arg).map_err(|(_, source)| AptError::Lock {
            path: path.display().to_string(),
            source,
        })
    }

    fn stamp(&self) -> PathBuf {
        self.dir.join("updated")
    }

    /// Refreshes the lists if they are missing or stale. A failed refresh with lists
    /// from an earlier one is a warning (offline runs keep working with what is known);
    /// without any lists it is an error.
    pub fn refresh_if_stale(&self) -> Result<(), AptError> {
        // Once per process and state: a matrix resolves many kernels of one release,
        // and with a max age of 0 each would refresh again.
        let attempted = REFRESHED.lock().ok().and_then(|done| {
            done.iter()
                .find(|(dir, _)| *dir == self.dir)
                .map(|(_, outcome)| outcome.clone())
        });
        let (state, last) = self.freshness();
        let usable = matches!(state, Freshness::Stale { .. } | Freshness::Fresh);
        match attempted {
            Some(Ok(())) => return Ok(()),
            // Already reported in this process.
            Some(Err(_)) if usable => return Ok(()),
            Some(Err(detail)) => return Err(self.update_error(&detail, detail.clone())),
            None if state == Freshness::Fresh => return Ok(()),
            None => {}
        }
        let _lock = self.lock(FlockArg::LockExclusive)?;
        // Another process may have refreshed while this one waited for the lock.
        let (state, last_now) = self.freshness();
        if state == Freshness::Fresh {
            return Ok(());
        }
        let result = self.update(state);
        if let Ok(mut done) = REFRESHED.lock() {
            let outcome = result
                .as_ref()
                .map(|_| ())
                .map_err(|(_, detail)| detail.clone());
            done.push((self.dir.clone(), outcome));
        }
        match result {
            Ok(()) => {
                let stamp = self.stamp();
                write_if_changed(&stamp, &self.sources).and_then(|()| touch(&stamp))
            }
            Err((e, _)) if usable => {
                if let Some(age) = last.or(last_now).and_then(|t| t.elapsed().ok()) {
                    tracing::warn!(
                        "{e}; using the lists from {} ago",
                        humantime::format_duration(Duration::from_secs(age.as_secs()))
                    );
                }
                Ok(())
            }
            Err((e, _)) => Err(e),
        }
    }

    /// How fresh the lists are, and when they were last refreshed.
    fn freshness(&self) -> (Freshness, Option<SystemTime>) {
        let stamp = self.stamp();
        let last = std::fs::read_to_string(&stamp)
            .ok()
            .zip(std::fs::metadata(&stamp).and_then(|m| m.modified()).ok());
        let state = freshness(
            last.as_ref().map(|(s, t)| (s.as_str(), *t)),
            &self.sources,
            SystemTime::now(),
            self.config.max_age,
        );
        (state, last.map(|(_, t)| t))
    }

    fn update_error(&self, full: &str, detail: String) -> AptError {
        AptError::Update {
            release: self.release,
            mirrors: self.mirrors(),
            hint: update_hint(full),
            detail,
        }
    }

    fn mirrors(&self) -> String {
        let mut urls: Vec<&str> = self
            .release
            .suites()
            .iter()
            .map(|s| self.config.mirror_of(s.archive))
            .collect();
        urls.dedup();
        urls.join(" and ")
    }

    /// Runs `apt-get update`; on failure, the error and its one-line summary.
    fn update(&self, why: Freshness) -> Result<(), (AptError, String)> {
        if !self.config.keyring.is_file() {
            let e = AptError::NoKeyring {
                path: self.config.keyring.display().to_string(),
            };
            let detail = e.to_string();
            return Err((e, detail));
        }
        let suites: Vec<&str> = self.release.suites().iter().map(|s| s.name).collect();
        let why = match why {
            Freshness::Stale { age } => format!(
                ", {} old",
                humantime::format_duration(Duration::from_secs(age.as_secs() / 60 * 60))
            ),
            Freshness::SourcesChanged => ", the mirror changed".to_owned(),
            Freshness::Missing | Freshness::Fresh => String::new(),
        };
        tracing::info!(
            "apt: refreshing the package lists of {} ({}) from {}{why}",
            self.release,
            suites.join(", "),
            self.mirrors()
        );
        let started = Instant::now();
        let label = format!("apt: {} lists", self.release);
        let result = host_tool::run_streaming(
            self.command("apt-get")
                .args(["-q", "-o", "APT::Status-Fd=1", "update"]),
            UPDATE_DEADLINE,
            &mut progress(&label, started),
        );
        match result {
            Ok(_) => {
                tracing::info!(
                    "apt: {} lists refreshed in {:.1}s",
                    self.release,
                    started.elapsed().as_secs_f64()
                );
                Ok(())
            }
            Err(e) => {
                let full = match &e {
                    CommandError::Failed { stderr, .. } => stderr.clone(),
                    other => other.to_string(),
                };
                let detail = first_error(&full);
                Err((self.update_error(&full, detail.clone()), detail))
            }
        }
    }

    /// Package names starting with `prefix`.
    pub fn pkgnames(&self, prefix: &str) -> Result<Vec<String>, AptError> {
        let _lock = self.lock(FlockArg::LockShared)?;
        Ok(
            host_tool::run(self.command("apt-cache").args(["pkgnames", prefix]))?
                .lines()
                .map(str::to_owned)
                .collect(),
        )
    }

    /// apt's candidate of `package` and its suite; `None` if the lists do not have it.
    pub fn candidate(&self, package: &str) -> Result<Option<Candidate>, AptError> {
        let _lock = self.lock(FlockArg::LockShared)?;
        let text = host_tool::run(self.command("apt-cache").args(["policy", package]))?;
        Ok(apt_output::parse_policy(&text, self.release))
    }

    /// Downloads `package` at `version` into `dir`; apt checks it against the hash in
    /// the signed lists. Returns the `.deb`.
    pub fn download(
        &self,
        package: &str,
        version: &str,
        suite: &str,
        dir: &Path,
    ) -> Result<PathBuf, AptError> {
        let _lock = self.lock(FlockArg::LockShared)?;
        let wanted = format!("{package}={version}");
        let size =
            host_tool::run(
                self.command("apt-cache")
                    .args(["show", "--no-all-versions", &wanted]),
            )
            .ok()
            .and_then(|t| apt_output::parse_size(&t));
        let size = size.map_or_else(String::new, |s| {
            format!(" ({:.0} MB)", s as f64 / 1_000_000.0)
        });
        tracing::info!("downloading {package} {version} from {suite}{size}");
        let started = Instant::now();
        host_tool::run_streaming(
            self.command("apt-get")
                .args(["-q", "-o", "APT::Status-Fd=1", "download", &wanted])
                .current_dir(dir),
            DOWNLOAD_DEADLINE,
            &mut progress(&format!("downloading {package}"), started),
        )?;
        let prefix = format!("{package}_");
        let deb = std::fs::read_dir(dir)
            .map_err(|source| AptError::Write {
                path: dir.display().to_string(),
                source,
            })?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.extension().is_some_and(|x| x == "deb")
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
            });
        deb.ok_or_else(|| {
            AptError::Command(CommandError::Failed {
                command: format!("apt-get download {wanted}"),
                status: "exit status: 0".to_owned(),
                stderr: format!("no {prefix}*.deb in {}", dir.display()),
            })
        })
    }
}

/// A progress printer for `dlstatus:` lines: quiet for fast runs, then every few seconds.
fn progress(label: &str, started: Instant) -> impl FnMut(&str) + '_ {
    let mut throttle = Throttle::new(started, Duration::from_secs(2), Duration::from_secs(5));
    move |line: &str| {
        if let Some((percent, what)) = apt_output::parse_dlstatus(line) {
            if throttle.report(Instant::now(), percent) {
                tracing::info!("{label}: {percent:.0}% ({what})");
            }
        }
    }
}

fn write_if_changed(path: &Path, text: &str) -> Result<(), AptError> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    Ok(Cache::write_atomic(path, text.as_bytes())?)
}

/// Marks `path` as written now, even when its content did not change.
fn touch(path: &Path) -> Result<(), AptError> {
    File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(SystemTime::now()))
        .map_err(|source| AptError::Write {
            path: path.display().to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_lists_are_refreshed() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hours = |h: u64| Duration::from_secs(h * 3600);
        let day = hours(24);
        type LastUpdate<'a> = Option<(&'a str, SystemTime)>;
        let table: &[(LastUpdate, Duration, Freshness)] = &[
            (None, day, Freshness::Missing),
            (Some(("S", now - hours(1))), day, Freshness::Fresh),
            (
                Some(("S", now - hours(25))),
                day,
                Freshness::Stale { age: hours(25) },
            ),
            (Some(("old mirror", now)), day, Freshness::SourcesChanged),
            (Some(("S", now + hours(1))), day, Freshness::Fresh),
            (
                Some(("S", now - Duration::from_secs(1))),
                Duration::ZERO,
                Freshness::Stale {
                    age: Duration::from_secs(1),
                },
            ),
        ];
        for (last, max_age, want) in table {
            assert_eq!(
                freshness(*last, "S", now, *max_age),
                *want,
                "{last:?} {max_age:?}"
            );
        }
    }

    #[test]
    fn apt_errors_are_summed_up() {
        let table: &[(&str, &str)] = &[
            (
                "E: Failed to fetch a  Temporary failure resolving 'x' E: Failed to fetch b  Temporary failure resolving 'x' E: Some index files failed to download.",
                "Failed to fetch a  Temporary failure resolving 'x' (and 2 more)",
            ),
            ("E: Failed to fetch c  404  Not Found", "Failed to fetch c  404  Not Found"),
            ("something without a prefix", "something without a prefix"),
        ];
        for (text, want) in table {
            assert_eq!(first_error(text), *want);
        }
    }

    #[test]
    fn update_failures_get_a_hint() {
        let table: &[(&str, &str)] = &[
            ("E: The repository 'x' is not signed.", "keyring"),
            ("W: GPG error: NO_PUBKEY 6ED0E7B82643E131", "keyring"),
            (
                "E: Failed to fetch x  Could not connect to 127.0.0.1:9",
                "no network",
            ),
            (
                "E: Failed to fetch x  Temporary failure resolving 'deb.debian.org'",
                "no network",
            ),
            ("E: Release file for x is expired", "clock"),
            ("E: something else", ""),
        ];
        for (stderr, want) in table {
            assert!(update_hint(stderr).contains(want), "{stderr}");
        }
    }
}
