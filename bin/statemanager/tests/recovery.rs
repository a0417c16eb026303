//! End-to-end self-healing (RECOVERY.md §2–§3): the real daemon on a real
//! etcd, an in-test ActionController that refuses its first calls, and a
//! strategy table from the TOML file with a 1 s validation, so the whole
//! PackageError ladder runs in seconds.

mod support;

use std::time::{Duration, Instant};

use engine::IncidentRef;
use statemachine_core::ResourceKind;
use statemachine_core::healing::{Phase, RecoveryAction};
use support::{ActionController, Daemon, Keys, container, etcd, podman_state, report};
use transport_grpc::StateManagerClient;

/// The daemon with `validation-timeout = "1s"` for PackageError.
async fn daemon(
    etcd: &etcd_harness::Etcd,
    ac: &ActionController,
    dir: &tempfile::TempDir,
) -> Daemon {
    let file = dir.path().join("statemanager.toml");
    std::fs::write(
        &file,
        "[recovery.strategy.package_error]\nvalidation-timeout = \"1s\"\n",
    )
    .expect("write the config file");
    let mut args = Daemon::args(etcd, &ac.url());
    args.push("--config".into());
    args.push(file.display().to_string());
    Daemon::start(&args).await
}

async fn set_containers(sm: &mut support::StateManagerConnection, status: &str, exit_code: i32) {
    let state = podman_state(status, exit_code, false);
    sm.send_changed_container_list(report(
        "n1",
        vec![
            container("model-m1", state.clone()),
            container("model-m2", state),
        ],
    ))
    .await
    .expect("the report is taken");
}

/// Waits (20 s at most) until p's incident is in `phase`.
async fn until(client: &StateManagerClient, phase: Phase) -> engine::RecoveryView {
    let deadline = Instant::now() + Duration::from_secs(20);
    let target = IncidentRef::Resource(ResourceKind::Package, "p".into());
    let mut last = None;
    while Instant::now() < deadline {
        if let Ok(Some(view)) = client.recovery_status(&target).await {
            if view.incident.phase == phase {
                return view;
            }
            last = Some(view.incident);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("p's incident never reached {phase:?}: {last:#?}");
}

async fn setup() -> (etcd_harness::Etcd, Keys, ActionController) {
    let etcd = etcd();
    let keys = Keys::connect(&etcd).await;
    keys.define_package("p", &[("m1", "n1"), ("m2", "n1")])
        .await;
    keys.define_scenario("s", "p").await;
    let ac = ActionController::start().await;
    (etcd, keys, ac)
}

#[tokio::test]
async fn a_package_kept_in_error_walks_the_whole_ladder_with_exactly_the_documented_calls_and_ends_failed()
 {
    let (etcd, keys, ac) = setup().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let daemon = daemon(&etcd, &ac, &dir).await;
    let mut sm = daemon.client().await;
    let client = StateManagerClient::connect(&format!("http://{}", daemon.address))
        .await
        .expect("connect");
    ac.fail_next(2);
    set_containers(&mut sm, "running", 0).await;
    keys.eventually("/package/p/state", Some("Running")).await;
    set_containers(&mut sm, "exited", 1).await;
    keys.eventually("/package/p/state", Some("Error")).await;

    let failed = until(&client, Phase::Failed).await;
    assert_eq!(
        ac.calls(),
        [
            "Reconcile(s) refused",
            "Reconcile(s) refused",
            "Reconcile(s)",
            "Reconcile(s)",
            "TriggerAction(s)",
        ],
        "the first Restart retried until delivered, the second, then Recreate"
    );
    assert_eq!(
        failed
            .incident
            .steps
            .iter()
            .map(|s| s.action)
            .collect::<Vec<_>>(),
        [
            RecoveryAction::Restart,
            RecoveryAction::Restart,
            RecoveryAction::Recreate,
            RecoveryAction::Notify,
            RecoveryAction::Isolate,
        ]
    );
    // The incident is durable in etcd, ended Failed.
    let stored = keys
        .get(&format!("/statemanager/recovery/{}", failed.incident.id))
        .await
        .expect("the incident record");
    assert!(stored.contains("\"phase\":\"Failed\""), "{stored}");
    let alerts = client
        .pending_alerts(&engine::AlertQuery::default())
        .await
        .expect("alerts");
    let mut conditions: Vec<_> = alerts.alerts.iter().map(|a| a.condition.clone()).collect();
    conditions.sort();
    assert_eq!(conditions, ["Isolated", "RecoveryFailed", "RecoveryNotify"]);
    // Isolated: nothing more is asked.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(ac.calls().len(), 5);
}

#[tokio::test]
async fn a_package_that_recovers_after_the_second_restart_ends_completed() {
    let (etcd, keys, ac) = setup().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let daemon = daemon(&etcd, &ac, &dir).await;
    let mut sm = daemon.client().await;
    let client = StateManagerClient::connect(&format!("http://{}", daemon.address))
        .await
        .expect("connect");
    set_containers(&mut sm, "running", 0).await;
    keys.eventually("/package/p/state", Some("Running")).await;
    set_containers(&mut sm, "exited", 1).await;
    keys.eventually("/package/p/state", Some("Error")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while ac.calls().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    set_containers(&mut sm, "running", 0).await;
    let done = until(&client, Phase::Completed).await;
    assert_eq!(ac.calls(), ["Reconcile(s)", "Reconcile(s)"]);
    assert_eq!(done.incident.steps.len(), 2);
    let alerts = client
        .pending_alerts(&engine::AlertQuery::default())
        .await
        .expect("alerts");
    assert_eq!(alerts.total, 0);
}
