//! EtcdStore when etcd misbehaves: frozen, killed and restarted, compacted,
//! contended, one cluster member down. Every etcd here is real, started by
//! etcd-harness.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_harness::Etcd;
use futures::{FutureExt, StreamExt};
use state_store::{
    Batch, EventKind, ListOptions, Revision, StateStore, StoreError, WatchEvent, WatchStream,
};
use store_etcd::{EtcdConfig, EtcdStore, RetryPolicy};
use support::{REQUEST_TIMEOUT, connect, eventually, start_etcd, test_config};

/// Slack for scheduling on a loaded 2-core machine.
const MARGIN: Duration = Duration::from_millis(500);

async fn next_event(stream: &mut WatchStream) -> WatchEvent {
    match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
        Ok(Some(Ok(event))) => event,
        other => panic!("expected a watch event, got {other:?}"),
    }
}

/// Asserts that nothing but the event of a marker written now through
/// `writer` comes next on `stream`: a repeated event, an error or the end of
/// the stream would come before it.
async fn assert_nothing_before_a_marker(stream: &mut WatchStream, writer: &EtcdStore, key: &str) {
    let marker = writer
        .apply(Batch::new().put(key, "marker"))
        .await
        .expect("the marker is written");
    let event = next_event(stream).await;
    assert_eq!(
        (event.kv.key.as_str(), event.kv.mod_revision),
        (key, marker.revision),
        "expected nothing before the marker, got {event:?}"
    );
}

/// Asserts that a watch whose etcd is down keeps quiet and open: once its
/// task has tried to reconnect twice (so it has taken a failed attempt for
/// one to retry, not for the end), the stream holds nothing.
async fn assert_quiet_while_reconnecting(store: &EtcdStore, stream: &mut WatchStream) {
    let before = store.watch_reconnects();
    let retried = eventually(Duration::from_secs(10), || async {
        store.watch_reconnects() >= before + 2
    })
    .await;
    assert!(retried, "the watch keeps trying to reconnect");
    if let Some(item) = stream.next().now_or_never() {
        panic!("expected no watch item while etcd is down, got {item:?}");
    }
}

/// Asserts `result` failed as "unavailable or timed out" within the deadline.
fn assert_unavailable<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, StoreError>,
    took: Duration,
) {
    match result {
        Err(error) if error.is_unavailable() => {}
        other => panic!("{what}: expected Unavailable or Timeout, got {other:?}"),
    }
    assert!(
        took < REQUEST_TIMEOUT + MARGIN,
        "{what} took {took:?}, longer than its deadline {REQUEST_TIMEOUT:?} (+{MARGIN:?})"
    );
}

async fn timed<T>(future: impl std::future::Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let value = future.await;
    (value, started.elapsed())
}

/// Waits until `store` answers again after etcd came back.
async fn wait_until_served(store: &EtcdStore) {
    let served = eventually(Duration::from_secs(10), || async {
        store.revision().await.is_ok()
    })
    .await;
    assert!(served, "the store must work again once etcd is back");
}

