//! A crash between the transactions of a split cascade loses no reconcile
//! and sends none twice: a state key commits with its history entry and its
//! outbox record, and a restart writes the record a crash lost.
//!
//! The first life of the engine runs on a store that dies (every call
//! fails, as for a `kill -9`) after a chosen number of transactions; the
//! second life runs on what the first one left.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use state_store::{
    Applied, Batch, KeyValue, ListOptions, MemoryStore, Page, Revision, StateStore, StoreError,
    WatchStream, get_all,
};
use statemachine_core::record::HistoryEntry;
use support::*;

/// A store that dies after `budget` more transactions once armed.
struct CrashStore {
    inner: Arc<MemoryStore>,
    armed: AtomicBool,
    budget: AtomicUsize,
    dead: AtomicBool,
    /// Transactions applied since armed.
    applied: AtomicUsize,
}

impl CrashStore {
    fn new(inner: Arc<MemoryStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            armed: AtomicBool::new(false),
            budget: AtomicUsize::new(0),
            dead: AtomicBool::new(false),
            applied: AtomicUsize::new(0),
        })
    }

    /// From now on, `budget` more transactions go through, then it dies.
    fn arm(&self, budget: usize) {
        self.budget.store(budget, Ordering::SeqCst);
        self.armed.store(true, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.dead.load(Ordering::SeqCst) {
            return Err(StoreError::unavailable("the process was killed (test)"));
        }
        Ok(())
    }
}

#[async_trait]
impl StateStore for CrashStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.check()?;
        self.inner.get(key).await
    }

    async fn get_prefix(&self, prefix: &str, options: ListOptions) -> Result<Page, StoreError> {
        self.check()?;
        self.inner.get_prefix(prefix, options).await
    }

    async fn apply(&self, batch: Batch) -> Result<Applied, StoreError> {
        self.check()?;
        if self.armed.load(Ordering::SeqCst) {
            if self.applied.load(Ordering::SeqCst) >= self.budget.load(Ordering::SeqCst) {
                self.dead.store(true, Ordering::SeqCst);
                return self.check().map(|_| unreachable!());
            }
            let applied = self.inner.apply(batch).await?;
            self.applied.fetch_add(1, Ordering::SeqCst);
            return Ok(applied);
        }
        self.inner.apply(batch).await
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.delete(key).await
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        self.check()?;
        self.inner.watch(prefix, from).await
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        self.check()?;
        self.inner.revision().await
    }
}

const PACKAGES: usize = 6;

/// Scenario sK -> package pK = {mK-a, mK-b}, one container each on n1.
async fn define(store: &dyn StateStore) {
    for k in 0..PACKAGES {
        put(
            store,
            &format!("Scenario/s{k}"),
            &format!("kind: Scenario\nmetadata:\n  name: s{k}\nspec:\n  target: p{k}\n"),
        )
        .await;
        put(
            store,
            &format!("Package/p{k}"),
            &format!(
                "kind: Package\nmetadata:\n  name: p{k}\nspec:\n  models:\n    - name: m{k}-a\n      node: n1\n    - name: m{k}-b\n      node: n1\n"
            ),
        )
        .await;
    }
}

fn fleet(status: &str) -> statemachine_core::NodeReport {
    report(
        "n1",
        (0..PACKAGES)
            .flat_map(|k| [format!("model-m{k}-a"), format!("model-m{k}-b")])
            .map(|name| container(&name, &[("Status", status)]))
            .collect(),
    )
}

/// Small transactions: the report that fails every package is split into
/// many, so there are many cut points.
fn small_txns() -> engine::EngineConfig {
    let mut config = config();
    config.max_txn_ops = 8;
    config.commit_timeout = Duration::from_millis(500);
    config
}

/// The history entries of package `k` that enter Error.
async fn entries_into_error(store: &dyn StateStore, k: usize) -> usize {
    let (kvs, _) = get_all(store, &format!("/statemanager/history/package/p{k}/"), 100)
        .await
        .expect("history");
    kvs.iter()
        .filter_map(|kv| HistoryEntry::decode(&kv.value).ok())
        .filter(|e| e.to.as_deref() == Some("Error"))
        .count()
}

