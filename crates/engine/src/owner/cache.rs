//! The cache: loaded from the store at start-up, fed by the store's watches
//! (definitions, states written by others, node records), re-listed when a
//! watch breaks.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::SelectAll;
use state_store::{StoreError, WatchEvent, WatchStream, get_all};
use statemachine_core::definition::DefinitionKind;
use statemachine_core::keys::{Bookkeeping, parse_state_key, state_prefix};
use statemachine_core::record::NodeRecord;
use statemachine_core::{Affected, ResourceKind};

use super::Owner;
use super::commit::{Queued, all_within};
use super::publish::Pending;
use crate::metrics::inc;
use crate::outbox::OutboxItem;
use tokio::time::Instant;

/// The merged watch streams (kept outside `Owner`: streams are not `Sync`).
pub(crate) type Watches =
    SelectAll<futures::stream::BoxStream<'static, (Feed, Result<WatchEvent, StoreError>)>>;

/// Which part of the cache a store key feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Feed {
    Definitions(DefinitionKind),
    States(ResourceKind),
    Nodes,
}

/// A broken watch waiting to be re-listed.
pub(super) struct Resync {
    feed: Feed,
    due: Instant,
    delay: Duration,
}

const FIRST_RESYNC_DELAY: Duration = Duration::from_millis(100);
const MAX_RESYNC_DELAY: Duration = Duration::from_secs(10);

/// The prefixes the cache is fed from.
pub(super) fn feeds(keys: &Bookkeeping) -> Vec<(Feed, String)> {
    let mut feeds: Vec<(Feed, String)> = DefinitionKind::ALL
        .iter()
        .map(|k| (Feed::Definitions(*k), k.key_prefix().to_owned()))
        .collect();
    feeds.extend(
        ResourceKind::ALL
            .iter()
            .map(|k| (Feed::States(*k), state_prefix(*k))),
    );
    feeds.push((Feed::Nodes, keys.nodes_prefix()));
    feeds
}

impl Owner {
    /// Loads the cache from the store, starts the watches and returns the
    /// pending outbox records (STATE-MACHINES / ARCHITECTURE: restart is recovery).
    pub(crate) async fn load(&mut self) -> Result<(Vec<OutboxItem>, Watches), StoreError> {
        let start = self.store.revision().await?;
        let now = self.clock.now_ns();
        let mut affected = Affected::default();
        for (feed, prefix) in feeds(&self.keys) {
            let (kvs, _) =
                get_all(self.store.as_ref(), &prefix, self.config.load_page_size).await?;
            for kv in kvs {
                affected.extend(self.feed_put(feed, &kv.key, &kv.value, kv.mod_revision));
            }
        }
        // Silence is measured from the restart for nodes known before it.
        let nodes: Vec<String> = self.snapshot.nodes().map(|(n, _)| n.clone()).collect();
        for node in nodes {
            self.snapshot.mark_seen(&node, now);
            self.metrics.node_seen(&node, now);
        }
        self.last_tick_ns = now;
        let mut watches = Watches::new();
        for (feed, prefix) in feeds(&self.keys) {
            watches.push(self.watch(feed, prefix, start + 1).await?);
        }
        if self.passive {
            return Ok((Vec::new(), watches));
        }
        // Definitions written while the StateManager was down: initial states.
        if !affected.is_empty() {
            self.held
                .push_back(Queued::new(Pending::Reevaluate(affected)));
        }
        self.held.push_back(Queued::new(Pending::Tick));
        self.settle().await;
        // After the re-evaluation: packages that entered a reconcile state
        // while the StateManager was down have their records by now.
        let pending = self.check_outbox().await?.pending;
        Ok((pending, watches))
    }

    async fn watch(
        &self,
        feed: Feed,
        prefix: String,
        from: i64,
    ) -> Result<
        futures::stream::BoxStream<'static, (Feed, Result<WatchEvent, StoreError>)>,
        StoreError,
    > {
        let stream: WatchStream = self.store.watch(&prefix, from).await?;
        Ok(stream.map(move |item| (feed, item)).boxed())
    }

