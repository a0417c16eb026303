//! Belt and braces for the outbox: a package found in a reconcile state with
//! no pending outbox record and no delivery recorded since it entered that
//! state gets its record (statemachine-core `recovery::lost_reconcile`).
//! Checked at start-up and after the package states were re-listed.

use std::collections::{HashMap, HashSet};

use state_store::{Batch, StoreError, get_all};
use statemachine_core::record::{DeliveryRecord, HistoryEntry, OutboxRecord};
use statemachine_core::recovery::{FailedPackage, lost_reconcile};
use statemachine_core::{AnyState, PackageState, ResourceKind};

use super::Owner;
use super::commit::all_within;
use crate::metrics::inc;
use crate::outbox::OutboxItem;

/// What the outbox check found: every pending record, and those it wrote.
pub(super) struct OutboxCheck {
    pub(super) pending: Vec<OutboxItem>,
    pub(super) written: Vec<OutboxItem>,
}

impl Owner {
    /// Lists the outbox and writes the reconciles a crash lost. Reads the
    /// delivery markers and histories only when a package in a reconcile
    /// state has no pending record.
    pub(super) async fn check_outbox(&mut self) -> Result<OutboxCheck, StoreError> {
        let timeout = self.config.commit_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let (kvs, _) = self
            .list_within(&self.keys.outbox_prefix(), deadline, "outbox read")
            .await?;
        let mut pending = Vec::with_capacity(kvs.len());
        for kv in kvs {
            match OutboxRecord::decode(&kv.value) {
                Ok(record) => pending.push(OutboxItem {
                    key: kv.key,
                    record,
                }),
                Err(error) => {
                    tracing::warn!(key = %kv.key, %error, "skipping an unreadable outbox record")
                }
            }
        }
        let with_record: HashSet<&str> =
            pending.iter().map(|i| i.record.package.as_str()).collect();
        let failed: Vec<(String, PackageState)> = self
            .snapshot
            .states(ResourceKind::Package)
            .into_iter()
            .filter(|(name, _)| !with_record.contains(name))
            .map(|(name, state)| (name.to_owned(), Some(state)))
            .filter_map(|(name, state)| match state {
                Some(AnyState::Package(state))
                    if self.config.core.reconcile_on.contains(&state) =>
                {
                    Some((name, state))
                }
                _ => None,
            })
            .collect();
        drop(with_record);
        if failed.is_empty() {
            return Ok(OutboxCheck {
                pending,
                written: Vec::new(),
            });
        }

        let (markers, _) = self
            .list_within(&self.keys.delivered_prefix(), deadline, "delivery read")
            .await?;
        let delivered: HashMap<String, DeliveryRecord> = markers
            .into_iter()
            .filter_map(|kv| {
                let package = kv
                    .key
                    .strip_prefix(&self.keys.delivered_prefix())?
                    .to_owned();
                DeliveryRecord::decode(&kv.value).ok().map(|d| (package, d))
            })
            .collect();
        let reads = failed.iter().map(|(name, _)| {
            let prefix = self.keys.history_prefix(ResourceKind::Package, name);
            let store = self.store.clone();
            async move { get_all(store.as_ref(), &prefix, 1000).await }
        });
        let histories = all_within(deadline, "history read", reads).await?;
        let now = self.clock.now_ns();
        let mut written = Vec::new();
        for ((package, state), history) in failed.iter().zip(histories) {
            let (kvs, _) = history?;
            // Keys sort by sequence: the last one is the newest.
            let latest = kvs
                .last()
                .and_then(|kv| HistoryEntry::decode(&kv.value).ok());
            let topology = self.snapshot.topology();
            let found = FailedPackage {
                package,
                state: *state,
                scenario: topology.scenario_of(package).map(String::as_str),
                latest: latest.as_ref(),
                pending: false,
                delivered: delivered.get(package),
            };
            let Some(record) = lost_reconcile(&found, now) else {
                continue;
            };
            let key = self.keys.outbox_key(&record.id());
            let batch = Batch::new()
                .guard(key.clone(), 0)
                .put(key.clone(), record.encode());
            match tokio::time::timeout(timeout, self.store.apply(batch)).await {
                Ok(Ok(_)) => {}
                // Written meanwhile by another writer: the record is there.
                Ok(Err(StoreError::GuardFailed { .. })) => continue,
                Ok(Err(error)) => return Err(error),
                Err(_) => {
                    return Err(StoreError::Timeout {
                        operation: "outbox write",
                        after: timeout,
                    });
                }
            }
            inc(&self.metrics.lost_reconciles);
            tracing::warn!(%package, %state, at_ns = record.at_ns,
                "package in a reconcile state without its reconcile; writing the outbox record a crash lost");
            let item = OutboxItem { key, record };
            pending.push(item.clone());
            written.push(item);
        }
        Ok(OutboxCheck { pending, written })
    }
}
