//! Every rule of STATE-MACHINES.md and ETCD-CONTRACT.md, through `plan`.

mod support;

use std::time::Duration;

use statemachine_core::transition::ScenarioPolicy;
use statemachine_core::{
    Affected, CoreConfig, Effect, ErrorCode, Input, PackageState, RequestKind, ResourceKind, plan,
};
use support::*;

const M: ResourceKind = ResourceKind::Model;
const P: ResourceKind = ResourceKind::Package;
const C: ResourceKind = ResourceKind::Container;
const S: ResourceKind = ResourceKind::Scenario;

fn reconciles(p: &statemachine_core::Plan) -> Vec<(String, String)> {
    p.reconciles()
        .map(|r| (r.scenario.clone(), r.package.clone()))
        .collect()
}

// ---- §4 scenarios -------------------------------------------------------

#[test]
fn scenario_lifecycle_follows_the_table() {
    let mut s = infotainment(CoreConfig::default());
    let steps = [
        ("Idle", "Waiting"),
        ("waiting", "SATISFIED"),
        ("SCENARIO_STATE_SATISFIED", "scenario_state_allowed"),
        ("Allowed", "Completed"),
    ];
    for (current, target) in steps {
        let p = step(
            &mut s,
            Input::StateChange(&request(RequestKind::Scenario, "s1", current, target)),
            0,
        );
        assert!(p.outcome.is_ok(), "{current} -> {target}: {:?}", p.outcome);
        assert_eq!(p.changes.len(), 1);
    }
    assert_eq!(state(&s, S, "s1").as_deref(), Some("Completed"));
}

#[test]
fn satisfied_may_be_denied() {
    let mut s = infotainment(CoreConfig::default());
    for (c, t) in [
        ("Idle", "Waiting"),
        ("Waiting", "Satisfied"),
        ("Satisfied", "Denied"),
    ] {
        let p = step(
            &mut s,
            Input::StateChange(&request(RequestKind::Scenario, "s1", c, t)),
            0,
        );
        assert!(p.outcome.is_ok(), "{c} -> {t}: {:?}", p.outcome);
    }
    assert_eq!(state(&s, S, "s1").as_deref(), Some("Denied"));
}

#[test]
fn transitions_not_in_the_table_are_rejected_and_write_nothing() {
    let s = infotainment(CoreConfig::default());
    for (c, t) in [
        ("Idle", "Allowed"),
        ("Idle", "Completed"),
        ("Idle", "Satisfied"),
    ] {
        let p = plan(
            &s,
            Input::StateChange(&request(RequestKind::Scenario, "s1", c, t)),
            0,
        );
        assert_eq!(
            p.outcome.as_ref().unwrap_err().code,
            ErrorCode::InvalidStateTransition,
            "{c} -> {t}"
        );
        assert!(p.writes_nothing());
    }
}

#[test]
fn terminal_states_rearm_only_when_configured() {
    for allow_rearm in [false, true] {
        let config = CoreConfig {
            scenario_policy: ScenarioPolicy {
                allow_rearm,
                ..Default::default()
            },
            ..CoreConfig::default()
        };
        let mut s = infotainment(config);
        for (c, t) in [
            ("Idle", "Waiting"),
            ("Waiting", "Satisfied"),
            ("Satisfied", "Allowed"),
            ("Allowed", "Completed"),
        ] {
            step(
                &mut s,
                Input::StateChange(&request(RequestKind::Scenario, "s1", c, t)),
                0,
            );
        }
        let p = plan(
            &s,
            Input::StateChange(&request(
                RequestKind::Scenario,
                "s1",
                "Completed",
                "Waiting",
            )),
            0,
        );
        assert_eq!(p.outcome.is_ok(), allow_rearm, "{:?}", p.outcome);
    }
}

