//! The owner task: the one task that holds the cache (a core `Snapshot`),
//! plans inputs, commits them with group commit ([`commit`]), answers
//! callers and publishes events after the commit ([`publish`]), and keeps
//! the cache fresh from store watches ([`cache`]).

mod cache;
mod commit;
mod history;
mod lost;
mod pack;
mod publish;
mod recovery;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use futures::StreamExt;
use state_store::{EventKind as StoreEventKind, StateStore, StoreError, WatchEvent};
use statemachine_core::keys::Bookkeeping;
use statemachine_core::{ResourceKind, Snapshot, Tag};
use tokio::sync::{broadcast, mpsc, watch};

use cache::Feed;
pub(crate) use cache::Watches;
use commit::{InFlight, Queued};
use history::HistoryMetas;
use publish::Pending;

use crate::api::Command;
use crate::config::EngineConfig;
use crate::events::Event;
use crate::healing::healer::HealerFeed;
use crate::metrics::Metrics;
use crate::outbox::OutboxItem;
use crate::ports::{Clock, ns_to_duration};
use crate::query::Cache;

/// The channels the owner task talks through.
pub(crate) struct OwnerIo {
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) events: broadcast::Sender<Arc<Event>>,
    pub(crate) outbox: mpsc::UnboundedSender<OutboxItem>,
    pub(crate) healer: mpsc::UnboundedSender<HealerFeed>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// The owner task's state.
pub(crate) struct Owner {
    store: Arc<dyn StateStore>,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    keys: Bookkeeping,
    snapshot: Snapshot,
    commands: mpsc::Receiver<Command>,
    events: broadcast::Sender<Arc<Event>>,
    outbox: mpsc::UnboundedSender<OutboxItem>,
    /// News of commits for the healer.
    healer: mpsc::UnboundedSender<HealerFeed>,
    /// What is known of each package's recovery (from the healer's notes).
    recovery: HashMap<String, recovery::Guard>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
    /// Where each resource's history sequence stands, once read.
    history: HistoryMetas,
    /// When each resource last changed since start-up (ns).
    last_change: HashMap<(ResourceKind, String), i64>,
    last_tick_ns: i64,
    ids: u64,
    /// Inputs taken from the command queue (or queued again after a guard
    /// failure) and not planned yet, in order.
    held: VecDeque<Queued>,
    /// The chains of the batch being committed.
    inflight: InFlight,
    /// The tag the next planned input is applied under.
    next_tag: Tag,
    /// Broken watches waiting to be re-listed.
    resyncs: Vec<cache::Resync>,
    /// The package states were re-listed: check the outbox for reconciles
    /// a crash lost, once no commit is in flight.
    outbox_check_due: bool,
    /// (node, container) already warned about for an invalid model name:
    /// warned once while the name stays invalid.
    warned_model_names: HashSet<(String, String)>,
    /// The last commit failed for want of an answer: the next one first
    /// checks with a read that the store answers, so that while it is down
    /// inputs are answered "nothing was written" instead of being sent.
    store_suspect: bool,
    /// A follower's owner (HA): it keeps the cache in line with the store's
    /// watches and answers queries, but writes nothing; inputs are answered
    /// RESOURCE_UNAVAILABLE (the leader's, not this instance's, to commit).
    passive: bool,
}

impl Owner {
    pub(crate) fn new(
        store: Arc<dyn StateStore>,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
        metrics: Arc<Metrics>,
        io: OwnerIo,
    ) -> Self {
        let OwnerIo {
            commands,
            events,
            outbox,
            healer,
            shutdown,
        } = io;
        let keys = Bookkeeping::new(&config.bookkeeping_prefix);
        let snapshot = Snapshot::new(config.core.clone());
        Self {
            store,
            clock,
            config,
            keys,
            snapshot,
            commands,
            events,
            outbox,
            healer,
            recovery: HashMap::new(),
            metrics,
            shutdown,
            history: HashMap::new(),
            last_change: HashMap::new(),
            last_tick_ns: 0,
            ids: 0,
            held: VecDeque::new(),
            inflight: InFlight::default(),
            next_tag: 1,
            resyncs: Vec::new(),
            outbox_check_due: false,
            warned_model_names: HashSet::new(),
            store_suspect: false,
            passive: false,
        }
    }

