//! Decision paths with a mocked store (mockall): guard failures re-plan,
//! an unavailable store answers RESOURCE_UNAVAILABLE and leaves the cache
//! as it was; and timing with tokio's paused clock.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use engine::{Engine, EngineConfig};
use state_store::{Applied, KeyValue, MockStateStore, Page, StateStore, StoreError};
use statemachine_core::{ErrorCode, ResourceKind};
use support::*;

/// A mocked store that starts empty and never sees outside changes.
fn empty_store() -> MockStateStore {
    let mut store = MockStateStore::new();
    store.expect_revision().returning(|| Ok(1));
    store.expect_get_prefix().returning(|_, _| {
        Ok(Page {
            kvs: vec![],
            more: false,
            revision: 1,
        })
    });
    store
        .expect_watch()
        .returning(|_, _| Ok(Box::pin(futures::stream::pending())));
    store
}

#[tokio::test]
async fn a_guard_failure_re_reads_re_plans_and_commits() {
    let mut store = empty_store();
    let applies = Arc::new(AtomicUsize::new(0));
    let seen = applies.clone();
    store.expect_apply().returning(move |batch| {
        match seen.fetch_add(1, Ordering::SeqCst) {
            // Another StateManager wrote the scenario first.
            0 => Err(StoreError::GuardFailed {
                key: "/scenario/s/state".into(),
                expected: 0,
                actual: 7,
            }),
            _ => {
                let guard = batch
                    .guards
                    .iter()
                    .find(|g| g.key == "/scenario/s/state")
                    .expect("guarded");
                assert_eq!(
                    guard.mod_revision, 7,
                    "the re-plan is guarded by the re-read revision"
                );
                Ok(Applied { revision: 8 })
            }
        }
    });
    store.expect_get().returning(|key| {
        Ok((key == "/scenario/s/state").then(|| KeyValue {
            key: key.to_owned(),
            value: b"Idle".to_vec(),
            create_revision: 7,
            mod_revision: 7,
        }))
    });
    let store: Arc<dyn StateStore> = Arc::new(store);
    let (engine, _) = start(store, config()).await;
    // Planned from "no record" first; re-planned from the re-read record.
    let answer = engine
        .handle()
        .change_state(scenario("s", "Idle", "Waiting"))
        .await;
    assert_eq!(answer.code, ErrorCode::Success, "{}", answer.message);
    assert_eq!(applies.load(Ordering::SeqCst), 2);
    assert_eq!(engine.metrics().guard_conflicts.load(Ordering::SeqCst), 1);
    engine.shutdown().await;
}

#[tokio::test]
async fn guard_failures_are_retried_a_bounded_number_of_times() {
    let mut store = empty_store();
    store.expect_apply().returning(|_| {
        Err(StoreError::GuardFailed {
            key: "/scenario/s/state".into(),
            expected: 0,
            actual: 9,
        })
    });
    store.expect_get().returning(|_| Ok(None));
    let mut config = config();
    config.max_guard_retries = 3;
    let store: Arc<dyn StateStore> = Arc::new(store);
    let (engine, _) = start(store, config).await;
    let answer = engine
        .handle()
        .change_state(scenario("s", "Idle", "Waiting"))
        .await;
    assert_eq!(
        answer.code,
        ErrorCode::ResourceUnavailable,
        "{}",
        answer.message
    );
    assert_eq!(engine.metrics().guard_conflicts.load(Ordering::SeqCst), 3);
    engine.shutdown().await;
}

#[tokio::test]
async fn an_unavailable_store_answers_unavailable_and_keeps_the_cache() {
    let mut store = empty_store();
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let failing = fail.clone();
    store.expect_apply().returning(move |_| {
        if failing.load(Ordering::SeqCst) {
            Err(StoreError::unavailable("connection refused"))
        } else {
            Ok(Applied { revision: 2 })
        }
    });
    let store: Arc<dyn StateStore> = Arc::new(store);
    let (engine, _) = start(store, config()).await;
    let h = engine.handle();
    let answer = h.change_state(scenario("s", "Idle", "Waiting")).await;
    assert_eq!(answer.code, ErrorCode::ResourceUnavailable);
    assert!(
        answer.details.contains("connection refused"),
        "{}",
        answer.details
    );
    let view = h
        .get_state(ResourceKind::Scenario, "s")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.state, "Idle", "nothing applied to the cache");
    fail.store(false, Ordering::SeqCst);
    let answer = h.change_state(scenario("s", "Idle", "Waiting")).await;
    assert_eq!(answer.code, ErrorCode::Success, "recovers by itself");
    engine.shutdown().await;
}

