//! State keys flow from our store to the service: resyncs, forwarded
//! changes, outages, refused keys.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use pullpiri_kv::ValueFormat;
use pullpiri_kv::testing::{Answer, RocksDbServiceDouble};
use state_store::{Batch, MemoryStore, MemoryStoreConfig, StateStore};
use support::{Fixture, eventually_sync};

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn states_reach_the_service_in_upstreams_format() {
    let mut fx = Fixture::start().await;
    fx.store
        .apply(
            Batch::new()
                .put("/container/media-player-app/state", "Exited")
                .put("/model/media-player/state", "Running")
                .put("/package/infotainment/state", "Error")
                .put("/scenario/parking/state", "Waiting"),
        )
        .await
        .unwrap();
    let expected = map(&[
        ("/container/media-player-app/state", "Exited"),
        ("/model/media-player/state", "Running"),
        ("/package/infotainment/state", "PACKAGE_STATE_ERROR"),
        ("/scenario/parking/state", "SCENARIO_STATE_WAITING"),
    ]);
    eventually_sync("the four states are in the service", || {
        fx.their_states() == expected
    })
    .await;

    fx.put("/scenario/parking/state", "Satisfied").await;
    fx.put("/package/infotainment/state", "Degraded").await;
    eventually_sync("the changed states are in the service", || {
        fx.double.get("/scenario/parking/state").as_deref() == Some("SCENARIO_STATE_SATISFIED")
            && fx.double.get("/package/infotainment/state").as_deref()
                == Some("PACKAGE_STATE_DEGRADED")
    })
    .await;

    // Bookkeeping and definitions in our store are not mirrored.
    fx.put("/statemanager/history/model/m/1", "{}").await;
    fx.put("/model/media-player/state", "Dead").await;
    eventually_sync("the model's new state is in the service", || {
        fx.double.get("/model/media-player/state").as_deref() == Some("Dead")
    })
    .await;
    assert!(fx.double.keys_under("/statemanager/").is_empty());

    let stats = fx.stats.snapshot();
    assert!(stats.connected);
    assert_eq!(stats.resyncs_total, 1);
    assert!(stats.mirrored_keys_total >= 7);
    assert!(stats.last_sync_unix_seconds > 0);
    assert_eq!(stats.keys_skipped_total, 0);
    fx.shutdown().await;
}

#[tokio::test]
async fn canonical_values_are_written_unchanged() {
    let mut fx = Fixture::start_with(MemoryStore::default(), |config| {
        config.values = ValueFormat::Canonical;
    })
    .await;
    fx.store
        .apply(
            Batch::new()
                .put("/model/m/state", "Running")
                .put("/package/p/state", "Error")
                .put("/scenario/s/state", "Waiting"),
        )
        .await
        .unwrap();
    let expected = map(&[
        ("/model/m/state", "Running"),
        ("/package/p/state", "Error"),
        ("/scenario/s/state", "Waiting"),
    ]);
    eventually_sync("the states are in the service unchanged", || {
        fx.their_states() == expected
    })
    .await;
    fx.shutdown().await;
}

