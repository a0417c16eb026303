//! End-to-end: the real `statemanager` binary on a real etcd, talking real
//! gRPC to the test and to an in-test ActionController. Each test reads like
//! the requirement it checks (WIRE-PROTOCOL.md, STATE-MACHINES.md,
//! ETCD-CONTRACT.md), and the daemon's promises when something dies: a
//! restart after SIGKILL loses nothing it acknowledged, and a reconcile waits
//! out an ActionController outage.

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use support::{
    ActionController, Daemon, Keys, StateManagerConnection, container, etcd, podman_state,
    reconcile_failed_to_running, report,
};
use transport_grpc::proto::statemanager as sm;
use transport_grpc::proto::statemanager::{ErrorCode, ResourceType};

const SCENARIO: ResourceType = ResourceType::Scenario;
const PACKAGE: ResourceType = ResourceType::Package;
const MODEL: ResourceType = ResourceType::Model;
const OUTBOX: &str = "/statemanager/outbox/";

#[tokio::test]
async fn a_scenario_goes_idle_waiting_satisfied_allowed_completed_in_lowercase_or_enum_spelling_and_each_success_is_already_in_etcd()
 {
    let etcd = etcd();
    let keys = Keys::connect(&etcd).await;
    define_s_driving_p_with_m1_m2(&keys).await;
    let ac = ActionController::start().await;
    let daemon = Daemon::start_on(&etcd, &ac.url()).await;
    let mut sm = daemon.client().await;
    keys.eventually("/scenario/s/state", Some("Idle")).await;

    let steps = [
        ("idle", "waiting", "Waiting"),
        (
            "SCENARIO_STATE_WAITING",
            "SCENARIO_STATE_SATISFIED",
            "Satisfied",
        ),
        ("Satisfied", "allowed", "Allowed"),
        ("SCENARIO_STATE_ALLOWED", "completed", "Completed"),
    ];
    for (i, (current, target, stored)) in steps.into_iter().enumerate() {
        let id = format!("lifecycle-{i}");
        let answer = send(&mut sm, change(SCENARIO as i32, "s", current, target, &id)).await;
        assert_success(&answer);
        assert_eq!(answer.transition_id, id, "the transition id is echoed");
        assert_eq!(
            keys.get("/scenario/s/state").await.as_deref(),
            Some(stored),
            "{current} -> {target}: SUCCESS means it is already in etcd"
        );
    }

    let state = state_of(&mut sm, SCENARIO, "s").await;
    assert_eq!(state.current_state, "Completed");
    let history = history_of(&mut sm, SCENARIO, "s", 0, 0).await;
    let requested: Vec<_> = history
        .iter()
        .filter(|h| h.transition_id.starts_with("lifecycle-"))
        .map(|h| (h.from_state.as_str(), h.to_state.as_str()))
        .collect();
    assert_eq!(
        requested,
        [
            ("Idle", "Waiting"),
            ("Waiting", "Satisfied"),
            ("Satisfied", "Allowed"),
            ("Allowed", "Completed"),
        ],
        "history is oldest first: {history:?}"
    );
    assert!(
        history
            .windows(2)
            .all(|w| w[0].timestamp_ns <= w[1].timestamp_ns),
        "oldest first: {history:?}"
    );
    let last = history.last().expect("a history");
    assert_eq!(
        (last.to_state.as_str(), last.timestamp_ns),
        (state.current_state.as_str(), state.last_transition_time_ns),
        "GetResourceState and the newest history entry agree"
    );
}

#[tokio::test]
async fn invalid_transitions_bad_names_and_unmanaged_resource_types_are_refused_and_nothing_is_written()
 {
    let etcd = etcd();
    let keys = Keys::connect(&etcd).await;
    let ac = ActionController::start().await;
    let daemon = Daemon::start_on(&etcd, &ac.url()).await;
    let mut sm = daemon.client().await;
    let revision = keys.revision().await;

    let refused = [
        (
            SCENARIO as i32,
            "s",
            "Idle",
            "Completed",
            ErrorCode::InvalidStateTransition,
        ),
        (
            SCENARIO as i32,
            "s",
            "idle",
            "SCENARIO_STATE_ALLOWED",
            ErrorCode::InvalidStateTransition,
        ),
        (
            SCENARIO as i32,
            "a/b",
            "Idle",
            "Waiting",
            ErrorCode::InvalidRequest,
        ),
        (
            SCENARIO as i32,
            "",
            "Idle",
            "Waiting",
            ErrorCode::InvalidRequest,
        ),
        (
            SCENARIO as i32,
            "s",
            "Idle",
            "Flying",
            ErrorCode::InvalidRequest,
        ),
        (
            SCENARIO as i32,
            "s",
            "Waiting",
            "waiting",
            ErrorCode::InvalidRequest,
        ),
        (99, "s", "Idle", "Waiting", ErrorCode::InvalidRequest),
        (
            ResourceType::Volume as i32,
            "v",
            "Idle",
            "Waiting",
            ErrorCode::InvalidRequest,
        ),
    ];
    for (i, (kind, name, current, target, code)) in refused.into_iter().enumerate() {
        let id = format!("refused-{i}");
        let answer = send(&mut sm, change(kind, name, current, target, &id)).await;
        assert_eq!(
            answer.error_code, code as i32,
            "type {kind} '{name}' {current} -> {target}: {answer:?}"
        );
        assert!(!answer.message.is_empty(), "a readable message: {answer:?}");
        assert_eq!(answer.transition_id, id, "the transition id is echoed");
    }

    assert_eq!(keys.get("/scenario/s/state").await, None);
    assert_eq!(keys.get("/scenario/a/b/state").await, None);
    assert_eq!(
        keys.revision().await,
        revision,
        "nothing was written to etcd"
    );
    assert_eq!(state_of(&mut sm, SCENARIO, "s").await.current_state, "Idle");
}

