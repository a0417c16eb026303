//! The store operations of a planned input: its state writes with their
//! history entries and outbox records (as atoms, see [`super::pack`]), its
//! node records, and where each resource's history sequence stands.

use std::collections::{HashMap, HashSet};

use state_store::{Op, StoreError, get_all};
use statemachine_core::keys::{Bookkeeping, state_key};
use statemachine_core::record::HistoryEntry;
use statemachine_core::{Change, NodeChange, ResourceKind, Stamp};
use tokio::time::Instant;

use super::Owner;
use super::commit::{Planned, all_within};
use super::pack::{Atom, Target, Unit};
use super::publish::left_state;

/// Where a history sequence of a resource stands: entries `first..next`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct HistoryMeta {
    pub(super) first: u64,
    pub(super) next: u64,
}

/// History positions by resource.
pub(super) type HistoryMetas = HashMap<(ResourceKind, String), HistoryMeta>;

/// Where a new history starts: at the time in microseconds, so that it
/// sorts after any history an earlier life of the resource left behind (a
/// resource cannot have had a transition per microsecond).
pub(super) fn new_history(now_ns: i64) -> HistoryMeta {
    let start = u64::try_from(now_ns / 1_000).unwrap_or(0).max(1);
    HistoryMeta {
        first: start,
        next: start,
    }
}

/// The write of a state key, guarded by the revision it was planned from.
fn state_unit(change: &Change, target: Target) -> Unit {
    let key = state_key(change.kind, &change.name);
    let guard = change
        .old_stamp
        .stored()
        .map(|revision| (key.clone(), revision));
    let op = match change.new {
        Some(state) => Op::Put {
            key,
            value: state.as_str().as_bytes().to_vec(),
        },
        None => Op::Delete { key },
    };
    Unit { guard, op, target }
}

