//! [`EtcdStore`]: the [`StateStore`] on etcd.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use async_trait::async_trait;
use etcd_client::proto::{PbKeyValue, PbResponseOp, PbTxnOpResponse};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KvClient, Txn, TxnOp, WatchClient,
};
use state_store::{
    Applied, Batch, Guard, KeyValue, ListOptions, Op, Page, Revision, StateStore, StoreError,
    WatchStream, check_key,
};

use crate::EtcdConfig;
use crate::convert::{header_revision, key_value, page_start, prefix_end};
use crate::error::classify;
use crate::retry::with_retries;

/// The [`StateStore`] on etcd.
///
/// One long-lived [`etcd_client::Client`] (one HTTP/2 connection per member,
/// shared by every call and every watch; clones of the store share it too).
/// Every call has a deadline ([`EtcdConfig::request_timeout`]) and retries
/// transient failures with backoff inside it.
///
/// # Writes and retries
///
/// [`apply`](StateStore::apply) sends one etcd transaction per batch:
/// `mod_revision` compares for the guards (0 matches an absent key) and the
/// ops as its success branch. It has no failure branch: etcd writes and
/// decodes the whole request on every commit, and reads there would make
/// every transaction larger for a rare case. When the guards fail, the store
/// reads the guarded keys afterwards (keys only, in one snapshot) and reports
/// the first guard that does not hold, with the revision found; when every
/// guard holds again by then (a key was created and deleted in between), it
/// sends the transaction again, a few times at most.
///
/// When a transaction fails in a way that leaves open whether etcd applied it
/// (the connection broke after sending, the leader changed), it is resent only
/// if it is guarded: a repetition of an applied guarded transaction cannot
/// write twice, it fails its guard. In that case the store reads the batch's
/// keys back; when they hold exactly what the batch wrote, at one revision
/// newer than every guard, the first attempt was applied and the call
/// succeeds with that revision. Otherwise the guard failure is reported and
/// the caller re-reads and re-plans, as after any conflict. An unguarded batch
/// (and [`delete`](StateStore::delete)) is resent only after failures that
/// prove nothing reached etcd (the connection was refused); after a timeout
/// the caller cannot know whether it was written.
///
/// # Watches
///
/// A watch runs in its own task, which re-establishes the etcd watch from the
/// revision after the last one it delivered whenever the stream breaks (etcd
/// restarted, connection lost), with backoff capped at
/// [`EtcdConfig::watch_max_backoff`], for as long as the stream is alive. No
/// event is lost or repeated across a reconnect. When the revision to resume
/// from has been compacted meanwhile, the stream yields
/// [`StoreError::Compacted`] and ends. Dropping the stream stops the task.
#[derive(Clone)]
pub struct EtcdStore {
    shared: Arc<Shared>,
}

