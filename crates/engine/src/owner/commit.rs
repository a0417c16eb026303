//! Group commit: the queued inputs are planned as one batch, split into
//! independent chains of transactions ([`super::pack`]), and the chains are
//! committed concurrently; the next batch is planned once they finished.
//!
//! - An input is planned against the cache with the writes of every input
//!   planned before it in the batch applied, under a tag of its own; the
//!   plan names the tags whose uncommitted writes it read or overwrites
//!   (`Plan::depends_on`). Inputs that depend on each other form a group;
//!   groups share no key they write or read.
//! - Every caller is answered after its own chain committed. A chain whose
//!   commit fails is undone without touching the others (they read nothing
//!   it wrote) and its inputs are retried (guard failure) or answered
//!   unavailable.
//! - Every input carries its caller's deadline: one still queued at it is
//!   never committed, and no transaction of a chain is sent after the
//!   earliest deadline of its inputs.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use state_store::{Batch, StateStore, StoreError};
use statemachine_core::keys::state_key;
use statemachine_core::{ErrorCode, Plan, ResourceKind, Revision, Tag, plan};
use tokio::time::Instant;

use super::Owner;
use super::cache::Feed;
use super::history::HistoryMeta;
use super::pack::{self, Target};
use super::publish::Pending;
use crate::metrics::inc;

/// An input waiting to be planned, with the guard failures it met.
pub(super) struct Queued {
    pub(super) input: Pending,
    pub(super) attempts: u32,
}

