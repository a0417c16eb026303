//! The engine's behaviour through its public API. Every body runs twice:
//! on the in-memory store and on a real etcd started for the test.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use engine::{EventFilter, EventKind, HistoryQuery};
use state_store::StateStore;
use statemachine_core::{ErrorCode, ResourceKind};
use support::*;

mod bodies {
    use super::*;

    async fn next_event(s: &mut engine::Subscription) -> engine::Delivery {
        tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .expect("an event within 5 s")
            .expect("subscription open")
    }

    /// STATE-MACHINES §4: Idle -> Waiting -> Satisfied -> Allowed -> Completed,
    /// each SUCCESS durable, history oldest first.
    pub async fn scenario_lifecycle(store: Arc<dyn StateStore>) {
        let (engine, _) = start(store.clone(), config()).await;
        let h = engine.handle();
        for (current, target) in [
            ("Idle", "waiting"),
            ("Waiting", "SCENARIO_STATE_SATISFIED"),
            ("Satisfied", "Allowed"),
            ("Allowed", "Completed"),
        ] {
            let answer = h.change_state(scenario("s1", current, target)).await;
            assert_success(answer.code, &answer.message);
            assert_eq!(answer.transition_id, format!("s1:{current}->{target}"));
            // Answered after the commit: the store already has it.
            let stored = value(store.as_ref(), "/scenario/s1/state").await.unwrap();
            assert!(
                stored.eq_ignore_ascii_case(target.trim_start_matches("SCENARIO_STATE_")),
                "{stored}"
            );
        }
        let history = h
            .history(ResourceKind::Scenario, "s1", HistoryQuery::default())
            .await
            .unwrap();
        let steps: Vec<_> = history.iter().map(|e| e.to.clone().unwrap()).collect();
        assert_eq!(steps, ["Waiting", "Satisfied", "Allowed", "Completed"]);
        assert_eq!(
            history[0].from.as_deref(),
            Some("Idle"),
            "a scenario without a record is Idle"
        );
        let view = h
            .get_state(ResourceKind::Scenario, "s1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(view.state, "Completed");
        let (listed, total) = h
            .list(ResourceKind::Scenario, Some("COMPLETED"), 0)
            .await
            .unwrap();
        assert_eq!((listed.len(), total), (1, 1));
        let error = h
            .list(ResourceKind::Scenario, Some("Finished"), 0)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, engine::EngineError::Invalid(m) if m.contains("allowed: Idle")),
            "{error}"
        );
        engine.shutdown().await;
    }

    /// Invalid transitions are rejected and write nothing.
    pub async fn invalid_requests_write_nothing(store: Arc<dyn StateStore>) {
        let (engine, _) = start(store.clone(), config()).await;
        let h = engine.handle();
        let before = store.revision().await.unwrap();
        let answer = h.change_state(scenario("s1", "Idle", "Allowed")).await;
        assert_eq!(
            answer.code,
            ErrorCode::InvalidStateTransition,
            "{}",
            answer.message
        );
        let answer = h
            .change_state(scenario("bad/name", "Idle", "Waiting"))
            .await;
        assert_eq!(answer.code, ErrorCode::InvalidRequest);
        let answer = h.change_state(scenario("s1", "Idle", "Sleeping")).await;
        assert_eq!(answer.code, ErrorCode::InvalidRequest);
        assert!(
            answer.message.contains("allowed: Idle, Waiting"),
            "{}",
            answer.message
        );
        assert_eq!(store.revision().await.unwrap(), before, "nothing written");
        assert_eq!(value(store.as_ref(), "/scenario/s1/state").await, None);
        engine.shutdown().await;
    }

    /// A package entering Error asks for exactly one reconcile, even when
    /// the same report is sent again.
    pub async fn one_reconcile_per_entry_into_error(store: Arc<dyn StateStore>) {
        define_infotainment(store.as_ref()).await;
        define_barrier(store.as_ref()).await;
        let (engine, action) = start(store.clone(), config()).await;
        let h = engine.handle();
        let running = report(
            "n1",
            vec![
                container("model-m1", &[("Status", "running")]),
                container("model-m2", &[("Status", "running")]),
            ],
        );
        assert_success(h.report_containers(running).await.code, "running");
        let dead = report(
            "n1",
            vec![
                container("model-m1", &[("Status", "exited"), ("ExitCode", "137")]),
                container("model-m2", &[("Status", "dead")]),
            ],
        );
        let answer = h.report_containers(dead.clone()).await;
        assert_success(answer.code, &answer.message);
        assert_eq!(
            value(store.as_ref(), "/package/p1/state").await.as_deref(),
            Some("Error")
        );
        assert_eq!(
            value(store.as_ref(), "/model/m1/state").await.as_deref(),
            Some("Dead")
        );
        assert_eq!(
            value(store.as_ref(), "/container/model-m1/state")
                .await
                .as_deref(),
            Some("Dead")
        );
        let reconciles = action.wait_for(1).await;
        assert_eq!(reconciles.len(), 1);
        assert_eq!(reconciles[0].scenario, "s1");
        assert_eq!(reconciles[0].package, "p1");
        incident_validating(&h, "p1").await;
        let before = store.revision().await.unwrap();
        assert_success(h.report_containers(dead).await.code, "resent");
        // Answered after its commit: had it written, the revision would show.
        assert_eq!(
            store.revision().await.unwrap(),
            before,
            "an unchanged report writes nothing"
        );
        outbox_barrier(&h, &action).await;
        assert_eq!(action.count().await, 1, "no second reconcile");
        engine.shutdown().await;
    }

    /// The ActionController down when the package enters Error: the
    /// reconcile arrives once it is back, exactly once, and the outbox record
    /// is deleted; the engine keeps processing meanwhile.
    pub async fn reconcile_survives_an_action_controller_outage(store: Arc<dyn StateStore>) {
        define_infotainment(store.as_ref()).await;
        define_barrier(store.as_ref()).await;
        let (engine, action) = start(store.clone(), config()).await;
        action.down.store(true, Ordering::SeqCst);
        let h = engine.handle();
        let dead = report(
            "n1",
            vec![
                container("model-m1", &[("Status", "dead")]),
                container("model-m2", &[("Status", "dead")]),
            ],
        );
        assert_success(h.report_containers(dead).await.code, "dead");
        let outbox = state_store::get_all(store.as_ref(), "/statemanager/outbox/", 100)
            .await
            .unwrap()
            .0;
        assert_eq!(
            outbox.len(),
            1,
            "the reconcile is committed with the Error state"
        );
        // Meanwhile the engine answers other requests.
        let answer = h.change_state(scenario("other", "Idle", "Waiting")).await;
        assert_success(answer.code, &answer.message);
        for _ in 0..100 {
            if action.attempts.load(Ordering::SeqCst) >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            action.attempts.load(Ordering::SeqCst) >= 3,
            "retried with backoff"
        );
        action.down.store(false, Ordering::SeqCst);
        assert_eq!(action.wait_for(1).await.len(), 1);
        for _ in 0..200 {
            if state_store::get_all(store.as_ref(), "/statemanager/outbox/", 100)
                .await
                .unwrap()
                .0
                .is_empty()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let outbox = state_store::get_all(store.as_ref(), "/statemanager/outbox/", 100)
            .await
            .unwrap()
            .0;
        assert!(outbox.is_empty(), "delivered records are deleted");
        outbox_barrier(&h, &action).await;
        assert_eq!(action.count().await, 1, "delivered once");
        engine.shutdown().await;
    }

    /// Restart is recovery: a new engine on the same store redelivers the
    /// pending outbox and validates transitions against the stored state.
    pub async fn restart_redelivers_and_validates(store: Arc<dyn StateStore>) {
        define_infotainment(store.as_ref()).await;
        define_barrier(store.as_ref()).await;
        let (first, action) = start(store.clone(), config()).await;
        action.down.store(true, Ordering::SeqCst);
        let h = first.handle();
        assert_success(
            h.change_state(scenario("s1", "Idle", "Waiting")).await.code,
            "waiting",
        );
        let dead = report(
            "n1",
            vec![
                container("model-m1", &[("Status", "dead")]),
                container("model-m2", &[("Status", "dead")]),
            ],
        );
        assert_success(h.report_containers(dead.clone()).await.code, "dead");
        first.shutdown().await;
        assert_eq!(action.count().await, 0);

        let (second, action) = start(store.clone(), config()).await;
        let reconciles = action.wait_for(1).await;
        assert_eq!(reconciles.len(), 1, "the pending reconcile is redelivered");
        let h = second.handle();
        let answer = h.change_state(scenario("s1", "Idle", "Waiting")).await;
        assert_success(answer.code, &answer.message);
        assert!(
            answer.message.contains("already"),
            "validated from the stored Waiting: {}",
            answer.message
        );
        let answer = h.change_state(scenario("s1", "Waiting", "Completed")).await;
        assert_eq!(answer.code, ErrorCode::InvalidStateTransition);
        incident_validating(&h, "p1").await;
        // The restarted engine knows the node: the same report writes nothing.
        let before = store.revision().await.unwrap();
        assert_success(h.report_containers(dead).await.code, "resent");
        assert_eq!(store.revision().await.unwrap(), before);
        outbox_barrier(&h, &action).await;
        assert_eq!(
            action.count().await,
            1,
            "no new reconcile for an unchanged Error"
        );
        second.shutdown().await;
    }

    /// Concurrent requests to one scenario: the outcome equals some serial
    /// order and every SUCCESS is in the store.
    pub async fn concurrent_requests_serialize(store: Arc<dyn StateStore>) {
        let (engine, _) = start(store.clone(), config()).await;
        let h = engine.handle();
        let steps = [
            ("Idle", "Waiting"),
            ("Waiting", "Satisfied"),
            ("Satisfied", "Allowed"),
            ("Allowed", "Completed"),
        ];
        let mut tasks = Vec::new();
        for round in 0..6 {
            for (i, (current, target)) in steps.iter().enumerate() {
                let h = h.clone();
                let mut request = scenario("race", current, target);
                request.transition_id = format!("{round}-{i}");
                tasks.push(tokio::spawn(async move {
                    (request.target_state.clone(), h.change_state(request).await)
                }));
            }
        }
        let mut applied = Vec::new();
        for task in tasks {
            let (target, answer) = task.await.unwrap();
            if answer.code == ErrorCode::Success && !answer.message.contains("already") {
                applied.push(target);
            } else {
                assert!(
                    matches!(
                        answer.code,
                        ErrorCode::Success | ErrorCode::InvalidStateTransition
                    ),
                    "{:?} {}",
                    answer.code,
                    answer.message
                );
            }
        }
        let history = h
            .history(ResourceKind::Scenario, "race", HistoryQuery::default())
            .await
            .unwrap();
        let chain: Vec<String> = history.iter().map(|e| e.to.clone().unwrap()).collect();
        assert_eq!(
            chain.len(),
            applied.len(),
            "every applied SUCCESS is recorded once"
        );
        let expected = ["Waiting", "Satisfied", "Allowed", "Completed"];
        assert_eq!(
            chain,
            expected[..chain.len()],
            "a serial order of the table"
        );
        let stored = value(store.as_ref(), "/scenario/race/state").await;
        assert_eq!(stored.as_deref(), chain.last().map(String::as_str));
        engine.shutdown().await;
    }

    /// Group commit: many concurrent inputs share transactions.
    pub async fn group_commit_batches(store: Arc<dyn StateStore>) {
        let (engine, _) = start(store.clone(), config()).await;
        let h = engine.handle();
        let metrics = engine.metrics();
        let commits_before = metrics.commits.load(Ordering::SeqCst);
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let h = h.clone();
                tokio::spawn(async move {
                    h.change_state(scenario(&format!("g{i}"), "Idle", "Waiting"))
                        .await
                })
            })
            .collect();
        for task in tasks {
            let answer = task.await.unwrap();
            assert_success(answer.code, &answer.message);
        }
        let commits = metrics.commits.load(Ordering::SeqCst) - commits_before;
        let (_, total, sum) = metrics.batch_size.snapshot();
        eprintln!(
            "group commit: 64 inputs in {commits} transactions; batches observed {total}, inputs {sum}"
        );
        assert!(commits < 64, "inputs were batched ({commits} commits)");
        for i in 0..64 {
            assert_eq!(
                value(store.as_ref(), &format!("/scenario/g{i}/state"))
                    .await
                    .as_deref(),
                Some("Waiting")
            );
        }
        engine.shutdown().await;
    }

    /// History is bounded per resource and pruned in the same transaction.
    pub async fn history_is_bounded(store: Arc<dyn StateStore>) {
        let mut config = config();
        config.history_limit = 3;
        config.core.scenario_policy.allow_rearm = true;
        let (engine, _) = start(store.clone(), config).await;
        let h = engine.handle();
        for (c, t) in [
            ("Idle", "Waiting"),
            ("Waiting", "Satisfied"),
            ("Satisfied", "Denied"),
            ("Denied", "Waiting"),
            ("Waiting", "Satisfied"),
        ] {
            assert_success(h.change_state(scenario("s", c, t)).await.code, t);
        }
        let keys = state_store::get_all(store.as_ref(), "/statemanager/history/scenario/s/", 100)
            .await
            .unwrap()
            .0;
        assert_eq!(keys.len(), 3, "pruned to the limit");
        let history = h
            .history(ResourceKind::Scenario, "s", HistoryQuery::default())
            .await
            .unwrap();
        let chain: Vec<_> = history.iter().map(|e| e.to.clone().unwrap()).collect();
        assert_eq!(
            chain,
            ["Denied", "Waiting", "Satisfied"],
            "the newest, oldest first"
        );
        let limited = h
            .history(
                ResourceKind::Scenario,
                "s",
                HistoryQuery {
                    limit: 1,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(limited.len(), 1);
        engine.shutdown().await;
    }

    /// Subscribers get committed transitions, filtered by kind.
    pub async fn subscribers_see_committed_transitions(store: Arc<dyn StateStore>) {
        define_infotainment(store.as_ref()).await;
        let (engine, _) = start(store.clone(), config()).await;
        let h = engine.handle();
        let mut packages = h.subscribe(EventFilter {
            resource_kind: Some(ResourceKind::Package),
            ..Default::default()
        });
        let mut all = h.subscribe(EventFilter::default());
        assert_success(
            h.change_state(scenario("s1", "Idle", "Waiting")).await.code,
            "waiting",
        );
        let dead = report(
            "n1",
            vec![
                container("model-m1", &[("Status", "dead")]),
                container("model-m2", &[("Status", "running")]),
            ],
        );
        assert_success(h.report_containers(dead).await.code, "report");
        let engine::Delivery::Event(event) = next_event(&mut packages).await else {
            panic!("lagged")
        };
        assert_eq!(event.kind, EventKind::StateChange);
        assert_eq!(
            (event.resource_name.as_str(), event.to.as_deref()),
            ("p1", Some("Degraded"))
        );
        let engine::Delivery::Event(first) = next_event(&mut all).await else {
            panic!("lagged")
        };
        assert_eq!(
            (first.resource_kind, first.to.as_deref()),
            (ResourceKind::Scenario, Some("Waiting"))
        );
        engine.shutdown().await;
    }

    /// Definitions written by the ApiServer are picked up by the watch:
    /// a new Scenario/ or Package/ gets its state key as Idle.
    pub async fn new_definitions_start_idle(store: Arc<dyn StateStore>) {
        let (engine, _) = start(store.clone(), config()).await;
        define_infotainment(store.as_ref()).await;
        eventually(store.as_ref(), "/scenario/s1/state", Some("Idle")).await;
        eventually(store.as_ref(), "/package/p1/state", Some("Idle")).await;
        let view = engine
            .handle()
            .get_state(ResourceKind::Model, "m1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(view.state, "Created", "a defined, never observed model");
        assert!(
            engine
                .handle()
                .get_state(ResourceKind::Model, "nowhere")
                .await
                .unwrap()
                .is_none()
        );
        // A broken definition is skipped; the engine keeps working.
        put(store.as_ref(), "Package/broken", "spec: [").await;
        let answer = engine
            .handle()
            .change_state(scenario("s1", "Idle", "Waiting"))
            .await;
        assert_success(answer.code, &answer.message);
        engine.shutdown().await;
    }

    /// An input whose writes exceed one transaction (`max_txn_ops`) is split
    /// bottom-up and answered after the last part; the result is complete.
    pub async fn large_inputs_are_split_into_several_transactions(store: Arc<dyn StateStore>) {
        define_infotainment(store.as_ref()).await;
        let mut config = config();
        config.max_txn_ops = 4;
        let (engine, action) = start(store.clone(), config).await;
        let h = engine.handle();
        let metrics = engine.metrics();
        let mut containers = vec![
            container("model-m1", &[("Status", "dead")]),
            container("model-m2", &[("Status", "dead")]),
        ];
        containers.extend((0..6).map(|i| {
            let mut c = container(&format!("extra-{i}"), &[("Status", "running")]);
            c.annotations.insert("model".into(), "m1".into());
            c
        }));
        let before = metrics.commits.load(Ordering::SeqCst);
        let answer = h.report_containers(report("n1", containers)).await;
        assert_success(answer.code, &answer.message);
        let commits = metrics.commits.load(Ordering::SeqCst) - before;
        assert!(commits >= 4, "split into {commits} transactions");
        for i in 0..6 {
            assert_eq!(
                value(store.as_ref(), &format!("/container/extra-{i}/state"))
                    .await
                    .as_deref(),
                Some("Running")
            );
        }
        assert_eq!(
            value(store.as_ref(), "/model/m1/state").await.as_deref(),
            Some("Dead")
        );
        assert_eq!(
            value(store.as_ref(), "/package/p1/state").await.as_deref(),
            Some("Error")
        );
        assert_eq!(action.wait_for(1).await.len(), 1);
        engine.shutdown().await;
    }

    /// A new resource's first transition reads no history (the most frequent
    /// write costs no read that way), yet a history that outlived its state
    /// key is continued, never overwritten: the "absent" guard of the history
    /// put catches it.
    pub async fn history_outliving_its_state_key_is_continued(store: Arc<dyn StateStore>) {
        let prefix = "/statemanager/history/scenario/s1/";
        let old = format!("{prefix}00000000000000000007");
        put(store.as_ref(), &old, "from a previous life").await;
        let (engine, _) = start(store.clone(), config()).await;
        let h = engine.handle();
        let answer = h.change_state(scenario("s1", "Idle", "Waiting")).await;
        assert_success(answer.code, &answer.message);
        let answer = h.change_state(scenario("s1", "Waiting", "Satisfied")).await;
        assert_success(answer.code, &answer.message);
        let (records, _) = state_store::get_all(store.as_ref(), prefix, 100)
            .await
            .unwrap();
        let values: Vec<String> = records
            .iter()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
            .collect();
        assert_eq!(values.len(), 3, "{values:?}");
        assert_eq!(records[0].key, old, "the old record is kept, and first");
        assert_eq!(values[0], "from a previous life");
        assert!(
            values[1].contains("Waiting") && values[2].contains("Satisfied"),
            "{values:?}"
        );
        // A new resource's history is written without reading it first.
        let answer = h.change_state(scenario("s2", "Idle", "Waiting")).await;
        assert_success(answer.code, &answer.message);
        let history = h
            .history(ResourceKind::Scenario, "s2", HistoryQuery::default())
            .await
            .unwrap();
        assert_eq!(history.len(), 1);
        engine.shutdown().await;
    }

    /// A container that vanished from its node's report loses its key; its
    /// model (still defined) is Dead after the grace period.
    pub async fn vanished_containers(store: Arc<dyn StateStore>) {
        define_infotainment(store.as_ref()).await;
        let (engine, _) = start(store.clone(), config()).await;
        let h = engine.handle();
        let both = report(
            "n1",
            vec![
                container("model-m1", &[("Status", "running")]),
                container("model-m2", &[("Status", "running")]),
            ],
        );
        assert_success(h.report_containers(both).await.code, "both");
        let one = report("n1", vec![container("model-m2", &[("Status", "running")])]);
        assert_success(h.report_containers(one).await.code, "one");
        assert_eq!(
            value(store.as_ref(), "/container/model-m1/state").await,
            None
        );
        eventually(store.as_ref(), "/model/m1/state", Some("Dead")).await;
        eventually(store.as_ref(), "/package/p1/state", Some("Degraded")).await;
        engine.shutdown().await;
    }

    /// ETCD-CONTRACT step 2: an annotation or config key holding an invalid
    /// model name is skipped as before (the container maps by the next
    /// source, or to no model) and counted in `invalid_model_names`.
    pub async fn invalid_model_names_are_counted(store: Arc<dyn StateStore>) {
        define_infotainment(store.as_ref()).await;
        let (engine, _) = start(store.clone(), config()).await;
        let h = engine.handle();
        let metrics = engine.metrics();
        let mut by_prefix = container("model-m1", &[("Status", "running")]);
        by_prefix
            .annotations
            .insert("model".into(), "bad/name".into());
        let mut stray = container("stray", &[("Status", "running")]);
        stray.config.insert("model".into(), "..".into());
        let mut fine = container("anything", &[("Status", "running")]);
        fine.annotations
            .insert("pullpiri.model".into(), "m2".into());
        for _ in 0..2 {
            let answer = h
                .report_containers(report(
                    "n1",
                    vec![by_prefix.clone(), stray.clone(), fine.clone()],
                ))
                .await;
            assert_success(answer.code, &answer.message);
        }
        assert_eq!(
            metrics.invalid_model_names.load(Ordering::SeqCst),
            4,
            "two names, twice"
        );
        assert_eq!(metrics.unmapped_containers.load(Ordering::SeqCst), 2);
        for (key, expected) in [
            ("/container/model-m1/state", Some("Running")),
            ("/container/anything/state", Some("Running")),
            ("/container/stray/state", None),
            ("/model/m1/state", Some("Running")),
            ("/model/m2/state", Some("Running")),
            ("/package/p1/state", Some("Running")),
        ] {
            assert_eq!(
                value(store.as_ref(), key).await.as_deref(),
                expected,
                "{key}"
            );
        }
        engine.shutdown().await;
    }
}

mod invalid_model_names {
    //! The warning about invalid model names, read from the log (memory store).

    use super::*;

    /// Log lines written while the guard lives (this thread: the tests run
    /// on a current-thread runtime, the owner task included).
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn warnings(&self, text: &str) -> usize {
            let log = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            log.lines()
                .filter(|l| l.contains("WARN") && l.contains(text))
                .count()
        }
    }

    /// The counter counts every report; the warning comes once per
    /// container while its name stays invalid, and again after it was fixed
    /// and broke anew.
    #[tokio::test]
    async fn are_warned_about_once_per_container() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let store = memory();
        define_infotainment(store.as_ref()).await;
        let (engine, _) = start(store.clone(), config()).await;
        let h = engine.handle();
        let metrics = engine.metrics();
        let with = |value: &str| {
            let mut c = container("model-m1", &[("Status", "running")]);
            c.annotations.insert("model".into(), value.into());
            report("n1", vec![c])
        };
        let warned = "not a valid resource name";
        for (value, counted, warnings) in [
            ("bad/name", 1, 1),
            ("bad/name", 2, 1),
            ("bad/name", 3, 1),
            ("m1", 3, 1),
            ("bad/name", 4, 2),
        ] {
            let answer = h.report_containers(with(value)).await;
            assert_success(answer.code, &answer.message);
            assert_eq!(
                metrics.invalid_model_names.load(Ordering::SeqCst),
                counted,
                "{value}"
            );
            assert_eq!(captured.warnings(warned), warnings, "{value}");
        }
        // Another node's container is another warning.
        let mut c = container("model-m2", &[("Status", "running")]);
        c.annotations.insert("model".into(), "x y".into());
        let answer = h.report_containers(report("n2", vec![c])).await;
        assert_success(answer.code, &answer.message);
        assert_eq!(captured.warnings(warned), 3);
        assert_eq!(
            value(store.as_ref(), "/model/m1/state").await.as_deref(),
            Some("Running")
        );
        engine.shutdown().await;
    }
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod memory_store {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    bodies::$name(memory()).await;
                }
            )*
        }
        mod etcd_store {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    let (_etcd, store) = etcd().await;
                    bodies::$name(store).await;
                }
            )*
        }
    };
}

on_both_stores!(
    scenario_lifecycle,
    invalid_requests_write_nothing,
    one_reconcile_per_entry_into_error,
    reconcile_survives_an_action_controller_outage,
    restart_redelivers_and_validates,
    concurrent_requests_serialize,
    group_commit_batches,
    history_is_bounded,
    subscribers_see_committed_transitions,
    new_definitions_start_idle,
    vanished_containers,
    large_inputs_are_split_into_several_transactions,
    history_outliving_its_state_key_is_continued,
    invalid_model_names_are_counted,
);