#[tokio::test]
async fn a_frozen_etcd_fails_calls_within_their_deadline_and_they_work_after_resume() {
    let etcd = start_etcd();
    let store = connect(test_config(&etcd)).await;
    let written = store
        .apply(Batch::new().guard("/f/k", 0).put("/f/k", "1"))
        .await
        .unwrap();
    let mut watch = store.watch("/f/", written.revision + 1).await.unwrap();

    etcd.pause().unwrap();
    let (result, took) = timed(store.get("/f/k")).await;
    assert_unavailable("get", result, took);
    let (result, took) = timed(store.get_prefix("/f/", ListOptions::default())).await;
    assert_unavailable("get_prefix", result, took);
    let (result, took) =
        timed(store.apply(Batch::new().guard("/f/other", 0).put("/f/other", "x"))).await;
    assert_unavailable("apply", result, took);
    let (result, took) = timed(store.revision()).await;
    assert_unavailable("revision", result, took);
    let (result, took) = timed(store.watch("/f/", 0)).await;
    assert_unavailable("watch", result.map(|_| ()), took);
    etcd.resume().unwrap();

    // The same store, without being rebuilt.
    wait_until_served(&store).await;
    let current = store.get("/f/k").await.unwrap().unwrap();
    let applied = store
        .apply(
            Batch::new()
                .guard("/f/k", current.mod_revision)
                .put("/f/k", "2"),
        )
        .await
        .unwrap();
    // The watch opened before the freeze survived it. The apply sent during
    // the freeze may have reached etcd once it resumed (it timed out on our
    // side, which is exactly why an unanswered write is reported as a
    // timeout and not retried blindly), so skip /f/other.
    loop {
        let event = next_event(&mut watch).await;
        if event.kv.key == "/f/other" {
            continue;
        }
        assert_eq!(
            (event.kv.key.as_str(), event.kv.value.as_slice()),
            ("/f/k", b"2".as_slice())
        );
        assert_eq!(event.kv.mod_revision, applied.revision);
        break;
    }
}

#[tokio::test]
async fn a_killed_and_restarted_etcd_serves_the_same_store_again() {
    let mut etcd = start_etcd();
    let store = connect(test_config(&etcd)).await;
    let first = store
        .apply(Batch::new().guard("/r/k", 0).put("/r/k", "before"))
        .await
        .unwrap();

    etcd.kill();
    let (result, took) = timed(store.get("/r/k")).await;
    assert_unavailable("get while etcd is down", result, took);
    let (result, took) = timed(
        store.apply(
            Batch::new()
                .guard("/r/k", first.revision)
                .put("/r/k", "lost"),
        ),
    )
    .await;
    assert_unavailable("apply while etcd is down", result, took);
    let (result, took) = timed(store.apply(Batch::new().put("/r/unguarded", "x"))).await;
    assert_unavailable("unguarded apply while etcd is down", result, took);

    etcd.restart().unwrap();
    wait_until_served(&store).await;
    let kv = store.get("/r/k").await.unwrap().unwrap();
    assert_eq!(kv.value, b"before", "the data dir survived the restart");
    assert_eq!(kv.mod_revision, first.revision);
    store
        .apply(
            Batch::new()
                .guard("/r/k", first.revision)
                .put("/r/k", "after"),
        )
        .await
        .expect("a guarded write after the restart");
    assert!(
        store.get("/r/unguarded").await.unwrap().is_none(),
        "a write to a dead etcd never happened"
    );
}

#[tokio::test]
async fn a_watch_delivers_every_event_exactly_once_across_an_etcd_restart() {
    let mut etcd = start_etcd();
    let store = connect(test_config(&etcd)).await;
    // A second store writes, so the watching store's connection is only used
    // by the watch.
    let writer = connect(test_config(&etcd)).await;
    let start = writer.revision().await.unwrap() + 1;
    let mut watch = store.watch("/w/", start).await.unwrap();

    let mut expected: Vec<(String, Revision)> = Vec::new();
    for i in 0..3 {
        let key = format!("/w/before-{i}");
        let applied = writer.apply(Batch::new().put(&key, "v")).await.unwrap();
        expected.push((key, applied.revision));
    }
    // A delete, and a write outside the prefix, before the restart too.
    let applied = writer
        .apply(Batch::new().delete("/w/before-0").put("/elsewhere", "x"))
        .await
        .unwrap();
    expected.push(("/w/before-0".into(), applied.revision));
    let mut seen = Vec::new();
    while seen.len() < expected.len() {
        seen.push(next_event(&mut watch).await);
    }

    etcd.kill();
    // While etcd is down there is nothing to deliver, and the stream stays open.
    assert_quiet_while_reconnecting(&store, &mut watch).await;
    etcd.restart().unwrap();
    wait_until_served(&writer).await;

    for i in 0..3 {
        let key = format!("/w/after-{i}");
        let applied = writer.apply(Batch::new().put(&key, "v")).await.unwrap();
        expected.push((key, applied.revision));
    }
    while seen.len() < expected.len() {
        seen.push(next_event(&mut watch).await);
    }
    let got: Vec<(String, Revision)> = seen
        .iter()
        .map(|e| (e.kv.key.clone(), e.kv.mod_revision))
        .collect();
    assert_eq!(got, expected, "every event, in order, once");
    assert_eq!(seen[3].kind, EventKind::Delete);
    assert_nothing_before_a_marker(&mut watch, &writer, "/w/marker").await;
    assert!(store.watch_reconnects() >= 1, "the watch had to reconnect");
    assert_eq!(store.active_watches(), 1);
}

