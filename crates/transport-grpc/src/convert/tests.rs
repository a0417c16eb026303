//! Every conversion, both ways, with the enum numbers of WIRE-PROTOCOL.md
//! and the numbers it does not define.

use std::collections::BTreeMap;
use std::sync::Arc;

use std::collections::HashMap;

use engine::{ActionError, OffloadAnswer, ReconcileRequest};
use engine::{ChangeAnswer, EngineError, HistoryQuery, ReportAnswer, ResourceView};
use engine::{Delivery, Event, EventFilter, EventKind, Severity};
use proptest::prelude::*;
use statemachine_core::record::HistoryEntry;
use statemachine_core::{
    AnyState, ContainerState, ErrorCode, ModelState, PackageState, RequestKind, ResourceKind,
    ScenarioState,
};
use tonic::{Code, Status};

use super::*;
use crate::proto::actioncontroller as ac;
use crate::proto::monitoringserver as ms;
use crate::proto::statemanager as sm;

const ALL_CODES: [ErrorCode; 12] = [
    ErrorCode::Success,
    ErrorCode::Unspecified,
    ErrorCode::InvalidRequest,
    ErrorCode::ResourceNotFound,
    ErrorCode::InvalidStateTransition,
    ErrorCode::PreconditionFailed,
    ErrorCode::Timeout,
    ErrorCode::ResourceUnavailable,
    ErrorCode::PermissionDenied,
    ErrorCode::InternalError,
    ErrorCode::DependencyFailed,
    ErrorCode::RecoveryFailed,
];

const ALL_EVENT_KINDS: [EventKind; 6] = [
    EventKind::StateChange,
    EventKind::RecoveryStart,
    EventKind::RecoveryComplete,
    EventKind::RecoveryFailed,
    EventKind::Alert,
    EventKind::Warning,
];

const UNDEFINED: [i32; 5] = [-1, 12, 99, i32::MAX, i32::MIN];

fn test_event(kind: EventKind, resource_kind: ResourceKind) -> Event {
    Event {
        id: "42-0".into(),
        kind,
        severity: Severity::Warning,
        resource_kind,
        resource_name: "p1".into(),
        from: Some("Running".into()),
        to: Some("Error".into()),
        at_ns: 1_700_000_000_000_000_000,
        source: "StateManager".into(),
        transition_id: "t-1".into(),
        description: "package 'p1' entered Error".into(),
        metadata: BTreeMap::from([("scenario".to_owned(), "s1".to_owned())]),
    }
}

fn test_view() -> ResourceView {
    ResourceView {
        kind: ResourceKind::Package,
        name: "p1".into(),
        state: "Running".into(),
        last_transition_ns: Some(17),
        generation: 9,
        metadata: BTreeMap::from([("scenario".to_owned(), "s1".to_owned())]),
    }
}

#[test]
fn resource_types_have_the_wire_numbers() {
    assert_eq!(resource_type(ResourceKind::Scenario) as i32, 1);
    assert_eq!(resource_type(ResourceKind::Package) as i32, 2);
    assert_eq!(resource_type(ResourceKind::Model) as i32, 3);
    assert_eq!(resource_type(ResourceKind::Container) as i32, 0);
    for (number, name) in [
        (0, "RESOURCE_TYPE_UNSPECIFIED"),
        (1, "RESOURCE_TYPE_SCENARIO"),
        (2, "RESOURCE_TYPE_PACKAGE"),
        (3, "RESOURCE_TYPE_MODEL"),
        (4, "RESOURCE_TYPE_VOLUME"),
        (5, "RESOURCE_TYPE_NETWORK"),
        (6, "RESOURCE_TYPE_NODE"),
    ] {
        assert_eq!(
            sm::ResourceType::try_from(number).unwrap().as_str_name(),
            name
        );
    }
}

#[test]
fn request_kinds_keep_every_number_both_ways() {
    for number in (0..=6).chain(UNDEFINED) {
        assert_eq!(request_kind_number(request_kind(number)), number);
    }
}

