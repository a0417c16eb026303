//! QUALITY-BAR P5: the core rules.
//!
//! `cargo bench -p statemachine-core --bench core`

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use statemachine_core::{
    ContainerState, CoreConfig, Input, ModelState, NodeReport, ReportedContainer, Snapshot,
    container_state, model_state, package_state, plan,
};

/// W2's shape: 100 packages x 4 models x 2 containers on 4 nodes; one node's
/// report holds 200 containers (25 packages).
fn w2_snapshot() -> Snapshot {
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

fn podman(status: &str, exit: &str) -> HashMap<String, String> {
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
fn w2_report(status: impl Fn(usize, usize) -> (&'static str, &'static str)) -> NodeReport {
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

fn rules(c: &mut Criterion) {
    let map = podman("exited", "137");
    c.bench_function("container_state from a podman map (11 keys)", |b| {
        b.iter(|| container_state(black_box(&map)))
    });
    let four = [
        ContainerState::Running,
        ContainerState::Running,
        ContainerState::Paused,
        ContainerState::Running,
    ];
    c.bench_function("model_state from 4 containers", |b| {
        b.iter(|| model_state(black_box(&four)))
    });
    let sixteen = [ModelState::Running; 16];
    c.bench_function("package_state from 16 models", |b| {
        b.iter(|| package_state(black_box(&sixteen)))
    });
}

fn planning(c: &mut Criterion) {
    let mut s = w2_snapshot();
    let running = w2_report(|_, _| ("running", "0"));
    let first = plan(&s, Input::NodeReport(&running), 0);
    s.apply(&first);
    s.committed(&first, 1);
    // Every other model flips to dead: 100 container, 50 model, 25 package writes.
    let flipped = w2_report(|_, m| {
        if m % 2 == 0 {
            ("exited", "137")
        } else {
            ("running", "0")
        }
    });
    c.bench_function("plan a 200-container report (flips half the models)", |b| {
        b.iter(|| plan(black_box(&s), Input::NodeReport(black_box(&flipped)), 1))
    });
    c.bench_function("plan a 200-container report (nothing changed)", |b| {
        b.iter(|| plan(black_box(&s), Input::NodeReport(black_box(&running)), 1))
    });
}

criterion_group!(benches, rules, planning);
criterion_main!(benches);
