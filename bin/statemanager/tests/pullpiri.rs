//! End-to-end with current upstream Pullpiri's RocksDbService: the real
//! daemon on its embedded store, bridged to an in-test RocksDbService over
//! real gRPC. Definitions written there drive the cascade; states appear
//! there in upstream's format; the ApiServer's registering request is
//! accepted.

mod support;

use std::time::{Duration, Instant};

use pullpiri_kv::testing::RocksDbServiceDouble;
use support::{ActionController, Daemon, container, podman_state, report};
use transport_grpc::proto::statemanager as sm;
use transport_grpc::proto::statemanager::{ErrorCode, ResourceType};

/// Waits (10 s at most) until the service holds `expected` at `key`.
async fn eventually(service: &RocksDbServiceDouble, key: &str, expected: Option<&str>) {
    let started = Instant::now();
    loop {
        let found = service.get(key);
        if found.as_deref() == expected {
            return;
        }
        assert!(
            started.elapsed() < support::DEADLINE,
            "{key}: expected {expected:?} in the RocksDbService, found {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn change(kind: ResourceType, name: &str, current: &str, target: &str) -> sm::StateChange {
    sm::StateChange {
        resource_type: kind as i32,
        resource_name: name.into(),
        current_state: current.into(),
        target_state: target.into(),
        transition_id: String::new(),
        timestamp_ns: 0,
        source: "ApiServer".into(),
    }
}

#[tokio::test]
async fn definitions_from_the_rocksdb_service_drive_the_cascade_and_states_appear_there_in_upstreams_format()
 {
    let service = RocksDbServiceDouble::start()
        .await
        .expect("the double starts");
    let dir = tempfile::tempdir().unwrap();
    let ac = ActionController::start().await;
    let daemon = Daemon::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--data-dir",
            &dir.path().display().to_string(),
            "--action-controller",
            &ac.url(),
            "--info-failure-grace",
            "0s",
            "--pullpiri-kv",
            &service.url(),
            "--pullpiri-kv-poll",
            "50ms",
        ]
        .map(str::to_owned),
    )
    .await;
    let mut sm = daemon.client().await;

    // The ApiServer registers a scenario: its request may come before the
    // definition reached the daemon, and is accepted either way.
    let answer = sm
        .send_state_change(change(ResourceType::Scenario, "s", "", "idle"))
        .await
        .expect("SendStateChange answers")
        .into_inner();
    assert_eq!(answer.error_code, ErrorCode::Success as i32, "{answer:?}");
    service.put(
        "Scenario/s",
        "apiVersion: v1\nkind: Scenario\nmetadata:\n  name: s\nspec:\n  condition:\n  action: update\n  target: p\n",
    );
    service.put(
        "Package/p",
        "apiVersion: v1\nkind: Package\nmetadata:\n  name: p\nspec:\n  pattern:\n    - type: plain\n  models:\n    - name: m1\n      node: n1\n      resources: {}\n",
    );
    service.put(
        "Model/m1",
        "apiVersion: v1\nkind: Model\nmetadata:\n  name: m1\nspec:\n  containers:\n    - name: app\n      image: app:1\n",
    );
    eventually(&service, "/package/p/state", Some("PACKAGE_STATE_IDLE")).await;
    eventually(&service, "/scenario/s/state", Some("SCENARIO_STATE_IDLE")).await;

    let answer = sm
        .send_state_change(change(ResourceType::Scenario, "s", "idle", "waiting"))
        .await
        .expect("SendStateChange answers")
        .into_inner();
    assert_eq!(answer.error_code, ErrorCode::Success as i32, "{answer:?}");
    eventually(
        &service,
        "/scenario/s/state",
        Some("SCENARIO_STATE_WAITING"),
    )
    .await;

    sm.send_changed_container_list(report(
        "n1",
        vec![container("m1-app", podman_state("running", 0, false))],
    ))
    .await
    .expect("the report is accepted");
    eventually(&service, "/model/m1/state", Some("Running")).await;
    eventually(&service, "/package/p/state", Some("PACKAGE_STATE_RUNNING")).await;

    // The container dies: the package fails in the service's view too.
    sm.send_changed_container_list(report(
        "n1",
        vec![container("m1-app", podman_state("exited", 1, false))],
    ))
    .await
    .expect("the report is accepted");
    eventually(&service, "/package/p/state", Some("PACKAGE_STATE_ERROR")).await;

    // A definition withdrawn there is withdrawn here: the model's keys go.
    service.delete("Model/m1");
    service.delete("Package/p");
    eventually(&service, "/model/m1/state", None).await;
    assert!(
        daemon
            .metric("statemanager_pullpiri_kv_mirrored_keys_total")
            .await
            > 0.0
    );
    assert_eq!(
        daemon.metric("statemanager_pullpiri_kv_connected").await,
        1.0
    );
}