#[tokio::test]
async fn a_hanging_store_is_answered_within_the_commit_timeout() {
    let mut store = empty_store();
    store.expect_apply().returning(|_| {
        Err(StoreError::Timeout {
            operation: "apply",
            after: Duration::from_millis(300),
        })
    });
    let mut config = config();
    config.commit_timeout = Duration::from_millis(300);
    let store: Arc<dyn StateStore> = Arc::new(store);
    let (engine, _) = start(store, config).await;
    let started = std::time::Instant::now();
    let answer = engine
        .handle()
        .change_state(scenario("s", "Idle", "Waiting"))
        .await;
    assert_eq!(answer.code, ErrorCode::ResourceUnavailable);
    assert!(started.elapsed() < Duration::from_secs(3));
    engine.shutdown().await;
}

/// A store outage on a real etcd: etcd stopped (SIGSTOP) → every request is
/// answered within its deadline with RESOURCE_UNAVAILABLE; after it resumes,
/// the engine works again and nothing half-written is visible.
#[tokio::test]
async fn a_paused_etcd_is_answered_unavailable_then_recovers() {
    let (etcd, store) = etcd().await;
    let mut config = config();
    config.commit_timeout = Duration::from_millis(800);
    let (engine, _) = start(store.clone(), config).await;
    let h = engine.handle();
    assert_eq!(
        h.change_state(scenario("s", "Idle", "Waiting")).await.code,
        ErrorCode::Success
    );
    etcd.pause().expect("SIGSTOP");
    let started = std::time::Instant::now();
    let answer = h.change_state(scenario("s", "Waiting", "Satisfied")).await;
    let elapsed = started.elapsed();
    etcd.resume().expect("SIGCONT");
    assert_eq!(
        answer.code,
        ErrorCode::ResourceUnavailable,
        "{}",
        answer.message
    );
    assert!(elapsed < Duration::from_secs(5), "answered in {elapsed:?}");
    // Automatic recovery: the same request succeeds once etcd is back.
    let mut last = None;
    for _ in 0..50 {
        let answer = h.change_state(scenario("s", "Waiting", "Satisfied")).await;
        if answer.code == ErrorCode::Success {
            last = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(last.is_some(), "the engine recovers after etcd resumes");
    assert_eq!(
        value(store.as_ref(), "/scenario/s/state").await.as_deref(),
        Some("Satisfied")
    );
    engine.shutdown().await;
}

/// §2 grace, with tokio's paused clock: an Unknown container keeps its
/// model for `info_failure_grace`, then the model is Dead.
#[tokio::test(start_paused = true)]
async fn information_failures_wait_for_the_grace_period() {
    let store = memory();
    define_infotainment(store.as_ref()).await;
    let mut config = EngineConfig::default();
    config.core.info_failure_grace = Duration::from_secs(10);
    let action = Arc::new(RecordingAction::default());
    let engine = Engine::start(store.clone(), action, config).await.unwrap();
    let h = engine.handle();
    let ok = report(
        "n1",
        vec![
            container("model-m1", &[("Status", "running")]),
            container("model-m2", &[("Status", "running")]),
        ],
    );
    assert_eq!(h.report_containers(ok).await.code, ErrorCode::Success);
    let unknown = report(
        "n1",
        vec![
            container("model-m1", &[("Status", "removing")]),
            container("model-m2", &[("Status", "running")]),
        ],
    );
    assert_eq!(h.report_containers(unknown).await.code, ErrorCode::Success);
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(
        value(store.as_ref(), "/model/m1/state").await.as_deref(),
        Some("Running"),
        "within the grace"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        value(store.as_ref(), "/model/m1/state").await.as_deref(),
        Some("Dead"),
        "after the grace"
    );
    assert_eq!(
        value(store.as_ref(), "/package/p1/state").await.as_deref(),
        Some("Degraded")
    );
    engine.shutdown().await;
}

/// Reconcile backoff, with tokio's paused clock: attempts follow the
/// exponential schedule, and one alert is raised at the escalation limit.
#[tokio::test(start_paused = true)]
async fn reconcile_retries_back_off_and_escalate_once() {
    let store = memory();
    define_infotainment(store.as_ref()).await;
    let mut config = config();
    config.recovery.base_backoff = Duration::from_secs(1);
    config.recovery.max_backoff = Duration::from_secs(8);
    config.recovery.max_delivery_attempts = 3;
    let action = Arc::new(RecordingAction::default());
    action.down.store(true, Ordering::SeqCst);
    let engine = Engine::start(store.clone(), action.clone(), config)
        .await
        .unwrap();
    let h = engine.handle();
    let mut alerts = h.subscribe(engine::EventFilter {
        include_health: true,
        include_recovery: true,
        ..Default::default()
    });
    let dead = report(
        "n1",
        vec![
            container("model-m1", &[("Status", "dead")]),
            container("model-m2", &[("Status", "dead")]),
        ],
    );
    assert_eq!(h.report_containers(dead).await.code, ErrorCode::Success);
    // Backoff with jitter in [0.5, 1]: 1 s, 2 s, 4 s, 8 s ... at most.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(action.attempts.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let attempts = action.attempts.load(Ordering::SeqCst);
    assert!((3..=5).contains(&attempts), "{attempts} attempts in 8 s");
    let mut saw_alert = 0;
    while let Ok(Some(engine::Delivery::Event(event))) =
        tokio::time::timeout(Duration::from_millis(1), alerts.next()).await
    {
        if event.kind == engine::EventKind::Alert {
            saw_alert += 1;
        }
    }
    assert_eq!(saw_alert, 1, "escalated once at the limit");
    action.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(action.count().await, 1, "delivered once it is back");
    assert_eq!(
        engine.metrics().reconciles_delivered.load(Ordering::SeqCst),
        1
    );
    engine.shutdown().await;
}

/// The reconcile request carries the scenario targeting the package, and is
/// made exactly once (mockall verifies the count when the mock drops).
#[tokio::test]
async fn the_reconcile_names_the_scenario_of_the_failed_package() {
    let store = memory();
    define_infotainment(store.as_ref()).await;
    let mut action = engine::MockActionPort::new();
    let (delivered_tx, mut delivered) = tokio::sync::mpsc::unbounded_channel();
    action
        .expect_reconcile()
        .withf(|r| r.scenario == "s1" && r.package == "p1" && r.package_state == "Error")
        .times(1)
        .returning(move |_| {
            let _ = delivered_tx.send(());
            Ok(())
        });
    let engine = Engine::start(store, Arc::new(action), config())
        .await
        .unwrap();
    let dead = report(
        "n1",
        vec![
            container("model-m1", &[("Status", "dead")]),
            container("model-m2", &[("Status", "dead")]),
        ],
    );
    assert_eq!(
        engine.handle().report_containers(dead).await.code,
        ErrorCode::Success
    );
    tokio::time::timeout(Duration::from_secs(5), delivered.recv())
        .await
        .expect("reconcile within 5 s");
    engine.shutdown().await;
}

/// A burst of node reports is planned a few at a time: a batch takes
/// queued reports only up to `max_batch_containers`, so the plans and
/// transactions in memory stay bounded however many reports queue up. Every
/// report is still applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_reports_is_batched_within_the_container_budget() {
    let mut store = empty_store();
    let (release, held) = std::sync::mpsc::channel::<()>();
    let held = std::sync::Mutex::new(held);
    let batches = Arc::new(std::sync::Mutex::new(Vec::<usize>::new()));
    let seen = batches.clone();
    store.expect_apply().returning(move |batch| {
        let nodes = batch
            .ops
            .iter()
            .filter(|op| {
                matches!(op, state_store::Op::Put { key, .. } if key.starts_with("/statemanager/nodes/"))
            })
            .count();
        let first = {
            let mut seen = seen.lock().unwrap();
            seen.push(nodes);
            seen.len() == 1
        };
        if first {
            // Hold the owner in its first commit while the burst queues up.
            let _ = held
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(10));
        }
        Ok(Applied { revision: 2 })
    });
    let store: Arc<dyn StateStore> = Arc::new(store);
    let mut config = config();
    config.max_batch_containers = 3;
    let (engine, _) = start(store, config).await;
    let h = engine.handle();
    let two = |node: String| {
        report(
            &node,
            vec![
                container(&format!("model-{node}-a"), &[("Status", "running")]),
                container(&format!("model-{node}-b"), &[("Status", "running")]),
            ],
        )
    };
    let first = tokio::spawn({
        let h = h.clone();
        let report = two("n0".into());
        async move { h.report_containers(report).await }
    });
    while batches.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let burst: Vec<_> = (1..=8)
        .map(|i| {
            let h = h.clone();
            let report = two(format!("n{i}"));
            tokio::spawn(async move { h.report_containers(report).await })
        })
        .collect();
    // Let the burst reach the queue, then release the first commit.
    tokio::time::sleep(Duration::from_millis(200)).await;
    release.send(()).unwrap();
    assert_eq!(first.await.unwrap().code, ErrorCode::Success);
    for task in burst {
        let answer = task.await.unwrap();
        assert_eq!(answer.code, ErrorCode::Success, "{}", answer.message);
    }
    let batches = batches.lock().unwrap().clone();
    assert_eq!(
        batches.iter().sum::<usize>(),
        9,
        "every node record: {batches:?}"
    );
    assert!(
        batches.iter().all(|&n| n <= 2),
        "at most two 2-container reports per batch within a budget of 3: {batches:?}"
    );
    engine.shutdown().await;
}
