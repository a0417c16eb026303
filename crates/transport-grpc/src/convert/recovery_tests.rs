//! The self-healing conversions (recovery, alerts, diffs, synchronization,
//! health), both ways: every enum value with its wire number, and bad
//! input refused with `InvalidArgument` naming the field.

use std::collections::{BTreeMap, HashMap};

use engine::{
    AlertPage, AlertQuery, DiffAnswer, EngineError, HealthCheck, HealthView, IncidentRef,
    RecoveryAnswer, RecoveryView, SyncAnswer, TriggerRequest,
};
use proptest::prelude::*;
use statemachine_core::alert::{Acknowledgement, Alert, AlertSeverity, AlertStatus};
use statemachine_core::healing::diff::{
    ConfigDiff, ExistenceDiff, Impact, ScaleDiff, StatusDiff, VersionDiff,
};
use statemachine_core::healing::ladder::{Outcome, StepRecord};
use statemachine_core::healing::{
    ActionPlan, Incident, IssueType, Phase, Priority, RecoveryAction, StateDiff,
};
use statemachine_core::{ErrorCode, ResourceKind};
use tonic::{Code, Status};

use super::*;
use crate::proto::statemanager as sm;

const UNDEFINED: [i32; 4] = [-1, 99, i32::MAX, i32::MIN];

const ALL_PHASES: [Phase; 6] = [
    Phase::Initializing,
    Phase::Executing,
    Phase::Validating,
    Phase::Completed,
    Phase::Failed,
    Phase::Aborted,
];

const ALL_OUTCOMES: [Outcome; 6] = [
    Outcome::Pending,
    Outcome::Delivered,
    Outcome::Unsupported,
    Outcome::Healthy,
    Outcome::TimedOut,
    Outcome::Ignored,
];

/// An `InvalidArgument` whose message names `field`.
fn assert_invalid(result: Result<impl std::fmt::Debug, Status>, field: &str) {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains(field),
        "the message names {field}: {status:?}"
    );
}

fn test_incident() -> Incident {
    Incident {
        id: "00000000000000000042-package-p1".into(),
        kind: ResourceKind::Package,
        name: "p1".into(),
        issue: IssueType::Manual,
        phase: Phase::Validating,
        rung: 1,
        failures: 1,
        executed: 2,
        joined: 3,
        opened_ns: 42,
        due_ns: Some(99),
        ended_ns: None,
        steps: vec![
            StepRecord {
                rung: 0,
                action: RecoveryAction::Restart,
                at_ns: 43,
                delivered_ns: Some(44),
                outcome: Outcome::TimedOut,
            },
            StepRecord {
                rung: 1,
                action: RecoveryAction::Notify,
                at_ns: 50,
                delivered_ns: Some(50),
                outcome: Outcome::Delivered,
            },
        ],
        ladder: vec![RecoveryAction::Restart, RecoveryAction::Notify],
        reason: "operator".into(),
    }
}

fn test_view() -> RecoveryView {
    RecoveryView {
        incident: test_incident(),
        ladder: vec![RecoveryAction::Restart, RecoveryAction::Notify],
        message: "validating rung 2 of 2 (Notify)".into(),
        progress: 50.0,
    }
}

fn test_alert(acknowledged: bool) -> Alert {
    Alert {
        id: "00000000000000000007-package-p1-Flapping".into(),
        severity: AlertSeverity::Warning,
        kind: ResourceKind::Package,
        name: "p1".into(),
        condition: "Flapping".into(),
        title: "resource is flapping".into(),
        description: "6 transitions within 60 s".into(),
        created_ns: 7,
        updated_ns: 9,
        count: 2,
        status: if acknowledged {
            AlertStatus::Acknowledged
        } else {
            AlertStatus::Active
        },
        acknowledged: acknowledged.then(|| Acknowledgement {
            by: "operator".into(),
            reason: "looking".into(),
            at_ns: 10,
        }),
    }
}

