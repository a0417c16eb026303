//! STATE-MACHINES §4 with an access policy: the caller's identity decides
//! each edge from the recorded state; denied plans write nothing.

use std::sync::Arc;

use statemachine_core::transition::ScenarioPolicy;
use statemachine_core::{CoreConfig, ErrorCode, Identity, Input, Plan, Policy, RequestKind, plan};

use super::{M, P, S};
use crate::support::*;

fn with_policy(policy: Policy) -> CoreConfig {
    CoreConfig {
        access: Some(Arc::new(policy)),
        ..CoreConfig::default()
    }
}

fn default_policy() -> CoreConfig {
    with_policy(Policy::default_for_sources(&ScenarioPolicy::default()))
}

fn by(
    s: &statemachine_core::Snapshot,
    id: &Identity,
    kind: RequestKind,
    name: &str,
    t: &str,
) -> Plan {
    plan(s, Input::StateChangeBy(&request(kind, name, "", t), id), 0)
}

fn denied(p: &Plan) -> (ErrorCode, String, String) {
    assert!(p.writes_nothing(), "a denied plan writes nothing: {p:?}");
    assert!(p.effects.is_empty(), "{p:?}");
    let r = p.outcome.clone().expect_err("denied");
    (r.code, r.message, r.details)
}

#[test]
fn each_edge_of_the_lifecycle_is_decided_for_the_caller() {
    let fg = Identity::component("filtergateway");
    let pm = Identity::component("policymanager");
    let ac = Identity::component("actioncontroller");
    // (caller, target, allowed): the scenario advances only on allowed steps.
    let steps: &[(&Identity, &str, Result<(), &str>)] = &[
        (
            &pm,
            "Waiting",
            Err("default deny: no rule allows component/policymanager scenario Idle -> Waiting"),
        ),
        (&fg, "Waiting", Ok(())),
        (&fg, "Satisfied", Ok(())),
        (
            &fg,
            "Allowed",
            Err(
                "default deny: no rule allows component/filtergateway scenario Satisfied -> Allowed",
            ),
        ),
        (&pm, "Allowed", Ok(())),
        (
            &fg,
            "Completed",
            Err(
                "default deny: no rule allows component/filtergateway scenario Allowed -> Completed",
            ),
        ),
        (&ac, "Completed", Ok(())),
    ];
    let mut s = infotainment(default_policy());
    for (id, target, expected) in steps {
        let p = step(
            &mut s,
            Input::StateChangeBy(&request(RequestKind::Scenario, "s1", "", target), id),
            0,
        );
        match expected {
            Ok(()) => assert!(p.outcome.is_ok(), "{id} -> {target}: {:?}", p.outcome),
            Err(message) => {
                let (code, got, details) = denied(&p);
                assert_eq!(code, ErrorCode::PermissionDenied);
                assert_eq!(got, *message);
                assert_eq!(details, "default deny");
            }
        }
    }
    assert_eq!(state(&s, S, "s1").as_deref(), Some("Completed"));
}

#[test]
fn the_table_is_checked_before_the_caller() {
    let s = infotainment(default_policy());
    let p = by(
        &s,
        &Identity::component("policymanager"),
        RequestKind::Scenario,
        "s1",
        "Allowed",
    );
    let (code, _, details) = denied(&p);
    assert_eq!(code, ErrorCode::InvalidStateTransition);
    assert_eq!(details, "allowed from 'Idle': Waiting");
}

#[test]
fn without_an_identity_a_policy_denies() {
    let s = infotainment(default_policy());
    let mut req = request(RequestKind::Scenario, "s1", "", "Waiting");
    // The self-declared source counts for nothing with a policy.
    req.source = "FilterGateway".into();
    let p = plan(&s, Input::StateChange(&req), 0);
    let (code, message, details) = denied(&p);
    assert_eq!(code, ErrorCode::PermissionDenied);
    assert!(message.starts_with("unauthenticated"), "{message}");
    assert_eq!(details, "unauthenticated");
}