    /// Applies a key read from the store to the cache; returns what a
    /// definition change affects.
    /// A derived key (model, package) that another writer changed to a
    /// value the latest reports do not derive (RECOVERY.md §7): counted,
    /// logged, and re-derived at once when `repair_foreign_writes` is on.
    /// Scenario keys are requested, never repaired; containers follow the
    /// next report.
    fn foreign_write(
        &mut self,
        kind: ResourceKind,
        name: &str,
        before: Option<statemachine_core::AnyState>,
    ) -> Affected {
        let after = self.snapshot.state(kind, name);
        // A follower's every state comes from the leader's writes.
        if self.passive || before.is_none() || after == before {
            return Affected::default();
        }
        if !matches!(kind, ResourceKind::Model | ResourceKind::Package) {
            return Affected::default();
        }
        inc(&self.metrics.foreign_writes);
        let repair = self.config.healing.repair_foreign_writes;
        tracing::warn!(%kind, %name, from = ?before.map(|s| s.as_str()), to = ?after.map(|s| s.as_str()), repair,
            "another writer changed a derived state key");
        let mut affected = Affected::default();
        if repair {
            match kind {
                ResourceKind::Model => affected.models.insert(name.to_owned()),
                _ => affected.packages.insert(name.to_owned()),
            };
        }
        affected
    }

    pub(super) fn feed_put(
        &mut self,
        feed: Feed,
        key: &str,
        value: &[u8],
        revision: i64,
    ) -> Affected {
        match feed {
            Feed::Definitions(_) => {
                let text = String::from_utf8_lossy(value);
                match self.snapshot.update_definition(key, Some(&text)) {
                    Ok(affected) => affected,
                    Err(error) => {
                        inc(&self.metrics.bad_definitions);
                        tracing::warn!(%key, %error, "skipping a definition that does not parse");
                        Affected::default()
                    }
                }
            }
            Feed::States(_) => {
                let Some((kind, name)) = parse_state_key(key) else {
                    return Affected::default();
                };
                if !self.snapshot.stamp(kind, name).is_older_than(revision) {
                    return Affected::default();
                }
                let text = String::from_utf8_lossy(value);
                let before = self.snapshot.state(kind, name);
                if let Err(error) = self.snapshot.load_state(kind, name, &text, revision) {
                    tracing::warn!(%key, %error, "ignoring a state value that does not parse");
                }
                self.foreign_write(kind, name, before)
            }
            Feed::Nodes => {
                let Some(node) = key.strip_prefix(&self.keys.nodes_prefix()) else {
                    return Affected::default();
                };
                let known = self
                    .snapshot
                    .node(node)
                    .map(|e| e.stamp)
                    .unwrap_or_default();
                if !known.is_older_than(revision) {
                    return Affected::default();
                }
                match NodeRecord::decode(value) {
                    Ok(record) => self.snapshot.load_node(node, record, revision),
                    Err(error) => {
                        tracing::warn!(%key, %error, "ignoring a node record that does not parse")
                    }
                }
                Affected::default()
            }
        }
    }

    pub(super) fn feed_delete(&mut self, feed: Feed, key: &str, revision: i64) -> Affected {
        match feed {
            Feed::Definitions(_) => self
                .snapshot
                .update_definition(key, None)
                .unwrap_or_default(),
            Feed::States(_) => {
                if let Some((kind, name)) = parse_state_key(key)
                    && self.snapshot.stamp(kind, name).is_older_than(revision)
                {
                    self.snapshot.remove_state(kind, name);
                }
                Affected::default()
            }
            Feed::Nodes => {
                if let Some(node) = key.strip_prefix(&self.keys.nodes_prefix()) {
                    let known = self
                        .snapshot
                        .node(node)
                        .map(|e| e.stamp)
                        .unwrap_or_default();
                    if known.is_older_than(revision) {
                        self.snapshot.remove_node(node);
                    }
                }
                Affected::default()
            }
        }
    }

