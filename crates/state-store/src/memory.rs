//! [`MemoryStore`]: the [`StateStore`] kept in memory, with etcd's semantics.
//!
//! One `std::sync::Mutex` guards the whole store. Every operation holds it for
//! a short, synchronous critical section and never across an `.await`, so the
//! async methods never block for long and a slow reader cannot stall writers.
//!
//! Watches are fed through one bounded channel per watcher. A writer only ever
//! `try_send`s; when a watcher's channel is full the writer drops that channel
//! instead of waiting. The watcher then drains what it has, and catches up from
//! the retained event log, as an unsynced etcd watcher does; when the log no
//! longer reaches back far enough it yields [`StoreError::Compacted`] and ends,
//! so the caller re-lists. No event is ever skipped silently.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::ops::Bound;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use async_trait::async_trait;
use futures::Stream;
use tokio::sync::mpsc;

use crate::{
    Applied, Batch, EventKind, KeyValue, ListOptions, Op, Page, Revision, StateStore, StoreError,
    WatchEvent, WatchStream, check_key, check_watch_start,
};

/// Limits of a [`MemoryStore`]. The defaults mirror a stock etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryStoreConfig {
    /// The most guards, and separately the most ops, one batch may hold after
    /// [`Batch::normalize`]; more gives [`StoreError::TooLarge`]. etcd's
    /// `--max-txn-ops` defaults to 128.
    pub max_txn_ops: usize,
    /// The page size of a prefix read whose [`ListOptions::limit`] is 0.
    /// 0 here means "no limit".
    pub default_page_size: usize,
    /// How many events the store keeps for watches that start in the past.
    /// When the log grows beyond it, whole revisions are dropped from its
    /// front and the store's compaction revision moves past them.
    pub history_limit: usize,
    /// How many revisions a watcher's channel buffers before the watcher is
    /// considered to lag (values below 1 count as 1). A lagging watcher
    /// catches up from the event log, or yields [`StoreError::Compacted`] when
    /// the log no longer holds its position.
    pub watch_channel_capacity: usize,
}

impl Default for MemoryStoreConfig {
    fn default() -> Self {
        Self {
            max_txn_ops: 128,
            default_page_size: 1000,
            history_limit: 10_000,
            watch_channel_capacity: 1024,
        }
    }
}

/// A [`StateStore`] in memory, with etcd v3's semantics.
///
/// - The store starts at revision 1 (etcd's initial revision), so the first
///   write is at revision 2.
/// - Each [`apply`](StateStore::apply) that changes something bumps the
///   revision by exactly one for the whole batch; every key it writes gets that
///   revision as `mod_revision`, and a key that did not exist before also as
///   `create_revision`. A batch that changes nothing (only guards, or only
///   deletes of absent keys) keeps the revision, reports the current one and
///   emits no event, as etcd does. A put of an unchanged value is a change.
/// - [`delete`](StateStore::delete) bumps the revision only when the key
///   existed.
/// - Watches replay from a bounded event log (see
///   [`MemoryStoreConfig::history_limit`]) and then continue live with no gap
///   and no duplicate. [`MemoryStore::compact`] drops history on demand.
///
/// Clones share the same store.
#[derive(Clone, Default)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    config: MemoryStoreConfig,
    inner: Mutex<Inner>,
    /// Where writes are made durable before they are shown; `None` for a
    /// store that lives in memory only.
    journal: Option<Journaled>,
}

/// A journal and the gate that lets one journaled write through at a time.
struct Journaled {
    journal: Arc<dyn Journal>,
    /// Held from a write's guard check to its installation, so that the
    /// state a write was checked against cannot change while the journal
    /// writes it.
    writer: Arc<tokio::sync::Mutex<()>>,
}

/// Makes a [`MemoryStore`]'s writes durable.
///
/// [`MemoryStore::with_journal`] hands each revision to
/// [`append`](Journal::append) before the revision becomes visible to
/// readers and watches; a write the journal refuses is not applied. Calls
/// come one at a time, from a blocking thread.
pub trait Journal: Send + Sync + 'static {
    /// Durably records one revision's writes, or fails having recorded
    /// nothing of them.
    fn append(&self, entry: &JournalEntry<'_>) -> Result<(), StoreError>;
}

/// One revision's writes, as a [`Journal`] records them.
#[derive(Debug, Clone, Copy)]
pub struct JournalEntry<'a> {
    /// The revision the writes are made at.
    pub revision: Revision,
    /// The writes, in the order of the batch: puts carry their value and
    /// revisions, deletes only their key.
    pub events: &'a [WatchEvent],
    /// The oldest revision a watch may start at once this entry is applied:
    /// the journal may drop the events of older revisions.
    pub compact_revision: Revision,
}

