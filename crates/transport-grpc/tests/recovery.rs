//! The self-healing methods over real gRPC (RECOVERY.md): recovery,
//! alerts, state diffs, forced synchronization and the health in
//! GetResourceState. An engine on a `MemoryStore` served on 127.0.0.1:0,
//! an in-test ActionController on 127.0.0.1:0, inputs sent as the
//! NodeAgent and FilterGateway send them.

mod support;

use std::time::{Duration, Instant};

use engine::{AlertQuery, IncidentRef, TriggerRequest};
use statemachine_core::alert::{AlertSeverity, AlertStatus};
use statemachine_core::healing::diff::StatusDiff;
use statemachine_core::healing::{
    IssueType, Phase, Priority, RecoveryAction, StateDiff, Strategy, StrategyTable,
};
use statemachine_core::{ErrorCode, ResourceKind};
use support::{ActionControllerServer, StateManager, container};
use tonic::Code;
use transport_grpc::ClientError;
use transport_grpc::ServeOptions;
use transport_grpc::proto::monitoringserver as ms;
use transport_grpc::proto::statemanager as sm;

const PACKAGE: i32 = sm::ResourceType::Package as i32;
const MODEL: i32 = sm::ResourceType::Model as i32;

/// Node `n1`'s report: both models of `p1` with their containers in `status`.
fn report(status: &str) -> ms::ContainerList {
    ms::ContainerList {
        node_name: "n1".into(),
        containers: vec![
            container("model-m1", &[("Status", status)]),
            container("model-m2", &[("Status", status)]),
        ],
    }
}

async fn state_of(sm: &StateManager, resource_type: i32, name: &str) -> sm::ResourceState {
    let answer = sm
        .raw
        .clone()
        .get_resource_state(sm::ResourceStateRequest {
            resource_type,
            resource_name: name.into(),
        })
        .await
        .expect("GetResourceState answers")
        .into_inner();
    assert!(answer.success, "{name}: {}", answer.message);
    answer.resource_state.expect("a state")
}

/// Reports `p1`'s containers running, then dead: `p1` enters Error.
async fn drive_p1_to_error(sm: &StateManager) {
    let mut raw = sm.raw.clone();
    raw.send_changed_container_list(report("running"))
        .await
        .expect("accepted");
    assert_eq!(state_of(sm, PACKAGE, "p1").await.current_state, "Running");
    raw.send_changed_container_list(report("dead"))
        .await
        .expect("accepted");
    assert_eq!(state_of(sm, PACKAGE, "p1").await.current_state, "Error");
}

async fn status_of(
    sm: &StateManager,
    request: sm::RecoveryStatusRequest,
) -> sm::RecoveryStatusResponse {
    sm.raw
        .clone()
        .get_recovery_status(request)
        .await
        .expect("GetRecoveryStatus answers")
        .into_inner()
}

fn by_id(id: &str) -> sm::RecoveryStatusRequest {
    sm::RecoveryStatusRequest {
        recovery_id: id.into(),
        ..Default::default()
    }
}

fn by_resource(resource_type: i32, name: &str) -> sm::RecoveryStatusRequest {
    sm::RecoveryStatusRequest {
        resource_type,
        resource_name: name.into(),
        recovery_id: String::new(),
    }
}

/// Polls `probe` every 20 ms until it returns `Some` (5 s at most).
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what}: not within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_invalid<T: std::fmt::Debug>(result: Result<T, tonic::Status>, field: &str) {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains(field),
        "names {field}: {status:?}"
    );
}

