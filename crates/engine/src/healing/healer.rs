//! The healer task: it follows committed transitions (from the owner) and
//! deliveries (from the outbox worker), opens incidents, walks their
//! ladders ([`super::ladder`]), keeps the tracker and the alerts, and
//! answers the recovery and alert calls. It writes only its own records
//! (`{prefix}recovery/`, `{prefix}alerts/`) and outbox records of steps, so
//! it never blocks the owner.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use state_store::StateStore;
use statemachine_core::alert::{Alert, AlertBook};
use statemachine_core::healing::tracker::Transition;
use statemachine_core::healing::{
    Classification, History, Incident, IssueType, StateDiff, Trigger, classify, is_healthy,
};
use statemachine_core::keys::Bookkeeping;
use statemachine_core::record::OutboxRecord;
use statemachine_core::{AnyState, ResourceKind};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::records::Unsaved;
use super::{
    AlertPage, AlertQuery, DiffAnswer, HealingConfig, HealthView, IncidentRef, RecoveryAnswer,
    RecoveryView, TriggerRequest,
};
use crate::api::{Command, EngineError};
use crate::events::Event;
use crate::metrics::Metrics;
use crate::outbox::OutboxItem;
use crate::ports::{Clock, ns_to_duration};

/// A resource: its kind and name.
pub(crate) type Res = (ResourceKind, String);

/// Where an answer goes.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

/// How long a failed write waits before it is tried again (ns).
pub(super) const RETRY_NS: i64 = 1_000_000_000;

/// How often open alerts are checked for expiry (ns).
const EXPIRY_CHECK_NS: i64 = 60_000_000_000;

/// The recovery and alert calls, from the handle.
pub(crate) enum HealerCommand {
    Trigger(TriggerRequest, Reply<RecoveryAnswer>),
    Abort(IncidentRef, String, Reply<RecoveryAnswer>),
    Status(IncidentRef, Reply<RecoveryView>),
    PendingAlerts(AlertQuery, Reply<AlertPage>),
    Acknowledge {
        id: String,
        by: String,
        message: String,
        tx: Reply<Alert>,
    },
    Health(ResourceKind, String, Reply<HealthView>),
    Diff(StateDiff, Reply<DiffAnswer>),
}

/// News for the healer from the owner and the outbox worker.
pub(crate) enum HealerFeed {
    /// A commit: its package and model transitions, and the incidents its
    /// transactions opened or joined.
    Committed(Committed),
    /// The outbox worker delivered a step's call (and deleted its record).
    Delivered(OutboxRecord),
}

/// What one commit means to the healer.
#[derive(Debug, Default)]
pub(crate) struct Committed {
    /// The commit's time (ns).
    pub(crate) at_ns: i64,
    /// Package and model transitions, in commit order.
    pub(crate) changes: Vec<Observed>,
    /// Incidents opened in the commit's transactions, with the number of
    /// calls their first step made.
    pub(crate) opened: Vec<(Incident, usize)>,
    /// Incidents that an entry into Error joined.
    pub(crate) joined: Vec<String>,
}

/// One committed transition of a package or model.
#[derive(Debug, Clone)]
pub(crate) struct Observed {
    pub(crate) kind: ResourceKind,
    pub(crate) name: String,
    pub(crate) from: Option<AnyState>,
    pub(crate) to: Option<AnyState>,
    /// Entered because its node fell silent (`node_timeout`).
    pub(crate) by_node_timeout: bool,
}

/// The healer's news for the owner, which opens PackageError incidents in
/// the transaction that enters Error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RecoveryNote {
    /// The package has an open incident: an entry into Error joins it.
    Open { package: String, id: String },
    /// Its incident ended; `hold`: no automatic recovery (no Reconcile on
    /// entering Error) until the healer releases it.
    Ended {
        package: String,
        id: String,
        hold: bool,
    },
    /// Automatic recovery is allowed again (healthy again, or an operator).
    Released { package: String },
}

