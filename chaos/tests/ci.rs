//! The CI chaos run: `manul-chaos run --ci` against a fresh local cluster
//! (every fault kind once), which must pass every invariant, write both
//! reports and leave no namespace or mount behind. Needs root and the
//! workspace's programs (`typha`, `felix`, `manul-cni`), a loop device and
//! a cgroup controller that throttles I/O (the slow disk); fails, rather
//! than skips, without root when `CI=true`.

use std::process::Command;

#[test]
fn the_ci_run_holds_every_invariant_and_cleans_up() {
    if !manul_netns::testing::have_root("the chaos CI run") {
        return;
    }
    let name = manul_netns::unique_prefix("ch");
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_manul-chaos"))
        .args(["run", "--ci", "--name", &name, "--out"])
        .arg(out.path())
        .status()
        .unwrap();
    let json = std::fs::read_to_string(out.path().join("report.json"))
        .unwrap_or_else(|e| panic!("no report.json (exit {status}): {e}"));
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let failed: Vec<&serde_json::Value> = report["invariants"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["ok"] != true)
        .collect();
    assert!(failed.is_empty(), "violated: {failed:#?}");
    assert!(status.success(), "exit {status}");
    let not_injected: Vec<&serde_json::Value> = report["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["what"].as_str().unwrap().starts_with("cannot inject"))
        .collect();
    assert!(not_injected.is_empty(), "{not_injected:#?}");
    assert_eq!(report["faults"].as_array().unwrap().len(), 8);
    assert!(report["probes"]["denied_probes"].as_u64().unwrap() > 100);
    assert!(report["history"]["operations"].as_u64().unwrap() > 100);
    let html = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    assert!(html.contains("every invariant held"));
    let left: Vec<String> = std::fs::read_dir(manul_netns::NETNS_RUN_DIR)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{name}-")))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        !mounts.contains(&format!("/{name}-")),
        "a tmpfs left mounted"
    );
}