#[tokio::test]
async fn unknown_incidents_alerts_and_resources_are_answered_not_found() {
    let ac = ActionControllerServer::start().await;
    let sm = StateManager::start(&ac.url()).await;
    let mut raw = sm.raw.clone();

    let unknown = status_of(&sm, by_id("00000000000000000001-package-nope")).await;
    assert!(!unknown.success);
    assert!(unknown.status.is_none());
    assert!(unknown.message.contains("no incident"), "{unknown:?}");
    let none_yet = status_of(&sm, by_resource(PACKAGE, "p1")).await;
    assert!(!none_yet.success, "p1 has had no incident: {none_yet:?}");
    assert_eq!(
        sm.client
            .recovery_status(&IncidentRef::Id("nope".into()))
            .await
            .expect("answers"),
        None
    );

    let abort = raw
        .abort_recovery(sm::AbortRecoveryRequest {
            recovery_id: "nope".into(),
            ..Default::default()
        })
        .await
        .expect("answers")
        .into_inner();
    assert!(!abort.success);
    assert!(abort.message.contains("nope"), "{abort:?}");
    match sm
        .client
        .abort_recovery(&IncidentRef::Id("nope".into()), "test")
        .await
    {
        Err(ClientError::Refused(message)) => assert!(message.contains("nope"), "{message}"),
        other => panic!("unexpected {other:?}"),
    }

    let ghost = raw
        .trigger_recovery(sm::TriggerRecoveryRequest {
            resource_type: PACKAGE,
            resource_name: "ghost".into(),
            ..Default::default()
        })
        .await
        .expect("answers")
        .into_inner();
    assert!(!ghost.success);
    assert!(ghost.message.contains("ghost"), "{ghost:?}");

    let ack = raw
        .acknowledge_alert(sm::AcknowledgeAlertRequest {
            alert_id: "no-such-alert".into(),
            acknowledged_by: "operator".into(),
            acknowledgment_message: "seen".into(),
        })
        .await
        .expect("answers")
        .into_inner();
    assert!(!ack.success);
    assert!(ack.alert.is_none());
    assert!(ack.message.contains("no-such-alert"), "{ack:?}");
    assert!(matches!(
        sm.client
            .acknowledge_alert("no-such-alert", "operator", "seen")
            .await,
        Err(ClientError::Refused(_))
    ));

    let diff = raw
        .send_state_diff(sm::StateDiff {
            resource_type: PACKAGE,
            resource_name: "ghost".into(),
            status_diff: Some(sm::StatusDiff {
                desired: "Running".into(),
                actual: "Error".into(),
            }),
            ..Default::default()
        })
        .await
        .expect("answers")
        .into_inner();
    assert!(!diff.success);
    assert!(diff.message.contains("ghost"), "{diff:?}");

    let sync = raw
        .force_synchronization(sm::ForceSynchronizationRequest {
            resource_type: PACKAGE,
            resource_name: "ghost".into(),
            deep_sync: true,
        })
        .await
        .expect("answers")
        .into_inner();
    assert_eq!(
        sync.error_code,
        sm::ErrorCode::ResourceNotFound as i32,
        "{sync:?}"
    );
    match sm
        .client
        .force_sync(ResourceKind::Package, "ghost", false)
        .await
    {
        Err(error @ ClientError::Failed { .. }) => {
            assert_eq!(error.error_code(), ErrorCode::ResourceNotFound)
        }
        other => panic!("unexpected {other:?}"),
    }

    let alerts = sm
        .client
        .pending_alerts(&AlertQuery::default())
        .await
        .expect("answers");
    assert!(alerts.alerts.is_empty() && alerts.total == 0, "{alerts:?}");
    sm.shutdown().await;
}