/// What a [`Journal`] held when its store was reopened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    /// The store's revision (1 for a new store).
    pub revision: Revision,
    /// The oldest revision a watch may start at.
    pub compact_revision: Revision,
    /// Every key, in any order.
    pub kvs: Vec<KeyValue>,
    /// The retained events, one entry per revision, oldest first.
    pub log: Vec<(Revision, Vec<WatchEvent>)>,
}

struct Inner {
    revision: Revision,
    kvs: BTreeMap<String, Stored>,
    /// Every event with a revision of at least `compact_revision`, grouped by
    /// revision, oldest first.
    log: VecDeque<Arc<RevisionEvents>>,
    log_events: usize,
    /// Watches may start at this revision or later (etcd's compact revision).
    compact_revision: Revision,
    watchers: HashMap<u64, Watcher>,
    next_watcher_id: u64,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            revision: 1,
            kvs: BTreeMap::new(),
            log: VecDeque::new(),
            log_events: 0,
            compact_revision: 0,
            watchers: HashMap::new(),
            next_watcher_id: 0,
        }
    }
}

struct Stored {
    value: Vec<u8>,
    create_revision: Revision,
    mod_revision: Revision,
}

/// The events of one revision, in the order of the batch's ops.
struct RevisionEvents {
    revision: Revision,
    events: Vec<WatchEvent>,
}

struct Watcher {
    prefix: String,
    tx: mpsc::Sender<Arc<RevisionEvents>>,
}

impl MemoryStore {
    /// An empty store with the given limits.
    pub fn new(config: MemoryStoreConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                config,
                inner: Mutex::new(Inner::default()),
                journal: None,
            }),
        }
    }

    /// A store that starts from what `journal` held (`restored`) and hands
    /// every later write to `journal` before showing it. Reads never wait
    /// for the journal; writes wait for each other.
    pub fn with_journal(
        config: MemoryStoreConfig,
        restored: Restored,
        journal: Arc<dyn Journal>,
    ) -> Self {
        let mut inner = Inner {
            revision: restored.revision.max(1),
            compact_revision: restored.compact_revision,
            ..Inner::default()
        };
        for kv in restored.kvs {
            inner.kvs.insert(
                kv.key,
                Stored {
                    value: kv.value,
                    create_revision: kv.create_revision,
                    mod_revision: kv.mod_revision,
                },
            );
        }
        for (revision, events) in restored.log {
            inner.log_events += events.len();
            inner
                .log
                .push_back(Arc::new(RevisionEvents { revision, events }));
        }
        Self {
            shared: Arc::new(Shared {
                config,
                inner: Mutex::new(inner),
                journal: Some(Journaled {
                    journal,
                    writer: Arc::new(tokio::sync::Mutex::new(())),
                }),
            }),
        }
    }

    /// The store's limits.
    pub fn config(&self) -> &MemoryStoreConfig {
        &self.shared.config
    }

    /// Drops the event history before `revision`, like etcd's compaction:
    /// afterwards a watch from a revision below `revision` yields
    /// [`StoreError::Compacted`]; from `revision` on it still works. Running
    /// watches are not affected.
    ///
    /// As in etcd, compacting a future revision is an
    /// [`InvalidRequest`](StoreError::InvalidRequest), and compacting at or
    /// below the current compaction revision gives
    /// [`Compacted`](StoreError::Compacted).
    pub fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let mut inner = self.shared.lock();
        if revision > inner.revision {
            return Err(StoreError::invalid_request(format!(
                "cannot compact revision {revision}: the current revision is {}",
                inner.revision
            )));
        }
        if revision <= inner.compact_revision {
            return Err(StoreError::Compacted {
                requested: revision,
                compact_revision: inner.compact_revision,
            });
        }
        while inner.log.front().is_some_and(|g| g.revision < revision) {
            if let Some(group) = inner.log.pop_front() {
                inner.log_events -= group.events.len();
            }
        }
        inner.compact_revision = revision;
        Ok(())
    }

    /// The oldest revision a watch may still start at (etcd's compact
    /// revision; 0 while nothing has been dropped).
    pub fn compact_revision(&self) -> Revision {
        self.shared.lock().compact_revision
    }

    /// How many watches are currently registered (dropped watch streams are
    /// removed at once). Meant for tests of resource release.
    pub fn watcher_count(&self) -> usize {
        self.shared.lock().watchers.len()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.shared.lock();
        f.debug_struct("MemoryStore")
            .field("revision", &inner.revision)
            .field("keys", &inner.kvs.len())
            .field("compact_revision", &inner.compact_revision)
            .field("watchers", &inner.watchers.len())
            .field("config", &self.shared.config)
            .finish()
    }
}

