//! The outbox worker: delivers the ActionController calls committed with
//! what caused them (the Reconcile of an entry into Error, the calls of an
//! incident's steps), with exponential backoff (reset on success) and
//! jitter, raises an alert once when the ActionController stays
//! unreachable, and deletes each record once it was taken, telling the
//! healer. It never blocks the owner task.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use state_store::{Batch, StateStore};
use statemachine_core::ResourceKind;
use statemachine_core::healing::RecoveryAction;
use statemachine_core::keys::Bookkeeping;
use statemachine_core::record::{DeliveryRecord, OutboxRecord};
use statemachine_core::recovery::{NextStep, RecoveryPolicy};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

use crate::events::{Event, EventKind, Severity};
use crate::healing::healer::HealerFeed;
use crate::metrics::{Metrics, inc};
use crate::ports::{ActionError, ActionPort, Clock, OffloadRequest, ReconcileRequest};

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
    due: Instant,
}

pub(crate) struct OutboxWorker {
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) keys: Bookkeeping,
    pub(crate) action: Arc<dyn ActionPort>,
    pub(crate) healer: mpsc::UnboundedSender<HealerFeed>,
    pub(crate) events: broadcast::Sender<Arc<Event>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) policy: RecoveryPolicy,
    pub(crate) store_timeout: Duration,
    pub(crate) incoming: mpsc::UnboundedReceiver<OutboxItem>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl OutboxWorker {
    pub(crate) async fn run(mut self, pending: Vec<OutboxItem>) {
        let mut queue: VecDeque<Delivery> = VecDeque::new();
        let mut ids = 0u64;
        for item in pending {
            self.enqueue(&mut queue, item);
        }
        loop {
            self.metrics
                .outbox_depth
                .store(queue.len() as u64, std::sync::atomic::Ordering::Relaxed);
            let next_due = queue.iter().map(|d| d.due).min();
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
                    Some(item) => self.enqueue(&mut queue, item),
                    None => break,
                },
                _ = wait => {
                    let now = Instant::now();
                    if let Some(i) = queue.iter().position(|d| d.due <= now)
                        && let Some(delivery) = queue.remove(i)
                    {
                        self.deliver(delivery, &mut queue, &mut ids).await;
                    }
                }
            }
        }
        tracing::info!(
            pending = queue.len(),
            "outbox worker stopped; pending records stay in the store"
        );
    }

    fn enqueue(&self, queue: &mut VecDeque<Delivery>, item: OutboxItem) {
        if queue.iter().any(|d| d.item.key == item.key) {
            return;
        }
        queue.push_back(Delivery {
            item,
            failures: 0,
            due: Instant::now(),
        });
    }

    /// Makes the call a record stands for.
    async fn call(&self, record: &OutboxRecord) -> Result<(), ActionError> {
        let action = record
            .step
            .as_ref()
            .map_or(RecoveryAction::Restart, |c| c.action);
        match (
            action,
            record.step.as_ref().and_then(|c| c.offload.as_ref()),
        ) {
            (RecoveryAction::Recreate, _) => self.action.trigger_action(&record.scenario).await,
            (RecoveryAction::Relocate, Some(offload)) => {
                let answer = self
                    .action
                    .offload(OffloadRequest {
                        scenario_name: record.scenario.clone(),
                        package_name: record.package.clone(),
                        model_name: offload.model.clone(),
                        source_node: offload.source_node.clone(),
                        target_node: offload.target_node.clone(),
                        policy_name: "statemanager-recovery".to_owned(),
                        reason: format!(
                            "recovery {}",
                            record.step.as_ref().map_or("", |c| c.incident.as_str())
                        ),
                    })
                    .await?;
                if answer.accepted {
                    Ok(())
                } else {
                    Err(ActionError::Refused(answer.message))
                }
            }
            _ => {
                self.action
                    .reconcile(ReconcileRequest {
                        scenario: record.scenario.clone(),
                        package: record.package.clone(),
                        package_state: record.package_state.clone(),
                    })
                    .await
            }
        }
    }

    async fn deliver(&self, mut delivery: Delivery, queue: &mut VecDeque<Delivery>, ids: &mut u64) {
        let record = &delivery.item.record;
        inc(&self.metrics.reconcile_attempts);
        match self.call(record).await {
            Ok(()) => {
                inc(&self.metrics.reconciles_delivered);
                let action = record
                    .step
                    .as_ref()
                    .map_or(RecoveryAction::Restart, |c| c.action);
                tracing::info!(scenario = %record.scenario, package = %record.package, action = action.as_str(), "recovery call delivered");
                // A step's event comes from the healer, with the incident.
                if record.step.is_none() {
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
                }
                self.delete_record(&delivery.item).await;
                let _ = self
                    .healer
                    .send(HealerFeed::Delivered(delivery.item.record));
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
