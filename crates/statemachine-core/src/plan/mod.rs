//! Cascade planning: `plan(&snapshot, input, now) -> Plan`.
//!
//! A plan lists every state key write (old -> new, bottom-up: containers,
//! models, packages, scenarios), the node record writes, and the effects
//! (reconcile requests, warnings). The engine commits it in one guarded
//! transaction; nothing here does I/O or reads a clock.
//!
//! [`plan()`] hands each [`Input`] to its planner: `request` checks and
//! applies a requested state change, `report` diffs a node's report against
//! its stored record; a tick and changed definitions are planned here. All
//! of them write through the `cascade`, which holds the plan's own writes
//! and derives models and packages bottom-up.

mod cascade;
mod report;
mod request;

use std::collections::{BTreeSet, HashMap};

pub use crate::input::{Input, NodeReport, ReportedContainer, RequestKind, StateChangeRequest};

use crate::access::Identity;
use crate::error::{ErrorCode, Rejection};
use crate::name::ResourceKind;
use crate::record::{NodeRecord, OutboxRecord};
use crate::snapshot::{Snapshot, Stamp, Tag, duration_ns};
use crate::state::{AnyState, PackageState};
use crate::topology::{Affected, ModelSource};
use cascade::Cascade;
use report::plan_report;
use request::plan_request;

/// Why a state key changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A component requested it.
    Requested,
    /// Derived from lower-level states.
    Derived,
    /// The resource's information could not be obtained for longer than the grace period.
    InformationFailure,
    /// The container vanished from its node's report.
    Vanished,
    /// The container is reported but maps to no model any more.
    Unmapped,
    /// The definition appeared: the state on creation.
    Defined,
    /// Every definition of the model was withdrawn.
    Withdrawn,
}

impl Reason {
    /// A short text for history and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Requested => "requested",
            Reason::Derived => "derived",
            Reason::InformationFailure => "information failure",
            Reason::Vanished => "vanished from its node's report",
            Reason::Unmapped => "maps to no model",
            Reason::Defined => "definition created",
            Reason::Withdrawn => "definition withdrawn",
        }
    }
}

/// One state key write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The resource kind.
    pub kind: ResourceKind,
    /// The resource name.
    pub name: String,
    /// The state before (`None`: no key).
    pub old: Option<AnyState>,
    /// The state after (`None`: the key is deleted).
    pub new: Option<AnyState>,
    /// Where the key stood when the change was planned: its store revision
    /// is the commit's guard (0: the key must be absent); a pending one is
    /// guarded by the plan that wrote it.
    pub old_stamp: Stamp,
    /// Why.
    pub reason: Reason,
}

/// One node record write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeChange {
    /// The node.
    pub node: String,
    /// The record before.
    pub old: Option<NodeRecord>,
    /// The record after (`None`: deleted).
    pub new: Option<NodeRecord>,
    /// Where the record stood when the change was planned (as for
    /// [`Change::old_stamp`]).
    pub old_stamp: Stamp,
}

/// Something the engine does besides writing states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Ask the ActionController to reconcile; committed as an outbox record.
    Reconcile(OutboxRecord),
    /// A package entered a reconcile state but no scenario targets it.
    NoScenarioForPackage {
        /// The package.
        package: String,
        /// The state it entered.
        state: PackageState,
    },
    /// A derived change followed an edge the diagrams do not document.
    UndocumentedEdge {
        /// The resource kind.
        kind: ResourceKind,
        /// The resource name.
        name: String,
        /// The state left.
        from: AnyState,
        /// The state entered.
        to: AnyState,
    },
    /// A reported container maps to no model; it is ignored.
    UnmappedContainer {
        /// The reporting node.
        node: String,
        /// The container.
        container: String,
    },
    /// An annotation or config key the model mapping consulted holds an
    /// invalid resource name: it was skipped for the next source
    /// ([`crate::Topology::model_for_container`]), so the operator's intent
    /// may be lost. Reported with every report that holds it.
    InvalidModelName {
        /// The reporting node.
        node: String,
        /// The container.
        container: String,
        /// Whether `key` is an annotation or a config key.
        source: ModelSource,
        /// The annotation or config key.
        key: String,
        /// The invalid value, as reported.
        value: String,
    },
}

/// The answer to an input and everything it causes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Accepted with a message for the caller, or rejected (nothing to write).
    pub outcome: Result<String, Rejection>,
    /// State key writes, bottom-up.
    pub changes: Vec<Change>,
    /// Node record writes.
    pub nodes: Vec<NodeChange>,
    /// Effects to carry out after the commit.
    pub effects: Vec<Effect>,
    /// A node that reported, and when (kept in memory only).
    pub seen: Option<(String, i64)>,
    /// The tags of the uncommitted plans (see [`Snapshot::apply_as`]) whose
    /// writes this plan read or overwrites, sorted, without duplicates.
    /// Empty: the plan is correct whatever becomes of the plans in flight.
    /// A rejection lists them too: it may rest on a pending state.
    pub depends_on: Vec<Tag>,
}

impl Plan {
    fn rejected(rejection: Rejection) -> Self {
        Self {
            outcome: Err(rejection),
            changes: Vec::new(),
            nodes: Vec::new(),
            effects: Vec::new(),
            seen: None,
            depends_on: Vec::new(),
        }
    }