#[test]
fn the_record_is_the_truth_and_a_stale_current_state_is_reported() {
    let mut s = infotainment(CoreConfig::default());
    step(
        &mut s,
        Input::StateChange(&request(RequestKind::Scenario, "s1", "Idle", "Waiting")),
        0,
    );
    // The caller thinks it is still Idle: validated from the record (Waiting).
    let p = plan(
        &s,
        Input::StateChange(&request(RequestKind::Scenario, "s1", "Idle", "Satisfied")),
        0,
    );
    let message = p.outcome.as_ref().unwrap();
    assert!(message.contains("the record said 'Waiting'"), "{message}");
    assert_eq!(changes(&p), ["scenario/s1: Waiting -> Satisfied"]);

    let strict = CoreConfig {
        scenario_policy: ScenarioPolicy {
            strict_current_state: true,
            ..Default::default()
        },
        ..CoreConfig::default()
    };
    let mut s = infotainment(strict);
    step(
        &mut s,
        Input::StateChange(&request(RequestKind::Scenario, "s1", "Idle", "Waiting")),
        0,
    );
    let p = plan(
        &s,
        Input::StateChange(&request(RequestKind::Scenario, "s1", "Idle", "Satisfied")),
        0,
    );
    assert_eq!(p.outcome.unwrap_err().code, ErrorCode::PreconditionFailed);
    assert!(p.changes.is_empty());
}

#[test]
fn a_retry_is_a_no_op_even_in_strict_mode() {
    let strict = CoreConfig {
        scenario_policy: ScenarioPolicy {
            strict_current_state: true,
            ..Default::default()
        },
        ..CoreConfig::default()
    };
    let mut s = infotainment(strict);
    let req = request(RequestKind::Scenario, "s1", "Idle", "Waiting");
    step(&mut s, Input::StateChange(&req), 0);
    let retry = plan(&s, Input::StateChange(&req), 0);
    assert!(
        retry
            .outcome
            .as_ref()
            .unwrap()
            .contains("already 'Waiting'"),
        "{:?}",
        retry.outcome
    );
    assert!(retry.writes_nothing());
}

#[test]
fn a_container_that_moved_to_another_node_keeps_its_key() {
    let mut s = infotainment(config_grace(Duration::ZERO));
    step(
        &mut s,
        Input::NodeReport(&report("n1", vec![container("m1-main", "running")])),
        0,
    );
    // Offloaded: n2 reports it, then n1's next report no longer has it.
    step(
        &mut s,
        Input::NodeReport(&report("n2", vec![container("m1-main", "running")])),
        SEC,
    );
    let p = step(&mut s, Input::NodeReport(&report("n1", vec![])), 2 * SEC);
    assert!(changes(&p).is_empty(), "{:?}", changes(&p));
    assert_eq!(state(&s, C, "m1-main").as_deref(), Some("Running"));
    assert_eq!(state(&s, M, "m1").as_deref(), Some("Running"));
    assert_eq!(s.next_deadline(2 * SEC), None, "no information failure");
}

#[test]
fn a_request_for_the_recorded_state_is_a_successful_no_op() {
    let mut s = infotainment(CoreConfig::default());
    step(
        &mut s,
        Input::StateChange(&request(RequestKind::Scenario, "s1", "Idle", "Waiting")),
        0,
    );
    let p = plan(
        &s,
        Input::StateChange(&request(RequestKind::Scenario, "s1", "Idle", "Waiting")),
        0,
    );
    assert!(p.outcome.as_ref().unwrap().contains("already 'Waiting'"));
    assert!(p.writes_nothing());
}