#[test]
fn queries_accept_only_managed_types() {
    assert_eq!(query_kind(1).unwrap(), ResourceKind::Scenario);
    assert_eq!(query_kind(2).unwrap(), ResourceKind::Package);
    assert_eq!(query_kind(3).unwrap(), ResourceKind::Model);
    let unspecified = query_kind(0).unwrap_err();
    assert_eq!(unspecified.code(), Code::InvalidArgument);
    assert!(
        unspecified.message().contains("unspecified"),
        "{unspecified:?}"
    );
    for unmanaged in [4, 5, 6] {
        let status = query_kind(unmanaged).unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("not managed"), "{status:?}");
    }
    for number in UNDEFINED {
        let status = query_kind(number).unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status
                .message()
                .contains(&format!("unknown resource_type {number}")),
            "{status:?}"
        );
    }
}

#[test]
fn error_codes_have_the_wire_numbers_and_names_both_ways() {
    for (number, code) in ALL_CODES.into_iter().enumerate() {
        let number = i32::try_from(number).unwrap();
        assert_eq!(error_code(code) as i32, number, "{code}");
        assert_eq!(code.as_i32(), number);
        assert_eq!(error_code(code).as_str_name(), code.as_proto_name());
        assert_eq!(error_code_from_number(number), Some(code));
    }
    for number in UNDEFINED {
        assert_eq!(error_code_from_number(number), None, "{number}");
    }
}

#[test]
fn event_types_and_severities_have_the_wire_numbers_both_ways() {
    let expected = [1, 3, 4, 5, 6, 7];
    for (kind, number) in ALL_EVENT_KINDS.into_iter().zip(expected) {
        assert_eq!(event_type(kind) as i32, number, "{kind:?}");
        assert_eq!(event_kind_from_number(number), Some(kind));
    }
    // UNSPECIFIED and HEALTH_STATUS have no engine kind.
    for number in [0, 2, 8].into_iter().chain(UNDEFINED) {
        assert_eq!(event_kind_from_number(number), None, "{number}");
    }
    for (value, number) in [
        (Severity::Info, 1),
        (Severity::Warning, 2),
        (Severity::Error, 3),
        (Severity::Critical, 4),
    ] {
        assert_eq!(severity(value) as i32, number);
        assert_eq!(severity_from_number(number), Some(value));
    }
    for number in [0, 5].into_iter().chain(UNDEFINED) {
        assert_eq!(severity_from_number(number), None, "{number}");
    }
}

#[test]
fn state_enums_have_the_wire_numbers() {
    use statemachine_core::{ModelState, PackageState, ScenarioState};
    for state in ScenarioState::ALL {
        let wire =
            sm::ScenarioState::try_from(state_number(AnyState::Scenario(*state)).unwrap()).unwrap();
        assert_eq!(
            wire.as_str_name(),
            format!("SCENARIO_STATE_{}", state.as_str().to_uppercase())
        );
    }
    for state in PackageState::ALL {
        let wire =
            sm::PackageState::try_from(state_number(AnyState::Package(*state)).unwrap()).unwrap();
        assert_eq!(
            wire.as_str_name(),
            format!("PACKAGE_STATE_{}", state.as_str().to_uppercase())
        );
    }
    for state in ModelState::ALL {
        let wire =
            sm::ModelState::try_from(state_number(AnyState::Model(*state)).unwrap()).unwrap();
        assert_eq!(
            wire.as_str_name(),
            format!("MODEL_STATE_{}", state.as_str().to_uppercase())
        );
    }
}

#[test]
fn proto_numbers_match_the_wire_protocol() {
    let expect = [
        (ScenarioState::Idle, 1),
        (ScenarioState::Waiting, 2),
        (ScenarioState::Satisfied, 3),
        (ScenarioState::Allowed, 4),
        (ScenarioState::Denied, 5),
        (ScenarioState::Completed, 6),
    ];
    for (state, number) in expect {
        assert_eq!(state_number(AnyState::Scenario(state)), Some(number));
        assert_eq!(
            state_from_number(ResourceKind::Scenario, number),
            Some(AnyState::Scenario(state))
        );
    }
    let packages = [
        (PackageState::Idle, 1),
        (PackageState::Paused, 2),
        (PackageState::Exited, 3),
        (PackageState::Degraded, 4),
        (PackageState::Error, 5),
        (PackageState::Running, 6),
    ];
    for (state, number) in packages {
        assert_eq!(state_number(AnyState::Package(state)), Some(number));
    }
    let models = [
        (ModelState::Created, 1),
        (ModelState::Paused, 2),
        (ModelState::Exited, 3),
        (ModelState::Dead, 4),
        (ModelState::Running, 5),
    ];
    for (state, number) in models {
        assert_eq!(state_number(AnyState::Model(state)), Some(number));
    }
    assert_eq!(state_from_number(ResourceKind::Model, 0), None);
    assert_eq!(
        state_number(AnyState::Container(ContainerState::Running)),
        None
    );
}

