//! Self-healing on the paused clock (RECOVERY.md §1–§6): every path of the
//! PackageError ladder, abort, an unreachable ActionController, a restart
//! mid-incident, flapping and damping, the alert lifecycle, manual and
//! diff-driven incidents.
//!
//! Package p1 (scenario s1, models m1 and m2 on node n1) fails when both
//! containers are reported dead and recovers when they run again. The
//! default PackageError ladder is Restart, Restart, Recreate, Notify,
//! Isolate with a 30 s validation per rung.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use engine::{AlertQuery, Engine, EngineHandle, EventFilter, EventKind, IncidentRef};
use state_store::{StateStore, get_all};
use statemachine_core::ResourceKind;
use statemachine_core::alert::{AlertSeverity, AlertStatus};
use statemachine_core::healing::ladder::Outcome;
use statemachine_core::healing::{Incident, Phase, RecoveryAction};
use support::*;

const VALIDATION: Duration = Duration::from_secs(30);

struct Fixture {
    store: Arc<dyn StateStore>,
    engine: Engine,
    action: Arc<RecordingAction>,
}

impl Fixture {
    async fn new() -> Self {
        let store = memory();
        define_infotainment(store.as_ref()).await;
        Self::on(store).await
    }

    /// Package p1 on a fresh memory store, the engine with `config`.
    async fn with(config: engine::EngineConfig) -> Self {
        let store = memory();
        define_infotainment(store.as_ref()).await;
        let (engine, action) = start(store.clone(), config).await;
        Self {
            store,
            engine,
            action,
        }
    }

    async fn on(store: Arc<dyn StateStore>) -> Self {
        let (engine, action) = start(store.clone(), config()).await;
        Self {
            store,
            engine,
            action,
        }
    }

    /// A subscription to recovery, alert and warning events.
    fn recovery_events(&self) -> engine::Subscription {
        self.h().subscribe(EventFilter {
            include_recovery: true,
            include_health: true,
            ..EventFilter::default()
        })
    }

    fn h(&self) -> EngineHandle {
        self.engine.handle()
    }

    async fn report(&self, status: &str) {
        let answer = self
            .h()
            .report_containers(report(
                "n1",
                vec![
                    container("model-m1", &[("Status", status)]),
                    container("model-m2", &[("Status", status)]),
                ],
            ))
            .await;
        assert_success(answer.code, &answer.message);
    }

    /// Running, then both containers dead: p1 enters Error.
    async fn fail(&self) {
        self.report("running").await;
        self.report("dead").await;
        eventually(self.store.as_ref(), "/package/p1/state", Some("Error")).await;
    }