impl Shared {
    /// Locks the store. Nothing panics while holding the lock, but should a
    /// panic ever poison it, the data is still consistent (every critical
    /// section validates before it mutates), so the poison is ignored.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a watcher for `prefix` that wants every event from
    /// `next_revision` on: returns the retained events it missed and a channel
    /// for the later ones. Both happen under one lock, so no revision falls
    /// between the snapshot and the channel, nor is in both.
    fn subscribe(&self, prefix: &str, next_revision: Revision) -> Result<Subscription, StoreError> {
        let mut inner = self.lock();
        if next_revision < inner.compact_revision {
            return Err(StoreError::Compacted {
                requested: next_revision,
                compact_revision: inner.compact_revision,
            });
        }
        let backlog: Vec<WatchEvent> = inner
            .log
            .iter()
            .filter(|group| group.revision >= next_revision)
            .flat_map(|group| group.events.iter())
            .filter(|event| event.kv.key.starts_with(prefix))
            .cloned()
            .collect();
        let (tx, rx) = mpsc::channel(self.config.watch_channel_capacity.max(1));
        let id = inner.next_watcher_id;
        inner.next_watcher_id += 1;
        inner.watchers.insert(
            id,
            Watcher {
                prefix: prefix.to_owned(),
                tx,
            },
        );
        Ok(Subscription {
            id,
            rx,
            backlog,
            current_revision: inner.revision,
        })
    }

    fn unsubscribe(&self, id: u64) {
        self.lock().watchers.remove(&id);
    }

    /// A write through the journal: guards checked, the journal written on a
    /// blocking thread, then the revision installed. The journal write and
    /// the installation run to the end even when the caller stops waiting,
    /// so memory never falls behind what the journal holds. Returns the
    /// revision the store is at afterwards, and whether the batch changed
    /// anything.
    async fn journaled_write(
        self: &Arc<Self>,
        batch: Batch,
    ) -> Result<(Revision, bool), StoreError> {
        let Some(journaled) = &self.journal else {
            return Err(StoreError::invalid_request("the store has no journal"));
        };
        let gate = Arc::clone(&journaled.writer).lock_owned().await;
        let (revision, events, compact_revision) = {
            let inner = self.lock();
            inner.check_guards(&batch)?;
            let events = inner.plan(batch.ops);
            if events.is_empty() {
                return Ok((inner.revision, false));
            }
            let revision = inner.revision + 1;
            let compact = inner.compaction_after(revision, events.len(), self.config.history_limit);
            (revision, events, compact)
        };
        let shared = Arc::clone(self);
        let journal = Arc::clone(&journaled.journal);
        let task = tokio::task::spawn_blocking(move || {
            let _gate = gate;
            journal.append(&JournalEntry {
                revision,
                events: &events,
                compact_revision,
            })?;
            Ok((shared.lock().install(events, &shared.config), true))
        });
        task.await.map_err(|error| StoreError::Unavailable {
            message: format!("the journal write did not finish: {error}"),
            source: Some(crate::Cause::new(error)),
        })?
    }
}

struct Subscription {
    id: u64,
    rx: mpsc::Receiver<Arc<RevisionEvents>>,
    backlog: Vec<WatchEvent>,
    current_revision: Revision,
}

impl Inner {
    fn kv(&self, key: &str) -> Option<KeyValue> {
        self.kvs.get(key).map(|stored| KeyValue {
            key: key.to_owned(),
            value: stored.value.clone(),
            create_revision: stored.create_revision,
            mod_revision: stored.mod_revision,
        })
    }

    fn mod_revision(&self, key: &str) -> Revision {
        self.kvs.get(key).map_or(0, |stored| stored.mod_revision)
    }

    /// All guards are checked before anything is written: all or nothing.
    fn check_guards(&self, batch: &Batch) -> Result<(), StoreError> {
        for guard in &batch.guards {
            let actual = self.mod_revision(&guard.key);
            if actual != guard.mod_revision {
                return Err(StoreError::GuardFailed {
                    key: guard.key.clone(),
                    expected: guard.mod_revision,
                    actual,
                });
            }
        }
        Ok(())
    }