/// What every clone of a store, and every watch task, shares.
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) kv: KvClient,
    pub(crate) watch: WatchClient,
    pub(crate) config: EtcdConfig,
    pub(crate) active_watches: AtomicUsize,
    pub(crate) watch_reconnects: AtomicU64,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.shared.config.endpoints)
            .field("active_watches", &self.active_watches())
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Creates the store's client. Without credentials this does not touch
    /// the network (the first call connects, and reconnects are automatic);
    /// with credentials it authenticates, within
    /// [`EtcdConfig::request_timeout`].
    pub async fn connect(config: EtcdConfig) -> Result<Self, StoreError> {
        config.validate()?;
        let options = connect_options(&config)?;
        let client = match tokio::time::timeout(
            config.request_timeout,
            Client::connect(&config.endpoints, Some(options)),
        )
        .await
        {
            Ok(Ok(client)) => client,
            Ok(Err(error)) => return Err(classify(error, config.max_txn_ops).error),
            Err(_elapsed) => {
                return Err(StoreError::Timeout {
                    operation: "connect",
                    after: config.request_timeout,
                });
            }
        };
        let kv = client
            .kv_client()
            .max_decoding_message_size(config.max_response_bytes);
        let watch = client
            .watch_client()
            .max_decoding_message_size(config.max_response_bytes);
        Ok(Self {
            shared: Arc::new(Shared {
                client,
                kv,
                watch,
                config,
                active_watches: AtomicUsize::new(0),
                watch_reconnects: AtomicU64::new(0),
            }),
        })
    }

    /// The configuration the store was built with.
    pub fn config(&self) -> &EtcdConfig {
        &self.shared.config
    }

    /// The prefix of the StateManager's bookkeeping keys
    /// ([`EtcdConfig::bookkeeping_prefix`]).
    pub fn bookkeeping_prefix(&self) -> &str {
        &self.shared.config.bookkeeping_prefix
    }

    /// The underlying etcd client, for what the [`StateStore`] trait does not
    /// cover (maintenance, cluster status). It shares the store's connection.
    pub fn client(&self) -> Client {
        self.shared.client.clone()
    }

    /// How many watch streams of this store are alive (their tasks running).
    pub fn active_watches(&self) -> usize {
        self.shared.active_watches.load(Ordering::Relaxed)
    }

    /// How many times watches of this store have tried to re-establish a
    /// broken etcd watch (a health signal, and a check that retries back off).
    pub fn watch_reconnects(&self) -> u64 {
        self.shared.watch_reconnects.load(Ordering::Relaxed)
    }

    /// Compacts etcd's history up to `revision`: later watches from an older
    /// revision get [`StoreError::Compacted`]. Production etcd should rather
    /// run with `--auto-compaction-retention`.
    pub async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let kv = &self.shared.kv;
        with_retries(&self.shared.config, "compact", true, || {
            let mut kv = kv.clone();
            async move { kv.compact(revision, None).await }
        })
        .await
        .map(|_| ())
    }
}

fn connect_options(config: &EtcdConfig) -> Result<ConnectOptions, StoreError> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(config.connect_timeout)
        .with_keep_alive(config.keep_alive_interval, config.keep_alive_timeout)
        // etcd answers pings on idle connections with GOAWAY ("too many
        // pings"); idle connections are covered by the call deadlines.
        .with_keep_alive_while_idle(false)
        .with_tcp_keepalive(config.keep_alive_interval)
        // A member cut off from its cluster fails at once instead of hanging.
        .with_require_leader(true);
    if let Some(credentials) = &config.credentials {
        options = options
            .with_user(credentials.user.clone(), credentials.password.clone())
            .with_auto_token_refresh(true);
    }
    if let Some(tls) = &config.tls {
        options = with_tls(options, tls)?;
    }
    Ok(options)
}

#[cfg(feature = "tls")]
fn with_tls(options: ConnectOptions, tls: &crate::TlsConfig) -> Result<ConnectOptions, StoreError> {
    use etcd_client::{Certificate, Identity, TlsOptions};
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| StoreError::InvalidRequest {
            message: format!("etcd configuration: cannot read '{}': {e}", path.display()),
            source: Some(state_store::Cause::new(e)),
        })
    };
    let mut tls_options = TlsOptions::new();
    if let Some(ca) = &tls.ca_cert {
        tls_options = tls_options.ca_certificate(Certificate::from_pem(read(ca)?));
    }
    if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
        tls_options = tls_options.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    if let Some(domain) = &tls.domain_name {
        tls_options = tls_options.domain_name(domain.clone());
    }
    Ok(options.with_tls(tls_options))
}

#[cfg(not(feature = "tls"))]
fn with_tls(
    _options: ConnectOptions,
    _tls: &crate::TlsConfig,
) -> Result<ConnectOptions, StoreError> {
    Err(StoreError::invalid_request(
        "etcd configuration: TLS is configured but store-etcd was built without its 'tls' feature",
    ))
}

impl Shared {
    pub(crate) async fn revision(&self) -> Result<Revision, StoreError> {
        let kv = &self.kv;
        let outcome = with_retries(&self.config, "revision", true, || {
            let mut kv = kv.clone();
            async move {
                kv.get(vec![0u8], Some(GetOptions::new().with_count_only()))
                    .await
            }
        })
        .await?;
        header_revision(outcome.value.0.header.as_ref())
    }

    /// Runs `reads` in one read-only transaction: one snapshot of the store.
    async fn read_together(&self, reads: Vec<TxnOp>) -> Result<Vec<PbResponseOp>, StoreError> {
        let txn = Txn::new().and_then(reads);
        let kv = &self.kv;
        let outcome = with_retries(&self.config, "apply", true, || {
            let mut kv = kv.clone();
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })
        .await?;
        Ok(outcome.value.0.responses)
    }

