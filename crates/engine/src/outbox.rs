//! The outbox worker: delivers reconcile requests committed with the
//! package state that caused them, with exponential backoff (reset on
//! success) and jitter, deletes each record once the ActionController took
//! it, and follows the recovery strategy: when the package is
//! still in Error after the reconcile, ask again a bounded number of times,
//! then escalate instead of looping forever. It never blocks the owner task.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use state_store::{Batch, StateStore};
use statemachine_core::ResourceKind;
use statemachine_core::keys::Bookkeeping;
use statemachine_core::record::{DeliveryRecord, OutboxRecord};
use statemachine_core::recovery::{NextStep, RecoveryPolicy};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

use crate::api::EngineHandle;
use crate::events::{Event, EventKind, Severity};
use crate::metrics::{Metrics, inc};
use crate::ports::{ActionError, ActionPort, Clock, ReconcileRequest};

/// A reconcile request to deliver; `key` is its outbox record in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutboxItem {
    pub(crate) key: String,
    pub(crate) record: OutboxRecord,
}

struct Delivery {
    item: OutboxItem,
    /// Failed attempts so far.
    failures: u32,
    /// Reconciles already delivered for this incident (re-asks after a
    /// recovery check).
    incident: u32,
    /// `false` for a re-ask after a recovery check: it has no store record.
    durable: bool,
    due: Instant,
}

struct Check {
    item: OutboxItem,
    incident: u32,
    due: Instant,
}