#[test]
fn malformed_requests_are_invalid_before_the_record_is_read() {
    let s = infotainment(CoreConfig::default());
    let cases = [
        (
            request(RequestKind::Scenario, "s1", "Waiting", "Waiting"),
            "both 'Waiting'",
        ),
        (
            request(RequestKind::Scenario, "s1", "Idle", "Finished"),
            "allowed: Idle, Waiting",
        ),
        (
            request(RequestKind::Scenario, "s1", "Nope", "Waiting"),
            "invalid current_state",
        ),
        // §6: whitespace is no spelling of a state.
        (
            request(RequestKind::Scenario, "s1", "Idle", "Waiting "),
            "invalid target_state: unknown Scenario state 'Waiting '",
        ),
        (
            request(RequestKind::Scenario, "s1", "Idle", "waiting\n"),
            "invalid target_state",
        ),
        (
            request(RequestKind::Scenario, "s1", " Idle", "Waiting"),
            "invalid current_state",
        ),
        (
            request(RequestKind::Scenario, "s1", " ", "Waiting"),
            "invalid current_state",
        ),
        (
            request(RequestKind::Package, "p1", "", " Running"),
            "invalid target_state",
        ),
        (
            request(RequestKind::Scenario, "a/b", "Idle", "Waiting"),
            "invalid resource_name",
        ),
        (
            request(RequestKind::Scenario, "", "Idle", "Waiting"),
            "empty",
        ),
        (
            request(RequestKind::Volume, "v", "", "Running"),
            "not managed",
        ),
        (
            request(RequestKind::Network, "n", "", "Running"),
            "not managed",
        ),
        (
            request(RequestKind::Node, "n", "", "Running"),
            "not managed",
        ),
        (
            request(RequestKind::Unspecified, "s1", "", "Waiting"),
            "unspecified",
        ),
        (
            request(RequestKind::Unknown(42), "s1", "", "Waiting"),
            "unknown resource_type 42",
        ),
    ];
    for (req, expected) in cases {
        let p = plan(&s, Input::StateChange(&req), 0);
        let rejection = p.outcome.unwrap_err();
        assert_eq!(rejection.code, ErrorCode::InvalidRequest, "{req:?}");
        assert!(
            rejection.message.contains(expected),
            "{req:?}: {}",
            rejection.message
        );
        assert!(p.changes.is_empty());
    }
}

#[test]
fn sources_are_authorized_per_edge_when_enforced() {
    let config = CoreConfig {
        scenario_policy: ScenarioPolicy {
            enforce_sources: true,
            ..Default::default()
        },
        ..CoreConfig::default()
    };
    let s = infotainment(config);
    let mut req = request(RequestKind::Scenario, "s1", "Idle", "Waiting");
    req.source = "policymanager".into();
    assert_eq!(
        plan(&s, Input::StateChange(&req), 0)
            .outcome
            .unwrap_err()
            .code,
        ErrorCode::PermissionDenied
    );
    req.source = "filtergateway".into();
    assert!(plan(&s, Input::StateChange(&req), 0).outcome.is_ok());
}

// ---- §5 direct model / package requests ----------------------------------

#[test]
fn direct_model_requests_follow_documented_edges_and_cascade() {
    let mut s = infotainment(CoreConfig::default());
    let p = step(
        &mut s,
        Input::StateChange(&request(RequestKind::Model, "m1", "", "Running")),
        0,
    );
    assert_eq!(
        changes(&p),
        ["model/m1: - -> Running", "package/p1: - -> Running"]
    );
    let p = plan(
        &s,
        Input::StateChange(&request(RequestKind::Model, "m1", "", "Created")),
        0,
    );
    assert_eq!(
        p.outcome.unwrap_err().code,
        ErrorCode::InvalidStateTransition
    );
    step(
        &mut s,
        Input::StateChange(&request(RequestKind::Model, "m2", "", "Running")),
        0,
    );
    step(
        &mut s,
        Input::StateChange(&request(RequestKind::Model, "m1", "Running", "Dead")),
        0,
    );
    let p = step(
        &mut s,
        Input::StateChange(&request(RequestKind::Model, "m2", "Running", "Dead")),
        0,
    );
    assert_eq!(
        changes(&p),
        ["model/m2: Running -> Dead", "package/p1: Degraded -> Error"]
    );
    assert_eq!(reconciles(&p), [("s1".into(), "p1".into())]);
}

#[test]
fn direct_package_requests_follow_documented_edges() {
    let mut s = infotainment(CoreConfig::default());
    let p = plan(
        &s,
        Input::StateChange(&request(RequestKind::Package, "p1", "", "Error")),
        0,
    );
    assert_eq!(
        p.outcome.unwrap_err().code,
        ErrorCode::InvalidStateTransition,
        "idle -> error is undocumented"
    );
    step(
        &mut s,
        Input::StateChange(&request(RequestKind::Package, "p1", "", "Running")),
        0,
    );
    let p = step(
        &mut s,
        Input::StateChange(&request(RequestKind::Package, "p1", "", "Error")),
        0,
    );
    assert_eq!(reconciles(&p), [("s1".into(), "p1".into())]);
}