#[tokio::test]
async fn package_reaches_degraded_then_error_when_its_models_die_and_the_action_controller_receives_exactly_one_reconcile()
 {
    let etcd = etcd();
    let keys = Keys::connect(&etcd).await;
    define_s_driving_p_with_m1_m2(&keys).await;
    define_barrier(&keys).await;
    let ac = ActionController::start().await;
    let daemon = Daemon::start_on(&etcd, &ac.url()).await;
    let mut sm = daemon.client().await;
    keys.eventually("/package/p/state", Some("Idle")).await;

    report_containers(
        &mut sm,
        report(
            "n1",
            vec![
                container("model-m1", running()),
                container("model-m2", running()),
            ],
        ),
    )
    .await;
    keys.eventually("/container/model-m1/state", Some("Running"))
        .await;
    keys.eventually("/model/m1/state", Some("Running")).await;
    keys.eventually("/package/p/state", Some("Running")).await;

    // m1 is OOM-killed: one model of two Dead.
    report_containers(
        &mut sm,
        report(
            "n1",
            vec![
                container("model-m1", podman_state("exited", 137, true)),
                container("model-m2", running()),
            ],
        ),
    )
    .await;
    keys.eventually("/model/m1/state", Some("Dead")).await;
    keys.eventually("/package/p/state", Some("Degraded")).await;

    // m2 dies too: every model Dead.
    let both_dead = report(
        "n1",
        vec![
            container("model-m1", podman_state("dead", 137, false)),
            container("model-m2", podman_state("exited", 1, false)),
        ],
    );
    report_containers(&mut sm, both_dead.clone()).await;
    keys.eventually("/model/m2/state", Some("Dead")).await;
    keys.eventually("/package/p/state", Some("Error")).await;
    let reconciles = ac.wait_for_reconciles(1, Duration::from_secs(5)).await;
    assert_eq!(
        reconciles,
        [reconcile_failed_to_running("s")],
        "Reconcile{{s, FAILED, RUNNING}}, none for Degraded"
    );
    keys.eventually_count(OUTBOX, 0).await;
    // The healer records the delivery in its incident after the outbox
    // record is gone; wait for that write before measuring.
    keys.eventually_some_value_under("/statemanager/recovery/", "\"phase\":\"Validating\"")
        .await;

    // The same report again: nothing changes, nothing is asked.
    let revision = keys.revision().await;
    report_containers(&mut sm, both_dead).await;
    // Answered after its commit: had it written, the revision would show.
    assert_eq!(
        keys.revision().await,
        revision,
        "an unchanged report writes nothing"
    );
    reconcile_barrier(&mut sm, &ac).await;
    assert_eq!(ac.reconciles().len(), 1, "exactly one Reconcile");
}

#[tokio::test]
async fn a_container_that_exited_with_a_non_zero_exit_code_is_dead_and_so_is_its_model() {
    let etcd = etcd();
    let keys = Keys::connect(&etcd).await;
    define_s_driving_p_with_m1_m2(&keys).await;
    let ac = ActionController::start().await;
    let daemon = Daemon::start_on(&etcd, &ac.url()).await;
    let mut sm = daemon.client().await;
    keys.eventually("/package/p/state", Some("Idle")).await;

    report_containers(
        &mut sm,
        report(
            "n1",
            vec![
                container("model-m1", podman_state("exited", 1, false)),
                container("model-m2", podman_state("exited", 0, false)),
            ],
        ),
    )
    .await;
    keys.eventually("/container/model-m1/state", Some("Dead"))
        .await;
    keys.eventually("/model/m1/state", Some("Dead")).await;
    keys.eventually("/container/model-m2/state", Some("Exited"))
        .await;
    keys.eventually("/model/m2/state", Some("Exited")).await;
    keys.eventually("/package/p/state", Some("Degraded")).await;
    assert_eq!(state_of(&mut sm, MODEL, "m1").await.current_state, "Dead");
}

