//! Cascade planning: `plan(&snapshot, input, now) -> Plan`.
//!
//! A plan lists every state key write (old -> new, bottom-up: containers,
//! models, packages, scenarios), the node record writes, and the effects
//! (reconcile requests, warnings). The engine commits it in one guarded
//! transaction; nothing here does I/O or reads a clock.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use crate::fastmap::{FastMap, FastSet};

use crate::derive::{ContainerSet, ModelSet, container_state};
use crate::error::{ErrorCode, Rejection};
use crate::name::{ResourceKind, validate};
use crate::record::{NodeContainer, NodeRecord, OutboxRecord};
use crate::snapshot::{Revision, Snapshot, Tag, Versioned, duration_ns, pending_tag};
use crate::state::{AnyState, ContainerState, ModelState, PackageState, ScenarioState};
use crate::topology::{Affected, ModelSource};
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
    /// The state already derived from `state` by [`Self::derive_state`],
    /// which then drops the map; `None`: planning derives it from `state`.
    pub derived: Option<ContainerState>,
}

impl ReportedContainer {
    /// Derives the container's state now (STATE-MACHINES §1) and drops the
    /// podman map, which is most of a report's memory (eleven strings and a
    /// hash table per container). A transport calls this as soon as it has
    /// decoded a report, before the report waits in a queue.
    pub fn derive_state(&mut self) {
        if self.derived.is_none() {
            self.derived = Some(container_state(&self.state));
        }
        self.state = HashMap::new();
    }

    /// The container's state: derived earlier, or from `state` now.
    pub fn container_state(&self) -> ContainerState {
        self.derived.unwrap_or_else(|| container_state(&self.state))
    }
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
        Input::StateChange(request) => {
            let mut p = plan_request(snapshot, request, now_ns);
            // Whatever the outcome, it rests on the resource's recorded state.
            if let Some(kind) = request.kind.managed()
                && let Some(tag) = pending_tag(snapshot.revision(kind, &request.name))
                && let Err(at) = p.depends_on.binary_search(&tag)
            {
                p.depends_on.insert(at, tag);
            }
            p
        }
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

/// A container of the reporting node, as its new record will have it.
#[derive(Clone, Copy)]
struct Slot<'a> {
    model: &'a str,
    container: &'a str,
    /// The reported state (`None`: missing from the report).
    state: Option<ContainerState>,
    failure_since_ns: Option<i64>,
}

/// The reporting node's new containers, grouped by model.
struct NodeSlots<'a> {
    node: &'a str,
    /// Grouped by model.
    slots: Vec<Slot<'a>>,
    /// model -> its range in `slots`.
    by_model: FastMap<&'a str, (usize, usize)>,
}

/// Groups slots by model in linear time (a counting sort on the models'
/// first-seen index): no string comparisons.
fn group_by_model<'a>(
    record: Vec<Slot<'a>>,
    model_index: &FastMap<&'a str, usize>,
    models: usize,
) -> (Vec<Slot<'a>>, FastMap<&'a str, (usize, usize)>) {
    let index_of = |slot: &Slot<'a>| model_index.get(slot.model).copied().unwrap_or(0);
    let indexes: Vec<usize> = record.iter().map(index_of).collect();
    let mut starts = vec![0usize; models + 1];
    for &i in &indexes {
        starts[i + 1] += 1;
    }
    for i in 0..models {
        starts[i + 1] += starts[i];
    }
    let mut next = starts.clone();
    let mut grouped: Vec<Option<Slot<'a>>> = vec![None; record.len()];
    for (slot, i) in record.into_iter().zip(indexes) {
        grouped[next[i]] = Some(slot);
        next[i] += 1;
    }
    let mut by_model = FastMap::default();
    by_model.reserve(models);
    for (model, &i) in model_index {
        if starts[i] < starts[i + 1] {
            by_model.insert(*model, (starts[i], starts[i + 1]));
        }
    }
    (grouped.into_iter().flatten().collect(), by_model)
}