    /// `true` when the plan writes nothing.
    pub fn writes_nothing(&self) -> bool {
        self.changes.is_empty() && self.nodes.is_empty()
    }

    /// The reconcile requests of the plan.
    pub fn reconciles(&self) -> impl Iterator<Item = &OutboxRecord> {
        self.effects.iter().filter_map(|e| match e {
            Effect::Reconcile(r) => Some(r),
            _ => None,
        })
    }
}

/// Plans `input` against `snapshot` at time `now_ns` (ns since the epoch).
pub fn plan(snapshot: &Snapshot, input: Input<'_>, now_ns: i64) -> Plan {
    match input {
        Input::StateChange(request) => plan_change(snapshot, request, None, now_ns),
        Input::StateChangeBy(request, caller) => {
            plan_change(snapshot, request, Some(caller), now_ns)
        }
        Input::NodeReport(report) => plan_report(snapshot, report, now_ns),
        Input::Tick => plan_tick(snapshot, now_ns),
        Input::Reevaluate(affected) => plan_reevaluate(snapshot, affected, now_ns),
    }
}

fn plan_change(
    snapshot: &Snapshot,
    request: &StateChangeRequest,
    caller: Option<&Identity>,
    now_ns: i64,
) -> Plan {
    let mut p = plan_request(snapshot, request, caller, now_ns);
    // Whatever the outcome, it rests on the resource's recorded state.
    if let Some(kind) = request.kind.managed()
        && let Some(tag) = snapshot.stamp(kind, &request.name).pending_tag()
        && let Err(at) = p.depends_on.binary_search(&tag)
    {
        p.depends_on.insert(at, tag);
    }
    p
}

fn reject(code: ErrorCode, message: impl Into<String>, details: impl Into<String>) -> Plan {
    Plan::rejected(Rejection::new(code, message, details))
}

fn plan_tick(s: &Snapshot, now: i64) -> Plan {
    let mut cascade = Cascade::new(s, now);
    let mut models: BTreeSet<&str> = BTreeSet::new();
    for (node, containers) in &s.failing {
        if let Some(entry) = cascade.node_entry(node) {
            models.extend(
                containers
                    .iter()
                    .filter_map(|c| entry.record.containers.get(c))
                    .map(|c| c.model.as_str()),
            );
        }
    }
    if let Some(timeout) = s.config.node_timeout {
        let timeout = duration_ns(timeout);
        for entry in s.nodes.values() {
            if entry
                .last_seen_ns
                .is_some_and(|seen| now >= seen.saturating_add(timeout))
            {
                cascade.note(entry.stamp);
                models.extend(entry.record.containers.values().map(|c| c.model.as_str()));
            }
        }
    }
    let count = models.len();
    cascade.evaluate_models(models);
    let message = format!("tick: {count} models re-evaluated");
    cascade.finish(message, Vec::new(), None)
}

fn plan_reevaluate<'a>(s: &'a Snapshot, affected: &'a Affected, now: i64) -> Plan {
    let mut cascade = Cascade::new(s, now);
    // A model withdrawn from every definition loses its keys and its node entries.
    let mut node_records: HashMap<&str, NodeRecord> = HashMap::new();
    let mut evaluate = Vec::new();
    for model in &affected.models {
        if s.topology.is_model_referenced(model) {
            evaluate.push(model.as_str());
            continue;
        }
        for (node, container) in s.model_index.get(model).into_iter().flatten() {
            cascade.set_container(container, None, Reason::Withdrawn);
            if let Some(entry) = cascade.node_entry(node) {
                node_records
                    .entry(node.as_str())
                    .or_insert_with(|| entry.record.clone())
                    .containers
                    .remove(container);
            }
        }
        cascade.set_model(model, None, Reason::Withdrawn);
    }
    cascade.evaluate_models(evaluate);
    // A new Package/ definition is evaluated (Idle while its models are Created).
    cascade.evaluate_packages(affected.packages.iter().map(String::as_str));
    // ETCD-CONTRACT: a new Scenario/ definition without a state key gets
    // its default state, Idle (written last: bottom-up).
    for scenario in &affected.scenarios {
        cascade.note(s.stamp(ResourceKind::Scenario, scenario));
        if s.topology.scenario(scenario).is_some()
            && !s.scenarios.contains_key(scenario)
            && let Some(initial) = s.default_state(ResourceKind::Scenario, scenario)
        {
            cascade.push(
                ResourceKind::Scenario,
                scenario,
                None,
                Some(initial),
                Reason::Defined,
            );
        }
    }
    let mut nodes: Vec<NodeChange> = node_records
        .into_iter()
        .map(|(node, record)| {
            let entry = s.nodes.get(node);
            NodeChange {
                node: node.to_owned(),
                old: entry.map(|e| e.record.clone()),
                new: (!record.containers.is_empty()).then_some(record),
                old_stamp: entry.map_or(Stamp::ABSENT, |e| e.stamp),
            }
        })
        .collect();
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    let message = format!(
        "definitions changed: {} state changes",
        cascade.changes.len()
    );
    cascade.finish(message, nodes, None)
}