pub(crate) struct OutboxWorker {
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) keys: Bookkeeping,
    pub(crate) action: Arc<dyn ActionPort>,
    pub(crate) handle: EngineHandle,
    pub(crate) events: broadcast::Sender<Arc<Event>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) policy: RecoveryPolicy,
    pub(crate) recovery_check_after: Duration,
    pub(crate) store_timeout: Duration,
    pub(crate) incoming: mpsc::UnboundedReceiver<OutboxItem>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl OutboxWorker {
    pub(crate) async fn run(mut self, pending: Vec<OutboxItem>) {
        let mut queue: VecDeque<Delivery> = VecDeque::new();
        let mut checks: Vec<Check> = Vec::new();
        let mut ids = 0u64;
        for item in pending {
            self.enqueue(&mut queue, item, 1, true);
        }
        loop {
            self.metrics.outbox_depth.store(
                queue.iter().filter(|d| d.durable).count() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            let next_due = queue
                .iter()
                .map(|d| d.due)
                .chain(checks.iter().map(|c| c.due))
                .min();
            let wait = async {
                match next_due {
                    Some(due) => tokio::time::sleep_until(due).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = self.shutdown.changed() => break,
                item = self.incoming.recv() => match item {
                    Some(item) => self.enqueue(&mut queue, item, 1, true),
                    None => break,
                },
                _ = wait => {
                    let now = Instant::now();
                    if let Some(i) = queue.iter().position(|d| d.due <= now)
                        && let Some(delivery) = queue.remove(i)
                    {
                        self.deliver(delivery, &mut queue, &mut checks, &mut ids).await;
                    }
                    let (due, later): (Vec<Check>, Vec<Check>) = checks.drain(..).partition(|c| c.due <= now);
                    checks = later;
                    for check in due {
                        self.check(check, &mut queue, &mut ids).await;
                    }
                }
            }
        }
        tracing::info!(
            pending = queue.len(),
            "outbox worker stopped; pending records stay in the store"
        );
    }

    fn enqueue(
        &self,
        queue: &mut VecDeque<Delivery>,
        item: OutboxItem,
        incident: u32,
        durable: bool,
    ) {
        if durable && queue.iter().any(|d| d.durable && d.item.key == item.key) {
            return;
        }
        queue.push_back(Delivery {
            item,
            failures: 0,
            incident,
            durable,
            due: Instant::now(),
        });
    }

    async fn deliver(
        &self,
        mut delivery: Delivery,
        queue: &mut VecDeque<Delivery>,
        checks: &mut Vec<Check>,
        ids: &mut u64,
    ) {
        let record = &delivery.item.record;
        let request = ReconcileRequest {
            scenario: record.scenario.clone(),
            package: record.package.clone(),
            package_state: record.package_state.clone(),
        };
        inc(&self.metrics.reconcile_attempts);
        match self.action.reconcile(request).await {
            Ok(()) => {
                inc(&self.metrics.reconciles_delivered);
                tracing::info!(scenario = %record.scenario, package = %record.package, "reconcile delivered");
                self.publish(
                    ids,
                    EventKind::RecoveryStart,
                    Severity::Warning,
                    record,
                    format!(
                        "reconcile of scenario '{}' requested for package '{}' ({})",
                        record.scenario, record.package, record.package_state
                    ),
                );
                if delivery.durable {
                    self.delete_record(&delivery.item).await;
                }
                checks.push(Check {
                    item: delivery.item,
                    incident: delivery.incident,
                    due: Instant::now() + self.recovery_check_after,
                });
            }
            Err(error) => {
                inc(&self.metrics.reconcile_failures);
                delivery.failures += 1;
                let jitter = rand::rng().random_range(0.5..=1.0);
                let delay = match self.policy.after_failure(delivery.failures, jitter) {
                    NextStep::Retry(delay) => delay,
                    NextStep::EscalateAndRetry(delay) => {
                        inc(&self.metrics.escalations);
                        tracing::error!(scenario = %record.scenario, package = %record.package, failures = delivery.failures, %error,
                            "ActionController unreachable; reconcile still pending");
                        self.publish(ids, EventKind::Alert, Severity::Critical, record, format!(
                            "reconcile of scenario '{}' for package '{}' undelivered after {} attempts: {error}",
                            record.scenario, record.package, delivery.failures
                        ));
                        delay
                    }
                };
                if let ActionError::Refused(reason) = &error {
                    tracing::warn!(scenario = %record.scenario, %reason, "ActionController refused the reconcile; retrying");
                }
                delivery.due = Instant::now() + delay;
                queue.push_back(delivery);
            }
        }
    }

    /// Deletes a delivered record and records the delivery in the same
    /// transaction (so that a restart neither delivers it again nor takes
    /// the package for one whose reconcile was lost), retrying with backoff
    /// for a bounded time.
    async fn delete_record(&self, item: &OutboxItem) {
        let key = item.key.as_str();
        let marker = DeliveryRecord::of(&item.record, self.clock.now_ns());
        let batch = Batch::new().delete(key).put(
            self.keys.delivered_key(&item.record.package),
            marker.encode(),
        );
        let mut delay = Duration::from_millis(50);
        for _ in 0..8 {
            match tokio::time::timeout(self.store_timeout, self.store.apply(batch.clone())).await {
                Ok(Ok(_)) => return,
                Ok(Err(error)) => {
                    tracing::warn!(%key, %error, "could not delete a delivered outbox record")
                }
                Err(_) => tracing::warn!(%key, "deleting a delivered outbox record timed out"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        tracing::error!(%key, "giving up deleting a delivered outbox record; it will be delivered again after a restart");
    }

    /// After a delivered reconcile: has the package recovered?
    async fn check(&self, check: Check, queue: &mut VecDeque<Delivery>, ids: &mut u64) {
        let record = &check.item.record;
        let state = match self.handle.package_state(&record.package).await {
            Ok(state) => state,
            Err(error) => {
                tracing::warn!(package = %record.package, %error, "recovery check failed");
                return;
            }
        };
        if state.as_deref() != Some(record.package_state.as_str()) {
            self.publish(
                ids,
                EventKind::RecoveryComplete,
                Severity::Info,
                record,
                format!(
                    "package '{}' left {} (now {})",
                    record.package,
                    record.package_state,
                    state.as_deref().unwrap_or("unknown")
                ),
            );
            return;
        }
        let incident = check.incident + 1;
        if self.policy.may_reconcile(incident) {
            tracing::warn!(package = %record.package, incident, "package still failed after a reconcile; asking again");
            let mut item = check.item.clone();
            item.record.at_ns = self.clock.now_ns();
            self.enqueue(queue, item, incident, false);
        } else {
            inc(&self.metrics.escalations);
            tracing::error!(package = %record.package, reconciles = check.incident, "recovery failed; escalating");
            self.publish(
                ids,
                EventKind::RecoveryFailed,
                Severity::Critical,
                record,
                format!(
                    "package '{}' still {} after {} reconciles of scenario '{}': giving up",
                    record.package, record.package_state, check.incident, record.scenario
                ),
            );
        }
    }

    fn publish(
        &self,
        ids: &mut u64,
        kind: EventKind,
        severity: Severity,
        record: &OutboxRecord,
        description: String,
    ) {
        *ids += 1;
        let mut metadata = BTreeMap::new();
        metadata.insert("scenario".to_owned(), record.scenario.clone());
        let event = Event {
            id: format!("recovery-{}-{ids}", record.at_ns),
            kind,
            severity,
            resource_kind: ResourceKind::Package,
            resource_name: record.package.clone(),
            from: None,
            to: Some(record.package_state.clone()),
            at_ns: self.clock.now_ns(),
            source: "StateManager".to_owned(),
            transition_id: String::new(),
            description,
            metadata,
        };
        let _ = self.events.send(Arc::new(event));
    }
}
