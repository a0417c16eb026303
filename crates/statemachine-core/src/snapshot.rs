//! The snapshot planning reads: current states with their store revisions,
//! node records, topology and configuration.
//!
//! The engine owns one `Snapshot` as its cache: it loads it from the store,
//! keeps it fresh from watches, plans against it, [`Snapshot::apply`]s a plan
//! tentatively before committing it, and [`Snapshot::undo`]es it when the
//! commit fails. Revisions are opaque here: they only travel from the store to
//! the guards of a commit.

use std::collections::BTreeSet;

use crate::fastmap::FastMap;

use crate::config::CoreConfig;
use crate::definition::{DefinitionError, DefinitionKind, parse_definition};
use crate::name::ResourceKind;
use crate::plan::{Change, NodeChange, Plan};
use crate::record::NodeRecord;
use crate::state::{
    AnyState, ContainerState, ModelState, PackageState, ParseStateError, ScenarioState,
};
use crate::topology::{Affected, Topology};

/// A store revision (etcd's `mod_revision`); 0 means "absent".
pub type Revision = i64;

/// The revision of a value written by a plan whose commit has not finished.
/// A later plan in the same commit batch does not guard such a key again.
pub const PENDING_REVISION: Revision = -1;

/// A value with the store revision it was read at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versioned<S> {
    /// The value.
    pub state: S,
    /// Its `mod_revision`, or [`PENDING_REVISION`].
    pub revision: Revision,
}

/// What the snapshot knows of one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeEntry {
    /// The stored record (containers, models, failures).
    pub record: NodeRecord,
    /// The record's revision (0: not stored).
    pub revision: Revision,
    /// When the node last reported (ns); kept in memory only, so an unchanged
    /// report writes nothing. After a restart it is the first report's time.
    pub last_seen_ns: Option<i64>,
}

/// The planner's view of the world.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub(crate) config: CoreConfig,
    pub(crate) topology: Topology,
    pub(crate) containers: FastMap<String, Versioned<ContainerState>>,
    pub(crate) models: FastMap<String, Versioned<ModelState>>,
    pub(crate) packages: FastMap<String, Versioned<PackageState>>,
    pub(crate) scenarios: FastMap<String, Versioned<ScenarioState>>,
    pub(crate) nodes: FastMap<String, NodeEntry>,
    /// model -> (node, container), from the node records; sorted and
    /// without duplicates. (A model has a few containers: a sorted `Vec` is
    /// a tenth of a `BTreeSet`'s memory, whose every node holds 11 slots.)
    pub(crate) model_index: FastMap<String, Vec<(String, String)>>,
    /// node -> containers with an information failure.
    pub(crate) failing: FastMap<String, BTreeSet<String>>,
}