    /// Waits (in paused time, 5 s at most) until p1's incident is in `phase`
    /// with `steps` steps.
    async fn until(&self, phase: Phase, steps: usize) -> Incident {
        let mut last = None;
        for _ in 0..500 {
            if let Ok(view) = self
                .h()
                .recovery_status(IncidentRef::Resource(ResourceKind::Package, "p1".into()))
                .await
            {
                if view.incident.phase == phase && view.incident.steps.len() == steps {
                    return view.incident;
                }
                last = Some(view.incident);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("p1's incident never reached {phase:?} with {steps} steps: {last:#?}");
    }

    /// The incident as stored in the store.
    async fn stored(&self, id: &str) -> Incident {
        let kv = self
            .store
            .get(&format!("/statemanager/recovery/{id}"))
            .await
            .unwrap()
            .expect("the incident is durable");
        Incident::decode(&kv.value).unwrap()
    }
}

/// The kinds of the events received so far, state changes left out.
async fn drain(events: &mut engine::Subscription) -> Vec<EventKind> {
    let mut kinds = Vec::new();
    while let Ok(Some(delivery)) =
        tokio::time::timeout(Duration::from_millis(100), events.next()).await
    {
        if let engine::Delivery::Event(event) = delivery
            && event.kind != EventKind::StateChange
        {
            kinds.push(event.kind);
        }
    }
    kinds
}

fn actions(incident: &Incident) -> Vec<(RecoveryAction, Outcome)> {
    incident
        .steps
        .iter()
        .map(|s| (s.action, s.outcome))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_package_that_recovers_after_the_first_restart_completes() {
    let f = Fixture::new().await;
    let mut events = f.recovery_events();
    f.fail().await;
    let incident = f.until(Phase::Validating, 1).await;
    assert_eq!(f.action.calls(), ["Reconcile(s1)"]);
    // Opened in the transaction that entered Error: durable with its step.
    assert_eq!(f.stored(&incident.id).await.steps.len(), 1);
    f.report("running").await;
    let done = f.until(Phase::Completed, 1).await;
    assert_eq!(
        actions(&done),
        [(RecoveryAction::Restart, Outcome::Healthy)]
    );
    assert_eq!(f.stored(&done.id).await.phase, Phase::Completed);
    assert_eq!(f.action.calls(), ["Reconcile(s1)"], "nothing more");
    let kinds = drain(&mut events).await;
    assert_eq!(
        kinds,
        [EventKind::RecoveryStart, EventKind::RecoveryComplete]
    );
    assert_eq!(
        f.engine
            .metrics()
            .incidents_completed
            .load(Ordering::Relaxed),
        1
    );
    f.engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_package_that_recovers_after_escalation_walks_the_rungs_in_order() {
    let f = Fixture::new().await;
    f.fail().await;
    f.until(Phase::Validating, 1).await;
    // Rung 1 times out: rung 2 (Restart again) at once, then rung 3 (Recreate).
    tokio::time::sleep(VALIDATION).await;
    f.until(Phase::Validating, 2).await;
    tokio::time::sleep(VALIDATION).await;
    let incident = f.until(Phase::Validating, 3).await;
    assert_eq!(
        f.action.calls(),
        ["Reconcile(s1)", "Reconcile(s1)", "TriggerAction(s1)"]
    );
    assert_eq!((incident.rung, incident.executed), (2, 3));
    f.report("running").await;
    let done = f.until(Phase::Completed, 3).await;
    assert_eq!(
        actions(&done),
        [
            (RecoveryAction::Restart, Outcome::TimedOut),
            (RecoveryAction::Restart, Outcome::TimedOut),
            (RecoveryAction::Recreate, Outcome::Healthy),
        ]
    );
    f.engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_package_kept_in_error_walks_the_whole_ladder_and_fails() {
    let f = Fixture::new().await;
    let mut events = f.recovery_events();
    f.fail().await;
    for steps in 1..=5 {
        f.until(Phase::Validating, steps).await;
        tokio::time::sleep(VALIDATION).await;
    }
    let failed = f.until(Phase::Failed, 5).await;
    assert_eq!(
        f.action.calls(),
        ["Reconcile(s1)", "Reconcile(s1)", "TriggerAction(s1)"],
        "Notify and Isolate make no call"
    );
    assert_eq!(
        failed.steps.iter().map(|s| s.action).collect::<Vec<_>>(),
        [
            RecoveryAction::Restart,
            RecoveryAction::Restart,
            RecoveryAction::Recreate,
            RecoveryAction::Notify,
            RecoveryAction::Isolate,
        ]
    );
    assert!(failed.steps.iter().all(|s| s.outcome == Outcome::TimedOut));
    assert!(failed.isolated());
    // Alerts: the Notify rung, the isolation and the failure.
    let alerts = f.h().pending_alerts(AlertQuery::default()).await.unwrap();
    let mut conditions: Vec<_> = alerts
        .alerts
        .iter()
        .map(|a| (a.condition.as_str(), a.severity))
        .collect();
    conditions.sort();
    assert_eq!(
        conditions,
        [
            ("Isolated", AlertSeverity::Critical),
            ("RecoveryFailed", AlertSeverity::Critical),
            ("RecoveryNotify", AlertSeverity::Warning),
        ]
    );
    let (kvs, _) = get_all(f.store.as_ref(), "/statemanager/alerts/", 100)
        .await
        .unwrap();
    assert_eq!(kvs.len(), 3, "alerts are durable");
    let failed_events = drain(&mut events)
        .await
        .into_iter()
        .filter(|k| *k == EventKind::RecoveryFailed)
        .count();
    assert_eq!(failed_events, 1);

    // Isolated: entering Error again asks for nothing.
    f.report("running").await;
    f.report("dead").await;
    eventually(f.store.as_ref(), "/package/p1/state", Some("Error")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        f.action.calls().len(),
        3,
        "no automatic recovery while isolated"
    );

    // An operator lifts it.
    let answer = f
        .h()
        .trigger_recovery(engine::TriggerRequest {
            kind: ResourceKind::Package,
            name: "p1".into(),
            actions: vec![RecoveryAction::Recreate],
            reason: "after the fix".into(),
            force: false,
        })
        .await
        .unwrap();
    assert!(
        answer.message.contains("isolation lifted"),
        "{}",
        answer.message
    );
    assert_eq!(
        answer.view.incident.issue,
        statemachine_core::healing::IssueType::Manual
    );
    f.until(Phase::Validating, 1).await;
    assert_eq!(
        f.action.calls().last().map(String::as_str),
        Some("TriggerAction(s1)")
    );
    f.engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_aborted_incident_takes_no_further_step() {
    let f = Fixture::new().await;
    f.fail().await;
    let incident = f.until(Phase::Validating, 1).await;
    let answer = f
        .h()
        .abort_recovery(IncidentRef::Id(incident.id.clone()), "maintenance".into())
        .await
        .unwrap();
    assert_eq!(answer.view.incident.phase, Phase::Aborted);
    assert_eq!(f.stored(&incident.id).await.phase, Phase::Aborted);
    tokio::time::sleep(VALIDATION * 4).await;
    assert_eq!(f.action.calls(), ["Reconcile(s1)"], "no further step");
    let again = f
        .h()
        .abort_recovery(IncidentRef::Id(incident.id.clone()), String::new())
        .await
        .unwrap();
    assert!(again.message.contains("already ended"), "{}", again.message);
    let unknown = f
        .h()
        .recovery_status(IncidentRef::Id("nope".into()))
        .await
        .unwrap_err();
    assert!(matches!(unknown, engine::EngineError::NotFound(_)));
    f.engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_action_controller_does_not_count_as_a_failed_rung() {
    let f = Fixture::new().await;
    f.action.down.store(true, Ordering::SeqCst);
    f.fail().await;
    let waiting = f.until(Phase::Executing, 1).await;
    assert_eq!(
        actions(&waiting),
        [(RecoveryAction::Restart, Outcome::Pending)]
    );
    // Far past the validation timeout: still the first rung, still pending.
    tokio::time::sleep(VALIDATION * 3).await;
    let waiting = f.until(Phase::Executing, 1).await;
    assert_eq!((waiting.rung, waiting.failures), (0, 0));
    f.action.down.store(false, Ordering::SeqCst);
    let validating = f.until(Phase::Validating, 1).await;
    assert!(validating.steps[0].delivered_ns.is_some());
    assert_eq!(f.action.calls(), ["Reconcile(s1)"]);
    f.engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_mid_incident_resumes_without_repeating_a_delivered_step() {
    let f = Fixture::new().await;
    f.fail().await;
    let first = f.until(Phase::Validating, 1).await;
    f.engine.shutdown().await;

    let g = Fixture::on(f.store.clone()).await;
    let resumed = g.until(Phase::Validating, 1).await;
    assert_eq!(resumed.id, first.id);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        g.action.calls().is_empty(),
        "the delivered Restart is not sent again"
    );
    tokio::time::sleep(VALIDATION).await;
    g.until(Phase::Validating, 2).await;
    assert_eq!(g.action.calls(), ["Reconcile(s1)"], "the next rung follows");
    g.engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_with_an_undelivered_step_delivers_it_once() {
    let f = Fixture::new().await;
    f.action.down.store(true, Ordering::SeqCst);
    f.fail().await;
    f.until(Phase::Executing, 1).await;
    f.engine.shutdown().await;

    let g = Fixture::on(f.store.clone()).await;
    let validating = g.until(Phase::Validating, 1).await;
    assert_eq!(validating.executed, 1);
    assert_eq!(g.action.calls(), ["Reconcile(s1)"]);
    g.engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_flapping_package_raises_an_alert_and_its_recovery_is_damped() {
    let f = Fixture::new().await;
    f.fail().await;
    f.until(Phase::Validating, 1).await;
    // Error → Running → Error → Running → Error within seconds: five
    // transitions of p1 within the 60 s window (Idle → Running counted).
    for _ in 0..2 {
        f.report("running").await;
        f.report("dead").await;
    }
    let alerts = f.h().pending_alerts(AlertQuery::default()).await.unwrap();
    assert!(
        alerts.alerts.iter().any(|a| a.condition == "Flapping"),
        "{alerts:?}"
    );
    let health = f.h().health(ResourceKind::Package, "p1").await.unwrap();
    assert_eq!(
        health.metadata.get("tracker.flapping").map(String::as_str),
        Some("true")
    );
    assert!(!health.healthy);
    let before = f.action.calls().len();
    // The current incident's next rung would be due after 30 s; damping
    // holds it until p1 has been stable for the 60 s window.
    tokio::time::sleep(VALIDATION + Duration::from_secs(5)).await;
    assert_eq!(f.action.calls().len(), before, "damped");
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert!(f.action.calls().len() > before, "acts once stable");
    f.engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn alerts_are_acknowledged_then_resolved_when_the_resource_recovers() {
    let f = Fixture::new().await;
    f.fail().await;
    // Through rung 4 (Notify): a Warning alert.
    for steps in 1..=3 {
        f.until(Phase::Validating, steps).await;
        tokio::time::sleep(VALIDATION).await;
    }
    f.until(Phase::Validating, 4).await;
    let page = f.h().pending_alerts(AlertQuery::default()).await.unwrap();
    assert_eq!(page.total, 1);
    let alert = &page.alerts[0];
    assert_eq!(
        (alert.severity, alert.status),
        (AlertSeverity::Warning, AlertStatus::Active)
    );
    let refused = f
        .h()
        .acknowledge_alert(&alert.id, "", "")
        .await
        .unwrap_err();
    assert!(
        matches!(refused, engine::EngineError::Invalid(_)),
        "{refused}"
    );
    let acked = f
        .h()
        .acknowledge_alert(&alert.id, "operator", "looking into it")
        .await
        .unwrap();
    assert_eq!(acked.status, AlertStatus::Acknowledged);
    let stored = f
        .store
        .get(&format!("/statemanager/alerts/{}", alert.id))
        .await
        .unwrap()
        .unwrap();
    let stored = statemachine_core::alert::Alert::decode(&stored.value).unwrap();
    assert_eq!(stored.status, AlertStatus::Acknowledged);
    assert!(
        f.h()
            .acknowledge_alert("nope", "operator", "")
            .await
            .is_err(),
        "an unknown alert"
    );
    // Filter by severity.
    let critical = f
        .h()
        .pending_alerts(AlertQuery {
            min_severity: Some(AlertSeverity::Critical),
            ..AlertQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(critical.total, 0);
    f.report("running").await;
    f.until(Phase::Completed, 4).await;
    let page = f.h().pending_alerts(AlertQuery::default()).await.unwrap();
    assert_eq!(page.total, 0, "resolved: no longer pending");
    let stored = f
        .store
        .get(&format!("/statemanager/alerts/{}", alert.id))
        .await
        .unwrap()
        .unwrap();
    let stored = statemachine_core::alert::Alert::decode(&stored.value).unwrap();
    assert_eq!(stored.status, AlertStatus::Resolved);
    f.engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_state_diff_runs_its_plan_as_an_incident() {
    use statemachine_core::healing::diff::{StateDiff, StatusDiff};
    let f = Fixture::new().await;
    f.report("running").await;
    eventually(f.store.as_ref(), "/package/p1/state", Some("Running")).await;
    let diff = StateDiff {
        kind: ResourceKind::Package,
        name: "p1".into(),
        existence: None,
        scale: None,
        version: None,
        config: None,
        status: Some(StatusDiff {
            desired: "Running".into(),
            actual: "Degraded".into(),
        }),
    };
    let answer = f.h().state_diff(diff.clone()).await.unwrap();
    let plan = answer.plan.expect("a plan");
    assert_eq!(plan.actions.first(), Some(&RecoveryAction::Restart));
    // p1 is healthy by its committed state: the incident completes at once.
    let id = answer.recovery_id.expect("an incident");
    let incident = f.stored(&id).await;
    assert_eq!(incident.issue, statemachine_core::healing::IssueType::Diff);
    let none = f
        .h()
        .state_diff(StateDiff {
            status: None,
            ..diff
        })
        .await
        .unwrap();
    assert!(
        none.plan.is_none() && none.message.contains("no action"),
        "{}",
        none.message
    );
    f.engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn force_synchronization_rewrites_what_differs_from_the_reports() {
    let mut config = config();
    config.healing.repair_foreign_writes = false;
    let f = Fixture::with(config).await;
    f.report("running").await;
    eventually(f.store.as_ref(), "/package/p1/state", Some("Running")).await;
    // Another writer puts a wrong derived value.
    put(f.store.as_ref(), "/package/p1/state", "Error").await;
    eventually(f.store.as_ref(), "/package/p1/state", Some("Error")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answer = f
        .h()
        .force_sync(ResourceKind::Package, "p1", true, None)
        .await
        .unwrap();
    assert!(
        answer
            .changed
            .iter()
            .any(|c| c.starts_with("package/p1: Error -> Running")),
        "{answer:?}"
    );
    assert_eq!(
        value(f.store.as_ref(), "/package/p1/state")
            .await
            .as_deref(),
        Some("Running")
    );
    let again = f
        .h()
        .force_sync(ResourceKind::Package, "p1", true, None)
        .await
        .unwrap();
    assert!(again.changed.is_empty(), "{again:?}");
    assert!(
        f.h()
            .force_sync(ResourceKind::Package, "nope", false, None)
            .await
            .is_err(),
        "an unknown package"
    );
    f.engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_package_degraded_for_degraded_after_opens_its_own_incident() {
    use statemachine_core::PackageState;
    use statemachine_core::healing::IssueType;
    let mut config = config();
    config.core.reconcile_on = vec![PackageState::Error, PackageState::Degraded];
    let f = Fixture::with(config).await;
    f.report("running").await;
    let answer = f
        .h()
        .report_containers(report(
            "n1",
            vec![
                container("model-m1", &[("Status", "dead")]),
                container("model-m2", &[("Status", "running")]),
            ],
        ))
        .await;
    assert_success(answer.code, &answer.message);
    eventually(f.store.as_ref(), "/package/p1/state", Some("Degraded")).await;
    // The Reconcile of the entry (STATE-MACHINES §3), no incident yet.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(f.action.calls(), ["Reconcile(s1)"]);
    assert!(
        f.h()
            .recovery_status(IncidentRef::Resource(ResourceKind::Package, "p1".into()))
            .await
            .is_err()
    );
    // 60 s Degraded: PackageDegraded opens, waits initial_delay, restarts.
    tokio::time::sleep(Duration::from_secs(66)).await;
    let incident = f.until(Phase::Validating, 1).await;
    assert_eq!(incident.issue, IssueType::PackageDegraded);
    assert_eq!(f.action.calls(), ["Reconcile(s1)", "Reconcile(s1)"]);
    f.engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_silent_node_relocates_its_dead_models_to_a_live_node() {
    use statemachine_core::healing::IssueType;
    let mut config = config();
    config.core.node_timeout = Some(Duration::from_secs(10));
    let f = Fixture::with(config).await;
    f.report("running").await;
    eventually(f.store.as_ref(), "/package/p1/state", Some("Running")).await;
    // n2 reports (nothing of p1) and stays live; n1 falls silent.
    for _ in 0..3 {
        let answer = f.h().report_containers(report("n2", Vec::new())).await;
        assert_success(answer.code, &answer.message);
        tokio::time::sleep(Duration::from_secs(6)).await;
    }
    eventually(f.store.as_ref(), "/model/m1/state", Some("Dead")).await;
    let m1 = IncidentRef::Resource(ResourceKind::Model, "m1".into());
    let mut relocated = false;
    for _ in 0..100 {
        let answer = f.h().report_containers(report("n2", Vec::new())).await;
        assert_success(answer.code, &answer.message);
        if f.action
            .calls()
            .iter()
            .any(|c| c == "OffloadModel(m1, n1 -> n2)")
        {
            relocated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(relocated, "calls: {:?}", f.action.calls());
    let view = f.h().recovery_status(m1).await.unwrap();
    assert_eq!(view.incident.issue, IssueType::NodeSilent);
    assert_eq!(view.incident.steps[0].action, RecoveryAction::Relocate);
    f.engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_alert_open_longer_than_its_ttl_expires() {
    let mut config = config();
    config.healing.alert_ttl = Duration::from_secs(300);
    let f = Fixture::with(config).await;
    f.fail().await;
    for steps in 1..=3 {
        f.until(Phase::Validating, steps).await;
        tokio::time::sleep(VALIDATION).await;
    }
    f.until(Phase::Validating, 4).await;
    let page = f.h().pending_alerts(AlertQuery::default()).await.unwrap();
    let notify = page.alerts[0].id.clone();
    // Past the ttl and the next expiry check (every 60 s).
    tokio::time::sleep(Duration::from_secs(300 + 61)).await;
    let page = f.h().pending_alerts(AlertQuery::default()).await.unwrap();
    assert!(page.alerts.iter().all(|a| a.id != notify), "{page:?}");
    let stored = f
        .store
        .get(&format!("/statemanager/alerts/{notify}"))
        .await
        .unwrap()
        .unwrap();
    let stored = statemachine_core::alert::Alert::decode(&stored.value).unwrap();
    assert_eq!(stored.status, AlertStatus::Expired);
    f.engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_foreign_write_to_a_derived_key_is_repaired_at_once() {
    let f = Fixture::new().await;
    f.report("running").await;
    eventually(f.store.as_ref(), "/package/p1/state", Some("Running")).await;
    eventually(f.store.as_ref(), "/model/m1/state", Some("Running")).await;
    put(f.store.as_ref(), "/model/m1/state", "Dead").await;
    put(f.store.as_ref(), "/package/p1/state", "Error").await;
    // Rewritten to what the reports derive.
    eventually(f.store.as_ref(), "/model/m1/state", Some("Running")).await;
    eventually(f.store.as_ref(), "/package/p1/state", Some("Running")).await;
    assert!(f.engine.metrics().foreign_writes.load(Ordering::Relaxed) >= 2);
    // A scenario key is requested, never repaired.
    put(f.store.as_ref(), "/scenario/s9/state", "Waiting").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        value(f.store.as_ref(), "/scenario/s9/state")
            .await
            .as_deref(),
        Some("Waiting")
    );
    f.engine.shutdown().await;
}