fn test_health() -> HealthView {
    HealthView {
        healthy: false,
        message: "package is Error".into(),
        checked_ns: 77,
        checks: vec![
            HealthCheck {
                name: "state".into(),
                passed: false,
                message: "package is Error".into(),
            },
            HealthCheck {
                name: "alerts".into(),
                passed: true,
                message: "no open alert".into(),
            },
        ],
        metadata: BTreeMap::from([
            ("service_phase".to_owned(), "Failed".to_owned()),
            ("recovery.phase".to_owned(), "Validating".to_owned()),
            ("alerts.open".to_owned(), "0".to_owned()),
            ("tracker.flapping".to_owned(), "false".to_owned()),
        ]),
        desired_state: Some("Running".into()),
        last_transition_ns: Some(70),
    }
}

#[test]
fn recovery_actions_have_the_wire_numbers_both_ways() {
    for (i, action) in RecoveryAction::ALL.into_iter().enumerate() {
        let number = i32::try_from(i).unwrap() + 1;
        assert_eq!(recovery_action(action) as i32, number, "{action:?}");
        assert_eq!(recovery_action_from_number(number), Some(action));
        let name = recovery_action(action).as_str_name();
        let expected: String = action
            .as_str()
            .chars()
            .flat_map(|c| {
                let upper = c.to_ascii_uppercase();
                if c.is_ascii_uppercase() {
                    vec!['_', upper]
                } else {
                    vec![upper]
                }
            })
            .collect();
        assert_eq!(name, format!("RECOVERY_ACTION{expected}"), "{action:?}");
    }
    for number in [0, 8].into_iter().chain(UNDEFINED) {
        assert_eq!(recovery_action_from_number(number), None, "{number}");
    }
}

#[test]
fn phases_issues_and_outcomes_have_the_wire_numbers_both_ways() {
    for (i, phase) in ALL_PHASES.into_iter().enumerate() {
        let number = i32::try_from(i).unwrap() + 1;
        assert_eq!(recovery_phase(phase) as i32, number, "{phase:?}");
        assert_eq!(recovery_phase_from_number(number), Some(phase));
    }
    for number in [0, 7].into_iter().chain(UNDEFINED) {
        assert_eq!(recovery_phase_from_number(number), None, "{number}");
    }
    for (i, issue) in IssueType::ALL.into_iter().enumerate() {
        let number = i32::try_from(i).unwrap() + 1;
        assert_eq!(issue_type(issue) as i32, number, "{issue:?}");
        assert_eq!(issue_type_from_number(number), Some(issue));
    }
    for number in [0, 8].into_iter().chain(UNDEFINED) {
        assert_eq!(issue_type_from_number(number), None, "{number}");
    }
    for (i, outcome) in ALL_OUTCOMES.into_iter().enumerate() {
        let number = i32::try_from(i).unwrap() + 1;
        assert_eq!(step_outcome(outcome) as i32, number, "{outcome:?}");
        assert_eq!(step_outcome_from_number(number), Some(outcome));
    }
    for number in [0, 7].into_iter().chain(UNDEFINED) {
        assert_eq!(step_outcome_from_number(number), None, "{number}");
    }
    let statuses = ALL_OUTCOMES.map(step_status);
    assert_eq!(
        statuses,
        [
            sm::RecoveryStepStatus::Pending,
            sm::RecoveryStepStatus::Running,
            sm::RecoveryStepStatus::Skipped,
            sm::RecoveryStepStatus::Completed,
            sm::RecoveryStepStatus::Failed,
            sm::RecoveryStepStatus::Skipped,
        ]
    );
}