#[tokio::test]
async fn a_container_missing_from_its_nodes_next_report_loses_its_key_and_its_defined_model_becomes_dead()
 {
    let etcd = etcd();
    let keys = Keys::connect(&etcd).await;
    define_s_driving_p_with_m1_m2(&keys).await;
    let ac = ActionController::start().await;
    let daemon = Daemon::start_on(&etcd, &ac.url()).await;
    let mut sm = daemon.client().await;
    keys.eventually("/package/p/state", Some("Idle")).await;

    report_containers(
        &mut sm,
        report(
            "n1",
            vec![
                container("model-m1", running()),
                container("model-m2", running()),
            ],
        ),
    )
    .await;
    keys.eventually("/container/model-m1/state", Some("Running"))
        .await;
    keys.eventually("/package/p/state", Some("Running")).await;

    report_containers(
        &mut sm,
        report("n1", vec![container("model-m2", running())]),
    )
    .await;
    keys.eventually("/container/model-m1/state", None).await;
    keys.eventually("/model/m1/state", Some("Dead")).await;
    keys.eventually("/package/p/state", Some("Degraded")).await;
    assert_eq!(
        keys.get("/container/model-m2/state").await.as_deref(),
        Some("Running")
    );
    assert_eq!(state_of(&mut sm, MODEL, "m1").await.current_state, "Dead");
}

#[tokio::test]
async fn a_pod_container_named_model_dash_container_is_mapped_to_its_model_through_the_model_definition()
 {
    let etcd = etcd();
    let keys = Keys::connect(&etcd).await;
    let ac = ActionController::start().await;
    let daemon = Daemon::start_on(&etcd, &ac.url()).await;
    let mut sm = daemon.client().await;

    // The ApiServer stores the definitions while the daemon runs.
    keys.define_model("voice-assistant", &["asr", "tts"]).await;
    keys.define_package("infotainment", &[("voice-assistant", "hpc-1")])
        .await;
    keys.define_scenario("voice", "infotainment").await;
    keys.eventually("/package/infotainment/state", Some("Idle"))
        .await;
    keys.eventually("/scenario/voice/state", Some("Idle")).await;

    let pod = |state: fn() -> std::collections::HashMap<String, String>| {
        report(
            "hpc-1",
            vec![
                container("voice-assistant-asr", state()),
                container("voice-assistant-tts", state()),
            ],
        )
    };
    report_containers(&mut sm, pod(running)).await;
    keys.eventually("/container/voice-assistant-asr/state", Some("Running"))
        .await;
    keys.eventually("/model/voice-assistant/state", Some("Running"))
        .await;
    keys.eventually("/package/infotainment/state", Some("Running"))
        .await;

    report_containers(&mut sm, pod(|| podman_state("paused", 0, false))).await;
    keys.eventually("/model/voice-assistant/state", Some("Paused"))
        .await;
    keys.eventually("/package/infotainment/state", Some("Paused"))
        .await;
    assert_eq!(
        state_of(&mut sm, MODEL, "voice-assistant")
            .await
            .current_state,
        "Paused"
    );
}

#[tokio::test]
async fn a_reconcile_for_a_package_that_entered_error_while_the_action_controller_was_down_arrives_once_it_is_up()
 {
    let etcd = etcd();
    let keys = Keys::connect(&etcd).await;
    define_s_driving_p_with_m1_m2(&keys).await;
    define_barrier(&keys).await;
    let mut ac = ActionController::down();
    let daemon = Daemon::start_on(&etcd, &ac.url()).await;
    let mut sm = daemon.client().await;
    keys.eventually("/package/p/state", Some("Idle")).await;

    report_containers(
        &mut sm,
        report(
            "n1",
            vec![
                container("model-m1", running()),
                container("model-m2", running()),
            ],
        ),
    )
    .await;
    keys.eventually("/package/p/state", Some("Running")).await;
    let dead = || podman_state("dead", 137, false);
    report_containers(
        &mut sm,
        report(
            "n1",
            vec![container("model-m1", dead()), container("model-m2", dead())],
        ),
    )
    .await;
    keys.eventually("/package/p/state", Some("Error")).await;
    keys.eventually_count(OUTBOX, 1).await;

    // The daemon keeps processing while the ActionController is down.
    let answer = send(
        &mut sm,
        change(SCENARIO as i32, "s", "Idle", "Waiting", "during-outage"),
    )
    .await;
    assert_success(&answer);
    // The daemon tries, fails and keeps the request while it is down.
    let started = Instant::now();
    while daemon.metric("statemanager_reconcile_failures_total").await < 2.0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "two failed delivery attempts within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(keys.keys_under(OUTBOX).await.len(), 1, "still pending");
    assert_eq!(ac.reconciles(), []);

    ac.up().await;
    let up = Instant::now();
    let reconciles = ac.wait_for_reconciles(1, Duration::from_secs(5)).await;
    assert_eq!(
        reconciles,
        [reconcile_failed_to_running("s")],
        "delivered within 5 s of the ActionController coming up"
    );
    eprintln!(
        "reconcile delivered {:?} after the ActionController came up",
        up.elapsed()
    );
    keys.eventually_count(OUTBOX, 0).await;
    reconcile_barrier(&mut sm, &ac).await;
    assert_eq!(ac.reconciles().len(), 1, "exactly once");
}

