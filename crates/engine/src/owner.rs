//! The owner task: the one task that holds the cache (a core `Snapshot`),
//! plans inputs, commits them with group commit (see [`commit`]), answers
//! callers after the commit, and keeps the cache fresh from store watches.

mod commit;
mod lost;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::SelectAll;
use state_store::{
    EventKind as StoreEventKind, StateStore, StoreError, WatchEvent, WatchStream, get_all,
};
use statemachine_core::definition::DefinitionKind;
use statemachine_core::keys::{Bookkeeping, parse_state_key, state_key, state_prefix};
use statemachine_core::record::NodeRecord;
use statemachine_core::{
    Affected, AnyState, Change, Effect, ErrorCode, Input, NodeChange, NodeReport, ResourceKind,
    Snapshot, StateChangeRequest, Tag, is_pending,
};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

use commit::{Chain, InFlight, Planned, Queued};

use crate::api::{Caller, ChangeAnswer, Command, ReportAnswer, ResourceView};
use crate::config::EngineConfig;
use crate::events::{Event, EventKind, Severity};
use crate::metrics::{Metrics, inc};
use crate::outbox::OutboxItem;
use crate::ports::{Clock, ns_to_duration};

/// Where a history sequence of a resource stands: entries `first..next`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HistoryMeta {
    first: u64,
    next: u64,
}

/// History positions by resource.
type HistoryMetas = HashMap<(ResourceKind, String), HistoryMeta>;

/// The channels the owner task talks through.
pub(crate) struct OwnerIo {
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) events: broadcast::Sender<Arc<Event>>,
    pub(crate) outbox: mpsc::UnboundedSender<OutboxItem>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// One input of a batch, with whoever waits for its answer.
enum Pending {
    Change(StateChangeRequest, Caller<ChangeAnswer>),
    Report(NodeReport, Caller<ReportAnswer>),
    Reevaluate(Affected),
    Tick,
}

impl Pending {
    fn input(&self) -> Input<'_> {
        match self {
            Pending::Change(request, _) => Input::StateChange(request),
            Pending::Report(report, _) => Input::NodeReport(report),
            Pending::Reevaluate(affected) => Input::Reevaluate(affected),
            Pending::Tick => Input::Tick,
        }
    }

    /// The containers of a node report (0 for anything else).
    fn containers(&self) -> usize {
        match self {
            Pending::Report(report, _) => report.containers.len(),
            _ => 0,
        }
    }

    /// Takes the input for planning; `false` when its caller abandoned it at
    /// its deadline (it is then dropped: never committed, not answered).
    fn take(&self) -> bool {
        match self {
            Pending::Change(_, caller) => caller.take(),
            Pending::Report(_, caller) => caller.take(),
            Pending::Reevaluate(_) | Pending::Tick => true,
        }
    }

    /// Until when its caller waits (`None`: nobody waits).
    fn deadline(&self) -> Option<Instant> {
        match self {
            Pending::Change(_, caller) => Some(caller.deadline),
            Pending::Report(_, caller) => Some(caller.deadline),
            Pending::Reevaluate(_) | Pending::Tick => None,
        }
    }

    fn is_report(&self) -> bool {
        matches!(self, Pending::Report(..))
    }

    fn source<'a>(&'a self, derived: &'a str) -> &'a str {
        match self {
            Pending::Change(request, _) if !request.source.is_empty() => &request.source,
            _ => derived,
        }
    }

    /// Answers the caller, if any. A caller that went away is ignored.
    fn answer(
        self,
        code: ErrorCode,
        message: String,
        details: String,
        transition_id: &str,
        at_ns: i64,
    ) {
        match self {
            Pending::Change(_, caller) => {
                let _ = caller.reply.send(ChangeAnswer {
                    code,
                    message,
                    details,
                    transition_id: transition_id.to_owned(),
                    timestamp_ns: at_ns,
                });
            }
            Pending::Report(_, caller) => {
                let message = if details.is_empty() {
                    message
                } else {
                    format!("{message}: {details}")
                };
                let _ = caller.reply.send(ReportAnswer { code, message });
            }
            Pending::Reevaluate(_) | Pending::Tick => {}
        }
    }
}

