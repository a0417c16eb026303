//! Cascade planning: `plan(&snapshot, input, now) -> Plan`.
//!
//! A plan lists every state key write (old -> new, bottom-up: containers,
//! models, packages, scenarios), the node record writes, and the effects
//! (reconcile requests, warnings). The engine commits it in one guarded
//! transaction; nothing here does I/O or reads a clock.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::derive::{container_state, model_state, package_state};
use crate::error::{ErrorCode, Rejection};
use crate::name::{ResourceKind, validate};
use crate::record::{NodeContainer, NodeRecord, OutboxRecord};
use crate::snapshot::{Revision, Snapshot, duration_ns};
use crate::state::{AnyState, ContainerState, ModelState, PackageState, ScenarioState};
use crate::topology::Affected;
use crate::transition::{
    MODEL_EDGES, PACKAGE_EDGES, is_documented_model_edge, is_documented_package_edge,
};

/// The wire's `ResourceType` of a state change request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// `RESOURCE_TYPE_UNSPECIFIED`.
    Unspecified,
    /// A scenario.
    Scenario,
    /// A package (direct update, seed 004).
    Package,
    /// A model (direct update, seed 004).
    Model,
    /// A volume: not managed.
    Volume,
    /// A network: not managed.
    Network,
    /// A node: not managed.
    Node,
    /// A number the wire protocol does not define.
    Unknown(i32),
}

impl RequestKind {
    /// The kind with the wire's `ResourceType` number.
    pub fn from_proto(number: i32) -> Self {
        match number {
            0 => RequestKind::Unspecified,
            1 => RequestKind::Scenario,
            2 => RequestKind::Package,
            3 => RequestKind::Model,
            4 => RequestKind::Volume,
            5 => RequestKind::Network,
            6 => RequestKind::Node,
            other => RequestKind::Unknown(other),
        }
    }

    /// The managed resource kind, if this is one.
    pub fn managed(self) -> Option<ResourceKind> {
        match self {
            RequestKind::Scenario => Some(ResourceKind::Scenario),
            RequestKind::Package => Some(ResourceKind::Package),
            RequestKind::Model => Some(ResourceKind::Model),
            _ => None,
        }
    }
}

/// A requested state change (`SendStateChange`), as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChangeRequest {
    /// The resource type.
    pub kind: RequestKind,
    /// The resource name, unvalidated.
    pub name: String,
    /// The state the caller believes is current (may be empty).
    pub current_state: String,
    /// The requested state.
    pub target_state: String,
    /// The caller's id for this transition (echoed back).
    pub transition_id: String,
    /// The requesting component.
    pub source: String,
}

/// One container of a node's full report (`monitoringserver.ContainerInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportedContainer {
    /// The container id.
    pub id: String,
    /// podman's names; the first one is used, without its leading `/`.
    pub names: Vec<String>,
    /// podman's state map.
    pub state: HashMap<String, String>,
    /// The container's config map.
    pub config: HashMap<String, String>,
    /// The container's annotations.
    pub annotations: HashMap<String, String>,
}

/// A node's full container list (`monitoringserver.ContainerList`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeReport {
    /// The reporting node.
    pub node: String,
    /// Every container on the node.
    pub containers: Vec<ReportedContainer>,
}

