//! The working state of one plan: the snapshot plus the plan's own writes,
//! and the rules that cascade a change bottom-up (containers, models,
//! packages) with the reconcile trigger.

use std::collections::BTreeSet;

use super::{Change, Effect, NodeChange, Plan, Reason};
use crate::derive::{ContainerSet, ModelSet};
use crate::fastmap::FastMap;
use crate::name::ResourceKind;
use crate::record::OutboxRecord;
use crate::snapshot::{NodeEntry, Snapshot, Stamp, Tag, Versioned, duration_ns};
use crate::state::{AnyState, ContainerState, ModelState, PackageState};
use crate::transition::{is_documented_model_edge, is_documented_package_edge};

/// How a model's state comes out of an evaluation.
enum ModelOutcome {
    Set(ModelState, Reason),
    Keep,
    Remove,
}

/// A container of the reporting node, as its new record will have it.
#[derive(Clone, Copy)]
pub(super) struct Slot<'a> {
    pub(super) model: &'a str,
    pub(super) container: &'a str,
    /// The reported state (`None`: missing from the report).
    pub(super) state: Option<ContainerState>,
    pub(super) failure_since_ns: Option<i64>,
}

/// The reporting node's new containers, grouped by model.
pub(super) struct NodeSlots<'a> {
    pub(super) node: &'a str,
    /// Grouped by model.
    pub(super) slots: Vec<Slot<'a>>,
    /// model -> its range in `slots`.
    pub(super) by_model: FastMap<&'a str, (usize, usize)>,
}

/// The working state of one plan: the snapshot plus the plan's own writes.
pub(super) struct Cascade<'a> {
    pub(super) s: &'a Snapshot,
    now: i64,
    /// The reporting node and its new containers; they replace the node's
    /// stored record. (A plan writes each container key at most once, so
    /// container states need no overlay: the slots carry the new ones.)
    pub(super) node: Option<NodeSlots<'a>>,
    models: FastMap<&'a str, Option<ModelState>>,
    packages: FastMap<&'a str, Option<PackageState>>,
    pub(super) changes: Vec<Change>,
    pub(super) effects: Vec<Effect>,
    /// Tags of the pending values read (see [`Plan::depends_on`]); written
    /// only when a pending value is met, which the hot path never does.
    depends_on: Vec<Tag>,
}

impl<'a> Cascade<'a> {
    pub(super) fn new(s: &'a Snapshot, now: i64) -> Self {
        Self {
            s,
            now,
            node: None,
            models: FastMap::default(),
            packages: FastMap::default(),
            changes: Vec::new(),
            effects: Vec::new(),
            depends_on: Vec::new(),
        }
    }

    pub(super) fn finish(
        self,
        message: String,
        nodes: Vec<NodeChange>,
        seen: Option<(String, i64)>,
    ) -> Plan {
        let mut depends_on = self.depends_on;
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

    /// Notes a value read from the snapshot with its `stamp`: a pending one
    /// makes the plan depend on the plan that wrote it.
    #[inline]
    pub(super) fn note(&mut self, stamp: Stamp) {
        if let Some(tag) = stamp.pending_tag() {
            self.depends_on.push(tag);
        }
    }

    /// Notes the read of a state key that has no value in the snapshot: a
    /// delete not yet committed is a dependency too.
    #[inline]
    fn note_absent(&mut self, kind: ResourceKind, name: &str) {
        if !self.s.deleted.is_empty() {
            self.note(self.s.tombstone(kind, name));
        }
    }

    /// A state as the snapshot has it, noting a pending value (or delete).
    fn read<S: Copy>(
        &mut self,
        map: &'a FastMap<String, Versioned<S>>,
        kind: ResourceKind,
        name: &str,
    ) -> Option<S> {
        match map.get(name) {
            Some(v) => {
                self.note(v.stamp);
                Some(v.state)
            }
            None => {
                self.note_absent(kind, name);
                None
            }
        }
    }

    fn container(&mut self, name: &str) -> Option<ContainerState> {
        let s = self.s;
        self.read(&s.containers, ResourceKind::Container, name)
    }

    fn model(&mut self, name: &str) -> Option<ModelState> {
        match self.models.get(name) {
            Some(state) => *state,
            None => {
                let s = self.s;
                self.read(&s.models, ResourceKind::Model, name)
            }
        }
    }

    fn package(&mut self, name: &str) -> Option<PackageState> {
        match self.packages.get(name) {
            Some(state) => *state,
            None => {
                let s = self.s;
                self.read(&s.packages, ResourceKind::Package, name)
            }
        }
    }

    /// A node's record as the snapshot has it, noting a pending one.
    pub(super) fn node_entry(&mut self, node: &str) -> Option<&'a NodeEntry> {
        let entry = self.s.nodes.get(node)?;
        self.note(entry.stamp);
        Some(entry)
    }

    pub(super) fn push(
        &mut self,
        kind: ResourceKind,
        name: &str,
        old: Option<AnyState>,
        new: Option<AnyState>,
        reason: Reason,
    ) {
        let old_stamp = self.s.stamp(kind, name);
        self.note(old_stamp);
        self.changes.push(Change {
            kind,
            name: name.to_owned(),
            old,
            new,
            old_stamp,
            reason,
        });
    }

    pub(super) fn set_container(
        &mut self,
        name: &'a str,
        state: Option<ContainerState>,
        reason: Reason,
    ) {
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
    pub(super) fn set_model(
        &mut self,
        name: &'a str,
        state: Option<ModelState>,
        reason: Reason,
    ) -> bool {
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

    pub(super) fn set_package(&mut self, name: &'a str, state: PackageState, reason: Reason) {
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
                    step: None,
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
    /// (`f` cannot borrow the cascade: what it needs is read beforehand.)
    fn for_each_container(
        &mut self,
        model: &str,
        mut f: impl FnMut(&str, Option<ContainerState>, Option<i64>),
    ) {
        let s = self.s;
        let reporting = self.node.as_ref().map(|n| n.node);
        if let Some(index) = s.model_index.get(model) {
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
                    let state = self.container(container);
                    f(node, state, entry.failure_since_ns);
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
    fn evaluate_model(&mut self, model: &str) -> ModelOutcome {
        let (s, now) = (self.s, self.now);
        let config = &s.config;
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
                && let Some(seen) = s.nodes.get(node).and_then(|e| e.last_seen_ns)
            {
                let silent = seen.saturating_add(timeout);
                if now >= silent {
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
            return if !s.topology.is_model_referenced(model) && self.model(model).is_some() {
                ModelOutcome::Remove
            } else {
                ModelOutcome::Keep
            };
        }
        let derived = known.model_state();
        match failure {
            Some(since) if now >= since.saturating_add(grace) => {
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

    pub(super) fn evaluate_models(&mut self, models: impl IntoIterator<Item = &'a str>) {
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

    pub(super) fn evaluate_packages(&mut self, packages: impl IntoIterator<Item = &'a str>) {
        let topology = &self.s.topology;
        for package in packages {
            if topology.package(package).is_none() {
                continue;
            }
            // §3: a listed model is referenced, so it has a default state
            // (`Snapshot::default_state`): never observed, it counts as Created.
            let models: ModelSet = topology
                .models_of(package)
                .map(|m| self.model(m.as_str()).unwrap_or(ModelState::INITIAL))
                .collect();
            self.set_package(package, models.package_state(), Reason::Derived);
        }
    }
}