/// The merged watch streams (kept outside `Owner`: streams are not `Sync`).
pub(crate) type Watches =
    SelectAll<futures::stream::BoxStream<'static, (Feed, Result<WatchEvent, StoreError>)>>;

/// Which part of the cache a store key feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Feed {
    Definitions(DefinitionKind),
    States(ResourceKind),
    Nodes,
}

/// What a write of a transaction is, to record its revision after the commit.
#[derive(Debug, Clone, Copy)]
enum Target {
    Change(usize, usize),
    Node(usize, usize),
    Other,
}

/// One store operation with its guard.
struct Unit {
    guard: Option<(String, i64)>,
    op: state_store::Op,
    target: Target,
}

pub(crate) struct Owner {
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: EngineConfig,
    pub(crate) keys: Bookkeeping,
    pub(crate) snapshot: Snapshot,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) events: broadcast::Sender<Arc<Event>>,
    pub(crate) outbox: mpsc::UnboundedSender<OutboxItem>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) shutdown: watch::Receiver<bool>,
    history: HistoryMetas,
    last_change: HashMap<(ResourceKind, String), i64>,
    last_tick_ns: i64,
    ids: u64,
    /// Inputs taken from the command queue (or queued again after a guard
    /// failure) and not planned yet, in order.
    held: VecDeque<Queued>,
    /// The commits in flight, and their chains by id.
    inflight: InFlight,
    chains: HashMap<u64, Chain>,
    next_chain: u64,
    /// The tags of the inputs of the chains in flight.
    tags_in_flight: std::collections::HashSet<Tag>,
    /// The tag the next planned input is applied under.
    next_tag: Tag,
    /// (node, container) already warned about for an invalid model name:
    /// warned once while the name stays invalid (see `finish`).
    warned_model_names: std::collections::HashSet<(String, String)>,
    /// The last commit failed for want of an answer: the next one first
    /// checks with a read that the store answers, so that while it is down
    /// inputs are answered "nothing was written" instead of being sent.
    store_suspect: bool,
}

