//! The leader's store: every write guarded by the term.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use state_store::{
    Applied, Batch, Guard, KeyValue, ListOptions, Page, Revision, StateStore, StoreError,
    WatchStream,
};

use crate::Term;

/// What a fenced write answers: nothing was written, and why.
pub const FENCED_MESSAGE: &str =
    "this instance no longer leads its HA group (fenced); nothing was written";

/// A [`StateStore`] whose every write holds only while the term does.
///
/// Each batch gets, as its first guard, the election key at the term's
/// revision; a delete becomes such a batch. When that guard fails the
/// batch wrote nothing, the caller gets [`StoreError::Unavailable`] saying
/// so, and `on_fenced` is called (the election steps down). Reads and
/// watches pass through.
pub struct FencedStore {
    inner: Arc<dyn StateStore>,
    key: String,
    revision: Revision,
    on_fenced: Box<dyn Fn() + Send + Sync>,
    fenced: AtomicU64,
}

impl FencedStore {
    /// `inner` fenced by `term`.
    pub fn new(
        inner: Arc<dyn StateStore>,
        term: &Term,
        on_fenced: impl Fn() + Send + Sync + 'static,
    ) -> Self {
        Self {
            inner,
            key: term.key.clone(),
            revision: term.revision,
            on_fenced: Box::new(on_fenced),
            fenced: AtomicU64::new(0),
        }
    }

    /// Writes refused so far because the term had ended.
    pub fn fenced_writes(&self) -> u64 {
        self.fenced.load(Ordering::Relaxed)
    }

    fn fence(&self, mut batch: Batch) -> Batch {
        batch.guards.insert(
            0,
            Guard {
                key: self.key.clone(),
                mod_revision: self.revision,
            },
        );
        batch
    }

    /// Maps the fence's own guard failure to "not the leader".
    fn checked(&self, result: Result<Applied, StoreError>) -> Result<Applied, StoreError> {
        match result {
            Err(StoreError::GuardFailed { key, actual, .. }) if key == self.key => {
                self.fenced.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    key = %self.key,
                    term = self.revision,
                    now = actual,
                    "a write was fenced: the election key no longer holds this term"
                );
                (self.on_fenced)();
                Err(StoreError::unavailable(FENCED_MESSAGE))
            }
            other => other,
        }
    }
}

#[async_trait]
impl StateStore for FencedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.inner.get(key).await
    }

    async fn get_prefix(&self, prefix: &str, options: ListOptions) -> Result<Page, StoreError> {
        self.inner.get_prefix(prefix, options).await
    }

    async fn apply(&self, batch: Batch) -> Result<Applied, StoreError> {
        let fenced = self.fence(batch);
        self.checked(self.inner.apply(fenced).await)
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let Some(existing) = self.inner.get(key).await? else {
            return Ok(false);
        };
        let batch = Batch::new().guard(key, existing.mod_revision).delete(key);
        match self.checked(self.inner.apply(self.fence(batch)).await) {
            Ok(_) => Ok(true),
            // Changed or deleted by another writer since the read: as etcd
            // would answer a delete of a key that is gone.
            Err(StoreError::GuardFailed { .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        self.inner.watch(prefix, from_revision).await
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        self.inner.revision().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use state_store::MemoryStore;

    use super::*;
    use crate::Leader;

    fn term(key: &str, revision: Revision) -> Term {
        Term {
            key: key.into(),
            revision,
            lease: 1,
            leader: Leader {
                id: "a".into(),
                url: "http://a".into(),
            },
        }
    }

    #[tokio::test]
    async fn writes_hold_while_the_term_does_and_none_after() {
        let memory: Arc<dyn StateStore> = Arc::new(MemoryStore::default());
        let elected = memory
            .apply(Batch::new().guard("/l", 0).put("/l", "a"))
            .await
            .unwrap();
        let called = Arc::new(AtomicBool::new(false));
        let seen = called.clone();
        let store = FencedStore::new(memory.clone(), &term("/l", elected.revision), move || {
            seen.store(true, Ordering::SeqCst)
        });
        store.apply(Batch::new().put("/k", "1")).await.unwrap();
        assert!(store.delete("/k").await.unwrap());
        assert!(!store.delete("/k").await.unwrap());
        store.apply(Batch::new().put("/k", "2")).await.unwrap();
        // Another term begins: the old leader's writes are refused.
        memory.apply(Batch::new().put("/l", "b")).await.unwrap();
        let before = memory.revision().await.unwrap();
        let error = store.apply(Batch::new().put("/k", "3")).await.unwrap_err();
        assert_eq!(error, StoreError::unavailable(FENCED_MESSAGE));
        assert!(store.delete("/k").await.is_err());
        assert!(called.load(Ordering::SeqCst));
        assert_eq!(store.fenced_writes(), 2);
        assert_eq!(memory.revision().await.unwrap(), before);
        assert_eq!(memory.get("/k").await.unwrap().unwrap().value, b"2");
    }

    #[tokio::test]
    async fn a_guard_of_the_caller_still_fails_as_its_own() {
        let memory: Arc<dyn StateStore> = Arc::new(MemoryStore::default());
        let elected = memory.apply(Batch::new().put("/l", "a")).await.unwrap();
        let store = FencedStore::new(memory.clone(), &term("/l", elected.revision), || {});
        let error = store
            .apply(Batch::new().guard("/x", 7).put("/x", "1"))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, StoreError::GuardFailed { key, .. } if key == "/x"),
            "{error:?}"
        );
        assert_eq!(store.fenced_writes(), 0);
    }
}
