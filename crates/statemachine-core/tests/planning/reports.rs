//! STATE-MACHINES §1–§3: cascades from node reports, bottom-up.

use statemachine_core::{CoreConfig, Effect, ErrorCode, Input, PackageState, plan};

use super::{C, M, P, reconciles};
use crate::support::*;

#[test]
fn a_report_cascades_container_model_package_bottom_up() {
    let mut s = infotainment(CoreConfig::default());
    let p = step(
        &mut s,
        Input::NodeReport(&report(
            "n1",
            vec![
                container("m1-main", "running"),
                container("m2-main", "created"),
            ],
        )),
        0,
    );
    assert_eq!(
        changes(&p),
        [
            "container/m1-main: - -> Running",
            "container/m2-main: - -> Created",
            "model/m1: - -> Running",
            "model/m2: - -> Created",
            "package/p1: - -> Running",
        ]
    );
    assert!(p.reconciles().next().is_none());
    assert_eq!(p.nodes.len(), 1, "the node record is written");
}

#[test]
fn package_enters_degraded_then_error_and_reconciles_exactly_once() {
    let mut s = infotainment(CoreConfig::default());
    let running = report(
        "n1",
        vec![
            container("m1-main", "running"),
            container("m2-main", "running"),
        ],
    );
    step(&mut s, Input::NodeReport(&running), 0);
    let one_dead = report(
        "n1",
        vec![
            container_with("m1-main", &[("Status", "exited"), ("ExitCode", "137")]),
            container("m2-main", "running"),
        ],
    );
    let p = step(&mut s, Input::NodeReport(&one_dead), 1);
    assert_eq!(state(&s, P, "p1").as_deref(), Some("Degraded"));
    assert!(
        p.reconciles().next().is_none(),
        "Degraded does not reconcile by default"
    );
    let both_dead = report(
        "n1",
        vec![
            container_with("m1-main", &[("Status", "exited"), ("ExitCode", "1")]),
            container("m2-main", "dead"),
        ],
    );
    let p = step(&mut s, Input::NodeReport(&both_dead), 2);
    assert_eq!(state(&s, P, "p1").as_deref(), Some("Error"));
    assert_eq!(reconciles(&p), [("s1".into(), "p1".into())]);
    // The same report again: nothing to write, no second reconcile.
    let p = step(&mut s, Input::NodeReport(&both_dead), 3);
    assert!(p.writes_nothing(), "{:?}", changes(&p));
    assert!(p.reconciles().next().is_none());
}

#[test]
fn degraded_reconciles_when_configured() {
    let config = CoreConfig {
        reconcile_on: vec![PackageState::Error, PackageState::Degraded],
        ..CoreConfig::default()
    };
    let mut s = infotainment(config);
    step(
        &mut s,
        Input::NodeReport(&report(
            "n1",
            vec![
                container("m1-main", "running"),
                container("m2-main", "running"),
            ],
        )),
        0,
    );
    let p = step(
        &mut s,
        Input::NodeReport(&report(
            "n1",
            vec![
                container("m1-main", "dead"),
                container("m2-main", "running"),
            ],
        )),
        1,
    );
    assert_eq!(reconciles(&p), [("s1".into(), "p1".into())]);
}

#[test]
fn a_package_without_scenario_warns_instead_of_reconciling() {
    let mut s = snapshot_with(
        CoreConfig::default(),
        &[("Package/lonely", "spec:\n  models:\n    - name: m\n")],
    );
    let p = step(
        &mut s,
        Input::NodeReport(&report("n1", vec![container("model-m", "dead")])),
        0,
    );
    assert_eq!(state(&s, P, "lonely").as_deref(), Some("Error"));
    assert!(
        p.effects.iter().any(
            |e| matches!(e, Effect::NoScenarioForPackage { package, .. } if package == "lonely")
        )
    );
    assert!(p.reconciles().next().is_none());
}

#[test]
fn all_paused_and_all_exited_propagate() {
    let mut s = infotainment(CoreConfig::default());
    step(
        &mut s,
        Input::NodeReport(&report(
            "n1",
            vec![
                container("m1-main", "running"),
                container("m2-main", "running"),
            ],
        )),
        0,
    );
    step(
        &mut s,
        Input::NodeReport(&report(
            "n1",
            vec![
                container("m1-main", "paused"),
                container("m2-main", "paused"),
            ],
        )),
        1,
    );
    assert_eq!(state(&s, P, "p1").as_deref(), Some("Paused"));
    step(
        &mut s,
        Input::NodeReport(&report(
            "n1",
            vec![
                container("m1-main", "exited"),
                container("m2-main", "stopped"),
            ],
        )),
        2,
    );
    assert_eq!(state(&s, M, "m1").as_deref(), Some("Exited"));
    assert_eq!(state(&s, P, "p1").as_deref(), Some("Exited"));
}

#[test]
fn undocumented_derived_edges_are_applied_and_flagged() {
    let mut s = infotainment(CoreConfig::default());
    step(
        &mut s,
        Input::NodeReport(&report(
            "n1",
            vec![
                container("m1-main", "running"),
                container("m2-main", "running"),
            ],
        )),
        0,
    );
    step(
        &mut s,
        Input::NodeReport(&report(
            "n1",
            vec![
                container("m1-main", "exited"),
                container("m2-main", "running"),
            ],
        )),
        1,
    );
    let p = step(
        &mut s,
        Input::NodeReport(&report(
            "n1",
            vec![
                container("m1-main", "paused"),
                container("m2-main", "running"),
            ],
        )),
        2,
    );
    assert_eq!(state(&s, M, "m1").as_deref(), Some("Paused"));
    assert!(
        p.effects
            .iter()
            .any(|e| matches!(e, Effect::UndocumentedEdge { name, .. } if name == "m1"))
    );
}

