//! Shared by the integration tests that run the `kchaos` binary.

use std::path::Path;

/// With `KCHAOS_KEEP_TEST_RESULTS=DIR` (CI sets it), a copy of the results of a run a
/// test made (`results.json`, `results.db`) is kept in `DIR/<test's temp dir>/res/`:
/// `.ci/check-kcidb` then exports these real recorded runs to KCIDB and validates them
/// with KCIDB's own library. Best effort: keeping a copy never fails the test.
pub fn keep_results(res: &Path) {
    let Some(keep) = std::env::var_os("KCHAOS_KEEP_TEST_RESULTS") else {
        return;
    };
    let Some(name) = res.parent().and_then(Path::file_name) else {
        return;
    };
    let dest = Path::new(&keep).join(name).join("res");
    if !res.join("results.json").is_file() || std::fs::create_dir_all(&dest).is_err() {
        return;
    }
    for file in ["results.json", "results.db"] {
        if let Err(e) = std::fs::copy(res.join(file), dest.join(file)) {
            eprintln!(
                "not kept for check-kcidb: {}: {e}",
                res.join(file).display()
            );
        }
    }
}