#[tokio::test]
async fn changes_are_forwarded_in_commit_order_deletes_included() {
    let mut fx = Fixture::start().await;
    eventually_sync("the start-up resync is done", || {
        fx.stats.resyncs_total() == 1
    })
    .await;

    // Put then deleted: ends absent.
    fx.put("/container/c1/state", "Running").await;
    fx.delete("/container/c1/state").await;
    // Several values in a row: ends with the last.
    for state in ["Idle", "Waiting", "Satisfied", "Allowed", "Completed"] {
        fx.put("/scenario/s/state", state).await;
    }
    // Deleted, then put again: ends present.
    fx.put("/model/m/state", "Running").await;
    fx.delete("/model/m/state").await;
    fx.put("/model/m/state", "Exited").await;
    // A barrier: once this arrives, everything before it has.
    fx.put("/package/barrier/state", "Idle").await;

    eventually_sync("the barrier arrived", || {
        fx.double.get("/package/barrier/state").is_some()
    })
    .await;
    assert_eq!(
        fx.their_states(),
        map(&[
            ("/model/m/state", "Exited"),
            ("/package/barrier/state", "PACKAGE_STATE_IDLE"),
            ("/scenario/s/state", "SCENARIO_STATE_COMPLETED"),
        ])
    );

    // Every change after the resync went out in the order it was committed,
    // coalesced: for each key, the calls naming it end with its last change.
    let calls = fx.double.calls();
    let last = |key: &str| {
        calls
            .iter()
            .rev()
            .find(|call| call.rpc != "GetByPrefix" && call.keys.iter().any(|k| k == key))
            .map(|call| call.rpc)
    };
    assert_eq!(last("/container/c1/state"), Some("Delete"));
    assert_eq!(last("/model/m/state"), Some("BatchPut"));
    let position = |key: &str| {
        calls
            .iter()
            .rposition(|call| call.keys.iter().any(|k| k == key))
            .unwrap()
    };
    // Earlier commits go out in the same call as the barrier or before it.
    assert!(position("/container/c1/state") <= position("/package/barrier/state"));
    assert!(position("/scenario/s/state") <= position("/package/barrier/state"));
    assert!(position("/model/m/state") <= position("/package/barrier/state"));
    fx.shutdown().await;
}

#[tokio::test]
async fn a_commit_larger_than_one_batch_put_arrives_whole() {
    let mut fx = Fixture::start_with(MemoryStore::default(), |config| {
        config.batch_put_size = 16;
    })
    .await;
    eventually_sync("the start-up resync is done", || {
        fx.stats.resyncs_total() == 1
    })
    .await;
    for chunk in 0..3 {
        let mut batch = Batch::new();
        for i in 0..100 {
            batch = batch.put(format!("/container/c{chunk}-{i:03}/state"), "Running");
        }
        fx.store.apply(batch).await.unwrap();
    }
    eventually_sync("300 containers are in the service", || {
        fx.double.keys_under("/container/").len() == 300
    })
    .await;
    let largest = fx
        .double
        .calls()
        .iter()
        .filter(|call| call.rpc == "BatchPut")
        .map(|call| call.keys.len())
        .max();
    assert_eq!(largest, Some(16));
    fx.shutdown().await;
}

#[tokio::test]
async fn the_start_up_resync_writes_what_is_missing_and_removes_what_we_never_had() {
    let store = MemoryStore::default();
    store
        .apply(
            Batch::new()
                .put("/model/m/state", "Running")
                .put("/package/p/state", "Running")
                .put("/scenario/s/state", "Idle"),
        )
        .await
        .unwrap();
    let double = RocksDbServiceDouble::start().await.unwrap();
    // Stale, foreign and unrelated keys in the service.
    double.put("/model/m/state", "Dead");
    double.put("/package/p/state", "PACKAGE_STATE_RUNNING");
    double.put("/package/ghost/state", "PACKAGE_STATE_ERROR");
    double.put("/container/gone/state", "Exited");
    double.put("nodes/hpc-1", "10.0.0.1");
    double.put("/pullpiri/metrics/x", "1");
    let mut fx = Fixture::start_between(store, double, |config| config.read_definitions = false);

    let expected = map(&[
        ("/model/m/state", "Running"),
        ("/package/p/state", "PACKAGE_STATE_RUNNING"),
        ("/scenario/s/state", "SCENARIO_STATE_IDLE"),
    ]);
    eventually_sync("the service holds exactly our states", || {
        fx.their_states() == expected
    })
    .await;
    assert_eq!(fx.double.get("nodes/hpc-1").as_deref(), Some("10.0.0.1"));
    assert_eq!(fx.double.get("/pullpiri/metrics/x").as_deref(), Some("1"));
    // An equal value is not written again.
    let writes: Vec<String> = fx
        .double
        .calls()
        .into_iter()
        .filter(|call| call.rpc == "BatchPut" || call.rpc == "Put")
        .flat_map(|call| call.keys)
        .collect();
    assert!(
        !writes.contains(&"/package/p/state".to_owned()),
        "{writes:?}"
    );
    fx.shutdown().await;
}

