//! The commit pipeline: batches of inputs planned together, split into
//! independent chains of transactions, committed concurrently.
//!
//! - An input is planned against the cache with the writes of every input
//!   planned before it applied, under a tag of its own. The plan names the
//!   tags whose uncommitted writes it read or overwrites
//!   (`Plan::depends_on`).
//! - Inputs of a batch that depend on each other form one group; groups do
//!   not share a key they write or read. Small groups share a transaction;
//!   a group too large for one transaction gets a chain of its own, whose
//!   transactions commit one after another, bottom-up. Chains commit
//!   concurrently; the owner task polls them all.
//! - While chains are in flight the next batch is formed from what arrived
//!   since, up to `max_commits_in_flight` chains: group commit without the
//!   wait. An input that depends on a chain still in flight waits at the
//!   head of the queue until that chain finished; inputs behind it that do
//!   not depend on it go ahead (they are concurrent requests: committing
//!   them first is a serial order like any other, and whatever reads their
//!   writes later depends on them).
//! - Every caller is answered after its own chain committed. A chain whose
//!   commit fails is undone without touching the others (they read nothing
//!   it wrote) and its inputs are retried (guard failure) or answered
//!   unavailable.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant as Clock};

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use state_store::{Batch, StateStore, StoreError, get_all};
use statemachine_core::keys::{Bookkeeping, state_key};
use statemachine_core::record::HistoryEntry;
use statemachine_core::{
    ErrorCode, Plan, ResourceKind, Revision, Tag, is_pending, pending_tag, plan,
};

use super::{
    Feed, HistoryMeta, HistoryMetas, Owner, Pending, Target, Unit, left_state, new_history,
    state_unit,
};
use crate::metrics::inc;

/// An input waiting to be planned, with the guard failures it met.
pub(super) struct Queued {
    pub(super) input: Pending,
    pub(super) attempts: u32,
    /// A tag in flight its last plan depended on: no use planning it again
    /// before that commit finished.
    waits_for: Option<Tag>,
}

impl Queued {
    pub(super) fn new(input: Pending) -> Self {
        Self {
            input,
            attempts: 0,
            waits_for: None,
        }
    }
}

/// A planned input.
pub(super) struct Planned {
    pub(super) input: Pending,
    pub(super) plan: Plan,
    pub(super) transition_id: String,
    pub(super) tag: Tag,
    attempts: u32,
}

/// A chain in flight: its inputs and what each operation of each
/// transaction writes.
pub(super) struct Chain {
    planned: Vec<Planned>,
    targets: Vec<Vec<Target>>,
    histories: Vec<((ResourceKind, String), HistoryMeta)>,
    now: i64,
    started: Clock,
}

impl Chain {
    /// The state a key had before this chain wrote it, if it did.
    pub(super) fn state_before(
        &self,
        kind: ResourceKind,
        name: &str,
    ) -> Option<(Option<statemachine_core::AnyState>, Revision)> {
        self.planned
            .iter()
            .flat_map(|p| &p.plan.changes)
            .find(|c| c.kind == kind && c.name == name)
            .map(|c| (c.old, c.old_revision))
    }

    /// Whether one of this chain's inputs was applied under `tag`.
    pub(super) fn holds(&self, tag: Tag) -> bool {
        self.planned.iter().any(|p| p.tag == tag)
    }
}

/// Why a chain's commit stopped.
pub(super) struct ChainFailure {
    error: StoreError,
    /// Transactions that went through before.
    applied: usize,
    /// A transaction was sent and not confirmed before the deadline: the
    /// store may still apply it.
    in_doubt: bool,
}

/// The revisions of a chain's transactions, or why it stopped.
type ChainResult = Result<Vec<Revision>, ChainFailure>;

/// A chain's id and how its commit went.
pub(super) type ChainDone = (u64, ChainResult);

/// The commits in flight, polled by the owner task itself (no task of
/// their own: one wake-up less per commit). Wrapped so that the owner stays
/// `Sync` across its awaits; it is only ever used through `&mut`.
#[derive(Default)]
pub(super) struct InFlight(
    sync_wrapper::SyncWrapper<FuturesUnordered<BoxFuture<'static, ChainDone>>>,
);

impl InFlight {
    pub(super) fn len(&mut self) -> usize {
        self.0.get_mut().len()
    }

    pub(super) fn is_empty(&mut self) -> bool {
        self.0.get_mut().is_empty()
    }

