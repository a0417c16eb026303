//! Walking an incident's ladder: `next_step` applied, actions carried out
//! through the outbox (Restart, Recreate, Relocate) or here (Notify,
//! Isolate), endings, alerts and events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rand::Rng;
use state_store::Batch;
use statemachine_core::ResourceKind;
use statemachine_core::alert::{AlertSeverity, Raise};
use statemachine_core::healing::ladder::Outcome;
use statemachine_core::healing::{
    Incident, IssueType, Observation, Phase, RecoveryAction, Step, Strategy, next_step,
};
use statemachine_core::record::{OffloadCall, OutboxRecord, StepCall};

use super::healer::{Healer, Hold, RETRY_NS, RecoveryNote, Res};
use super::records::Unsaved;
use crate::events::{Event, EventKind, Severity};
use crate::metrics::inc;
use crate::outbox::OutboxItem;

/// Steps taken in one go for one incident at most (a ladder of unsupported
/// rungs moves on at once; this bounds a misconfigured one).
const MAX_STEPS_AT_ONCE: usize = 64;

/// How often the gauges are recomputed (ns).
const GAUGES_EVERY_NS: i64 = 1_000_000_000;

impl Healer {
    /// Takes every step that is due for the incident now.
    pub(super) async fn drive(&mut self, id: &str) {
        for _ in 0..MAX_STEPS_AT_ONCE {
            let Some(incident) = self.incidents.get(id) else {
                return;
            };
            if self.act_retry.contains_key(id) {
                return;
            }
            let strategy = incident.strategy(&self.config.strategies);
            let now = self.clock.now_ns();
            let res = (incident.kind, incident.name.clone());
            let observed = Observation {
                healthy: self.healthy(&res),
                quiet_until_ns: self
                    .trackers
                    .get(&res)
                    .and_then(|h| h.quiet_until(&self.config.tracker, now)),
            };
            let step = next_step(incident, &strategy, observed, now);
            match step {
                Step::Wait(_) | Step::Validate(_) | Step::AwaitDelivery | Step::Done => return,
                Step::Act(action) => {
                    if !self.act(id, action, &strategy, now).await {
                        return;
                    }
                }
                Step::Retry | Step::Escalate | Step::Complete | Step::Fail => {
                    let jitter = rand::rng().random_range(0.0..=1.0);
                    let mut incident = incident.clone();
                    incident.apply(step, &strategy, now, jitter);
                    if step == Step::Escalate {
                        inc(&self.metrics.recovery_escalations);
                    }
                    self.store_incident(incident.clone());
                    if incident.phase.is_terminal() {
                        self.ended(&incident, now).await;
                        return;
                    }
                }
            }
        }
        tracing::warn!(%id, "incident took too many steps at once; going on later");
    }

    /// Keeps an incident in memory and marks it for writing.
    pub(super) fn store_incident(&mut self, incident: Incident) {
        self.unsaved.insert(Unsaved::Incident(incident.id.clone()));
        self.incidents.insert(incident.id.clone(), incident);
    }