#[tokio::test]
async fn after_an_outage_the_service_holds_exactly_our_state_keys() {
    let mut fx = Fixture::start().await;
    fx.store
        .apply(
            Batch::new()
                .put("/model/a/state", "Running")
                .put("/model/b/state", "Running")
                .put("/package/p/state", "Running"),
        )
        .await
        .unwrap();
    eventually_sync("the states are in the service", || {
        fx.their_states().len() == 3
    })
    .await;

    fx.double.stop().await;
    fx.delete("/model/a/state").await;
    fx.put("/model/b/state", "Dead").await;
    fx.put("/package/p/state", "Degraded").await;
    fx.put("/scenario/s/state", "Waiting").await;
    // Somebody else wrote a state key of ours meanwhile.
    fx.double.put("/model/foreign/state", "Running");
    eventually_sync("the bridge noticed the outage", || !fx.stats.connected()).await;
    let failures = fx.stats.failures_total();
    eventually_sync("the bridge keeps retrying", || {
        fx.stats.failures_total() > failures + 2
    })
    .await;

    fx.double.restart().await.unwrap();
    let expected = fx.our_states(ValueFormat::Upstream).await;
    assert_eq!(
        expected,
        map(&[
            ("/model/b/state", "Dead"),
            ("/package/p/state", "PACKAGE_STATE_DEGRADED"),
            ("/scenario/s/state", "SCENARIO_STATE_WAITING"),
        ])
    );
    eventually_sync("the service converged to our state keys", || {
        fx.their_states() == expected
    })
    .await;
    // The resync is counted once its last write is answered: just after the
    // service shows it.
    eventually_sync("the resync after the outage is counted", || {
        fx.stats.connected() && fx.stats.resyncs_total() >= 2 && fx.stats.backlog() == 0
    })
    .await;

    // And streaming resumed.
    fx.put("/model/b/state", "Running").await;
    eventually_sync("a new change is forwarded", || {
        fx.double.get("/model/b/state").as_deref() == Some("Running")
    })
    .await;
    fx.shutdown().await;
}

#[tokio::test]
async fn a_failing_service_is_resynced_once_it_answers_again() {
    let mut fx = Fixture::start().await;
    fx.put("/model/a/state", "Running").await;
    eventually_sync("the state is in the service", || {
        fx.double.get("/model/a/state").is_some()
    })
    .await;

    fx.double.set_unavailable(true);
    fx.put("/model/a/state", "Exited").await;
    fx.delete("/model/a/state").await;
    fx.put("/container/c/state", "Dead").await;
    let failures = fx.stats.failures_total();
    eventually_sync("the calls fail", || {
        fx.stats.failures_total() > failures + 2
    })
    .await;
    assert_eq!(fx.double.get("/model/a/state").as_deref(), Some("Running"));

    fx.double.set_unavailable(false);
    eventually_sync("the service converged", || {
        fx.their_states() == map(&[("/container/c/state", "Dead")])
    })
    .await;
    fx.shutdown().await;
}