#[tokio::test]
async fn malformed_requests_are_invalid_and_call_nothing() {
    let ac = ActionControllerServer::start().await;
    let sm = StateManager::start(&ac.url()).await;
    let mut raw = sm.raw.clone();
    let trigger = |resource_type: i32, actions: Vec<i32>| sm::TriggerRecoveryRequest {
        resource_type,
        resource_name: "p1".into(),
        recovery_strategy: Some(sm::RecoveryStrategy {
            actions,
            ..Default::default()
        }),
        reason: "test".into(),
        force: true,
    };
    assert_invalid(
        raw.trigger_recovery(trigger(sm::ResourceType::Scenario as i32, vec![1]))
            .await,
        "resource_type",
    );
    assert_invalid(
        raw.trigger_recovery(trigger(42, vec![1])).await,
        "resource_type 42",
    );
    assert_invalid(
        raw.trigger_recovery(trigger(PACKAGE, vec![6, 99])).await,
        "recovery_strategy.actions[1]",
    );
    assert_invalid(
        raw.trigger_recovery(sm::TriggerRecoveryRequest {
            resource_name: String::new(),
            ..trigger(PACKAGE, vec![1])
        })
        .await,
        "resource_name",
    );
    // Nothing was opened.
    assert!(!status_of(&sm, by_resource(PACKAGE, "p1")).await.success);

    assert_invalid(
        raw.get_recovery_status(by_resource(sm::ResourceType::Volume as i32, "v1"))
            .await,
        "resource_type",
    );
    assert_invalid(
        raw.abort_recovery(sm::AbortRecoveryRequest {
            resource_type: PACKAGE,
            resource_name: "bad/name".into(),
            ..Default::default()
        })
        .await,
        "resource_name",
    );
    assert_invalid(
        raw.acknowledge_alert(sm::AcknowledgeAlertRequest {
            alert_id: "a".into(),
            acknowledged_by: String::new(),
            acknowledgment_message: String::new(),
        })
        .await,
        "acknowledged_by",
    );
    assert_invalid(
        raw.get_pending_alerts(sm::GetPendingAlertsRequest {
            severity: 17,
            ..Default::default()
        })
        .await,
        "severity 17",
    );
    assert_invalid(
        raw.get_pending_alerts(sm::GetPendingAlertsRequest {
            resource_type: sm::ResourceType::Network as i32,
            ..Default::default()
        })
        .await,
        "not managed",
    );
    assert_invalid(
        raw.force_synchronization(sm::ForceSynchronizationRequest {
            resource_type: 42,
            resource_name: "p1".into(),
            deep_sync: false,
        })
        .await,
        "resource_type 42",
    );
    assert_invalid(
        raw.send_state_diff(sm::StateDiff {
            resource_type: PACKAGE,
            resource_name: "p1".into(),
            status_diff: Some(sm::StatusDiff {
                desired: "Flying".into(),
                actual: "Error".into(),
            }),
            ..Default::default()
        })
        .await,
        "status_diff.desired",
    );
    assert!(!status_of(&sm, by_resource(PACKAGE, "p1")).await.success);
    assert!(ac.reconciles().is_empty() && ac.triggers().is_empty());
    sm.shutdown().await;
}