/// What a recovery action needs to know of a resource, from the owner's cache.
#[derive(Debug, Clone, Default)]
pub(crate) struct ActionContext {
    /// Whether the resource is defined or has a state.
    pub(crate) known: bool,
    /// Its committed state.
    pub(crate) state: Option<AnyState>,
    /// For a package, itself; for a model, the first package that holds it.
    pub(crate) package: Option<String>,
    /// The scenarios that target the package.
    pub(crate) scenarios: Vec<String>,
    /// The package's (or the model's own) Dead models, with the node each ran on.
    pub(crate) dead_models: Vec<(String, String)>,
    /// Nodes that reported within `live_node_within`, by name.
    pub(crate) live_nodes: Vec<String>,
    /// The package definition's annotations (an ASIL level raises a Diff plan's priority).
    pub(crate) annotations: std::collections::BTreeMap<String, String>,
    /// The states of a package's models (for the service phase).
    pub(crate) model_states: Vec<AnyState>,
    /// Whether any of its models was ever reported by a node.
    pub(crate) reported: bool,
}

/// Why a resource gets no automatic recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hold {
    /// Its incident failed; lifted when it is healthy again.
    Failed,
    /// An Isolate rung ran; lifted only by `TriggerRecovery`.
    Isolated,
}

/// The healer's channels.
pub(crate) struct HealerIo {
    pub(crate) commands: mpsc::Receiver<HealerCommand>,
    pub(crate) feed: mpsc::UnboundedReceiver<HealerFeed>,
    pub(crate) owner: mpsc::Sender<Command>,
    pub(crate) outbox: mpsc::UnboundedSender<OutboxItem>,
    pub(crate) events: broadcast::Sender<Arc<Event>>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// The healer task's state.
pub(crate) struct Healer {
    pub(super) store: Arc<dyn StateStore>,
    pub(super) keys: Bookkeeping,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) config: HealingConfig,
    pub(super) metrics: Arc<Metrics>,
    pub(super) store_timeout: Duration,
    pub(super) owner: mpsc::Sender<Command>,
    pub(super) outbox: mpsc::UnboundedSender<OutboxItem>,
    pub(super) events: broadcast::Sender<Arc<Event>>,
    /// Whether an entry into a package state asks for a reconcile.
    pub(super) reconcile_on_error: bool,
    /// Every incident in memory: the open ones and the kept ended ones.
    pub(super) incidents: HashMap<String, Incident>,
    /// The open incident of each resource.
    pub(super) open: HashMap<Res, String>,
    /// The latest ended incident of each resource.
    pub(super) latest: HashMap<Res, String>,
    /// Calls of an incident's step not delivered yet: (incident, step) → count.
    pub(super) outstanding: HashMap<(String, u32), usize>,
    /// Committed states of packages and models.
    pub(super) states: HashMap<Res, AnyState>,
    /// Each package's and model's recent transitions.
    pub(super) trackers: HashMap<Res, History>,
    /// Resources with no automatic recovery.
    pub(super) held: HashMap<Res, Hold>,
    /// Classifications due later (PackageDegraded, ModelDead): the issue and when.
    pub(super) pending: HashMap<Res, (IssueType, i64)>,
    /// The alerts.
    pub(super) alerts: AlertBook,
    /// Records changed in memory whose write is still due.
    pub(super) unsaved: BTreeSet<Unsaved>,
    /// When to try writing `unsaved` again.
    pub(super) flush_retry: Option<i64>,
    /// An incident whose action could not be written: when to try again.
    pub(super) act_retry: HashMap<String, i64>,
    pub(super) next_expiry_check: i64,
    /// When the gauges are recomputed next.
    pub(super) gauges_due: i64,
    pub(super) event_ids: u64,
}

impl Healer {
    /// A healer starting from the package and model states the owner
    /// loaded (later ones arrive as commits).
    pub(crate) fn new(
        store: Arc<dyn StateStore>,
        clock: Arc<dyn Clock>,
        config: &crate::EngineConfig,
        metrics: Arc<Metrics>,
        io: &HealerIo,
        states: Vec<(Res, AnyState)>,
    ) -> Self {
        Self {
            store,
            keys: Bookkeeping::new(&config.bookkeeping_prefix),
            clock,
            config: {
                // The switches the core configuration implies hold whatever
                // the caller built (`reconcile_on`, `node_timeout`).
                let mut healing = config.healing.clone();
                let implied = statemachine_core::healing::IssueRules::from_config(
                    &config.core,
                    healing.issues.model_dead,
                );
                healing.issues.degraded |= implied.degraded;
                healing.issues.node_silent |= implied.node_silent;
                healing
            },
            metrics,
            store_timeout: config.commit_timeout,
            owner: io.owner.clone(),
            outbox: io.outbox.clone(),
            events: io.events.clone(),
            reconcile_on_error: config
                .core
                .reconcile_on
                .contains(&statemachine_core::PackageState::Error),
            incidents: HashMap::new(),
            open: HashMap::new(),
            latest: HashMap::new(),
            outstanding: HashMap::new(),
            states: states.into_iter().collect(),
            trackers: HashMap::new(),
            held: HashMap::new(),
            pending: HashMap::new(),
            alerts: AlertBook::default(),
            unsaved: BTreeSet::new(),
            flush_retry: None,
            act_retry: HashMap::new(),
            next_expiry_check: 0,
            gauges_due: 0,
            event_ids: 0,
        }
    }