#[test]
fn a_policy_replaces_enforce_sources() {
    let mut config = default_policy();
    config.scenario_policy.enforce_sources = true;
    let s = infotainment(config);
    // The source names someone else; the identity decides.
    let mut req = request(RequestKind::Scenario, "s1", "", "Waiting");
    req.source = "PolicyManager".into();
    let fg = Identity::component("filtergateway");
    assert!(plan(&s, Input::StateChangeBy(&req, &fg), 0).outcome.is_ok());
}

#[test]
fn without_a_policy_identities_change_nothing() {
    let s = infotainment(CoreConfig::default());
    let nobody = Identity::component("nobody");
    assert!(
        by(&s, &nobody, RequestKind::Scenario, "s1", "Waiting")
            .outcome
            .is_ok()
    );
}

#[test]
fn direct_sets_are_decided_too() {
    let s = infotainment(default_policy());
    let ac = Identity::component("actioncontroller");
    let fg = Identity::component("filtergateway");
    let n1 = Identity::node_agent("n1");
    let cases: &[(&Identity, RequestKind, &str, &str, Option<ErrorCode>)] = &[
        (&ac, RequestKind::Model, "m1", "Running", None),
        (&ac, RequestKind::Package, "p1", "Running", None),
        (
            &fg,
            RequestKind::Model,
            "m1",
            "Running",
            Some(ErrorCode::PermissionDenied),
        ),
        (
            &n1,
            RequestKind::Package,
            "p1",
            "Running",
            Some(ErrorCode::PermissionDenied),
        ),
        // An undocumented edge is refused by the diagram first, whoever asks.
        (
            &ac,
            RequestKind::Package,
            "p1",
            "Error",
            Some(ErrorCode::InvalidStateTransition),
        ),
    ];
    for (id, kind, name, target, expected) in cases {
        let p = by(&s, id, *kind, name, target);
        match expected {
            None => {
                assert!(
                    p.outcome.is_ok(),
                    "{id} {name} -> {target}: {:?}",
                    p.outcome
                );
                assert!(!p.writes_nothing());
            }
            Some(code) => assert_eq!(denied(&p).0, *code, "{id} {name} -> {target}"),
        }
    }
    let denial = denied(&by(&s, &fg, RequestKind::Model, "m1", "Running")).1;
    assert_eq!(
        denial,
        "default deny: no rule allows component/filtergateway model Created -> Running"
    );
    let _ = (M, P);
}

#[test]
fn requests_that_write_nothing_are_not_edges() {
    let s = infotainment(default_policy());
    let apiserver = Identity::component("apiserver");
    // The ApiServer registers a scenario by asking for Idle: nothing to do.
    for name in ["s1", "not-defined-yet"] {
        let p = by(&s, &apiserver, RequestKind::Scenario, name, "idle");
        assert!(p.outcome.is_ok(), "{name}: {:?}", p.outcome);
        assert!(p.writes_nothing());
    }
}

#[test]
fn a_file_policy_names_its_rule() {
    let policy: Policy = toml::from_str(
        "[[rule]]\nname = \"fg\"\nidentities = [\"component/filtergateway\"]\n\
         transitions = [\"scenario: Idle -> *\"]",
    )
    .expect("valid");
    let s = infotainment(with_policy(policy));
    let fg = Identity::component("filtergateway");
    assert!(
        by(&s, &fg, RequestKind::Scenario, "s1", "Waiting")
            .outcome
            .is_ok()
    );
    let ac = Identity::component("actioncontroller");
    let (code, message, _) = denied(&by(&s, &ac, RequestKind::Scenario, "s1", "Waiting"));
    assert_eq!(code, ErrorCode::PermissionDenied);
    assert!(
        message.contains("component/actioncontroller scenario Idle -> Waiting"),
        "{message}"
    );
}