/// What planning is asked to do.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// Validate and apply a requested state change.
    StateChange(&'a StateChangeRequest),
    /// Apply a node's full container report.
    NodeReport(&'a NodeReport),
    /// Time passed: information failures whose grace ran out, silent nodes.
    Tick,
    /// Definitions changed (see [`Snapshot::update_definition`]).
    Reevaluate(&'a Affected),
}

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
    /// The key's revision the change was planned from: the commit's guard.
    pub old_revision: Revision,
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
    /// The record's revision the change was planned from.
    pub old_revision: Revision,
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
}

impl Plan {
    fn rejected(rejection: Rejection) -> Self {
        Self {
            outcome: Err(rejection),
            changes: Vec::new(),
            nodes: Vec::new(),
            effects: Vec::new(),
            seen: None,
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
        Input::StateChange(request) => plan_request(snapshot, request, now_ns),
        Input::NodeReport(report) => plan_report(snapshot, report, now_ns),
        Input::Tick => plan_tick(snapshot, now_ns),
        Input::Reevaluate(affected) => plan_reevaluate(snapshot, affected, now_ns),
    }
}

/// How a model's state comes out of an evaluation.
enum ModelOutcome {
    Set(ModelState, Reason),
    Keep,
    Remove,
}

/// The working state of one plan: the snapshot plus the plan's own writes.
struct Cascade<'a> {
    s: &'a Snapshot,
    now: i64,
    /// The reporting node and its new record, which replace the stored one.
    node: Option<(&'a str, NodeRecord)>,
    /// model -> containers of the reporting node's new record.
    node_models: HashMap<String, Vec<String>>,
    containers: HashMap<String, Option<ContainerState>>,
    models: HashMap<String, Option<ModelState>>,
    packages: HashMap<String, Option<PackageState>>,
    changes: Vec<Change>,
    effects: Vec<Effect>,
}

impl<'a> Cascade<'a> {
    fn new(s: &'a Snapshot, now: i64) -> Self {
        Self {
            s,
            now,
            node: None,
            node_models: HashMap::new(),
            containers: HashMap::new(),
            models: HashMap::new(),
            packages: HashMap::new(),
            changes: Vec::new(),
            effects: Vec::new(),
        }
    }

    fn finish(self, message: String, nodes: Vec<NodeChange>, seen: Option<(String, i64)>) -> Plan {
        Plan {
            outcome: Ok(message),
            changes: self.changes,
            nodes,
            effects: self.effects,
            seen,
        }
    }

    fn container(&self, name: &str) -> Option<ContainerState> {
        match self.containers.get(name) {
            Some(state) => *state,
            None => self.s.containers.get(name).map(|v| v.state),
        }
    }

    fn model(&self, name: &str) -> Option<ModelState> {
        match self.models.get(name) {
            Some(state) => *state,
            None => self.s.models.get(name).map(|v| v.state),
        }
    }

    fn package(&self, name: &str) -> Option<PackageState> {
        match self.packages.get(name) {
            Some(state) => *state,
            None => self.s.packages.get(name).map(|v| v.state),
        }
    }

    fn push(
        &mut self,
        kind: ResourceKind,
        name: &str,
        old: Option<AnyState>,
        new: Option<AnyState>,
        reason: Reason,
    ) {
        self.changes.push(Change {
            kind,
            name: name.to_owned(),
            old,
            new,
            old_revision: self.s.revision(kind, name),
            reason,
        });
    }

    fn set_container(&mut self, name: &str, state: Option<ContainerState>, reason: Reason) {
        let old = self.container(name);
        if old != state {
            self.push(
                ResourceKind::Container,
                name,
                old.map(AnyState::Container),
                state.map(AnyState::Container),
                reason,
            );
            self.containers.insert(name.to_owned(), state);
        }
    }

    /// Writes a model state and re-evaluates its packages. Returns whether it changed.
    fn set_model(&mut self, name: &str, state: Option<ModelState>, reason: Reason) -> bool {
        let old = self.model(name);
        if old == state {
            return false;
        }
        if let (Some(from), Some(to)) = (old, state)
            && reason != Reason::Requested
            && !is_documented_model_edge(from, to)
        {
            self.effects.push(Effect::UndocumentedEdge {
                kind: ResourceKind::Model,
                name: name.to_owned(),
                from: AnyState::Model(from),
                to: AnyState::Model(to),
            });
        }
        self.push(
            ResourceKind::Model,
            name,
            old.map(AnyState::Model),
            state.map(AnyState::Model),
            reason,
        );
        self.models.insert(name.to_owned(), state);
        true
    }

    fn set_package(&mut self, name: &str, state: PackageState, reason: Reason) {
        let old = self.package(name);
        if old == Some(state) {
            return;
        }
        if let Some(from) = old
            && reason != Reason::Requested
            && !is_documented_package_edge(from, state)
        {
            self.effects.push(Effect::UndocumentedEdge {
                kind: ResourceKind::Package,
                name: name.to_owned(),
                from: AnyState::Package(from),
                to: AnyState::Package(state),
            });
        }
        self.push(
            ResourceKind::Package,
            name,
            old.map(AnyState::Package),
            Some(AnyState::Package(state)),
            reason,
        );
        self.packages.insert(name.to_owned(), Some(state));
        // STATE-MACHINES §3: reconcile only on *entering* a reconcile state.
        if self.s.config.reconcile_on.contains(&state) {
            match self.s.topology.scenario_of(name) {
                Some(scenario) => self.effects.push(Effect::Reconcile(OutboxRecord {
                    scenario: scenario.clone(),
                    package: name.to_owned(),
                    package_state: state.as_str().to_owned(),
                    at_ns: self.now,
                    kind: ResourceKind::Package.as_key_segment().to_owned(),
                })),
                None => self.effects.push(Effect::NoScenarioForPackage {
                    package: name.to_owned(),
                    state,
                }),
            }
        }
    }

    /// The containers of a model on every node, the reporting node's new
    /// record replacing its stored one.
    fn model_containers(&self, model: &str) -> Vec<(&str, &str, &NodeContainer)> {
        let mut out = Vec::new();
        let reporting = self.node.as_ref().map(|(n, _)| *n);
        if let Some(index) = self.s.model_index.get(model) {
            for (node, container) in index {
                if Some(node.as_str()) == reporting {
                    continue;
                }
                if let Some(entry) = self
                    .s
                    .nodes
                    .get(node)
                    .and_then(|e| e.record.containers.get(container))
                {
                    out.push((node.as_str(), container.as_str(), entry));
                }
            }
        }
        if let (Some((node, record)), Some(names)) = (&self.node, self.node_models.get(model)) {
            for name in names {
                if let Some(entry) = record.containers.get(name) {
                    out.push((node, name.as_str(), entry));
                }
            }
        }
        out
    }

    /// STATE-MACHINES §2, with information failures and their grace period.
    fn evaluate_model(&self, model: &str) -> ModelOutcome {
        let config = &self.s.config;
        let grace = duration_ns(config.info_failure_grace);
        let reporting = self.node.as_ref().map(|(n, _)| *n);
        let entries = self.model_containers(model);
        if entries.is_empty() {
            return if !self.s.topology.is_model_referenced(model) && self.model(model).is_some() {
                ModelOutcome::Remove
            } else {
                ModelOutcome::Keep
            };
        }
        let mut known = Vec::with_capacity(entries.len());
        let mut failure: Option<i64> = None;
        for (node, container, entry) in entries {
            let mut since = entry.failure_since_ns;
            if let Some(timeout) = config.node_timeout
                && Some(node) != reporting
                && let Some(seen) = self.s.nodes.get(node).and_then(|e| e.last_seen_ns)
            {
                let silent = seen.saturating_add(duration_ns(timeout));
                if self.now >= silent {
                    since = Some(since.map_or(silent, |s| s.min(silent)));
                }
            }
            match since {
                Some(t) => failure = Some(failure.map_or(t, |f| f.min(t))),
                None => known.extend(self.container(container)),
            }
        }
        let derived = model_state(&known);
        match failure {
            Some(since) if self.now >= since.saturating_add(grace) => {
                ModelOutcome::Set(ModelState::Dead, Reason::InformationFailure)
            }
            // A real Dead does not wait for the grace period.
            Some(_) if derived == ModelState::Dead => {
                ModelOutcome::Set(ModelState::Dead, Reason::Derived)
            }
            // Within the grace period the model keeps its last state.
            Some(_) => ModelOutcome::Keep,
            None => ModelOutcome::Set(derived, Reason::Derived),
        }
    }

    fn evaluate_models<'m>(&mut self, models: impl IntoIterator<Item = &'m String>) {
        let mut packages = BTreeSet::new();
        for model in models {
            let (state, reason) = match self.evaluate_model(model) {
                ModelOutcome::Set(state, reason) => (Some(state), reason),
                ModelOutcome::Keep => continue,
                ModelOutcome::Remove => (None, Reason::Withdrawn),
            };
            if self.set_model(model, state, reason) {
                packages.extend(self.s.topology.packages_of(model).cloned());
            }
        }
        self.evaluate_packages(&packages);
    }

    fn evaluate_packages(&mut self, packages: &BTreeSet<String>) {
        for package in packages {
            if self.s.topology.package(package).is_none() {
                continue;
            }
            let models: Vec<ModelState> = self
                .s
                .topology
                .models_of(package)
                .map(|m| self.model(m.as_str()).unwrap_or(ModelState::Created))
                .collect();
            self.set_package(package, package_state(&models), Reason::Derived);
        }
    }
}

fn reject(code: ErrorCode, message: impl Into<String>, details: impl Into<String>) -> Plan {
    Plan::rejected(Rejection::new(code, message, details))
}

fn plan_request(s: &Snapshot, request: &StateChangeRequest, now: i64) -> Plan {
    // WIRE-PROTOCOL: the shape of the request is checked before the record.
    let kind = match request.kind {
        RequestKind::Unspecified => {
            return reject(
                ErrorCode::InvalidRequest,
                "resource_type is unspecified",
                "use SCENARIO, PACKAGE or MODEL",
            );
        }
        RequestKind::Unknown(n) => {
            return reject(
                ErrorCode::InvalidRequest,
                format!("unknown resource_type {n}"),
                "use SCENARIO, PACKAGE or MODEL",
            );
        }
        RequestKind::Volume | RequestKind::Network | RequestKind::Node => {
            return reject(
                ErrorCode::InvalidRequest,
                format!(
                    "{:?} resources are not managed by the StateManager",
                    request.kind
                ),
                "managed resource types: SCENARIO, PACKAGE, MODEL",
            );
        }
        other => other.managed().unwrap_or(ResourceKind::Scenario),
    };
    let name = request.name.as_str();
    if let Err(e) = validate(name) {
        return reject(
            ErrorCode::InvalidRequest,
            format!("invalid resource_name: {e}"),
            "",
        );
    }
    let target = match AnyState::parse(kind, &request.target_state) {
        Ok(t) => t,
        Err(e) => {
            return reject(
                ErrorCode::InvalidRequest,
                format!("invalid target_state: {e}"),
                "",
            );
        }
    };
    let claimed = if request.current_state.trim().is_empty() {
        None
    } else {
        match AnyState::parse(kind, &request.current_state) {
            Ok(c) => Some(c),
            Err(e) => {
                return reject(
                    ErrorCode::InvalidRequest,
                    format!("invalid current_state: {e}"),
                    "",
                );
            }
        }
    };
    if claimed == Some(target) {
        return reject(
            ErrorCode::InvalidRequest,
            format!("current_state and target_state are both '{target}'"),
            "a transition needs a different target state",
        );
    }

    let known = s.state(kind, name).is_some()
        || match kind {
            ResourceKind::Scenario => true,
            ResourceKind::Package => s.topology.package(name).is_some(),
            ResourceKind::Model => {
                s.topology.is_model_referenced(name) || s.model_index.contains_key(name)
            }
            ResourceKind::Container => false,
        };
    if !known {
        return reject(
            ErrorCode::ResourceNotFound,
            format!("{kind} '{name}' is not known"),
            "it has no definition and no recorded state",
        );
    }
    let from = s.state(kind, name).unwrap_or(match kind {
        ResourceKind::Package => AnyState::Package(PackageState::Idle),
        ResourceKind::Model => AnyState::Model(ModelState::Created),
        _ => AnyState::Scenario(ScenarioState::Idle),
    });

    let mut note = String::new();
    if let Some(claimed) = claimed
        && claimed != from
    {
        if s.config.scenario_policy.strict_current_state {
            return reject(
                ErrorCode::PreconditionFailed,
                format!("{kind} '{name}' is '{from}', not '{claimed}'"),
                "current_state must match the recorded state",
            );
        }
        note = format!(" (the request said current state '{claimed}'; the record said '{from}')");
    }
    if from == target {
        return Cascade::new(s, now).finish(
            format!("{kind} '{name}' is already '{target}'; nothing to do{note}"),
            Vec::new(),
            None,
        );
    }

    let mut cascade = Cascade::new(s, now);
    let detail = match (from, target) {
        (AnyState::Scenario(f), AnyState::Scenario(t)) => {
            match s.config.scenario_policy.check(f, t, &request.source) {
                Ok(edge) => {
                    cascade.push(
                        kind,
                        name,
                        s.state(kind, name),
                        Some(target),
                        Reason::Requested,
                    );
                    format!("; {}: {}", edge.event, edge.action)
                }
                Err(rejection) => return Plan::rejected(rejection),
            }
        }
        (AnyState::Model(f), AnyState::Model(t)) => {
            if !is_documented_model_edge(f, t) {
                return undocumented(kind, name, from, target, allowed_next(MODEL_EDGES, f));
            }
            cascade.set_model(name, Some(t), Reason::Requested);
            let packages = s.topology.packages_of(name).cloned().collect();
            cascade.evaluate_packages(&packages);
            String::new()
        }
        (AnyState::Package(f), AnyState::Package(t)) => {
            if !is_documented_package_edge(f, t) {
                return undocumented(kind, name, from, target, allowed_next(PACKAGE_EDGES, f));
            }
            cascade.set_package(name, t, Reason::Requested);
            String::new()
        }
        _ => return reject(ErrorCode::InternalError, "state kinds disagree", ""),
    };
    cascade.finish(
        format!("{kind} '{name}' {from} -> {target}{detail}{note}"),
        Vec::new(),
        None,
    )
}

fn allowed_next<S: PartialEq + Copy + std::fmt::Display>(edges: &[(S, S)], from: S) -> String {
    let next: Vec<String> = edges
        .iter()
        .filter(|(f, _)| *f == from)
        .map(|(_, t)| t.to_string())
        .collect();
    if next.is_empty() {
        format!("no transition leaves '{from}'")
    } else {
        format!("allowed from '{from}': {}", next.join(", "))
    }
}

fn undocumented(
    kind: ResourceKind,
    name: &str,
    from: AnyState,
    to: AnyState,
    allowed: String,
) -> Plan {
    reject(
        ErrorCode::InvalidStateTransition,
        format!("{kind} transition {from} -> {to} of '{name}' is not allowed"),
        allowed,
    )
}

fn plan_report(s: &Snapshot, report: &NodeReport, now: i64) -> Plan {
    let node = report.node.as_str();
    if let Err(e) = validate(node) {
        return reject(
            ErrorCode::InvalidRequest,
            format!("invalid node_name: {e}"),
            "",
        );
    }
    let mapping = &s.config.model_mapping;
    let mut present: HashSet<&str> = HashSet::with_capacity(report.containers.len());
    let mut entries = Vec::with_capacity(report.containers.len());
    for (i, c) in report.containers.iter().enumerate() {
        let Some(raw) = c.names.first() else {
            return reject(
                ErrorCode::InvalidRequest,
                format!(
                    "container {i} (id '{}') of node '{node}' has no name",
                    c.id.escape_debug()
                ),
                "",
            );
        };
        let name = raw.strip_prefix('/').unwrap_or(raw);
        if let Err(e) = validate(name) {
            return reject(
                ErrorCode::InvalidRequest,
                format!("container {i} of node '{node}': invalid name: {e}"),
                "",
            );
        }
        if !present.insert(name) {
            return reject(
                ErrorCode::InvalidRequest,
                format!("container '{name}' appears twice in the report of node '{node}'"),
                "",
            );
        }
        let state = container_state(&c.state);
        let model = s.topology.model_for_container(
            name,
            |k| c.annotations.get(k).map(String::as_str),
            |k| c.config.get(k).map(String::as_str),
            mapping,
        );
        entries.push((name, state, model));
    }

    let prev = s.nodes.get(node);
    let prev_record = prev.map(|e| &e.record).filter(|r| !r.containers.is_empty());
    let mut cascade = Cascade::new(s, now);
    let mut record = NodeRecord::default();
    let mut affected: BTreeSet<String> = BTreeSet::new();
    for (name, state, model) in entries {
        let prev_entry = prev_record.and_then(|r| r.containers.get(name));
        if let Some(prev_entry) = prev_entry
            && Some(prev_entry.model.as_str()) != model
        {
            affected.insert(prev_entry.model.clone());
        }
        let Some(model) = model else {
            cascade.effects.push(Effect::UnmappedContainer {
                node: node.to_owned(),
                container: name.to_owned(),
            });
            cascade.set_container(name, None, Reason::Unmapped);
            continue;
        };
        // STATE-MACHINES §2: Unknown is an information failure; keep its start.
        let failure_since_ns = (state == ContainerState::Unknown)
            .then(|| prev_entry.and_then(|e| e.failure_since_ns).unwrap_or(now));
        record.containers.insert(
            name.to_owned(),
            NodeContainer {
                model: model.to_owned(),
                missing: false,
                failure_since_ns,
            },
        );
        cascade.set_container(name, Some(state), Reason::Derived);
        if !affected.contains(model) {
            affected.insert(model.to_owned());
        }
    }
    if let Some(prev_record) = prev_record {
        for (name, entry) in &prev_record.containers {
            if present.contains(name.as_str()) {
                continue;
            }
            affected.insert(entry.model.clone());
            cascade.set_container(name, None, Reason::Vanished);
            // Vanishing is a failure only while a definition references the model.
            if s.topology.is_model_referenced(&entry.model) {
                record.containers.insert(
                    name.clone(),
                    NodeContainer {
                        model: entry.model.clone(),
                        missing: true,
                        failure_since_ns: Some(entry.failure_since_ns.unwrap_or(now)),
                    },
                );
            }
        }
    }

    for (name, entry) in &record.containers {
        cascade
            .node_models
            .entry(entry.model.clone())
            .or_default()
            .push(name.clone());
    }
    let changed =
        prev_record != Some(&record) && !(prev_record.is_none() && record.containers.is_empty());
    let node_change = changed.then(|| NodeChange {
        node: node.to_owned(),
        old: prev_record.cloned(),
        new: (!record.containers.is_empty()).then(|| record.clone()),
        old_revision: prev.map_or(0, |e| e.revision),
    });
    cascade.node = Some((node, record));
    cascade.evaluate_models(&affected);
    let message = format!(
        "node '{node}': {} containers, {} state changes",
        report.containers.len(),
        cascade.changes.len()
    );
    cascade.finish(
        message,
        node_change.into_iter().collect(),
        Some((node.to_owned(), now)),
    )
}

fn plan_tick(s: &Snapshot, now: i64) -> Plan {
    let mut models: BTreeSet<String> = BTreeSet::new();
    for (node, containers) in &s.failing {
        if let Some(entry) = s.nodes.get(node) {
            models.extend(
                containers
                    .iter()
                    .filter_map(|c| entry.record.containers.get(c))
                    .map(|c| c.model.clone()),
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
                models.extend(entry.record.containers.values().map(|c| c.model.clone()));
            }
        }
    }
    let mut cascade = Cascade::new(s, now);
    cascade.evaluate_models(&models);
    let message = format!("tick: {} models re-evaluated", models.len());
    cascade.finish(message, Vec::new(), None)
}

fn plan_reevaluate(s: &Snapshot, affected: &Affected, now: i64) -> Plan {
    let mut cascade = Cascade::new(s, now);
    // ETCD-CONTRACT: a new Scenario/ definition without a state key starts Idle.
    for scenario in &affected.scenarios {
        if s.topology.scenario(scenario).is_some() && s.scenarios.get(scenario).is_none() {
            cascade.push(
                ResourceKind::Scenario,
                scenario,
                None,
                Some(AnyState::Scenario(ScenarioState::Idle)),
                Reason::Defined,
            );
        }
    }
    // A model withdrawn from every definition loses its keys and its node entries.
    let mut node_records: HashMap<&str, NodeRecord> = HashMap::new();
    let mut evaluate = Vec::new();
    for model in &affected.models {
        if s.topology.is_model_referenced(model) {
            evaluate.push(model.clone());
            continue;
        }
        for (node, container) in s.model_index.get(model).into_iter().flatten() {
            cascade.set_container(container, None, Reason::Withdrawn);
            if let Some(entry) = s.nodes.get(node) {
                node_records
                    .entry(node.as_str())
                    .or_insert_with(|| entry.record.clone())
                    .containers
                    .remove(container);
            }
        }
        cascade.set_model(model, None, Reason::Withdrawn);
    }
    cascade.evaluate_models(&evaluate);
    // A new Package/ definition is evaluated (Idle while its models are Created).
    cascade.evaluate_packages(&affected.packages);
    let mut nodes: Vec<NodeChange> = node_records
        .into_iter()
        .map(|(node, record)| {
            let entry = s.nodes.get(node);
            NodeChange {
                node: node.to_owned(),
                old: entry.map(|e| e.record.clone()),
                new: (!record.containers.is_empty()).then_some(record),
                old_revision: entry.map_or(0, |e| e.revision),
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