#[test]
fn pod_status_numbers_and_the_reconcile_request() {
    for (status, number) in [
        (ac::PodStatus::None, 0),
        (ac::PodStatus::Init, 1),
        (ac::PodStatus::Ready, 2),
        (ac::PodStatus::Running, 3),
        (ac::PodStatus::Done, 4),
        (ac::PodStatus::Failed, 5),
        (ac::PodStatus::Unknown, 6),
    ] {
        assert_eq!(status as i32, number);
    }
    let message = reconcile_message(&ReconcileRequest {
        scenario: "s1".into(),
        package: "p1".into(),
        package_state: "Error".into(),
    });
    assert_eq!(
        message,
        ac::ReconcileRequest {
            scenario_name: "s1".into(),
            current: 5,
            desired: 3,
        }
    );
}

#[test]
fn reconcile_answers_accept_only_status_zero() {
    assert_eq!(
        reconcile_outcome(ac::ReconcileResponse {
            status: 0,
            desc: "ok".into()
        }),
        Ok(())
    );
    let refused = reconcile_outcome(ac::ReconcileResponse {
        status: 3,
        desc: "scenario 's1' unknown".into(),
    })
    .unwrap_err();
    assert_eq!(
        refused,
        ActionError::Refused("reconcile status 3: scenario 's1' unknown".into())
    );
}

#[test]
fn action_controller_failures_split_into_retryable_and_refused() {
    for code in [
        Code::Unavailable,
        Code::DeadlineExceeded,
        Code::Cancelled,
        Code::Unknown,
        Code::ResourceExhausted,
        Code::Internal,
        Code::Aborted,
    ] {
        let error = action_error(&Status::new(code, "x"));
        assert!(
            matches!(error, ActionError::Unavailable(_)),
            "{code:?}: {error:?}"
        );
    }
    for code in [
        Code::InvalidArgument,
        Code::NotFound,
        Code::FailedPrecondition,
        Code::PermissionDenied,
        Code::Unimplemented,
    ] {
        let error = action_error(&Status::new(code, "nope"));
        assert!(
            matches!(error, ActionError::Refused(ref m) if m.contains("nope")),
            "{code:?}: {error:?}"
        );
    }
}

#[test]
fn error_codes_map_to_statuses_and_back() {
    let one_to_one = [
        (ErrorCode::InvalidRequest, Code::InvalidArgument),
        (ErrorCode::ResourceNotFound, Code::NotFound),
        (ErrorCode::PreconditionFailed, Code::FailedPrecondition),
        (ErrorCode::Timeout, Code::DeadlineExceeded),
        (ErrorCode::ResourceUnavailable, Code::Unavailable),
        (ErrorCode::PermissionDenied, Code::PermissionDenied),
        (ErrorCode::InternalError, Code::Internal),
    ];
    for (code, grpc) in one_to_one {
        let status = status_for(code, "why");
        assert_eq!(status.code(), grpc, "{code}");
        assert_eq!(status.message(), "why");
        assert_eq!(error_code_for_status(grpc), code);
    }
    assert_eq!(
        status_for(ErrorCode::InvalidStateTransition, "").code(),
        Code::FailedPrecondition
    );
    assert_eq!(
        status_for(ErrorCode::DependencyFailed, "").code(),
        Code::Unavailable
    );
    assert_eq!(
        status_for(ErrorCode::RecoveryFailed, "").code(),
        Code::Internal
    );
    assert_eq!(status_for(ErrorCode::Unspecified, "").code(), Code::Unknown);
}

#[test]
fn engine_errors_become_statuses() {
    use std::time::Duration;
    let cases = [
        (EngineError::Stopped, Code::Unavailable),
        (
            EngineError::Timeout(Duration::from_secs(1)),
            Code::DeadlineExceeded,
        ),
        (
            EngineError::Unavailable("etcd down".into()),
            Code::Unavailable,
        ),
        (EngineError::Invalid("bad".into()), Code::InvalidArgument),
        (EngineError::NotFound("p".into()), Code::NotFound),
    ];
    for (error, code) in cases {
        let status = engine_status(&error);
        assert_eq!(status.code(), code, "{error}");
        assert_eq!(status.message(), error.to_string());
    }
}

