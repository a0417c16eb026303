//! Definitions flow from the service into our store, by polling.

mod support;

use futures::StreamExt;
use pullpiri_kv::testing::RocksDbServiceDouble;
use state_store::{EventKind, MemoryStore, StateStore};
use support::{Fixture, eventually, eventually_sync, read};

const SCENARIO: &str = "apiVersion: v1\nkind: Scenario\nmetadata:\n  name: s\nspec:\n  target: p\n";
const PACKAGE: &str = "apiVersion: v1\nkind: Package\nmetadata:\n  name: p\nspec:\n  models:\n    - name: m\n      node: hpc\n";

#[tokio::test]
async fn definitions_added_changed_and_deleted_in_the_service_reach_our_store() {
    let mut fx = Fixture::start().await;
    let store = fx.store.clone();

    fx.double.put("Scenario/s", SCENARIO);
    fx.double.put("Package/p", PACKAGE);
    fx.double.put("Model/m", "kind: Model");
    eventually("the three definitions are in our store", || async {
        read(&store, "Scenario/s").await.as_deref() == Some(SCENARIO)
            && read(&store, "Package/p").await.as_deref() == Some(PACKAGE)
            && read(&store, "Model/m").await.as_deref() == Some("kind: Model")
    })
    .await;

    fx.double.put("Model/m", "kind: Model # changed");
    eventually("the changed model is in our store", || async {
        read(&store, "Model/m").await.as_deref() == Some("kind: Model # changed")
    })
    .await;

    assert!(fx.double.delete("Package/p"));
    eventually("the deleted package is gone from our store", || async {
        read(&store, "Package/p").await.is_none()
    })
    .await;
    assert_eq!(read(&store, "Scenario/s").await.as_deref(), Some(SCENARIO));

    // Keys outside the definition prefixes are not read.
    fx.double.put("Volume/v", "kind: Volume");
    fx.double.put("nodes/hpc", "ip");
    let polls = fx.double.calls().len();
    eventually_sync("a few more polls", || fx.double.calls().len() > polls + 6).await;
    assert_eq!(read(&store, "Volume/v").await, None);
    assert_eq!(read(&store, "nodes/hpc").await, None);

    assert!(fx.stats.definitions_applied_total() >= 5);
    assert!(fx.stats.connected());
    assert!(fx.stats.last_sync_unix_seconds() > 0);
    fx.shutdown().await;
}

#[tokio::test]
async fn a_definition_the_service_does_not_have_is_deleted_from_our_store() {
    let store = MemoryStore::default();
    store
        .apply(
            state_store::Batch::new()
                .put("Package/stale", "kind: Package")
                .put("Package/kept", "x"),
        )
        .await
        .unwrap();
    let double = RocksDbServiceDouble::start().await.unwrap();
    double.put("Package/kept", "x");
    let mut fx = Fixture::start_between(store.clone(), double, |_| {});

    eventually("the stale package is deleted", || async {
        read(&store, "Package/stale").await.is_none()
    })
    .await;
    assert_eq!(read(&store, "Package/kept").await.as_deref(), Some("x"));
    fx.shutdown().await;
}

#[tokio::test]
async fn definitions_reach_the_engine_as_watch_events() {
    let mut fx = Fixture::start().await;
    let mut watch = fx.store.watch("Scenario/", 0).await.unwrap();

    fx.double.put("Scenario/s", SCENARIO);
    let put = tokio::time::timeout(support::WITHIN, watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (put.kind, put.kv.key.as_str()),
        (EventKind::Put, "Scenario/s")
    );
    assert_eq!(put.kv.value, SCENARIO.as_bytes());

    fx.double.delete("Scenario/s");
    let deleted = tokio::time::timeout(support::WITHIN, watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (deleted.kind, deleted.kv.key.as_str()),
        (EventKind::Delete, "Scenario/s")
    );
    fx.shutdown().await;
}