#[tokio::test]
async fn after_a_sigkill_and_a_restart_on_the_same_etcd_states_are_intact_transitions_are_still_validated_and_the_pending_reconcile_is_delivered()
 {
    let etcd = etcd();
    let keys = Keys::connect(&etcd).await;
    define_s_driving_p_with_m1_m2(&keys).await;
    define_barrier(&keys).await;
    let mut ac = ActionController::down();
    let first = Daemon::start_on(&etcd, &ac.url()).await;
    let mut sm = first.client().await;
    keys.eventually("/package/p/state", Some("Idle")).await;

    assert_success(
        &send(
            &mut sm,
            change(SCENARIO as i32, "s", "Idle", "Waiting", "before-kill"),
        )
        .await,
    );
    let dead = || podman_state("dead", 137, false);
    report_containers(
        &mut sm,
        report(
            "n1",
            vec![container("model-m1", dead()), container("model-m2", dead())],
        ),
    )
    .await;
    keys.eventually("/package/p/state", Some("Error")).await;
    keys.eventually_count(OUTBOX, 1).await;
    first.kill9();

    ac.up().await;
    let second = Daemon::start_on(&etcd, &ac.url()).await;
    let mut sm = second.client().await;
    assert_eq!(
        state_of(&mut sm, SCENARIO, "s").await.current_state,
        "Waiting"
    );
    assert_eq!(state_of(&mut sm, PACKAGE, "p").await.current_state, "Error");
    assert_eq!(state_of(&mut sm, MODEL, "m1").await.current_state, "Dead");

    // Validated against the stored Waiting, not a forgotten Idle.
    let answer = send(
        &mut sm,
        change(SCENARIO as i32, "s", "Waiting", "Allowed", "after-kill-1"),
    )
    .await;
    assert_eq!(
        answer.error_code,
        ErrorCode::InvalidStateTransition as i32,
        "Waiting -> Allowed is not in the table: {answer:?}"
    );
    assert_eq!(
        keys.get("/scenario/s/state").await.as_deref(),
        Some("Waiting")
    );
    let answer = send(
        &mut sm,
        change(SCENARIO as i32, "s", "Waiting", "Satisfied", "after-kill-2"),
    )
    .await;
    assert_success(&answer);
    assert_eq!(
        keys.get("/scenario/s/state").await.as_deref(),
        Some("Satisfied")
    );

    let reconciles = ac.wait_for_reconciles(1, Duration::from_secs(5)).await;
    assert_eq!(
        reconciles,
        [reconcile_failed_to_running("s")],
        "the reconcile pending at the kill is delivered by the restarted daemon"
    );
    keys.eventually_count(OUTBOX, 0).await;
    reconcile_barrier(&mut sm, &ac).await;
    assert_eq!(ac.reconciles().len(), 1, "exactly once");
}

