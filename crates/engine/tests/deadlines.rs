//! Deadlines: an input's wait is bounded from its arrival, queued or
//! committing, and an input answered unavailable is never written later.
//!
//! The store is a `MemoryStore` that can be frozen: a transaction sent
//! while it is frozen waits until it thaws (and is lost if its sender gives
//! up first, like a request that never reached the server). Time is
//! paused, so the bounds are checked exactly, without sleeping.

mod support;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use state_store::{
    Applied, Batch, KeyValue, ListOptions, MemoryStore, Page, Revision, StateStore, StoreError,
    WatchStream,
};
use statemachine_core::ErrorCode;
use support::*;
use tokio::sync::watch;
use tokio::time::Instant;

struct FrozenStore {
    inner: MemoryStore,
    frozen: watch::Sender<bool>,
}

impl FrozenStore {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryStore::default(),
            frozen: watch::channel(false).0,
        })
    }

    fn freeze(&self, frozen: bool) {
        self.frozen.send_replace(frozen);
    }

    async fn thawed(&self) {
        let mut frozen = self.frozen.subscribe();
        let _ = frozen.wait_for(|f| !*f).await;
    }
}

#[async_trait]
impl StateStore for FrozenStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.thawed().await;
        self.inner.get(key).await
    }

    async fn get_prefix(&self, prefix: &str, options: ListOptions) -> Result<Page, StoreError> {
        self.thawed().await;
        self.inner.get_prefix(prefix, options).await
    }

    async fn apply(&self, batch: Batch) -> Result<Applied, StoreError> {
        self.thawed().await;
        self.inner.apply(batch).await
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.thawed().await;
        self.inner.delete(key).await
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        self.inner.watch(prefix, from).await
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        self.thawed().await;
        self.inner.revision().await
    }
}

const COMMIT_TIMEOUT: Duration = Duration::from_millis(500);
const SLACK: Duration = Duration::from_millis(100);

fn timeouts() -> engine::EngineConfig {
    let mut config = config();
    config.commit_timeout = COMMIT_TIMEOUT;
    config
}

#[tokio::test(start_paused = true)]
async fn with_a_frozen_store_every_request_is_answered_within_the_commit_timeout_and_never_written_later()
 {
    let store = FrozenStore::new();
    let (engine, _) = start(store.clone(), timeouts()).await;
    let h = engine.handle();
    store.freeze(true);
    // 16 callers, arriving over 300 ms: the first commit stalls, the
    // others queue behind it. Every other one has a deadline of its own,
    // sooner than the commit timeout: it runs out while queued.
    let mut callers = Vec::new();
    for k in 0..16u64 {
        let h = h.clone();
        let within = (k % 2 == 1).then_some(Duration::from_millis(100));
        callers.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20 * k)).await;
            let asked = Instant::now();
            let answer = h
                .change_state_within(scenario(&format!("s{k}"), "Idle", "Waiting"), within)
                .await;
            (answer, asked.elapsed(), within.unwrap_or(COMMIT_TIMEOUT))
        }));
    }
    for (k, caller) in callers.into_iter().enumerate() {
        let (answer, waited, limit) = caller.await.unwrap();
        assert_eq!(
            answer.code,
            ErrorCode::ResourceUnavailable,
            "s{k}: {}",
            answer.message
        );
        assert!(
            waited <= limit + SLACK,
            "s{k} answered after {waited:?} (limit {limit:?})"
        );
    }
    // The store resumes; a later request commits, so everything queued
    // before it has been dealt with.
    store.freeze(false);
    let later = h.change_state(scenario("later", "Idle", "Waiting")).await;
    assert_success(later.code, &later.message);
    for k in 0..16 {
        assert_eq!(
            value(store.as_ref(), &format!("/scenario/s{k}/state")).await,
            None,
            "s{k} was answered unavailable: it must never be written"
        );
    }
    assert!(
        engine
            .metrics()
            .expired
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_callers_deadline_sooner_than_the_commit_timeout_bounds_its_wait() {
    let store = FrozenStore::new();
    let (engine, _) = start(store.clone(), timeouts()).await;
    let h = engine.handle();
    store.freeze(true);
    let within = Duration::from_millis(150);
    let asked = Instant::now();
    let first = tokio::spawn({
        let h = h.clone();
        async move {
            h.change_state_within(scenario("a", "Idle", "Waiting"), Some(within))
                .await
        }
    });
    let report = h
        .report_containers_within(
            report("n1", vec![container("model-m1", &[("Status", "running")])]),
            Some(within),
        )
        .await;
    assert_eq!(
        report.code,
        ErrorCode::ResourceUnavailable,
        "{}",
        report.message
    );
    let first = first.await.unwrap();
    assert_eq!(
        first.code,
        ErrorCode::ResourceUnavailable,
        "{}",
        first.message
    );
    assert!(asked.elapsed() <= within + SLACK, "{:?}", asked.elapsed());
    store.freeze(false);
    let later = h.change_state(scenario("b", "Idle", "Waiting")).await;
    assert_success(later.code, &later.message);
    assert_eq!(value(store.as_ref(), "/scenario/a/state").await, None);
    assert_eq!(value(store.as_ref(), "/model/m1/state").await, None);
    engine.shutdown().await;
}

/// A store that applies a transaction and then reports a timeout, as a
/// store client whose own deadline passed after the request was sent.
struct LateStore {
    inner: MemoryStore,
    late: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl StateStore for LateStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.inner.get(key).await
    }

    async fn get_prefix(&self, prefix: &str, options: ListOptions) -> Result<Page, StoreError> {
        self.inner.get_prefix(prefix, options).await
    }

    async fn apply(&self, batch: Batch) -> Result<Applied, StoreError> {
        let applied = self.inner.apply(batch).await?;
        if self.late.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Timeout {
                operation: "apply",
                after: Duration::from_secs(5),
            });
        }
        Ok(applied)
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

