//! The healer's store I/O: loading incidents, alerts, pending step calls
//! and the tracker's history at start-up, and writing incident and alert
//! records, each call bounded by the store timeout.

use std::collections::HashMap;

use state_store::{Batch, Op, StoreError, get_all};
use statemachine_core::alert::Alert;
use statemachine_core::healing::tracker::Transition;
use statemachine_core::healing::{History, Incident};
use statemachine_core::record::{HistoryEntry, OutboxRecord};
use statemachine_core::{AnyState, ResourceKind};

use super::healer::{Healer, Res};

/// Page size of the start-up reads.
const PAGE: usize = 1000;

/// What the store holds for the healer at start-up.
pub(super) struct Loaded {
    pub(super) incidents: Vec<Incident>,
    pub(super) alerts: Vec<Alert>,
    /// Outbox records of incident steps still waiting for delivery.
    pub(super) calls: Vec<OutboxRecord>,
    pub(super) histories: HashMap<Res, History>,
}

impl Healer {
    /// Reads incidents, alerts, pending step calls and the histories of
    /// packages and models.
    pub(super) async fn read_all(&self) -> Result<Loaded, StoreError> {
        let incidents = decoded(
            self.read(&self.keys.recovery_prefix()).await?,
            Incident::decode,
            "incident",
        );
        let alerts = decoded(
            self.read(&self.keys.alerts_prefix()).await?,
            Alert::decode,
            "alert",
        );
        let kvs = self.read(&self.keys.outbox_prefix()).await?;
        let calls = kvs
            .iter()
            .filter_map(|kv| OutboxRecord::decode(&kv.value).ok())
            .filter(|record| record.step.is_some())
            .collect();
        let mut histories: HashMap<Res, History> = HashMap::new();
        for kind in [ResourceKind::Package, ResourceKind::Model] {
            let prefix = format!(
                "{}{}/",
                self.keys.all_history_prefix(),
                kind.as_key_segment()
            );
            let kvs = self.read(&prefix).await?;
            for kv in kvs {
                let Some((kind, name, _)) = self.keys.parse_history_key(&kv.key) else {
                    continue;
                };
                let Ok(entry) = HistoryEntry::decode(&kv.value) else {
                    continue;
                };
                let parse =
                    |s: &Option<String>| s.as_deref().and_then(|s| AnyState::parse(kind, s).ok());
                if let (Some(from), Some(to)) = (parse(&entry.from), parse(&entry.to)) {
                    histories
                        .entry((kind, name.to_owned()))
                        .or_insert_with(|| History::new(self.config.tracker.capacity))
                        .record(Transition {
                            at_ns: entry.at_ns,
                            from,
                            to,
                        });
                }
            }
        }
        Ok(Loaded {
            incidents,
            alerts,
            calls,
            histories,
        })
    }

    /// Reads every key under `prefix`, within a bounded time.
    async fn read(&self, prefix: &str) -> Result<Vec<state_store::KeyValue>, StoreError> {
        let read = get_all(self.store.as_ref(), prefix, PAGE);
        match tokio::time::timeout(self.store_timeout * 4, read).await {
            Ok(result) => Ok(result?.0),
            Err(_) => Err(StoreError::unavailable(
                "the store did not answer the healer's start-up read",
            )),
        }
    }

    /// Writes one batch within the store timeout.
    pub(super) async fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        match tokio::time::timeout(self.store_timeout, self.store.apply(batch)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(StoreError::unavailable(format!(
                "the store did not answer within {:?}",
                self.store_timeout
            ))),
        }
    }

    /// The put of an incident record.
    pub(super) fn incident_op(&self, incident: &Incident) -> Op {
        Op::Put {
            key: self.keys.recovery_key(&incident.id),
            value: incident.encode(),
        }
    }

    /// The put of an alert record.
    pub(super) fn alert_op(&self, alert: &Alert) -> Op {
        Op::Put {
            key: self.keys.alert_key(&alert.id),
            value: alert.encode(),
        }
    }

    /// Writes records whose last write failed (or that changed without a
    /// write yet); those that fail again stay for the next try.
    pub(super) async fn flush(&mut self) {
        if self.unsaved.is_empty() {
            return;
        }
        let mut ops = Vec::new();
        let mut deletes = Vec::new();
        for key in &self.unsaved {
            match key {
                Unsaved::Incident(id) => match self.incidents.get(id) {
                    Some(incident) => ops.push(self.incident_op(incident)),
                    None => deletes.push(self.keys.recovery_key(id)),
                },
                Unsaved::Alert(id) => match self.alerts.get(id) {
                    Some(alert) => ops.push(self.alert_op(alert)),
                    None => deletes.push(self.keys.alert_key(id)),
                },
            }
        }
        ops.extend(deletes.into_iter().map(|key| Op::Delete { key }));
        // Written in transactions of a bounded size.
        let mut failed = false;
        for chunk in ops.chunks(64) {
            let batch = Batch {
                guards: Vec::new(),
                ops: chunk.to_vec(),
            };
            if let Err(error) = self.apply(batch).await {
                tracing::warn!(%error, "could not write recovery records; trying again later");
                failed = true;
                break;
            }
        }
        if failed {
            self.flush_retry = Some(self.clock.now_ns() + super::healer::RETRY_NS);
        } else {
            self.unsaved.clear();
            self.flush_retry = None;
        }
    }
}

/// The records that decode; an unreadable one is logged and skipped.
fn decoded<T, E: std::fmt::Display>(
    kvs: Vec<state_store::KeyValue>,
    decode: impl Fn(&[u8]) -> Result<T, E>,
    what: &str,
) -> Vec<T> {
    kvs.iter()
        .filter_map(|kv| match decode(&kv.value) {
            Ok(record) => Some(record),
            Err(error) => {
                tracing::warn!(key = %kv.key, %error, "skipping an unreadable {what} record");
                None
            }
        })
        .collect()
}

/// A record that still has to be written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Unsaved {
    Incident(String),
    Alert(String),
}
