//! State keys, from our store to the service.
//!
//! The task alternates between two phases:
//!
//! 1. **Resync**: read every state key of our store (at revision R) and the
//!    service's keys under the same prefixes (GetByPrefix, which also gives
//!    the values to compare), BatchPut what differs or is missing and Delete
//!    what the service has and we do not. Retried with back-off until it
//!    succeeds.
//! 2. **Stream**: watch our store from R + 1 and forward each change, in
//!    commit order, through a backlog coalesced by key: runs of puts as one
//!    BatchPut, each delete as one Delete (the service deletes one key per
//!    call). The watch keeps being read while a call is in flight, so a
//!    slow service only makes the backlog coalesce more.
//!
//! A failed call (the service is down or too slow), a watch that ends or
//! reports [`StoreError::Compacted`], and a backlog over its limit all drop
//! the backlog and go back to 1: whatever happened meanwhile on either side,
//! a resync makes the service hold exactly our state keys again. A key the
//! service refuses (INVALID_ARGUMENT) is skipped and counted, never retried.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::StreamExt;
use state_store::{EventKind, Revision, StoreError, WatchEvent, get_all};
use tracing::{debug, info, warn};

use crate::backlog::{Backlog, Change, Chunk, Ticket};
use crate::shared::Shared;
use crate::shutdown::Shutdown;
use crate::{CallError, STATE_PREFIXES, STORE_PAGE_SIZE, SyncError};

/// The prefix the task watches: the common prefix of [`STATE_PREFIXES`].
/// One watch keeps changes of different kinds in commit order; events of
/// other keys under it (the StateManager's bookkeeping) are dropped.
const WATCH_PREFIX: &str = "/";

/// How the stream phase ended.
enum Ended {
    /// Shutdown was asked for.
    Shutdown,
    /// Resync at once (backlog overflow, compacted watch).
    Resync,
    /// Something failed: back off, then resync.
    Failed,
}

/// Mirrors until shutdown.
pub(crate) async fn run(shared: Arc<Shared>, mut shutdown: Shutdown) {
    let mut backoff = shared.backoff();
    loop {
        let Some(resynced) = shutdown.run(resync(&shared)).await else {
            return;
        };
        let revision = match resynced {
            Ok(revision) => {
                backoff.reset();
                revision
            }
            Err(error) => {
                debug!("resync with the RocksDbService failed: {error}");
                if shutdown.sleep(backoff.next_delay()).await {
                    return;
                }
                continue;
            }
        };
        match stream(&shared, &mut shutdown, revision).await {
            Ended::Shutdown => return,
            Ended::Resync => {}
            Ended::Failed => {
                if shutdown.sleep(backoff.next_delay()).await {
                    return;
                }
            }
        }
    }
}

/// Makes the service's state keys equal ours; returns the revision our keys
/// were read at, to watch from.
async fn resync(shared: &Shared) -> Result<Revision, SyncError> {
    // Each prefix is read at its own revision; watching from the lowest one
    // replays what changed in between, which only rewrites the newest values.
    let mut revision: Option<Revision> = None;
    let mut ours: BTreeMap<String, String> = BTreeMap::new();
    let mut present: HashSet<String> = HashSet::new();
    for prefix in STATE_PREFIXES {
        let (kvs, read_at) = shared.store(
            "reading state keys",
            get_all(shared.store.as_ref(), prefix, STORE_PAGE_SIZE).await,
        )?;
        revision = Some(revision.map_or(read_at, |r| r.min(read_at)));
        for kv in kvs {
            if let Some(value) = shared.prepare(&kv.key, &kv.value) {
                ours.insert(kv.key.clone(), value);
            }
            present.insert(kv.key);
        }
    }

    let mut theirs: BTreeMap<String, String> = BTreeMap::new();
    for prefix in STATE_PREFIXES {
        theirs.extend(shared.observe(shared.client.get_by_prefix(prefix).await)?);
    }

    let puts: Vec<(String, String)> = ours
        .into_iter()
        .filter(|(key, value)| theirs.get(key) != Some(value))
        .collect();
    // A key we have but cannot send (skipped above) is not ours to delete.
    let deletes: Vec<String> = theirs
        .into_keys()
        .filter(|key| !key.is_empty() && !present.contains(key))
        .collect();
    for pairs in puts.chunks(shared.config.batch_put_size) {
        deliver_puts(shared, pairs).await?;
    }
    for key in &deletes {
        deliver_delete(shared, key).await?;
    }
    shared.stats.add_resync();
    shared.stats.synced_now();
    info!(
        "state keys resynced with the RocksDbService at '{}': {} written, {} deleted",
        shared.config.url,
        puts.len(),
        deletes.len()
    );
    Ok(revision.unwrap_or_default())
}

type Delivery<'a> = Pin<Box<dyn Future<Output = Result<(), CallError>> + Send + 'a>>;

