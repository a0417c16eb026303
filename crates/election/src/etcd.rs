//! The election on etcd: a key bound to the leader's lease.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, WatchOptions, WatchStream,
};
use tokio::sync::{Mutex, Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::{ElectionConfig, Leader, LeaderElection, Role, Term};

/// The first pause after a failed round; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
enum ElectionError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("etcd did not answer '{0}' in time")]
    Timeout(&'static str),
}

/// An election on etcd, run by a task of its own.
///
/// Each round reads the election key. When another instance holds it, this
/// one follows it and watches the key until it is deleted. When nobody
/// does, it grants a lease and creates the key bound to it in a
/// transaction that holds only while the key is absent: the one that
/// succeeds leads. A leader renews its lease every third of the TTL and
/// steps down (revoking the lease, so the key goes at once) when a renewal
/// has not been confirmed within the TTL, when the key is deleted or
/// replaced, when a write was fenced, or when it resigns.
pub struct EtcdElection {
    roles: watch::Receiver<Role>,
    fenced: Arc<Notify>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    request_timeout: Duration,
}

impl EtcdElection {
    /// Starts campaigning with `client` (the store's connection will do).
    pub fn spawn(client: Client, config: ElectionConfig) -> Self {
        let (roles_tx, roles) = watch::channel(Role::Candidate);
        let (stop, stop_rx) = watch::channel(false);
        let fenced = Arc::new(Notify::new());
        let request_timeout = config.request_timeout;
        let campaign = Campaign {
            client,
            config,
            roles: roles_tx,
            fenced: fenced.clone(),
            stop: stop_rx,
        };
        Self {
            roles,
            fenced,
            stop,
            task: Mutex::new(Some(tokio::spawn(campaign.run()))),
            request_timeout,
        }
    }
}

#[async_trait]
impl LeaderElection for EtcdElection {
    fn roles(&self) -> watch::Receiver<Role> {
        self.roles.clone()
    }

    fn fenced(&self) {
        self.fenced.notify_one();
    }