#[test]
fn state_changes_convert_both_ways() {
    let message = sm::StateChange {
        resource_type: 99,
        resource_name: "parking".into(),
        current_state: "idle".into(),
        target_state: "SCENARIO_STATE_WAITING".into(),
        transition_id: "t-1".into(),
        timestamp_ns: 5,
        source: "FilterGateway".into(),
    };
    let request = state_change_request(message.clone());
    assert_eq!(request.kind, RequestKind::Unknown(99));
    assert_eq!(request.name, "parking");
    assert_eq!(request.current_state, "idle");
    assert_eq!(request.target_state, "SCENARIO_STATE_WAITING");
    assert_eq!(request.transition_id, "t-1");
    assert_eq!(request.source, "FilterGateway");
    assert_eq!(state_change_message(request, 5), message);
}

#[test]
fn change_answers_convert_both_ways() {
    let answer = ChangeAnswer {
        code: ErrorCode::InvalidStateTransition,
        message: "Idle -> Completed is not allowed".into(),
        details: "allowed from Idle: Waiting".into(),
        transition_id: "t-1".into(),
        timestamp_ns: 11,
    };
    let response = state_change_response(answer.clone(), 99);
    assert_eq!(response.error_code, 4);
    assert_eq!(response.timestamp_ns, 11);
    assert_eq!(response.error_details, "allowed from Idle: Waiting");
    assert_eq!(change_answer(response), answer);

    let undecided = ChangeAnswer {
        timestamp_ns: 0,
        ..answer
    };
    assert_eq!(
        state_change_response(undecided, 99).timestamp_ns,
        99,
        "now when undecided"
    );

    let unknown = sm::StateChangeResponse {
        error_code: 77,
        ..Default::default()
    };
    assert_eq!(change_answer(unknown).code, ErrorCode::Unspecified);
}

#[test]
fn container_lists_convert_both_ways() {
    let info = ms::ContainerInfo {
        id: "abc".into(),
        names: vec!["/model-m1".into()],
        image: "registry/m1:1".into(),
        state: HashMap::from([
            ("Status".into(), "exited".into()),
            ("ExitCode".into(), "1".into()),
        ]),
        config: HashMap::from([("model".into(), "m1".into())]),
        annotation: HashMap::from([("pullpiri.model".into(), "m1".into())]),
        stats: HashMap::from([("cpu".into(), "3".into())]),
    };
    let report = node_report(ms::ContainerList {
        node_name: "n1".into(),
        containers: vec![info.clone()],
    });
    assert_eq!(report.node, "n1");
    let container = &report.containers[0];
    assert_eq!(container.id, "abc");
    assert_eq!(container.names, vec!["/model-m1".to_owned()]);
    // The podman map is reduced to the state it derives (kept in memory
    // while the report waits for the engine).
    assert!(container.state.is_empty());
    assert_eq!(container.derived, Some(ContainerState::Dead));
    assert_eq!(container.config, info.config);
    assert_eq!(container.annotations, info.annotation);

    let back = container_info(container.clone());
    assert_eq!(
        back,
        ms::ContainerInfo {
            image: String::new(),
            stats: HashMap::new(),
            state: HashMap::from([("Status".into(), "dead".into())]),
            ..info
        },
        "image and stats are not used by the rules; the state is the derived one"
    );
}

#[test]
fn report_answers_become_responses_or_statuses() {
    let ok = container_list_response(
        "n1",
        ReportAnswer {
            code: ErrorCode::Success,
            message: String::new(),
        },
    )
    .unwrap();
    assert_eq!(ok.resp, "container list of node 'n1' applied");
    let said = container_list_response(
        "n1",
        ReportAnswer {
            code: ErrorCode::Success,
            message: "2 containers, 1 change".into(),
        },
    )
    .unwrap();
    assert_eq!(said.resp, "2 containers, 1 change");

    for (code, grpc) in [
        (ErrorCode::InvalidRequest, Code::InvalidArgument),
        (ErrorCode::ResourceUnavailable, Code::Unavailable),
        (ErrorCode::Timeout, Code::DeadlineExceeded),
    ] {
        let status = container_list_response(
            "n1",
            ReportAnswer {
                code,
                message: "node name 'a/b' is invalid".into(),
            },
        )
        .unwrap_err();
        assert_eq!(status.code(), grpc);
        assert_eq!(status.message(), "node name 'a/b' is invalid");
    }
    let unexplained = container_list_response(
        "n1",
        ReportAnswer {
            code: ErrorCode::InvalidRequest,
            message: String::new(),
        },
    )
    .unwrap_err();
    assert!(
        unexplained.message().contains("node 'n1'"),
        "{unexplained:?}"
    );
}