#[tokio::test]
async fn a_package_in_error_has_an_incident_that_trigger_replaces_and_abort_ends() {
    let ac = ActionControllerServer::start().await;
    let sm = StateManager::start(&ac.url()).await;
    let mut raw = sm.raw.clone();
    drive_p1_to_error(&sm).await;
    let reconciles = ac.wait_for_reconciles(1, Duration::from_secs(5)).await;
    assert_eq!(reconciles.len(), 1, "the first rung: today's Reconcile");

    // RECOVERY.md §1: entering Error opened a PackageError incident.
    let opened = status_of(&sm, by_resource(PACKAGE, "p1")).await;
    assert!(opened.success, "{opened:?}");
    let automatic = opened.status.expect("a status");
    assert_eq!(automatic.issue, sm::IssueType::PackageError as i32);
    assert_eq!(automatic.resource_type, PACKAGE);
    assert_eq!(automatic.resource_name, "p1");
    assert!(
        !matches!(
            sm::RecoveryPhase::try_from(automatic.phase),
            Ok(sm::RecoveryPhase::Completed
                | sm::RecoveryPhase::Failed
                | sm::RecoveryPhase::Aborted)
        ),
        "still open: {automatic:?}"
    );
    assert_eq!(
        automatic.ladder,
        [1, 1, 2, 6, 7],
        "Restart, Restart, Recreate, Notify, Isolate"
    );
    assert_eq!(
        automatic.steps.first().map(|s| s.step_name.as_str()),
        Some("Restart")
    );

    // Without force a trigger joins the open incident.
    let joined = raw
        .trigger_recovery(sm::TriggerRecoveryRequest {
            resource_type: PACKAGE,
            resource_name: "p1".into(),
            reason: "operator asks".into(),
            ..Default::default()
        })
        .await
        .expect("answers")
        .into_inner();
    assert!(joined.success, "{joined:?}");
    assert_eq!(joined.recovery_id, automatic.recovery_id);
    assert!(joined.message.contains("joined"), "{joined:?}");
    assert_eq!(joined.status.expect("a status").joined, 1);

    // With force it replaces it, here with an explicit one-rung ladder.
    let forced = sm
        .client
        .trigger_recovery(&TriggerRequest {
            kind: ResourceKind::Package,
            name: "p1".into(),
            actions: vec![RecoveryAction::Notify],
            reason: "operator takes over".into(),
            force: true,
        })
        .await
        .expect("a new incident");
    let manual = forced.view.incident.clone();
    assert_ne!(manual.id, automatic.recovery_id);
    assert_eq!(manual.issue, IssueType::Manual);
    assert_eq!(forced.view.ladder, [RecoveryAction::Notify]);
    assert!(forced.message.contains(&manual.id), "{forced:?}");
    let replaced = status_of(&sm, by_id(&automatic.recovery_id)).await;
    assert_eq!(
        replaced.status.expect("kept after it ended").phase,
        sm::RecoveryPhase::Aborted as i32
    );
    let read = sm
        .client
        .recovery_status(&IncidentRef::Resource(ResourceKind::Package, "p1".into()))
        .await
        .expect("answers")
        .expect("the open incident");
    assert_eq!(read.incident.id, manual.id);
    assert!(
        read.incident.reason.contains("operator takes over"),
        "{read:?}"
    );

    // The Notify rung raises an alert for p1.
    let alert = eventually("the Notify rung's alert", || async {
        let page = sm
            .client
            .pending_alerts(&AlertQuery {
                kind: Some(ResourceKind::Package),
                ..AlertQuery::default()
            })
            .await
            .expect("answers");
        page.alerts
            .into_iter()
            .find(|a| a.name == "p1" && a.condition == "RecoveryNotify")
    })
    .await;
    assert_eq!(alert.status, AlertStatus::Active);

    // AbortRecovery by the resource ends the open incident Aborted.
    let aborted = raw
        .abort_recovery(sm::AbortRecoveryRequest {
            resource_type: PACKAGE,
            resource_name: "p1".into(),
            recovery_id: String::new(),
            reason: "enough".into(),
        })
        .await
        .expect("answers")
        .into_inner();
    assert!(aborted.success, "{aborted:?}");
    assert_eq!(aborted.recovery_id, manual.id);
    let status = aborted.status.expect("a status");
    assert_eq!(status.phase, sm::RecoveryPhase::Aborted as i32);
    assert_eq!(status.progress_percentage, 100.0);
    assert_ne!(status.estimated_completion_ns, 0, "the end is known");
    let again = sm
        .client
        .abort_recovery(&IncidentRef::Id(manual.id.clone()), "twice")
        .await
        .expect("an ended incident is answered");
    assert_eq!(again.view.incident.phase, Phase::Aborted);
    assert!(again.message.contains("already ended"), "{again:?}");
    sm.shutdown().await;
}

/// PackageError walks Restart, then Notify, each validated for 300 ms.
fn quick_ladder() -> engine::EngineConfig {
    let mut config = support::config();
    let mut strategy = Strategy::default_for(IssueType::PackageError);
    strategy.actions = vec![RecoveryAction::Restart, RecoveryAction::Notify];
    strategy.validation_timeout = Duration::from_millis(300);
    strategy.backoff.base = Duration::from_millis(50);
    strategy.backoff.cap = Duration::from_millis(100);
    config.healing.strategies = StrategyTable::with([(IssueType::PackageError, strategy)]);
    config
}