    async fn resign(&self) {
        let _ = self.stop.send(true);
        if let Some(mut task) = self.task.lock().await.take() {
            // The revocation is one bounded call; past it, leave the task.
            let limit = self.request_timeout * 2;
            if tokio::time::timeout(limit, &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

impl Drop for EtcdElection {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

struct Campaign {
    client: Client,
    config: ElectionConfig,
    roles: watch::Sender<Role>,
    fenced: Arc<Notify>,
    stop: watch::Receiver<bool>,
}

/// How a round ended.
enum Outcome {
    /// Look again at once.
    Again,
    /// Stop: the election was resigned.
    Stopped,
}

impl Campaign {
    async fn run(mut self) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            if *self.stop.borrow() {
                break;
            }
            match self.round().await {
                Ok(Outcome::Stopped) => break,
                Ok(Outcome::Again) => backoff = FIRST_BACKOFF,
                Err(error) => {
                    warn!(key = %self.config.key, %error, "election round failed; trying again");
                    self.set(Role::Candidate);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.stop.changed() => break,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        self.set(Role::Candidate);
    }

    fn set(&self, role: Role) {
        self.roles.send_if_modified(|current| {
            if *current == role {
                return false;
            }
            info!(key = %self.config.key, role = role.name(), leader = ?leader_of(&role), "HA role");
            *current = role;
            true
        });
    }

    /// Bounds one etcd call by the request timeout.
    async fn call<T>(
        &self,
        what: &'static str,
        call: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, ElectionError> {
        match tokio::time::timeout(self.config.request_timeout, call).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(ElectionError::Timeout(what)),
        }
    }

    /// A watch of the election key from `from`.
    async fn watch(&self, from: i64) -> Result<WatchStream, ElectionError> {
        let options = WatchOptions::new().with_start_revision(from);
        let mut client = self.client.clone();
        self.call(
            "watch",
            client.watch(self.config.key.as_str(), Some(options)),
        )
        .await
    }

    async fn round(&mut self) -> Result<Outcome, ElectionError> {
        let mut kv = self.client.kv_client();
        let response = self
            .call("get", kv.get(self.config.key.as_str(), None))
            .await?;
        let revision = response.header().map_or(0, |h| h.revision());
        match response.kvs().first() {
            Some(held) => {
                self.follow_value(held.value());
                self.follow(revision + 1).await
            }
            None => self.campaign().await,
        }
    }

    /// Takes the leader the key names (a leftover key of this instance
    /// names nobody to follow).
    fn follow_value(&self, value: &[u8]) {
        match serde_json::from_slice::<Leader>(value) {
            Ok(leader) if leader.id != self.config.me.id => self.set(Role::Follower(leader)),
            Ok(_) => self.set(Role::Candidate),
            Err(error) => {
                warn!(key = %self.config.key, %error, "the election key names no leader this version understands");
                self.set(Role::Candidate);
            }
        }
    }

    /// Watches the key until it is deleted.
    async fn follow(&mut self, from: i64) -> Result<Outcome, ElectionError> {
        let mut stream = self.watch(from).await?;
        loop {
            tokio::select! {
                _ = self.stop.changed() => return Ok(Outcome::Stopped),
                message = stream.message() => {
                    let Some(response) = message? else {
                        return Ok(Outcome::Again);
                    };
                    if response.canceled() {
                        return Ok(Outcome::Again);
                    }
                    for event in response.events() {
                        match event.event_type() {
                            EventType::Delete => return Ok(Outcome::Again),
                            EventType::Put => {
                                if let Some(kv) = event.kv() {
                                    self.follow_value(kv.value());
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    async fn campaign(&mut self) -> Result<Outcome, ElectionError> {
        let ttl = i64::try_from(self.config.ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let asked = Instant::now();
        let mut lease = self.client.lease_client();
        let granted = self.call("lease grant", lease.grant(ttl, None)).await?;
        let lease_id = granted.id();
        let granted_ttl = Duration::from_secs(u64::try_from(granted.ttl()).unwrap_or(0));
        let value = serde_json::to_vec(&self.config.me).unwrap_or_default();
        let key = self.config.key.as_str();
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                value,
                Some(PutOptions::new().with_lease(lease_id)),
            )]);
        let mut kv = self.client.kv_client();
        let created = match self.call("campaign", kv.txn(txn)).await {
            Ok(response) => response,
            Err(error) => {
                self.revoke(lease_id).await;
                return Err(error);
            }
        };
        if !created.succeeded() {
            // Another instance was quicker: follow it next round.
            self.revoke(lease_id).await;
            return Ok(Outcome::Again);
        }
        let revision = created.header().map_or(0, |h| h.revision());
        let term = Term {
            key: self.config.key.clone(),
            revision,
            lease: lease_id,
            leader: self.config.me.clone(),
        };
        info!(key = %term.key, term = revision, lease = lease_id, ttl = ?granted_ttl, "elected leader");
        self.set(Role::Leader(term.clone()));
        let outcome = self.lead(&term, asked + granted_ttl, granted_ttl).await;
        self.set(Role::Candidate);
        self.revoke(lease_id).await;
        Ok(outcome)
    }

    /// Renews the lease until leadership ends; says why it ended.
    async fn lead(&mut self, term: &Term, mut valid_until: Instant, ttl: Duration) -> Outcome {
        let period = (ttl / 3).max(Duration::from_millis(100));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut renewals: Option<Renewals> = None;
        let mut key_watch = self.watch_key(term).await;
        loop {
            if renewals.is_none() {
                renewals = self.renewals(term.lease).await;
            }
            tokio::select! {
                biased;
                _ = self.stop.changed() => {
                    info!(key = %term.key, "resigning the leadership");
                    return Outcome::Stopped;
                }
                _ = tokio::time::sleep_until(valid_until) => {
                    warn!(key = %term.key, "the lease was not renewed within its TTL; stepping down");
                    return Outcome::Again;
                }
                _ = self.fenced.notified() => {
                    warn!(key = %term.key, "a write was fenced; stepping down");
                    return Outcome::Again;
                }
                gone = key_gone(&mut key_watch) => {
                    if gone {
                        warn!(key = %term.key, "the election key was deleted or replaced; stepping down");
                        return Outcome::Again;
                    }
                    key_watch = None;
                }
                _ = tick.tick() => {
                    if let Some(r) = &mut renewals {
                        r.sent.push_back(Instant::now());
                        if r.keeper.keep_alive().await.is_err() {
                            renewals = None;
                        }
                    }
                }
                answer = next_answer(&mut renewals) => match answer {
                    Some((sent, remaining)) if remaining > 0 => {
                        let remaining = Duration::from_secs(u64::try_from(remaining).unwrap_or(0));
                        valid_until = valid_until.max(sent + remaining);
                    }
                    Some(_) => {
                        warn!(key = %term.key, "the lease has expired; stepping down");
                        return Outcome::Again;
                    }
                    None => renewals = None,
                },
            }
        }
    }

    async fn renewals(&mut self, lease: i64) -> Option<Renewals> {
        let mut client = self.client.lease_client();
        match self
            .call("lease keep-alive", client.keep_alive(lease))
            .await
        {
            Ok((keeper, stream)) => Some(Renewals {
                keeper,
                stream,
                sent: VecDeque::new(),
            }),
            Err(error) => {
                warn!(%error, "cannot open the lease's keep-alive stream; trying again");
                // Not at once: the loop's other arms still run meanwhile.
                tokio::time::sleep(FIRST_BACKOFF).await;
                None
            }
        }
    }

    async fn watch_key(&mut self, term: &Term) -> Option<WatchStream> {
        match self.watch(term.revision + 1).await {
            Ok(stream) => Some(stream),
            Err(error) => {
                // Fencing still guards every write; only the early notice is lost.
                warn!(%error, "cannot watch the election key while leading");
                None
            }
        }
    }

    /// Revokes a lease, best effort: the key bound to it goes at once.
    async fn revoke(&mut self, lease: i64) {
        let mut client = self.client.lease_client();
        if let Err(error) = self.call("lease revoke", client.revoke(lease)).await {
            warn!(%error, lease, "could not revoke the lease; it expires by itself");
        }
    }
}

/// The leader's keep-alive stream and when each unanswered renewal was sent.
struct Renewals {
    keeper: etcd_client::LeaseKeeper,
    stream: etcd_client::LeaseKeepAliveStream,
    sent: VecDeque<Instant>,
}

/// The next renewal answer: when its request was sent, and the TTL etcd
/// says remains (0 or less: expired). `None` when the stream broke.
async fn next_answer(renewals: &mut Option<Renewals>) -> Option<(Instant, i64)> {
    let Some(r) = renewals else {
        return std::future::pending().await;
    };
    match r.stream.message().await {
        Ok(Some(answer)) => {
            let sent = r.sent.pop_front().unwrap_or_else(Instant::now);
            Some((sent, answer.ttl()))
        }
        _ => None,
    }
}

/// Completes with `true` when the watched key is deleted or written (a
/// leader writes its key once, when it is elected), `false` when the watch
/// broke; never without a watch.
async fn key_gone(watch: &mut Option<WatchStream>) -> bool {
    let Some(stream) = watch else {
        return std::future::pending().await;
    };
    loop {
        match stream.message().await {
            Ok(Some(response)) if response.events().is_empty() => {}
            Ok(Some(_)) => return true,
            _ => return false,
        }
    }
}

fn leader_of(role: &Role) -> Option<&str> {
    match role {
        Role::Follower(leader) => Some(&leader.url),
        Role::Leader(term) => Some(&term.leader.url),
        Role::Candidate => None,
    }
}