#[tokio::test]
async fn a_watch_retries_with_capped_backoff_while_etcd_is_down_and_stops_when_dropped() {
    let mut etcd = start_etcd();
    let store = connect(test_config(&etcd)).await;
    let mut watch = store.watch("/d/", 0).await.unwrap();
    assert_eq!(store.active_watches(), 1);

    etcd.kill();
    // Real time on purpose: what is measured is how many reconnects a
    // wall-clock interval holds (the watch talks to a real process, so
    // tokio's clock cannot be paused here).
    let down = Duration::from_secs(2);
    tokio::time::sleep(down).await;
    let attempts = store.watch_reconnects();
    // Backoff from 20 ms doubling to a 300 ms cap, each with half jitter:
    // about 10 attempts in 2 s; never a tight loop, never given up.
    assert!(
        (3..=25).contains(&attempts),
        "{attempts} reconnect attempts in {down:?}"
    );

    etcd.restart().unwrap();
    wait_until_served(&store).await;
    let applied = store.apply(Batch::new().put("/d/k", "v")).await.unwrap();
    let event = next_event(&mut watch).await;
    assert_eq!(
        (event.kv.key.as_str(), event.kv.mod_revision),
        ("/d/k", applied.revision)
    );

    drop(watch);
    let stopped = eventually(Duration::from_secs(2), || async {
        store.active_watches() == 0
    })
    .await;
    assert!(stopped, "dropping the stream ends its task");

    // A watch dropped while its etcd is down stops too (it is not stuck in a
    // reconnect loop).
    let watch = store.watch("/d/", 0).await.unwrap();
    let before = store.watch_reconnects();
    etcd.kill();
    let reconnecting = eventually(Duration::from_secs(10), || async {
        store.watch_reconnects() > before
    })
    .await;
    assert!(reconnecting, "the watch tries to reconnect");
    drop(watch);
    let stopped = eventually(Duration::from_secs(2), || async {
        store.active_watches() == 0
    })
    .await;
    assert!(stopped, "a reconnecting watch stops when dropped");
}

#[tokio::test]
async fn a_watch_from_a_compacted_revision_yields_compacted_and_ends() {
    let etcd = start_etcd();
    let store = connect(test_config(&etcd)).await;
    let first = store.apply(Batch::new().put("/c/a", "1")).await.unwrap();
    store.apply(Batch::new().put("/c/a", "2")).await.unwrap();
    let third = store.apply(Batch::new().put("/c/a", "3")).await.unwrap();
    store.compact(third.revision).await.unwrap();

    let mut watch = store.watch("/c/", first.revision).await.unwrap();
    let item = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap();
    assert_eq!(
        item,
        Some(Err(StoreError::Compacted {
            requested: first.revision,
            compact_revision: third.revision
        }))
    );
    assert!(
        watch.next().await.is_none(),
        "the stream ends after Compacted"
    );
    assert_eq!(store.active_watches(), 0);

    // From the compaction revision on, history is still there.
    let mut watch = store.watch("/c/", third.revision).await.unwrap();
    let event = next_event(&mut watch).await;
    assert_eq!(
        (event.kv.value.as_slice(), event.kv.mod_revision),
        (b"3".as_slice(), third.revision)
    );
}