    fn push(&mut self, commit: BoxFuture<'static, ChainDone>) {
        self.0.get_mut().push(commit);
    }

    /// The next commit to finish (`None`: none in flight).
    pub(super) async fn next(&mut self) -> Option<ChainDone> {
        self.0.get_mut().next().await
    }
}

/// A chain being packed: its inputs and transactions.
#[derive(Default)]
struct Packing {
    planned: Vec<Planned>,
    txns: Vec<Vec<Unit>>,
    histories: Vec<((ResourceKind, String), HistoryMeta)>,
}

impl Packing {
    fn ops(&self) -> usize {
        self.txns.iter().map(Vec::len).sum()
    }

    /// Appends a group: in one transaction when `split` is `None`, else in
    /// transactions of at most `split` operations, whole inputs together
    /// where they fit, a larger input split between its atoms in plan order
    /// (bottom-up), never inside an atom's core: a state write travels with
    /// its history entry and outbox record.
    fn append(
        &mut self,
        group: Vec<Planned>,
        atoms: Vec<Vec<Atom>>,
        histories: Vec<((ResourceKind, String), HistoryMeta)>,
        split: Option<usize>,
    ) {
        let offset = self.planned.len();
        self.planned.extend(group);
        self.histories.extend(histories);
        let shift = |mut unit: Unit| {
            unit.target = match unit.target {
                Target::Change(p, c) => Target::Change(p + offset, c),
                Target::Node(p, n) => Target::Node(p + offset, n),
                Target::Other => Target::Other,
            };
            unit
        };
        let Some(limit) = split else {
            if self.txns.is_empty() {
                self.txns.push(Vec::new());
            }
            let txn = self.txns.last_mut().expect("one transaction");
            txn.extend(atoms.into_iter().flatten().flat_map(|a| a.units).map(shift));
            return;
        };
        let mut current: Vec<Unit> = Vec::new();
        for input in atoms {
            let ops: usize = input.iter().map(|a| a.units.len()).sum();
            if !current.is_empty() && current.len() + ops > limit {
                self.txns.push(std::mem::take(&mut current));
            }
            for atom in input {
                if !current.is_empty() && current.len() + atom.core > limit {
                    self.txns.push(std::mem::take(&mut current));
                }
                for (k, unit) in atom.units.into_iter().enumerate() {
                    if k >= atom.core && current.len() >= limit {
                        self.txns.push(std::mem::take(&mut current));
                    }
                    current.push(shift(unit));
                }
            }
        }
        if !current.is_empty() {
            self.txns.push(current);
        }
    }
}

/// The operations of one resource's change that commit together: the
/// state key, its history entry and its outbox record (the core, never
/// split), then the pruning of old history entries (may spill over into
/// the next transaction of a split input). A node record is an atom alone.
pub(super) struct Atom {
    pub(super) units: Vec<Unit>,
    pub(super) core: usize,
}

impl Atom {
    fn whole(units: Vec<Unit>) -> Self {
        let core = units.len();
        Self { units, core }
    }
}

/// The fewest operations a transaction is allowed: the core of the
/// largest atom.
const MIN_TXN_OPS: usize = 4;

