//! The commit pipeline: one batch at a time, the inputs of a batch that
//! share no key committed as concurrent chains, bottom-up, and a failed
//! chain leaves the others alone.
//!
//! The store is a `MemoryStore` behind a gate that can hold, and fail, the
//! transactions that touch a chosen key.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use state_store::{
    Applied, Batch, KeyValue, ListOptions, MemoryStore, Op, Page, Revision, StateStore, StoreError,
    WatchStream,
};
use statemachine_core::{ErrorCode, ResourceKind};
use support::*;
use tokio::sync::watch;

/// A `MemoryStore` whose transactions touching a key that contains `hold`
/// wait until released (and then fail when `fail_held` is set).
struct GatedStore {
    inner: MemoryStore,
    hold: std::sync::Mutex<Option<String>>,
    /// Released up to this generation: a held transaction waits for the
    /// next one after its arrival.
    release: watch::Sender<u64>,
    fail_held: AtomicBool,
    in_flight: AtomicUsize,
    held_now: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// The keys of every transaction applied, in the order applied.
    applied: std::sync::Mutex<Vec<Vec<String>>>,
}

impl GatedStore {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryStore::default(),
            hold: std::sync::Mutex::new(None),
            release: watch::channel(0).0,
            fail_held: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            held_now: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            applied: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Holds the transactions touching a key containing `pattern`.
    fn hold(&self, pattern: &str) {
        *self.hold.lock().unwrap() = Some(pattern.to_owned());
    }

    /// Lets the transactions held so far go on.
    fn release_held(&self) {
        self.release.send_modify(|generation| *generation += 1);
    }

    /// Holds nothing any more, and lets the held transactions go on.
    fn open(&self) {
        *self.hold.lock().unwrap() = None;
        self.release_held();
    }

    /// Waits until `n` transactions are held.
    async fn until_held(&self, n: usize) {
        for _ in 0..500 {
            if self.held_now.load(Ordering::SeqCst) >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("{n} transactions were not held within 2.5 s");
    }

    fn applied(&self) -> Vec<Vec<String>> {
        self.applied.lock().unwrap().clone()
    }
}

fn key_of(op: &Op) -> &str {
    match op {
        Op::Put { key, .. } | Op::Delete { key } => key,
    }
}

#[async_trait]
impl StateStore for GatedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.inner.get(key).await
    }

    async fn get_prefix(&self, prefix: &str, options: ListOptions) -> Result<Page, StoreError> {
        self.inner.get_prefix(prefix, options).await
    }

    async fn apply(&self, batch: Batch) -> Result<Applied, StoreError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let pattern = self.hold.lock().unwrap().clone();
        let held = pattern.is_some_and(|p| batch.ops.iter().any(|op| key_of(op).contains(&p)));
        let mut result = Ok(());
        if held {
            let mut released = self.release.subscribe();
            let arrived = *released.borrow();
            self.held_now.fetch_add(1, Ordering::SeqCst);
            let _ = released.wait_for(|generation| *generation > arrived).await;
            self.held_now.fetch_sub(1, Ordering::SeqCst);
            if self.fail_held.load(Ordering::SeqCst) {
                result = Err(StoreError::unavailable(
                    "connection reset (held by the test)",
                ));
            }
        }
        let keys: Vec<String> = batch.ops.iter().map(|op| key_of(op).to_owned()).collect();
        let outcome = match result {
            Ok(()) => {
                let applied = self.inner.apply(batch).await;
                if applied.is_ok() {
                    self.applied.lock().unwrap().push(keys);
                }
                applied
            }
            Err(error) => Err(error),
        };
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        outcome
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.inner.delete(key).await
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        self.inner.watch(prefix, from).await
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        self.inner.revision().await
    }
}

async fn state_of(h: &engine::EngineHandle, name: &str) -> (String, i64) {
    let view = h
        .get_state(ResourceKind::Scenario, name)
        .await
        .expect("answered")
        .expect("a scenario always has a state");
    (view.state, view.generation)
}