impl Owner {
    /// Reads the history position of every resource the plans record a
    /// transition for and that is not known yet.
    ///
    /// A resource whose state key is absent from the store (as the cache,
    /// loaded at start and fed by the watches, knows) starts a new history
    /// without a read: that is every first transition of a new scenario,
    /// the most common write. Its sequence starts at the commit's time in
    /// microseconds ([`new_history`]), so should a history have outlived its
    /// state key (a model withdrawn and defined again, a key deleted by
    /// hand), the new records still sort after the old ones. Should the
    /// clock have gone back onto an old record, the put's "absent" guard
    /// fails and the retry reads where that history stands.
    pub(super) async fn history_metas<'p>(
        &self,
        planned: impl Iterator<Item = &'p Planned>,
        deadline: Instant,
    ) -> Result<HistoryMetas, StoreError> {
        let mut wanted: Vec<(ResourceKind, String)> = Vec::new();
        let mut seen: HashSet<(ResourceKind, &str)> = HashSet::new();
        for item in planned {
            for change in &item.plan.changes {
                if change.kind == ResourceKind::Container
                    || !seen.insert((change.kind, change.name.as_str()))
                {
                    continue;
                }
                let new_resource = change.old.is_none() && change.old_stamp == Stamp::ABSENT;
                let key = (change.kind, change.name.clone());
                if !new_resource && !self.history.contains_key(&key) {
                    wanted.push(key);
                }
            }
        }
        self.read_history_metas(wanted, deadline).await
    }

    /// Reads where the histories of `wanted` stand.
    pub(super) async fn read_history_metas(
        &self,
        wanted: Vec<(ResourceKind, String)>,
        deadline: Instant,
    ) -> Result<HistoryMetas, StoreError> {
        let mut metas = HashMap::new();
        if wanted.is_empty() {
            return Ok(metas);
        }
        let reads = wanted.iter().map(|(kind, name)| {
            let prefix = self.keys.history_prefix(*kind, name);
            let store = self.store.clone();
            async move { get_all(store.as_ref(), &prefix, 1000).await }
        });
        let results = all_within(deadline, "history read", reads).await?;
        for (key, result) in wanted.into_iter().zip(results) {
            let (kvs, _) = result?;
            let seqs = kvs
                .iter()
                .filter_map(|kv| Bookkeeping::parse_history_seq(&kv.key));
            let (first, last) = seqs.fold((u64::MAX, 0), |(lo, hi), s| (lo.min(s), hi.max(s)));
            let meta = if last == 0 {
                new_history(self.clock.now_ns())
            } else {
                HistoryMeta {
                    first,
                    next: last + 1,
                }
            };
            metas.insert(key, meta);
        }
        Ok(metas)
    }

    /// The store operations of one planned input (`pi`: its index in its
    /// group) as atoms, bottom-up: per resource change its state key, its
    /// history entry and outbox record (then the pruning of its history to
    /// `history_limit`); then the node records. Records the history
    /// positions it moves in `fresh` and `histories`.
    pub(super) fn input_atoms(
        &self,
        item: &Planned,
        pi: usize,
        fresh: &mut HistoryMetas,
        histories: &mut Vec<((ResourceKind, String), HistoryMeta)>,
        now: i64,
    ) -> Vec<Atom> {
        let p = &item.plan;
        let mut atoms = Vec::with_capacity(p.changes.len() + p.nodes.len());
        let source = item.input.source(&self.config.core.derived_source);
        let limit = u64::try_from(self.config.history_limit.max(1)).unwrap_or(u64::MAX);
        for (ci, change) in p.changes.iter().enumerate() {
            let mut units = vec![state_unit(change, Target::Change(pi, ci))];
            if change.kind == ResourceKind::Container {
                atoms.push(Atom::whole(units));
                continue;
            }
            let key = (change.kind, change.name.clone());
            let meta = fresh
                .get(&key)
                .or_else(|| self.history.get(&key))
                .copied()
                .unwrap_or_else(|| new_history(now));
            let entry = HistoryEntry {
                from: left_state(change).map(|s| s.as_str().to_owned()),
                to: change.new.map(|s| s.as_str().to_owned()),
                at_ns: now,
                source: source.to_owned(),
                transition_id: item.transition_id.clone(),
                reason: change.reason.as_str().to_owned(),
                duration_ms: self
                    .last_change
                    .get(&key)
                    .map(|since| now.saturating_sub(*since) / 1_000_000),
            };
            let history_key = self.keys.history_key(change.kind, &change.name, meta.next);
            units.push(Unit {
                guard: Some((history_key.clone(), 0)),
                op: Op::Put {
                    key: history_key,
                    value: entry.encode(),
                },
                target: Target::Other,
            });
            if change.kind == ResourceKind::Package {
                for record in p.reconciles().filter(|r| r.package == change.name) {
                    units.extend(self.reconcile_units(record));
                }
            }
            let core = units.len();
            let mut meta = HistoryMeta {
                first: meta.first,
                next: meta.next + 1,
            };
            while meta.next - meta.first > limit {
                units.push(Unit {
                    guard: None,
                    op: Op::Delete {
                        key: self.keys.history_key(change.kind, &change.name, meta.first),
                    },
                    target: Target::Other,
                });
                meta.first += 1;
            }
            fresh.insert(key.clone(), meta);
            histories.push((key, meta));
            atoms.push(Atom { units, core });
        }
        for (ni, node) in p.nodes.iter().enumerate() {
            atoms.push(Atom::whole(vec![
                self.node_unit(node, Target::Node(pi, ni)),
            ]));
        }
        // A reconcile without its package's change (not planned today):
        // still committed, in an atom of its own.
        for record in p.reconciles().filter(|r| {
            !p.changes
                .iter()
                .any(|c| c.kind == ResourceKind::Package && c.name == r.package)
        }) {
            let units = self.reconcile_units(record);
            if !units.is_empty() {
                atoms.push(Atom::whole(units));
            }
        }
        atoms
    }

    /// The write of a node record, guarded by the revision it was planned from.
    fn node_unit(&self, node: &NodeChange, target: Target) -> Unit {
        let key = self.keys.node_key(&node.node);
        let guard = node
            .old_stamp
            .stored()
            .map(|revision| (key.clone(), revision));
        let op = match &node.new {
            Some(record) => Op::Put {
                key,
                value: record.encode(),
            },
            None => Op::Delete { key },
        };
        Unit { guard, op, target }
    }
}