    /// The events `ops` (already validated) would cause at the next
    /// revision; empty when they change nothing.
    fn plan(&self, ops: Vec<Op>) -> Vec<WatchEvent> {
        let revision = self.revision + 1;
        // Normalized batches name each key once, so each op sees the state
        // before the batch.
        let mut events: Vec<WatchEvent> = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                Op::Put { key, value } => {
                    let create_revision = self
                        .kvs
                        .get(&key)
                        .map_or(revision, |stored| stored.create_revision);
                    events.push(WatchEvent {
                        kind: EventKind::Put,
                        kv: KeyValue {
                            key,
                            value,
                            create_revision,
                            mod_revision: revision,
                        },
                    });
                }
                // etcd: deleting an absent key changes nothing.
                Op::Delete { key } if self.kvs.contains_key(&key) => {
                    events.push(WatchEvent {
                        kind: EventKind::Delete,
                        kv: KeyValue {
                            key,
                            value: Vec::new(),
                            create_revision: 0,
                            mod_revision: revision,
                        },
                    });
                }
                Op::Delete { .. } => {}
            }
        }
        events
    }

    /// The compact revision once `added` more events are logged at
    /// `revision`: whole revisions are dropped from the front of the log
    /// while it holds more than `history_limit` events.
    fn compaction_after(&self, revision: Revision, added: usize, history_limit: usize) -> Revision {
        let mut total = self.log_events + added;
        let mut compact = self.compact_revision;
        for group in &self.log {
            if total <= history_limit {
                return compact;
            }
            total -= group.events.len();
            compact = compact.max(group.revision + 1);
        }
        if total > history_limit {
            compact = compact.max(revision + 1);
        }
        compact
    }

    /// Applies planned events at the next revision. Returns the revision the
    /// store is at afterwards.
    fn install(&mut self, events: Vec<WatchEvent>, config: &MemoryStoreConfig) -> Revision {
        if events.is_empty() {
            return self.revision;
        }
        let revision = self.revision + 1;
        for event in &events {
            match event.kind {
                EventKind::Put => {
                    self.kvs.insert(
                        event.kv.key.clone(),
                        Stored {
                            value: event.kv.value.clone(),
                            create_revision: event.kv.create_revision,
                            mod_revision: revision,
                        },
                    );
                }
                EventKind::Delete => {
                    self.kvs.remove(&event.kv.key);
                }
            }
        }
        self.revision = revision;
        self.publish(RevisionEvents { revision, events }, config);
        revision
    }

    /// Writes already validated ops under one new revision, or under none
    /// when nothing changes. Returns the revision the store is at afterwards.
    fn write(&mut self, ops: Vec<Op>, config: &MemoryStoreConfig) -> Revision {
        let events = self.plan(ops);
        self.install(events, config)
    }

    /// Appends one revision's events to the log and hands them to the
    /// watchers, without ever waiting for one.
    fn publish(&mut self, group: RevisionEvents, config: &MemoryStoreConfig) {
        let group = Arc::new(group);
        let compact =
            self.compaction_after(group.revision, group.events.len(), config.history_limit);
        self.log_events += group.events.len();
        self.log.push_back(Arc::clone(&group));
        while self.log.front().is_some_and(|g| g.revision < compact) {
            if let Some(oldest) = self.log.pop_front() {
                self.log_events -= oldest.events.len();
            }
        }
        self.compact_revision = compact;

        let mut gone = Vec::new();
        for (id, watcher) in &self.watchers {
            let relevant = group
                .events
                .iter()
                .any(|event| event.kv.key.starts_with(&watcher.prefix));
            if !relevant {
                continue;
            }
            match watcher.tx.try_send(Arc::clone(&group)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::debug!(
                        prefix = %watcher.prefix,
                        revision = group.revision,
                        "watcher on prefix '{}' fell behind at revision {}; it will catch up from the event log",
                        watcher.prefix,
                        group.revision
                    );
                    gone.push(*id);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => gone.push(*id),
            }
        }
        for id in gone {
            self.watchers.remove(&id);
        }
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        check_key(key)?;
        Ok(self.shared.lock().kv(key))
    }

    async fn get_prefix(&self, prefix: &str, options: ListOptions) -> Result<Page, StoreError> {
        let limit = match (options.limit, self.shared.config.default_page_size) {
            (0, 0) => usize::MAX,
            (0, default) => default,
            (limit, _) => limit,
        };
        let inner = self.shared.lock();
        let lower = match options.start_after.as_deref() {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let mut matching = inner
            .kvs
            .range::<str, _>((lower, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix));
        let kvs: Vec<KeyValue> = matching
            .by_ref()
            .take(limit)
            .map(|(key, stored)| KeyValue {
                key: key.clone(),
                value: stored.value.clone(),
                create_revision: stored.create_revision,
                mod_revision: stored.mod_revision,
            })
            .collect();
        let more = matching.next().is_some();
        Ok(Page {
            kvs,
            more,
            revision: inner.revision,
        })
    }

    async fn apply(&self, batch: Batch) -> Result<Applied, StoreError> {
        let batch = batch.validated(self.shared.config.max_txn_ops)?;
        if self.shared.journal.is_some() {
            let (revision, _) = self.shared.journaled_write(batch).await?;
            return Ok(Applied { revision });
        }
        let mut inner = self.shared.lock();
        inner.check_guards(&batch)?;
        let revision = inner.write(batch.ops, &self.shared.config);
        Ok(Applied { revision })
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        check_key(key)?;
        let batch = Batch::new().delete(key);
        if self.shared.journal.is_some() {
            let (_, changed) = self.shared.journaled_write(batch).await?;
            return Ok(changed);
        }
        let mut inner = self.shared.lock();
        let existed = inner.kvs.contains_key(key);
        if existed {
            inner.write(batch.ops, &self.shared.config);
        }
        Ok(existed)
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        check_watch_start(from_revision)?;
        let next_revision = if from_revision == 0 {
            self.shared.lock().revision + 1
        } else {
            from_revision
        };
        let mut watch = MemoryWatch {
            shared: Arc::clone(&self.shared),
            prefix: prefix.to_owned(),
            next_revision,
            pending: VecDeque::new(),
            subscription: None,
            error: None,
            ended: false,
        };
        // Subscribe now, not on the first poll: a write made after `watch`
        // returns must reach the stream even when the log has dropped it by
        // the time the caller polls.
        watch.resubscribe();
        Ok(Box::pin(watch))
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        Ok(self.shared.lock().revision)
    }
}