/// The prefixes the cache is fed from.
fn feeds(keys: &Bookkeeping) -> Vec<(Feed, String)> {
    let mut feeds: Vec<(Feed, String)> = DefinitionKind::ALL
        .iter()
        .map(|k| (Feed::Definitions(*k), k.key_prefix().to_owned()))
        .collect();
    feeds.extend(
        ResourceKind::ALL
            .iter()
            .map(|k| (Feed::States(*k), state_prefix(*k))),
    );
    feeds.push((Feed::Nodes, keys.nodes_prefix()));
    feeds
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
            metrics,
            shutdown,
            history: HashMap::new(),
            last_change: HashMap::new(),
            last_tick_ns: 0,
            ids: 0,
            held: VecDeque::new(),
            inflight: InFlight::default(),
            chains: HashMap::new(),
            next_chain: 0,
            tags_in_flight: Default::default(),
            next_tag: 1,
            warned_model_names: Default::default(),
            store_suspect: false,
        }
    }

    /// Loads the cache from the store, starts the watches and returns the
    /// pending outbox records (STATE-MACHINES / ARCHITECTURE: restart is recovery).
    pub(crate) async fn load(&mut self) -> Result<(Vec<OutboxItem>, Watches), StoreError> {
        let start = self.store.revision().await?;
        let now = self.clock.now_ns();
        let mut affected = Affected::default();
        for (feed, prefix) in feeds(&self.keys) {
            let (kvs, _) =
                get_all(self.store.as_ref(), &prefix, self.config.load_page_size).await?;
            for kv in kvs {
                affected.extend(self.feed_put(feed, &kv.key, &kv.value, kv.mod_revision));
            }
        }
        // Silence is measured from the restart for nodes known before it.
        let nodes: Vec<String> = self.snapshot.nodes().map(|(n, _)| n.clone()).collect();
        for node in nodes {
            self.snapshot.mark_seen(&node, now);
            self.metrics.node_seen(&node, now);
        }
        self.last_tick_ns = now;
        let mut watches = Watches::new();
        for (feed, prefix) in feeds(&self.keys) {
            watches.push(self.watch(feed, prefix, start + 1).await?);
        }
        // Definitions written while the StateManager was down: initial states.
        if !affected.is_empty() {
            self.held
                .push_back(Queued::new(Pending::Reevaluate(affected)));
        }
        self.held.push_back(Queued::new(Pending::Tick));
        self.settle().await;
        // After the re-evaluation: packages that entered a reconcile state
        // while the StateManager was down have their records by now.
        let pending = self.check_outbox().await?.pending;
        Ok((pending, watches))
    }

    async fn watch(
        &self,
        feed: Feed,
        prefix: String,
        from: i64,
    ) -> Result<
        futures::stream::BoxStream<'static, (Feed, Result<WatchEvent, StoreError>)>,
        StoreError,
    > {
        let stream: WatchStream = self.store.watch(&prefix, from).await?;
        Ok(stream.map(move |item| (feed, item)).boxed())
    }

    /// Applies a key read from the store to the cache; returns what a
    /// definition change affects.
    fn feed_put(&mut self, feed: Feed, key: &str, value: &[u8], revision: i64) -> Affected {
        match feed {
            Feed::Definitions(_) => {
                let text = String::from_utf8_lossy(value);
                match self.snapshot.update_definition(key, Some(&text)) {
                    Ok(affected) => affected,
                    Err(error) => {
                        inc(&self.metrics.bad_definitions);
                        tracing::warn!(%key, %error, "skipping a definition that does not parse");
                        Affected::default()
                    }
                }
            }
            Feed::States(_) => {
                let Some((kind, name)) = parse_state_key(key) else {
                    return Affected::default();
                };
                let known = self.snapshot.revision(kind, name);
                if is_pending(known) || (known != 0 && known >= revision) {
                    return Affected::default();
                }
                let text = String::from_utf8_lossy(value);
                if let Err(error) = self.snapshot.load_state(kind, name, &text, revision) {
                    tracing::warn!(%key, %error, "ignoring a state value that does not parse");
                }
                Affected::default()
            }
            Feed::Nodes => {
                let Some(node) = key.strip_prefix(&self.keys.nodes_prefix()) else {
                    return Affected::default();
                };
                let known = self.snapshot.node(node).map_or(0, |e| e.revision);
                if is_pending(known) || (known != 0 && known >= revision) {
                    return Affected::default();
                }
                match NodeRecord::decode(value) {
                    Ok(record) => self.snapshot.load_node(node, record, revision),
                    Err(error) => {
                        tracing::warn!(%key, %error, "ignoring a node record that does not parse")
                    }
                }
                Affected::default()
            }
        }
    }

    fn feed_delete(&mut self, feed: Feed, key: &str, revision: i64) -> Affected {
        match feed {
            Feed::Definitions(_) => self
                .snapshot
                .update_definition(key, None)
                .unwrap_or_default(),
            Feed::States(_) => {
                if let Some((kind, name)) = parse_state_key(key) {
                    let known = self.snapshot.revision(kind, name);
                    if !is_pending(known) && known < revision {
                        self.snapshot.remove_state(kind, name);
                    }
                }
                Affected::default()
            }
            Feed::Nodes => {
                if let Some(node) = key.strip_prefix(&self.keys.nodes_prefix()) {
                    let known = self.snapshot.node(node).map_or(0, |e| e.revision);
                    if !is_pending(known) && known < revision {
                        self.snapshot.remove_node(node);
                    }
                }
                Affected::default()
            }
        }
    }

    /// Re-lists a prefix whose watch broke (compaction) and watches it again.
    async fn resync(&mut self, feed: Feed, watches: &mut Watches) {
        let Some((_, prefix)) = feeds(&self.keys).into_iter().find(|(f, _)| *f == feed) else {
            return;
        };
        let mut delay = std::time::Duration::from_millis(100);
        loop {
            match get_all(self.store.as_ref(), &prefix, self.config.load_page_size).await {
                Ok((kvs, revision)) => {
                    let mut affected = Affected::default();
                    for kv in &kvs {
                        affected.extend(self.feed_put(feed, &kv.key, &kv.value, kv.mod_revision));
                    }
                    affected.extend(self.forget_missing(feed, &kvs));
                    if !affected.is_empty() {
                        self.held
                            .push_back(Queued::new(Pending::Reevaluate(affected)));
                    }
                    if feed == Feed::States(ResourceKind::Package) {
                        self.hand_lost_reconciles().await;
                    }
                    if let Ok(stream) = self.watch(feed, prefix.clone(), revision + 1).await {
                        watches.push(stream);
                        tracing::info!(%prefix, "watch re-established after a re-list");
                        return;
                    }
                }
                Err(error) => tracing::warn!(%prefix, %error, "re-list failed; retrying"),
            }
            if *self.shutdown.borrow() {
                return;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(std::time::Duration::from_secs(10));
        }
    }

    /// After the package states were re-listed: writes the reconciles a
    /// crash of another writer lost and hands them to the outbox worker
    /// (the pending ones it has already).
    async fn hand_lost_reconciles(&mut self) {
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

    /// After a re-list: forgets definitions that no longer exist.
    fn forget_missing(&mut self, feed: Feed, kvs: &[state_store::KeyValue]) -> Affected {
        let mut affected = Affected::default();
        if let Feed::Definitions(kind) = feed {
            let present: std::collections::HashSet<&str> =
                kvs.iter().map(|kv| kv.key.as_str()).collect();
            let known: Vec<String> = match kind {
                DefinitionKind::Scenario => self
                    .snapshot
                    .topology()
                    .scenarios()
                    .map(|d| d.name.to_string())
                    .collect(),
                DefinitionKind::Package => self
                    .snapshot
                    .topology()
                    .packages()
                    .map(|d| d.name.to_string())
                    .collect(),
                DefinitionKind::Model => self
                    .snapshot
                    .topology()
                    .models()
                    .map(|d| d.name.to_string())
                    .collect(),
            };
            for name in known {
                let key = format!("{}{name}", kind.key_prefix());
                if !present.contains(key.as_str()) {
                    affected.extend(
                        self.snapshot
                            .update_definition(&key, None)
                            .unwrap_or_default(),
                    );
                }
            }
        }
        affected
    }

    /// The owner loop.
    pub(crate) async fn run(mut self, mut watches: Watches) {
        loop {
            self.launch().await;
            let deadline = self
                .snapshot
                .next_deadline(self.last_tick_ns)
                .map(|at| ns_to_duration(at.saturating_sub(self.clock.now_ns())));
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            // New commands are taken when the queue is planned and there is
            // room for another commit; until then they wait and form the
            // next batch (group commit).
            let room = self.held.len() < self.config.max_batch_inputs
                && self.inflight.len() < self.config.max_commits_in_flight.max(1);
            tokio::select! {
                biased;
                _ = self.shutdown.changed() => break,
                Some(done) = self.inflight.next(), if !self.inflight.is_empty() => {
                    self.complete(done).await;
                }
                command = self.commands.recv(), if room => {
                    let Some(command) = command else { break };
                    self.take(command);
                }
                Some((feed, item)) = watches.next(), if !watches.is_empty() => {
                    match item {
                        Ok(event) => {
                            let affected = match event.kind {
                                StoreEventKind::Put => self.feed_put(feed, &event.kv.key, &event.kv.value, event.kv.mod_revision),
                                StoreEventKind::Delete => self.feed_delete(feed, &event.kv.key, event.kv.mod_revision),
                            };
                            if !affected.is_empty() {
                                self.held.push_back(Queued::new(Pending::Reevaluate(affected)));
                            }
                        }
                        Err(error) => {
                            tracing::warn!(?feed, %error, "watch broke; re-listing");
                            self.resync(feed, &mut watches).await;
                        }
                    }
                }
                _ = sleep => {
                    // Deadlines up to now are handled by this tick.
                    self.last_tick_ns = self.clock.now_ns();
                    self.held.push_back(Queued::new(Pending::Tick));
                }
            }
        }
        // The commits in flight finish, so their callers get their answers.
        while let Some(done) = self.inflight.next().await {
            self.complete(done).await;
        }
        tracing::info!("engine owner stopped");
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

    /// Answers a query at once (from committed states), or queues an
    /// input; returns whether it queued one.
    fn accept(&mut self, command: Command) -> bool {
        match command {
            Command::Change(request, caller) => {
                self.held
                    .push_back(Queued::new(Pending::Change(request, caller)));
                return true;
            }
            Command::Report(report, caller) => {
                self.held
                    .push_back(Queued::new(Pending::Report(report, caller)));
                return true;
            }
            Command::Get(kind, name, reply) => {
                let _ = reply.send(self.view(kind, &name));
            }
            Command::List(kind, state, limit, reply) => {
                let _ = reply.send(self.list(kind, state.as_deref(), limit));
            }
            Command::PackageState(package, reply) => {
                let state = self
                    .committed_state(ResourceKind::Package, &package)
                    .0
                    .map(|s| s.as_str().to_owned());
                let _ = reply.send(state);
            }
        }
        false
    }

    fn view(&self, kind: ResourceKind, name: &str) -> Option<ResourceView> {
        let topology = self.snapshot.topology();
        let (committed, revision) = self.committed_state(kind, name);
        let (state, generation) = match committed {
            Some(state) => (state.as_str().to_owned(), revision),
            None => {
                // WIRE-PROTOCOL: defaults for never-seen but known resources.
                let default = match kind {
                    ResourceKind::Scenario => Some("Idle"),
                    ResourceKind::Package => topology.package(name).map(|_| "Idle"),
                    ResourceKind::Model => topology.is_model_referenced(name).then_some("Created"),
                    ResourceKind::Container => None,
                };
                (default?.to_owned(), 0)
            }
        };
        let mut metadata = BTreeMap::new();
        match kind {
            ResourceKind::Scenario => {
                if let Some(target) = topology.scenario(name).and_then(|d| d.target.as_ref()) {
                    metadata.insert("target".to_owned(), target.to_string());
                }
            }
            ResourceKind::Package => {
                if let Some(scenario) = topology.scenario_of(name) {
                    metadata.insert("scenario".to_owned(), scenario.clone());
                }
                let models: Vec<&str> = topology.models_of(name).map(|m| m.as_str()).collect();
                if !models.is_empty() {
                    metadata.insert("models".to_owned(), models.join(","));
                }
            }
            ResourceKind::Model => {
                let packages: Vec<&str> = topology.packages_of(name).map(String::as_str).collect();
                if !packages.is_empty() {
                    metadata.insert("packages".to_owned(), packages.join(","));
                }
            }
            ResourceKind::Container => {}
        }
        Some(ResourceView {
            kind,
            name: name.to_owned(),
            state,
            last_transition_ns: self.last_change.get(&(kind, name.to_owned())).copied(),
            generation: generation.max(0),
            metadata,
        })
    }

    fn list(
        &self,
        kind: ResourceKind,
        state: Option<&str>,
        limit: usize,
    ) -> (Vec<ResourceView>, usize) {
        let wanted = state.and_then(|s| AnyState::parse(kind, s).ok());
        if state.is_some() && wanted.is_none() {
            return (Vec::new(), 0);
        }
        let mut names: Vec<String> = self
            .snapshot
            .states(kind)
            .into_iter()
            .map(|(name, _)| name.to_owned())
            .collect();
        // Defined resources without a key have their default state.
        let topology = self.snapshot.topology();
        match kind {
            ResourceKind::Scenario => {
                names.extend(topology.scenarios().map(|d| d.name.to_string()))
            }
            ResourceKind::Package => names.extend(topology.packages().map(|d| d.name.to_string())),
            ResourceKind::Model => names.extend(topology.models().map(|d| d.name.to_string())),
            ResourceKind::Container => {}
        }
        names.sort_unstable();
        names.dedup();
        let mut views: Vec<ResourceView> = names
            .iter()
            .filter_map(|name| self.view(kind, name))
            .filter(|v| wanted.is_none_or(|w| w.as_str() == v.state))
            .collect();
        let total = views.len();
        if limit > 0 {
            views.truncate(limit);
        }
        (views, total)
    }

    fn next_id(&mut self, now: i64) -> String {
        self.ids += 1;
        format!("sm-{now}-{}", self.ids)
    }

    fn forget(&mut self, feed: Feed, key: &str) {
        match feed {
            Feed::States(_) => {
                if let Some((kind, name)) = parse_state_key(key) {
                    self.snapshot.remove_state(kind, name);
                }
            }
            Feed::Nodes => {
                if let Some(node) = key.strip_prefix(&self.keys.nodes_prefix()) {
                    let node = node.to_owned();
                    self.snapshot.remove_node(&node);
                }
            }
            Feed::Definitions(_) => {}
        }
    }

    fn node_unit(&self, node: &NodeChange, target: Target) -> Unit {
        let key = self.keys.node_key(&node.node);
        let guard = (!is_pending(node.old_revision)).then(|| (key.clone(), node.old_revision));
        let op = match &node.new {
            Some(record) => state_store::Op::Put {
                key,
                value: record.encode(),
            },
            None => state_store::Op::Delete { key },
        };
        Unit { guard, op, target }
    }

    /// Answers the committed inputs, publishes events, hands reconcile
    /// requests to the outbox worker.
    fn finish(&mut self, planned: Vec<Planned>, now: i64, revision: i64) {
        let derived = self.config.core.derived_source.clone();
        let mut event_index = 0;
        // Nobody listening: no events to build.
        let publish = self.events.receiver_count() > 0;
        for Planned {
            input,
            plan: p,
            transition_id,
            ..
        } in planned
        {
            if let Err(rejection) = p.outcome {
                inc(&self.metrics.rejected);
                let transition_id = match &input {
                    Pending::Change(request, _) => request.transition_id.clone(),
                    _ => String::new(),
                };
                input.answer(
                    rejection.code,
                    rejection.message,
                    rejection.details,
                    &transition_id,
                    now,
                );
                continue;
            }
            if let Some((node, at)) = &p.seen {
                self.metrics.node_seen(node, *at);
            }
            let source = input.source(&derived).to_owned();
            for change in &p.changes {
                inc(&self.metrics.transitions[change.kind as usize]);
                if change.kind == ResourceKind::Container {
                    continue;
                }
                self.last_change
                    .insert((change.kind, change.name.clone()), now);
                event_index += 1;
                if !publish {
                    continue;
                }
                let _ = self.events.send(Arc::new(transition_event(
                    change,
                    format!("{revision}-{event_index}"),
                    now,
                    &source,
                    &transition_id,
                )));
            }
            for effect in &p.effects {
                match effect {
                    Effect::Reconcile(record) => {
                        let item = OutboxItem {
                            key: self.keys.outbox_key(&record.id()),
                            record: record.clone(),
                        };
                        if self.outbox.send(item).is_err() {
                            tracing::warn!("outbox worker stopped; the record stays in the store");
                        }
                    }
                    Effect::NoScenarioForPackage { package, state } => {
                        inc(&self.metrics.no_scenario);
                        tracing::warn!(%package, %state, "package entered a reconcile state but no scenario targets it");
                        event_index += 1;
                        let mut event = warning(
                            format!("{revision}-{event_index}"),
                            now,
                            ResourceKind::Package,
                            package,
                        );
                        event.description = format!(
                            "package '{package}' entered {state} but no scenario targets it: no reconcile"
                        );
                        let _ = self.events.send(Arc::new(event));
                    }
                    Effect::UndocumentedEdge {
                        kind,
                        name,
                        from,
                        to,
                    } => {
                        inc(&self.metrics.undocumented_edges);
                        tracing::info!(%kind, %name, %from, %to, "undocumented edge applied");
                    }
                    Effect::UnmappedContainer { node, container } => {
                        inc(&self.metrics.unmapped_containers);
                        tracing::debug!(%node, %container, "container maps to no model; ignored");
                    }
                    Effect::InvalidModelName {
                        node,
                        container,
                        source,
                        key,
                        value,
                    } => {
                        inc(&self.metrics.invalid_model_names);
                        // Bounded: beyond this many containers warned about,
                        // start over (some warnings repeat, memory does not grow).
                        const MAX_WARNED: usize = 1024;
                        let warned = (node.clone(), container.clone());
                        if self.warned_model_names.contains(&warned) {
                            continue;
                        }
                        if self.warned_model_names.len() >= MAX_WARNED {
                            self.warned_model_names.clear();
                        }
                        self.warned_model_names.insert(warned);
                        let reason = statemachine_core::name::validate(value)
                            .err()
                            .map(|e| e.to_string())
                            .unwrap_or_default();
                        let shown: String = value.chars().take(64).collect();
                        tracing::warn!(
                            %node,
                            %container,
                            %source,
                            key = %key.escape_debug(),
                            value = %shown.escape_debug(),
                            %reason,
                            "the model name is not a valid resource name; skipped for the next mapping source (warned once per container)"
                        );
                    }
                }
            }
            // A container whose model name is valid again, or that is no
            // longer reported, is forgotten: it is warned about anew.
            if let Pending::Report(report, _) = &input
                && !self.warned_model_names.is_empty()
            {
                self.warned_model_names.retain(|(node, container)| {
                    *node != report.node
                        || p.effects.iter().any(|e| {
                            matches!(e, Effect::InvalidModelName { container: c, .. } if c == container)
                        })
                });
            }
            let message = p.outcome.clone().unwrap_or_default();
            input.answer(
                ErrorCode::Success,
                message,
                String::new(),
                &transition_id,
                now,
            );
        }
    }
}

/// Where a new history starts: at the time in microseconds, so that it
/// sorts after any history an earlier life of the resource left behind (a
/// resource cannot have had a transition per microsecond).
fn new_history(now_ns: i64) -> HistoryMeta {
    let start = u64::try_from(now_ns / 1_000).unwrap_or(0).max(1);
    HistoryMeta {
        first: start,
        next: start,
    }
}

/// The containers a command's node report holds (0 for anything else).
fn containers_of(command: &Command) -> usize {
    match command {
        Command::Report(report, _) => report.containers.len(),
        _ => 0,
    }
}

fn state_unit(change: &Change, target: Target) -> Unit {
    let key = state_key(change.kind, &change.name);
    let guard = (!is_pending(change.old_revision)).then(|| (key.clone(), change.old_revision));
    let op = match change.new {
        Some(state) => state_store::Op::Put {
            key,
            value: state.as_str().as_bytes().to_vec(),
        },
        None => state_store::Op::Delete { key },
    };
    Unit { guard, op, target }
}

fn severity_of(state: Option<AnyState>) -> Severity {
    use statemachine_core::{ModelState, PackageState, ScenarioState};
    match state {
        Some(AnyState::Package(PackageState::Error)) | Some(AnyState::Model(ModelState::Dead)) => {
            Severity::Error
        }
        Some(AnyState::Package(PackageState::Degraded))
        | Some(AnyState::Scenario(ScenarioState::Denied)) => Severity::Warning,
        _ => Severity::Info,
    }
}

/// The state a change leaves: the recorded one, or the kind's initial state
/// when there was no record (a new scenario leaves Idle).
fn left_state(change: &Change) -> Option<AnyState> {
    change.old.or_else(|| AnyState::initial(change.kind))
}

fn transition_event(
    change: &Change,
    id: String,
    now: i64,
    source: &str,
    transition_id: &str,
) -> Event {
    let from = left_state(change).map(|s| s.as_str().to_owned());
    let to = change.new.map(|s| s.as_str().to_owned());
    let description = format!(
        "{} '{}' {} -> {} ({})",
        change.kind,
        change.name,
        from.as_deref().unwrap_or("-"),
        to.as_deref().unwrap_or("-"),
        change.reason.as_str()
    );
    let mut metadata = BTreeMap::new();
    metadata.insert("reason".to_owned(), change.reason.as_str().to_owned());
    Event {
        id,
        kind: EventKind::StateChange,
        severity: severity_of(change.new),
        resource_kind: change.kind,
        resource_name: change.name.clone(),
        from,
        to,
        at_ns: now,
        source: source.to_owned(),
        transition_id: transition_id.to_owned(),
        description,
        metadata,
    }
}

pub(crate) fn warning(id: String, now: i64, kind: ResourceKind, name: &str) -> Event {
    Event {
        id,
        kind: EventKind::Warning,
        severity: Severity::Warning,
        resource_kind: kind,
        resource_name: name.to_owned(),
        from: None,
        to: None,
        at_ns: now,
        source: "StateManager".to_owned(),
        transition_id: String::new(),
        description: String::new(),
        metadata: BTreeMap::new(),
    }
}
