//! The snapshot planning reads: current states with their store revisions,
//! node records, topology and configuration.
//!
//! The engine owns one `Snapshot` as its cache: it loads it from the store,
//! keeps it fresh from watches, plans against it, [`Snapshot::apply`]s a plan
//! tentatively before committing it, and [`Snapshot::undo`]es it when the
//! commit fails. Revisions are opaque here: they only travel from the store to
//! the guards of a commit.
//!
//! A plan is applied under a [`Tag`] (the engine gives each input its own):
//! the keys it writes carry the [`Stamp::Pending`] of that tag until their
//! commit finishes. A later plan that reads or overwrites such a value lists the tag
//! in [`Plan::depends_on`], so the engine can tell inputs that may commit
//! concurrently (no dependency) from those that must wait for, or commit
//! after, the plan they read.
//!
//! Which resources are known, and the default state of one without a
//! record, are decided in one place: [`Snapshot::default_state`] and
//! [`Snapshot::is_known`].

mod known;

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

/// Which applied plan a pending value belongs to (1 or more).
pub type Tag = u64;

/// Where a cached value stands: as the store holds it, or as an applied
/// plan whose commit has not finished wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stamp {
    /// In the store at this `mod_revision` (0: the key is absent).
    Stored(Revision),
    /// Written or deleted by the plan applied under this tag, not committed
    /// yet. A later plan does not guard such a key again: the earlier write
    /// carries the guard.
    Pending(Tag),
}

impl Stamp {
    /// A key the store does not hold.
    pub const ABSENT: Stamp = Stamp::Stored(0);

    /// The tag of the plan that wrote the value, while it is pending.
    pub fn pending_tag(self) -> Option<Tag> {
        match self {
            Stamp::Pending(tag) => Some(tag),
            Stamp::Stored(_) => None,
        }
    }

    /// The store revision (0: absent), unless the value is pending.
    pub fn stored(self) -> Option<Revision> {
        match self {
            Stamp::Stored(revision) => Some(revision),
            Stamp::Pending(_) => None,
        }
    }

    /// Whether the value waits for its commit.
    pub fn is_pending(self) -> bool {
        matches!(self, Stamp::Pending(_))
    }

    /// Whether a value the store reports at `revision` replaces this one: a
    /// pending value is the owner's to settle; a stored one gives way to a
    /// later revision (or to any, when absent).
    pub fn is_older_than(self, revision: Revision) -> bool {
        matches!(self, Stamp::Stored(known) if known == 0 || known < revision)
    }
}

impl Default for Stamp {
    fn default() -> Self {
        Stamp::ABSENT
    }
}

/// A value with where it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versioned<S> {
    /// The value.
    pub state: S,
    /// Its store revision, or the plan that wrote it.
    pub stamp: Stamp,
}