impl Queued {
    pub(super) fn new(input: Pending) -> Self {
        Self { input, attempts: 0 }
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
    started: std::time::Instant,
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

/// A chain and how its commit went.
pub(super) type ChainDone = (Chain, ChainResult);

/// The commits in flight, polled by the owner task itself (no task of
/// their own: one wake-up less per commit). Wrapped so that the owner stays
/// `Sync` across its awaits; it is only ever used through `&mut`.
#[derive(Default)]
pub(super) struct InFlight(
    sync_wrapper::SyncWrapper<FuturesUnordered<BoxFuture<'static, ChainDone>>>,
);

impl InFlight {
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

impl Owner {
    /// Plans and launches batches from the queue until one is in flight or
    /// nothing is queued.
    pub(super) async fn launch(&mut self) {
        while !self.held.is_empty() && self.inflight.is_empty() {
            self.launch_batch().await;
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
    async fn launch_batch(&mut self) {
        let taken = self.take_batch();
        let base = self.next_tag;
        let now = self.clock.now_ns();
        let mut planned: Vec<Planned> = Vec::with_capacity(taken.len());
        // By tag - base: the index in `planned` of an input to commit.
        let mut by_tag: Vec<Option<usize>> = Vec::with_capacity(taken.len());
        let mut deps: Vec<Vec<usize>> = Vec::with_capacity(taken.len());
        let mut settled: Vec<Planned> = Vec::new();
        for queued in taken {
            let p = plan(&self.snapshot, queued.input.input(), now);
            let tag = self.next_tag;
            self.next_tag += 1;
            if p.outcome.is_ok() {
                self.snapshot.apply_as(&p, tag);
            }
            let transition_id = match &queued.input {
                Pending::Change(request, _, _) if !request.transition_id.is_empty() => {
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
            if item.plan.depends_on.is_empty()
                && (item.plan.outcome.is_err() || item.plan.writes_nothing())
            {
                by_tag.push(None);
                settled.push(item);
                continue;
            }
            by_tag.push(Some(planned.len()));
            deps.push(
                item.plan
                    .depends_on
                    .iter()
                    .filter_map(|dep| dep.checked_sub(base))
                    .filter_map(|k| usize::try_from(k).ok())
                    .filter_map(|k| by_tag.get(k).copied().flatten())
                    .collect(),
            );
            planned.push(item);
        }
        if !settled.is_empty() {
            self.finish(settled, now, 0);
        }
        if planned.is_empty() {
            return;
        }
        self.metrics
            .batch_size
            .observe(u64::try_from(planned.len()).unwrap_or(u64::MAX));

        // Groups of dependent inputs, in plan order.
        let mut slots: Vec<Option<Planned>> = planned.into_iter().map(Some).collect();
        let groups: Vec<Vec<Planned>> = pack::group(&deps)
            .into_iter()
            .map(|members| {
                members
                    .into_iter()
                    .filter_map(|i| slots[i].take())
                    .collect()
            })
            .collect();

        let deadline = self.chain_deadline(groups.iter().flatten().map(|p| &p.input));
        let mut fresh = match self.history_metas(groups.iter().flatten(), deadline).await {
            Ok(metas) => metas,
            Err(error) => {
                for item in groups.iter().flatten().rev() {
                    self.snapshot.undo(&item.plan);
                }
                let inputs = groups.into_iter().flatten().map(|p| p.input).collect();
                self.fail_all(inputs, &error);
                return;
            }
        };

        // Each group's operations, then the chains they are packed into.
        let mut histories: Vec<Vec<((ResourceKind, String), HistoryMeta)>> = Vec::new();
        let ops: Vec<pack::GroupOps> = groups
            .iter()
            .map(|group| {
                let mut moved = Vec::new();
                let atoms = group
                    .iter()
                    .enumerate()
                    .map(|(k, item)| self.input_atoms(item, k, &mut fresh, &mut moved, now))
                    .collect();
                histories.push(moved);
                atoms
            })
            .collect();
        let mut groups: Vec<Option<Vec<Planned>>> = groups.into_iter().map(Some).collect();
        let mut histories: Vec<Option<_>> = histories.into_iter().map(Some).collect();
        for chain in pack::pack(ops, self.config.max_txn_ops) {
            let planned = chain
                .groups
                .iter()
                .filter_map(|&g| groups[g].take())
                .flatten()
                .collect();
            let moved = chain
                .groups
                .iter()
                .filter_map(|&g| histories[g].take())
                .flatten()
                .collect();
            self.start_commit(planned, chain.txns, moved, now);
        }
    }

    /// Takes the next batch from the head of the queue: up to
    /// `max_batch_inputs` inputs and, past the first, node reports up to
    /// `max_batch_containers` containers. An input its caller abandoned, or
    /// whose deadline passed, is dropped. Of several reports of one node
    /// only the newest is kept; the older ones are answered "superseded".
    fn take_batch(&mut self) -> Vec<Queued> {
        let mut taken: Vec<Queued> = Vec::new();
        let mut containers = 0usize;
        let now = Instant::now();
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
    fn start_commit(
        &mut self,
        planned: Vec<Planned>,
        txns: Vec<Vec<pack::Unit>>,
        histories: Vec<((ResourceKind, String), HistoryMeta)>,
        now: i64,
    ) {
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
        let deadline = self.chain_deadline(planned.iter().map(|p| &p.input));
        let chain = Chain {
            planned,
            targets,
            histories,
            now,
            started: std::time::Instant::now(),
        };
        let commit = commit_chain(self.store.clone(), batches, deadline, self.store_suspect);
        self.inflight
            .push(Box::pin(async move { (chain, commit.await) }));
    }

    /// A chain's commit finished: answer its inputs, or undo and retry them.
    pub(super) async fn complete(&mut self, (chain, result): ChainDone) {
        let failure = match result {
            Ok(revisions) => {
                self.committed(chain, &revisions);
                return;
            }
            Err(failure) => failure,
        };
        let ChainFailure {
            error,
            applied,
            in_doubt,
        } = failure;
        self.store_suspect = matches!(
            error,
            StoreError::Timeout { .. } | StoreError::Unavailable { .. }
        );
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
        let guard_failed = matches!(error, StoreError::GuardFailed { .. });
        if in_doubt || (applied > 0 && !guard_failed) {
            let inputs = chain.planned.into_iter().map(|p| p.input).collect();
            self.fail_in_doubt(inputs, &error);
        } else {
            self.retry_or_fail(chain.planned, error).await;
        }
    }

    /// A chain committed: its revisions recorded in the cache, its inputs
    /// answered.
    fn committed(&mut self, chain: Chain, revisions: &[Revision]) {
        self.store_suspect = false;
        for (targets, revision) in chain.targets.iter().zip(revisions) {
            inc(&self.metrics.commits);
            for target in targets {
                match *target {
                    Target::Change(p, c) => {
                        let item = &chain.planned[p];
                        self.snapshot
                            .committed_change(&item.plan.changes[c], item.tag, *revision);
                    }
                    Target::Node(p, n) => {
                        let item = &chain.planned[p];
                        self.snapshot
                            .committed_node(&item.plan.nodes[n], item.tag, *revision);
                    }
                    Target::Other => {}
                }
            }
        }
        let elapsed = u64::try_from(chain.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.metrics.commit_latency_us.observe(elapsed);
        self.history.extend(chain.histories);
        let revision = revisions.last().copied().unwrap_or(0);
        self.finish(chain.planned, chain.now, revision);
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
            })
            .collect();
        let deadline = self.chain_deadline(inputs.iter().map(|q| &q.input));
        let mut read = self.refresh(&inputs, deadline).await;
        // A history that outlived its state key: learn where it stands.
        if read.is_ok()
            && let Some((kind, name, _)) = self.keys.parse_history_key(key)
        {
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

    /// Re-reads every key the inputs may touch after a guard failure.
    async fn refresh(&mut self, inputs: &[Queued], deadline: Instant) -> Result<(), StoreError> {
        let now = self.clock.now_ns();
        let mut keys: Vec<(Feed, String)> = Vec::new();
        for queued in inputs {
            let p = plan(&self.snapshot, queued.input.input(), now);
            keys.extend(
                p.changes
                    .iter()
                    .map(|c| (Feed::States(c.kind), state_key(c.kind, &c.name))),
            );
            keys.extend(
                p.nodes
                    .iter()
                    .map(|n| (Feed::Nodes, self.keys.node_key(&n.node))),
            );
        }
        keys.sort_by(|a, b| a.1.cmp(&b.1));
        keys.dedup_by(|a, b| a.1 == b.1);
        let reads = keys.iter().map(|(_, key)| self.store.get(key));
        let results = all_within(deadline, "refresh", reads).await?;
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

    pub(super) fn answer_unavailable(
        &mut self,
        inputs: Vec<Pending>,
        message: &str,
        details: &str,
    ) {
        let now = self.clock.now_ns();
        for input in inputs {
            if matches!(input, Pending::Change(..) | Pending::Report(..)) {
                inc(&self.metrics.unavailable);
            }
            let transition_id = match &input {
                Pending::Change(request, _, _) => request.transition_id.clone(),
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

    /// The latest a commit of `inputs` may finish: `commit_timeout` from
    /// now, or the earliest deadline of their callers when sooner.
    fn chain_deadline<'p>(&self, inputs: impl Iterator<Item = &'p Pending>) -> Instant {
        let limit = Instant::now() + self.config.commit_timeout;
        inputs
            .filter_map(Pending::deadline)
            .fold(limit, std::cmp::Ord::min)
    }
}

/// Runs store reads concurrently, all before `deadline`.
pub(super) async fn all_within<F: std::future::Future>(
    deadline: Instant,
    operation: &'static str,
    reads: impl IntoIterator<Item = F>,
) -> Result<Vec<F::Output>, StoreError> {
    let started = Instant::now();
    tokio::time::timeout_at(deadline, futures::future::join_all(reads))
        .await
        .map_err(|_| StoreError::Timeout {
            operation,
            after: deadline.saturating_duration_since(started),
        })
}

/// Commits a chain's transactions one after another, all before
/// `deadline`; none is sent after it. With `probe`, a read must be
/// answered first (the store did not answer the last commit).
async fn commit_chain(
    store: Arc<dyn StateStore>,
    batches: Vec<Batch>,
    deadline: Instant,
    probe: bool,
) -> ChainResult {
    let failed = |error, applied, in_doubt| ChainFailure {
        error,
        applied,
        in_doubt,
    };
    if probe {
        let started = Instant::now();
        match tokio::time::timeout_at(deadline, store.revision()).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(failed(error, 0, false)),
            Err(_) => {
                let error = StoreError::Timeout {
                    operation: "store check before a commit",
                    after: deadline - started,
                };
                return Err(failed(error, 0, false));
            }
        }
    }
    let mut revisions = Vec::with_capacity(batches.len());
    for batch in batches {
        let now = Instant::now();
        if now >= deadline {
            let error = StoreError::Timeout {
                operation: "commit",
                after: Duration::ZERO,
            };
            return Err(failed(error, revisions.len(), false));
        }
        match tokio::time::timeout_at(deadline, store.apply(batch)).await {
            Ok(Ok(applied)) => revisions.push(applied.revision),
            // The store's own deadline, or a connection lost, after the
            // transaction may have been sent: its fate is unknown.
            Ok(Err(error)) => {
                let in_doubt = error.is_transient();
                return Err(failed(error, revisions.len(), in_doubt));
            }
            Err(_) => {
                let error = StoreError::Timeout {
                    operation: "commit",
                    after: deadline - now,
                };
                return Err(failed(error, revisions.len(), true));
            }
        }
    }
    Ok(revisions)
}