#[test]
fn limits_and_names_are_checked() {
    assert_eq!(limit(0, "limit").unwrap(), 0);
    assert_eq!(limit(7, "limit").unwrap(), 7);
    let negative = limit(-1, "limit").unwrap_err();
    assert_eq!(negative.code(), Code::InvalidArgument);
    assert!(negative.message().contains("-1"));
    assert!(query_name("media-player").is_ok());
    for bad in ["", "a/b", "..", &"x".repeat(254)] {
        assert_eq!(
            query_name(bad).unwrap_err().code(),
            Code::InvalidArgument,
            "{bad:?}"
        );
    }
}

#[test]
fn history_queries_are_checked() {
    let request = |start, end, limit| sm::ResourceStateHistoryRequest {
        resource_type: 1,
        resource_name: "s1".into(),
        start_time_ns: start,
        end_time_ns: end,
        limit,
    };
    assert_eq!(
        history_query(&request(0, 0, 0)).unwrap(),
        HistoryQuery::default()
    );
    assert_eq!(
        history_query(&request(5, 10, 3)).unwrap(),
        HistoryQuery {
            start_ns: 5,
            end_ns: 10,
            limit: 3
        }
    );
    assert!(history_query(&request(5, 0, 0)).is_ok(), "open end");
    for bad in [
        request(-1, 0, 0),
        request(0, -1, 0),
        request(10, 5, 0),
        request(0, 0, -3),
    ] {
        assert_eq!(
            history_query(&bad).unwrap_err().code(),
            Code::InvalidArgument,
            "{bad:?}"
        );
    }
    let query = HistoryQuery {
        start_ns: 5,
        end_ns: 10,
        limit: 3,
    };
    let back = history_request(ResourceKind::Model, "m1", &query);
    assert_eq!(back.resource_type, 3);
    assert_eq!(history_query(&back).unwrap(), query);
    let huge = HistoryQuery {
        limit: usize::MAX,
        ..HistoryQuery::default()
    };
    assert_eq!(
        history_request(ResourceKind::Model, "m1", &huge).limit,
        i32::MAX
    );
}

#[test]
fn resource_states_convert_both_ways() {
    let state = resource_state(test_view());
    assert_eq!(state.resource_type, 2);
    assert_eq!(state.current_state, "Running");
    assert_eq!(state.desired_state, "");
    assert_eq!(state.last_transition_time_ns, 17);
    assert_eq!(state.state_generation, 9);
    assert_eq!(
        state.metadata.get("scenario").map(String::as_str),
        Some("s1")
    );
    assert_eq!(resource_view(state).unwrap(), test_view());

    let never_changed = ResourceView {
        last_transition_ns: None,
        ..test_view()
    };
    let state = resource_state(never_changed.clone());
    assert_eq!(state.last_transition_time_ns, 0);
    assert_eq!(resource_view(state).unwrap(), never_changed);

    let container = resource_state(ResourceView {
        kind: ResourceKind::Container,
        ..test_view()
    });
    assert_eq!(container.resource_type, 0);
    assert!(
        resource_view(container).is_err(),
        "no managed type on the wire"
    );
}

#[test]
fn label_selectors_match_metadata() {
    let view = test_view();
    assert!(matches_labels(&view, &HashMap::new()));
    assert!(matches_labels(
        &view,
        &HashMap::from([("scenario".into(), "s1".into())])
    ));
    assert!(!matches_labels(
        &view,
        &HashMap::from([("scenario".into(), "s2".into())])
    ));
    assert!(!matches_labels(
        &view,
        &HashMap::from([("node".into(), "n1".into())])
    ));
}

