//! What follows a commit: callers answered, events published, reconcile
//! requests handed to the outbox worker, effects counted and logged.

use std::collections::BTreeMap;
use std::sync::Arc;

use statemachine_core::{
    Affected, AnyState, Change, Effect, ErrorCode, Identity, Input, NodeReport, Reason,
    ResourceKind, StateChangeRequest,
};
use tokio::time::Instant;

use super::Owner;
use super::commit::Planned;
use super::recovery::Decision;
use crate::api::{Caller, ChangeAnswer, EngineError, ReportAnswer};
use crate::events::{Event, EventKind, Severity};
use crate::healing::SyncAnswer;
use crate::healing::healer::{Committed, HealerFeed, Observed};
use crate::metrics::inc;
use crate::outbox::OutboxItem;

/// One input of a batch, with whoever waits for its answer.
pub(super) enum Pending {
    /// A requested change, with its caller's identity when authenticated.
    Change(StateChangeRequest, Option<Identity>, Caller<ChangeAnswer>),
    Report(NodeReport, Caller<ReportAnswer>),
    Reevaluate(Affected),
    Tick,
    /// ForceSynchronization: a re-evaluation whose caller wants to know
    /// what changed.
    Sync(Affected, Caller<Result<SyncAnswer, EngineError>>),
}

impl Pending {
    pub(super) fn input(&self) -> Input<'_> {
        match self {
            Pending::Change(request, None, _) => Input::StateChange(request),
            Pending::Change(request, Some(identity), _) => Input::StateChangeBy(request, identity),
            Pending::Report(report, _) => Input::NodeReport(report),
            Pending::Reevaluate(affected) | Pending::Sync(affected, _) => {
                Input::Reevaluate(affected)
            }
            Pending::Tick => Input::Tick,
        }
    }

    /// The containers of a node report (0 for anything else).
    pub(super) fn containers(&self) -> usize {
        match self {
            Pending::Report(report, _) => report.containers.len(),
            _ => 0,
        }
    }

    /// Takes the input for planning; `false` when its caller abandoned it at
    /// its deadline (it is then dropped: never committed, not answered).
    pub(super) fn take(&self) -> bool {
        match self {
            Pending::Change(_, _, caller) => caller.take(),
            Pending::Report(_, caller) => caller.take(),
            Pending::Sync(_, caller) => caller.take(),
            Pending::Reevaluate(_) | Pending::Tick => true,
        }
    }

    /// Until when its caller waits (`None`: nobody waits).
    pub(super) fn deadline(&self) -> Option<Instant> {
        match self {
            Pending::Change(_, _, caller) => Some(caller.deadline),
            Pending::Report(_, caller) => Some(caller.deadline),
            Pending::Sync(_, caller) => Some(caller.deadline),
            Pending::Reevaluate(_) | Pending::Tick => None,
        }
    }

    pub(super) fn is_report(&self) -> bool {
        matches!(self, Pending::Report(..))
    }

    pub(super) fn source<'a>(&'a self, derived: &'a str) -> &'a str {
        match self {
            Pending::Change(request, _, _) if !request.source.is_empty() => &request.source,
            _ => derived,
        }
    }

    /// Answers the caller, if any. A caller that went away is ignored.
    pub(super) fn answer(
        self,
        code: ErrorCode,
        message: String,
        details: String,
        transition_id: &str,
        at_ns: i64,
    ) {
        match self {
            Pending::Change(_, _, caller) => {
                let _ = caller.reply.send(ChangeAnswer {
                    code,
                    message,
                    details,
                    transition_id: transition_id.to_owned(),
                    timestamp_ns: at_ns,
                });
            }
            Pending::Report(_, caller) => {
                let message = if details.is_empty() {
                    message
                } else {
                    format!("{message}: {details}")
                };
                let _ = caller.reply.send(ReportAnswer { code, message });
            }
            Pending::Sync(_, caller) => {
                let answer = if code == ErrorCode::Success {
                    Ok(SyncAnswer {
                        changed: Vec::new(),
                        message,
                        transition_id: transition_id.to_owned(),
                        timestamp_ns: at_ns,
                    })
                } else {
                    let text = if details.is_empty() {
                        message
                    } else {
                        format!("{message}: {details}")
                    };
                    Err(match code {
                        ErrorCode::InvalidRequest => EngineError::Invalid(text),
                        ErrorCode::ResourceNotFound => EngineError::NotFound(text),
                        _ => EngineError::Unavailable(text),
                    })
                };
                let _ = caller.reply.send(answer);
            }
            Pending::Reevaluate(_) | Pending::Tick => {}
        }
    }
}