    /// Carries out the current rung; `false` when it could not be written
    /// (tried again later) or must wait for a delivery.
    async fn act(
        &mut self,
        id: &str,
        action: RecoveryAction,
        strategy: &Strategy,
        now: i64,
    ) -> bool {
        let Some(mut incident) = self.incidents.get(id).cloned() else {
            return false;
        };
        let res = (incident.kind, incident.name.clone());
        let step = u32::try_from(incident.steps.len()).unwrap_or(u32::MAX);
        let last_rung = incident.on_last_rung(strategy);
        incident.acted(strategy, now);
        inc(&self.metrics.recovery_actions[action as usize]);
        match action {
            RecoveryAction::Restart | RecoveryAction::Recreate | RecoveryAction::Relocate => {
                let calls = match self.context(&res).await {
                    Ok(ctx) => calls(&incident, step, action, &ctx, now),
                    Err(error) => {
                        tracing::warn!(%id, %error, "no context for a recovery action; trying again");
                        self.act_retry.insert(id.to_owned(), now + RETRY_NS);
                        return false;
                    }
                };
                if calls.is_empty() {
                    tracing::warn!(%id, resource = %res.1, action = action.as_str(),
                        "nothing to call for this rung (no scenario, no Dead model or no live target node): the rung fails");
                    incident.rung_failed(now);
                }
                let mut batch = Batch::new().put(self.keys.recovery_key(id), incident.encode());
                let items: Vec<OutboxItem> = calls
                    .into_iter()
                    .map(|record| OutboxItem {
                        key: self.keys.outbox_key(&record.id()),
                        record,
                    })
                    .collect();
                for item in &items {
                    batch = batch.put(item.key.clone(), item.record.encode());
                }
                if let Err(error) = self.apply(batch).await {
                    tracing::warn!(%id, %error, "could not write a recovery step; trying again");
                    self.act_retry.insert(id.to_owned(), now + RETRY_NS);
                    return false;
                }
                self.unsaved.remove(&Unsaved::Incident(id.to_owned()));
                if !items.is_empty() {
                    self.outstanding.insert((id.to_owned(), step), items.len());
                }
                self.incidents.insert(id.to_owned(), incident);
                for item in items {
                    if self.outbox.send(item).is_err() {
                        tracing::warn!("outbox worker stopped; the record stays in the store");
                    }
                }
                true
            }
            RecoveryAction::Notify | RecoveryAction::Isolate => {
                incident.delivered(strategy, now);
                let (severity, condition, title) = if action == RecoveryAction::Isolate {
                    // The owner learns of the hold when the incident ends;
                    // until then the open incident already joins entries.
                    self.held.insert(res.clone(), Hold::Isolated);
                    (AlertSeverity::Critical, "Isolated", "resource isolated")
                } else if last_rung {
                    (
                        AlertSeverity::Critical,
                        "RecoveryNotify",
                        "recovery needs attention",
                    )
                } else {
                    (
                        AlertSeverity::Warning,
                        "RecoveryNotify",
                        "recovery needs attention",
                    )
                };
                let description = format!(
                    "{} '{}': {} incident {} on rung {} ({}), {} action(s) taken",
                    res.0,
                    res.1,
                    issue_name(incident.issue),
                    incident.id,
                    incident.rung + 1,
                    action.as_str(),
                    incident.executed
                );
                self.store_incident(incident);
                self.raise(&res, severity, condition, title, &description, now);
                true
            }
            RecoveryAction::RollbackVersion | RecoveryAction::ResetConfig => {
                tracing::info!(%id, action = action.as_str(), "rung not offered by the ActionController: recorded as unsupported");
                self.store_incident(incident);
                true
            }
        }
    }

    /// Every call of a step was delivered: validation starts.
    pub(super) async fn step_delivered(&mut self, id: &str, step: u32) {
        let Some(incident) = self.incidents.get(id) else {
            return;
        };
        let current = incident.steps.len().checked_sub(1) == usize::try_from(step).ok();
        if !current || incident.phase.is_terminal() {
            return;
        }
        let mut incident = incident.clone();
        let strategy = incident.strategy(&self.config.strategies);
        let now = self.clock.now_ns();
        incident.delivered(&strategy, now);
        let Some(taken) = incident.steps.last().cloned() else {
            return;
        };
        if taken.outcome == Outcome::Delivered {
            let description = format!(
                "recovery {} of {} '{}': {} requested (rung {} of {})",
                incident.id,
                incident.kind,
                incident.name,
                taken.action.as_str(),
                taken.rung + 1,
                strategy.actions.len()
            );
            self.publish(
                EventKind::RecoveryStart,
                Severity::Warning,
                &incident,
                description,
            );
        }
        self.store_incident(incident);
        self.drive(id).await;
        self.flush().await;
    }

    /// An incident ended: events, alerts, holds, the owner told, old
    /// incidents pruned.
    pub(super) async fn ended(&mut self, incident: &Incident, now: i64) {
        let res = (incident.kind, incident.name.clone());
        if self.open.get(&res) == Some(&incident.id) {
            self.open.remove(&res);
        }
        self.latest.insert(res.clone(), incident.id.clone());
        let hold = match incident.phase {
            Phase::Completed => {
                inc(&self.metrics.incidents_completed);
                self.publish(
                    EventKind::RecoveryComplete,
                    Severity::Info,
                    incident,
                    format!(
                        "recovery {} of {} '{}' completed after {} action(s)",
                        incident.id, incident.kind, incident.name, incident.executed
                    ),
                );
                self.resolve_alerts(&res, now);
                None
            }
            Phase::Failed => {
                inc(&self.metrics.incidents_failed);
                let description = format!(
                    "recovery {} of {} '{}' failed: {} action(s) taken, ladder exhausted; no further automatic recovery until it is healthy again or TriggerRecovery",
                    incident.id, incident.kind, incident.name, incident.executed
                );
                tracing::error!(id = %incident.id, resource = %incident.name, "{description}");
                self.publish(
                    EventKind::RecoveryFailed,
                    Severity::Critical,
                    incident,
                    description.clone(),
                );
                self.raise(
                    &res,
                    AlertSeverity::Critical,
                    "RecoveryFailed",
                    "recovery failed",
                    &description,
                    now,
                );
                Some(if incident.isolated() {
                    Hold::Isolated
                } else {
                    Hold::Failed
                })
            }
            _ => {
                inc(&self.metrics.incidents_aborted);
                self.publish(
                    EventKind::Warning,
                    Severity::Warning,
                    incident,
                    format!(
                        "recovery {} of {} '{}' aborted",
                        incident.id, incident.kind, incident.name
                    ),
                );
                incident.isolated().then_some(Hold::Isolated)
            }
        };
        match hold {
            Some(hold) => {
                self.held.insert(res.clone(), hold);
            }
            None => {
                self.held.remove(&res);
            }
        }
        if res.0 == ResourceKind::Package {
            self.note(RecoveryNote::Ended {
                package: res.1.clone(),
                id: incident.id.clone(),
                hold: hold.is_some(),
            })
            .await;
        }
        self.prune_incidents();
    }

