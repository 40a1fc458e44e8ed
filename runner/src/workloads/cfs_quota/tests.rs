use std::time::Duration;

use kchaos_model::scenario::{self, WorkloadSpec};

use super::*;

fn spec(extra: &str) -> CfsQuota {
    let src = format!("[scenario]\nname = \"t\"\n[[workload]]\nkind = \"cfs-quota\"\n{extra}\n");
    match scenario::parse("t.toml", &src)
        .unwrap()
        .workloads
        .remove(0)
        .spec
    {
        WorkloadSpec::CfsQuota(c) => c,
        _ => panic!("expected cfs-quota"),
    }
}

#[test]
fn tree_has_width_to_the_depth_leaves() {
    let t = tree(&spec("depth = 2\nwidth = 3"));
    assert_eq!(t.inner, ["kchaos-cfs/g0", "kchaos-cfs/g1", "kchaos-cfs/g2"]);
    assert_eq!(t.leaves.len(), 9);
    assert_eq!(t.leaves[4], "kchaos-cfs/g1/g1");
    let flat = tree(&spec("depth = 1\nwidth = 2"));
    assert!(flat.inner.is_empty());
    assert_eq!(flat.leaves, ["kchaos-cfs/g0", "kchaos-cfs/g1"]);
}

#[test]
fn waterfill_caps_each_claimant_and_shares_the_rest() {
    assert_eq!(waterfill(1.0, &[0.1, 0.2]), [0.1, 0.2]);
    let a = waterfill(1.0, &[0.1, 0.9, 0.9]);
    assert!(
        (a[0] - 0.1).abs() < 1e-9 && (a[1] - 0.45).abs() < 1e-9 && (a[2] - 0.45).abs() < 1e-9,
        "{a:?}"
    );
    assert_eq!(waterfill(0.0, &[0.5]), [0.0]);
}

#[test]
fn allowance_respects_quotas_inner_caps_and_the_machine() {
    // Two groups of two leaves; every leaf may use 0.3 CPU.
    let demand = [0.3, 0.3, 0.3, 0.3];
    // Plenty of CPU, no inner cap: everyone gets their quota.
    assert_eq!(allowance(&demand, 2, 2, None, 4.0), [0.3, 0.3, 0.3, 0.3]);
    // Inner nodes capped at 0.4 CPU: each leaf gets half of that.
    let capped = allowance(&demand, 2, 2, Some(0.4), 4.0);
    assert!(capped.iter().all(|&a| (a - 0.2).abs() < 1e-9), "{capped:?}");
    // One CPU for 1.2 CPUs of demand: equal shares.
    let tight = allowance(&demand, 2, 2, None, 1.0);
    assert!(tight.iter().all(|&a| (a - 0.25).abs() < 1e-9), "{tight:?}");
}

#[test]
fn bandwidth_is_picked_in_range_and_reproducibly() {
    let s = spec("quota = [\"2ms\", \"8ms\"]\nperiod = [\"10ms\", \"20ms\"]");
    let mut a = ChaCha8Rng::seed_from_u64(42);
    let mut b = ChaCha8Rng::seed_from_u64(42);
    for _ in 0..50 {
        let (x, y) = (Bandwidth::pick(&s, &mut a), Bandwidth::pick(&s, &mut b));
        assert_eq!((x.quota, x.period), (y.quota, y.period));
        assert!(x.quota >= Duration::from_millis(2) && x.quota <= Duration::from_millis(8));
        assert!(x.period >= Duration::from_millis(10) && x.period <= Duration::from_millis(20));
    }
}