#[tokio::test]
async fn a_compacted_watch_is_followed_by_a_resync() {
    // A tiny watch buffer and history: a watcher that does not keep up
    // with a burst of commits gets Compacted.
    let store = MemoryStore::new(MemoryStoreConfig {
        watch_channel_capacity: 1,
        history_limit: 1,
        ..MemoryStoreConfig::default()
    });
    let mut fx = Fixture::start_with(store, |config| config.read_definitions = false).await;
    eventually_sync("the bridge watches our store", || {
        fx.stats.resyncs_total() == 1 && fx.store.watcher_count() == 1
    })
    .await;

    // This test's runtime has one thread and these writes never yield, so
    // the bridge reads nothing until the burst is over.
    for i in 0..50 {
        fx.store
            .apply(Batch::new().put(format!("/container/c{i:02}/state"), "Running"))
            .await
            .unwrap();
    }
    fx.store.delete("/container/c00/state").await.unwrap();
    eventually_sync("a second resync", || fx.stats.resyncs_total() >= 2).await;
    let expected = fx.our_states(ValueFormat::Upstream).await;
    assert_eq!(expected.len(), 49);
    eventually_sync("the service converged", || fx.their_states() == expected).await;
    fx.shutdown().await;
}

#[tokio::test]
async fn a_backlog_over_its_limit_is_dropped_for_a_resync() {
    let mut fx = Fixture::start_with(MemoryStore::default(), |config| {
        config.backlog_limit = 5;
        config.read_definitions = false;
    })
    .await;
    eventually_sync("the start-up resync is done", || {
        fx.stats.resyncs_total() == 1
    })
    .await;
    // A slow service: the first change is in flight while the others queue.
    fx.double.set_delay(Duration::from_millis(300));
    for i in 0..20 {
        fx.put(&format!("/model/m{i:02}/state"), "Running").await;
    }
    eventually_sync("the backlog overflowed into a resync", || {
        fx.stats.resyncs_total() >= 2
    })
    .await;
    fx.double.set_delay(Duration::ZERO);
    let expected = fx.our_states(ValueFormat::Upstream).await;
    eventually_sync("the service converged", || fx.their_states() == expected).await;
    assert!(fx.stats.backlog() <= 5);
    fx.shutdown().await;
}

#[tokio::test]
async fn keys_the_service_would_refuse_are_skipped_and_counted() {
    let mut fx = Fixture::start_with(MemoryStore::default(), |config| {
        config.read_definitions = false;
    })
    .await;
    // After the start-up resync, so that only the watch sees the keys (a
    // resync that reads the prefixes at different revisions may see a key
    // both in its read and in the replay that follows, and count it twice).
    eventually_sync("the start-up resync is done", || {
        fx.stats.resyncs_total() == 1
    })
    .await;
    let long = format!("/container/{}/state", "c".repeat(1100));
    fx.store
        .apply(
            Batch::new()
                .put("/scenario/a{b/state", "Waiting")
                .put("/model/<m>/state", "Running")
                .put("/package/p?/state", "Idle")
                .put(long.as_str(), "Running")
                .put("/model/bytes/state", vec![0xff, 0xfe])
                .put("/model/good/state", "Running"),
        )
        .await
        .unwrap();
    eventually_sync("the good key arrived", || {
        fx.double.get("/model/good/state").is_some()
    })
    .await;
    assert_eq!(fx.stats.keys_skipped_total(), 5);
    assert_eq!(fx.their_states(), map(&[("/model/good/state", "Running")]));
    // The bridge never sent them: the service refused nothing.
    assert_eq!(fx.double.refusals(), 0);

    // Deleting a skipped key is harmless.
    fx.delete("/scenario/a{b/state").await;
    fx.put("/model/after/state", "Exited").await;
    eventually_sync("later keys still arrive", || {
        fx.double.get("/model/after/state").is_some()
    })
    .await;
    assert_eq!(fx.stats.keys_skipped_total(), 5);
    fx.shutdown().await;
}