#[tokio::test]
async fn no_definition_is_deleted_while_the_service_fails() {
    let mut fx = Fixture::start().await;
    let store = fx.store.clone();
    fx.double.put("Scenario/s", SCENARIO);
    eventually("the scenario is in our store", || async {
        read(&store, "Scenario/s").await.is_some()
    })
    .await;

    fx.double.set_unavailable(true);
    // The definition vanishes from the service while it answers nothing.
    fx.double.delete("Scenario/s");
    let failures = fx.stats.failures_total();
    eventually_sync("several polls failed", || {
        fx.stats.failures_total() >= failures + 4
    })
    .await;
    assert!(!fx.stats.connected());
    assert_eq!(read(&store, "Scenario/s").await.as_deref(), Some(SCENARIO));

    // Back again, the service is authoritative once more.
    fx.double.set_unavailable(false);
    eventually(
        "the scenario is deleted once the service answers",
        || async { read(&store, "Scenario/s").await.is_none() },
    )
    .await;
    fx.shutdown().await;
}

#[tokio::test]
async fn no_definition_is_deleted_while_the_service_is_unreachable() {
    let store = MemoryStore::default();
    store
        .apply(
            state_store::Batch::new()
                .put("Model/m", "kind: Model")
                .put("Scenario/s", SCENARIO),
        )
        .await
        .unwrap();
    let mut double = RocksDbServiceDouble::start().await.unwrap();
    double.stop().await;
    // Down from the start: nothing answers on the port.
    let mut fx = Fixture::start_between(store.clone(), double, |_| {});
    eventually_sync("several polls failed", || fx.stats.failures_total() >= 4).await;
    assert!(!fx.stats.connected());
    assert_eq!(
        read(&store, "Model/m").await.as_deref(),
        Some("kind: Model")
    );
    assert_eq!(read(&store, "Scenario/s").await.as_deref(), Some(SCENARIO));

    fx.double.put("Model/m", "kind: Model # from the service");
    fx.double.restart().await.unwrap();
    eventually("the service's definitions replace ours", || async {
        read(&store, "Model/m").await.as_deref() == Some("kind: Model # from the service")
            && read(&store, "Scenario/s").await.is_none()
    })
    .await;
    // A call that began before the restart may fail after the poll that
    // read the definitions: connected comes back with the next answer.
    eventually_sync("the bridge is connected", || fx.stats.connected()).await;
    fx.shutdown().await;
}

#[tokio::test]
async fn a_diff_larger_than_the_store_batch_limit_is_applied_in_several_batches() {
    // MemoryStore refuses a batch of more than 128 ops, as etcd does.
    let mut fx = Fixture::start().await;
    for i in 0..300 {
        fx.double
            .put(format!("Model/m{i:03}"), format!("kind: Model # {i}"));
    }
    let store = fx.store.clone();
    eventually("300 models are in our store", || async {
        state_store::get_all(&store, "Model/", 1000)
            .await
            .unwrap()
            .0
            .len()
            == 300
    })
    .await;
    for i in 0..300 {
        fx.double.delete(&format!("Model/m{i:03}"));
    }
    eventually("300 models are deleted from our store", || async {
        state_store::get_all(&store, "Model/", 1000)
            .await
            .unwrap()
            .0
            .is_empty()
    })
    .await;
    assert_eq!(fx.stats.definitions_applied_total(), 600);
    fx.shutdown().await;
}

#[tokio::test]
async fn definitions_can_be_left_out() {
    let mut fx = Fixture::start_with(MemoryStore::default(), |config| {
        config.read_definitions = false;
    })
    .await;
    fx.double.put("Scenario/s", SCENARIO);
    fx.put("/model/m/state", "Running").await;
    eventually_sync("the state is mirrored", || {
        fx.double.get("/model/m/state").is_some()
    })
    .await;
    // A poller would have read the service at start-up, before the resync
    // that preceded the state's delivery.
    assert_eq!(fx.ours("Scenario/s").await, None);
    assert!(
        fx.double
            .calls()
            .iter()
            .all(|call| call.keys.iter().all(|k| !k.starts_with("Scenario/")))
    );
    fx.shutdown().await;
}

#[tokio::test]
async fn the_service_wins_over_a_definition_changed_in_our_store() {
    let mut fx = Fixture::start().await;
    let store = fx.store.clone();
    fx.double.put("Package/p", PACKAGE);
    eventually("the package is in our store", || async {
        read(&store, "Package/p").await.as_deref() == Some(PACKAGE)
    })
    .await;

    fx.put("Package/p", "kind: Package # written around the service")
        .await;
    fx.put("Package/local", "kind: Package").await;
    eventually("the service's package is back and ours is gone", || async {
        read(&store, "Package/p").await.as_deref() == Some(PACKAGE)
            && read(&store, "Package/local").await.is_none()
    })
    .await;
    fx.shutdown().await;
}