impl Snapshot {
    /// An empty snapshot with `config`.
    pub fn new(config: CoreConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// The configuration planning follows.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// The definitions and their relations.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Applies a definition change seen in the store (`value` `None`: deleted)
    /// and returns what must be re-evaluated with [`crate::Input::Reevaluate`].
    /// A definition that fails to parse is an error and changes nothing.
    pub fn update_definition(
        &mut self,
        key: &str,
        value: Option<&str>,
    ) -> Result<Affected, DefinitionError> {
        match value {
            Some(yaml) => Ok(self.topology.upsert(parse_definition(key, yaml)?)),
            None => {
                let (kind, name) = DefinitionKind::parse_key(key).ok_or_else(|| {
                    DefinitionError::NotADefinitionKey(key.escape_debug().to_string())
                })?;
                Ok(self.topology.remove(kind, name))
            }
        }
    }

    /// Records a state read from the store (start-up, or a watch event from
    /// another writer).
    pub fn load_state(
        &mut self,
        kind: ResourceKind,
        name: &str,
        value: &str,
        revision: Revision,
    ) -> Result<(), ParseStateError> {
        let state = AnyState::parse(kind, value)?;
        self.set_state(kind, name, Some(state), revision);
        Ok(())
    }

    /// Forgets a state whose key was deleted in the store.
    pub fn remove_state(&mut self, kind: ResourceKind, name: &str) {
        self.set_state(kind, name, None, 0);
    }

    /// Records a node record read from the store.
    pub fn load_node(&mut self, node: &str, record: NodeRecord, revision: Revision) {
        self.set_node(node, Some(record), revision);
    }

    /// Forgets a node record deleted in the store.
    pub fn remove_node(&mut self, node: &str) {
        self.set_node(node, None, 0);
    }

    /// The current state of a resource, if recorded.
    pub fn state(&self, kind: ResourceKind, name: &str) -> Option<AnyState> {
        self.versioned(kind, name).map(|(state, _)| state)
    }

    /// The store revision of a resource's state key (0: absent).
    pub fn revision(&self, kind: ResourceKind, name: &str) -> Revision {
        self.versioned(kind, name).map_or(0, |(_, r)| r)
    }

    fn versioned(&self, kind: ResourceKind, name: &str) -> Option<(AnyState, Revision)> {
        match kind {
            ResourceKind::Container => self
                .containers
                .get(name)
                .map(|v| (AnyState::Container(v.state), v.revision)),
            ResourceKind::Model => self
                .models
                .get(name)
                .map(|v| (AnyState::Model(v.state), v.revision)),
            ResourceKind::Package => self
                .packages
                .get(name)
                .map(|v| (AnyState::Package(v.state), v.revision)),
            ResourceKind::Scenario => self
                .scenarios
                .get(name)
                .map(|v| (AnyState::Scenario(v.state), v.revision)),
        }
    }

    /// Every recorded state of a kind, in no particular order.
    pub fn states(&self, kind: ResourceKind) -> Vec<(&str, AnyState)> {
        match kind {
            ResourceKind::Container => collect(&self.containers, AnyState::Container),
            ResourceKind::Model => collect(&self.models, AnyState::Model),
            ResourceKind::Package => collect(&self.packages, AnyState::Package),
            ResourceKind::Scenario => collect(&self.scenarios, AnyState::Scenario),
        }
    }

    /// What is known of a node.
    pub fn node(&self, node: &str) -> Option<&NodeEntry> {
        self.nodes.get(node)
    }

    /// Every known node, by name.
    pub fn nodes(&self) -> impl Iterator<Item = (&String, &NodeEntry)> {
        self.nodes.iter()
    }

    /// Records that a node reported at `at_ns` (memory only).
    pub fn mark_seen(&mut self, node: &str, at_ns: i64) {
        self.nodes.entry(node.to_owned()).or_default().last_seen_ns = Some(at_ns);
    }

    /// The earliest time after `after_ns` at which a [`crate::Input::Tick`]
    /// may change something: an information failure's grace running out, or
    /// a node falling silent (with `node_timeout` set).
    pub fn next_deadline(&self, after_ns: i64) -> Option<i64> {
        let grace = duration_ns(self.config.info_failure_grace);
        let failures = self.failing.iter().flat_map(|(node, containers)| {
            let record = self.nodes.get(node).map(|e| &e.record);
            containers.iter().filter_map(move |c| {
                record?
                    .containers
                    .get(c)?
                    .failure_since_ns
                    .map(|since| since.saturating_add(grace))
            })
        });
        let silences = self.config.node_timeout.into_iter().flat_map(|timeout| {
            let timeout = duration_ns(timeout);
            self.nodes
                .values()
                .filter(|e| !e.record.containers.is_empty())
                .filter_map(move |e| e.last_seen_ns)
                .flat_map(move |seen| {
                    let silent = seen.saturating_add(timeout);
                    [silent, silent.saturating_add(grace)]
                })
        });
        failures.chain(silences).filter(|&t| t > after_ns).min()
    }

    /// Applies a plan's writes to the snapshot (before or after its commit).
    /// Written keys get [`PENDING_REVISION`] until [`Snapshot::committed`].
    pub fn apply(&mut self, plan: &Plan) {
        for change in &plan.changes {
            self.set_state(change.kind, &change.name, change.new, PENDING_REVISION);
        }
        for node in &plan.nodes {
            self.set_node(&node.node, node.new.clone(), PENDING_REVISION);
        }
        if let Some((node, at)) = &plan.seen {
            self.mark_seen(node, *at);
        }
    }

    /// Reverts a plan applied with [`Snapshot::apply`] whose commit failed.
    /// Plans applied after it must be undone first (reverse order).
    pub fn undo(&mut self, plan: &Plan) {
        for node in plan.nodes.iter().rev() {
            self.set_node(&node.node, node.old.clone(), node.old_revision);
        }
        for change in plan.changes.iter().rev() {
            self.set_state(change.kind, &change.name, change.old, change.old_revision);
        }
    }

    /// Records the revision a committed plan's writes got.
    pub fn committed(&mut self, plan: &Plan, revision: Revision) {
        for change in &plan.changes {
            self.committed_change(change, revision);
        }
        for node in &plan.nodes {
            self.committed_node(node, revision);
        }
    }

    /// Records the revision one committed state write got (a plan too large
    /// for one transaction is committed in parts).
    pub fn committed_change(&mut self, change: &Change, revision: Revision) {
        if change.new.is_some() {
            self.set_revision(change.kind, &change.name, revision);
        }
    }

    /// Records the revision one committed node record write got.
    pub fn committed_node(&mut self, node: &NodeChange, revision: Revision) {
        if node.new.is_some()
            && let Some(entry) = self.nodes.get_mut(&node.node)
            && entry.revision == PENDING_REVISION
        {
            entry.revision = revision;
        }
    }

    fn set_revision(&mut self, kind: ResourceKind, name: &str, revision: Revision) {
        fn bump<S>(map: &mut FastMap<String, Versioned<S>>, name: &str, revision: Revision) {
            if let Some(v) = map.get_mut(name)
                && v.revision == PENDING_REVISION
            {
                v.revision = revision;
            }
        }
        match kind {
            ResourceKind::Container => bump(&mut self.containers, name, revision),
            ResourceKind::Model => bump(&mut self.models, name, revision),
            ResourceKind::Package => bump(&mut self.packages, name, revision),
            ResourceKind::Scenario => bump(&mut self.scenarios, name, revision),
        }
    }

    /// Writes (or with `None` removes) a state in the map of its kind.
    fn set_state(
        &mut self,
        kind: ResourceKind,
        name: &str,
        state: Option<AnyState>,
        revision: Revision,
    ) {
        match state {
            None => {
                match kind {
                    ResourceKind::Container => self.containers.remove(name).map(drop),
                    ResourceKind::Model => self.models.remove(name).map(drop),
                    ResourceKind::Package => self.packages.remove(name).map(drop),
                    ResourceKind::Scenario => self.scenarios.remove(name).map(drop),
                };
            }
            Some(AnyState::Container(s)) => insert(&mut self.containers, name, s, revision),
            Some(AnyState::Model(s)) => insert(&mut self.models, name, s, revision),
            Some(AnyState::Package(s)) => insert(&mut self.packages, name, s, revision),
            Some(AnyState::Scenario(s)) => insert(&mut self.scenarios, name, s, revision),
        }
    }

    fn set_node(&mut self, node: &str, record: Option<NodeRecord>, revision: Revision) {
        let entry = self.nodes.entry(node.to_owned()).or_default();
        let old = std::mem::replace(&mut entry.record, record.unwrap_or_default());
        entry.revision = revision;
        for (container, c) in &old.containers {
            if let Some(entries) = self.model_index.get_mut(&c.model) {
                if let Ok(i) = entries
                    .binary_search_by(|(n, k)| (n.as_str(), k.as_str()).cmp(&(node, container)))
                {
                    entries.remove(i);
                }
                if entries.is_empty() {
                    self.model_index.remove(&c.model);
                }
            }
        }
        let mut failing = BTreeSet::new();
        for (container, c) in &entry.record.containers {
            let entries = self.model_index.entry(c.model.clone()).or_default();
            if let Err(i) = entries.binary_search_by(|(n, k)| {
                (n.as_str(), k.as_str()).cmp(&(node, container.as_str()))
            }) {
                entries.insert(i, (node.to_owned(), container.clone()));
            }
            if c.failure_since_ns.is_some() {
                failing.insert(container.clone());
            }
        }
        if failing.is_empty() {
            self.failing.remove(node);
        } else {
            self.failing.insert(node.to_owned(), failing);
        }
        if entry.record.containers.is_empty() && entry.last_seen_ns.is_none() && revision == 0 {
            self.nodes.remove(node);
        }
    }
}

fn insert<S>(map: &mut FastMap<String, Versioned<S>>, name: &str, state: S, revision: Revision) {
    match map.get_mut(name) {
        Some(v) => *v = Versioned { state, revision },
        None => {
            map.insert(name.to_owned(), Versioned { state, revision });
        }
    }
}

fn collect<S: Copy>(
    map: &FastMap<String, Versioned<S>>,
    wrap: fn(S) -> AnyState,
) -> Vec<(&str, AnyState)> {
    map.iter()
        .map(|(k, v)| (k.as_str(), wrap(v.state)))
        .collect()
}

pub(crate) fn duration_ns(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}
