//! Fixtures shared by the planning tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use statemachine_core::{
    AnyState, CoreConfig, Input, NodeReport, Plan, ReportedContainer, RequestKind, ResourceKind,
    Snapshot, StateChangeRequest, plan,
};

pub const SEC: i64 = 1_000_000_000;

/// A snapshot with the given definitions, grace 0 unless configured otherwise.
pub fn snapshot_with(config: CoreConfig, defs: &[(&str, &str)]) -> Snapshot {
    let mut s = Snapshot::new(config);
    for (key, yaml) in defs {
        s.update_definition(key, Some(yaml))
            .expect("valid definition");
    }
    s
}

pub fn config_grace(grace: Duration) -> CoreConfig {
    CoreConfig {
        info_failure_grace: grace,
        ..CoreConfig::default()
    }
}

/// Scenario s1 targets package p1 = {m1, m2}; m1 and m2 have a container each
/// named `{model}-main` (so a pod container `m1-main` maps to m1).
pub fn infotainment(config: CoreConfig) -> Snapshot {
    snapshot_with(
        config,
        &[
            ("Scenario/s1", "kind: Scenario\nspec:\n  target: p1\n"),
            (
                "Package/p1",
                "kind: Package\nspec:\n  models:\n    - name: m1\n      node: n1\n    - name: m2\n      node: n1\n",
            ),
            ("Model/m1", "spec:\n  containers:\n    - name: main\n"),
            ("Model/m2", "spec:\n  containers:\n    - name: main\n"),
        ],
    )
}

pub fn container(name: &str, status: &str) -> ReportedContainer {
    container_with(name, &[("Status", status)])
}

pub fn container_with(name: &str, state: &[(&str, &str)]) -> ReportedContainer {
    ReportedContainer {
        id: format!("id-{name}"),
        names: vec![format!("/{name}")],
        state: state
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
        ..Default::default()
    }
}

pub fn report(node: &str, containers: Vec<ReportedContainer>) -> NodeReport {
    NodeReport {
        node: node.to_owned(),
        containers,
    }
}

pub fn request(kind: RequestKind, name: &str, current: &str, target: &str) -> StateChangeRequest {
    StateChangeRequest {
        kind,
        name: name.to_owned(),
        current_state: current.to_owned(),
        target_state: target.to_owned(),
        transition_id: "t-1".to_owned(),
        source: String::new(),
    }
}

/// Plans and applies (as the engine does after a successful commit).
pub fn step(s: &mut Snapshot, input: Input<'_>, now: i64) -> Plan {
    let p = plan(s, input, now);
    s.apply(&p);
    s.committed(&p, 1);
    p
}

pub fn state(s: &Snapshot, kind: ResourceKind, name: &str) -> Option<String> {
    s.state(kind, name)
        .map(|st: AnyState| st.as_str().to_owned())
}

/// The plan's changes as `kind/name: old -> new` lines.
pub fn changes(p: &Plan) -> Vec<String> {
    p.changes
        .iter()
        .map(|c| {
            format!(
                "{}/{}: {} -> {}",
                c.kind.as_key_segment(),
                c.name,
                c.old.map_or("-", |s| s.as_str()),
                c.new.map_or("-", |s| s.as_str())
            )
        })
        .collect()
}