    /// Drops the oldest ended incidents beyond `incidents_kept`.
    fn prune_incidents(&mut self) {
        let mut ended: Vec<(i64, String)> = self
            .incidents
            .values()
            .filter(|i| i.phase.is_terminal())
            .map(|i| (i.ended_ns.unwrap_or(i.opened_ns), i.id.clone()))
            .collect();
        if ended.len() <= self.config.incidents_kept {
            return;
        }
        ended.sort();
        let excess = ended.len() - self.config.incidents_kept;
        for (_, id) in ended.into_iter().take(excess) {
            if let Some(incident) = self.incidents.remove(&id) {
                let res = (incident.kind, incident.name);
                if self.latest.get(&res) == Some(&id) {
                    self.latest.remove(&res);
                }
            }
            self.outstanding.retain(|(i, _), _| *i != id);
            self.unsaved.insert(Unsaved::Incident(id));
        }
    }

    /// Ends an incident Aborted (an operator, or its resource removed).
    pub(super) async fn abort(&mut self, id: &str, reason: &str, now: i64) -> bool {
        let Some(mut incident) = self.incidents.get(id).cloned() else {
            return false;
        };
        if !incident.abort(now) {
            return false;
        }
        if incident.reason.is_empty() {
            incident.reason = reason.to_owned();
        } else {
            incident.reason = format!("{}; aborted: {reason}", incident.reason);
        }
        self.act_retry.remove(id);
        self.store_incident(incident.clone());
        self.ended(&incident, now).await;
        true
    }

    /// The owner opened an incident while the healer had another open for
    /// the same resource: the older one is aborted.
    pub(super) async fn end_superseded(&mut self, id: &str, now: i64) {
        if let Some(mut incident) = self.incidents.get(id).cloned()
            && incident.abort(now)
        {
            incident.reason = "superseded by a newer incident".to_owned();
            self.store_incident(incident);
        }
    }

    /// The resource is healthy: its held state is lifted (unless isolated)
    /// and its alerts resolved.
    pub(super) async fn healthy_again(&mut self, res: &Res, now: i64) {
        if self.held.get(res) == Some(&Hold::Failed) {
            self.held.remove(res);
            if res.0 == ResourceKind::Package {
                self.note(RecoveryNote::Released {
                    package: res.1.clone(),
                })
                .await;
            }
        }
        if !self.open.contains_key(res) {
            self.resolve_alerts(res, now);
        }
    }

    /// Raises the Flapping alert and opens a Flapping incident (damping
    /// itself comes from the tracker) when the resource flaps.
    pub(super) async fn check_flapping(&mut self, res: &Res, now: i64) {
        let Some(history) = self.trackers.get(res) else {
            return;
        };
        if !history.is_flapping(&self.config.tracker, now) {
            return;
        }
        let fresh = self.alerts.open(res.0, &res.1, "Flapping").is_none();
        if fresh {
            inc(&self.metrics.flapping_detected);
            let description = format!(
                "{} '{}' changed state {} times within {:?}: its recovery waits until it has been stable that long",
                res.0,
                res.1,
                history.in_window(self.config.tracker.flap_window, now),
                self.config.tracker.flap_window
            );
            self.raise(
                res,
                AlertSeverity::Warning,
                "Flapping",
                "resource is flapping",
                &description,
                now,
            );
            if !self.open.contains_key(res) && !self.held.contains_key(res) {
                self.open_incident(res, IssueType::Flapping, Vec::new(), String::new(), now)
                    .await;
            }
        }
    }