/// The stream behind [`MemoryStore::watch`].
struct MemoryWatch {
    shared: Arc<Shared>,
    prefix: String,
    /// Every event below this revision has been moved to `pending`, or lies
    /// before the watch's start.
    next_revision: Revision,
    /// Events received but not yet yielded, in revision order.
    pending: VecDeque<WatchEvent>,
    /// The watcher's id and live channel; `None` once the store dropped the
    /// channel because the watcher lagged, and after the watch ended.
    subscription: Option<(u64, mpsc::Receiver<Arc<RevisionEvents>>)>,
    /// An error to yield once `pending` is drained; the stream ends after it.
    error: Option<StoreError>,
    ended: bool,
}

impl MemoryWatch {
    /// (Re)registers the watcher from `next_revision` on, taking the events
    /// it missed from the log, or records [`StoreError::Compacted`] when the
    /// log no longer reaches back that far.
    fn resubscribe(&mut self) {
        match self.shared.subscribe(&self.prefix, self.next_revision) {
            Ok(subscription) => {
                self.pending.extend(subscription.backlog);
                self.next_revision = self.next_revision.max(subscription.current_revision + 1);
                self.subscription = Some((subscription.id, subscription.rx));
            }
            Err(error) => {
                self.unsubscribe();
                self.error = Some(error);
            }
        }
    }

    fn unsubscribe(&mut self) {
        if let Some((id, _)) = self.subscription.take() {
            self.shared.unsubscribe(id);
        }
    }
}

