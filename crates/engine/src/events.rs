//! Events of committed transitions and of recovery, broadcast to subscribers.
//! A slow subscriber lags and is told so; it never blocks the engine.

use std::collections::BTreeMap;
use std::sync::Arc;

use statemachine_core::ResourceKind;
use tokio::sync::broadcast;

/// What an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A committed state transition.
    StateChange,
    /// A reconcile request was sent to the ActionController.
    RecoveryStart,
    /// A package left Error after a reconcile.
    RecoveryComplete,
    /// Recovery gave up (retries exhausted) or could not be requested.
    RecoveryFailed,
    /// Something needs a person (e.g. the ActionController unreachable for long).
    Alert,
    /// Something unusual but handled (undocumented edge, unmapped container).
    Warning,
}

/// How serious an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Normal operation.
    Info,
    /// Unusual.
    Warning,
    /// A failure.
    Error,
    /// A failure that needs a person now.
    Critical,
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// A unique id (`{commit revision}-{index}` for transitions).
    pub id: String,
    /// What it is about.
    pub kind: EventKind,
    /// How serious.
    pub severity: Severity,
    /// The resource kind.
    pub resource_kind: ResourceKind,
    /// The resource name.
    pub resource_name: String,
    /// The state left (`None`: none before).
    pub from: Option<String>,
    /// The state entered (`None`: removed).
    pub to: Option<String>,
    /// When (ns since the epoch).
    pub at_ns: i64,
    /// Who caused it.
    pub source: String,
    /// The transition id.
    pub transition_id: String,
    /// For people.
    pub description: String,
    /// Extra facts (scenario, reason, ...).
    pub metadata: BTreeMap<String, String>,
}

/// Which events a subscriber wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only events about this kind of resource (`None`: all).
    pub resource_kind: Option<ResourceKind>,
    /// Only events about this resource name.
    pub resource_name: Option<String>,
    /// Include recovery events (RecoveryStart/Complete/Failed).
    pub include_recovery: bool,
    /// Include alerts and warnings.
    pub include_health: bool,
}

impl EventFilter {
    /// Whether `event` passes the filter.
    pub fn matches(&self, event: &Event) -> bool {
        let kind_ok = match event.kind {
            EventKind::StateChange => true,
            EventKind::RecoveryStart | EventKind::RecoveryComplete | EventKind::RecoveryFailed => {
                self.include_recovery
            }
            EventKind::Alert | EventKind::Warning => self.include_health,
        };
        kind_ok
            && self.resource_kind.is_none_or(|k| k == event.resource_kind)
            && self
                .resource_name
                .as_deref()
                .is_none_or(|n| n == event.resource_name)
    }
}

/// What a subscription yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// An event that passed the filter.
    Event(Arc<Event>),
    /// The subscriber fell behind and missed this many events.
    Lagged(u64),
}

/// A subscription to the engine's events.
#[derive(Debug)]
pub struct Subscription {
    receiver: broadcast::Receiver<Arc<Event>>,
    filter: EventFilter,
}

impl Subscription {
    pub(crate) fn new(receiver: broadcast::Receiver<Arc<Event>>, filter: EventFilter) -> Self {
        Self { receiver, filter }
    }

    /// The next event passing the filter; `None` once the engine stopped.
    pub async fn next(&mut self) -> Option<Delivery> {
        loop {
            match self.receiver.recv().await {
                Ok(event) if self.filter.matches(&event) => return Some(Delivery::Event(event)),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    return Some(Delivery::Lagged(missed));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