#[tokio::test]
async fn an_alert_exists_after_a_package_fails_and_can_be_acknowledged() {
    let ac = ActionControllerServer::start().await;
    let sm = StateManager::start_with(&ac.url(), quick_ladder(), ServeOptions::default()).await;
    let mut raw = sm.raw.clone();
    drive_p1_to_error(&sm).await;

    let alert = eventually("an alert for p1", || async {
        let page = raw
            .clone()
            .get_pending_alerts(sm::GetPendingAlertsRequest::default())
            .await
            .expect("answers")
            .into_inner();
        assert!(page.success);
        page.alerts.into_iter().find(|a| a.resource_name == "p1")
    })
    .await;
    assert_eq!(alert.resource_type, PACKAGE);
    assert_eq!(alert.status, sm::AlertStatus::Active as i32);
    assert!(!alert.alert_id.is_empty() && !alert.title.is_empty());
    assert!(alert.created_time_ns > 0 && alert.updated_time_ns >= alert.created_time_ns);
    assert_eq!(alert.metadata.get("condition"), Some(&alert.condition));

    let acknowledged = raw
        .acknowledge_alert(sm::AcknowledgeAlertRequest {
            alert_id: alert.alert_id.clone(),
            acknowledged_by: "operator".into(),
            acknowledgment_message: "looking into it".into(),
        })
        .await
        .expect("answers")
        .into_inner();
    assert!(acknowledged.success, "{acknowledged:?}");
    let record = acknowledged.alert.expect("the alert");
    assert_eq!(record.status, sm::AlertStatus::Acknowledged as i32);
    assert_eq!(record.acknowledged_by, "operator");
    assert_eq!(record.acknowledgment_message, "looking into it");
    assert!(record.acknowledged_time_ns > 0);

    // Acknowledged alerts are still pending; the filters apply.
    let page = sm
        .client
        .pending_alerts(&AlertQuery {
            kind: Some(ResourceKind::Package),
            ..AlertQuery::default()
        })
        .await
        .expect("answers");
    let listed = page
        .alerts
        .iter()
        .find(|a| a.id == alert.alert_id)
        .expect("still pending");
    assert_eq!(listed.status, AlertStatus::Acknowledged);
    assert_eq!(
        listed.acknowledged.as_ref().map(|a| a.by.as_str()),
        Some("operator")
    );
    let models = sm
        .client
        .pending_alerts(&AlertQuery {
            kind: Some(ResourceKind::Model),
            ..AlertQuery::default()
        })
        .await
        .expect("answers");
    assert!(
        models.alerts.iter().all(|a| a.kind == ResourceKind::Model),
        "{models:?}"
    );
    let limited = sm
        .client
        .pending_alerts(&AlertQuery {
            limit: 1,
            ..AlertQuery::default()
        })
        .await
        .expect("answers");
    assert_eq!(limited.alerts.len(), 1);
    assert!(limited.total >= 1);
    let critical = sm
        .client
        .pending_alerts(&AlertQuery {
            min_severity: Some(AlertSeverity::Critical),
            ..AlertQuery::default()
        })
        .await
        .expect("answers");
    assert!(
        critical
            .alerts
            .iter()
            .all(|a| a.severity == AlertSeverity::Critical),
        "{critical:?}"
    );

    // An open alert may be acknowledged again: the latest acknowledgement counts.
    let again = sm
        .client
        .acknowledge_alert(&alert.alert_id, "second-operator", "")
        .await
        .expect("acknowledged again");
    assert_eq!(again.status, AlertStatus::Acknowledged);
    assert_eq!(
        again.acknowledged.as_ref().map(|a| a.by.as_str()),
        Some("second-operator")
    );

    // The ladder was walked: Restart timed out, Notify raised the alert,
    // and with the ladder exhausted the incident failed.
    let failed = eventually("the incident ends Failed", || async {
        let status = status_of(&sm, by_resource(PACKAGE, "p1")).await.status?;
        (status.phase == sm::RecoveryPhase::Failed as i32).then_some(status)
    })
    .await;
    let steps: Vec<_> = failed
        .steps
        .iter()
        .map(|s| (s.step_name.as_str(), s.outcome))
        .collect();
    assert_eq!(
        steps,
        [
            ("Restart", sm::RecoveryStepOutcome::TimedOut as i32),
            ("Notify", sm::RecoveryStepOutcome::TimedOut as i32),
        ],
        "{failed:?}"
    );
    assert_eq!(failed.progress_percentage, 100.0);
    let page = sm
        .client
        .pending_alerts(&AlertQuery::default())
        .await
        .expect("answers");
    let conditions: Vec<_> = page
        .alerts
        .iter()
        .filter(|a| a.name == "p1")
        .map(|a| (a.condition.as_str(), a.severity))
        .collect();
    assert!(
        conditions.contains(&("RecoveryFailed", AlertSeverity::Critical)),
        "{conditions:?}"
    );

    sm.shutdown().await;
}

