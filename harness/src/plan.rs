//! The matrix of a run: scenarios × kernels × topologies × repeats, in one canonical
//! order that sharding, resuming and merging all agree on, and each cell's seed. Pure;
//! the run executes what it plans.

use std::fmt;

use kchaos_model::topology::Topology;
use serde::{Deserialize, Serialize};

/// What identifies a cell across runs, shards and resumes: the scenario's name, the
/// kernel as the user asked for it, the topology when the run has a topology axis, and
/// the repeat.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CellKey {
    pub scenario: String,
    pub kernel: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<String>,
    pub repeat: u32,
}

impl fmt::Display for CellKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}", self.scenario, self.kernel)?;
        if let Some(t) = &self.topology {
            write!(f, " ({t})")?;
        }
        write!(f, " #{}", self.repeat)
    }
}

/// One planned cell: indexes into the run's scenarios and kernels, and into its
/// scenario's topology axis ([`topology_axis`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    pub scenario: usize,
    pub kernel: usize,
    pub topology: usize,
    pub repeat: u32,
}

/// The topologies a scenario runs on: `--topology`'s when given, else the scenario's own
/// list (`[vm] cpus = [1, 2, 4]`); `None` alone when neither names several (the cell
/// runs on the scenario's `[vm] cpus` and its id and results carry no topology, as
/// before topologies were a dimension).
pub fn topology_axis(asked: &[Topology], scenario: &[Topology]) -> Vec<Option<Topology>> {
    let list = if asked.is_empty() { scenario } else { asked };
    if list.is_empty() {
        vec![None]
    } else {
        list.iter().copied().map(Some).collect()
    }
}

