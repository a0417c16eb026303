//! `EmbeddedStore` against the conformance suite every `StateStore` must
//! pass, and what only a store on disk must do: keep everything across a
//! reopen, replay a watch across it, and refuse a second owner.

use std::time::Duration;

use futures::StreamExt;
use state_store::{Batch, MemoryStoreConfig, StateStore, StoreError, conformance};
use store_embedded::{EmbeddedConfig, EmbeddedStore, OpenError};

fn open(dir: &std::path::Path) -> EmbeddedStore {
    EmbeddedStore::open(EmbeddedConfig::new(dir)).expect("open the embedded store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    conformance::run_all(&store, "/conformance").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_rejects_batches_over_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    conformance::too_large(&open(dir.path()), "/conformance/too_large", 128).await;
    let dir = tempfile::tempdir().unwrap();
    let small = EmbeddedStore::open(EmbeddedConfig {
        limits: MemoryStoreConfig {
            max_txn_ops: 5,
            ..MemoryStoreConfig::default()
        },
        ..EmbeddedConfig::new(dir.path())
    })
    .unwrap();
    conformance::too_large(&small, "/conformance/too_large", 5).await;
}

/// One-slot watch channels and a small page size: every watch lags and
/// catches up from the log, every listing pages; then the suite runs again
/// on the reopened store, which must clean up the first run's keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_passes_with_tiny_buffers_and_again_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig {
        limits: MemoryStoreConfig {
            watch_channel_capacity: 1,
            default_page_size: 4,
            ..MemoryStoreConfig::default()
        },
        ..EmbeddedConfig::new(dir.path())
    };
    let store = EmbeddedStore::open(config.clone()).unwrap();
    conformance::run_all(&store, "/tiny").await;
    drop(store);
    let store = EmbeddedStore::open(config).unwrap();
    conformance::run_all(&store, "/tiny").await;
}

#[tokio::test]
async fn keys_revisions_and_the_watch_log_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let first = store
        .apply(Batch::new().put("/a", "1").put("/b", "1"))
        .await
        .unwrap()
        .revision;
    store.apply(Batch::new().put("/a", "2")).await.unwrap();
    assert!(store.delete("/b").await.unwrap());
    let last = store.revision().await.unwrap();
    let a = store.get("/a").await.unwrap().unwrap();
    drop(store);

    let store = open(dir.path());
    assert_eq!(store.revision().await.unwrap(), last);
    assert_eq!(store.get("/a").await.unwrap(), Some(a.clone()));
    assert_eq!(store.get("/b").await.unwrap(), None);
    assert_eq!(a.create_revision, first);
    // A watcher resumes from a revision written before the restart.
    let mut watch = store.watch("/", first).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let event = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("the replay answers")
            .expect("an event")
            .expect("no error");
        seen.push((event.kv.key, event.kv.mod_revision));
    }
    assert_eq!(
        seen,
        [
            ("/a".to_owned(), first),
            ("/b".to_owned(), first),
            ("/a".to_owned(), first + 1),
            ("/b".to_owned(), first + 2),
        ]
    );
    // And the next write continues the numbering.
    let next = store.apply(Batch::new().put("/c", "1")).await.unwrap();
    assert_eq!(next.revision, last + 1);
}

#[tokio::test]
async fn the_log_is_bounded_and_older_revisions_are_compacted_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig {
        limits: MemoryStoreConfig {
            history_limit: 4,
            ..MemoryStoreConfig::default()
        },
        ..EmbeddedConfig::new(dir.path())
    };
    let store = EmbeddedStore::open(config.clone()).unwrap();
    for i in 0..10 {
        store
            .apply(Batch::new().put("/k", i.to_string()))
            .await
            .unwrap(); // revisions 2..=11
    }
    drop(store);
    let store = EmbeddedStore::open(config).unwrap();
    let mut old = store.watch("/k", 2).await.unwrap();
    assert!(matches!(
        old.next().await,
        Some(Err(StoreError::Compacted {
            requested: 2,
            compact_revision: 8
        }))
    ));
    let mut kept = store.watch("/k", 8).await.unwrap();
    for revision in 8..=11 {
        let event = kept.next().await.unwrap().unwrap();
        assert_eq!(event.kv.mod_revision, revision);
    }
}

#[tokio::test]
async fn a_second_owner_of_the_data_dir_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path());
    let second = EmbeddedStore::open(EmbeddedConfig::new(dir.path()));
    let Err(error @ OpenError::Locked { .. }) = second else {
        panic!("expected Locked, got {second:?}");
    };
    let message = error.to_string();
    assert!(
        message.contains(&dir.path().display().to_string()) && message.contains("in use"),
        "{message}"
    );
}

#[tokio::test]
async fn an_unusable_data_dir_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let error = EmbeddedStore::open(EmbeddedConfig::new(file.join("sub"))).unwrap_err();
    assert!(matches!(error, OpenError::Dir { .. }), "{error:?}");
    assert!(error.to_string().contains("not-a-dir"), "{error}");
    let garbage = dir.path().join("garbage");
    std::fs::create_dir(&garbage).unwrap();
    std::fs::write(garbage.join(store_embedded::FILE_NAME), vec![7u8; 8192]).unwrap();
    let error = EmbeddedStore::open(EmbeddedConfig::new(&garbage)).unwrap_err();
    assert!(
        error.to_string().contains(store_embedded::FILE_NAME),
        "{error}"
    );
}
