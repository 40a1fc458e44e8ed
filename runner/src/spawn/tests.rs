use std::path::Path;

use super::*;

/// The zygote of this test process. The test harness has threads already; the zygote
/// only allocates (glibc's fork resets malloc's locks) and takes no other lock.
fn zygote() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| start_zygote().unwrap());
}

fn nowhere() -> Target {
    Target {
        dirs: Vec::new(),
        unified: false,
    }
}

#[test]
fn join_how_clones_into_cgroup2_only_for_jobs_without_threads() {
    let v2 = Target::new(CgroupMode::V2, vec!["/sys/fs/cgroup/kchaos/churn-0".into()]);
    let v1 = Target::new(
        CgroupMode::V1,
        vec![
            "/sys/fs/cgroup/memory/kchaos/churn-0".into(),
            "/sys/fs/cgroup/pids/kchaos/churn-0".into(),
        ],
    );
    let hybrid = Target::new(CgroupMode::Hybrid, vec!["/sys/fs/cgroup/memory/x".into()]);
    let cases = [
        (&v2, false, Join::Clone3),
        (&v2, true, Join::Procs),
        (&v1, false, Join::Procs),
        (&hybrid, false, Join::Procs),
    ];
    for (target, threads, want) in cases {
        assert_eq!(
            join_how(target, threads),
            want,
            "{target:?} threads={threads}"
        );
    }
}

#[test]
fn a_populate_job_writes_its_files_in_a_child_and_reports_failures_with_the_path() {
    zygote();
    let tmp = tempfile::tempdir().unwrap();
    let mut spawner = Spawner::new().unwrap();
    let dir = tmp.path().join("kchaos-churn-0");
    let job = |dir: &Path| Job::Populate {
        dir: dir.to_path_buf(),
        files: 2,
        size: 10_000,
    };
    spawner.run(&nowhere(), job(&dir)).unwrap();
    assert_eq!(std::fs::metadata(dir.join("f1")).unwrap().len(), 10_000);
    // The same helper serves the next request; this one fails in the child.
    std::fs::write(tmp.path().join("file"), b"x").unwrap();
    let e = spawner
        .run(&nowhere(), job(&tmp.path().join("file/sub")))
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("exited with 1: mkdir ") && text.contains("file/sub"),
        "{text}"
    );
    // A cgroup that does not exist: the child cannot join it and says so.
    let missing = Target::new(CgroupMode::V1, vec![tmp.path().join("no-such-cgroup")]);
    let e = spawner.run(&missing, job(&dir)).unwrap_err().to_string();
    assert!(
        e.contains("write 0 to ") && e.contains("no-such-cgroup/cgroup.procs"),
        "{e}"
    );
}

#[test]
fn long_running_jobs_stop_when_asked_and_report() {
    zygote();
    let wakeup = Spawner::new()
        .unwrap()
        .start(
            &nowhere(),
            Job::Wakeup {
                interval_us: 1000,
                cpu: None,
                per_cpu: false,
            },
        )
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    let out = wakeup.stop(false).unwrap();
    let report: wakeup::WakeupReport = serde_json::from_slice(&out).unwrap();
    assert!(report.summary.count > 10, "{}", report.summary.count);

    let worker = Spawner::new()
        .unwrap()
        .start(
            &nowhere(),
            Job::CfsWorker {
                burners: 1,
                sleepers: 1,
                run_us: 100,
                sleep_us: 100,
                per_cpu: true,
            },
        )
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    // Per CPU: a burner and a sleeper pinned on each CPU.
    let threads = crate::cpus::pinned_threads(worker.pid()).unwrap();
    for cpu in crate::cpus::allowed() {
        let on = threads.iter().filter(|t| t.cpu == cpu).count();
        assert_eq!(on, 2, "cpu{cpu}: {threads:?}");
    }
    // Killed at once: that is not an error when asked for.
    assert!(worker.stop(true).unwrap().is_empty());
}