    /// Opens an incident here (all but the owner's PackageError ones):
    /// written first, then driven. Returns its id.
    pub(super) async fn open_incident(
        &mut self,
        res: &Res,
        issue: IssueType,
        ladder: Vec<RecoveryAction>,
        reason: String,
        now: i64,
    ) -> Option<String> {
        let strategy = self.config.strategies.get(issue).with_actions(&ladder);
        let id = incident_id(now, res);
        let mut incident = Incident::open(id.clone(), res.0, res.1.clone(), issue, &strategy, now);
        incident.ladder = ladder;
        incident.reason = reason;
        let batch = Batch::new().put(self.keys.recovery_key(&id), incident.encode());
        if let Err(error) = self.apply(batch).await {
            tracing::warn!(resource = %res.1, %error, "could not open an incident; trying again later");
            // Classified again when it is due.
            self.pending.insert(res.clone(), (issue, now + RETRY_NS));
            return None;
        }
        inc(&self.metrics.incidents_opened);
        tracing::info!(%id, kind = %res.0, resource = %res.1, issue = issue_name(issue), "incident opened");
        self.pending.remove(res);
        self.open.insert(res.clone(), id.clone());
        self.incidents.insert(id.clone(), incident);
        if res.0 == ResourceKind::Package {
            self.note(RecoveryNote::Open {
                package: res.1.clone(),
                id: id.clone(),
            })
            .await;
        }
        self.drive(&id).await;
        Some(id)
    }

    /// Raises (or raises again) an alert and publishes an ALERT event.
    pub(super) fn raise(
        &mut self,
        res: &Res,
        severity: AlertSeverity,
        condition: &str,
        title: &str,
        description: &str,
        now: i64,
    ) {
        let alert = self.alerts.raise(
            &Raise {
                severity,
                kind: res.0,
                name: &res.1,
                condition,
                title,
                description,
            },
            now,
        );
        inc(&self.metrics.alerts_raised[severity as usize]);
        self.unsaved.insert(Unsaved::Alert(alert.id.clone()));
        self.event_ids += 1;
        let mut metadata = BTreeMap::new();
        metadata.insert("alert_id".to_owned(), alert.id.clone());
        metadata.insert("condition".to_owned(), alert.condition.clone());
        metadata.insert("count".to_owned(), alert.count.to_string());
        let event = Event {
            id: format!("alert-{now}-{}", self.event_ids),
            kind: EventKind::Alert,
            severity: match severity {
                AlertSeverity::Info => Severity::Info,
                AlertSeverity::Warning => Severity::Warning,
                AlertSeverity::Error => Severity::Error,
                AlertSeverity::Critical => Severity::Critical,
            },
            resource_kind: res.0,
            resource_name: res.1.clone(),
            from: None,
            to: None,
            at_ns: now,
            source: "StateManager".to_owned(),
            transition_id: String::new(),
            description: format!("{title}: {description}"),
            metadata,
        };
        let _ = self.events.send(Arc::new(event));
    }

    /// Resolves the resource's open alerts.
    pub(super) fn resolve_alerts(&mut self, res: &Res, now: i64) {
        for alert in self.alerts.resolve(res.0, &res.1, now) {
            self.unsaved.insert(Unsaved::Alert(alert.id));
        }
    }

    /// Expires alerts open longer than `alert_ttl` and prunes closed ones.
    pub(super) async fn expire_alerts(&mut self, now: i64) {
        let ttl = i64::try_from(self.config.alert_ttl.as_nanos()).unwrap_or(i64::MAX);
        for alert in self.alerts.expire(now, ttl) {
            self.unsaved.insert(Unsaved::Alert(alert.id));
        }
        for id in self.alerts.prune(self.config.alerts_kept) {
            self.unsaved.insert(Unsaved::Alert(id));
        }
        self.flush().await;
    }