/// What the snapshot knows of one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeEntry {
    /// The stored record (containers, models, failures).
    pub record: NodeRecord,
    /// The record's store revision (0: not stored), or the plan that wrote it.
    pub stamp: Stamp,
    /// When the node last reported (ns); kept in memory only, so an unchanged
    /// report writes nothing. After a restart it is the first report's time.
    pub last_seen_ns: Option<i64>,
    /// (model, container) entries of the model index that a pending record
    /// dropped; they stay in the index until the record is committed or
    /// undone, so that a plan reading such a model reaches this node's
    /// pending record and depends on it.
    pub(crate) stale: Vec<(String, String)>,
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
    /// State keys deleted by a plan whose commit has not finished, with
    /// its tag (a tombstone, so the delete can be depended on).
    pub(crate) deleted: FastMap<(ResourceKind, String), Tag>,
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
        self.set_state(kind, name, Some(state), Stamp::Stored(revision));
        Ok(())
    }

    /// Forgets a state whose key was deleted in the store.
    pub fn remove_state(&mut self, kind: ResourceKind, name: &str) {
        self.set_state(kind, name, None, Stamp::ABSENT);
    }

    /// Records a node record read from the store.
    pub fn load_node(&mut self, node: &str, record: NodeRecord, revision: Revision) {
        self.set_node(node, Some(record), Stamp::Stored(revision));
    }

    /// Forgets a node record deleted in the store.
    pub fn remove_node(&mut self, node: &str) {
        self.set_node(node, None, Stamp::ABSENT);
    }

    /// The current state of a resource, if recorded.
    pub fn state(&self, kind: ResourceKind, name: &str) -> Option<AnyState> {
        self.versioned(kind, name).map(|(state, _)| state)
    }

    /// Where a resource's state key stands: its store revision (0: absent),
    /// or the plan that wrote or deleted it while that is not committed.
    pub fn stamp(&self, kind: ResourceKind, name: &str) -> Stamp {
        match self.versioned(kind, name) {
            Some((_, stamp)) => stamp,
            None => self.tombstone(kind, name),
        }
    }

    /// The stamp of a delete whose commit has not finished, or absent.
    pub(crate) fn tombstone(&self, kind: ResourceKind, name: &str) -> Stamp {
        if self.deleted.is_empty() {
            return Stamp::ABSENT;
        }
        self.deleted
            .get(&(kind, name.to_owned()))
            .map_or(Stamp::ABSENT, |tag| Stamp::Pending(*tag))
    }

    fn versioned(&self, kind: ResourceKind, name: &str) -> Option<(AnyState, Stamp)> {
        match kind {
            ResourceKind::Container => self
                .containers
                .get(name)
                .map(|v| (AnyState::Container(v.state), v.stamp)),
            ResourceKind::Model => self
                .models
                .get(name)
                .map(|v| (AnyState::Model(v.state), v.stamp)),
            ResourceKind::Package => self
                .packages
                .get(name)
                .map(|v| (AnyState::Package(v.state), v.stamp)),
            ResourceKind::Scenario => self
                .scenarios
                .get(name)
                .map(|v| (AnyState::Scenario(v.state), v.stamp)),
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

    /// Applies a plan's writes to the snapshot (before or after its commit)
    /// under tag 1: written keys are pending until [`Snapshot::committed`].
    pub fn apply(&mut self, plan: &Plan) {
        self.apply_as(plan, 1);
    }

    /// Applies a plan's writes under `tag`: written keys are
    /// [`Stamp::Pending`] until [`Snapshot::committed_change`] and
    /// [`Snapshot::committed_node`] record their store revisions.
    pub fn apply_as(&mut self, plan: &Plan, tag: Tag) {
        let pending = Stamp::Pending(tag.max(1));
        for change in &plan.changes {
            self.set_state(change.kind, &change.name, change.new, pending);
        }
        for node in &plan.nodes {
            self.set_node(&node.node, node.new.clone(), pending);
        }
        if let Some((node, at)) = &plan.seen {
            self.mark_seen(node, *at);
        }
    }

    /// Reverts a plan applied with [`Snapshot::apply`] whose commit failed.
    /// Plans applied after it that depend on it must be undone first
    /// (reverse order).
    pub fn undo(&mut self, plan: &Plan) {
        for node in plan.nodes.iter().rev() {
            self.set_node(&node.node, node.old.clone(), node.old_stamp);
        }
        for change in plan.changes.iter().rev() {
            self.set_state(change.kind, &change.name, change.old, change.old_stamp);
        }
    }

    /// Records the revision a committed plan, applied with
    /// [`Snapshot::apply`], got.
    pub fn committed(&mut self, plan: &Plan, revision: Revision) {
        for change in &plan.changes {
            self.committed_change(change, 1, revision);
        }
        for node in &plan.nodes {
            self.committed_node(node, 1, revision);
        }
    }

    /// Records the revision one committed state write, applied under `tag`,
    /// got (a plan too large for one transaction is committed in parts). A
    /// key written again by a later plan stays pending for that one.
    pub fn committed_change(&mut self, change: &Change, tag: Tag, revision: Revision) {
        let tag = tag.max(1);
        if change.new.is_some() {
            self.set_revision(change.kind, &change.name, Stamp::Pending(tag), revision);
        } else if !self.deleted.is_empty() {
            let key = (change.kind, change.name.clone());
            if self.deleted.get(&key) == Some(&tag) {
                self.deleted.remove(&key);
            }
        }
    }

    /// Records the revision one committed node record write, applied under
    /// `tag`, got.
    pub fn committed_node(&mut self, node: &NodeChange, tag: Tag, revision: Revision) {
        let Some(entry) = self.nodes.get_mut(&node.node) else {
            return;
        };
        if entry.stamp != Stamp::Pending(tag.max(1)) {
            return;
        }
        entry.stamp = if node.new.is_some() {
            Stamp::Stored(revision)
        } else {
            Stamp::ABSENT
        };
        let stale = std::mem::take(&mut entry.stale);
        prune(&mut self.model_index, &node.node, &entry.record, stale);
        if entry.record.containers.is_empty() && entry.last_seen_ns.is_none() && node.new.is_none()
        {
            self.nodes.remove(&node.node);
        }
    }

    fn set_revision(&mut self, kind: ResourceKind, name: &str, pending: Stamp, revision: Revision) {
        fn bump<S>(
            map: &mut FastMap<String, Versioned<S>>,
            name: &str,
            pending: Stamp,
            revision: Revision,
        ) {
            if let Some(v) = map.get_mut(name)
                && v.stamp == pending
            {
                v.stamp = Stamp::Stored(revision);
            }
        }
        match kind {
            ResourceKind::Container => bump(&mut self.containers, name, pending, revision),
            ResourceKind::Model => bump(&mut self.models, name, pending, revision),
            ResourceKind::Package => bump(&mut self.packages, name, pending, revision),
            ResourceKind::Scenario => bump(&mut self.scenarios, name, pending, revision),
        }
    }

    /// Writes (or with `None` removes) a state in the map of its kind.
    fn set_state(&mut self, kind: ResourceKind, name: &str, state: Option<AnyState>, stamp: Stamp) {
        match state {
            None => {
                match kind {
                    ResourceKind::Container => self.containers.remove(name).map(drop),
                    ResourceKind::Model => self.models.remove(name).map(drop),
                    ResourceKind::Package => self.packages.remove(name).map(drop),
                    ResourceKind::Scenario => self.scenarios.remove(name).map(drop),
                };
                if let Some(tag) = stamp.pending_tag() {
                    self.deleted.insert((kind, name.to_owned()), tag);
                    return;
                }
            }
            Some(AnyState::Container(s)) => insert(&mut self.containers, name, s, stamp),
            Some(AnyState::Model(s)) => insert(&mut self.models, name, s, stamp),
            Some(AnyState::Package(s)) => insert(&mut self.packages, name, s, stamp),
            Some(AnyState::Scenario(s)) => insert(&mut self.scenarios, name, s, stamp),
        }
        if !self.deleted.is_empty() {
            self.deleted.remove(&(kind, name.to_owned()));
        }
    }

    fn set_node(&mut self, node: &str, record: Option<NodeRecord>, stamp: Stamp) {
        let entry = self.nodes.entry(node.to_owned()).or_default();
        let old = std::mem::replace(&mut entry.record, record.unwrap_or_default());
        entry.stamp = stamp;
        let pending = stamp.is_pending();
        // Index entries of the old record that the new one drops: removed,
        // or kept while the new record is pending (see `NodeEntry::stale`).
        for (container, c) in old.containers {
            let kept = entry
                .record
                .containers
                .get(&container)
                .is_some_and(|n| n.model == c.model);
            if kept {
                continue;
            }
            if pending {
                entry.stale.push((c.model, container));
            } else {
                remove_from_index(&mut self.model_index, &c.model, node, &container);
            }
        }
        if !pending && !entry.stale.is_empty() {
            let stale = std::mem::take(&mut entry.stale);
            prune(&mut self.model_index, node, &entry.record, stale);
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
        if entry.record.containers.is_empty()
            && entry.last_seen_ns.is_none()
            && stamp == Stamp::ABSENT
        {
            self.nodes.remove(node);
        }
    }
}

/// Removes `(node, container)` from a model's index entries.
fn remove_from_index(
    index: &mut FastMap<String, Vec<(String, String)>>,
    model: &str,
    node: &str,
    container: &str,
) {
    if let Some(entries) = index.get_mut(model) {
        if let Ok(i) =
            entries.binary_search_by(|(n, k)| (n.as_str(), k.as_str()).cmp(&(node, container)))
        {
            entries.remove(i);
        }
        if entries.is_empty() {
            index.remove(model);
        }
    }
}

/// Removes the index entries a node's pending records kept (`stale`) that
/// its committed record does not have.
fn prune(
    index: &mut FastMap<String, Vec<(String, String)>>,
    node: &str,
    record: &NodeRecord,
    stale: Vec<(String, String)>,
) {
    for (model, container) in stale {
        if record
            .containers
            .get(&container)
            .is_none_or(|c| c.model != model)
        {
            remove_from_index(index, &model, node, &container);
        }
    }
}

fn insert<S>(map: &mut FastMap<String, Versioned<S>>, name: &str, state: S, stamp: Stamp) {
    match map.get_mut(name) {
        Some(v) => *v = Versioned { state, stamp },
        None => {
            map.insert(name.to_owned(), Versioned { state, stamp });
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