#[tokio::test]
async fn get_resource_state_carries_health_and_recovery_figures() {
    let ac = ActionControllerServer::start().await;
    let sm = StateManager::start(&ac.url()).await;
    let mut raw = sm.raw.clone();
    raw.send_changed_container_list(report("running"))
        .await
        .expect("accepted");
    let running = state_of(&sm, PACKAGE, "p1").await;
    let health = running.health_status.as_ref().expect("health_status");
    assert!(health.healthy, "{health:?}");
    assert!(health.last_health_check_ns > 0);
    let checks: Vec<_> = health
        .checks
        .iter()
        .map(|c| c.check_name.as_str())
        .collect();
    assert_eq!(checks, ["state", "recovery", "flapping", "alerts"]);
    assert_eq!(
        running.metadata.get("service_phase").map(String::as_str),
        Some("Running")
    );
    assert_eq!(
        running.metadata.get("alerts.open").map(String::as_str),
        Some("0")
    );
    assert_eq!(
        running.metadata.get("scenario").map(String::as_str),
        Some("s1"),
        "definition facts stay"
    );
    assert!(running.last_transition_time_ns > 0);

    raw.send_changed_container_list(report("dead"))
        .await
        .expect("accepted");
    let failed = state_of(&sm, PACKAGE, "p1").await;
    assert_eq!(failed.current_state, "Error");
    let health = failed.health_status.as_ref().expect("health_status");
    assert!(!health.healthy, "{health:?}");
    assert!(!health.status_message.is_empty());
    assert!(
        health
            .checks
            .iter()
            .any(|c| c.check_name == "recovery" && !c.passed),
        "{health:?}"
    );
    let meta = |key: &str| failed.metadata.get(key).cloned().unwrap_or_default();
    assert_eq!(meta("service_phase"), "Failed");
    assert_eq!(meta("recovery.issue"), "PackageError");
    assert!(!meta("recovery.id").is_empty());
    assert!(!meta("recovery.phase").is_empty());
    assert_eq!(meta("recovery.rung"), "0");
    assert!(
        !meta("tracker.transitions_in_window").is_empty(),
        "{:?}",
        failed.metadata
    );
    assert_eq!(
        failed.desired_state, "Running",
        "the target of the open incident"
    );

    // The typed client reads the health back.
    let (view, health) = sm
        .client
        .get_state_with_health(ResourceKind::Package, "p1")
        .await
        .expect("answers")
        .expect("known");
    assert_eq!(view.state, "Error");
    let health = health.expect("health");
    assert!(!health.healthy);
    assert_eq!(health.desired_state.as_deref(), Some("Running"));
    assert!(
        health
            .metadata
            .keys()
            .all(|k| transport_grpc::convert::is_health_key(k))
    );

    // A model has health too.
    let model = state_of(&sm, MODEL, "m1").await;
    assert!(model.health_status.is_some(), "{model:?}");
    sm.shutdown().await;
}

