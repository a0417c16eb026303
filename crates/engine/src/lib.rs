//! The StateManager service, on any [`state_store::StateStore`].
//!
//! One owner task holds the cache (a `statemachine_core::Snapshot`) and
//! processes inputs: it plans each with the pure core, commits the plans'
//! writes with their history entries and outbox records in guarded
//! transactions — inputs that arrive while a commit is in flight are
//! committed together in the next one (group commit) — and answers each
//! caller only after its commit. An outbox worker delivers reconcile
//! requests to the ActionController. Events of committed transitions are
//! broadcast to subscribers.
//!
//! ```no_run
//! # async fn demo(action: std::sync::Arc<dyn engine::ActionPort>) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! let store = Arc::new(state_store::MemoryStore::default());
//! let engine = engine::Engine::start(store, action, engine::EngineConfig::default()).await?;
//! let handle = engine.handle();
//! # Ok(()) }
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod api;
mod config;
mod events;
mod healing;
mod metrics;
mod outbox;
mod owner;
mod ports;
mod query;

use std::sync::Arc;
use std::time::Duration;

use state_store::{StateStore, StoreError};
use statemachine_core::keys::Bookkeeping;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

pub use api::{ChangeAnswer, EngineError, EngineHandle, HistoryQuery, ReportAnswer, ResourceView};
pub use config::EngineConfig;
pub use events::{Delivery, Event, EventFilter, EventKind, Severity, Subscription};
pub use healing::{
    AlertPage, AlertQuery, DiffAnswer, HealingConfig, HealthCheck, HealthView, IncidentRef,
    RecoveryAnswer, RecoveryView, SyncAnswer, TriggerRequest,
};
pub use metrics::{BATCH_SIZE_BUCKETS, Histogram, LATENCY_BUCKETS_US, Metrics};
pub use ports::{
    ActionError, ActionPort, Clock, OffloadAnswer, OffloadRequest, ReconcileRequest, SystemClock,
    wall_clock_ns,
};
#[cfg(any(test, feature = "mock"))]
pub use ports::{MockActionPort, MockClock};
pub use query::DEFAULT_HISTORY_LIMIT;

