//! A guest's CPU topology: how many CPUs, in how many sockets (each its own NUMA node),
//! with how many threads per core. Scenarios declare it in `[vm] cpus`, and runs plan
//! it as a dimension of the matrix (`kchaos run --topology 1,2,2s2c`), because a
//! per-CPU or cross-socket defect shows only on a topology that has what it breaks.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Most vCPUs a kchaos VM gets (TCG runs every vCPU on the host's few cores).
pub const MAX_CPUS: u32 = 64;
/// Most sockets (NUMA nodes).
pub const MAX_SOCKETS: u32 = 8;
/// Most threads per core.
pub const MAX_THREADS: u32 = 4;
/// Most topologies in one list (`--topology`, a scenario's `cpus = [...]`): each is a
/// whole column of the matrix.
pub const MAX_TOPOLOGIES: usize = 8;

/// `sockets × cores × threads` vCPUs. A plain count (`4`) is one socket of that many
/// cores, QEMU's `-smp 4`; with sockets (`2s2c`) every socket is a NUMA node of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Topology {
    pub sockets: u32,
    /// Cores per socket.
    pub cores: u32,
    /// Threads per core.
    pub threads: u32,
}

impl Default for Topology {
    fn default() -> Self {
        Topology::flat(1)
    }
}

impl Topology {
    /// `n` CPUs in one socket, one thread per core: `-smp n`.
    pub fn flat(n: u32) -> Topology {
        Topology {
            sockets: 1,
            cores: n,
            threads: 1,
        }
    }

    pub fn cpus(self) -> u32 {
        self.sockets
            .saturating_mul(self.cores)
            .saturating_mul(self.threads)
    }

    /// NUMA nodes QEMU is given: one per socket when there are several, else none (the
    /// guest sees the single node every small VM has).
    pub fn numa_nodes(self) -> u32 {
        if self.sockets > 1 {
            self.sockets
        } else {
            0
        }
    }

    /// `4`, `2s2c`, `2s2c2t`: what `parse` reads back, and the topology's name in cell
    /// ids and results.
    pub fn label(self) -> String {
        match (self.sockets, self.threads) {
            (1, 1) => self.cores.to_string(),
            (_, 1) => format!("{}s{}c", self.sockets, self.cores),
            _ => format!("{}s{}c{}t", self.sockets, self.cores, self.threads),
        }
    }

    /// Reads `4`, `2s2c` or `2s2c2t` (sockets, cores per socket, threads per core),
    /// within the bounds; the error says what is allowed.
    pub fn parse(text: &str) -> Result<Topology, String> {
        let t = text.trim();
        let shape = || {
            format!(
                "`{t}` is not a topology: a CPU count (`4`), or sockets and cores per socket \
                 (`2s2c`), optionally with threads per core (`2s2c2t`)"
            )
        };
        let topology = if let Ok(n) = t.parse::<u32>() {
            Topology::flat(n)
        } else {
            let (sockets, rest) = t.split_once('s').ok_or_else(shape)?;
            let (cores, rest) = rest.split_once('c').ok_or_else(shape)?;
            let threads = match rest {
                "" => "1",
                r => r.strip_suffix('t').ok_or_else(shape)?,
            };
            let num = |s: &str| s.parse::<u32>().map_err(|_| shape());
            Topology {
                sockets: num(sockets)?,
                cores: num(cores)?,
                threads: num(threads)?,
            }
        };
        topology.check().map(|()| topology)
    }

    fn check(self) -> Result<(), String> {
        let label = self.label();
        if self.sockets == 0 || self.cores == 0 || self.threads == 0 {
            return Err(format!("`{label}`: sockets, cores and threads start at 1"));
        }
        if self.sockets > MAX_SOCKETS {
            return Err(format!(
                "`{label}`: at most {MAX_SOCKETS} sockets (NUMA nodes)"
            ));
        }
        if self.threads > MAX_THREADS {
            return Err(format!("`{label}`: at most {MAX_THREADS} threads per core"));
        }
        let cpus = u64::from(self.sockets) * u64::from(self.cores) * u64::from(self.threads);
        if cpus > u64::from(MAX_CPUS) {
            return Err(format!(
                "`{label}` is {cpus} CPUs; a kchaos VM has at most {MAX_CPUS}"
            ));
        }
        Ok(())
    }

    /// A comma-separated list (`1,2,2s2c`): each valid, none twice, at most
    /// [`MAX_TOPOLOGIES`], in the order given.
    pub fn parse_list(text: &str) -> Result<Vec<Topology>, String> {
        let items: Vec<&str> = text.split(',').map(str::trim).collect();
        if items.iter().any(|i| i.is_empty()) {
            return Err(format!(
                "`{text}`: a topology list is comma-separated, like `1,2,2s2c`"
            ));
        }
        let list = items
            .into_iter()
            .map(Topology::parse)
            .collect::<Result<Vec<_>, _>>()?;
        check_list(&list).map(|()| list)
    }
}