    /// Makes this a follower's owner: no writes, no ticks, no re-evaluation.
    pub(crate) fn into_passive(mut self) -> Self {
        self.passive = true;
        self
    }

    /// The owner loop: one arm per source. New commands are taken when no
    /// commit is in flight; until then they wait and form the next batch
    /// (group commit).
    pub(crate) async fn run(mut self, mut watches: Watches) {
        loop {
            self.launch().await;
            if self.inflight.is_empty() && self.outbox_check_due {
                self.hand_lost_reconciles().await;
            }
            let deadline = if self.passive {
                None
            } else {
                self.snapshot
                    .next_deadline(self.last_tick_ns)
                    .map(|at| ns_to_duration(at.saturating_sub(self.clock.now_ns())))
            };
            let resync = self.next_resync();
            let room = self.inflight.is_empty() && self.held.len() < self.config.max_batch_inputs;
            tokio::select! {
                biased;
                _ = self.shutdown.changed() => break,
                Some(done) = self.inflight.next() => self.complete(done).await,
                command = self.commands.recv(), if room => match command {
                    Some(command) => self.take(command),
                    None => break,
                },
                Some((feed, item)) = watches.next(), if !watches.is_empty() => {
                    self.on_watch(feed, item, &mut watches).await;
                }
                _ = sleep_until(resync.map(|(_, due)| due)) => {
                    if let Some((feed, _)) = resync {
                        self.resync(feed, &mut watches).await;
                    }
                }
                _ = sleep_for(deadline) => self.on_tick(),
            }
        }
        // The commits in flight finish, so their callers get their answers.
        while let Some(done) = self.inflight.next().await {
            self.complete(done).await;
        }
        tracing::info!("engine owner stopped");
    }

