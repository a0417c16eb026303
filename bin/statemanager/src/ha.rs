//! High availability: a member of a group of daemons on one etcd.
//!
//! The member runs a follower engine (a warm cache, no writes) while
//! another leads, and a leader engine on a [`FencedStore`] while it leads;
//! [`Member::run`] switches between them as the election's role changes,
//! and points the gRPC server at the current one and, on a follower, at
//! the leader to forward writes to.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use election::{FencedStore, LeaderElection, Role, Term};
use engine::{ActionPort, Engine, EngineConfig, EngineHandle, Metrics};
use state_store::StateStore;
use tokio::sync::watch;
use tracing::{error, info, warn};
use transport_grpc::ClientTls;
use transport_grpc::forward::LeaderRoute;

/// The first pause before starting an engine again after a failure.
const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// What `/metrics` and `/healthz` show of the member.
pub struct Status {
    /// The group's name.
    pub group: String,
    /// The current role.
    pub roles: watch::Receiver<Role>,
    /// Times this member became leader and served.
    pub takeovers: AtomicU64,
    /// Writes refused because this member's term had ended.
    pub fenced_writes: AtomicU64,
    /// The last takeover: from the election to serving (ms; -1 before one).
    pub last_takeover_ms: AtomicI64,
    /// True while this member's leader engine serves (after it loaded the
    /// state, until it stops).
    pub leading: AtomicBool,
}

impl Status {
    /// The role now.
    pub fn role(&self) -> Role {
        self.roles.borrow().clone()
    }

    /// True while this member leads and its engine serves: elected, and
    /// the state loaded.
    pub fn serves_as_leader(&self) -> bool {
        self.leading.load(Ordering::Relaxed) && self.roles.borrow().is_leader()
    }
}

/// The engine the member runs now.
enum Current {
    Follower(Engine),
    Leader(Engine, Term),
    /// None runs (a start failed, or between two).
    None,
}

/// A member: the election, the engines it switches between, and the
/// channels the gRPC server reads.
pub struct Member {
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) action: Arc<dyn ActionPort>,
    pub(crate) config: EngineConfig,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) election: Arc<dyn LeaderElection>,
    pub(crate) engines: watch::Sender<Arc<EngineHandle>>,
    pub(crate) routes: watch::Sender<Option<LeaderRoute>>,
    pub(crate) status: Arc<Status>,
    /// TLS for forwarding to the leader (the member's own certificate).
    pub(crate) peer_tls: Option<ClientTls>,
    pub(crate) shutdown_timeout: Duration,
}

impl Member {
    /// Follows the election until `stop` turns true; then stops the
    /// engine and resigns (a leader's key goes at once, so another member
    /// takes over without waiting for the lease).
    pub async fn run(self, first: Engine, mut stop: watch::Receiver<bool>) {
        let mut roles = self.status.roles.clone();
        let mut current = Current::Follower(first);
        let mut retry = FIRST_RETRY;
        loop {
            let role = roles.borrow_and_update().clone();
            let settled = self.follow_role(&mut current, role).await;
            let wait = if settled {
                retry = FIRST_RETRY;
                None
            } else {
                let wait = retry;
                retry = (retry * 2).min(MAX_RETRY);
                Some(wait)
            };
            tokio::select! {
                _ = stop.wait_for(|stop| *stop) => break,
                changed = roles.changed() => if changed.is_err() { break },
                _ = sleep(wait) => {}
            }
        }
        self.stop_engine(std::mem::replace(&mut current, Current::None))
            .await;
        self.election.resign().await;
    }

    /// Brings the engine in line with `role`; `false` when that failed and
    /// should be tried again.
    async fn follow_role(&self, current: &mut Current, role: Role) -> bool {
        match role {
            Role::Leader(term) => {
                let _ = self.routes.send(None);
                if matches!(current, Current::Leader(_, held) if *held == term) {
                    return true;
                }
                let elected = Instant::now();
                // A follower keeps answering (queries, and writes with "not
                // the leader") until the leader engine has loaded; an engine
                // of an earlier term stops first.
                let follower = match std::mem::replace(current, Current::None) {
                    Current::Follower(engine) => Some(engine),
                    other => {
                        self.stop_engine(other).await;
                        None
                    }
                };
                let election = self.election.clone();
                let status = self.status.clone();
                let fenced = Arc::new(FencedStore::new(self.store.clone(), &term, move || {
                    status.fenced_writes.fetch_add(1, Ordering::Relaxed);
                    election.fenced();
                }));
                let store: Arc<dyn StateStore> = fenced;
                match Engine::start_with_metrics(
                    store,
                    self.action.clone(),
                    self.config.clone(),
                    self.metrics.clone(),
                )
                .await
                {
                    Ok(engine) => {
                        let _ = self.engines.send(Arc::new(engine.handle()));
                        self.status.leading.store(true, Ordering::Relaxed);
                        let took = elected.elapsed();
                        self.status.takeovers.fetch_add(1, Ordering::Relaxed);
                        self.status.last_takeover_ms.store(
                            i64::try_from(took.as_millis()).unwrap_or(i64::MAX),
                            Ordering::Relaxed,
                        );
                        info!(
                            term = term.revision,
                            ?took,
                            "leading: the engine loaded the state and serves"
                        );
                        *current = Current::Leader(engine, term);
                        if let Some(follower) = follower {
                            self.stop_engine(Current::Follower(follower)).await;
                        }
                        true
                    }
                    Err(error) => {
                        // Step down: another member may manage what this one cannot.
                        error!(%error, "elected, but the engine could not start; stepping down");
                        *current = follower.map_or(Current::None, Current::Follower);
                        self.election.fenced();
                        false
                    }
                }
            }
            Role::Follower(leader) => {
                let route = match transport_grpc::client::lazy_channel(
                    &leader.url,
                    self.peer_tls.as_ref(),
                ) {
                    Ok(channel) => Some(LeaderRoute {
                        url: leader.url.clone(),
                        channel,
                    }),
                    Err(error) => {
                        warn!(%error, url = %leader.url, "cannot forward to the leader's address");
                        None
                    }
                };
                let _ = self.routes.send(route);
                self.ensure_follower(current).await
            }
            Role::Candidate => {
                let _ = self.routes.send(None);
                self.ensure_follower(current).await
            }
        }
    }

    async fn ensure_follower(&self, current: &mut Current) -> bool {
        if matches!(current, Current::Follower(_)) {
            return true;
        }
        self.stop_engine(std::mem::replace(current, Current::None))
            .await;
        match Engine::start_follower(
            self.store.clone(),
            self.action.clone(),
            self.config.clone(),
            self.metrics.clone(),
        )
        .await
        {
            Ok(engine) => {
                let _ = self.engines.send(Arc::new(engine.handle()));
                *current = Current::Follower(engine);
                true
            }
            Err(error) => {
                warn!(%error, "the follower engine could not load the state; trying again");
                false
            }
        }
    }

    async fn stop_engine(&self, current: Current) {
        let engine = match current {
            Current::Leader(engine, term) => {
                self.status.leading.store(false, Ordering::Relaxed);
                info!(
                    term = term.revision,
                    "no longer leading: stopping the leader engine"
                );
                engine
            }
            Current::Follower(engine) => engine,
            Current::None => return,
        };
        if tokio::time::timeout(self.shutdown_timeout, engine.shutdown())
            .await
            .is_err()
        {
            warn!(limit = ?self.shutdown_timeout, "the engine did not stop in time; leaving it");
        }
    }
}

async fn sleep(wait: Option<Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(wait).await,
        None => std::future::pending().await,
    }
}
