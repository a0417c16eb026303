//! STATE-MACHINES §4: scenario requests and the transition table.

use std::time::Duration;

use statemachine_core::transition::ScenarioPolicy;
use statemachine_core::{CoreConfig, ErrorCode, Input, RequestKind, plan};

use super::{C, M, S};
use crate::support::*;

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