#[tokio::test]
async fn resources_are_listed_by_state_in_any_spelling() {
    let etcd = etcd();
    let keys = Keys::connect(&etcd).await;
    keys.define_package("p", &[("m1", "n1")]).await;
    keys.define_scenario("idle-one", "p").await;
    let ac = ActionController::start().await;
    let daemon = Daemon::start_on(&etcd, &ac.url()).await;
    let mut sm = daemon.client().await;
    keys.eventually("/scenario/idle-one/state", Some("Idle"))
        .await;

    for (name, targets) in [
        ("waiting-one", &["Waiting"][..]),
        ("waiting-two", &["Waiting"][..]),
        ("satisfied-one", &["Waiting", "Satisfied"][..]),
    ] {
        for target in targets {
            assert_success(&send(&mut sm, change(SCENARIO as i32, name, "", target, name)).await);
        }
    }

    let (waiting, total) = names_in_state(&mut sm, SCENARIO, "waiting").await;
    assert_eq!(waiting, ["waiting-one", "waiting-two"]);
    assert_eq!(total, 2);
    let (satisfied, _) = names_in_state(&mut sm, SCENARIO, "SCENARIO_STATE_SATISFIED").await;
    assert_eq!(satisfied, ["satisfied-one"]);
    let (idle, _) = names_in_state(&mut sm, SCENARIO, "Idle").await;
    assert_eq!(
        idle,
        ["idle-one"],
        "a defined scenario with no transition is Idle"
    );
    let (packages, _) = names_in_state(&mut sm, PACKAGE, "PACKAGE_STATE_IDLE").await;
    assert_eq!(packages, ["p"]);
    let (none, total) = names_in_state(&mut sm, SCENARIO, "Completed").await;
    assert!(none.is_empty() && total == 0, "{none:?} {total}");
}

#[tokio::test]
async fn history_is_oldest_first_and_a_limit_or_start_time_keeps_the_newest_entries() {
    let etcd = etcd();
    let ac = ActionController::start().await;
    let daemon = Daemon::start_on(&etcd, &ac.url()).await;
    let mut sm = daemon.client().await;
    for (i, target) in ["Waiting", "Satisfied", "Allowed", "Completed"]
        .into_iter()
        .enumerate()
    {
        assert_success(
            &send(
                &mut sm,
                change(SCENARIO as i32, "h", "", target, &format!("h-{i}")),
            )
            .await,
        );
    }

    let steps = |history: &[sm::StateTransitionHistory]| {
        history
            .iter()
            .map(|h| format!("{} {}", h.transition_id, h.to_state))
            .collect::<Vec<_>>()
    };
    let all = history_of(&mut sm, SCENARIO, "h", 0, 0).await;
    assert_eq!(
        steps(&all),
        [
            "h-0 Waiting",
            "h-1 Satisfied",
            "h-2 Allowed",
            "h-3 Completed"
        ],
        "oldest first"
    );
    assert!(
        all.iter().all(|h| h.success && h.timestamp_ns > 0),
        "{all:?}"
    );

    let limited = history_of(&mut sm, SCENARIO, "h", 0, 2).await;
    assert_eq!(steps(&limited), ["h-2 Allowed", "h-3 Completed"]);
    let since = history_of(&mut sm, SCENARIO, "h", all[2].timestamp_ns, 0).await;
    assert_eq!(steps(&since), ["h-2 Allowed", "h-3 Completed"]);

    // STATE-MACHINES §4: a scenario with no record is Idle, so its first
    // transition is recorded as Idle -> Waiting.
    let edges: Vec<_> = all
        .iter()
        .map(|h| format!("{}->{}", h.from_state, h.to_state))
        .collect();
    assert_eq!(
        edges,
        [
            "Idle->Waiting",
            "Waiting->Satisfied",
            "Satisfied->Allowed",
            "Allowed->Completed"
        ]
    );
}

#[tokio::test]
async fn a_subscriber_receives_the_changes_of_its_resource_type_made_after_its_headers_arrived() {
    let etcd = etcd();
    let keys = Keys::connect(&etcd).await;
    keys.define_package("p", &[("m1", "n1")]).await;
    keys.define_scenario("s", "p").await;
    let ac = ActionController::start().await;
    let daemon = Daemon::start_on(&etcd, &ac.url()).await;
    let mut sm = daemon.client().await;
    keys.eventually("/scenario/s/state", Some("Idle")).await;

    let subscribe = |kind: ResourceType| {
        let mut sm = sm.clone();
        async move {
            sm.subscribe_to_state_changes(sm::StateChangeSubscriptionRequest {
                resource_type: kind as i32,
                ..Default::default()
            })
            .await
            .expect("subscribed: the headers arrived")
            .into_inner()
        }
    };
    let mut scenarios = subscribe(SCENARIO).await;
    let mut packages = subscribe(PACKAGE).await;

    // A model and a package change first, then a scenario change.
    report_containers(
        &mut sm,
        report("n1", vec![container("model-m1", running())]),
    )
    .await;
    keys.eventually("/package/p/state", Some("Running")).await;
    assert_success(
        &send(
            &mut sm,
            change(SCENARIO as i32, "s", "Idle", "Waiting", "watched"),
        )
        .await,
    );

    let event = next_event(&mut scenarios).await;
    assert_eq!(
        event.event_type,
        sm::EventType::StateChange as i32,
        "{event:?}"
    );
    let scenario = event.state_change.expect("the change");
    assert_eq!(
        (scenario.resource_type, scenario.resource_name.as_str()),
        (SCENARIO as i32, "s"),
        "the package change is filtered out of a scenario subscription"
    );
    assert_eq!(
        (
            scenario.current_state.as_str(),
            scenario.target_state.as_str()
        ),
        ("Idle", "Waiting")
    );
    assert_eq!(scenario.transition_id, "watched");
    assert_eq!(scenario.source, "FilterGateway");

    let event = next_event(&mut packages).await;
    let package = event.state_change.expect("the change");
    assert_eq!(
        (
            package.resource_type,
            package.resource_name.as_str(),
            package.target_state.as_str()
        ),
        (PACKAGE as i32, "p", "Running"),
        "the model change is filtered out of a package subscription: {package:?}"
    );
}