/// Forwards every change after `revision` until something ends the phase.
async fn stream(shared: &Shared, shutdown: &mut Shutdown, revision: Revision) -> Ended {
    let watched = shared.store.watch(WATCH_PREFIX, revision + 1).await;
    let Ok(mut watch) = shared.store("watching state keys", watched) else {
        return Ended::Failed;
    };
    let mut backlog = Backlog::default();
    let mut in_flight: Option<(Vec<Ticket>, Delivery<'_>)> = None;
    let ended = loop {
        if in_flight.is_none()
            && let Some((chunk, tickets)) = backlog.next_chunk(shared.config.batch_put_size)
        {
            in_flight = Some((tickets, Box::pin(deliver(shared, chunk))));
        }
        shared.stats.set_backlog(backlog.len());
        tokio::select! {
            biased;
            () = shutdown.wait() => break Ended::Shutdown,
            delivered = async {
                match in_flight.as_mut() {
                    Some((_, delivery)) => delivery.await,
                    None => std::future::pending().await,
                }
            } => {
                let Some((tickets, _)) = in_flight.take() else {
                    continue;
                };
                match delivered {
                    Ok(()) => {
                        backlog.ack(&tickets);
                        if backlog.is_empty() {
                            shared.stats.synced_now();
                        }
                    }
                    Err(error) => {
                        debug!("state changes not delivered ({error}); resyncing once the service answers");
                        break Ended::Failed;
                    }
                }
            }
            event = watch.next() => match event {
                Some(Ok(event)) => {
                    if let Some((key, change)) = accept(shared, event) {
                        backlog.push(key, change);
                    }
                    if backlog.len() > shared.config.backlog_limit {
                        warn!(
                            "{} state changes wait for the RocksDbService, over the limit of {}; \
                             dropping them and resyncing instead",
                            backlog.len(),
                            shared.config.backlog_limit
                        );
                        break Ended::Resync;
                    }
                }
                Some(Err(StoreError::Compacted { requested, compact_revision })) => {
                    info!(
                        "the watch of our state keys fell behind compaction (revision {requested}, \
                         oldest {compact_revision}); resyncing"
                    );
                    break Ended::Resync;
                }
                Some(Err(error)) => {
                    let _ = shared.store("watching state keys", Err::<(), _>(error));
                    break Ended::Failed;
                }
                None => {
                    shared.stats.add_failure();
                    warn!("the watch of our state keys ended; resyncing");
                    break Ended::Failed;
                }
            },
        }
    };
    shared.stats.set_backlog(0);
    ended
}

/// The change a watch event asks for, or `None` for keys that are not
/// mirrored and for puts that cannot be sent (counted as skipped).
fn accept(shared: &Shared, event: WatchEvent) -> Option<(String, Change)> {
    let key = event.kv.key;
    if !STATE_PREFIXES.iter().any(|prefix| key.starts_with(prefix)) {
        return None;
    }
    match event.kind {
        EventKind::Put => {
            let value = shared.prepare(&key, &event.kv.value)?;
            Some((key, Change::Put(value)))
        }
        // The service deletes any non-empty key, even one it would not store.
        EventKind::Delete => Some((key, Change::Delete)),
    }
}

async fn deliver(shared: &Shared, chunk: Chunk) -> Result<(), CallError> {
    match chunk {
        Chunk::Puts(pairs) => deliver_puts(shared, &pairs).await,
        Chunk::Delete(key) => deliver_delete(shared, &key).await,
    }
}

/// One BatchPut. When the service refuses it (a key it will not store, which
/// the bridge's own check did not catch), each pair is put alone, so the
/// refused keys are found, skipped and counted, and the others delivered.
async fn deliver_puts(shared: &Shared, pairs: &[(String, String)]) -> Result<(), CallError> {
    match shared.observe(shared.client.batch_put(pairs).await) {
        Ok(_) => {
            shared.stats.add_mirrored(pairs.len());
            Ok(())
        }
        Err(error) if error.is_refused() => {
            debug!(
                "the RocksDbService refused a batch of {} keys ({error}); putting them one by one",
                pairs.len()
            );
            for (key, value) in pairs {
                match shared.observe(shared.client.put(key, value).await) {
                    Ok(()) => shared.stats.add_mirrored(1),
                    Err(error) if error.is_refused() => shared.skip(key, &error),
                    Err(error) => return Err(error),
                }
            }
            Ok(())
        }
        Err(error) => Err(error),
    }
}

async fn deliver_delete(shared: &Shared, key: &str) -> Result<(), CallError> {
    match shared.observe(shared.client.delete(key).await) {
        Ok(()) => {
            shared.stats.add_mirrored(1);
            Ok(())
        }
        Err(error) if error.is_refused() => {
            shared.skip(key, &error);
            Ok(())
        }
        Err(error) => Err(error),
    }
}
