//! STATE-MACHINES §5: direct model and package requests, and which
//! resources are known.

use statemachine_core::{CoreConfig, ErrorCode, Input, RequestKind, plan};

use super::reconciles;
use crate::support::*;

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

/// Upstream's ApiServer registers a scenario with an empty current state and
/// target idle, possibly before its definition has reached us: accepted,
/// nothing written. With a claimed current state the resource must exist.
#[test]
fn a_request_for_the_initial_state_with_no_current_state_is_accepted_with_nothing_to_do() {
    let s = infotainment(CoreConfig::default());
    for (kind, name) in [
        (RequestKind::Scenario, "registered-just-now"),
        (RequestKind::Package, "ghost"),
    ] {
        let p = plan(&s, Input::StateChange(&request(kind, name, "", "idle")), 0);
        let message = p.outcome.clone();
        assert!(p.outcome.is_ok(), "{kind:?} '{name}': {:?}", p.outcome);
        assert!(changes(&p).is_empty(), "{kind:?} '{name}': nothing written");
        assert!(
            message.as_deref().is_ok_and(
                |m| m.contains("nothing to do") || m.contains("when its definition arrives")
            ),
            "{message:?}"
        );
    }
    let p = plan(
        &s,
        Input::StateChange(&request(RequestKind::Package, "ghost", "running", "idle")),
        0,
    );
    assert_eq!(p.outcome.unwrap_err().code, ErrorCode::ResourceNotFound);
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