#[test]
fn unknown_models_and_packages_are_not_found() {
    let s = infotainment(CoreConfig::default());
    for kind in [RequestKind::Model, RequestKind::Package] {
        let p = plan(
            &s,
            Input::StateChange(&request(kind, "ghost", "", "Running")),
            0,
        );
        assert_eq!(p.outcome.unwrap_err().code, ErrorCode::ResourceNotFound);
    }
}

#[test]
fn requests_start_from_the_default_state_of_known_resources() {
    let mut s = infotainment(CoreConfig::default());
    // Model m9 is known only through a node record (no definition, no state).
    let mut record = statemachine_core::record::NodeRecord::default();
    record.containers.insert(
        "x".to_owned(),
        statemachine_core::record::NodeContainer {
            model: "m9".to_owned(),
            missing: false,
            failure_since_ns: None,
        },
    );
    s.load_node("n1", record, 3);
    // (kind, name, target, the change or the refusal)
    let cases = [
        (
            RequestKind::Model,
            "m1",
            "Running",
            Ok("model/m1: - -> Running"),
        ),
        (
            RequestKind::Model,
            "m9",
            "Running",
            Ok("model/m9: - -> Running"),
        ),
        (
            RequestKind::Model,
            "ghost",
            "Running",
            Err(ErrorCode::ResourceNotFound),
        ),
        (
            RequestKind::Package,
            "p1",
            "Running",
            Ok("package/p1: - -> Running"),
        ),
        (
            RequestKind::Package,
            "ghost",
            "Running",
            Err(ErrorCode::ResourceNotFound),
        ),
        (
            RequestKind::Scenario,
            "never-seen",
            "Waiting",
            Ok("scenario/never-seen: - -> Waiting"),
        ),
    ];
    for (kind, name, target, expected) in cases {
        let p = plan(&s, Input::StateChange(&request(kind, name, "", target)), 0);
        match expected {
            Ok(change) => {
                assert!(p.outcome.is_ok(), "{kind:?} '{name}': {:?}", p.outcome);
                assert_eq!(changes(&p).first().map(String::as_str), Some(change));
            }
            Err(code) => assert_eq!(p.outcome.unwrap_err().code, code, "{kind:?} '{name}'"),
        }
    }
    // Created -> Created is no transition: the model starts from Created.
    let p = plan(
        &s,
        Input::StateChange(&request(RequestKind::Model, "m9", "", "Created")),
        0,
    );
    assert!(p.outcome.unwrap().contains("already 'Created'"));
}

// ---- §1–§3 cascades from node reports ------------------------------------

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

// ---- §2 information failures and their grace ---------------------------

#[test]
fn an_unknown_container_keeps_the_model_until_the_grace_runs_out() {
    let mut s = infotainment(config_grace(Duration::from_secs(10)));
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
                container("m1-main", "removing"),
                container("m2-main", "running"),
            ],
        )),
        SEC,
    );
    assert_eq!(changes(&p), ["container/m1-main: Running -> Unknown"]);
    assert_eq!(state(&s, M, "m1").as_deref(), Some("Running"));
    assert_eq!(s.next_deadline(SEC), Some(11 * SEC));
    let p = step(&mut s, Input::Tick, 5 * SEC);
    assert!(p.writes_nothing());
    let p = step(&mut s, Input::Tick, 11 * SEC);
    assert_eq!(
        changes(&p),
        [
            "model/m1: Running -> Dead",
            "package/p1: Running -> Degraded"
        ]
    );
    assert_eq!(
        p.changes[0].reason,
        statemachine_core::Reason::InformationFailure
    );
}