impl Owner {
    /// Answers the committed inputs, publishes events, hands reconcile
    /// requests to the outbox worker.
    pub(super) fn finish(&mut self, planned: Vec<Planned>, now: i64, revision: i64) {
        let derived = self.config.core.derived_source.clone();
        let mut event_index = 0;
        // Nobody listening: no events to build.
        let publish = self.events.receiver_count() > 0;
        let mut healer = Committed {
            at_ns: now,
            ..Committed::default()
        };
        let mut deliveries: Vec<OutboxItem> = Vec::new();
        for Planned {
            input,
            plan: p,
            transition_id,
            ..
        } in planned
        {
            if let Err(rejection) = p.outcome {
                inc(&self.metrics.rejected);
                let transition_id = match &input {
                    Pending::Change(request, _, _) => request.transition_id.clone(),
                    _ => String::new(),
                };
                input.answer(
                    rejection.code,
                    rejection.message,
                    rejection.details,
                    &transition_id,
                    now,
                );
                continue;
            }
            if let Some((node, at)) = &p.seen {
                self.metrics.node_seen(node, *at);
            }
            let source = input.source(&derived).to_owned();
            let tick = matches!(input, Pending::Tick);
            for change in &p.changes {
                inc(&self.metrics.transitions[change.kind as usize]);
                if change.kind == ResourceKind::Container {
                    continue;
                }
                if matches!(change.kind, ResourceKind::Package | ResourceKind::Model) {
                    healer.changes.push(Observed {
                        kind: change.kind,
                        name: change.name.clone(),
                        from: left_state(change),
                        to: change.new,
                        by_node_timeout: tick
                            && change.kind == ResourceKind::Model
                            && change.reason == Reason::InformationFailure,
                    });
                }
                self.last_change
                    .insert((change.kind, change.name.clone()), now);
                event_index += 1;
                if !publish {
                    continue;
                }
                let _ = self.events.send(Arc::new(transition_event(
                    change,
                    format!("{revision}-{event_index}"),
                    now,
                    &source,
                    &transition_id,
                )));
            }
            for effect in &p.effects {
                if let Effect::Reconcile(record) = effect {
                    match self.decide(record) {
                        Decision::Skip => {
                            tracing::info!(package = %record.package, "recovery is held for the package: no reconcile");
                        }
                        Decision::Plain(record) => deliveries.push(self.outbox_item(record)),
                        Decision::Join(record, id) => {
                            healer.joined.push(id);
                            deliveries.push(self.outbox_item(record));
                        }
                        Decision::Open(record, incident) => {
                            self.recovery.insert(
                                record.package.clone(),
                                super::recovery::Guard::Open(incident.id.clone()),
                            );
                            healer.opened.push((*incident, 1));
                            deliveries.push(self.outbox_item(record));
                        }
                    }
                    continue;
                }
                self.carry_out(effect, &mut event_index, revision, now);
            }
            if matches!(input, Pending::Sync(..)) {
                let changed = p
                    .changes
                    .iter()
                    .map(|c| {
                        format!(
                            "{}/{}: {} -> {}",
                            c.kind.as_key_segment(),
                            c.name,
                            left_state(c).map_or("-", |s| s.as_str()),
                            c.new.map_or("-", |s| s.as_str())
                        )
                    })
                    .collect::<Vec<_>>();
                if let Pending::Sync(_, caller) = input {
                    let message = if changed.is_empty() {
                        "in sync: nothing differed from the latest reports".to_owned()
                    } else {
                        format!("{} resource(s) rewritten", changed.len())
                    };
                    let _ = caller.reply.send(Ok(SyncAnswer {
                        changed,
                        message,
                        transition_id: transition_id.clone(),
                        timestamp_ns: now,
                    }));
                }
                continue;
            }
            // A container whose model name is valid again, or that is no
            // longer reported, is forgotten: it is warned about anew.
            if let Pending::Report(report, _) = &input
                && !self.warned_model_names.is_empty()
            {
                self.warned_model_names.retain(|(node, container)| {
                    *node != report.node
                        || p.effects.iter().any(|e| {
                            matches!(e, Effect::InvalidModelName { container: c, .. } if c == container)
                        })
                });
            }
            let message = p.outcome.clone().unwrap_or_default();
            input.answer(
                ErrorCode::Success,
                message,
                String::new(),
                &transition_id,
                now,
            );
        }
        // The healer hears of opened incidents before their calls can be
        // delivered.
        if !healer.changes.is_empty() || !healer.opened.is_empty() || !healer.joined.is_empty() {
            let _ = self.healer.send(HealerFeed::Committed(healer));
        }
        for item in deliveries {
            if self.outbox.send(item).is_err() {
                tracing::warn!("outbox worker stopped; the record stays in the store");
            }
        }
    }