#[test]
fn upstream_enum_numbers_are_pullpiris() {
    let phases = [
        (
            sm::RecoveryPhase::Unspecified,
            0,
            "RECOVERY_PHASE_UNSPECIFIED",
        ),
        (
            sm::RecoveryPhase::Initializing,
            1,
            "RECOVERY_PHASE_INITIALIZING",
        ),
        (sm::RecoveryPhase::Executing, 2, "RECOVERY_PHASE_EXECUTING"),
        (
            sm::RecoveryPhase::Validating,
            3,
            "RECOVERY_PHASE_VALIDATING",
        ),
        (sm::RecoveryPhase::Completed, 4, "RECOVERY_PHASE_COMPLETED"),
        (sm::RecoveryPhase::Failed, 5, "RECOVERY_PHASE_FAILED"),
        (sm::RecoveryPhase::Aborted, 6, "RECOVERY_PHASE_ABORTED"),
    ];
    for (value, number, name) in phases {
        assert_eq!((value as i32, value.as_str_name()), (number, name));
    }
    let types = [
        (sm::RecoveryType::Restart, 1, "RECOVERY_TYPE_RESTART"),
        (sm::RecoveryType::Failover, 2, "RECOVERY_TYPE_FAILOVER"),
        (
            sm::RecoveryType::DegradedMode,
            3,
            "RECOVERY_TYPE_DEGRADED_MODE",
        ),
        (sm::RecoveryType::Rollback, 4, "RECOVERY_TYPE_ROLLBACK"),
        (sm::RecoveryType::Reset, 5, "RECOVERY_TYPE_RESET"),
    ];
    for (value, number, name) in types {
        assert_eq!((value as i32, value.as_str_name()), (number, name));
    }
    let steps = [
        (sm::RecoveryStepStatus::Pending, 1),
        (sm::RecoveryStepStatus::Running, 2),
        (sm::RecoveryStepStatus::Completed, 3),
        (sm::RecoveryStepStatus::Failed, 4),
        (sm::RecoveryStepStatus::Skipped, 5),
    ];
    for (value, number) in steps {
        assert_eq!(value as i32, number, "{value:?}");
    }
    let alerts = [
        (sm::AlertStatus::Active, 1),
        (sm::AlertStatus::Acknowledged, 2),
        (sm::AlertStatus::Resolved, 3),
        (sm::AlertStatus::Expired, 4),
    ];
    for (value, number) in alerts {
        assert_eq!(value as i32, number, "{value:?}");
    }
}

#[test]
fn recovery_types_name_one_rung_or_are_refused() {
    assert_eq!(recovery_type_ladder(0).unwrap(), []);
    for (number, action) in [
        (1, RecoveryAction::Restart),
        (2, RecoveryAction::Relocate),
        (4, RecoveryAction::RollbackVersion),
        (5, RecoveryAction::ResetConfig),
    ] {
        assert_eq!(recovery_type_ladder(number).unwrap(), [action], "{number}");
    }
    assert_invalid(recovery_type_ladder(3), "DEGRADED_MODE");
    for number in UNDEFINED.into_iter().chain([6]) {
        assert_invalid(recovery_type_ladder(number), "recovery_strategy.type");
    }
}

#[test]
fn recovery_applies_to_packages_and_models_only() {
    assert_eq!(recovery_kind(2).unwrap(), ResourceKind::Package);
    assert_eq!(recovery_kind(3).unwrap(), ResourceKind::Model);
    for number in [0, 1, 4, 5, 6].into_iter().chain(UNDEFINED) {
        assert_invalid(recovery_kind(number), "resource_type");
    }
}

fn trigger(actions: Vec<i32>) -> sm::TriggerRecoveryRequest {
    sm::TriggerRecoveryRequest {
        resource_type: sm::ResourceType::Package as i32,
        resource_name: "p1".into(),
        recovery_strategy: Some(sm::RecoveryStrategy {
            actions,
            ..Default::default()
        }),
        reason: "operator".into(),
        force: true,
    }
}

#[test]
fn triggers_convert_both_ways() {
    let request = trigger_request(trigger(vec![1, 6])).unwrap();
    assert_eq!(
        request,
        TriggerRequest {
            kind: ResourceKind::Package,
            name: "p1".into(),
            actions: vec![RecoveryAction::Restart, RecoveryAction::Notify],
            reason: "operator".into(),
            force: true,
        }
    );
    assert_eq!(trigger_request(trigger_message(&request)).unwrap(), request);

    let bare = TriggerRequest {
        actions: Vec::new(),
        force: false,
        ..request
    };
    let message = trigger_message(&bare);
    assert_eq!(message.recovery_strategy, None, "no ladder, no strategy");
    assert_eq!(trigger_request(message).unwrap(), bare);

    let typed = trigger_request(sm::TriggerRecoveryRequest {
        recovery_strategy: Some(sm::RecoveryStrategy {
            r#type: sm::RecoveryType::Failover as i32,
            validation_required: true,
            ..Default::default()
        }),
        ..trigger(Vec::new())
    })
    .unwrap();
    assert_eq!(typed.actions, [RecoveryAction::Relocate]);
}