#[test]
fn a_transient_unknown_that_recovers_within_grace_changes_no_model() {
    let mut s = infotainment(config_grace(Duration::from_secs(10)));
    let ok = report(
        "n1",
        vec![
            container("m1-main", "running"),
            container("m2-main", "running"),
        ],
    );
    step(&mut s, Input::NodeReport(&ok), 0);
    step(
        &mut s,
        Input::NodeReport(&report(
            "n1",
            vec![
                container("m1-main", "weird"),
                container("m2-main", "running"),
            ],
        )),
        SEC,
    );
    let p = step(&mut s, Input::NodeReport(&ok), 2 * SEC);
    assert_eq!(changes(&p), ["container/m1-main: Unknown -> Running"]);
    assert!(step(&mut s, Input::Tick, 20 * SEC).writes_nothing());
    assert_eq!(state(&s, M, "m1").as_deref(), Some("Running"));
    assert_eq!(s.next_deadline(2 * SEC), None);
}

#[test]
fn with_zero_grace_an_information_failure_is_dead_at_once() {
    let mut s = infotainment(config_grace(Duration::ZERO));
    step(
        &mut s,
        Input::NodeReport(&report("n1", vec![container("m1-main", "running")])),
        0,
    );
    let p = step(
        &mut s,
        Input::NodeReport(&report("n1", vec![container_with("m1-main", &[])])),
        SEC,
    );
    assert!(
        changes(&p).contains(&"model/m1: Running -> Dead".to_string()),
        "{:?}",
        changes(&p)
    );
}

#[test]
fn a_real_dead_does_not_wait_for_the_grace() {
    let mut s = snapshot_with(
        config_grace(Duration::from_secs(10)),
        &[("Package/p", "spec:\n  models:\n    - name: m\n")],
    );
    step(
        &mut s,
        Input::NodeReport(&report(
            "n1",
            vec![
                container("model-m-a", "running"),
                container("model-m-b", "running"),
            ],
        )),
        0,
    );
    let p = step(
        &mut s,
        Input::NodeReport(&report(
            "n1",
            vec![
                container("model-m-a", "dead"),
                container("model-m-b", "???"),
            ],
        )),
        SEC,
    );
    assert!(
        changes(&p).contains(&"model/m: Running -> Dead".to_string()),
        "{:?}",
        changes(&p)
    );
}

#[test]
fn a_vanished_container_of_a_referenced_model_is_a_failure() {
    let mut s = infotainment(config_grace(Duration::from_secs(10)));
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
        Input::NodeReport(&report("n1", vec![container("m2-main", "running")])),
        SEC,
    );
    assert_eq!(
        changes(&p),
        ["container/m1-main: Running -> -"],
        "the key is removed, the model waits"
    );
    assert_eq!(state(&s, C, "m1-main"), None);
    let p = step(&mut s, Input::Tick, 11 * SEC);
    assert_eq!(
        changes(&p),
        [
            "model/m1: Running -> Dead",
            "package/p1: Running -> Degraded"
        ]
    );
    // It comes back: the failure ends.
    let p = step(
        &mut s,
        Input::NodeReport(&report(
            "n1",
            vec![
                container("m1-main", "running"),
                container("m2-main", "running"),
            ],
        )),
        12 * SEC,
    );
    assert!(
        changes(&p).contains(&"model/m1: Dead -> Running".to_string()),
        "{:?}",
        changes(&p)
    );
}

#[test]
fn a_vanished_container_of_an_unreferenced_model_is_expected() {
    let mut s = snapshot_with(config_grace(Duration::ZERO), &[]);
    step(
        &mut s,
        Input::NodeReport(&report("n1", vec![container("model-x", "running")])),
        0,
    );
    assert_eq!(state(&s, M, "x").as_deref(), Some("Running"));
    let p = step(&mut s, Input::NodeReport(&report("n1", vec![])), SEC);
    assert_eq!(
        changes(&p),
        ["container/model-x: Running -> -", "model/x: Running -> -"]
    );
}