#[test]
fn history_entries_convert_both_ways() {
    let entry = HistoryEntry {
        from: Some("Idle".into()),
        to: Some("Waiting".into()),
        at_ns: 3,
        source: "FilterGateway".into(),
        transition_id: "t-1".into(),
        reason: "requested".into(),
        duration_ms: Some(250),
    };
    let wire = transition_history(entry.clone());
    assert_eq!(
        wire,
        sm::StateTransitionHistory {
            from_state: "Idle".into(),
            to_state: "Waiting".into(),
            timestamp_ns: 3,
            transition_id: "t-1".into(),
            reason: "requested".into(),
            source: "FilterGateway".into(),
            duration_ms: 250,
            success: true,
        }
    );
    assert_eq!(history_entry(wire), entry);

    let first = HistoryEntry {
        from: None,
        to: None,
        duration_ms: None,
        ..entry
    };
    let wire = transition_history(first.clone());
    assert_eq!(
        (
            wire.from_state.as_str(),
            wire.to_state.as_str(),
            wire.duration_ms
        ),
        ("", "", 0)
    );
    assert_eq!(history_entry(wire), first);
}

#[test]
fn subscription_filters_are_checked() {
    let request = |resource_type, filter: &[(&str, &str)]| sm::StateChangeSubscriptionRequest {
        resource_type,
        filter: filter
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        include_health_events: true,
        include_recovery_events: false,
    };
    assert_eq!(
        event_filter(&request(0, &[])).unwrap(),
        EventFilter {
            resource_kind: None,
            resource_name: None,
            include_recovery: false,
            include_health: true,
        },
        "UNSPECIFIED is all types"
    );
    assert_eq!(
        event_filter(&request(2, &[("resource_name", "p1")]))
            .unwrap()
            .resource_kind,
        Some(ResourceKind::Package)
    );
    assert_eq!(
        event_filter(&request(0, &[("resource_kind", "container")]))
            .unwrap()
            .resource_kind,
        Some(ResourceKind::Container)
    );
    assert_eq!(
        event_filter(&request(2, &[("resource_kind", "package")]))
            .unwrap()
            .resource_kind,
        Some(ResourceKind::Package)
    );
    for bad in [
        request(4, &[]),
        request(99, &[]),
        request(-5, &[]),
        request(0, &[("resource_name", "a/b")]),
        request(0, &[("resource_kind", "volume")]),
        request(1, &[("resource_kind", "model")]),
        request(0, &[("colour", "red")]),
    ] {
        let status = event_filter(&bad).unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}");
    }
}

#[test]
fn subscription_requests_roundtrip_filters() {
    for resource_kind in [
        None,
        Some(ResourceKind::Container),
        Some(ResourceKind::Model),
        Some(ResourceKind::Scenario),
    ] {
        for resource_name in [None, Some("m1".to_owned())] {
            for (include_recovery, include_health) in [(false, false), (true, false), (false, true)]
            {
                let filter = EventFilter {
                    resource_kind,
                    resource_name: resource_name.clone(),
                    include_recovery,
                    include_health,
                };
                assert_eq!(
                    event_filter(&subscription_request(&filter)).unwrap(),
                    filter
                );
            }
        }
    }
}

#[test]
fn events_convert_both_ways() {
    for kind in ALL_EVENT_KINDS {
        for resource_kind in ResourceKind::ALL {
            let event = test_event(kind, resource_kind);
            let wire = state_change_event(&event);
            assert_eq!(wire.event_type, event_type(kind) as i32);
            assert_eq!(wire.severity, 2);
            assert_eq!(wire.event_id, "42-0");
            assert_eq!(wire.event_timestamp_ns, event.at_ns);
            assert_eq!(
                wire.metadata.get(RESOURCE_KIND_KEY).map(String::as_str),
                Some(resource_kind.as_key_segment())
            );
            let change = wire.state_change.clone().unwrap();
            assert_eq!(change.resource_type, resource_type(resource_kind) as i32);
            assert_eq!(change.resource_name, "p1");
            assert_eq!(change.current_state, "Running");
            assert_eq!(change.target_state, "Error");
            assert_eq!(change.transition_id, "t-1");
            assert_eq!(change.timestamp_ns, event.at_ns);
            assert_eq!(change.source, "StateManager");
            assert_eq!(delivery(wire).unwrap(), Delivery::Event(Arc::new(event)));
        }
    }
    let created = Event {
        from: None,
        to: None,
        ..test_event(EventKind::StateChange, ResourceKind::Container)
    };
    assert_eq!(
        delivery(state_change_event(&created)).unwrap(),
        Delivery::Event(Arc::new(created))
    );
}