/// A running engine: its handle and its tasks.
pub struct Engine {
    handle: EngineHandle,
    metrics: Arc<Metrics>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Engine {
    /// Starts an engine with the system clock: loads the cache from the
    /// store, starts the watches, redelivers pending outbox records.
    pub async fn start(
        store: Arc<dyn StateStore>,
        action: Arc<dyn ActionPort>,
        config: EngineConfig,
    ) -> Result<Engine, StoreError> {
        Self::start_with_clock(store, action, Arc::new(SystemClock::default()), config).await
    }

    /// Starts an engine with the given clock.
    pub async fn start_with_clock(
        store: Arc<dyn StateStore>,
        action: Arc<dyn ActionPort>,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
    ) -> Result<Engine, StoreError> {
        let metrics = Arc::new(Metrics::default());
        Self::start_counting(store, action, clock, config, metrics).await
    }

    /// [`Engine::start`] counting into `metrics`, which outlive it: an HA
    /// member's engines come and go with its role, its counters stay.
    pub async fn start_with_metrics(
        store: Arc<dyn StateStore>,
        action: Arc<dyn ActionPort>,
        config: EngineConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Engine, StoreError> {
        let clock = Arc::new(SystemClock::default());
        Self::start_counting(store, action, clock, config, metrics).await
    }

    async fn start_counting(
        store: Arc<dyn StateStore>,
        action: Arc<dyn ActionPort>,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Engine, StoreError> {
        let (handle, wires) = wire(&store, action.clone(), &config, &metrics);
        let (events_tx, outbox_tx, healer_tx) = (wires.events_tx, wires.outbox_tx, wires.healer_tx);
        let (shutdown_tx, shutdown_rx) = (wires.shutdown_tx, wires.shutdown_rx);
        let keys = Bookkeeping::new(&config.bookkeeping_prefix);
        let io = owner::OwnerIo {
            commands: wires.commands_rx,
            events: events_tx.clone(),
            outbox: outbox_tx.clone(),
            healer: healer_tx.clone(),
            shutdown: shutdown_rx.clone(),
        };
        let mut owner = owner::Owner::new(
            store.clone(),
            clock.clone(),
            config.clone(),
            metrics.clone(),
            io,
        );
        let (pending, watches) = owner.load().await?;
        let healer_io = healing::healer::HealerIo {
            commands: wires.healer_commands_rx,
            feed: wires.healer_rx,
            owner: handle.commands.clone(),
            outbox: outbox_tx,
            events: events_tx.clone(),
            shutdown: shutdown_rx.clone(),
        };
        let mut healer = healing::healer::Healer::new(
            store.clone(),
            clock.clone(),
            &config,
            metrics.clone(),
            &healer_io,
            owner.recovered_states(),
        );
        healer.load().await?;
        let worker = outbox::OutboxWorker {
            store,
            keys,
            action,
            healer: healer_tx,
            events: events_tx,
            metrics: metrics.clone(),
            clock,
            policy: config.recovery.clone(),
            store_timeout: config.commit_timeout,
            incoming: wires.outbox_rx,
            shutdown: shutdown_rx,
        };
        let tasks = vec![
            tokio::spawn(owner.run(watches)),
            tokio::spawn(worker.run(pending)),
            tokio::spawn(healer.run(healer_io)),
        ];
        Ok(Engine {
            handle,
            metrics,
            shutdown: shutdown_tx,
            tasks,
        })
    }

    /// Starts a follower of an HA group: it loads the cache from the store
    /// and keeps it in line with the store's watches (the leader's writes),
    /// answers queries from it, and writes nothing: inputs are answered
    /// RESOURCE_UNAVAILABLE, the outbox and recovery are left to the leader.
    /// To take over, shut it down and [`Engine::start`] a leader.
    pub async fn start_follower(
        store: Arc<dyn StateStore>,
        action: Arc<dyn ActionPort>,
        config: EngineConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Engine, StoreError> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::default());
        // The outbox's and the healer's ends are dropped with `wires`: a
        // follower delivers nothing and heals nothing.
        let (mut handle, wires) = wire(&store, action, &config, &metrics);
        handle.follower = true;
        let io = owner::OwnerIo {
            commands: wires.commands_rx,
            events: wires.events_tx,
            outbox: wires.outbox_tx,
            healer: wires.healer_tx,
            shutdown: wires.shutdown_rx,
        };
        let shutdown_tx = wires.shutdown_tx;
        let mut owner = owner::Owner::new(store, clock, config, metrics.clone(), io).into_passive();
        let (_, watches) = owner.load().await?;
        Ok(Engine {
            handle,
            metrics,
            shutdown: shutdown_tx,
            tasks: vec![tokio::spawn(owner.run(watches))],
        })
    }

    /// A handle for callers (cheap to clone).
    pub fn handle(&self) -> EngineHandle {
        self.handle.clone()
    }

    /// The engine's counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Stops the engine: the owner finishes the commit in flight, the outbox
    /// worker leaves pending records in the store; waits for both tasks.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// The channels between an engine's handle and its tasks.
struct Wires {
    commands_rx: mpsc::Receiver<api::Command>,
    events_tx: broadcast::Sender<Arc<Event>>,
    outbox_tx: mpsc::UnboundedSender<outbox::OutboxItem>,
    outbox_rx: mpsc::UnboundedReceiver<outbox::OutboxItem>,
    healer_tx: mpsc::UnboundedSender<healing::healer::HealerFeed>,
    healer_rx: mpsc::UnboundedReceiver<healing::healer::HealerFeed>,
    healer_commands_rx: mpsc::Receiver<healing::healer::HealerCommand>,
    shutdown_tx: watch::Sender<bool>,
    shutdown_rx: watch::Receiver<bool>,
}

/// An engine's handle and the other ends of its channels.
fn wire(
    store: &Arc<dyn StateStore>,
    action: Arc<dyn ActionPort>,
    config: &EngineConfig,
    metrics: &Arc<Metrics>,
) -> (EngineHandle, Wires) {
    let (commands_tx, commands_rx) = mpsc::channel(config.queue_capacity.max(1));
    let (events_tx, _) = broadcast::channel(config.event_buffer.max(1));
    let (outbox_tx, outbox_rx) = mpsc::unbounded_channel();
    let (healer_tx, healer_rx) = mpsc::unbounded_channel();
    let (healer_commands_tx, healer_commands_rx) = mpsc::channel(64);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let handle = EngineHandle {
        commands: commands_tx,
        events: events_tx.clone(),
        history: Arc::new(query::HistoryReader {
            store: store.clone(),
            keys: Bookkeeping::new(&config.bookkeeping_prefix),
            timeout: config.commit_timeout,
        }),
        action,
        healer: healer_commands_tx,
        answer_timeout: answer_deadline(config),
        commit_timeout: config.commit_timeout,
        metrics: metrics.clone(),
        access: config.core.access.clone(),
        follower: false,
    };
    let wires = Wires {
        commands_rx,
        events_tx,
        outbox_tx,
        outbox_rx,
        healer_tx,
        healer_rx,
        healer_commands_rx,
        shutdown_tx,
        shutdown_rx,
    };
    (handle, wires)
}

/// How long a caller waits for an answer: a commit with its guard retries,
/// plus the time queued behind a full batch.
fn answer_deadline(config: &EngineConfig) -> Duration {
    config.commit_timeout * (config.max_guard_retries + 2)
}