#[test]
fn bad_triggers_name_the_field() {
    let with = |f: fn(&mut sm::TriggerRecoveryRequest)| {
        let mut request = trigger(vec![1]);
        f(&mut request);
        trigger_request(request)
    };
    assert_invalid(with(|r| r.resource_type = 0), "resource_type");
    assert_invalid(with(|r| r.resource_type = 1), "resource_type");
    assert_invalid(with(|r| r.resource_type = 4), "resource_type");
    assert_invalid(with(|r| r.resource_type = 42), "resource_type 42");
    assert_invalid(with(|r| r.resource_name.clear()), "resource_name");
    assert_invalid(with(|r| r.resource_name = "a/b".into()), "resource_name");
    assert_invalid(
        trigger_request(trigger(vec![1, 42])),
        "recovery_strategy.actions[1]",
    );
    assert_invalid(
        trigger_request(trigger(vec![0])),
        "recovery_strategy.actions[0]",
    );
    assert_invalid(
        trigger_request(trigger(vec![-3])),
        "recovery_strategy.actions[0]",
    );
    let strategy = |f: fn(&mut sm::RecoveryStrategy)| {
        let mut request = trigger(vec![1]);
        if let Some(s) = request.recovery_strategy.as_mut() {
            f(s);
        }
        trigger_request(request)
    };
    assert_invalid(
        strategy(|s| s.timeout_ms = 5000),
        "recovery_strategy.timeout_ms",
    );
    assert_invalid(
        strategy(|s| s.max_retries = 3),
        "recovery_strategy.max_retries",
    );
    assert_invalid(
        strategy(|s| s.backup_instance = true),
        "recovery_strategy.backup_instance",
    );
    assert_invalid(
        strategy(|s| {
            s.parameters.insert("k".into(), "v".into());
        }),
        "recovery_strategy.parameters",
    );
    assert_invalid(strategy(|s| s.r#type = 1), "recovery_strategy.type");
}

#[test]
fn incident_references_convert_both_ways() {
    let by_id = IncidentRef::Id("00000000000000000042-package-p1".into());
    let by_resource = IncidentRef::Resource(ResourceKind::Model, "m1".into());
    for target in [by_id.clone(), by_resource.clone()] {
        assert_eq!(status_target(&status_message(&target)).unwrap(), target);
        let (back, reason) = abort_target(&abort_message(&target, "enough")).unwrap();
        assert_eq!((back, reason.as_str()), (target, "enough"));
    }
    // An id wins over the resource fields.
    assert_eq!(
        incident_ref(42, "", "x").unwrap(),
        IncidentRef::Id("x".into())
    );
    assert_invalid(incident_ref(0, "p1", ""), "resource_type");
    assert_invalid(incident_ref(0, "p1", ""), "recovery_id");
    assert_invalid(incident_ref(1, "s1", ""), "resource_type");
    assert_invalid(incident_ref(2, "", ""), "resource_name");
}

#[test]
fn incidents_convert_both_ways() {
    let view = test_view();
    let status = recovery_status(&view);
    assert_eq!(status.recovery_id, view.incident.id);
    assert_eq!(status.phase, sm::RecoveryPhase::Validating as i32);
    assert_eq!(status.retry_count, 2, "actions taken");
    assert_eq!(status.start_time_ns, 42);
    assert_eq!(status.estimated_completion_ns, 0, "open: no estimate");
    assert_eq!(status.progress_percentage, 50.0);
    assert_eq!(status.resource_type, sm::ResourceType::Package as i32);
    assert_eq!(status.issue, sm::IssueType::Manual as i32);
    assert_eq!(status.ladder, [1, 6]);
    assert_eq!(status.next_due_ns, 99);
    let step = &status.steps[0];
    assert_eq!(step.step_name, "Restart");
    assert_eq!(step.status, sm::RecoveryStepStatus::Failed as i32);
    assert_eq!(step.outcome, sm::RecoveryStepOutcome::TimedOut as i32);
    assert_eq!((step.start_time_ns, step.completion_time_ns), (43, 44));
    assert_eq!(recovery_view(status).unwrap(), view);

    let mut ended = test_view();
    ended.incident.phase = Phase::Aborted;
    ended.incident.ended_ns = Some(120);
    ended.incident.due_ns = None;
    ended.progress = 100.0;
    let status = recovery_status(&ended);
    assert_eq!(status.estimated_completion_ns, 120);
    assert_eq!(recovery_view(status).unwrap(), ended);

    // Every outcome survives the trip.
    let mut all = test_view();
    all.incident.steps = ALL_OUTCOMES
        .into_iter()
        .enumerate()
        .map(|(i, outcome)| StepRecord {
            rung: u32::try_from(i).unwrap(),
            action: RecoveryAction::ALL[i],
            at_ns: 1,
            delivered_ns: None,
            outcome,
        })
        .collect();
    assert_eq!(recovery_view(recovery_status(&all)).unwrap(), all);

    let answer = RecoveryAnswer {
        message: "incident opened".into(),
        view: test_view(),
    };
    let response = recovery_response(answer.clone(), 1000);
    assert!(response.success);
    assert_eq!(response.recovery_id, answer.view.incident.id);
    assert_eq!(response.timestamp_ns, 1000);
    assert_eq!(recovery_answer(response).unwrap(), Ok(answer));
    let refused = sm::RecoveryResponse {
        success: false,
        message: "no incident 'x'".into(),
        ..Default::default()
    };
    assert_eq!(
        recovery_answer(refused).unwrap(),
        Err("no incident 'x'".into())
    );
}

#[test]
fn malformed_incidents_are_errors_not_panics() {
    let good = recovery_status(&test_view());
    let cases: [fn(&mut sm::RecoveryStatus); 8] = [
        |s| s.phase = 0,
        |s| s.phase = 42,
        |s| s.issue = 0,
        |s| s.resource_type = 4,
        |s| s.rung = -1,
        |s| s.retry_count = -1,
        |s| s.ladder.push(99),
        |s| s.steps[0].outcome = 0,
    ];
    for (i, case) in cases.into_iter().enumerate() {
        let mut status = good.clone();
        case(&mut status);
        assert!(recovery_view(status).is_err(), "case {i}");
    }
    assert!(
        recovery_answer(sm::RecoveryResponse {
            success: true,
            ..Default::default()
        })
        .is_err(),
        "success without a status"
    );
}

#[test]
fn alert_enums_have_the_wire_numbers_both_ways() {
    for (severity, number) in [
        (AlertSeverity::Info, 1),
        (AlertSeverity::Warning, 2),
        (AlertSeverity::Error, 3),
        (AlertSeverity::Critical, 4),
    ] {
        assert_eq!(alert_severity(severity) as i32, number);
        assert_eq!(alert_severity_from_number(number), Some(severity));
    }
    for number in [0, 5].into_iter().chain(UNDEFINED) {
        assert_eq!(alert_severity_from_number(number), None, "{number}");
    }
    for (status, number) in [
        (AlertStatus::Active, 1),
        (AlertStatus::Acknowledged, 2),
        (AlertStatus::Resolved, 3),
        (AlertStatus::Expired, 4),
    ] {
        assert_eq!(alert_status(status) as i32, number);
        assert_eq!(alert_status_from_number(number), Some(status));
    }
    for number in [0, 5].into_iter().chain(UNDEFINED) {
        assert_eq!(alert_status_from_number(number), None, "{number}");
    }
}

#[test]
fn alerts_convert_both_ways() {
    for acknowledged in [false, true] {
        let alert = test_alert(acknowledged);
        let message = alert_message(&alert);
        assert_eq!(message.severity, sm::Severity::Warning as i32);
        assert_eq!(message.resource_type, sm::ResourceType::Package as i32);
        assert_eq!(message.metadata[ALERT_CONDITION_KEY], "Flapping");
        assert_eq!(message.metadata[ALERT_COUNT_KEY], "2");
        assert_eq!(message.acknowledged_by.is_empty(), !acknowledged);
        assert_eq!(self::alert(message).unwrap(), alert);
    }
    let response = alert_response(&test_alert(true));
    assert!(response.success);
    assert!(response.message.contains("'operator'"), "{response:?}");
    assert_eq!(
        self::alert(response.alert.unwrap()).unwrap(),
        test_alert(true)
    );

    let page = AlertPage {
        alerts: vec![test_alert(true), test_alert(false)],
        total: 5,
    };
    let response = pending_alerts_response(&page);
    assert_eq!(response.total_count, 5);
    assert_eq!(alert_page(response).unwrap(), page);

    for bad in [
        sm::Alert {
            severity: 0,
            ..alert_message(&test_alert(false))
        },
        sm::Alert {
            status: 9,
            ..alert_message(&test_alert(false))
        },
        sm::Alert {
            resource_type: 5,
            ..alert_message(&test_alert(false))
        },
        sm::Alert {
            count: -1,
            ..alert_message(&test_alert(false))
        },
    ] {
        assert!(self::alert(bad).is_err());
    }
}

#[test]
fn alert_queries_are_checked_and_convert_both_ways() {
    let query = AlertQuery {
        min_severity: Some(AlertSeverity::Error),
        kind: Some(ResourceKind::Model),
        limit: 10,
    };
    assert_eq!(alert_query(&alert_query_message(&query)).unwrap(), query);
    let all = AlertQuery::default();
    assert_eq!(alert_query(&alert_query_message(&all)).unwrap(), all);
    let request = |severity, resource_type, limit| sm::GetPendingAlertsRequest {
        severity,
        resource_type,
        limit,
    };
    assert_invalid(alert_query(&request(9, 0, 0)), "severity 9");
    assert_invalid(alert_query(&request(0, 4, 0)), "not managed");
    assert_invalid(alert_query(&request(0, 42, 0)), "resource_type 42");
    assert_invalid(alert_query(&request(0, 0, -1)), "limit");

    let ack = |id: &str, by: &str| sm::AcknowledgeAlertRequest {
        alert_id: id.into(),
        acknowledged_by: by.into(),
        acknowledgment_message: String::new(),
    };
    assert!(acknowledgement(&ack("a-1", "operator")).is_ok());
    assert_invalid(acknowledgement(&ack("", "operator")), "alert_id");
    assert_invalid(acknowledgement(&ack("a-1", "")), "acknowledged_by");
    assert_invalid(acknowledgement(&ack("a-1", "  ")), "acknowledged_by");
}

fn test_diff() -> StateDiff {
    StateDiff {
        kind: ResourceKind::Package,
        name: "p1".into(),
        existence: Some(ExistenceDiff {
            expected: true,
            actual: false,
        }),
        scale: Some(ScaleDiff {
            desired: 3,
            actual: 1,
        }),
        version: Some(VersionDiff {
            desired: "2".into(),
            actual: "1".into(),
        }),
        config: Some(ConfigDiff {
            keys: vec!["mode".into()],
        }),
        status: Some(StatusDiff {
            desired: "Running".into(),
            actual: "Error".into(),
        }),
    }
}

#[test]
fn state_diffs_convert_both_ways() {
    let diff = test_diff();
    assert_eq!(state_diff(state_diff_message(&diff)).unwrap(), diff);
    let empty = StateDiff {
        existence: None,
        scale: None,
        version: None,
        config: None,
        status: None,
        ..test_diff()
    };
    assert_eq!(state_diff(state_diff_message(&empty)).unwrap(), empty);

    // States are read in any spelling and made canonical.
    let mut message = state_diff_message(&diff);
    message.status_diff = Some(sm::StatusDiff {
        desired: "PACKAGE_STATE_RUNNING".into(),
        actual: "error".into(),
    });
    assert_eq!(state_diff(message).unwrap(), diff);
}

#[test]
fn bad_state_diffs_name_the_field() {
    let with = |f: fn(&mut sm::StateDiff)| {
        let mut message = state_diff_message(&test_diff());
        f(&mut message);
        state_diff(message)
    };
    assert_invalid(with(|m| m.resource_type = 1), "resource_type");
    assert_invalid(with(|m| m.resource_type = 0), "resource_type");
    assert_invalid(with(|m| m.resource_type = 77), "resource_type 77");
    assert_invalid(with(|m| m.resource_name.clear()), "resource_name");
    assert_invalid(
        with(|m| {
            if let Some(s) = m.status_diff.as_mut() {
                s.desired = "Flying".into();
            }
        }),
        "status_diff.desired",
    );
    assert_invalid(
        with(|m| {
            if let Some(s) = m.status_diff.as_mut() {
                s.actual = "Dead".into();
            }
        }),
        "status_diff.actual",
    );
    assert_invalid(
        with(|m| {
            if let Some(c) = m.config_diff.as_mut() {
                c.keys.push(String::new());
            }
        }),
        "config_diff.keys[1]",
    );
}

#[test]
fn plans_and_diff_answers_convert_both_ways() {
    for (priority, number) in [
        (Priority::Low, 1),
        (Priority::Normal, 2),
        (Priority::High, 3),
        (Priority::Critical, 4),
    ] {
        assert_eq!(action_priority(priority) as i32, number);
        assert_eq!(action_priority_from_number(number), Some(priority));
    }
    for number in [0, 5].into_iter().chain(UNDEFINED) {
        assert_eq!(action_priority_from_number(number), None, "{number}");
    }
    let planned = ActionPlan {
        kind: ResourceKind::Package,
        name: "p1".into(),
        actions: vec![RecoveryAction::Recreate, RecoveryAction::Notify],
        priority: Priority::Critical,
        impact: Impact {
            disruptive: true,
            parts: vec!["existence".into()],
        },
    };
    assert_eq!(plan(action_plan(&planned)).unwrap(), planned);
    let answer = DiffAnswer {
        plan: Some(planned.clone()),
        recovery_id: Some("00000000000000000042-package-p1".into()),
        message: "plan Critical with 2 action(s) runs as incident ...".into(),
    };
    assert_eq!(
        diff_answer(state_diff_response(&answer)).unwrap(),
        Ok(answer)
    );
    let nothing = DiffAnswer {
        plan: None,
        recovery_id: None,
        message: "no action needed: desired and actual agree in every part".into(),
    };
    let response = state_diff_response(&nothing);
    assert!(response.success && response.plan.is_none() && response.recovery_id.is_empty());
    assert_eq!(diff_answer(response).unwrap(), Ok(nothing));
    let refused = sm::StateDiffResponse {
        success: false,
        message: "Package 'x' is defined nowhere".into(),
        ..Default::default()
    };
    assert_eq!(
        diff_answer(refused).unwrap(),
        Err("Package 'x' is defined nowhere".into())
    );
    let mut bad = action_plan(&planned);
    bad.actions.push(0);
    assert!(plan(bad).is_err());
    let mut bad = action_plan(&planned);
    bad.priority = 0;
    assert!(plan(bad).is_err());
}

#[test]
fn synchronizations_convert_both_ways() {
    assert_eq!(
        sync_target(&sync_message(ResourceKind::Package, "p1", true)).unwrap(),
        (ResourceKind::Package, "p1".to_owned(), true)
    );
    assert_eq!(
        sync_target(&sync_message(ResourceKind::Scenario, "s1", false)).unwrap(),
        (ResourceKind::Scenario, "s1".to_owned(), false)
    );
    let request = |resource_type, name: &str| sm::ForceSynchronizationRequest {
        resource_type,
        resource_name: name.into(),
        deep_sync: false,
    };
    assert_invalid(sync_target(&request(0, "p1")), "resource_type");
    assert_invalid(sync_target(&request(6, "p1")), "not managed");
    assert_invalid(sync_target(&request(42, "p1")), "resource_type 42");
    assert_invalid(sync_target(&request(2, "")), "resource_name");

    let answer = SyncAnswer {
        changed: vec!["package/p1: Degraded -> Running".into()],
        message: "1 resource(s) rewritten".into(),
        transition_id: "sm-1-1".into(),
        timestamp_ns: 5,
    };
    let response = force_sync_response(Ok(answer.clone()), 9);
    assert_eq!(response.error_code, sm::ErrorCode::Success as i32);
    assert_eq!(response.changes, answer.changed);
    assert_eq!(sync_answer(response), Ok(answer));

    let missing = force_sync_response(Err(EngineError::NotFound("Package 'x'".into())), 9);
    assert_eq!(missing.error_code, sm::ErrorCode::ResourceNotFound as i32);
    assert_eq!(missing.timestamp_ns, 9);
    let (code, message) = sync_answer(missing).unwrap_err();
    assert_eq!(code, ErrorCode::ResourceNotFound);
    assert!(message.contains("Package 'x'"), "{message}");
    let down = force_sync_response(Err(EngineError::Unavailable("etcd".into())), 9);
    assert_eq!(down.error_code, sm::ErrorCode::ResourceUnavailable as i32);
    let odd = sm::ForceSynchronizationResponse {
        error_code: 99,
        ..Default::default()
    };
    assert_eq!(sync_answer(odd).unwrap_err().0, ErrorCode::Unspecified);
}

#[test]
fn health_is_merged_into_the_state_and_read_back() {
    let mut state = sm::ResourceState {
        resource_type: sm::ResourceType::Package as i32,
        resource_name: "p1".into(),
        current_state: "Error".into(),
        metadata: HashMap::from([("scenario".to_owned(), "s1".to_owned())]),
        ..Default::default()
    };
    merge_health(&mut state, test_health());
    let status = state.health_status.as_ref().expect("health");
    assert!(!status.healthy);
    assert_eq!(status.last_health_check_ns, 77);
    assert_eq!(status.checks.len(), 2);
    assert!(status.checks.iter().all(|c| c.timestamp_ns == 77));
    assert_eq!(status.checks[0].check_name, "state");
    assert_eq!(state.metadata["scenario"], "s1", "definition facts stay");
    assert_eq!(state.metadata["service_phase"], "Failed");
    assert_eq!(state.metadata["recovery.phase"], "Validating");
    assert_eq!(state.desired_state, "Running");
    assert_eq!(state.last_transition_time_ns, 70, "filled when unknown");
    assert_eq!(health_view(&state), Some(test_health()));

    // What the state already has is kept.
    let mut known = sm::ResourceState {
        desired_state: "Paused".into(),
        last_transition_time_ns: 5,
        metadata: HashMap::from([("service_phase".to_owned(), "kept".to_owned())]),
        ..Default::default()
    };
    merge_health(&mut known, test_health());
    assert_eq!(known.desired_state, "Paused");
    assert_eq!(known.last_transition_time_ns, 5);
    assert_eq!(known.metadata["service_phase"], "kept");

    assert_eq!(health_view(&sm::ResourceState::default()), None);
    for key in [
        "service_phase",
        "recovery.id",
        "alerts.open",
        "tracker.last_duration_ms.Running_to_Error",
    ] {
        assert!(is_health_key(key), "{key}");
    }
    for key in ["scenario", "models", "service_phases", "recovery"] {
        assert!(!is_health_key(key), "{key}");
    }
}

proptest! {
    /// R4: whatever numbers and strings arrive in the new requests and
    /// answers, conversion answers (an error or a value) and never panics.
    #[test]
    fn healing_conversions_never_panic(
        resource_type in any::<i32>(),
        number in any::<i32>(),
        numbers in proptest::collection::vec(any::<i32>(), 0..8),
        time in any::<i64>(),
        text in ".{0,300}",
        flag in any::<bool>(),
    ) {
        let _ = trigger_request(sm::TriggerRecoveryRequest {
            resource_type,
            resource_name: text.clone(),
            recovery_strategy: Some(sm::RecoveryStrategy {
                r#type: number,
                timeout_ms: time,
                actions: numbers.clone(),
                ..Default::default()
            }),
            reason: text.clone(),
            force: flag,
        });
        let _ = incident_ref(resource_type, &text, if flag { &text } else { "" });
        let _ = alert_query(&sm::GetPendingAlertsRequest {
            severity: number,
            resource_type,
            limit: number,
        });
        let _ = state_diff(sm::StateDiff {
            resource_type,
            resource_name: text.clone(),
            status_diff: Some(sm::StatusDiff {
                desired: text.clone(),
                actual: text.clone(),
            }),
            config_diff: Some(sm::ConfigDiff { keys: vec![text.clone()] }),
            ..Default::default()
        });
        let _ = recovery_view(sm::RecoveryStatus {
            recovery_id: text.clone(),
            phase: number,
            retry_count: number,
            rung: number,
            resource_type,
            issue: number,
            ladder: numbers.clone(),
            steps: vec![sm::RecoveryStep {
                rung: number,
                action: number,
                outcome: number,
                ..Default::default()
            }],
            estimated_completion_ns: time,
            ..Default::default()
        });
        let _ = alert(sm::Alert {
            alert_id: text.clone(),
            severity: number,
            resource_type,
            status: number,
            count: number,
            ..Default::default()
        });
        let _ = plan(sm::ActionPlan {
            resource_type,
            actions: numbers,
            priority: number,
            ..Default::default()
        });
        let _ = sync_answer(sm::ForceSynchronizationResponse {
            error_code: number,
            message: text,
            ..Default::default()
        });
    }
}