/// The working state of one plan: the snapshot plus the plan's own writes.
struct Cascade<'a> {
    s: &'a Snapshot,
    now: i64,
    /// The reporting node and its new containers; they replace the node's
    /// stored record. (A plan writes each container key at most once, so
    /// container states need no overlay: the slots carry the new ones.)
    node: Option<NodeSlots<'a>>,
    models: FastMap<&'a str, Option<ModelState>>,
    packages: FastMap<&'a str, Option<PackageState>>,
    changes: Vec<Change>,
    effects: Vec<Effect>,
    /// Tags of the pending values read (see [`Plan::depends_on`]); written
    /// only when a pending value is met, which the hot path never does.
    depends_on: RefCell<Vec<Tag>>,
}

impl<'a> Cascade<'a> {
    fn new(s: &'a Snapshot, now: i64) -> Self {
        Self {
            s,
            now,
            node: None,
            models: FastMap::default(),
            packages: FastMap::default(),
            changes: Vec::new(),
            effects: Vec::new(),
            depends_on: RefCell::new(Vec::new()),
        }
    }

    fn finish(self, message: String, nodes: Vec<NodeChange>, seen: Option<(String, i64)>) -> Plan {
        let mut depends_on = self.depends_on.into_inner();
        depends_on.sort_unstable();
        depends_on.dedup();
        Plan {
            outcome: Ok(message),
            changes: self.changes,
            nodes,
            effects: self.effects,
            seen,
            depends_on,
        }
    }

    /// Notes a value read from the snapshot at `revision`: a pending one
    /// makes the plan depend on the plan that wrote it.
    #[inline]
    fn note(&self, revision: Revision) {
        if let Some(tag) = pending_tag(revision) {
            self.depends_on.borrow_mut().push(tag);
        }
    }

    /// Notes the read of a state key that has no value in the snapshot: a
    /// delete not yet committed is a dependency too.
    #[inline]
    fn note_absent(&self, kind: ResourceKind, name: &str) {
        if !self.s.deleted.is_empty() {
            self.note(self.s.tombstone(kind, name));
        }
    }

    /// A state as the snapshot has it, noting a pending value (or delete).
    fn read<S: Copy>(
        &self,
        map: &FastMap<String, Versioned<S>>,
        kind: ResourceKind,
        name: &str,
    ) -> Option<S> {
        match map.get(name) {
            Some(v) => {
                self.note(v.revision);
                Some(v.state)
            }
            None => {
                self.note_absent(kind, name);
                None
            }
        }
    }

    fn container(&self, name: &str) -> Option<ContainerState> {
        self.read(&self.s.containers, ResourceKind::Container, name)
    }

    fn model(&self, name: &str) -> Option<ModelState> {
        match self.models.get(name) {
            Some(state) => *state,
            None => self.read(&self.s.models, ResourceKind::Model, name),
        }
    }

    fn package(&self, name: &str) -> Option<PackageState> {
        match self.packages.get(name) {
            Some(state) => *state,
            None => self.read(&self.s.packages, ResourceKind::Package, name),
        }
    }

