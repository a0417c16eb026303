//! The storage seam of the StateManager.
//!
//! [`StateStore`] is the one trait every piece of storage implements: etcd
//! (`store-etcd`), the embedded database (`store-embedded`: a [`MemoryStore`]
//! whose [`Journal`] keeps every write on disk), and [`MemoryStore`] alone
//! for tests.
//! Its semantics follow etcd's, so code written against one store behaves the
//! same on the other:
//!
//! - every write bumps a store-wide **revision**; each key remembers the
//!   revision of its last modification (`mod_revision`);
//! - [`StateStore::apply`] writes a [`Batch`] atomically: either every
//!   [`Guard`] holds and every [`Op`] is applied under one new revision, or
//!   nothing is written and the first failing guard is reported;
//! - [`StateStore::watch`] streams every change under a prefix from a given
//!   revision on, in revision order, and reports [`StoreError::Compacted`]
//!   when that revision is no longer available, so callers can re-list instead
//!   of silently missing events.
//!
//! The `conformance` module (cargo feature `conformance`, for the tests of
//! crates that implement a store) holds the behavioural tests every
//! implementation must pass.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod batch;
#[cfg(feature = "conformance")]
pub mod conformance;
mod error;
mod memory;
mod request;

use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;

pub use batch::{Batch, Guard, Op};
pub use error::{Cause, StoreError};
pub use memory::{Journal, JournalEntry, MemoryStore, MemoryStoreConfig, Restored};
pub use request::{check_key, check_watch_start, is_valid_key};

/// A store-wide, monotonically increasing version number (etcd's revision).
pub type Revision = i64;

/// One key with its value and bookkeeping revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The full key.
    pub key: String,
    /// The raw value (state names and YAML definitions are UTF-8).
    pub value: Vec<u8>,
    /// The revision at which the key was created.
    pub create_revision: Revision,
    /// The revision of the key's last modification; guards compare against it.
    pub mod_revision: Revision,
}

impl KeyValue {
    /// The value as UTF-8, or `None` when it is not valid UTF-8.
    pub fn value_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.value).ok()
    }
}

/// Options of a prefix read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListOptions {
    /// Return only keys strictly greater than this one (the previous page's
    /// last key). `None` starts at the beginning of the prefix.
    pub start_after: Option<String>,
    /// At most this many keys; 0 means the store's default page size.
    pub limit: usize,
}

/// One page of a prefix read, in ascending key order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    /// The keys of this page, ascending.
    pub kvs: Vec<KeyValue>,
    /// `true` when more keys follow this page.
    pub more: bool,
    /// The store's revision when the page was read. A caller that lists and
    /// then watches from `revision + 1` misses no change.
    pub revision: Revision,
}

/// What a successful [`StateStore::apply`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// The revision the batch was written at (the current revision when the
    /// batch was empty).
    pub revision: Revision,
}

/// What happened to a key, as seen by a watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or its value replaced.
    Put,
    /// The key was deleted.
    Delete,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change; for a delete the value is empty and
    /// `mod_revision` is the revision of the delete.
    pub kv: KeyValue,
}

/// The stream a watch returns. It ends after yielding an error.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, StoreError>> + Send>>;

/// The key-value store the StateManager keeps its states in.
///
/// Object safe: the engine holds an `Arc<dyn StateStore>`.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// Reads one key; `Ok(None)` when it does not exist.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Reads one page of the keys starting with `prefix`, in ascending order.
    async fn get_prefix(&self, prefix: &str, options: ListOptions) -> Result<Page, StoreError>;

    /// Applies `batch` atomically: all guards hold and all ops are written
    /// under one new revision, or nothing is written.
    ///
    /// A failed guard gives [`StoreError::GuardFailed`] naming the key. A batch
    /// naming the same key twice is merged first (the last op wins), see
    /// [`Batch::normalize`].
    async fn apply(&self, batch: Batch) -> Result<Applied, StoreError>;

    /// Deletes one key; `Ok(true)` when it existed.
    async fn delete(&self, key: &str) -> Result<bool, StoreError>;

    /// Streams every change of a key under `prefix` with a revision of at
    /// least `from_revision` (0 means "from now on"), in revision order.
    ///
    /// When `from_revision` has been compacted away the stream yields
    /// [`StoreError::Compacted`] and ends; the caller re-lists and watches
    /// again.
    async fn watch(&self, prefix: &str, from_revision: Revision)
    -> Result<WatchStream, StoreError>;

    /// The store's current revision.
    async fn revision(&self) -> Result<Revision, StoreError>;
}

/// Reads every key under `prefix`, page by page.
///
/// The returned revision is the first page's: changes made while paging may
/// or may not be included, so a caller that watches from `revision + 1`
/// sees each of them again (upserts are idempotent) and misses none.
pub async fn get_all(
    store: &dyn StateStore,
    prefix: &str,
    page_size: usize,
) -> Result<(Vec<KeyValue>, Revision), StoreError> {
    let mut all = Vec::new();
    let mut options = ListOptions {
        start_after: None,
        limit: page_size,
    };
    let mut first_revision = None;
    loop {
        let page = store.get_prefix(prefix, options.clone()).await?;
        first_revision.get_or_insert(page.revision);
        let last = page.kvs.last().map(|kv| kv.key.clone());
        all.extend(page.kvs);
        match (page.more, last) {
            (true, Some(last)) => options.start_after = Some(last),
            _ => break,
        }
    }
    Ok((all, first_revision.unwrap_or_default()))
}
