//! Self-healing (RECOVERY.md): the public types of the recovery and alert
//! calls, the healer's configuration, and the healer task that walks each
//! incident's ladder ([`healer`]).
//!
//! The rules are `statemachine_core::healing` and `statemachine_core::alert`;
//! this module applies them to committed states, keeps incidents and alerts
//! durable in the store and carries actions out through the outbox.

mod act;
mod answer;
pub(crate) mod healer;
mod records;

pub(crate) use act::incident_id;

use std::collections::BTreeMap;
use std::time::Duration;

use statemachine_core::ResourceKind;
use statemachine_core::alert::{Alert, AlertSeverity};
use statemachine_core::healing::{
    ActionPlan, Incident, IssueRules, RecoveryAction, StrategyTable, TrackerRules,
};

/// The healer's knobs, with RECOVERY.md's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct HealingConfig {
    /// The ladder and bounds per issue type.
    pub strategies: StrategyTable,
    /// Which states open incidents, and after how long.
    pub issues: IssueRules,
    /// Flapping and the stability figures.
    pub tracker: TrackerRules,
    /// How long an open alert lives before it expires (default 7 d).
    pub alert_ttl: Duration,
    /// Ended incidents kept in the store for `GetRecoveryStatus` (default 256).
    pub incidents_kept: usize,
    /// Closed (resolved or expired) alerts kept in the store (default 1024).
    pub alerts_kept: usize,
    /// How recently a node must have reported to be a Relocate target
    /// (default 30 s).
    pub live_node_within: Duration,
    /// Re-derive a model or package key another writer changed to a value
    /// the reports do not derive, at once (default on; RECOVERY.md §7).
    pub repair_foreign_writes: bool,
}

impl Default for HealingConfig {
    fn default() -> Self {
        Self {
            strategies: StrategyTable::default(),
            issues: IssueRules::default(),
            tracker: TrackerRules::default(),
            alert_ttl: Duration::from_secs(7 * 24 * 3600),
            incidents_kept: 256,
            alerts_kept: 1024,
            live_node_within: Duration::from_secs(30),
            repair_foreign_writes: true,
        }
    }
}

/// Which incident a recovery call means: by id, or the resource's open
/// incident, else its latest (RECOVERY.md §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncidentRef {
    /// The `recovery_id`.
    Id(String),
    /// The resource's open incident, else its latest one.
    Resource(ResourceKind, String),
}

/// A `TriggerRecovery` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerRequest {
    /// The resource's kind (package or model).
    pub kind: ResourceKind,
    /// Its name.
    pub name: String,
    /// The ladder to walk; empty: the Manual strategy's.
    pub actions: Vec<RecoveryAction>,
    /// Why, for the record.
    pub reason: String,
    /// Abort an open incident of the resource and start anew (otherwise the
    /// request joins it).
    pub force: bool,
}

/// An incident as the recovery calls answer it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveryView {
    /// The durable record.
    pub incident: Incident,
    /// The ladder it walks.
    pub ladder: Vec<RecoveryAction>,
    /// For people: where it stands.
    pub message: String,
    /// Rungs passed over the ladder's length, 0–100 (100 once ended).
    pub progress: f32,
}

/// The answer of `TriggerRecovery` and `AbortRecovery`.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveryAnswer {
    /// For people: what was done (opened, joined, aborted, already ended).
    pub message: String,
    /// The incident.
    pub view: RecoveryView,
}

/// Which alerts `GetPendingAlerts` lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertQuery {
    /// At least this severity.
    pub min_severity: Option<AlertSeverity>,
    /// Of this kind of resource.
    pub kind: Option<ResourceKind>,
    /// At most this many, newest first (0: all).
    pub limit: usize,
}

/// Pending alerts, newest first, and how many matched before the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertPage {
    /// The alerts.
    pub alerts: Vec<Alert>,
    /// How many matched.
    pub total: usize,
}

/// One check of a resource's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// `state`, `recovery`, `flapping`, `alerts`.
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// For people.
    pub message: String,
}

/// A resource's health (RECOVERY.md §8), for `GetResourceState`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthView {
    /// Healthy state, no open incident, not flapping, no open alert.
    pub healthy: bool,
    /// For people.
    pub message: String,
    /// When it was checked (ns).
    pub checked_ns: i64,
    /// The checks.
    pub checks: Vec<HealthCheck>,
    /// The tracker's figures and the service phase, under stable keys
    /// (`tracker.*`, `recovery.*`, `service_phase`; docs/api.md).
    pub metadata: BTreeMap<String, String>,
    /// The target of an open incident (`Running`), if any.
    pub desired_state: Option<String>,
    /// When it last changed, from the history (survives a restart).
    pub last_transition_ns: Option<i64>,
}

/// The answer of `SendStateDiff`.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffAnswer {
    /// The plan, when the diff needs action.
    pub plan: Option<ActionPlan>,
    /// The incident that runs it (opened or joined).
    pub recovery_id: Option<String>,
    /// For people: what was done, or why nothing needs doing.
    pub message: String,
}

/// The answer of `ForceSynchronization`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncAnswer {
    /// What was rewritten, one line per resource (`package/p: Error -> Running`).
    pub changed: Vec<String>,
    /// For people.
    pub message: String,
    /// The transition id the rewrite was committed under.
    pub transition_id: String,
    /// When (ns).
    pub timestamp_ns: i64,
}