/// `--shard I/N`: the I-th of N disjoint parts (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    pub fn parse(text: &str) -> Result<Shard, String> {
        let (i, n) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}`: a shard is I/N, e.g. 2/4"))?;
        let index: u32 = i
            .trim()
            .parse()
            .map_err(|_| format!("`{text}`: `{i}` is not a shard number"))?;
        let count: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("`{text}`: `{n}` is not a shard count"))?;
        if count == 0 || index == 0 || index > count {
            return Err(format!(
                "`{text}`: shards are numbered 1 to N (N at least 1)"
            ));
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Every cell, kernel-major (a kernel is prepared once and its cells follow), then
/// scenario, then topology, then repeat; with a shard, every N-th cell of that order
/// from the I-th on, so shards are disjoint, together complete, and balanced within one
/// cell. `axes[s]` is how many topologies scenario `s` runs on (at least one).
pub fn plan(axes: &[usize], kernels: usize, repeats: u32, shard: Option<Shard>) -> Vec<Planned> {
    let per_kernel: usize = axes.iter().map(|&n| n.max(1)).sum();
    let mut all = Vec::with_capacity(per_kernel * kernels * repeats as usize);
    for kernel in 0..kernels {
        for (scenario, &topologies) in axes.iter().enumerate() {
            for topology in 0..topologies.max(1) {
                for repeat in 0..repeats {
                    all.push(Planned {
                        scenario,
                        kernel,
                        topology,
                        repeat,
                    });
                }
            }
        }
    }
    match shard {
        None => all,
        Some(s) => all
            .into_iter()
            .enumerate()
            .filter(|(i, _)| *i as u64 % u64::from(s.count) == u64::from(s.index - 1))
            .map(|(_, p)| p)
            .collect(),
    }
}

/// Reorders cells for the VM slots: longest expected first within each kernel
/// (longest-processing-time scheduling), so the longest cell does not start last and
/// leave one slot running alone at the end. Kernels keep their order (a kernel is still
/// prepared before its cells), equal estimates keep plan order, and results are
/// recorded in plan order whatever the run order.
pub fn longest_first(cells: &mut [Planned], estimate: impl Fn(&Planned) -> std::time::Duration) {
    cells.sort_by_cached_key(|p| (p.kernel, std::cmp::Reverse(estimate(p))));
}

/// A cell's id and directory (relative to the results directory): `scenario/kernel`,
/// with `/topo-<topology>` on a topology axis and `/rN` when the run repeats cells.
pub fn cell_id(
    scenario: &str,
    kernel_label: &str,
    topology: Option<Topology>,
    repeat: u32,
    repeats: u32,
) -> String {
    let mut id = format!("{scenario}/{kernel_label}");
    if let Some(t) = topology {
        id.push_str(&format!("/topo-{t}"));
    }
    if repeats > 1 {
        id.push_str(&format!("/r{repeat}"));
    }
    id
}

/// The seed of a cell: the fixed one (`--seed`, else the scenario's) for the first
/// repeat and one derived from it for the others, so repeats differ but a rerun of the
/// matrix is the same; `random` when nothing is fixed. Always recorded.
pub fn cell_seed(fixed: Option<u64>, repeat: u32, random: impl FnOnce() -> u64) -> u64 {
    match fixed {
        Some(seed) if repeat == 0 => seed,
        Some(seed) => kchaos_model::derive_seed(seed, &format!("repeat-{repeat}")),
        None => random(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn longest_cells_start_first_within_each_kernel() {
        use std::time::Duration;
        let order = |cells: &[Planned]| -> Vec<Cell> {
            cells
                .iter()
                .map(|p| (p.kernel, p.scenario, p.repeat))
                .collect()
        };
        // (scenario seconds, planned cells) -> run order as (kernel, scenario, repeat)
        type Cell = (usize, usize, u32);
        let cases: &[(&[u64], usize, u32, &[Cell])] = &[
            // One kernel: the 120 s scenario first, the 30 s one last.
            (&[30, 120, 60], 1, 1, &[(0, 1, 0), (0, 2, 0), (0, 0, 0)]),
            // Repeats of one scenario stay together and in repeat order.
            (
                &[10, 50],
                1,
                2,
                &[(0, 1, 0), (0, 1, 1), (0, 0, 0), (0, 0, 1)],
            ),
            // Equal estimates keep plan order.
            (&[5, 5, 5], 1, 1, &[(0, 0, 0), (0, 1, 0), (0, 2, 0)]),
            // Kernels keep their order; each is sorted on its own.
            (
                &[30, 120],
                2,
                1,
                &[(0, 1, 0), (0, 0, 0), (1, 1, 0), (1, 0, 0)],
            ),
        ];
        for (durations, kernels, repeats, want) in cases {
            let mut cells = plan(&vec![1; durations.len()], *kernels, *repeats, None);
            longest_first(&mut cells, |p| Duration::from_secs(durations[p.scenario]));
            assert_eq!(order(&cells), want.to_vec(), "{durations:?}");
        }
    }

    #[test]
    fn shards_cover_every_cell_exactly_once_for_any_count() {
        let axes: [&[usize]; 5] = [&[1], &[1; 6], &[1, 3, 1, 1, 2], &[2, 2], &[4]];
        for (axes, kernels, repeats) in [
            (axes[0], 1, 1),
            (axes[1], 2, 3),
            (axes[2], 3, 1),
            (axes[3], 7, 4),
            (axes[4], 2, 2),
        ] {
            let whole = plan(axes, kernels, repeats, None);
            let columns: usize = axes.iter().sum();
            assert_eq!(whole.len(), columns * kernels * repeats as usize);
            for count in 1..=(u32::try_from(whole.len()).unwrap() + 2) {
                let mut seen = Vec::new();
                for index in 1..=count {
                    let part = plan(axes, kernels, repeats, Some(Shard { index, count }));
                    // Balanced: sizes differ by at most one.
                    let ideal = whole.len() as f64 / f64::from(count);
                    assert!(
                        (part.len() as f64 - ideal).abs() < 1.0,
                        "{count}: {}",
                        part.len()
                    );
                    seen.extend(part);
                }
                assert_eq!(seen.len(), whole.len(), "{count} shards");
                let unique: HashSet<_> = seen
                    .iter()
                    .map(|p| (p.scenario, p.kernel, p.topology, p.repeat))
                    .collect();
                assert_eq!(unique.len(), whole.len(), "{count} shards overlap");
            }
        }
    }

    #[test]
    fn topologies_come_between_scenario_and_repeat() {
        let p = plan(&[2, 1], 1, 2, None);
        let order: Vec<_> = p
            .iter()
            .map(|c| (c.kernel, c.scenario, c.topology, c.repeat))
            .collect();
        assert_eq!(
            order,
            [
                (0, 0, 0, 0),
                (0, 0, 0, 1),
                (0, 0, 1, 0),
                (0, 0, 1, 1),
                (0, 1, 0, 0),
                (0, 1, 0, 1)
            ]
        );
    }

    #[test]
    fn the_asked_topologies_override_the_scenarios_own() {
        let t = |s: &str| Topology::parse_list(s).unwrap();
        let labels = |axis: Vec<Option<Topology>>| -> Vec<Option<String>> {
            axis.into_iter().map(|t| t.map(|t| t.label())).collect()
        };
        // (asked, the scenario's list) -> the axis
        let cases: &[(&str, &str, &[Option<&str>])] = &[
            ("", "", &[None]),
            ("", "1,2,4", &[Some("1"), Some("2"), Some("4")]),
            ("2s1c", "1,2,4", &[Some("2s1c")]),
            ("1,2", "", &[Some("1"), Some("2")]),
        ];
        for &(asked, own, want) in cases {
            let list = |s: &str| if s.is_empty() { Vec::new() } else { t(s) };
            let want: Vec<Option<String>> = want.iter().map(|w| w.map(str::to_owned)).collect();
            assert_eq!(
                labels(topology_axis(&list(asked), &list(own))),
                want,
                "{asked} / {own}"
            );
        }
    }

    #[test]
    fn the_order_is_kernel_major_and_stable() {
        let p = plan(&[1, 1], 2, 2, None);
        let order: Vec<_> = p.iter().map(|c| (c.kernel, c.scenario, c.repeat)).collect();
        assert_eq!(
            order,
            [
                (0, 0, 0),
                (0, 0, 1),
                (0, 1, 0),
                (0, 1, 1),
                (1, 0, 0),
                (1, 0, 1),
                (1, 1, 0),
                (1, 1, 1)
            ]
        );
        assert_eq!(plan(&[1, 1], 2, 2, None), p);
    }

    #[test]
    fn shard_syntax() {
        assert_eq!(Shard::parse("2/4"), Ok(Shard { index: 2, count: 4 }));
        assert!(Shard::parse("0/4").is_err());
        assert!(Shard::parse("5/4").is_err());
        assert!(Shard::parse("1/0").is_err());
        assert!(Shard::parse("x").unwrap_err().contains("I/N"));
        assert_eq!(Shard { index: 1, count: 3 }.to_string(), "1/3");
    }

    #[test]
    fn seeds_are_fixed_derived_or_random() {
        assert_eq!(cell_seed(Some(7), 0, || 1), 7);
        let r1 = cell_seed(Some(7), 1, || 1);
        assert!(
            r1 != 7 && r1 == cell_seed(Some(7), 1, || 2),
            "derived, stable"
        );
        assert_eq!(cell_seed(None, 3, || 99), 99);
    }

    #[test]
    fn ids_name_the_topology_and_repeat_only_when_there_are_several() {
        let two = Topology::parse("2s1c").ok();
        assert_eq!(cell_id("s", "k", None, 0, 1), "s/k");
        assert_eq!(cell_id("s", "k", None, 2, 3), "s/k/r2");
        assert_eq!(cell_id("s", "k", two, 0, 1), "s/k/topo-2s1c");
        assert_eq!(cell_id("s", "k", two, 1, 2), "s/k/topo-2s1c/r1");
    }
}