    /// Publishes a recovery event about an incident.
    pub(super) fn publish(
        &mut self,
        kind: EventKind,
        severity: Severity,
        incident: &Incident,
        description: String,
    ) {
        self.event_ids += 1;
        let mut metadata = BTreeMap::new();
        metadata.insert("recovery_id".to_owned(), incident.id.clone());
        metadata.insert("issue".to_owned(), issue_name(incident.issue).to_owned());
        metadata.insert("phase".to_owned(), format!("{:?}", incident.phase));
        metadata.insert("rung".to_owned(), incident.rung.to_string());
        if let Some(step) = incident.steps.last() {
            metadata.insert("action".to_owned(), step.action.as_str().to_owned());
        }
        let now = self.clock.now_ns();
        let event = Event {
            id: format!("recovery-{now}-{}", self.event_ids),
            kind,
            severity,
            resource_kind: incident.kind,
            resource_name: incident.name.clone(),
            from: None,
            to: self
                .states
                .get(&(incident.kind, incident.name.clone()))
                .map(|s| s.as_str().to_owned()),
            at_ns: now,
            source: "StateManager".to_owned(),
            transition_id: String::new(),
            description,
            metadata,
        };
        let _ = self.events.send(Arc::new(event));
    }

    /// Updates the gauges `/metrics` shows, at most once a second: the
    /// flapping count walks every tracked resource.
    pub(super) fn publish_gauges(&mut self) {
        let now = self.clock.now_ns();
        if now < self.gauges_due {
            return;
        }
        self.gauges_due = now.saturating_add(GAUGES_EVERY_NS);
        let mut phases = [0u64; 3];
        for id in self.open.values() {
            if let Some(incident) = self.incidents.get(id) {
                let i = match incident.phase {
                    Phase::Initializing => 0,
                    Phase::Executing => 1,
                    _ => 2,
                };
                phases[i] += 1;
            }
        }
        for (gauge, value) in self.metrics.incidents_open.iter().zip(phases) {
            gauge.store(value, Ordering::Relaxed);
        }
        let mut alerts = [0u64; 4];
        for alert in self.alerts.pending(&Default::default()) {
            alerts[alert.severity as usize] += 1;
        }
        for (gauge, value) in self.metrics.alerts_open.iter().zip(alerts) {
            gauge.store(value, Ordering::Relaxed);
        }
        let flapping = self
            .trackers
            .values()
            .filter(|h| h.is_flapping(&self.config.tracker, now))
            .count();
        self.metrics
            .flapping_resources
            .store(flapping as u64, Ordering::Relaxed);
    }
}

/// The calls of a rung: Restart → `Reconcile` and Recreate →
/// `TriggerAction` per scenario of the package; Relocate → `OffloadModel`
/// per Dead model to a live node other than its own.
fn calls(
    incident: &Incident,
    step: u32,
    action: RecoveryAction,
    ctx: &super::healer::ActionContext,
    now: i64,
) -> Vec<OutboxRecord> {
    let package = ctx.package.clone().unwrap_or_else(|| incident.name.clone());
    let state = ctx.state.map(|s| s.as_str().to_owned()).unwrap_or_default();
    let record = |scenario: &str, call: u32, offload: Option<OffloadCall>| OutboxRecord {
        scenario: scenario.to_owned(),
        package: package.clone(),
        package_state: state.clone(),
        at_ns: now,
        kind: incident.kind.as_key_segment().to_owned(),
        step: Some(StepCall {
            incident: incident.id.clone(),
            step,
            call,
            action,
            offload,
        }),
    };
    match action {
        RecoveryAction::Restart | RecoveryAction::Recreate => ctx
            .scenarios
            .iter()
            .enumerate()
            .map(|(i, s)| record(s, u32::try_from(i).unwrap_or(u32::MAX), None))
            .collect(),
        RecoveryAction::Relocate => {
            let Some(scenario) = ctx.scenarios.first() else {
                return Vec::new();
            };
            let mut out = Vec::new();
            for (model, node) in &ctx.dead_models {
                if let Some(target) = ctx.live_nodes.iter().find(|n| *n != node) {
                    let call = u32::try_from(out.len()).unwrap_or(u32::MAX);
                    out.push(record(
                        scenario,
                        call,
                        Some(OffloadCall {
                            model: model.clone(),
                            source_node: node.clone(),
                            target_node: target.clone(),
                        }),
                    ));
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

/// `{opened_ns:020}-{kind}-{name}`: key-safe and time-ordered.
pub(crate) fn incident_id(now: i64, res: &Res) -> String {
    format!("{:020}-{}-{}", now.max(0), res.0.as_key_segment(), res.1)
}

/// The issue type's name as the API shows it (`PackageError`).
pub(crate) fn issue_name(issue: IssueType) -> &'static str {
    match issue {
        IssueType::PackageError => "PackageError",
        IssueType::PackageDegraded => "PackageDegraded",
        IssueType::ModelDead => "ModelDead",
        IssueType::NodeSilent => "NodeSilent",
        IssueType::Flapping => "Flapping",
        IssueType::Diff => "Diff",
        IssueType::Manual => "Manual",
    }
}