    /// A node's record as the snapshot has it, noting a pending one.
    fn node_entry(&self, node: &str) -> Option<&'a crate::snapshot::NodeEntry> {
        let entry = self.s.nodes.get(node)?;
        self.note(entry.revision);
        Some(entry)
    }

    fn push(
        &mut self,
        kind: ResourceKind,
        name: &str,
        old: Option<AnyState>,
        new: Option<AnyState>,
        reason: Reason,
    ) {
        let old_revision = self.s.revision(kind, name);
        self.note(old_revision);
        self.changes.push(Change {
            kind,
            name: name.to_owned(),
            old,
            new,
            old_revision,
            reason,
        });
    }

    fn set_container(&mut self, name: &'a str, state: Option<ContainerState>, reason: Reason) {
        let old = self.container(name);
        if old != state {
            self.push(
                ResourceKind::Container,
                name,
                old.map(AnyState::Container),
                state.map(AnyState::Container),
                reason,
            );
        }
    }

    /// Writes a model state and re-evaluates its packages. Returns whether it changed.
    fn set_model(&mut self, name: &'a str, state: Option<ModelState>, reason: Reason) -> bool {
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
        self.models.insert(name, state);
        true
    }

    fn set_package(&mut self, name: &'a str, state: PackageState, reason: Reason) {
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
        self.packages.insert(name, Some(state));
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

    /// Calls `f(node, state, failure_since)` for every container of a model
    /// on every node, the reporting node's new record replacing its stored one.
    fn for_each_container(
        &self,
        model: &str,
        mut f: impl FnMut(&str, Option<ContainerState>, Option<i64>),
    ) {
        let reporting = self.node.as_ref().map(|n| n.node);
        if let Some(index) = self.s.model_index.get(model) {
            for (node, container) in index {
                if Some(node.as_str()) == reporting {
                    continue;
                }
                // (The index keeps entries a pending record dropped: the
                // record read is noted, the entry skipped.)
                if let Some(entry) = self
                    .node_entry(node)
                    .and_then(|e| e.record.containers.get(container))
                    .filter(|e| e.model == model)
                {
                    f(node, self.container(container), entry.failure_since_ns);
                }
            }
        }
        if let Some(node) = &self.node
            && let Some(&(start, end)) = node.by_model.get(model)
        {
            for slot in &node.slots[start..end] {
                f(node.node, slot.state, slot.failure_since_ns);
            }
        }
    }

    /// STATE-MACHINES §2, with information failures and their grace period.
    fn evaluate_model(&self, model: &str) -> ModelOutcome {
        let config = &self.s.config;
        let grace = duration_ns(config.info_failure_grace);
        let reporting = self.node.as_ref().map(|n| n.node);
        let timeout = config.node_timeout.map(duration_ns);
        let mut any = false;
        let mut known = ContainerSet::default();
        let mut failure: Option<i64> = None;
        self.for_each_container(model, |node, state, failure_since| {
            any = true;
            let mut since = failure_since;
            if let Some(timeout) = timeout
                && Some(node) != reporting
                && let Some(seen) = self.s.nodes.get(node).and_then(|e| e.last_seen_ns)
            {
                let silent = seen.saturating_add(timeout);
                if self.now >= silent {
                    since = Some(since.map_or(silent, |s| s.min(silent)));
                }
            }
            match since {
                Some(t) => failure = Some(failure.map_or(t, |f| f.min(t))),
                None => {
                    if let Some(state) = state {
                        known.add(state);
                    }
                }
            }
        });
        if !any {
            return if !self.s.topology.is_model_referenced(model) && self.model(model).is_some() {
                ModelOutcome::Remove
            } else {
                ModelOutcome::Keep
            };
        }
        let derived = known.model_state();
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

    fn evaluate_models(&mut self, models: impl IntoIterator<Item = &'a str>) {
        let mut packages = BTreeSet::new();
        for model in models {
            let (state, reason) = match self.evaluate_model(model) {
                ModelOutcome::Set(state, reason) => (Some(state), reason),
                ModelOutcome::Keep => continue,
                ModelOutcome::Remove => (None, Reason::Withdrawn),
            };
            if self.set_model(model, state, reason) {
                packages.extend(self.s.topology.packages_of(model).map(String::as_str));
            }
        }
        self.evaluate_packages(packages);
    }

    fn evaluate_packages(&mut self, packages: impl IntoIterator<Item = &'a str>) {
        let topology = &self.s.topology;
        for package in packages {
            if topology.package(package).is_none() {
                continue;
            }
            let models: ModelSet = topology
                .models_of(package)
                .map(|m| self.model(m.as_str()).unwrap_or(ModelState::Created))
                .collect();
            self.set_package(package, models.package_state(), Reason::Derived);
        }
    }
}

fn reject(code: ErrorCode, message: impl Into<String>, details: impl Into<String>) -> Plan {
    Plan::rejected(Rejection::new(code, message, details))
}

fn plan_request<'a>(s: &'a Snapshot, request: &'a StateChangeRequest, now: i64) -> Plan {
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
    // Empty: not given. Anything else must be a state name (§6: blanks are not).
    let claimed = if request.current_state.is_empty() {
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
        note = format!(" (the request said current state '{claimed}'; the record said '{from}')");
    }
    // A request for the recorded state is a safe retry, strict or not.
    if from == target {
        return Cascade::new(s, now).finish(
            format!("{kind} '{name}' is already '{target}'; nothing to do{note}"),
            Vec::new(),
            None,
        );
    }
    if let Some(claimed) = claimed
        && claimed != from
        && s.config.scenario_policy.strict_current_state
    {
        return reject(
            ErrorCode::PreconditionFailed,
            format!("{kind} '{name}' is '{from}', not '{claimed}'"),
            "current_state must match the recorded state",
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
            cascade.evaluate_packages(s.topology.packages_of(name).map(String::as_str));
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

fn plan_report<'a>(s: &'a Snapshot, report: &'a NodeReport, now: i64) -> Plan {
    let node = report.node.as_str();
    if let Err(e) = validate(node) {
        return reject(
            ErrorCode::InvalidRequest,
            format!("invalid node_name: {e}"),
            "",
        );
    }
    let mapping = &s.config.model_mapping;
    // Effects of invalid model names (no allocation while there are none).
    let mut invalid_names: Vec<Effect> = Vec::new();
    let mut present: FastSet<&str> = FastSet::default();
    present.reserve(report.containers.len());
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
        let state = c.container_state();
        // (Empty maps are common: skip hashing the keys at all.)
        let model = s.topology.model_for_container(
            name,
            |k| {
                (!c.annotations.is_empty())
                    .then(|| c.annotations.get(k))
                    .flatten()
                    .map(String::as_str)
            },
            |k| {
                (!c.config.is_empty())
                    .then(|| c.config.get(k))
                    .flatten()
                    .map(String::as_str)
            },
            mapping,
            |source, key, value| {
                invalid_names.push(Effect::InvalidModelName {
                    node: node.to_owned(),
                    container: name.to_owned(),
                    source,
                    key: key.to_owned(),
                    value: value.to_owned(),
                })
            },
        );
        entries.push((name, state, model));
    }

    let mut cascade = Cascade::new(s, now);
    cascade.effects.append(&mut invalid_names);
    let prev = cascade.node_entry(node);
    let prev_record = prev.map(|e| &e.record).filter(|r| !r.containers.is_empty());
    // The new record, borrowed.
    let mut record: Vec<Slot<'a>> = Vec::with_capacity(entries.len());
    // Affected models in first-seen order, deduplicated.
    let mut affected: Vec<&'a str> = Vec::new();
    let mut affected_index: FastMap<&'a str, usize> = FastMap::default();
    let mut affect = |model: &'a str| {
        affected_index.entry(model).or_insert_with(|| {
            affected.push(model);
            affected.len() - 1
        });
    };
    // Entries equal to the stored record's; the record is rewritten only
    // when something differs (W3: quiet reports write nothing).
    let mut same = 0usize;
    let mut changed = false;
    // Previous entries seen again; when all are, none vanished.
    let mut matched = 0usize;
    for (name, state, model) in entries {
        let prev_entry = prev_record.and_then(|r| r.containers.get(name));
        matched += usize::from(prev_entry.is_some());
        if let Some(prev_entry) = prev_entry
            && Some(prev_entry.model.as_str()) != model
        {
            affect(prev_entry.model.as_str());
        }
        let Some(model) = model else {
            cascade.effects.push(Effect::UnmappedContainer {
                node: node.to_owned(),
                container: name.to_owned(),
            });
            cascade.set_container(name, None, Reason::Unmapped);
            changed |= prev_entry.is_some();
            continue;
        };
        // STATE-MACHINES §2: Unknown is an information failure; keep its start.
        let failure_since_ns = (state == ContainerState::Unknown)
            .then(|| prev_entry.and_then(|e| e.failure_since_ns).unwrap_or(now));
        match prev_entry {
            Some(p) if p.model == model && !p.missing && p.failure_since_ns == failure_since_ns => {
                same += 1
            }
            _ => changed = true,
        }
        record.push(Slot {
            model,
            container: name,
            state: Some(state),
            failure_since_ns,
        });
        cascade.set_container(name, Some(state), Reason::Derived);
        affect(model);
    }
    if let Some(prev_record) = prev_record.filter(|r| r.containers.len() > matched) {
        // Sorted, so a plan does not depend on the hash order.
        let mut gone: Vec<(&'a String, &'a NodeContainer)> = prev_record
            .containers
            .iter()
            .filter(|(name, _)| !present.contains(name.as_str()))
            .collect();
        gone.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (name, entry) in gone {
            affect(entry.model.as_str());
            // Moved, not vanished: another node reports it now (offloading).
            // Container keys are not scoped by node, so its key stays.
            if cascade.reported_elsewhere(node, name, &entry.model) {
                continue;
            }
            cascade.set_container(name, None, Reason::Vanished);
            // Vanishing is a failure only while a definition references the model.
            if s.topology.is_model_referenced(&entry.model) {
                let since = entry.failure_since_ns.unwrap_or(now);
                if entry.missing && entry.failure_since_ns == Some(since) {
                    same += 1;
                }
                record.push(Slot {
                    model: entry.model.as_str(),
                    container: name,
                    state: None,
                    failure_since_ns: Some(since),
                });
            }
        }
    }
    let unchanged =
        !changed && same == prev_record.map_or(0, |r| r.containers.len()) && same == record.len();
    let node_change = (!unchanged).then(|| NodeChange {
        node: node.to_owned(),
        old: prev_record.cloned(),
        new: (!record.is_empty()).then(|| NodeRecord {
            containers: record
                .iter()
                .map(|slot| {
                    let entry = NodeContainer {
                        model: slot.model.to_owned(),
                        missing: slot.state.is_none(),
                        failure_since_ns: slot.failure_since_ns,
                    };
                    (slot.container.to_owned(), entry)
                })
                .collect(),
        }),
        old_revision: prev.map_or(0, |e| e.revision),
    });
    let (slots, by_model) = group_by_model(record, &affected_index, affected.len());
    cascade.node = Some(NodeSlots {
        node,
        slots,
        by_model,
    });
    cascade.evaluate_models(affected);
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

impl Cascade<'_> {
    /// Whether a node other than `node` currently reports `container` of `model`.
    fn reported_elsewhere(&self, node: &str, container: &str, model: &str) -> bool {
        self.s.model_index.get(model).is_some_and(|entries| {
            entries.iter().any(|(other, c)| {
                other != node
                    && c == container
                    && self
                        .node_entry(other)
                        .and_then(|e| e.record.containers.get(c))
                        .is_some_and(|e| !e.missing && e.model == model)
            })
        })
    }
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
                cascade.note(entry.revision);
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
    // ETCD-CONTRACT: a new Scenario/ definition without a state key starts
    // Idle (written last: bottom-up).
    for scenario in &affected.scenarios {
        cascade.note(s.revision(ResourceKind::Scenario, scenario));
        if s.topology.scenario(scenario).is_some() && !s.scenarios.contains_key(scenario) {
            cascade.push(
                ResourceKind::Scenario,
                scenario,
                None,
                Some(AnyState::Scenario(ScenarioState::Idle)),
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