impl Stream for MemoryWatch {
    type Item = Result<WatchEvent, StoreError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(event) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(event)));
            }
            if let Some(error) = this.error.take() {
                this.ended = true;
                this.unsubscribe();
                return Poll::Ready(Some(Err(error)));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            let Some((_, rx)) = this.subscription.as_mut() else {
                // The store dropped our channel because we lagged; everything
                // it had delivered is drained, so catch up from the log.
                this.resubscribe();
                continue;
            };
            match rx.poll_recv(cx) {
                Poll::Ready(Some(group)) => {
                    // Revisions below `next_revision` came with the backlog.
                    if group.revision >= this.next_revision {
                        let prefix = &this.prefix;
                        this.pending.extend(
                            group
                                .events
                                .iter()
                                .filter(|event| event.kv.key.starts_with(prefix.as_str()))
                                .cloned(),
                        );
                        this.next_revision = group.revision + 1;
                    }
                }
                Poll::Ready(None) => this.subscription = None,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for MemoryWatch {
    fn drop(&mut self) {
        self.unsubscribe();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;

    use super::*;

    fn store_with(config: MemoryStoreConfig) -> MemoryStore {
        MemoryStore::new(config)
    }

    async fn put(store: &MemoryStore, key: &str, value: &str) -> Revision {
        store
            .apply(Batch::new().put(key, value))
            .await
            .expect("put")
            .revision
    }

    async fn next(stream: &mut WatchStream) -> Option<Result<WatchEvent, StoreError>> {
        tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("the watch must answer within 5 s")
    }

    async fn next_revision(stream: &mut WatchStream) -> Revision {
        match next(stream).await {
            Some(Ok(event)) => event.kv.mod_revision,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn revisions_start_at_one_and_only_changes_bump_them() {
        let store = MemoryStore::default();
        assert_eq!(store.revision().await, Ok(1));
        assert_eq!(put(&store, "a", "1").await, 2);
        let batch = Batch::new().put("b", "1").put("c", "1").delete("a");
        assert_eq!(store.apply(batch).await, Ok(Applied { revision: 3 }));

        let noops = [
            Batch::new(),
            Batch::new().guard("b", 3),
            Batch::new().delete("absent").delete("a"),
        ];
        for batch in noops {
            assert_eq!(store.apply(batch).await, Ok(Applied { revision: 3 }));
        }
        assert_eq!(store.delete("absent").await, Ok(false));
        assert_eq!(store.revision().await, Ok(3));
        assert_eq!(store.delete("b").await, Ok(true));
        assert_eq!(store.revision().await, Ok(4));

        let c = store.get("c").await.unwrap().unwrap();
        assert_eq!((c.create_revision, c.mod_revision), (3, 3));
        assert_eq!(put(&store, "c", "2").await, 5);
        let c = store.get("c").await.unwrap().unwrap();
        assert_eq!((c.create_revision, c.mod_revision), (3, 5));
    }

    #[tokio::test]
    async fn too_large_reports_the_count_and_the_limit() {
        let store = store_with(MemoryStoreConfig {
            max_txn_ops: 2,
            ..MemoryStoreConfig::default()
        });
        let ops = Batch::new().put("a", "1").put("b", "1").delete("c");
        assert_eq!(
            store.apply(ops).await,
            Err(StoreError::TooLarge { ops: 3, limit: 2 })
        );
        let guards = Batch::new().guard("a", 0).guard("b", 0).guard("c", 0);
        assert_eq!(
            store.apply(guards).await,
            Err(StoreError::TooLarge { ops: 3, limit: 2 })
        );
        // Counted after merging: three ops on two keys fit.
        let merged = Batch::new().put("a", "1").put("b", "1").put("a", "2");
        assert_eq!(store.apply(merged).await, Ok(Applied { revision: 2 }));
    }

    #[tokio::test]
    async fn the_default_page_size_applies_to_limit_zero() {
        let store = store_with(MemoryStoreConfig {
            default_page_size: 3,
            ..MemoryStoreConfig::default()
        });
        for key in ["p/1", "p/2", "p/3", "p/4", "q"] {
            put(&store, key, "v").await;
        }
        let page = store
            .get_prefix("p/", ListOptions::default())
            .await
            .unwrap();
        assert_eq!(page.kvs.len(), 3);
        assert!(page.more);
        assert_eq!(page.revision, 6);

        let unlimited = store_with(MemoryStoreConfig {
            default_page_size: 0,
            ..MemoryStoreConfig::default()
        });
        for i in 0..1500 {
            put(&unlimited, &format!("k{i:04}"), "v").await;
        }
        let page = unlimited
            .get_prefix("", ListOptions::default())
            .await
            .unwrap();
        assert_eq!((page.kvs.len(), page.more), (1500, false));
    }

    #[tokio::test]
    async fn a_watch_from_a_compacted_revision_yields_compacted_and_ends() {
        let store = MemoryStore::default();
        for i in 0..5 {
            put(&store, "k", &i.to_string()).await; // revisions 2..=6
        }
        assert_eq!(store.compact(4), Ok(()));
        assert_eq!(store.compact_revision(), 4);

        let mut old = store.watch("k", 3).await.unwrap();
        assert_eq!(
            next(&mut old).await,
            Some(Err(StoreError::Compacted {
                requested: 3,
                compact_revision: 4
            }))
        );
        assert_eq!(next(&mut old).await, None);
        assert_eq!(store.watcher_count(), 0);

        let mut kept = store.watch("k", 4).await.unwrap();
        for revision in 4..=6 {
            assert_eq!(next_revision(&mut kept).await, revision);
        }

        assert!(matches!(
            store.compact(4),
            Err(StoreError::Compacted { .. })
        ));
        assert!(matches!(
            store.compact(7),
            Err(StoreError::InvalidRequest { .. })
        ));
        assert_eq!(store.compact(6), Ok(()));
    }

    #[tokio::test]
    async fn the_history_limit_drops_whole_revisions() {
        let store = store_with(MemoryStoreConfig {
            history_limit: 3,
            ..MemoryStoreConfig::default()
        });
        store
            .apply(Batch::new().put("a", "1").put("b", "1"))
            .await
            .unwrap(); // 2
        store
            .apply(Batch::new().put("a", "2").put("b", "2"))
            .await
            .unwrap(); // 3
        // Four events exceed the limit of three: revision 2 goes, as a whole.
        assert_eq!(store.compact_revision(), 3);
        let mut watch = store.watch("", 2).await.unwrap();
        assert!(matches!(
            next(&mut watch).await,
            Some(Err(StoreError::Compacted {
                requested: 2,
                compact_revision: 3
            }))
        ));
        let mut watch = store.watch("", 3).await.unwrap();
        assert_eq!(next_revision(&mut watch).await, 3);
        assert_eq!(next_revision(&mut watch).await, 3);
    }

    #[tokio::test]
    async fn a_lagging_watcher_catches_up_from_the_log_without_gaps() {
        let store = store_with(MemoryStoreConfig {
            watch_channel_capacity: 2,
            ..MemoryStoreConfig::default()
        });
        let mut watch = store.watch("k", 0).await.unwrap();
        for i in 0..20 {
            put(&store, "k", &i.to_string()).await; // revisions 2..=21
        }
        // The channel overflowed: the store let go of the watcher rather than
        // wait for it.
        assert_eq!(store.watcher_count(), 0);
        for revision in 2..=21 {
            assert_eq!(next_revision(&mut watch).await, revision);
        }
        assert_eq!(store.watcher_count(), 1);
        put(&store, "k", "live").await;
        assert_eq!(next_revision(&mut watch).await, 22);
    }

    #[tokio::test]
    async fn a_watcher_lagging_beyond_the_history_gets_compacted_not_a_gap() {
        let store = store_with(MemoryStoreConfig {
            watch_channel_capacity: 2,
            history_limit: 4,
            ..MemoryStoreConfig::default()
        });
        let mut watch = store.watch("k", 0).await.unwrap();
        for i in 0..10 {
            put(&store, "k", &i.to_string()).await; // revisions 2..=11
        }
        // What the channel held is delivered, then the gap is reported.
        assert_eq!(next_revision(&mut watch).await, 2);
        assert_eq!(next_revision(&mut watch).await, 3);
        assert_eq!(
            next(&mut watch).await,
            Some(Err(StoreError::Compacted {
                requested: 4,
                compact_revision: 8
            }))
        );
        assert_eq!(next(&mut watch).await, None);
        assert_eq!(store.watcher_count(), 0);
    }

    #[tokio::test]
    async fn dropping_a_watch_frees_it() {
        let store = MemoryStore::default();
        let first = store.watch("a", 0).await.unwrap();
        let second = store.watch("b", 0).await.unwrap();
        assert_eq!(store.watcher_count(), 2);
        drop(first);
        assert_eq!(store.watcher_count(), 1);
        drop(second);
        assert_eq!(store.watcher_count(), 0);
        put(&store, "a", "1").await;
    }

    #[tokio::test]
    async fn a_watch_from_a_future_revision_starts_there() {
        let store = MemoryStore::default();
        let mut watch = store.watch("k", 5).await.unwrap();
        for i in 0..5 {
            put(&store, "k", &i.to_string()).await; // revisions 2..=6
        }
        assert_eq!(next_revision(&mut watch).await, 5);
        assert_eq!(next_revision(&mut watch).await, 6);
    }

    #[tokio::test]
    async fn invalid_requests_are_rejected() {
        let store = MemoryStore::default();
        assert!(matches!(
            store.watch("k", -1).await.map(|_| ()),
            Err(StoreError::InvalidRequest { .. })
        ));
        assert!(matches!(
            store.apply(Batch::new().guard("k", 1).guard("k", 2)).await,
            Err(StoreError::InvalidRequest { message, .. }) if message.contains("'k'")
        ));
        // A guard that can never hold is a plain guard failure, as in etcd.
        assert_eq!(
            store.apply(Batch::new().guard("k", -3)).await,
            Err(StoreError::GuardFailed {
                key: "k".into(),
                expected: -3,
                actual: 0
            })
        );
        assert_eq!(store.revision().await, Ok(1));
    }

    /// A journal that records what it is given, or refuses while `refuse`.
    #[derive(Default)]
    struct Recording {
        entries: Mutex<Vec<(Revision, usize, Revision)>>,
        refuse: std::sync::atomic::AtomicBool,
    }

    impl Journal for Recording {
        fn append(&self, entry: &JournalEntry<'_>) -> Result<(), StoreError> {
            if self.refuse.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(StoreError::unavailable("disk full"));
            }
            self.entries.lock().unwrap().push((
                entry.revision,
                entry.events.len(),
                entry.compact_revision,
            ));
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_journaled_store_shows_only_what_its_journal_took() {
        let journal = Arc::new(Recording::default());
        let store = MemoryStore::with_journal(
            MemoryStoreConfig {
                history_limit: 3,
                ..MemoryStoreConfig::default()
            },
            Restored::default(),
            journal.clone(),
        );
        let mut watch = store.watch("", 0).await.unwrap();
        assert_eq!(put(&store, "a", "1").await, 2);
        store
            .apply(Batch::new().put("b", "1").put("c", "1"))
            .await
            .unwrap(); // 3: three events in the log
        assert_eq!(store.delete("absent").await, Ok(false));
        assert_eq!(store.delete("a").await, Ok(true)); // 4: four, revision 2 dropped
        assert_eq!(
            *journal.entries.lock().unwrap(),
            [(2, 1, 0), (3, 2, 0), (4, 1, 3)],
            "one entry per changing write, with the compaction the store makes"
        );
        assert_eq!(store.compact_revision(), 3);

        journal
            .refuse
            .store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            store.apply(Batch::new().put("d", "1")).await,
            Err(StoreError::unavailable("disk full"))
        );
        assert_eq!(store.get("d").await, Ok(None));
        assert_eq!(store.revision().await, Ok(4));
        for revision in [2, 3, 3, 4] {
            assert_eq!(next_revision(&mut watch).await, revision);
        }
        // Guards are checked against what is shown.
        assert!(matches!(
            store.apply(Batch::new().guard("b", 2).put("b", "2")).await,
            Err(StoreError::GuardFailed { actual: 3, .. })
        ));
    }

    #[tokio::test]
    async fn a_journaled_store_starts_from_what_was_restored() {
        let kv = |key: &str, revision| KeyValue {
            key: key.into(),
            value: b"v".to_vec(),
            create_revision: revision,
            mod_revision: revision,
        };
        let restored = Restored {
            revision: 7,
            compact_revision: 6,
            kvs: vec![kv("x", 6), kv("y", 7)],
            log: vec![
                (
                    6,
                    vec![WatchEvent {
                        kind: EventKind::Put,
                        kv: kv("x", 6),
                    }],
                ),
                (
                    7,
                    vec![WatchEvent {
                        kind: EventKind::Put,
                        kv: kv("y", 7),
                    }],
                ),
            ],
        };
        let store = MemoryStore::with_journal(
            MemoryStoreConfig::default(),
            restored,
            Arc::new(Recording::default()),
        );
        assert_eq!(store.revision().await, Ok(7));
        assert_eq!(store.get("y").await.unwrap(), Some(kv("y", 7)));
        assert!(matches!(
            next(&mut store.watch("", 5).await.unwrap()).await,
            Some(Err(StoreError::Compacted { .. }))
        ));
        let mut replay = store.watch("", 6).await.unwrap();
        assert_eq!(next_revision(&mut replay).await, 6);
        assert_eq!(next_revision(&mut replay).await, 7);
        assert_eq!(put(&store, "x", "2").await, 8);
        assert_eq!(next_revision(&mut replay).await, 8);
        let x = store.get("x").await.unwrap().unwrap();
        assert_eq!((x.create_revision, x.mod_revision), (6, 8));
    }

    /// Writers on several threads while a watch replays from the start: the
    /// watch sees every revision exactly once, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replay_and_live_delivery_meet_without_loss_under_parallel_writers() {
        const PER_WRITER: i64 = 2000;
        let store = store_with(MemoryStoreConfig {
            watch_channel_capacity: 16,
            ..MemoryStoreConfig::default()
        });
        let writers: Vec<_> = ["x/", "y/"]
            .into_iter()
            .map(|dir| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0..PER_WRITER {
                        put(&store, &format!("{dir}{}", i % 7), "v").await;
                        if i % 64 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        tokio::task::yield_now().await;
        let mut watch = store.watch("", 1).await.unwrap();
        for expected in 2..2 + 2 * PER_WRITER {
            assert_eq!(next_revision(&mut watch).await, expected);
        }
        for writer in writers {
            writer.await.unwrap();
        }
        assert_eq!(store.revision().await, Ok(1 + 2 * PER_WRITER));
    }
}
