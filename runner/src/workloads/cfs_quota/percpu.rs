//! `cfs-quota` with `per_cpu`: what each leaf's threads received on each CPU, against
//! the leaf's other CPUs. Every CPU runs the same threads of a leaf and each wants more
//! than the group's quota can give, so a healthy kernel splits the group's runtime about
//! evenly between its CPUs' run queues; one CPU far below the others is a run queue that
//! starves the group while its totals (`share_min`) look fine.

use std::collections::BTreeMap;

use crate::cpus::ThreadTime;

/// One (leaf, CPU): what it received over the median of the leaf's other CPUs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuRatio {
    pub leaf: usize,
    pub cpu: usize,
    pub ratio: f64,
}

/// The lowest and highest ratio over every leaf and CPU; `None` when no leaf had
/// threads to measure.
pub fn extremes(leaves: &[Vec<ThreadTime>]) -> Option<(CpuRatio, CpuRatio)> {
    let ratios: Vec<CpuRatio> = leaves
        .iter()
        .enumerate()
        .flat_map(|(leaf, threads)| leaf_ratios(leaf, threads))
        .collect();
    // On a tie, the first leaf and CPU.
    let min = ratios
        .iter()
        .copied()
        .min_by(|a, b| a.ratio.total_cmp(&b.ratio))?;
    let max = ratios
        .iter()
        .copied()
        .rev()
        .max_by(|a, b| a.ratio.total_cmp(&b.ratio))?;
    Some((min, max))
}

/// Each CPU of one leaf against the median of its other CPUs. With one CPU there is no
/// other to fall behind: its ratio is 1. A CPU whose others received nothing has no
/// ratio unless it received nothing either (1).
fn leaf_ratios(leaf: usize, threads: &[ThreadTime]) -> Vec<CpuRatio> {
    let totals = per_cpu(threads);
    if totals.len() == 1 {
        return totals
            .keys()
            .map(|&cpu| CpuRatio {
                leaf,
                cpu,
                ratio: 1.0,
            })
            .collect();
    }
    totals
        .iter()
        .filter_map(|(&cpu, &(run, _))| {
            let others: Vec<f64> = totals
                .iter()
                .filter(|(&c, _)| c != cpu)
                .map(|(_, &(r, _))| r)
                .collect();
            let median = median(others)?;
            let ratio = if median > 0.0 {
                run / median
            } else if run == 0.0 {
                1.0
            } else {
                return None;
            };
            Some(CpuRatio { leaf, cpu, ratio })
        })
        .collect()
}

/// Run and delay (when the kernel keeps it) per CPU, summed over `threads`.
pub fn per_cpu(threads: &[ThreadTime]) -> BTreeMap<usize, (f64, Option<f64>)> {
    let mut totals: BTreeMap<usize, (f64, Option<f64>)> = BTreeMap::new();
    for t in threads {
        let entry = totals.entry(t.cpu).or_insert((0.0, Some(0.0)));
        entry.0 += t.run_ns;
        entry.1 = match (entry.1, t.delay_ns) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
    }
    totals
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 0 {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

/// For the note an engineer reads: each CPU's received and waiting time over all
/// leaves, in seconds (`cpu0 6.10 s run, 40.20 s waiting; cpu1 …`).
pub fn describe(leaves: &[Vec<ThreadTime>]) -> String {
    let all: Vec<ThreadTime> = leaves.iter().flatten().copied().collect();
    per_cpu(&all)
        .iter()
        .map(|(cpu, (run, delay))| match delay {
            Some(d) => format!("cpu{cpu} {:.2} s run, {:.2} s waiting", run / 1e9, d / 1e9),
            None => format!("cpu{cpu} {:.2} s run", run / 1e9),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(cpu: usize, run_ms: f64) -> ThreadTime {
        ThreadTime {
            cpu,
            run_ns: run_ms * 1e6,
            delay_ns: Some(run_ms * 9e6),
        }
    }

    #[test]
    fn the_starving_cpu_is_found_against_the_median_of_the_others() {
        // (leaves, lowest (leaf, cpu, ratio), highest (leaf, cpu, ratio))
        type Case = (
            Vec<Vec<ThreadTime>>,
            (usize, usize, f64),
            (usize, usize, f64),
        );
        let cases: Vec<Case> = vec![
            // Two CPUs, even: 1 both ways.
            (
                vec![vec![t(0, 100.0), t(1, 60.0), t(1, 40.0)]],
                (0, 0, 1.0),
                (0, 0, 1.0),
            ),
            // CPU 1 of the second leaf got a third of CPU 0.
            (
                vec![
                    vec![t(0, 100.0), t(1, 100.0)],
                    vec![t(0, 150.0), t(1, 50.0)],
                ],
                (1, 1, 1.0 / 3.0),
                (1, 0, 3.0),
            ),
            // Four CPUs: CPU 2 against the median (100) of 90, 100 and 110; CPU 3
            // against that (90) of 30, 90 and 100.
            (
                vec![vec![t(0, 90.0), t(1, 100.0), t(2, 30.0), t(3, 110.0)]],
                (0, 2, 0.3),
                (0, 3, 110.0 / 90.0),
            ),
            // One CPU: nothing to fall behind.
            (vec![vec![t(0, 5.0), t(0, 7.0)]], (0, 0, 1.0), (0, 0, 1.0)),
        ];
        for (leaves, (l0, c0, r0), (l1, c1, r1)) in cases {
            let (min, max) = extremes(&leaves).unwrap();
            assert_eq!((min.leaf, min.cpu), (l0, c0), "{leaves:?}");
            assert!((min.ratio - r0).abs() < 1e-9, "{min:?}");
            assert_eq!((max.leaf, max.cpu), (l1, c1), "{leaves:?}");
            assert!((max.ratio - r1).abs() < 1e-9, "{max:?}");
        }
    }

    #[test]
    fn nothing_measured_gives_no_ratio_and_nothing_received_is_even() {
        assert_eq!(extremes(&[]), None);
        assert_eq!(extremes(&[Vec::new()]), None);
        // Neither CPU received anything: even, not a division by zero.
        let (min, _) = extremes(&[vec![t(0, 0.0), t(1, 0.0)]]).unwrap();
        assert_eq!(min.ratio, 1.0);
        // One CPU got something, the other nothing: the starving one is at 0; the
        // other has no finite ratio and is left out.
        let (min, max) = extremes(&[vec![t(0, 10.0), t(1, 0.0)]]).unwrap();
        assert_eq!((min.cpu, min.ratio), (1, 0.0));
        assert_eq!((max.cpu, max.ratio), (1, 0.0));
    }

    #[test]
    fn the_note_sums_every_leaf_per_cpu() {
        let leaves = vec![vec![t(0, 1000.0)], vec![t(0, 1000.0), t(1, 500.0)]];
        assert_eq!(
            describe(&leaves),
            "cpu0 2.00 s run, 18.00 s waiting; cpu1 0.50 s run, 4.50 s waiting"
        );
        let no_delay = vec![vec![ThreadTime {
            cpu: 3,
            run_ns: 2e9,
            delay_ns: None,
        }]];
        assert_eq!(describe(&no_delay), "cpu3 2.00 s run");
    }
}