#[tokio::test]
async fn force_synchronization_answers_what_it_changed() {
    let ac = ActionControllerServer::start().await;
    let sm = StateManager::start(&ac.url()).await;
    let mut raw = sm.raw.clone();
    raw.send_changed_container_list(report("running"))
        .await
        .expect("accepted");
    // A requested model state that its containers contradict.
    let paused = raw
        .send_state_change(sm::StateChange {
            resource_type: MODEL,
            resource_name: "m1".into(),
            current_state: "Running".into(),
            target_state: "Paused".into(),
            transition_id: "t-pause".into(),
            timestamp_ns: 1,
            source: "test".into(),
        })
        .await
        .expect("answers")
        .into_inner();
    assert_eq!(
        paused.error_code,
        sm::ErrorCode::Success as i32,
        "{paused:?}"
    );
    assert_eq!(state_of(&sm, MODEL, "m1").await.current_state, "Paused");

    let synced = raw
        .force_synchronization(sm::ForceSynchronizationRequest {
            resource_type: PACKAGE,
            resource_name: "p1".into(),
            deep_sync: true,
        })
        .await
        .expect("answers")
        .into_inner();
    assert_eq!(
        synced.error_code,
        sm::ErrorCode::Success as i32,
        "{synced:?}"
    );
    assert!(!synced.transition_id.is_empty());
    assert!(synced.timestamp_ns > 0);
    assert!(
        synced
            .changes
            .iter()
            .any(|c| c == "model/m1: Paused -> Running"),
        "{synced:?}"
    );
    assert_eq!(state_of(&sm, MODEL, "m1").await.current_state, "Running");
    assert_eq!(state_of(&sm, PACKAGE, "p1").await.current_state, "Running");

    let again = sm
        .client
        .force_sync(ResourceKind::Package, "p1", true)
        .await
        .expect("in sync");
    assert!(again.changed.is_empty(), "{again:?}");
    assert!(again.message.contains("in sync"), "{again:?}");
    sm.shutdown().await;
}

#[tokio::test]
async fn a_state_diff_is_planned_and_runs_as_a_diff_incident() {
    let ac = ActionControllerServer::start().await;
    let sm = StateManager::start(&ac.url()).await;
    let mut raw = sm.raw.clone();
    raw.send_changed_container_list(report("running"))
        .await
        .expect("accepted");

    // Parts that agree need no action.
    let agree = sm
        .client
        .send_state_diff(&StateDiff {
            kind: ResourceKind::Package,
            name: "p1".into(),
            existence: None,
            scale: None,
            version: None,
            config: None,
            status: Some(StatusDiff {
                desired: "Running".into(),
                actual: "Running".into(),
            }),
        })
        .await
        .expect("answers");
    assert!(
        agree.plan.is_none() && agree.recovery_id.is_none(),
        "{agree:?}"
    );
    assert!(agree.message.contains("no action"), "{agree:?}");

    let answer = raw
        .send_state_diff(sm::StateDiff {
            resource_type: PACKAGE,
            resource_name: "p1".into(),
            status_diff: Some(sm::StatusDiff {
                desired: "running".into(),
                actual: "PACKAGE_STATE_ERROR".into(),
            }),
            ..Default::default()
        })
        .await
        .expect("answers")
        .into_inner();
    assert!(answer.success, "{answer:?}");
    let plan = answer.plan.expect("a plan");
    let wire_plan = transport_grpc::convert::plan(plan.clone()).expect("a plan");
    assert_eq!(
        plan.priority,
        sm::ActionPriority::Critical as i32,
        "a running package's status"
    );
    assert_eq!(
        plan.actions.last(),
        Some(&(sm::RecoveryAction::Notify as i32))
    );
    assert_eq!(plan.impact_assessment.expect("impact").parts, ["status"]);
    assert!(!answer.recovery_id.is_empty());
    let incident = sm
        .client
        .recovery_status(&IncidentRef::Id(answer.recovery_id.clone()))
        .await
        .expect("answers")
        .expect("the Diff incident");
    assert_eq!(incident.incident.issue, IssueType::Diff);
    assert_eq!(incident.ladder, wire_plan.actions);
    assert_eq!(wire_plan.priority, Priority::Critical);
    sm.shutdown().await;
}

