//! W2's fixtures (QUALITY-BAR), shared by the `core` bench and the
//! `plan_cost` example: 100 packages x 4 models x 2 containers, and one
//! node's 200-container report.

use std::collections::HashMap;
use std::time::Duration;

use statemachine_core::{CoreConfig, NodeReport, ReportedContainer, Snapshot};

/// W2's shape: 100 packages x 4 models x 2 containers on 4 nodes; one node's
/// report holds 200 containers (25 packages).
pub fn w2_snapshot() -> Snapshot {
    let mut s = Snapshot::new(CoreConfig {
        info_failure_grace: Duration::ZERO,
        ..CoreConfig::default()
    });
    for p in 0..100 {
        s.update_definition(
            &format!("Scenario/s{p}"),
            Some(&format!("spec:\n  target: p{p}\n")),
        )
        .unwrap();
        let models: String = (0..4).map(|m| format!("    - name: p{p}-m{m}\n")).collect();
        s.update_definition(
            &format!("Package/p{p}"),
            Some(&format!("spec:\n  models:\n{models}")),
        )
        .unwrap();
    }
    s
}

pub fn podman(status: &str, exit: &str) -> HashMap<String, String> {
    [
        ("Status", status),
        (
            "Running",
            if status == "running" { "true" } else { "false" },
        ),
        ("Paused", "false"),
        ("Restarting", "false"),
        ("OOMKilled", "false"),
        ("Dead", "false"),
        ("Pid", "4242"),
        ("ExitCode", exit),
        ("Error", ""),
        ("StartedAt", "2025-09-01T10:00:00Z"),
        ("FinishedAt", "0001-01-01T00:00:00Z"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Node 0's report: packages 0..25, every model's two containers, with
/// `status(p, m)` choosing each model's state.
pub fn w2_report(status: impl Fn(usize, usize) -> (&'static str, &'static str)) -> NodeReport {
    let mut containers = Vec::with_capacity(200);
    for p in 0..25 {
        for m in 0..4 {
            let (st, exit) = status(p, m);
            for c in ["a", "b"] {
                containers.push(ReportedContainer {
                    id: format!("id-{p}-{m}-{c}"),
                    names: vec![format!("/model-p{p}-m{m}-{c}")],
                    state: podman(st, exit),
                    ..Default::default()
                });
            }
        }
    }
    NodeReport {
        node: "node-0".into(),
        containers,
    }
}