#[test]
fn lagging_is_a_warning_and_reads_back_as_lagged() {
    let wire = lagged_event(17, 5);
    assert_eq!(wire.event_type, sm::EventType::Warning as i32);
    assert_eq!(wire.severity, sm::Severity::Warning as i32);
    assert!(wire.description.contains("17"), "{}", wire.description);
    assert_eq!(delivery(wire).unwrap(), Delivery::Lagged(17));
}

#[test]
fn malformed_events_are_errors_not_panics() {
    let good = state_change_event(&test_event(EventKind::StateChange, ResourceKind::Model));
    let mut unknown_type = good.clone();
    unknown_type.event_type = 42;
    assert!(delivery(unknown_type).is_err());
    let mut unknown_severity = good.clone();
    unknown_severity.severity = 0;
    assert!(delivery(unknown_severity).is_err());
    let mut no_kind = good.clone();
    no_kind.state_change = None;
    no_kind.metadata.clear();
    assert!(delivery(no_kind).is_err());
    let mut bad_count = lagged_event(1, 1);
    bad_count
        .metadata
        .insert(LAGGED_EVENTS_KEY.into(), "many".into());
    assert!(delivery(bad_count).is_err());
}

#[test]
fn offloads_convert_both_ways() {
    let wire = sm::OffloadingRequest {
        scenario_name: "s".into(),
        package_name: "p".into(),
        model_name: "m".into(),
        source_node: "a".into(),
        target_node: "b".into(),
        policy_name: "pol".into(),
        reason: "load".into(),
    };
    let request = offload_request(wire.clone());
    assert_eq!(request.model_name, "m");
    let model = offload_model_request(request);
    assert_eq!(
        model,
        ac::OffloadModelRequest {
            scenario_name: wire.scenario_name,
            package_name: wire.package_name,
            model_name: wire.model_name,
            source_node: wire.source_node,
            target_node: wire.target_node,
            policy_name: wire.policy_name,
            reason: wire.reason,
        }
    );
    let answer = offload_answer(ac::OffloadModelResponse {
        success: true,
        message: "moving".into(),
        transition_id: "ac-1".into(),
    });
    assert_eq!(
        answer,
        OffloadAnswer {
            accepted: true,
            message: "moving".into(),
            transition_id: "ac-1".into()
        }
    );
    let response = offloading_response(Ok(answer)).unwrap();
    assert!(response.accepted);
    assert_eq!(response.transition_id, "ac-1");
    let refused = offloading_response(Err(ActionError::Refused("no target".into()))).unwrap();
    assert!(!refused.accepted);
    assert!(refused.message.contains("no target"));
    let down = offloading_response(Err(ActionError::Unavailable("refused".into()))).unwrap_err();
    assert_eq!(down.code(), Code::Unavailable);
}

proptest! {
    /// R4: whatever numbers and strings arrive, conversion answers (an
    /// error or a value) and never panics.
    #[test]
    fn conversions_never_panic(
        resource_type in any::<i32>(),
        event_type in any::<i32>(),
        severity in any::<i32>(),
        error_code in any::<i32>(),
        limit in any::<i32>(),
        start in any::<i64>(),
        end in any::<i64>(),
        text in ".{0,300}",
        key in ".{0,20}",
    ) {
        let _ = query_kind(resource_type);
        let _ = error_code_from_number(error_code);
        let _ = self::limit(limit, "limit");
        let _ = query_name(&text);
        let _ = history_query(&sm::ResourceStateHistoryRequest {
            resource_type,
            resource_name: text.clone(),
            start_time_ns: start,
            end_time_ns: end,
            limit,
        });
        let _ = event_filter(&sm::StateChangeSubscriptionRequest {
            resource_type,
            filter: HashMap::from([(key.clone(), text.clone())]),
            include_health_events: true,
            include_recovery_events: true,
        });
        let _ = delivery(sm::StateChangeEvent {
            event_type,
            state_change: Some(sm::StateChange {
                resource_type,
                resource_name: text.clone(),
                ..Default::default()
            }),
            event_timestamp_ns: start,
            event_id: text.clone(),
            severity,
            description: text.clone(),
            metadata: HashMap::from([(key, text.clone())]),
        });
        let _ = resource_view(sm::ResourceState {
            resource_type,
            resource_name: text.clone(),
            ..Default::default()
        });
        let _ = change_answer(sm::StateChangeResponse {
            error_code,
            message: text,
            ..Default::default()
        });
    }
}