#[tokio::test]
async fn sigterm_shuts_the_daemon_down_with_exit_code_0_even_with_a_subscriber_connected() {
    let etcd = etcd();
    let keys = Keys::connect(&etcd).await;
    let ac = ActionController::start().await;
    let daemon = Daemon::start_on(&etcd, &ac.url()).await;
    let mut sm = daemon.client().await;
    assert_success(
        &send(
            &mut sm,
            change(SCENARIO as i32, "s", "Idle", "Waiting", "before-term"),
        )
        .await,
    );
    let mut events = sm
        .subscribe_to_state_changes(sm::StateChangeSubscriptionRequest::default())
        .await
        .expect("subscribed")
        .into_inner();

    let status = daemon.sigterm().await;
    assert_eq!(
        status.code(),
        Some(0),
        "graceful shutdown exits 0: {status}"
    );
    let end = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("the subscription ends with the daemon");
    assert!(
        matches!(end, None | Some(Err(_))),
        "no event after shutdown: {end:?}"
    );
    assert_eq!(
        keys.get("/scenario/s/state").await.as_deref(),
        Some("Waiting")
    );
}

#[test]
fn help_hides_the_etcd_password_given_in_the_environment() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_statemanager"))
        .arg("--help")
        .env("STATEMANAGER_ETCD_PASSWORD", "hunter2-secret")
        .output()
        .expect("statemanager --help runs");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("--etcd-password"), "{help}");
    assert!(!help.contains("hunter2"), "{help}");
}

/// The daemon's flags for the embedded store in `dir` (no store flag: the
/// default).
fn embedded_args(dir: &std::path::Path, action_controller: &str) -> Vec<String> {
    [
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--data-dir",
        &dir.display().to_string(),
        "--action-controller",
        action_controller,
    ]
    .map(str::to_owned)
    .to_vec()
}

#[tokio::test]
async fn with_no_store_flag_states_survive_sigterm_and_sigkill_in_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ac = ActionController::start().await;
    let args = embedded_args(&data, &ac.url());

    let daemon = Daemon::start(&args).await;
    assert!(
        daemon.output().contains(&format!(
            "keeping state in the embedded store {}",
            data.join("state.redb").display()
        )),
        "the start-up log says where the state lives:\n{}",
        daemon.output()
    );
    assert_eq!(
        daemon
            .metric("statemanager_build_info{version=\"0.1.0\",store=\"embedded\"}")
            .await,
        1.0
    );
    let mut sm = daemon.client().await;
    assert_success(
        &send(
            &mut sm,
            change(SCENARIO as i32, "s", "idle", "waiting", "t-1"),
        )
        .await,
    );
    report_containers(
        &mut sm,
        report(
            "n1",
            vec![container("model-m1", podman_state("running", 0, false))],
        ),
    )
    .await;
    assert_eq!(
        state_of(&mut sm, MODEL, "m1").await.current_state,
        "Running"
    );
    assert!(daemon.sigterm().await.success());

    let daemon = Daemon::start(&args).await;
    let mut sm = daemon.client().await;
    assert_eq!(
        state_of(&mut sm, SCENARIO, "s").await.current_state,
        "Waiting"
    );
    assert_eq!(
        state_of(&mut sm, MODEL, "m1").await.current_state,
        "Running"
    );
    // The rules hold across the restart: Waiting does not go to Completed.
    let refused = send(
        &mut sm,
        change(SCENARIO as i32, "s", "waiting", "completed", "t-2"),
    )
    .await;
    assert_eq!(refused.error_code, ErrorCode::InvalidStateTransition as i32);
    assert_success(
        &send(
            &mut sm,
            change(SCENARIO as i32, "s", "waiting", "satisfied", "t-3"),
        )
        .await,
    );
    daemon.kill9();

    let daemon = Daemon::start(&args).await;
    let mut sm = daemon.client().await;
    assert_eq!(
        state_of(&mut sm, SCENARIO, "s").await.current_state,
        "Satisfied"
    );
    let history = history_of(&mut sm, SCENARIO, "s", 0, 0).await;
    let ids: Vec<&str> = history.iter().map(|h| h.transition_id.as_str()).collect();
    assert_eq!(
        ids,
        ["t-1", "t-3"],
        "both acknowledged transitions, in order"
    );
}