#[tokio::test]
async fn a_store_timeout_after_the_transaction_was_sent_is_never_answered_nothing_was_written() {
    let store = Arc::new(LateStore {
        inner: MemoryStore::default(),
        late: std::sync::atomic::AtomicBool::new(true),
    });
    let (engine, _) = start(store.clone(), timeouts()).await;
    let h = engine.handle();
    let answer = h.change_state(scenario("s", "Idle", "Waiting")).await;
    assert_eq!(answer.code, ErrorCode::ResourceUnavailable, "{answer:?}");
    assert!(
        !answer.message.contains("nothing was written"),
        "the transaction was sent: {answer:?}"
    );
    // It was written: the cache follows the store.
    assert_eq!(
        value(store.as_ref(), "/scenario/s/state").await.as_deref(),
        Some("Waiting")
    );
    let mut seen = String::new();
    for _ in 0..100 {
        seen = h
            .get_state(statemachine_core::ResourceKind::Scenario, "s")
            .await
            .unwrap()
            .unwrap()
            .state;
        if seen == "Waiting" {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(seen, "Waiting", "the watch brought the cache in line");
    store.late.store(false, std::sync::atomic::Ordering::SeqCst);
    let next = h.change_state(scenario("s", "Waiting", "Satisfied")).await;
    assert_success(next.code, &next.message);
    engine.shutdown().await;
}

/// A store whose first definitions watch breaks and whose prefix reads fail
/// while `lists_fail` is set.
struct BrokenWatchStore {
    inner: MemoryStore,
    lists_fail: std::sync::atomic::AtomicBool,
    break_once: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl StateStore for BrokenWatchStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.inner.get(key).await
    }

    async fn get_prefix(&self, prefix: &str, options: ListOptions) -> Result<Page, StoreError> {
        if self.lists_fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::unavailable("listing refused (test)"));
        }
        self.inner.get_prefix(prefix, options).await
    }

    async fn apply(&self, batch: Batch) -> Result<Applied, StoreError> {
        self.inner.apply(batch).await
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.inner.delete(key).await
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        if prefix == "Scenario/"
            && self
                .break_once
                .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            let broken: Result<state_store::WatchEvent, StoreError> =
                Err(StoreError::unavailable("watch lost (test)"));
            return Ok(Box::pin(futures::stream::iter([broken])));
        }
        self.inner.watch(prefix, from).await
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        self.inner.revision().await
    }
}

#[tokio::test(start_paused = true)]
async fn a_re_list_that_fails_is_retried_later_while_the_engine_goes_on_answering() {
    let store = Arc::new(BrokenWatchStore {
        inner: MemoryStore::default(),
        lists_fail: std::sync::atomic::AtomicBool::new(false),
        break_once: std::sync::atomic::AtomicBool::new(true),
    });
    let (engine, _) = {
        // Start-up lists every prefix; the broken watch is seen right after.
        let started = start(store.clone(), timeouts()).await;
        store
            .lists_fail
            .store(true, std::sync::atomic::Ordering::SeqCst);
        started
    };
    let h = engine.handle();
    // Several re-list attempts fail meanwhile; the engine still commits.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let answer = h.change_state(scenario("s", "Idle", "Waiting")).await;
    assert_success(answer.code, &answer.message);
    // The store lists again: the watch is re-established and a definition
    // written afterwards reaches the engine (a new scenario gets Idle).
    store
        .lists_fail
        .store(false, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(20)).await;
    put(
        store.as_ref(),
        "Scenario/later",
        "kind: Scenario\nmetadata:\n  name: later\nspec:\n  target: p\n",
    )
    .await;
    let mut state = None;
    for _ in 0..100 {
        state = value(store.as_ref(), "/scenario/later/state").await;
        if state.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(state.as_deref(), Some("Idle"));
    engine.shutdown().await;
}