#[tokio::test]
async fn manual_rungs_reach_the_action_controller() {
    let ac = ActionControllerServer::start().await;
    let sm = StateManager::start(&ac.url()).await;
    let mut raw = sm.raw.clone();
    drive_p1_to_error(&sm).await;
    assert_eq!(
        ac.wait_for_reconciles(1, Duration::from_secs(5))
            .await
            .len(),
        1
    );

    // Pullpiri's RECOVERY_TYPE_RESTART: one Restart rung, a Reconcile of s1.
    let restart = raw
        .trigger_recovery(sm::TriggerRecoveryRequest {
            resource_type: PACKAGE,
            resource_name: "p1".into(),
            recovery_strategy: Some(sm::RecoveryStrategy {
                r#type: sm::RecoveryType::Restart as i32,
                ..Default::default()
            }),
            reason: "restart it".into(),
            force: true,
        })
        .await
        .expect("answers")
        .into_inner();
    assert!(restart.success, "{restart:?}");
    let status = restart.status.expect("a status");
    assert_eq!(status.issue, sm::IssueType::Manual as i32);
    assert_eq!(status.ladder, [sm::RecoveryAction::Restart as i32]);
    let reconciles = ac.wait_for_reconciles(2, Duration::from_secs(5)).await;
    assert_eq!(reconciles.len(), 2, "{reconciles:?}");
    assert_eq!(reconciles[1].scenario_name, "s1");
    let delivered = eventually("the Restart step is delivered", || async {
        let status = status_of(&sm, by_id(&restart.recovery_id)).await.status?;
        let step = status.steps.first()?.clone();
        (step.outcome == sm::RecoveryStepOutcome::Delivered as i32).then_some(step)
    })
    .await;
    assert_eq!(delivered.status, sm::RecoveryStepStatus::Running as i32);
    assert!(delivered.completion_time_ns >= delivered.start_time_ns);

    // A Recreate rung is the ActionController's TriggerAction.
    let recreate = sm
        .client
        .trigger_recovery(&TriggerRequest {
            kind: ResourceKind::Package,
            name: "p1".into(),
            actions: vec![RecoveryAction::Recreate],
            reason: "recreate it".into(),
            force: true,
        })
        .await
        .expect("a new incident");
    assert_ne!(recreate.view.incident.id, restart.recovery_id);
    let triggered = eventually("TriggerAction(s1)", || async {
        let triggers = ac.triggers();
        (!triggers.is_empty()).then_some(triggers)
    })
    .await;
    assert_eq!(triggered[0].scenario_name, "s1");
    sm.shutdown().await;
}

#[tokio::test]
async fn a_package_healthy_again_after_a_failed_recovery_resolves_its_alerts_and_shows_running() {
    let ac = ActionControllerServer::start().await;
    let sm = StateManager::start_with(&ac.url(), quick_ladder(), ServeOptions::default()).await;
    let mut raw = sm.raw.clone();
    drive_p1_to_error(&sm).await;
    eventually("the incident ends Failed", || async {
        let status = status_of(&sm, by_resource(PACKAGE, "p1")).await.status?;
        (status.phase == sm::RecoveryPhase::Failed as i32).then_some(())
    })
    .await;
    let failed = state_of(&sm, PACKAGE, "p1").await;
    assert_eq!(
        failed.metadata.get("recovery.hold").map(String::as_str),
        Some("failed"),
        "{:?}",
        failed.metadata
    );

    // Healthy again (the NodeAgent restarted the containers): its alerts
    // are resolved (RECOVERY.md §6) and the package shows Running.
    raw.send_changed_container_list(report("running"))
        .await
        .expect("accepted");
    let healthy = state_of(&sm, PACKAGE, "p1").await;
    assert_eq!(healthy.current_state, "Running");
    let open = eventually("p1's alerts resolved", || async {
        let page = sm
            .client
            .pending_alerts(&AlertQuery::default())
            .await
            .expect("answers");
        (!page.alerts.iter().any(|a| a.name == "p1")).then_some(page)
    })
    .await;
    assert!(open.alerts.iter().all(|a| a.name != "p1"));
    let healthy = state_of(&sm, PACKAGE, "p1").await;
    let health = healthy.health_status.as_ref().expect("health_status");
    assert!(health.healthy, "{health:?}");
    assert_eq!(
        healthy.metadata.get("recovery.phase").map(String::as_str),
        Some("Failed"),
        "the latest incident"
    );
    assert_eq!(
        healthy.metadata.get("service_phase").map(String::as_str),
        Some("Running"),
        "a healthy, running package: {:?}",
        healthy.metadata
    );
    sm.shutdown().await;
}