    /// Re-lists a prefix whose watch broke (compaction, a lost connection)
    /// and watches it again, in one attempt within `commit_timeout`; when it
    /// fails, the attempt is scheduled again with backoff (the owner goes on
    /// answering meanwhile).
    pub(super) async fn resync(&mut self, feed: Feed, watches: &mut Watches) {
        let Some((_, prefix)) = feeds(&self.keys).into_iter().find(|(f, _)| *f == feed) else {
            return;
        };
        let deadline = Instant::now() + self.config.commit_timeout;
        let listed = self.list_within(&prefix, deadline, "re-list").await;
        let error = match listed {
            Ok((kvs, revision)) => {
                let mut affected = Affected::default();
                for kv in &kvs {
                    affected.extend(self.feed_put(feed, &kv.key, &kv.value, kv.mod_revision));
                }
                affected.extend(self.forget_missing(feed, &kvs));
                if !affected.is_empty() {
                    self.held
                        .push_back(Queued::new(Pending::Reevaluate(affected)));
                }
                if feed == Feed::States(ResourceKind::Package) {
                    self.outbox_check_due = true;
                }
                match self.watch(feed, prefix.clone(), revision + 1).await {
                    Ok(stream) => {
                        watches.push(stream);
                        self.resyncs.retain(|r| r.feed != feed);
                        tracing::info!(%prefix, "watch re-established after a re-list");
                        return;
                    }
                    Err(error) => error,
                }
            }
            Err(error) => error,
        };
        let delay = match self.resyncs.iter().find(|r| r.feed == feed) {
            Some(r) => (r.delay * 2).min(MAX_RESYNC_DELAY),
            None => FIRST_RESYNC_DELAY,
        };
        tracing::warn!(%prefix, %error, ?delay, "re-list failed; retrying");
        self.resyncs.retain(|r| r.feed != feed);
        self.resyncs.push(Resync {
            feed,
            due: Instant::now() + delay,
            delay,
        });
    }

    /// The re-list due first, if any.
    pub(super) fn next_resync(&self) -> Option<(Feed, Instant)> {
        self.resyncs
            .iter()
            .min_by_key(|r| r.due)
            .map(|r| (r.feed, r.due))
    }

    /// After a re-list: forgets definitions that no longer exist.
    fn forget_missing(&mut self, feed: Feed, kvs: &[state_store::KeyValue]) -> Affected {
        let mut affected = Affected::default();
        if let Feed::Definitions(kind) = feed {
            let present: std::collections::HashSet<&str> =
                kvs.iter().map(|kv| kv.key.as_str()).collect();
            let known: Vec<String> = match kind {
                DefinitionKind::Scenario => self
                    .snapshot
                    .topology()
                    .scenarios()
                    .map(|d| d.name.to_string())
                    .collect(),
                DefinitionKind::Package => self
                    .snapshot
                    .topology()
                    .packages()
                    .map(|d| d.name.to_string())
                    .collect(),
                DefinitionKind::Model => self
                    .snapshot
                    .topology()
                    .models()
                    .map(|d| d.name.to_string())
                    .collect(),
            };
            for name in known {
                let key = format!("{}{name}", kind.key_prefix());
                if !present.contains(key.as_str()) {
                    affected.extend(
                        self.snapshot
                            .update_definition(&key, None)
                            .unwrap_or_default(),
                    );
                }
            }
        }
        affected
    }

    /// Forgets a key the store no longer has (or that must be read again).
    pub(super) fn forget(&mut self, feed: Feed, key: &str) {
        match feed {
            Feed::States(_) => {
                if let Some((kind, name)) = parse_state_key(key) {
                    self.snapshot.remove_state(kind, name);
                }
            }
            Feed::Nodes => {
                if let Some(node) = key.strip_prefix(&self.keys.nodes_prefix()) {
                    let node = node.to_owned();
                    self.snapshot.remove_node(&node);
                }
            }
            Feed::Definitions(_) => {}
        }
    }

    /// Lists a prefix, all pages, before `deadline`; with the store's
    /// revision at the listing.
    pub(super) async fn list_within(
        &self,
        prefix: &str,
        deadline: Instant,
        operation: &'static str,
    ) -> Result<(Vec<state_store::KeyValue>, state_store::Revision), StoreError> {
        let read = get_all(self.store.as_ref(), prefix, self.config.load_page_size);
        all_within(deadline, operation, [read]).await?.remove(0)
    }
}