#[test]
fn a_model_never_observed_counts_as_created() {
    let mut s = infotainment(CoreConfig::default());
    let p = step(
        &mut s,
        Input::NodeReport(&report("n1", vec![container("m1-main", "running")])),
        0,
    );
    assert!(changes(&p).contains(&"package/p1: - -> Running".to_string()));
    assert_eq!(state(&s, M, "m2"), None);
}

#[test]
fn unmapped_containers_are_ignored_and_counted() {
    let mut s = infotainment(CoreConfig::default());
    let p = step(
        &mut s,
        Input::NodeReport(&report("n1", vec![container("stray", "running")])),
        0,
    );
    assert!(p.changes.is_empty());
    assert!(
        matches!(&p.effects[..], [Effect::UnmappedContainer { container, .. }] if container == "stray")
    );
}

#[test]
fn annotations_and_config_map_containers_to_models() {
    let mut s = infotainment(CoreConfig::default());
    let mut c = container("anything", "running");
    c.annotations.insert("pullpiri.model".into(), "m2".into());
    step(&mut s, Input::NodeReport(&report("n1", vec![c])), 0);
    assert_eq!(state(&s, M, "m2").as_deref(), Some("Running"));
}

/// The `InvalidModelName` effects of a plan as `container source:key=value`.
fn invalid_model_names(p: &statemachine_core::Plan) -> Vec<String> {
    p.effects
        .iter()
        .filter_map(|e| match e {
            Effect::InvalidModelName {
                node,
                container,
                source,
                key,
                value,
            } => {
                assert_eq!(node, "n1");
                Some(format!("{container} {source}:{key}={value}"))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn invalid_model_names_are_reported_and_the_mapping_falls_back_as_before() {
    let mut s = infotainment(CoreConfig::default());
    // Annotation `model` is invalid: skipped for `pullpiri.model`.
    let mut by_annotation = container("anything", "running");
    by_annotation
        .annotations
        .insert("model".into(), "bad/name".into());
    by_annotation
        .annotations
        .insert("pullpiri.model".into(), "m2".into());
    // Both annotations and the config invalid: the Model definition decides.
    let mut by_definition = container("m1-main", "running");
    by_definition.annotations.insert("model".into(), "".into());
    by_definition
        .annotations
        .insert("pullpiri.model".into(), "x y".into());
    by_definition.config.insert("model".into(), "..".into());
    // Invalid config and nothing else: unmapped.
    let mut unmapped = container("stray", "running");
    unmapped.config.insert("model".into(), "a/b".into());
    // A valid annotation first: the invalid config is never consulted.
    let mut not_consulted = container("other", "running");
    not_consulted
        .annotations
        .insert("model".into(), "m2".into());
    not_consulted.config.insert("model".into(), "a/b".into());
    let p = step(
        &mut s,
        Input::NodeReport(&report(
            "n1",
            vec![by_annotation, by_definition, unmapped, not_consulted],
        )),
        0,
    );
    assert_eq!(
        invalid_model_names(&p),
        [
            "anything annotation:model=bad/name",
            "m1-main annotation:model=",
            "m1-main annotation:pullpiri.model=x y",
            "m1-main config:model=..",
            "stray config:model=a/b",
        ]
    );
    assert!(
        p.effects.iter().any(
            |e| matches!(e, Effect::UnmappedContainer { container, .. } if container == "stray")
        )
    );
    assert_eq!(state(&s, C, "anything").as_deref(), Some("Running"));
    assert_eq!(state(&s, C, "stray"), None);
    assert_eq!(state(&s, M, "m1").as_deref(), Some("Running"));
    assert_eq!(state(&s, M, "m2").as_deref(), Some("Running"));
    // The core keeps no memory of it: every report reports the name again.
    let again = step(
        &mut s,
        Input::NodeReport(&report("n1", {
            let mut c = container("anything", "running");
            c.annotations.insert("model".into(), "bad/name".into());
            c.annotations.insert("pullpiri.model".into(), "m2".into());
            vec![c]
        })),
        SEC,
    );
    assert_eq!(
        invalid_model_names(&again),
        ["anything annotation:model=bad/name"]
    );
}

#[test]
fn valid_model_names_report_nothing() {
    let mut s = infotainment(CoreConfig::default());
    let mut c = container("anything", "running");
    c.annotations.insert("pullpiri.model".into(), "m2".into());
    let p = step(&mut s, Input::NodeReport(&report("n1", vec![c])), 0);
    assert!(p.effects.is_empty(), "{:?}", p.effects);
}

#[test]
fn bad_reports_are_rejected_naming_the_problem() {
    let s = infotainment(CoreConfig::default());
    let mut unnamed = container("x", "running");
    unnamed.names.clear();
    let cases = [
        (report("bad node", vec![]), "invalid node_name"),
        (report("n1", vec![unnamed]), "has no name"),
        (
            report("n1", vec![container("a/b", "running")]),
            "invalid name",
        ),
        (
            report(
                "n1",
                vec![
                    container("m1-main", "running"),
                    container("m1-main", "dead"),
                ],
            ),
            "appears twice",
        ),
    ];
    for (r, expected) in cases {
        let p = plan(&s, Input::NodeReport(&r), 0);
        let rejection = p.outcome.clone().unwrap_err();
        assert_eq!(rejection.code, ErrorCode::InvalidRequest);
        assert!(
            rejection.message.contains(expected),
            "{}",
            rejection.message
        );
        assert!(p.writes_nothing());
    }
}
