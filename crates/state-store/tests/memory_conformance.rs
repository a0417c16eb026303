//! `MemoryStore` against the conformance suite every `StateStore` must pass.

use state_store::{MemoryStore, MemoryStoreConfig, conformance};

#[tokio::test]
async fn memory_store_passes_the_conformance_suite() {
    let store = MemoryStore::default();
    conformance::run_all(&store, "/conformance").await;
}

#[tokio::test]
async fn memory_store_rejects_batches_over_the_default_limit() {
    let store = MemoryStore::default();
    conformance::too_large(&store, "/conformance/too_large", 128).await;
}

#[tokio::test]
async fn memory_store_rejects_batches_over_a_configured_limit() {
    let store = MemoryStore::new(MemoryStoreConfig {
        max_txn_ops: 5,
        ..MemoryStoreConfig::default()
    });
    conformance::too_large(&store, "/conformance/too_large", 5).await;
}

/// Two suites sharing one store on two threads must not disturb each other:
/// the cases assert only relative revisions and touch only their own prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_suites_share_one_store() {
    let store = MemoryStore::default();
    tokio::join!(
        conformance::run_all(&store, "/shared/one"),
        conformance::run_all(&store, "/shared/two"),
    );
}

/// With one-slot watch channels and a small page size every watch of the
/// suite lags and catches up from the event log, and every listing pages.
#[tokio::test]
async fn memory_store_passes_with_tiny_buffers() {
    let store = MemoryStore::new(MemoryStoreConfig {
        watch_channel_capacity: 1,
        default_page_size: 4,
        ..MemoryStoreConfig::default()
    });
    conformance::run_all(&store, "/tiny").await;
}

/// A case leaves its keys behind; running the suite again on the same store
/// must clean them up first and pass again.
#[tokio::test]
async fn the_suite_runs_twice_on_one_store() {
    let store = MemoryStore::default();
    conformance::run_all(&store, "/again").await;
    conformance::run_all(&store, "/again").await;
}