#[tokio::test]
async fn a_second_daemon_on_the_same_data_dir_fails_at_start_up_naming_the_dir() {
    let dir = tempfile::tempdir().unwrap();
    let ac = ActionController::start().await;
    let args = embedded_args(dir.path(), &ac.url());
    let first = Daemon::start(&args).await;

    let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_statemanager"))
        .args(&args)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the second daemon starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the second daemon did not exit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{status}: {stderr}");
    assert!(
        stderr.contains(&format!(
            "the data directory {} is in use",
            dir.path().display()
        )),
        "{stderr}"
    );
    // The first one is unharmed.
    let mut sm = first.client().await;
    assert_success(
        &send(
            &mut sm,
            change(SCENARIO as i32, "s", "idle", "waiting", "t-1"),
        )
        .await,
    );
}

fn change(
    resource_type: i32,
    name: &str,
    current: &str,
    target: &str,
    transition_id: &str,
) -> sm::StateChange {
    sm::StateChange {
        resource_type,
        resource_name: name.into(),
        current_state: current.into(),
        target_state: target.into(),
        transition_id: transition_id.into(),
        timestamp_ns: 1_756_720_800_000_000_000,
        source: "FilterGateway".into(),
    }
}

async fn send(sm: &mut StateManagerConnection, change: sm::StateChange) -> sm::StateChangeResponse {
    sm.send_state_change(change)
        .await
        .expect("SendStateChange answers")
        .into_inner()
}

fn assert_success(answer: &sm::StateChangeResponse) {
    assert_eq!(
        answer.error_code,
        ErrorCode::Success as i32,
        "expected SUCCESS: {answer:?}"
    );
}

async fn report_containers(
    sm: &mut StateManagerConnection,
    list: transport_grpc::proto::monitoringserver::ContainerList,
) {
    sm.send_changed_container_list(list)
        .await
        .expect("SendChangedContainerList accepts the report");
}

async fn state_of(
    sm: &mut StateManagerConnection,
    kind: ResourceType,
    name: &str,
) -> sm::ResourceState {
    let answer = sm
        .get_resource_state(sm::ResourceStateRequest {
            resource_type: kind as i32,
            resource_name: name.into(),
        })
        .await
        .expect("GetResourceState answers")
        .into_inner();
    assert!(
        answer.success,
        "GetResourceState {name}: {}",
        answer.message
    );
    answer.resource_state.expect("a resource state")
}

async fn history_of(
    sm: &mut StateManagerConnection,
    kind: ResourceType,
    name: &str,
    start_time_ns: i64,
    limit: i32,
) -> Vec<sm::StateTransitionHistory> {
    let answer = sm
        .get_resource_state_history(sm::ResourceStateHistoryRequest {
            resource_type: kind as i32,
            resource_name: name.into(),
            start_time_ns,
            end_time_ns: 0,
            limit,
        })
        .await
        .expect("GetResourceStateHistory answers")
        .into_inner();
    assert!(answer.success, "history of {name}: {}", answer.message);
    answer.history
}

async fn names_in_state(
    sm: &mut StateManagerConnection,
    kind: ResourceType,
    state: &str,
) -> (Vec<String>, i32) {
    let answer = sm
        .list_resources_by_state(sm::ListResourcesByStateRequest {
            resource_type: kind as i32,
            state: state.into(),
            ..Default::default()
        })
        .await
        .expect("ListResourcesByState answers")
        .into_inner();
    assert!(
        answer.success,
        "list {kind:?} in {state}: {}",
        answer.message
    );
    let mut names: Vec<String> = answer
        .resources
        .into_iter()
        .map(|r| r.resource_name)
        .collect();
    names.sort();
    (names, answer.total_count)
}

async fn next_event(events: &mut tonic::Streaming<sm::StateChangeEvent>) -> sm::StateChangeEvent {
    tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("an event within 5 s")
        .expect("the stream is open")
        .expect("not an error")
}

/// Scenario `s` drives package `p` = {`m1`, `m2`} on node `n1`; the
/// containers are named `model-m1` and `model-m2`.
async fn define_s_driving_p_with_m1_m2(keys: &Keys) {
    keys.define_package("p", &[("m1", "n1"), ("m2", "n1")])
        .await;
    keys.define_scenario("s", "p").await;
}

