//! The compiler cache of source-tree builds: Debian's `ccache`, its files under
//! `$KCHAOS_CACHE/kernels/ccache` with a size bound. Kbuild's own incremental build
//! (one build directory reused from step to step) recompiles a file whenever a checkout
//! rewrote it; a bisection goes back and forth over the same commits, so most of those
//! files are versions ccache has compiled before, and a new build directory (another
//! fragment set, an evicted one) starts from ccache instead of from nothing.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cache::Cache;

/// Where ccache keeps its files and how big they may grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ccache {
    pub dir: PathBuf,
    /// ccache's `max_size` (`5G`): it evicts least recently used results beyond it.
    pub max_size: String,
}

/// The default bound; `$KCHAOS_CCACHE_SIZE` changes it.
pub const DEFAULT_MAX_SIZE: &str = "5G";

impl Ccache {
    /// The cache's ccache when ccache is installed (`$KCHAOS_CCACHE_SIZE` bounds it).
    pub fn find(cache: &Cache) -> Option<Ccache> {
        let installed = std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join("ccache").is_file()));
        installed.then(|| Ccache {
            dir: cache.root().join("kernels/ccache"),
            max_size: std::env::var("KCHAOS_CCACHE_SIZE")
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| DEFAULT_MAX_SIZE.to_owned()),
        })
    }

    /// The environment build.sh needs to compile through ccache, every counter update
    /// of this build logged to `stats_log`.
    ///
    /// Every kernel kchaos builds has the same layout below `base_dir`: the source in
    /// `tree/`, the objects in `out/` (recipe builds in their scratch directory, source
    /// trees in their build space). ccache hashes paths below `base_dir` relative to the
    /// object directory (`../tree/...`), and, with `hash_dir` off, not the directory a
    /// compiler ran in (it is hashed by default when compiling with `-g`): so a file
    /// compiled for `build:defects` is a hit for a bisection of the same source with the
    /// same configuration, and the other way round. The price: the DWARF `comp_dir` of
    /// such an object names the build that compiled it first (debuggers find no source
    /// through it; `crash` needs none).
    pub fn env(&self, base_dir: &Path, stats_log: &Path) -> Vec<(String, String)> {
        let path = |p: &Path| p.display().to_string();
        vec![
            ("KCHAOS_CCACHE".into(), "1".into()),
            ("CCACHE_DIR".into(), path(&self.dir)),
            ("CCACHE_MAXSIZE".into(), self.max_size.clone()),
            ("CCACHE_BASEDIR".into(), path(base_dir)),
            ("CCACHE_NOHASHDIR".into(), "1".into()),
            ("CCACHE_STATSLOG".into(), path(stats_log)),
        ]
    }
}

/// What ccache did for one build.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CcacheCounts {
    /// Results found by the source file and its includes (no preprocessing).
    pub direct_hits: u64,
    /// Results found after preprocessing (the source changed, its preprocessed text not).
    pub preprocessed_hits: u64,
    /// Compiled for real.
    pub misses: u64,
}

impl CcacheCounts {
    /// Reads a ccache stats log (`CCACHE_STATSLOG`): a `# <file>` line per compiler
    /// call, then one counter name per line.
    pub fn parse(log: &str) -> CcacheCounts {
        let mut c = CcacheCounts::default();
        for line in log.lines() {
            match line.trim() {
                "direct_cache_hit" => c.direct_hits += 1,
                "preprocessed_cache_hit" => c.preprocessed_hits += 1,
                "cache_miss" => c.misses += 1,
                _ => {}
            }
        }
        c
    }

    pub fn hits(&self) -> u64 {
        self.direct_hits + self.preprocessed_hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stats_log_counts_hits_and_misses() {
        // As ccache 4.7 writes it: a miss, a direct hit, a preprocessed hit.
        let log =
            "# a.c\ncache_miss\ndirect_cache_miss\nlocal_storage_miss\npreprocessed_cache_miss\n\
                   # a.c\ndirect_cache_hit\nlocal_storage_hit\n\
                   # b.c\ndirect_cache_miss\npreprocessed_cache_hit\nlocal_storage_hit\n";
        let c = CcacheCounts::parse(log);
        assert_eq!(
            c,
            CcacheCounts {
                direct_hits: 1,
                preprocessed_hits: 1,
                misses: 1
            }
        );
        assert_eq!(c.hits(), 2);
        assert_eq!(CcacheCounts::parse(""), CcacheCounts::default());
    }

    #[test]
    fn the_environment_turns_build_sh_to_ccache() {
        let c = Ccache {
            dir: "/c/ccache".into(),
            max_size: "5G".into(),
        };
        let env = c.env(Path::new("/c/space"), Path::new("/c/stats"));
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("KCHAOS_CCACHE"), Some("1"));
        assert_eq!(get("CCACHE_DIR"), Some("/c/ccache"));
        assert_eq!(get("CCACHE_MAXSIZE"), Some("5G"));
        assert_eq!(get("CCACHE_BASEDIR"), Some("/c/space"));
        assert_eq!(get("CCACHE_STATSLOG"), Some("/c/stats"));
        assert_eq!(get("CCACHE_NOHASHDIR"), Some("1"));
    }
}