/// Union-find root with path halving.
fn root(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

impl Owner {
    /// Plans and launches batches from the queue while fewer than
    /// `max_commits_in_flight` chains are in flight and the head of the
    /// queue does not wait for one of them.
    pub(super) async fn launch(&mut self) {
        while !self.held.is_empty()
            && self.inflight.len() < self.config.max_commits_in_flight.max(1)
        {
            if !self.launch_batch().await {
                break;
            }
        }
    }

    /// Launches batches until nothing is queued or in flight (start-up).
    pub(super) async fn settle(&mut self) {
        loop {
            self.launch().await;
            match self.inflight.next().await {
                Some(done) => self.complete(done).await,
                None if self.held.is_empty() => return,
                None => {}
            }
        }
    }

    /// Plans one batch from the head of the queue and launches its chains.
    /// Returns `false` when the head waits for a chain in flight.
    async fn launch_batch(&mut self) -> bool {
        let taken = self.take_batch();
        let base = self.next_tag;
        let now = self.clock.now_ns();
        let mut planned: Vec<Planned> = Vec::with_capacity(taken.len());
        // By tag - base: the index in `planned` of an applied input.
        let mut by_tag: Vec<Option<usize>> = Vec::with_capacity(taken.len());
        let mut parent: Vec<usize> = Vec::with_capacity(taken.len());
        let mut settled: Vec<Planned> = Vec::new();
        let mut waiting: Vec<Queued> = Vec::new();
        for mut queued in taken {
            if queued
                .waits_for
                .is_some_and(|tag| self.tags_in_flight.contains(&tag))
            {
                waiting.push(queued);
                continue;
            }
            let p = plan(&self.snapshot, queued.input.input(), now);
            // A dependency on a chain in flight waits for it. (A tag below
            // the batch that is not in flight would be a value left pending
            // by mistake: it must not hold the input back for ever.)
            if let Some(tag) = p
                .depends_on
                .iter()
                .find(|t| **t < base && self.tags_in_flight.contains(t))
            {
                queued.waits_for = Some(*tag);
                waiting.push(queued);
                continue;
            }
            if p.depends_on.iter().any(|t| *t < base) {
                tracing::warn!(
                    depends_on = ?p.depends_on,
                    "planned on a value left pending by a commit no longer in flight"
                );
            }
            let tag = self.next_tag;
            self.next_tag += 1;
            by_tag.push(None);
            let independent = p.depends_on.is_empty();
            if p.outcome.is_ok() {
                self.snapshot.apply_as(&p, tag);
            }
            let transition_id = match &queued.input {
                Pending::Change(request, _) if !request.transition_id.is_empty() => {
                    request.transition_id.clone()
                }
                _ if p.outcome.is_err() || p.writes_nothing() => String::new(),
                _ => self.next_id(now),
            };
            let item = Planned {
                input: queued.input,
                plan: p,
                transition_id,
                tag,
                attempts: queued.attempts,
            };
            // Nothing to write and resting on nothing uncommitted: answered
            // once the batch is planned.
            if independent && (item.plan.outcome.is_err() || item.plan.writes_nothing()) {
                settled.push(item);
                continue;
            }
            let i = planned.len();
            // (This input's tag is the last one given out.)
            if let Some(slot) = by_tag.last_mut() {
                *slot = Some(i);
            }
            parent.push(i);
            for dep in &item.plan.depends_on {
                let j = dep
                    .checked_sub(base)
                    .and_then(|k| usize::try_from(k).ok())
                    .and_then(|k| by_tag.get(k).copied().flatten());
                if let Some(j) = j {
                    let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                    parent[a.max(b)] = a.min(b);
                }
            }
            planned.push(item);
        }
        let answered = !settled.is_empty();
        if answered {
            self.finish(settled, now, 0);
        }
        // What waits for a chain in flight goes back to the head, in order.
        let stopped = !waiting.is_empty();
        for queued in waiting.into_iter().rev() {
            self.held.push_front(queued);
        }
        if planned.is_empty() {
            return answered || !stopped;
        }
        self.metrics
            .batch_size
            .observe(u64::try_from(planned.len()).unwrap_or(u64::MAX));

        // Groups of dependent inputs, in plan order.
        let mut groups: Vec<Vec<Planned>> = Vec::new();
        let mut group_of: HashMap<usize, usize> = HashMap::new();
        for (i, item) in planned.into_iter().enumerate() {
            let r = root(&mut parent, i);
            let g = *group_of.entry(r).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[g].push(item);
        }

        let deadline = self.chain_deadline(groups.iter().flatten().map(|p| &p.input));
        let mut fresh = match self.history_metas(groups.iter().flatten(), deadline).await {
            Ok(metas) => metas,
            Err(error) => {
                for group in &groups {
                    for item in group.iter().rev() {
                        self.snapshot.undo(&item.plan);
                    }
                }
                let inputs = groups.into_iter().flatten().map(|p| p.input).collect();
                self.fail_all(inputs, &error);
                return true;
            }
        };

        // Pack the groups into chains.
        // (The largest atom core, a state, its history entry and an outbox
        // record, must fit in one transaction.)
        let limit = self.config.max_txn_ops.max(MIN_TXN_OPS);
        let mut chains: Vec<Packing> = Vec::new();
        let mut shared = Packing::default();
        for group in groups {
            let mut histories = Vec::new();
            let units: Vec<Vec<Atom>> = group
                .iter()
                .enumerate()
                .map(|(k, item)| self.input_atoms(item, k, &mut fresh, &mut histories, now))
                .collect();
            let ops: usize = units.iter().flatten().map(|a| a.units.len()).sum();
            if ops > limit {
                let mut own = Packing::default();
                own.append(group, units, histories, Some(limit));
                chains.push(own);
                continue;
            }
            if shared.ops() + ops > limit {
                chains.push(std::mem::take(&mut shared));
            }
            shared.append(group, units, histories, None);
        }
        if !shared.planned.is_empty() {
            chains.push(shared);
        }
        for chain in chains {
            self.start_commit(chain, now);
        }
        true
    }

    /// Takes the next batch from the head of the queue: up to
    /// `max_batch_inputs` inputs and, past the first, node reports up to
    /// `max_batch_containers` containers. Of several reports of one node
    /// only the newest is kept; the older ones are answered "superseded".
    fn take_batch(&mut self) -> Vec<Queued> {
        let mut taken: Vec<Queued> = Vec::new();
        let mut containers = 0usize;
        let now = tokio::time::Instant::now();
        loop {
            if !taken.is_empty()
                && (taken.len() >= self.config.max_batch_inputs
                    || containers >= self.config.max_batch_containers)
            {
                break;
            }
            let Some(queued) = self.held.pop_front() else {
                break;
            };
            // Its caller gave up on it, or its deadline passed: it is never
            // committed.
            if !queued.input.take() {
                inc(&self.metrics.expired);
                continue;
            }
            if queued.input.deadline().is_some_and(|d| d <= now) {
                self.expire(queued.input);
                continue;
            }
            containers += queued.input.containers();
            taken.push(queued);
        }
        let mut latest: HashMap<&str, usize> = HashMap::new();
        for (i, queued) in taken.iter().enumerate() {
            if let Pending::Report(report, _) = &queued.input {
                latest.insert(report.node.as_str(), i);
            }
        }
        if latest.len() == taken.iter().filter(|q| q.input.is_report()).count() {
            return taken;
        }
        let keep: HashSet<usize> = latest.into_values().collect();
        let now = self.clock.now_ns();
        let mut kept = Vec::with_capacity(taken.len());
        for (i, queued) in taken.into_iter().enumerate() {
            match &queued.input {
                Pending::Report(report, _) if !keep.contains(&i) => {
                    inc(&self.metrics.reports_coalesced);
                    let message = format!("superseded by a newer report of node '{}'", report.node);
                    queued
                        .input
                        .answer(ErrorCode::Success, message, String::new(), "", now);
                }
                _ => kept.push(queued),
            }
        }
        kept
    }

    /// Starts committing a chain (polled by the owner with the others in flight).
    fn start_commit(&mut self, packing: Packing, now: i64) {
        let Packing {
            planned,
            txns,
            histories,
        } = packing;
        let mut batches = Vec::with_capacity(txns.len());
        let mut targets = Vec::with_capacity(txns.len());
        for units in txns {
            let mut batch = Batch::new();
            let mut written = Vec::with_capacity(units.len());
            for unit in units {
                if let Some((key, rev)) = unit.guard {
                    batch = batch.guard(key, rev);
                }
                batch.ops.push(unit.op);
                written.push(unit.target);
            }
            batches.push(batch);
            targets.push(written);
        }
        let id = self.next_chain;
        self.next_chain += 1;
        self.tags_in_flight.extend(planned.iter().map(|p| p.tag));
        self.chains.insert(
            id,
            Chain {
                planned,
                targets,
                histories,
                now,
                started: Clock::now(),
            },
        );
        let deadline = self.chain_deadline(self.chains[&id].planned.iter().map(|p| &p.input));
        let commit = commit_chain(self.store.clone(), batches, deadline, self.store_suspect);
        self.inflight
            .push(Box::pin(async move { (id, commit.await) }));
    }

    /// A chain's commit finished: answer its inputs, or undo and retry them.
    pub(super) async fn complete(&mut self, (id, result): ChainDone) {
        let Some(chain) = self.chains.remove(&id) else {
            return;
        };
        for item in &chain.planned {
            self.tags_in_flight.remove(&item.tag);
        }
        match result {
            Ok(revisions) => {
                self.store_suspect = false;
                for (targets, revision) in chain.targets.iter().zip(&revisions) {
                    inc(&self.metrics.commits);
                    for target in targets {
                        match *target {
                            Target::Change(p, c) => {
                                let item = &chain.planned[p];
                                self.snapshot.committed_change(
                                    &item.plan.changes[c],
                                    item.tag,
                                    *revision,
                                );
                            }
                            Target::Node(p, n) => {
                                let item = &chain.planned[p];
                                self.snapshot.committed_node(
                                    &item.plan.nodes[n],
                                    item.tag,
                                    *revision,
                                );
                            }
                            Target::Other => {}
                        }
                    }
                }
                let elapsed =
                    u64::try_from(chain.started.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.metrics.commit_latency_us.observe(elapsed);
                self.history.extend(chain.histories);
                let revision = revisions.last().copied().unwrap_or(0);
                self.finish(chain.planned, chain.now, revision);
            }
            Err(ChainFailure {
                error,
                applied,
                in_doubt,
            }) => {
                for _ in 0..applied {
                    inc(&self.metrics.commits);
                }
                for item in chain.planned.iter().rev() {
                    self.snapshot.undo(&item.plan);
                }
                if applied > 0 {
                    tracing::warn!(
                        %error,
                        applied,
                        "a split input failed after part of it was committed; the watch brings the cache in line"
                    );
                }
                self.store_suspect = matches!(
                    error,
                    StoreError::Timeout { .. } | StoreError::Unavailable { .. }
                );
                let guard_failed = matches!(error, StoreError::GuardFailed { .. });
                if in_doubt || (applied > 0 && !guard_failed) {
                    let inputs = chain.planned.into_iter().map(|p| p.input).collect();
                    self.fail_in_doubt(inputs, &error);
                } else {
                    self.retry_or_fail(chain.planned, error).await;
                }
            }
        }
    }

    /// After a failed commit (the plans undone): a guard failure re-reads
    /// the keys and queues the inputs again at the head, up to
    /// `max_guard_retries` times each; any other error answers them
    /// unavailable.
    async fn retry_or_fail(&mut self, planned: Vec<Planned>, error: StoreError) {
        let StoreError::GuardFailed { key, .. } = &error else {
            self.fail_all(planned.into_iter().map(|p| p.input).collect(), &error);
            return;
        };
        let (retry, exhausted): (Vec<Planned>, Vec<Planned>) = planned
            .into_iter()
            .partition(|p| p.attempts < self.config.max_guard_retries);
        if !exhausted.is_empty() {
            self.fail_all(exhausted.into_iter().map(|p| p.input).collect(), &error);
        }
        if retry.is_empty() {
            return;
        }
        inc(&self.metrics.guard_conflicts);
        tracing::debug!(%key, "guard failed; re-reading and re-planning");
        let inputs: Vec<Queued> = retry
            .into_iter()
            .map(|p| Queued {
                input: p.input,
                attempts: p.attempts + 1,
                waits_for: None,
            })
            .collect();
        let mut read = self.refresh(&inputs).await;
        // A history that outlived its state key: learn where it stands.
        if read.is_ok()
            && let Some((kind, name, _)) = self.keys.parse_history_key(key)
        {
            let deadline = self.chain_deadline(inputs.iter().map(|q| &q.input));
            match self
                .read_history_metas(vec![(kind, name.to_owned())], deadline)
                .await
            {
                Ok(metas) => self.history.extend(metas),
                Err(error) => read = Err(error),
            }
        }
        match read {
            Ok(()) => {
                for queued in inputs.into_iter().rev() {
                    self.held.push_front(queued);
                }
            }
            Err(error) => self.fail_all(inputs.into_iter().map(|q| q.input).collect(), &error),
        }
    }

    /// Re-reads every key the inputs may touch after a guard failure
    /// (keys of chains still in flight excepted: their values are theirs).
    async fn refresh(&mut self, inputs: &[Queued]) -> Result<(), StoreError> {
        let now = self.clock.now_ns();
        let mut keys: Vec<(Feed, String)> = Vec::new();
        for queued in inputs {
            let p = plan(&self.snapshot, queued.input.input(), now);
            keys.extend(
                p.changes
                    .iter()
                    .filter(|c| !is_pending(self.snapshot.revision(c.kind, &c.name)))
                    .map(|c| (Feed::States(c.kind), state_key(c.kind, &c.name))),
            );
            keys.extend(
                p.nodes
                    .iter()
                    .filter(|n| !is_pending(self.snapshot.node(&n.node).map_or(0, |e| e.revision)))
                    .map(|n| (Feed::Nodes, self.keys.node_key(&n.node))),
            );
        }
        keys.sort_by(|a, b| a.1.cmp(&b.1));
        keys.dedup_by(|a, b| a.1 == b.1);
        let reads = keys.iter().map(|(_, key)| self.store.get(key));
        let deadline = self.chain_deadline(inputs.iter().map(|q| &q.input));
        let within = deadline.saturating_duration_since(tokio::time::Instant::now());
        let results = all_within(within, "refresh", reads).await?;
        for ((feed, key), result) in keys.into_iter().zip(results) {
            match result? {
                Some(kv) => {
                    // Force: the cache is behind the store.
                    self.forget(feed, &key);
                    self.feed_put(feed, &kv.key, &kv.value, kv.mod_revision);
                }
                None => self.forget(feed, &key),
            }
        }
        self.history.clear();
        Ok(())
    }

    /// Answers inputs RESOURCE_UNAVAILABLE: their plans were undone and
    /// nothing of them was sent to the store, or the store refused it.
    pub(super) fn fail_all(&mut self, inputs: Vec<Pending>, error: &StoreError) {
        tracing::warn!(%error, inputs = inputs.len(), "commit failed; answering unavailable");
        self.answer_unavailable(
            inputs,
            "the state store is unavailable; nothing was written",
            &error.to_string(),
        );
    }

    /// Answers inputs whose transaction was sent but not confirmed in time,
    /// or only partly committed: RESOURCE_UNAVAILABLE without the promise
    /// that nothing was written; the watch brings the cache in line with
    /// whatever the store did.
    fn fail_in_doubt(&mut self, inputs: Vec<Pending>, error: &StoreError) {
        tracing::warn!(%error, inputs = inputs.len(), "commit not confirmed in time; answering unavailable");
        self.answer_unavailable(
            inputs,
            "the state store did not confirm the whole commit in time; part or all of it may be written",
            &error.to_string(),
        );
    }

    /// Answers an input whose deadline passed before it was committed: it
    /// never will be.
    fn expire(&mut self, input: Pending) {
        inc(&self.metrics.expired);
        tracing::debug!("an input's deadline passed while it was queued; dropped");
        self.answer_unavailable(
            vec![input],
            "not committed before the caller's deadline; nothing was written",
            "the state store is slow or unavailable",
        );
    }

    fn answer_unavailable(&mut self, inputs: Vec<Pending>, message: &str, details: &str) {
        let now = self.clock.now_ns();
        for input in inputs {
            if matches!(input, Pending::Change(..) | Pending::Report(..)) {
                inc(&self.metrics.unavailable);
            }
            let transition_id = match &input {
                Pending::Change(request, _) => request.transition_id.clone(),
                _ => String::new(),
            };
            input.answer(
                ErrorCode::ResourceUnavailable,
                message.to_owned(),
                details.to_owned(),
                &transition_id,
                now,
            );
        }
    }

    /// Reads the history position of every resource the plans record a
    /// transition for and that is not known yet.
    ///
    /// A resource whose state key is absent from the store (as the cache,
    /// loaded at start and fed by the watches, knows) starts a new history
    /// without a read: that is every first transition of a new scenario,
    /// the hot path of W1. Its sequence starts at the commit's time in
    /// microseconds ([`new_history`]), so should a history have outlived its
    /// state key (a model withdrawn and defined again, a key deleted by
    /// hand), the new records still sort after the old ones. Should the
    /// clock have gone back onto an old record, the put's "absent" guard
    /// fails and [`Owner::retry_or_fail`] reads where that history stands.
    async fn history_metas<'p>(
        &self,
        planned: impl Iterator<Item = &'p Planned>,
        deadline: tokio::time::Instant,
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
                let new_resource = change.old.is_none() && change.old_revision == 0;
                let key = (change.kind, change.name.clone());
                if !new_resource && !self.history.contains_key(&key) {
                    wanted.push(key);
                }
            }
        }
        self.read_history_metas(wanted, deadline).await
    }

    /// Reads where the histories of `wanted` stand.
    async fn read_history_metas(
        &self,
        wanted: Vec<(ResourceKind, String)>,
        deadline: tokio::time::Instant,
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
        let within = deadline.saturating_duration_since(tokio::time::Instant::now());
        let results = all_within(within, "history read", reads).await?;
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
    fn input_atoms(
        &self,
        item: &Planned,
        pi: usize,
        fresh: &mut HistoryMetas,
        histories: &mut Vec<((ResourceKind, String), HistoryMeta)>,
        now: i64,
    ) -> Vec<Atom> {
        let p = &item.plan;
        let mut atoms = Vec::with_capacity(p.changes.len() + p.nodes.len());
        let derived = &self.config.core.derived_source;
        let source = item.input.source(derived);
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
                op: state_store::Op::Put {
                    key: history_key,
                    value: entry.encode(),
                },
                target: Target::Other,
            });
            if change.kind == ResourceKind::Package {
                for record in p.reconciles().filter(|r| r.package == change.name) {
                    units.push(self.outbox_unit(record));
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
                    op: state_store::Op::Delete {
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
            atoms.push(Atom::whole(vec![self.outbox_unit(record)]));
        }
        atoms
    }

    /// The put of an outbox record.
    fn outbox_unit(&self, record: &statemachine_core::record::OutboxRecord) -> Unit {
        let key = self.keys.outbox_key(&record.id());
        Unit {
            guard: None,
            op: state_store::Op::Put {
                key,
                value: record.encode(),
            },
            target: Target::Other,
        }
    }

    /// The latest a commit of `inputs` may finish: `commit_timeout` from
    /// now, or the earliest deadline of their callers when sooner.
    fn chain_deadline<'p>(
        &self,
        inputs: impl Iterator<Item = &'p Pending>,
    ) -> tokio::time::Instant {
        let limit = tokio::time::Instant::now() + self.config.commit_timeout;
        inputs
            .filter_map(Pending::deadline)
            .fold(limit, std::cmp::Ord::min)
    }

    /// The committed state of a resource: a value an uncommitted chain
    /// wrote is answered as it was before that chain (no dirty reads).
    pub(super) fn committed_state(
        &self,
        kind: ResourceKind,
        name: &str,
    ) -> (Option<statemachine_core::AnyState>, Revision) {
        let revision = self.snapshot.revision(kind, name);
        if let Some(tag) = pending_tag(revision)
            && let Some(before) = self
                .chains
                .values()
                .find(|chain| chain.holds(tag))
                .and_then(|chain| chain.state_before(kind, name))
        {
            return before;
        }
        (self.snapshot.state(kind, name), revision)
    }
}