/// Scenario `barrier` drives package `barrier` = {`barrier`} on node
/// `barrier`; its container is `model-barrier`. Defined before the daemon
/// starts, so that the daemon knows it from its first load.
async fn define_barrier(keys: &Keys) {
    keys.define_package("barrier", &[("barrier", "barrier")])
        .await;
    keys.define_scenario("barrier", "barrier").await;
}

/// Returns once every Reconcile the daemon was asked for before this call
/// has reached `ac`: reports the barrier's container dead, which drives
/// package `barrier` into Error, and takes the barrier's Reconcile out of
/// `ac`'s record. The daemon answers a report after handing the reconciles
/// it causes to its outbox, which delivers them in that order while the
/// ActionController is up: a process cannot be paused, but it can be made
/// to show that it is done. Once per daemon, after [`define_barrier`].
async fn reconcile_barrier(sm: &mut StateManagerConnection, ac: &ActionController) {
    report_containers(
        sm,
        report(
            "barrier",
            vec![container("model-barrier", podman_state("dead", 137, false))],
        ),
    )
    .await;
    ac.take_reconcile("barrier", Duration::from_secs(5))
        .await
        .expect("the barrier's Reconcile arrives within 5 s");
}

fn running() -> std::collections::HashMap<String, String> {
    podman_state("running", 0, false)
}

/// A store outage neither hangs callers nor writes what was answered
/// unwritten: with etcd frozen (SIGSTOP), every request is answered
/// RESOURCE_UNAVAILABLE within the commit timeout, or within its own gRPC
/// deadline when that is sooner, and a request answered "nothing was
/// written" is never written after etcd resumes.
#[tokio::test]
async fn with_etcd_frozen_every_request_is_answered_within_its_deadline_and_nothing_answered_unwritten_appears_later()
 {
    let etcd = etcd();
    let keys = Keys::connect(&etcd).await;
    let ac = ActionController::start().await;
    let mut args = Daemon::args(&etcd, &ac.url());
    args.push("--commit-timeout=1s".into());
    let daemon = Daemon::start(&args).await;
    let sm = daemon.client().await;
    // Warm: the daemon has committed once.
    assert_success(
        &send(
            &mut sm.clone(),
            change(SCENARIO as i32, "warm", "Idle", "Waiting", "w"),
        )
        .await,
    );

    etcd.pause().expect("SIGSTOP etcd");
    let commit_timeout = Duration::from_secs(1);
    let short = Duration::from_millis(400);
    let callers: Vec<_> = (0..16)
        .map(|k| {
            let mut sm = sm.clone();
            // Half the callers have a deadline of their own, sooner than
            // the commit timeout; the others a later one.
            let deadline = if k % 2 == 0 {
                short
            } else {
                Duration::from_secs(10)
            };
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(30 * k)).await;
                let mut request = tonic::Request::new(change(
                    SCENARIO as i32,
                    &format!("s{k}"),
                    "Idle",
                    "Waiting",
                    &format!("t{k}"),
                ));
                request.set_timeout(deadline);
                let asked = Instant::now();
                let answer = sm.send_state_change(request).await;
                (k, answer, asked.elapsed(), deadline.min(commit_timeout))
            })
        })
        .collect();
    let mut unwritten = Vec::new();
    for caller in callers {
        let (k, answer, waited, limit) = caller.await.unwrap();
        let answer = answer
            .unwrap_or_else(|status| panic!("s{k}: a gRPC error after {waited:?}: {status}"))
            .into_inner();
        assert_eq!(
            answer.error_code,
            ErrorCode::ResourceUnavailable as i32,
            "s{k}: {answer:?}"
        );
        assert!(
            // The engine's own bound (+100 ms) is checked exactly with paused
            // time in engine/tests/deadlines.rs; a real process on a loaded
            // test machine gets more room for scheduling.
            waited <= limit + Duration::from_millis(300),
            "s{k}: answered after {waited:?}, limit {limit:?}"
        );
        if answer.message.contains("nothing was written") {
            unwritten.push(k);
        }
    }
    assert!(!unwritten.is_empty(), "some requests were still queued");

    etcd.resume().expect("SIGCONT etcd");
    let later = tonic::Request::new(change(SCENARIO as i32, "later", "Idle", "Waiting", "l"));
    let mut answered = None;
    for _ in 0..50 {
        let answer = sm.clone().send_state_change(later.get_ref().clone()).await;
        if let Ok(answer) = answer
            && answer.get_ref().error_code == ErrorCode::Success as i32
        {
            answered = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        answered.is_some(),
        "the daemon commits again after etcd resumed"
    );
    for k in unwritten {
        assert_eq!(
            keys.get(&format!("/scenario/s{k}/state")).await,
            None,
            "s{k} was answered 'nothing was written'"
        );
    }
}