    /// A watch event: the cache follows the store; definitions that changed
    /// are re-evaluated. A broken watch is re-listed.
    async fn on_watch(
        &mut self,
        feed: Feed,
        item: Result<WatchEvent, StoreError>,
        watches: &mut Watches,
    ) {
        let event = match item {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(?feed, %error, "watch broke; re-listing");
                self.resync(feed, watches).await;
                return;
            }
        };
        let kv = &event.kv;
        let affected = match event.kind {
            StoreEventKind::Put => self.feed_put(feed, &kv.key, &kv.value, kv.mod_revision),
            StoreEventKind::Delete => self.feed_delete(feed, &kv.key, kv.mod_revision),
        };
        if !affected.is_empty() && !self.passive {
            self.held
                .push_back(Queued::new(Pending::Reevaluate(affected)));
        }
    }

    /// A deadline of the snapshot passed (an information failure's grace, a
    /// node falling silent): deadlines up to now are handled by a tick.
    fn on_tick(&mut self) {
        self.last_tick_ns = self.clock.now_ns();
        self.held.push_back(Queued::new(Pending::Tick));
    }

    /// Takes a command and what is queued behind it, up to a batch: inputs
    /// wait in `held` for planning, queries are answered at once.
    fn take(&mut self, command: Command) {
        let mut containers = containers_of(&command);
        let mut inputs = usize::from(self.accept(command));
        while inputs < self.config.max_batch_inputs && containers < self.config.max_batch_containers
        {
            match self.commands.try_recv() {
                Ok(command) => {
                    containers += containers_of(&command);
                    inputs += usize::from(self.accept(command));
                }
                Err(_) => break,
            }
        }
    }

    /// Answers a query at once (nothing is in flight: the cache holds
    /// committed states only), or queues an input; returns whether it
    /// queued one.
    fn accept(&mut self, command: Command) -> bool {
        if self.passive {
            self.accept_passive(command);
            return false;
        }
        let cache = Cache {
            snapshot: &self.snapshot,
            last_change: &self.last_change,
        };
        match command {
            Command::Change(request, identity, caller) => {
                self.held
                    .push_back(Queued::new(Pending::Change(request, identity, caller)));
                return true;
            }
            Command::Report(report, caller) => {
                self.held
                    .push_back(Queued::new(Pending::Report(report, caller)));
                return true;
            }
            Command::Get(kind, name, reply) => {
                let _ = reply.send(cache.view(kind, &name));
            }
            Command::List(kind, state, limit, reply) => {
                let _ = reply.send(cache.list(kind, state.as_deref(), limit));
            }
            Command::Sync(kind, name, deep, caller) => {
                let affected = self.sync_scope(kind, &name, deep);
                if !self.snapshot.is_known(kind, &name) {
                    let _ = caller
                        .reply
                        .send(Err(crate::api::EngineError::NotFound(format!(
                            "{kind} '{name}' is defined nowhere"
                        ))));
                    return false;
                }
                self.held
                    .push_back(Queued::new(Pending::Sync(affected, caller)));
                return true;
            }
            Command::Context(kind, name, reply) => {
                let _ = reply.send(self.action_context(kind, &name));
            }
            Command::Recovery(note) => self.on_note(note),
        }
        false
    }

    /// A follower answers queries from its cache and every input
    /// RESOURCE_UNAVAILABLE: writes are the leader's (the gRPC layer sends
    /// them there when it knows one).
    fn accept_passive(&mut self, command: Command) {
        let cache = Cache {
            snapshot: &self.snapshot,
            last_change: &self.last_change,
        };
        let input = match command {
            Command::Get(kind, name, reply) => {
                let _ = reply.send(cache.view(kind, &name));
                return;
            }
            Command::List(kind, state, limit, reply) => {
                let _ = reply.send(cache.list(kind, state.as_deref(), limit));
                return;
            }
            Command::Context(kind, name, reply) => {
                let _ = reply.send(self.action_context(kind, &name));
                return;
            }
            Command::Recovery(_) => return,
            Command::Change(request, identity, caller) => {
                Pending::Change(request, identity, caller)
            }
            Command::Report(report, caller) => Pending::Report(report, caller),
            Command::Sync(_, _, _, caller) => {
                Pending::Sync(statemachine_core::Affected::default(), caller)
            }
        };
        self.answer_unavailable(
            vec![input],
            FOLLOWER_ANSWER,
            "writes go to the leader of the HA group",
        );
    }

    /// After the package states were re-listed: writes the reconciles a
    /// crash of another writer lost and hands them to the outbox worker
    /// (the pending ones it has already).
    async fn hand_lost_reconciles(&mut self) {
        self.outbox_check_due = false;
        match self.check_outbox().await {
            Ok(check) => {
                for item in check.written {
                    if self.outbox.send(item).is_err() {
                        tracing::warn!("outbox worker stopped; the record stays in the store");
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "could not check the outbox after a re-list"),
        }
    }

    fn next_id(&mut self, now: i64) -> String {
        self.ids += 1;
        format!("sm-{now}-{}", self.ids)
    }
}

/// What a follower answers an input it cannot forward.
pub(crate) const FOLLOWER_ANSWER: &str =
    "this instance is not the leader and knows none yet; nothing was written";

/// Sleeps until `at`, or for ever.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Sleeps for `duration`, or for ever.
async fn sleep_for(duration: Option<std::time::Duration>) {
    match duration {
        Some(duration) => tokio::time::sleep(duration).await,
        None => std::future::pending().await,
    }
}

/// The containers a command's node report holds (0 for anything else).
fn containers_of(command: &Command) -> usize {
    match command {
        Command::Report(report, _) => report.containers.len(),
        _ => 0,
    }
}