    /// The healer loop: start-up, then one arm per source and a timer for
    /// the earliest due incident, classification, expiry or retry.
    pub(crate) async fn run(mut self, mut io: HealerIo) {
        tokio::select! {
            biased;
            _ = io.shutdown.changed() => return,
            _ = self.start() => {}
        }
        loop {
            self.publish_gauges();
            let due = self.next_due();
            let sleep = async {
                match due {
                    Some(at) => {
                        let wait = ns_to_duration(at.saturating_sub(self.clock.now_ns()));
                        tokio::time::sleep(wait).await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = io.shutdown.changed() => break,
                Some(feed) = io.feed.recv() => self.on_feed(feed).await,
                Some(command) = io.commands.recv() => self.on_command(command).await,
                _ = sleep => self.on_time().await,
            }
            // Whatever changed in memory is written now (or retried later).
            if self.flush_retry.is_none() {
                self.flush().await;
            }
        }
        self.flush().await;
        tracing::info!(
            open = self.open.len(),
            "healer stopped; open incidents resume after a restart"
        );
    }

    /// Reads what the store holds for the healer. Called before the owner
    /// runs, so the incidents read and the states the owner loaded agree.
    pub(crate) async fn load(&mut self) -> Result<(), state_store::StoreError> {
        let loaded = self.read_all().await?;
        self.alerts = AlertBook::new(loaded.alerts);
        self.trackers = loaded.histories;
        for record in &loaded.calls {
            if let Some(call) = &record.step {
                *self
                    .outstanding
                    .entry((call.incident.clone(), call.step))
                    .or_default() += 1;
            }
        }
        let mut incidents = loaded.incidents;
        incidents.sort_by(|a, b| a.id.cmp(&b.id));
        for incident in incidents {
            let res = (incident.kind, incident.name.clone());
            if incident.phase.is_terminal() {
                self.latest.insert(res.clone(), incident.id.clone());
                self.held.remove(&res);
                if incident.isolated() {
                    self.held.insert(res, Hold::Isolated);
                } else if incident.phase == statemachine_core::healing::Phase::Failed
                    && !self.healthy(&res)
                {
                    self.held.insert(res, Hold::Failed);
                }
            } else {
                self.held.remove(&res);
                self.open.insert(res, incident.id.clone());
            }
            self.incidents.insert(incident.id.clone(), incident);
        }
        Ok(())
    }

    /// Tells the owner which packages have an open incident or are held,
    /// resumes the open incidents, opens those a crash lost.
    async fn start(&mut self) {
        self.next_expiry_check = self.clock.now_ns();
        for (res, id) in self.open.clone() {
            if res.0 == ResourceKind::Package {
                self.note(RecoveryNote::Open {
                    package: res.1.clone(),
                    id: id.clone(),
                })
                .await;
            }
            // A step whose calls all left the outbox was delivered before
            // the restart: it is not taken again.
            let delivered = self.incidents.get(&id).and_then(|i| {
                let last = i.steps.len().checked_sub(1)?;
                let pending =
                    i.steps[last].outcome == statemachine_core::healing::ladder::Outcome::Pending;
                let step = u32::try_from(last).ok()?;
                (pending && !self.outstanding.contains_key(&(id.clone(), step))).then_some(step)
            });
            if let Some(step) = delivered {
                self.step_delivered(&id, step).await;
            }
        }
        for res in self.held.keys().cloned().collect::<Vec<_>>() {
            if res.0 == ResourceKind::Package {
                self.note(RecoveryNote::Ended {
                    package: res.1.clone(),
                    id: String::new(),
                    hold: true,
                })
                .await;
            }
        }
        // States that should have an incident and have none (a crash
        // between a commit and the healer's write, or an entry the owner
        // saw as held while the healer released it).
        let now = self.clock.now_ns();
        for (res, state) in self.states.clone() {
            if !self.open.contains_key(&res) && !self.held.contains_key(&res) {
                let entered = self.entered(&res).unwrap_or(now);
                self.classify_and_open(&res, state, entered, false, now)
                    .await;
            }
        }
        for id in self.open.values().cloned().collect::<Vec<_>>() {
            self.drive(&id).await;
        }
        tracing::info!(
            open = self.open.len(),
            alerts = self.alerts.pending(&Default::default()).len(),
            "healer started"
        );
    }

    /// The earliest time something is due.
    fn next_due(&self) -> Option<i64> {
        let incidents = self.open.values().filter_map(|id| {
            let incident = self.incidents.get(id)?;
            let due = incident.due_ns?;
            let quiet = self
                .trackers
                .get(&(incident.kind, incident.name.clone()))
                .and_then(|h| h.quiet_until(&self.config.tracker, self.clock.now_ns()));
            Some(quiet.map_or(due, |q| due.max(q)))
        });
        incidents
            .chain(self.pending.values().map(|(_, due)| *due))
            .chain(self.act_retry.values().copied())
            .chain(self.flush_retry)
            .chain(std::iter::once(self.next_expiry_check))
            .chain(std::iter::once(self.gauges_due))
            .min()
    }

    async fn on_time(&mut self) {
        let now = self.clock.now_ns();
        if self.flush_retry.is_some_and(|at| at <= now) {
            self.flush().await;
        }
        let due: Vec<Res> = self
            .pending
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(res, _)| res.clone())
            .collect();
        for res in due {
            self.pending.remove(&res);
            if let Some(state) = self.states.get(&res).copied() {
                let entered = self.entered(&res).unwrap_or(now);
                self.classify_and_open(&res, state, entered, false, now)
                    .await;
            }
        }
        self.act_retry.retain(|_, at| *at > now);
        let ids: Vec<String> = self.open.values().cloned().collect();
        for id in ids {
            let due = self
                .incidents
                .get(&id)
                .and_then(|i| i.due_ns)
                .is_some_and(|at| at <= now);
            if due {
                self.drive(&id).await;
            }
        }
        if self.next_expiry_check <= now {
            self.next_expiry_check = now + EXPIRY_CHECK_NS;
            self.expire_alerts(now).await;
        }
    }

    async fn on_feed(&mut self, feed: HealerFeed) {
        match feed {
            HealerFeed::Committed(committed) => self.on_commit(committed).await,
            HealerFeed::Delivered(record) => {
                let Some(call) = record.step else { return };
                let key = (call.incident.clone(), call.step);
                let left = match self.outstanding.get_mut(&key) {
                    Some(n) => {
                        *n = n.saturating_sub(1);
                        *n
                    }
                    None => 0,
                };
                if left == 0 {
                    self.outstanding.remove(&key);
                    self.step_delivered(&call.incident, call.step).await;
                }
            }
        }
    }

    /// A commit: incidents it opened or joined, then each transition.
    async fn on_commit(&mut self, committed: Committed) {
        let now = committed.at_ns;
        let mut opened_for: BTreeSet<Res> = BTreeSet::new();
        for (incident, calls) in committed.opened {
            let res = (incident.kind, incident.name.clone());
            let id = incident.id.clone();
            if self.incidents.contains_key(&id) {
                // Read from the store at start-up already.
                continue;
            }
            crate::metrics::inc(&self.metrics.incidents_opened);
            if calls > 0 {
                self.outstanding.insert((id.clone(), 0), calls);
            }
            if let Some(previous) = self.open.insert(res.clone(), id.clone())
                && previous != id
            {
                // The owner opened one while the healer had another open
                // (their news crossed): the older one gives way.
                self.end_superseded(&previous, now).await;
            }
            self.incidents.insert(id, incident);
            opened_for.insert(res);
        }
        for id in committed.joined {
            let open = self
                .incidents
                .get(&id)
                .is_some_and(|i| !i.phase.is_terminal());
            if let Some(incident) = self.incidents.get_mut(&id)
                && open
            {
                incident.join();
                self.unsaved.insert(Unsaved::Incident(id.clone()));
                let res = (incident.kind, incident.name.clone());
                opened_for.insert(res);
            }
        }
        for change in committed.changes {
            let res = (change.kind, change.name.clone());
            let Some(to) = change.to else {
                self.states.remove(&res);
                self.trackers.remove(&res);
                self.pending.remove(&res);
                if let Some(id) = self.open.get(&res).cloned() {
                    self.abort(&id, "the resource was removed", now).await;
                }
                continue;
            };
            self.states.insert(res.clone(), to);
            if let Some(from) = change.from {
                let history = self
                    .trackers
                    .entry(res.clone())
                    .or_insert_with(|| History::new(self.config.tracker.capacity));
                // Read from the history at start-up already.
                let known = history
                    .transitions()
                    .last()
                    .is_some_and(|t| t.at_ns == now && t.to == to);
                if !known {
                    history.record(Transition {
                        at_ns: now,
                        from,
                        to,
                    });
                }
            }
            if is_healthy(to) {
                self.pending.remove(&res);
                self.healthy_again(&res, now).await;
            } else if !self.open.contains_key(&res)
                && !self.held.contains_key(&res)
                && !opened_for.contains(&res)
            {
                self.classify_and_open(&res, to, now, change.by_node_timeout, now)
                    .await;
            }
            self.check_flapping(&res, now).await;
            if let Some(id) = self.open.get(&res).cloned() {
                self.drive(&id).await;
            }
        }
        self.flush().await;
    }

    /// When the resource entered its current state, from the tracker.
    pub(super) fn entered(&self, res: &Res) -> Option<i64> {
        self.trackers
            .get(res)
            .and_then(|h| h.transitions().last().map(|t| t.at_ns))
    }

    /// Whether the resource's committed state is healthy.
    pub(super) fn healthy(&self, res: &Res) -> bool {
        self.states.get(res).is_some_and(|s| is_healthy(*s))
    }

    /// Classifies a state and opens the incident it calls for, now or later.
    pub(super) async fn classify_and_open(
        &mut self,
        res: &Res,
        state: AnyState,
        entered_ns: i64,
        by_node_timeout: bool,
        now: i64,
    ) {
        let package_incident_open = match res.0 {
            ResourceKind::Model if self.config.issues.model_dead => match self.context(res).await {
                Ok(ctx) => ctx
                    .package
                    .is_some_and(|p| self.open.contains_key(&(ResourceKind::Package, p))),
                Err(_) => false,
            },
            _ => false,
        };
        let trigger = Trigger {
            state,
            entered_ns,
            by_node_timeout,
            package_incident_open,
        };
        match classify(&trigger, &self.config.issues, now) {
            // Opened by the owner in the transaction that entered Error;
            // opened here only when that did not happen (see `start`).
            Classification::Open(IssueType::PackageError) => {
                if self.reconcile_on_error {
                    self.open_incident(
                        res,
                        IssueType::PackageError,
                        Vec::new(),
                        String::new(),
                        now,
                    )
                    .await;
                }
            }
            Classification::Open(issue) => {
                self.open_incident(res, issue, Vec::new(), String::new(), now)
                    .await;
            }
            Classification::At(issue, due) => {
                self.pending.insert(res.clone(), (issue, due));
            }
            Classification::None => {
                self.pending.remove(res);
            }
        }
    }

    /// Sends a note to the owner (bounded wait: the owner answers commands
    /// between commits).
    pub(super) async fn note(&self, note: RecoveryNote) {
        let sent =
            tokio::time::timeout(self.store_timeout, self.owner.send(Command::Recovery(note)))
                .await;
        if !matches!(sent, Ok(Ok(()))) {
            tracing::warn!("could not tell the owner about an incident");
        }
    }

    /// Asks the owner what an action needs to know of a resource.
    pub(super) async fn context(&self, res: &Res) -> Result<ActionContext, EngineError> {
        let (tx, rx) = oneshot::channel();
        let asked = async {
            self.owner
                .send(Command::Context(res.0, res.1.clone(), tx))
                .await
                .map_err(|_| EngineError::Stopped)?;
            rx.await.map_err(|_| EngineError::Stopped)
        };
        tokio::time::timeout(self.store_timeout, asked)
            .await
            .map_err(|_| EngineError::Timeout(self.store_timeout))?
    }
}