#[test]
fn a_silent_node_fails_its_models_after_timeout_and_grace() {
    let config = CoreConfig {
        info_failure_grace: Duration::from_secs(2),
        node_timeout: Some(Duration::from_secs(30)),
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
    assert_eq!(s.next_deadline(0), Some(30 * SEC));
    assert!(
        step(&mut s, Input::Tick, 30 * SEC).writes_nothing(),
        "within the grace"
    );
    let p = step(&mut s, Input::Tick, 32 * SEC);
    assert_eq!(
        changes(&p),
        [
            "model/m1: Running -> Dead",
            "model/m2: Running -> Dead",
            "package/p1: Running -> Error"
        ]
    );
    assert_eq!(reconciles(&p), [("s1".into(), "p1".into())]);
}

#[test]
fn without_node_timeout_silence_is_normal() {
    let mut s = infotainment(CoreConfig::default());
    step(
        &mut s,
        Input::NodeReport(&report("n1", vec![container("m1-main", "running")])),
        0,
    );
    assert_eq!(s.next_deadline(0), None);
    assert!(step(&mut s, Input::Tick, 3600 * SEC).writes_nothing());
}

// ---- ETCD-CONTRACT: definitions ------------------------------------------

#[test]
fn new_scenario_and_package_definitions_start_idle() {
    let mut s = snapshot_with(CoreConfig::default(), &[]);
    let mut affected = s
        .update_definition("Scenario/s9", Some("spec:\n  target: p9\n"))
        .unwrap();
    affected.extend(
        s.update_definition("Package/p9", Some("spec:\n  models:\n    - name: m9\n"))
            .unwrap(),
    );
    let p = step(&mut s, Input::Reevaluate(&affected), 0);
    assert_eq!(
        changes(&p),
        ["package/p9: - -> Idle", "scenario/s9: - -> Idle"],
    );
    // Seen again: nothing more.
    assert!(plan(&s, Input::Reevaluate(&affected), 0).writes_nothing());
}

#[test]
fn a_model_withdrawn_from_every_definition_loses_its_keys() {
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
    let mut affected = Affected::default();
    affected.extend(s.update_definition("Model/m1", None).unwrap());
    affected.extend(
        s.update_definition("Package/p1", Some("spec:\n  models:\n    - name: m2\n"))
            .unwrap(),
    );
    let p = step(&mut s, Input::Reevaluate(&affected), SEC);
    assert_eq!(
        changes(&p),
        ["container/m1-main: Running -> -", "model/m1: Running -> -"]
    );
    assert_eq!(p.nodes.len(), 1);
    assert_eq!(state(&s, M, "m1"), None);
}

#[test]
fn broken_definitions_change_nothing() {
    let mut s = infotainment(CoreConfig::default());
    let before = s.topology().packages().count();
    assert!(s.update_definition("Package/p2", Some("spec: [")).is_err());
    assert_eq!(s.topology().packages().count(), before);
}

// ---- commits ---------------------------------------------------------------

#[test]
fn undo_restores_the_snapshot_after_a_failed_commit() {
    let mut s = infotainment(CoreConfig::default());
    step(
        &mut s,
        Input::NodeReport(&report("n1", vec![container("m1-main", "running")])),
        0,
    );
    let r = report(
        "n1",
        vec![container("m1-main", "dead"), container("m2-main", "dead")],
    );
    let p = plan(&s, Input::NodeReport(&r), 1);
    s.apply(&p);
    assert_eq!(state(&s, P, "p1").as_deref(), Some("Error"));
    assert_eq!(s.revision(P, "p1"), statemachine_core::PENDING_REVISION);
    s.undo(&p);
    assert_eq!(state(&s, P, "p1").as_deref(), Some("Running"));
    assert_eq!(state(&s, C, "m2-main"), None);
    assert_eq!(s.revision(P, "p1"), 1);
    // Planning again gives the same plan.
    assert_eq!(plan(&s, Input::NodeReport(&r), 1), p);
}

#[test]
fn changes_carry_the_revisions_they_were_planned_from() {
    let mut s = infotainment(CoreConfig::default());
    s.load_state(S, "s1", "Waiting", 42).unwrap();
    let p = plan(
        &s,
        Input::StateChange(&request(
            RequestKind::Scenario,
            "s1",
            "Waiting",
            "Satisfied",
        )),
        0,
    );
    assert_eq!(p.changes[0].old_revision, 42);
    let p = plan(
        &s,
        Input::StateChange(&request(RequestKind::Scenario, "s2", "Idle", "Waiting")),
        0,
    );
    assert_eq!(p.changes[0].old_revision, 0, "absent key: guard on absence");
}