#[tokio::test]
async fn a_key_the_service_refuses_is_skipped_not_retried_forever() {
    let mut fx = Fixture::start_with(MemoryStore::default(), |config| {
        config.read_definitions = false;
    })
    .await;
    eventually_sync("the start-up resync is done", || {
        fx.stats.resyncs_total() == 1
    })
    .await;
    // A stricter service than upstream's: it refuses a key the bridge sends.
    fx.double.refuse_key("/model/strict/state");
    fx.store
        .apply(
            Batch::new()
                .put("/model/ok/state", "Running")
                .put("/model/strict/state", "Running"),
        )
        .await
        .unwrap();
    eventually_sync("the other key of the batch arrived", || {
        fx.double.get("/model/ok/state").is_some()
    })
    .await;
    assert_eq!(fx.double.get("/model/strict/state"), None);
    assert_eq!(fx.stats.keys_skipped_total(), 1);
    // The BatchPut and the single Put that found the refused key.
    assert_eq!(fx.double.refusals(), 2);

    // Later changes flow; the refused key is not sent again.
    for i in 0..5 {
        fx.put(&format!("/container/c{i}/state"), "Running").await;
    }
    eventually_sync("later keys arrive", || {
        fx.double.keys_under("/container/").len() == 5
    })
    .await;
    assert_eq!(fx.double.refusals(), 2);
    let strict = fx
        .double
        .calls()
        .iter()
        .filter(|call| call.keys.iter().any(|k| k == "/model/strict/state"))
        .count();
    assert_eq!(strict, 2);
    assert_eq!(fx.stats.resyncs_total(), 1);
    assert!(
        fx.double
            .calls()
            .iter()
            .all(|call| call.answer != Answer::Unavailable)
    );
    fx.shutdown().await;
}

#[tokio::test]
async fn the_bridge_stops_when_shutdown_turns_true() {
    let mut fx = Fixture::start().await;
    fx.put("/model/m/state", "Running").await;
    eventually_sync("the state is in the service", || {
        fx.double.get("/model/m/state").is_some()
    })
    .await;
    fx.shutdown().await;
    assert_eq!(fx.store.watcher_count(), 0);

    // Its tasks have ended: nothing is forwarded or polled any more.
    let calls = fx.double.calls().len();
    fx.put("/model/m/state", "Dead").await;
    fx.double.put("Scenario/s", "kind: Scenario");
    tokio::task::yield_now().await;
    assert_eq!(fx.double.calls().len(), calls);
    assert_eq!(fx.ours("Scenario/s").await, None);
}

#[tokio::test]
async fn the_bridge_stops_while_it_backs_off_from_an_unreachable_service() {
    let mut double = RocksDbServiceDouble::start().await.unwrap();
    double.stop().await;
    let mut fx = Fixture::start_between(MemoryStore::default(), double, |config| {
        config.backoff_initial = Duration::from_secs(5);
        config.backoff_max = Duration::from_secs(60);
    });
    eventually_sync("the bridge failed and backs off", || {
        fx.stats.failures_total() >= 2
    })
    .await;
    fx.shutdown().await;
}

#[tokio::test]
async fn a_dropped_shutdown_sender_stops_the_bridge() {
    let double = RocksDbServiceDouble::start().await.unwrap();
    let store: std::sync::Arc<dyn StateStore> = std::sync::Arc::new(MemoryStore::default());
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let bridge =
        pullpiri_kv::Bridge::spawn(store, support::config(double.url()), shutdown).unwrap();
    drop(stop);
    tokio::time::timeout(Duration::from_secs(5), bridge.join())
        .await
        .expect("the bridge ends");
}

#[tokio::test]
async fn a_bad_url_is_refused_at_spawn() {
    let store: std::sync::Arc<dyn StateStore> = std::sync::Arc::new(MemoryStore::default());
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let mut config = support::config("localhost:47007".to_owned());
    let error =
        pullpiri_kv::Bridge::spawn(store.clone(), config.clone(), shutdown.clone()).unwrap_err();
    assert!(
        matches!(error, pullpiri_kv::BridgeError::BadUrl { .. }),
        "{error}"
    );
    config.url = "https://localhost:47007".to_owned();
    let error = pullpiri_kv::Bridge::spawn(store, config, shutdown).unwrap_err();
    assert!(
        error.to_string().contains("https is not supported"),
        "{error}"
    );
}