    /// After a transaction failed its guards: reads the guarded keys (keys
    /// only, one snapshot) and returns the first guard that does not hold,
    /// or `None` when every guard holds again (a key created and deleted
    /// since). Reading afterwards instead of in the transaction's failure
    /// branch keeps every transaction half the size: etcd writes and
    /// decodes the whole request, failure branch included, on every commit.
    async fn failed_guard(&self, guards: &[Guard]) -> Result<Option<StoreError>, StoreError> {
        let reads: Vec<TxnOp> = guards
            .iter()
            .map(|g| TxnOp::get(g.key.as_str(), Some(GetOptions::new().with_keys_only())))
            .collect();
        let responses = self.read_together(reads).await?;
        if responses.len() != guards.len() {
            return Err(StoreError::bad_data(format!(
                "etcd answered {} reads of {} guarded keys",
                responses.len(),
                guards.len()
            )));
        }
        for (guard, response) in guards.iter().zip(responses) {
            let actual = match response.response {
                Some(PbTxnOpResponse::ResponseRange(range)) => {
                    range.kvs.first().map_or(0, |kv| kv.mod_revision)
                }
                _ => {
                    return Err(StoreError::bad_data(
                        "etcd answered a guard read with something else",
                    ));
                }
            };
            if actual != guard.mod_revision {
                return Ok(Some(StoreError::GuardFailed {
                    key: guard.key.clone(),
                    expected: guard.mod_revision,
                    actual,
                }));
            }
        }
        Ok(None)
    }

    /// After a guarded batch was resent because an earlier attempt may have
    /// been applied, and the resend failed its guard: decides whether that
    /// earlier attempt is what changed the keys. Reads the batch's keys in one
    /// snapshot; `Some` when every put key holds the batch's value at one
    /// common revision newer than every guard, every deleted key is absent,
    /// and every guard on a key the batch does not write still holds.
    async fn applied_earlier(&self, batch: &Batch) -> Result<Option<Applied>, StoreError> {
        let mut keys: Vec<&str> = batch.ops.iter().map(Op::key).collect();
        keys.extend(
            batch
                .guards
                .iter()
                .map(|g| g.key.as_str())
                .filter(|key| !batch.ops.iter().any(|op| op.key() == *key)),
        );
        if keys.len() > self.config.max_txn_ops
            || !batch.ops.iter().any(|op| matches!(op, Op::Put { .. }))
        {
            return Ok(None);
        }
        let reads: Vec<TxnOp> = keys.iter().map(|key| TxnOp::get(*key, None)).collect();
        let responses = self.read_together(reads).await?;
        let mut found: HashMap<&str, Option<PbKeyValue>> = HashMap::new();
        for (key, response) in keys.iter().zip(responses) {
            let Some(PbTxnOpResponse::ResponseRange(range)) = response.response else {
                return Ok(None);
            };
            found.insert(key, range.kvs.into_iter().next());
        }
        let mut revision = None;
        for op in &batch.ops {
            let current = found.get(op.key()).and_then(Option::as_ref);
            match (op, current) {
                (Op::Put { value, .. }, Some(kv)) if kv.value == *value => {
                    if *revision.get_or_insert(kv.mod_revision) != kv.mod_revision {
                        return Ok(None);
                    }
                }
                (Op::Delete { .. }, None) => {}
                _ => return Ok(None),
            }
        }
        let Some(revision) = revision else {
            return Ok(None);
        };
        for guard in &batch.guards {
            let written = batch.ops.iter().any(|op| op.key() == guard.key);
            let holds = || {
                let actual = found
                    .get(guard.key.as_str())
                    .and_then(Option::as_ref)
                    .map_or(0, |kv| kv.mod_revision);
                actual == guard.mod_revision
            };
            if guard.mod_revision >= revision || (!written && !holds()) {
                return Ok(None);
            }
        }
        Ok(Some(Applied { revision }))
    }
}