// Paused time: the sleep returns once every task is idle, i.e. when the
// engine has done all it could with the commit held.
#[tokio::test(start_paused = true)]
async fn with_a_commit_in_flight_the_next_batch_waits() {
    let store = GatedStore::new();
    let (engine, _) = start(store.clone(), config()).await;
    let h = engine.handle();
    store.hold("/scenario/slow/");
    let slow = tokio::spawn({
        let h = h.clone();
        async move { h.change_state(scenario("slow", "Idle", "Waiting")).await }
    });
    store.until_held(1).await;
    let fast = tokio::spawn({
        let h = h.clone();
        async move { h.change_state(scenario("fast", "Idle", "Waiting")).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!fast.is_finished(), "one batch at a time");
    assert_eq!(value(store.as_ref(), "/scenario/fast/state").await, None);
    store.open();
    assert_success(slow.await.unwrap().code, "slow");
    assert_success(fast.await.unwrap().code, "fast");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_chain_leaves_the_chains_beside_it_alone() {
    let store = GatedStore::new();
    let (engine, _) = start(store.clone(), config()).await;
    let h = engine.handle();
    // Hold a first commit so that the next two inputs form one batch: a
    // report too large for one transaction (a chain of its own) and a change.
    store.hold("/scenario/gate/");
    let gate = tokio::spawn({
        let h = h.clone();
        async move { h.change_state(scenario("gate", "Idle", "Waiting")).await }
    });
    store.until_held(1).await;
    let doomed = tokio::spawn({
        let h = h.clone();
        async move { h.report_containers(wide_report("nd", 70)).await }
    });
    let fine = tokio::spawn({
        let h = h.clone();
        async move { h.change_state(scenario("fine", "Idle", "Waiting")).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    store.hold("/container/model-nd-");
    store.release_held();
    assert_success(gate.await.unwrap().code, "gate");
    store.until_held(1).await;
    let fine = fine.await.unwrap();
    assert_success(fine.code, &fine.message);
    store.fail_held.store(true, Ordering::SeqCst);
    store.open();
    let doomed = doomed.await.unwrap();
    assert_eq!(doomed.code, ErrorCode::ResourceUnavailable, "{doomed:?}");
    assert_eq!(state_of(&h, "fine").await.0, "Waiting");
    assert_eq!(value(store.as_ref(), "/model/nd-0/state").await, None);

    // Nothing of the failed chain is left pending: the same report now
    // goes through, and so does the next step of the scenario.
    store.fail_held.store(false, Ordering::SeqCst);
    let again = h.report_containers(wide_report("nd", 70)).await;
    assert_success(again.code, &again.message);
    assert_eq!(
        value(store.as_ref(), "/model/nd-0/state").await.as_deref(),
        Some("Running")
    );
    let next = h
        .change_state(scenario("fine", "Waiting", "Satisfied"))
        .await;
    assert_success(next.code, &next.message);
    engine.shutdown().await;
}

/// A report of `n` containers `model-{node}-{i}` (one unreferenced model each).
fn wide_report(node: &str, n: usize) -> statemachine_core::NodeReport {
    report(
        node,
        (0..n)
            .map(|i| container(&format!("model-{node}-{i}"), &[("Status", "running")]))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_large_inputs_of_one_batch_commit_as_concurrent_chains_bottom_up() {
    let store = GatedStore::new();
    let (engine, _) = start(store.clone(), config()).await;
    let h = engine.handle();
    // Hold a first commit so that both reports queue into one batch.
    store.hold("/scenario/gate/");
    let gate = tokio::spawn({
        let h = h.clone();
        async move { h.change_state(scenario("gate", "Idle", "Waiting")).await }
    });
    store.until_held(1).await;
    // 70 containers: 70 container keys + 70 model keys + 70 model histories
    // + the node record: two transactions each.
    let reports: Vec<_> = ["na", "nb"]
        .into_iter()
        .map(|node| {
            let h = h.clone();
            tokio::spawn(async move { h.report_containers(wide_report(node, 70)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Now hold the reports' first transactions: both chains start at once.
    store.hold("/container/model-n");
    store.release_held();
    assert_success(gate.await.unwrap().code, "gate");
    store.until_held(2).await;
    store.open();
    for task in reports {
        let answer = task.await.unwrap();
        assert_success(answer.code, &answer.message);
    }
    assert!(store.max_in_flight.load(Ordering::SeqCst) >= 2);

    let applied = store.applied();
    for node in ["na", "nb"] {
        let txns: Vec<&Vec<String>> = applied
            .iter()
            .filter(|keys| keys.iter().any(|k| k.contains(&format!("{node}-"))))
            .collect();
        assert!(txns.len() >= 2, "{node}: split: {txns:?}");
        assert!(
            txns.iter()
                .all(|keys| !keys.iter().any(|k| k.contains(if node == "na" {
                    "nb-"
                } else {
                    "na-"
                }))),
            "the chains share no transaction"
        );
        let position = |key: &str| txns.iter().position(|keys| keys.iter().any(|k| k == key));
        for i in 0..70 {
            let container = position(&format!("/container/model-{node}-{i}/state"));
            let model = position(&format!("/model/{node}-{i}/state"));
            assert!(
                container.is_some() && model.is_some() && container <= model,
                "{node}-{i}: bottom-up ({container:?} <= {model:?})"
            );
        }
        assert_eq!(
            value(store.as_ref(), &format!("/model/{node}-69/state"))
                .await
                .as_deref(),
            Some("Running")
        );
    }
    engine.shutdown().await;
}