/// Waits until every outbox record was delivered and deleted (5 s at most).
async fn outbox_drained(store: &dyn StateStore) {
    for _ in 0..500 {
        let (left, _) = get_all(store, "/statemanager/outbox/", 100).await.unwrap();
        if left.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the outbox did not drain within 5 s");
}

/// Runs the first life up to the crash after `cut` transactions of the
/// failing report; returns the store it left and how many transactions the
/// report took (when it did not crash).
async fn first_life(cut: usize) -> (Arc<MemoryStore>, usize) {
    let inner = Arc::new(MemoryStore::default());
    let store = CrashStore::new(inner.clone());
    define(store.as_ref()).await;
    let (engine, action) = start(store.clone(), small_txns()).await;
    // The ActionController is unreachable in this life: every reconcile
    // must survive the crash in the store.
    action.down.store(true, Ordering::SeqCst);
    let h = engine.handle();
    assert_success(h.report_containers(fleet("running")).await.code, "running");
    store.arm(cut);
    let _ = h.report_containers(fleet("dead")).await;
    engine.shutdown().await;
    (inner, store.applied.load(Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_cut_of_a_split_cascade_loses_no_reconcile_and_repeats_none() {
    // Without a crash: how many transactions the failing report takes.
    let (_, txns) = first_life(usize::MAX).await;
    assert!(txns >= 4, "the report is split ({txns} transactions)");
    for cut in 0..=txns {
        let (inner, _) = first_life(cut).await;
        // The second life: the NodeAgent sends its report again.
        let store: Arc<dyn StateStore> = inner.clone();
        let (engine, action) = start(store.clone(), small_txns()).await;
        let h = engine.handle();
        assert_success(
            h.report_containers(fleet("dead")).await.code,
            "report again",
        );
        for k in 0..PACKAGES {
            eventually(
                store.as_ref(),
                &format!("/package/p{k}/state"),
                Some("Error"),
            )
            .await;
        }
        action.wait_for(PACKAGES).await;
        outbox_drained(store.as_ref()).await;
        let reconciles = action.reconciles.lock().await.clone();
        for k in 0..PACKAGES {
            let delivered = reconciles
                .iter()
                .filter(|r| r.package == format!("p{k}"))
                .count();
            let entries = entries_into_error(store.as_ref(), k).await;
            assert!(entries >= 1, "cut {cut}: p{k} entered Error");
            if delivered != entries {
                let (incidents, _) = get_all(store.as_ref(), "/statemanager/recovery/", 100)
                    .await
                    .unwrap();
                let incidents: Vec<String> = incidents
                    .iter()
                    .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
                    .collect();
                panic!(
                    "cut {cut}: p{k}: {delivered} reconciles for {entries} entries into Error; incidents: {incidents:#?}"
                );
            }
        }
        engine.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivered_reconcile_is_not_sent_again_after_a_restart() {
    let store = memory();
    define(store.as_ref()).await;
    let (engine, action) = start(store.clone(), small_txns()).await;
    let h = engine.handle();
    assert_success(h.report_containers(fleet("running")).await.code, "running");
    assert_success(h.report_containers(fleet("dead")).await.code, "dead");
    action.wait_for(PACKAGES).await;
    // Every delivery recorded: the outbox is empty, a marker per package.
    outbox_drained(store.as_ref()).await;
    let (markers, _) = get_all(store.as_ref(), "/statemanager/delivered/", 100)
        .await
        .unwrap();
    assert_eq!(markers.len(), PACKAGES, "a delivery marker per package");
    engine.shutdown().await;

    let (engine, action) = start(store.clone(), small_txns()).await;
    // The check ran during start-up: nothing was found lost.
    assert_eq!(
        engine
            .metrics()
            .lost_reconciles
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    let (left, _) = get_all(store.as_ref(), "/statemanager/outbox/", 100)
        .await
        .unwrap();
    assert!(left.is_empty(), "no record written again: {left:?}");
    assert_eq!(action.count().await, 0);
    engine.shutdown().await;
}