#[tokio::test]
async fn a_watch_whose_resume_revision_was_compacted_during_an_outage_yields_compacted() {
    let mut etcd = start_etcd();
    // The watching store waits 1.5 to 3 s before its first reconnect, so the
    // restart, the writes and the compaction below happen before it.
    let slow = Duration::from_secs(3);
    let config = EtcdConfig {
        retry: RetryPolicy {
            max_attempts: 2,
            base_backoff: slow,
            max_backoff: slow,
        },
        watch_max_backoff: slow,
        ..test_config(&etcd)
    };
    let store = connect(config).await;
    let writer = connect(test_config(&etcd)).await;
    let mut watch = store.watch("/cc/", 0).await.unwrap();
    let before = writer.apply(Batch::new().put("/cc/a", "1")).await.unwrap();
    assert_eq!(
        next_event(&mut watch).await.kv.mod_revision,
        before.revision
    );

    etcd.kill();
    etcd.restart().unwrap();
    wait_until_served(&writer).await;
    writer.apply(Batch::new().put("/cc/a", "2")).await.unwrap();
    let last = writer.apply(Batch::new().put("/cc/a", "3")).await.unwrap();
    writer.compact(last.revision).await.unwrap();
    assert_eq!(
        store.watch_reconnects(),
        0,
        "precondition: the watch has not reconnected before the compaction"
    );

    let item = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .unwrap();
    assert_eq!(
        item,
        Some(Err(StoreError::Compacted {
            requested: before.revision + 1,
            compact_revision: last.revision
        }))
    );
    assert!(watch.next().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_guarded_increments_lose_nothing() {
    const WORKERS: usize = 16;
    const INCREMENTS: usize = 20;
    let etcd = start_etcd();
    let store = Arc::new(connect(test_config(&etcd)).await);
    let key = "/counter";
    let start = store.revision().await.unwrap() + 1;
    let mut watch = store.watch(key, start).await.unwrap();

    let tasks = (0..WORKERS).map(|_| {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let mut revisions = Vec::new();
            let mut conflicts = 0usize;
            for _ in 0..INCREMENTS {
                // Bounded: 16 writers cannot starve one for 2000 rounds.
                for attempt in 0.. {
                    assert!(attempt < 2000, "an increment never got through");
                    let current = store.get(key).await.unwrap();
                    let (value, mod_revision) = current.map_or((0, 0), |kv| {
                        (
                            kv.value_str().unwrap().parse::<usize>().unwrap(),
                            kv.mod_revision,
                        )
                    });
                    let batch = Batch::new()
                        .guard(key, mod_revision)
                        .put(key, (value + 1).to_string());
                    match store.apply(batch).await {
                        Ok(applied) => {
                            revisions.push(applied.revision);
                            break;
                        }
                        Err(StoreError::GuardFailed { .. }) => conflicts += 1,
                        Err(error) => panic!("an increment failed: {error}"),
                    }
                }
            }
            (revisions, conflicts)
        })
    });
    let mut revisions = BTreeSet::new();
    let mut conflicts = 0;
    for task in futures::future::join_all(tasks).await {
        let (mine, lost) = task.unwrap();
        conflicts += lost;
        revisions.extend(mine);
    }
    let total = WORKERS * INCREMENTS;
    assert_eq!(revisions.len(), total, "one revision per successful write");
    let kv = store.get(key).await.unwrap().unwrap();
    assert_eq!(kv.value_str(), Some(total.to_string().as_str()));
    // Exactly one writer won per revision: the watch sees 1, 2, ..., total.
    for expected in 1..=total {
        let event = next_event(&mut watch).await;
        assert_eq!(event.kv.value_str(), Some(expected.to_string().as_str()));
        assert!(revisions.contains(&event.kv.mod_revision));
    }
    println!("{total} increments by {WORKERS} writers, {conflicts} guard conflicts retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_member_cluster_keeps_serving_when_a_member_dies() {
    let mut etcd = Etcd::builder().members(3).start().unwrap();
    let config = EtcdConfig {
        // A leader election takes about a second with etcd's defaults, and
        // the members answer "no leader" at once meanwhile: the retries must
        // outlast it, not only the deadline.
        request_timeout: Duration::from_secs(5),
        retry: RetryPolicy {
            max_attempts: 50,
            ..Default::default()
        },
        ..test_config(&etcd)
    };
    let store = connect(config).await;
    let mut revision = 0;
    for i in 0..10 {
        revision = store
            .apply(
                Batch::new()
                    .guard("/cluster/k", revision)
                    .put("/cluster/k", i.to_string()),
            )
            .await
            .unwrap()
            .revision;
    }
    let mut watch = store.watch("/cluster/", revision + 1).await.unwrap();
    for victim in 0..etcd.member_count() {
        etcd.kill_member(victim).unwrap();
        for i in 0..10 {
            revision = store
                .apply(
                    Batch::new()
                        .guard("/cluster/k", revision)
                        .put("/cluster/k", format!("{victim}-{i}")),
                )
                .await
                .unwrap_or_else(|e| panic!("write {i} with member {victim} down: {e}"))
                .revision;
            let event = next_event(&mut watch).await;
            assert_eq!(event.kv.mod_revision, revision);
        }
        etcd.restart_member(victim).unwrap();
    }
    assert_eq!(
        store.get("/cluster/k").await.unwrap().unwrap().value_str(),
        Some("2-9")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_cluster_member_is_routed_around_by_writes_and_the_watch() {
    // A frozen member keeps its TCP connections open and answers nothing, as
    // a partitioned host does. HTTP/2 keep-alive declares its connection dead
    // (etcd must allow pings that often), and calls stuck on it are abandoned
    // after `attempt_timeout` and sent again.
    let mut etcd = Etcd::builder()
        .members(3)
        .arg("--grpc-keepalive-min-time=500ms")
        .start()
        .unwrap();
    let config = EtcdConfig {
        request_timeout: Duration::from_secs(8),
        attempt_timeout: Duration::from_secs(1),
        keep_alive_interval: Duration::from_secs(1),
        keep_alive_timeout: Duration::from_secs(1),
        // The deadline, not the attempt count, bounds a call here: a leader
        // election on a loaded machine outlasts a few quick retries.
        retry: store_etcd::RetryPolicy {
            max_attempts: 50,
            ..Default::default()
        },
        ..test_config(&etcd)
    };
    let store = connect(config).await;
    let start = store.revision().await.unwrap() + 1;
    let mut watch = store.watch("/frozen/", start).await.unwrap();
    let mut revision = 0;
    let mut written = Vec::new();
    for victim in 0..etcd.member_count() {
        etcd.pause_member(victim).unwrap();
        let mut slowest = Duration::ZERO;
        for i in 0..5 {
            let (result, took) = timed(
                store.apply(
                    Batch::new()
                        .guard("/frozen/k", revision)
                        .put("/frozen/k", format!("{victim}-{i}")),
                ),
            )
            .await;
            revision = result
                .unwrap_or_else(|e| panic!("write {i} with member {victim} frozen: {e}"))
                .revision;
            assert!(took < Duration::from_secs(8), "write took {took:?}");
            slowest = slowest.max(took);
            written.push(revision);
        }
        println!("member {victim} frozen: slowest of 5 guarded writes took {slowest:?}");
        // The watch delivers them, whichever member it was connected to.
        for expected in &written[written.len() - 5..] {
            let event = next_event(&mut watch).await;
            assert_eq!(event.kv.mod_revision, *expected);
        }
        etcd.resume_member(victim).unwrap();
        etcd.wait_until_healthy().unwrap();
    }
    assert_nothing_before_a_marker(&mut watch, &store, "/frozen/marker").await;
}