    fn outbox_item(&self, record: statemachine_core::record::OutboxRecord) -> OutboxItem {
        OutboxItem {
            key: self.keys.outbox_key(&record.id()),
            record,
        }
    }

    /// Carries out one effect of a committed plan: hands a reconcile to the
    /// outbox worker, counts, logs, publishes warnings.
    fn carry_out(&mut self, effect: &Effect, event_index: &mut u64, revision: i64, now: i64) {
        match effect {
            // Handed out by `finish`, after the healer heard of the commit.
            Effect::Reconcile(_) => {}
            Effect::NoScenarioForPackage { package, state } => {
                inc(&self.metrics.no_scenario);
                tracing::warn!(%package, %state, "package entered a reconcile state but no scenario targets it");
                *event_index += 1;
                let mut event = warning(
                    format!("{revision}-{event_index}"),
                    now,
                    ResourceKind::Package,
                    package,
                );
                event.description = format!(
                    "package '{package}' entered {state} but no scenario targets it: no reconcile"
                );
                let _ = self.events.send(Arc::new(event));
            }
            Effect::UndocumentedEdge {
                kind,
                name,
                from,
                to,
            } => {
                inc(&self.metrics.undocumented_edges);
                tracing::info!(%kind, %name, %from, %to, "undocumented edge applied");
            }
            Effect::UnmappedContainer { node, container } => {
                inc(&self.metrics.unmapped_containers);
                tracing::debug!(%node, %container, "container maps to no model; ignored");
            }
            Effect::InvalidModelName {
                node,
                container,
                source,
                key,
                value,
            } => {
                inc(&self.metrics.invalid_model_names);
                // Bounded: beyond this many containers warned about,
                // start over (some warnings repeat, memory does not grow).
                const MAX_WARNED: usize = 1024;
                let warned = (node.clone(), container.clone());
                if self.warned_model_names.contains(&warned) {
                    return;
                }
                if self.warned_model_names.len() >= MAX_WARNED {
                    self.warned_model_names.clear();
                }
                self.warned_model_names.insert(warned);
                let reason = statemachine_core::name::validate(value)
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                let shown: String = value.chars().take(64).collect();
                tracing::warn!(
                    %node,
                    %container,
                    %source,
                    key = %key.escape_debug(),
                    value = %shown.escape_debug(),
                    %reason,
                    "the model name is not a valid resource name; skipped for the next mapping source (warned once per container)"
                );
            }
        }
    }
}

fn severity_of(state: Option<AnyState>) -> Severity {
    use statemachine_core::{ModelState, PackageState, ScenarioState};
    match state {
        Some(AnyState::Package(PackageState::Error)) | Some(AnyState::Model(ModelState::Dead)) => {
            Severity::Error
        }
        Some(AnyState::Package(PackageState::Degraded))
        | Some(AnyState::Scenario(ScenarioState::Denied)) => Severity::Warning,
        _ => Severity::Info,
    }
}

/// The state a change leaves: the recorded one, or the kind's initial state
/// when there was no record (a new scenario leaves Idle).
pub(super) fn left_state(change: &Change) -> Option<AnyState> {
    change.old.or_else(|| AnyState::initial(change.kind))
}

fn transition_event(
    change: &Change,
    id: String,
    now: i64,
    source: &str,
    transition_id: &str,
) -> Event {
    let from = left_state(change).map(|s| s.as_str().to_owned());
    let to = change.new.map(|s| s.as_str().to_owned());
    let description = format!(
        "{} '{}' {} -> {} ({})",
        change.kind,
        change.name,
        from.as_deref().unwrap_or("-"),
        to.as_deref().unwrap_or("-"),
        change.reason.as_str()
    );
    let mut metadata = BTreeMap::new();
    metadata.insert("reason".to_owned(), change.reason.as_str().to_owned());
    Event {
        id,
        kind: EventKind::StateChange,
        severity: severity_of(change.new),
        resource_kind: change.kind,
        resource_name: change.name.clone(),
        from,
        to,
        at_ns: now,
        source: source.to_owned(),
        transition_id: transition_id.to_owned(),
        description,
        metadata,
    }
}

fn warning(id: String, now: i64, kind: ResourceKind, name: &str) -> Event {
    Event {
        id,
        kind: EventKind::Warning,
        severity: Severity::Warning,
        resource_kind: kind,
        resource_name: name.to_owned(),
        from: None,
        to: None,
        at_ns: now,
        source: "StateManager".to_owned(),
        transition_id: String::new(),
        description: String::new(),
        metadata: BTreeMap::new(),
    }
}