/// Runs store reads concurrently, all within `timeout`.
pub(super) async fn all_within<F: std::future::Future>(
    timeout: std::time::Duration,
    operation: &'static str,
    reads: impl IntoIterator<Item = F>,
) -> Result<Vec<F::Output>, StoreError> {
    tokio::time::timeout(timeout, futures::future::join_all(reads))
        .await
        .map_err(|_| StoreError::Timeout {
            operation,
            after: timeout,
        })
}

/// Commits a chain's transactions one after another, all before
/// `deadline`; none is sent after it. With `probe`, a read must be
/// answered first (the store did not answer the last commit).
async fn commit_chain(
    store: Arc<dyn StateStore>,
    batches: Vec<Batch>,
    deadline: tokio::time::Instant,
    probe: bool,
) -> ChainResult {
    if probe {
        let started = tokio::time::Instant::now();
        let answered = match tokio::time::timeout_at(deadline, store.revision()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(StoreError::Timeout {
                operation: "store check before a commit",
                after: deadline - started,
            }),
        };
        if let Err(error) = answered {
            return Err(ChainFailure {
                error,
                applied: 0,
                in_doubt: false,
            });
        }
    }
    let mut revisions = Vec::with_capacity(batches.len());
    for batch in batches {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(ChainFailure {
                error: StoreError::Timeout {
                    operation: "commit",
                    after: Duration::ZERO,
                },
                applied: revisions.len(),
                in_doubt: false,
            });
        }
        match tokio::time::timeout_at(deadline, store.apply(batch)).await {
            Ok(Ok(applied)) => revisions.push(applied.revision),
            Ok(Err(error)) => {
                return Err(ChainFailure {
                    error,
                    applied: revisions.len(),
                    in_doubt: false,
                });
            }
            Err(_) => {
                return Err(ChainFailure {
                    error: StoreError::Timeout {
                        operation: "commit",
                        after: deadline - now,
                    },
                    applied: revisions.len(),
                    in_doubt: true,
                });
            }
        }
    }
    Ok(revisions)
}