/// The batch as one etcd transaction: guards as `mod_revision` compares, ops
/// as the success branch, and no failure branch (a failed guard is read
/// afterwards, by [`Shared::failed_guard`]).
fn transaction(batch: &Batch) -> Txn {
    let compares: Vec<Compare> = batch
        .guards
        .iter()
        .map(|g| Compare::mod_revision(g.key.as_str(), CompareOp::Equal, g.mod_revision))
        .collect();
    let ops: Vec<TxnOp> = batch
        .ops
        .iter()
        .map(|op| match op {
            Op::Put { key, value } => TxnOp::put(key.as_str(), value.as_slice(), None),
            Op::Delete { key } => TxnOp::delete(key.as_str(), None),
        })
        .collect();
    Txn::new().when(compares).and_then(ops)
}

/// Attempts of a transaction whose guards failed but all held when read
/// afterwards (each such key was created and deleted in between).
const GUARD_RACE_ATTEMPTS: usize = 3;

#[async_trait]
impl StateStore for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        check_key(key)?;
        let kv = &self.shared.kv;
        let outcome = with_retries(&self.shared.config, "get", true, || {
            let mut kv = kv.clone();
            async move { kv.get(key, None).await }
        })
        .await?;
        outcome
            .value
            .0
            .kvs
            .into_iter()
            .next()
            .map(key_value)
            .transpose()
    }

    async fn get_prefix(&self, prefix: &str, options: ListOptions) -> Result<Page, StoreError> {
        let config = &self.shared.config;
        let limit = if options.limit == 0 {
            config.page_size
        } else {
            options.limit
        };
        let start = page_start(prefix, options.start_after.as_deref());
        let get_options = GetOptions::new()
            .with_range(prefix_end(prefix.as_bytes()))
            .with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        let kv = &self.shared.kv;
        let outcome = with_retries(config, "get_prefix", true, || {
            let mut kv = kv.clone();
            let start = start.clone();
            let get_options = get_options.clone();
            async move { kv.get(start, Some(get_options)).await }
        })
        .await?;
        let response = outcome.value.0;
        let revision = header_revision(response.header.as_ref())?;
        let kvs = response
            .kvs
            .into_iter()
            .map(key_value)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page {
            kvs,
            more: response.more,
            revision,
        })
    }

    async fn apply(&self, batch: Batch) -> Result<Applied, StoreError> {
        let batch = batch.validated(self.shared.config.max_txn_ops)?;
        if batch.is_empty() {
            let revision = self.shared.revision().await?;
            return Ok(Applied { revision });
        }
        let guarded = !batch.guards.is_empty();
        let kv = &self.shared.kv;
        // Built once for the first attempt, again only for a retry.
        let mut first = Some(transaction(&batch));
        for _ in 0..GUARD_RACE_ATTEMPTS {
            let outcome = with_retries(&self.shared.config, "apply", guarded, || {
                let mut kv = kv.clone();
                let txn = first.take().unwrap_or_else(|| transaction(&batch));
                async move { kv.txn(txn).await }
            })
            .await?;
            let response = outcome.value.0;
            let revision = header_revision(response.header.as_ref())?;
            if response.succeeded {
                return Ok(Applied { revision });
            }
            let Some(failed) = self.shared.failed_guard(&batch.guards).await? else {
                // Every guard holds again: the transaction may go through now.
                continue;
            };
            if outcome.after_ambiguous
                && let Some(applied) = self.shared.applied_earlier(&batch).await?
            {
                tracing::debug!(
                    revision = applied.revision,
                    "a resent transaction failed its guard because its first attempt was applied at revision {}",
                    applied.revision
                );
                return Ok(applied);
            }
            return Err(failed);
        }
        Err(StoreError::bad_data(format!(
            "etcd failed the transaction's guards {GUARD_RACE_ATTEMPTS} times while every \
             guard held when read afterwards"
        )))
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        check_key(key)?;
        let kv = &self.shared.kv;
        let outcome = with_retries(&self.shared.config, "delete", false, || {
            let mut kv = kv.clone();
            async move { kv.delete(key, None).await }
        })
        .await?;
        Ok(outcome.value.0.deleted > 0)
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        crate::watch::watch(Arc::clone(&self.shared), prefix, from_revision).await
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        self.shared.revision().await
    }
}

#[cfg(test)]
mod tests {
    use etcd_client::proto::PbTxnRequest;

    use super::*;