/// Bounds shared by every list of topologies: not empty, at most [`MAX_TOPOLOGIES`],
/// no topology twice (`2` and `1s2c` are the same machine).
pub fn check_list(list: &[Topology]) -> Result<(), String> {
    if list.is_empty() {
        return Err("a topology list needs at least one topology".to_owned());
    }
    if list.len() > MAX_TOPOLOGIES {
        return Err(format!(
            "{} topologies; at most {MAX_TOPOLOGIES} in one run (each is a column of the matrix)",
            list.len()
        ));
    }
    for (i, t) in list.iter().enumerate() {
        if list[..i].contains(t) {
            return Err(format!("`{}` is listed twice", t.label()));
        }
    }
    Ok(())
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

impl FromStr for Topology {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Topology::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topologies_parse_and_print_back() {
        // (text, sockets, cores, threads, cpus, label, NUMA nodes)
        let cases: &[(&str, u32, u32, u32, u32, &str, u32)] = &[
            ("1", 1, 1, 1, 1, "1", 0),
            ("4", 1, 4, 1, 4, "4", 0),
            ("2s2c", 2, 2, 1, 4, "2s2c", 2),
            (" 2s1c ", 2, 1, 1, 2, "2s1c", 2),
            ("1s2c", 1, 2, 1, 2, "2", 0),
            ("2s2c2t", 2, 2, 2, 8, "2s2c2t", 2),
            ("1s2c2t", 1, 2, 2, 4, "1s2c2t", 0),
            ("8s8c", 8, 8, 1, 64, "8s8c", 8),
        ];
        for &(text, sockets, cores, threads, cpus, label, nodes) in cases {
            let t = Topology::parse(text).unwrap();
            assert_eq!((t.sockets, t.cores, t.threads), (sockets, cores, threads));
            assert_eq!(t.cpus(), cpus, "{text}");
            assert_eq!(t.label(), label, "{text}");
            assert_eq!(t.numa_nodes(), nodes, "{text}");
            assert_eq!(Topology::parse(&t.label()).unwrap(), t, "label round-trips");
        }
    }

    #[test]
    fn bad_topologies_say_what_is_allowed() {
        let cases: &[(&str, &str)] = &[
            ("", "not a topology"),
            ("two", "not a topology"),
            ("2x2", "not a topology"),
            ("2s", "not a topology"),
            ("2s2c2", "not a topology"),
            ("-1", "not a topology"),
            ("0", "start at 1"),
            ("2s0c", "start at 1"),
            ("65", "at most 64"),
            ("4s4c8t", "at most 4 threads"),
            ("9s1c", "at most 8 sockets"),
            ("8s4294967295c", "at most 64"),
        ];
        for &(text, needle) in cases {
            let e = Topology::parse(text).unwrap_err();
            assert!(e.contains(needle), "`{text}`: {e}");
        }
    }

    #[test]
    fn a_scenario_declares_one_topology_or_a_list() {
        let vm = |cpus: &str| {
            crate::scenario::parse(
                "t.toml",
                &format!(
                    "[scenario]\nname = \"t\"\n[vm]\ncpus = {cpus}\n\
                     [[probe]]\nkind = \"d-state\"\nname = \"d\"\n"
                ),
            )
            .map(|s| s.vm)
        };
        let two = vm("2").unwrap();
        assert_eq!((two.cpus, two.topology.label()), (2, "2".to_owned()));
        assert!(
            two.topologies.is_empty(),
            "one topology is no matrix column"
        );
        let numa = vm("\"2s2c\"").unwrap();
        assert_eq!((numa.cpus, numa.topology.numa_nodes()), (4, 2));
        let list = vm("[1, 2, \"2s1c\"]").unwrap();
        assert_eq!(list.cpus, 1, "the first is the VM's shape");
        let labels: Vec<String> = list.topologies.iter().map(|t| t.label()).collect();
        assert_eq!(labels, ["1", "2", "2s1c"]);
        assert!(vm("[4]").unwrap().topologies.is_empty());
        let column = list.with_topology(list.topologies[2]);
        assert_eq!((column.cpus, column.topologies.len()), (2, 0));
        for (bad, needle) in [
            ("0", "start at 1"),
            ("65", "at most 64"),
            ("-2", "not a CPU count"),
            ("[]", "at least one"),
            ("[2, \"1s2c\"]", "listed twice"),
            ("true", "not a CPU count or a topology"),
            ("\"2x2\"", "not a topology"),
        ] {
            let e = vm(bad).unwrap_err().to_string();
            assert!(e.contains("t.toml:4:8") && e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn lists_are_bounded_and_free_of_repeats() {
        let list = Topology::parse_list("1, 2,2s2c").unwrap();
        let labels: Vec<String> = list.iter().map(|t| t.label()).collect();
        assert_eq!(labels, ["1", "2", "2s2c"]);
        for (text, needle) in [
            ("1,,2", "comma-separated"),
            ("2,1s2c", "listed twice"),
            ("1,2,3,4,5,6,7,8,9", "at most 8"),
            ("1,x", "not a topology"),
        ] {
            let e = Topology::parse_list(text).unwrap_err();
            assert!(e.contains(needle), "`{text}`: {e}");
        }
    }
}
