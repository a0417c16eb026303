//! QUALITY-BAR P5: the core rules.
//!
//! `cargo bench -p statemachine-core --bench core`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use statemachine_core::{
    ContainerState, Input, ModelState, container_state, model_state, package_state, plan,
};

#[path = "support/w2.rs"]
mod w2;
use w2::{podman, w2_report, w2_snapshot};

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
    // As the daemon plans them: its decoder derives each container's state
    // from the podman map while decoding, on the gRPC threads.
    let derived = |mut report: statemachine_core::NodeReport| {
        report.containers.iter_mut().for_each(|c| c.derive_state());
        report
    };
    let (flipped, running) = (derived(flipped), derived(running));
    c.bench_function(
        "plan a 200-container report, states derived (flips half)",
        |b| b.iter(|| plan(black_box(&s), Input::NodeReport(black_box(&flipped)), 1)),
    );
    c.bench_function(
        "plan a 200-container report, states derived (nothing changed)",
        |b| b.iter(|| plan(black_box(&s), Input::NodeReport(black_box(&running)), 1)),
    );
}

criterion_group!(benches, rules, planning);
criterion_main!(benches);