    #[tokio::test]
    async fn a_resent_batch_whose_first_attempt_was_applied_is_recognised() {
        let etcd = etcd_harness::Etcd::start().unwrap();
        let store = EtcdStore::connect(EtcdConfig::new(etcd.endpoints()))
            .await
            .unwrap();
        store.apply(Batch::new().put("/c", "old")).await.unwrap();
        let unrelated = store.apply(Batch::new().put("/u", "1")).await.unwrap();
        let batch = Batch::new()
            .guard("/a", 0)
            .guard("/b", 0)
            .guard("/u", unrelated.revision)
            .put("/a", "1")
            .put("/b", "2")
            .delete("/c");
        let first = store.apply(batch.clone()).await.unwrap();
        // As if the answer to the first attempt was lost: the resend fails.
        assert!(matches!(
            store.apply(batch.clone()).await,
            Err(StoreError::GuardFailed { .. })
        ));
        assert_eq!(
            store.shared.applied_earlier(&batch).await.unwrap(),
            Some(first),
            "the keys hold exactly what the batch wrote"
        );

        // A guard on a key the batch does not write must still hold.
        store.apply(Batch::new().put("/u", "2")).await.unwrap();
        assert_eq!(store.shared.applied_earlier(&batch).await.unwrap(), None);
        let batch = Batch::new().guard("/a", 0).put("/a", "1").put("/b", "2");
        assert_eq!(
            store.shared.applied_earlier(&batch).await.unwrap(),
            Some(first)
        );
        // Another writer changed a written key since: not ours.
        store.apply(Batch::new().put("/b", "other")).await.unwrap();
        assert_eq!(store.shared.applied_earlier(&batch).await.unwrap(), None);
        // Same values, but not written together by one transaction.
        store.apply(Batch::new().put("/b", "2")).await.unwrap();
        assert_eq!(store.shared.applied_earlier(&batch).await.unwrap(), None);
        // Deletes alone prove nothing.
        let deletes = Batch::new().guard("/a", 0).delete("/a");
        assert_eq!(store.shared.applied_earlier(&deletes).await.unwrap(), None);
    }

    #[test]
    fn a_batch_becomes_one_guarded_transaction() {
        let batch = Batch::new()
            .guard("/a", 5)
            .guard("/b", 0)
            .put("/a", "x")
            .delete("/c");
        let request = PbTxnRequest::from(transaction(&batch));
        assert_eq!(request.compare.len(), 2);
        assert_eq!(request.compare[1].key, b"/b");
        assert_eq!(request.success.len(), 2);
        assert!(
            request.failure.is_empty(),
            "no failure branch: a failed guard is read afterwards"
        );
    }

    #[tokio::test]
    async fn the_first_failing_guard_is_read_after_the_transaction() {
        let etcd = etcd_harness::Etcd::start().unwrap();
        let store = EtcdStore::connect(EtcdConfig::new(etcd.endpoints()))
            .await
            .unwrap();
        let a = store.apply(Batch::new().put("/a", "1")).await.unwrap();
        let guards = [
            Guard {
                key: "/a".into(),
                mod_revision: a.revision,
            },
            Guard {
                key: "/b".into(),
                mod_revision: 0,
            },
        ];
        assert_eq!(
            store.shared.failed_guard(&guards).await.unwrap(),
            None,
            "every guard holds"
        );
        let b = store.apply(Batch::new().put("/b", "2")).await.unwrap();
        assert_eq!(
            store.shared.failed_guard(&guards).await.unwrap(),
            Some(StoreError::GuardFailed {
                key: "/b".into(),
                expected: 0,
                actual: b.revision
            })
        );
        store.delete("/a").await.unwrap();
        assert_eq!(
            store.shared.failed_guard(&guards).await.unwrap(),
            Some(StoreError::GuardFailed {
                key: "/a".into(),
                expected: a.revision,
                actual: 0
            }),
            "the first failing guard, in order"
        );
        // Through apply: the same answer, nothing written.
        let before = store.revision().await.unwrap();
        let batch = Batch::new()
            .guard("/a", a.revision)
            .guard("/b", 0)
            .put("/a", "x");
        assert_eq!(
            store.apply(batch).await,
            Err(StoreError::GuardFailed {
                key: "/a".into(),
                expected: a.revision,
                actual: 0
            })
        );
        assert_eq!(store.revision().await.unwrap(), before);
    }
}
