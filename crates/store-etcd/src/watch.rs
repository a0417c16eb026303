//! Watches that survive etcd restarts and lost connections.
//!
//! Each watch runs in a task that owns one etcd watch stream and forwards its
//! events into a bounded channel. The task remembers the next revision it
//! owes the caller; when the etcd stream breaks it opens a new one from that
//! revision, so nothing is lost, and drops events below it, so nothing is
//! delivered twice. It stops when the caller drops the stream.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use etcd_client::proto::PbWatchResponse;
use etcd_client::{WatchOptions, WatchRequestSender, WatchResponseStream};
use state_store::{Revision, StoreError, WatchEvent, WatchStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use crate::convert::{header_revision, prefix_end, watch_event};
use crate::error::{Retry, classify};
use crate::retry::with_retries;
use crate::store::Shared;

/// Events buffered between the watch task and the caller. When the caller
/// lags, the task waits, and etcd buffers (or replays) behind it.
const CHANNEL_CAPACITY: usize = 1024;

type Item = Result<WatchEvent, StoreError>;

/// Starts a watch of `prefix` from `from_revision` (0: from now on).
///
/// The first etcd watch is established before this returns (within the
/// request timeout, retried like a read), so a change made after `watch`
/// returns is always seen, and an unreachable etcd is reported here.
pub(crate) async fn watch(
    shared: Arc<Shared>,
    prefix: &str,
    from_revision: Revision,
) -> Result<WatchStream, StoreError> {
    state_store::check_watch_start(from_revision)?;
    // "From now on" is pinned to a revision first, so that a reconnect before
    // the first event resumes from the right place.
    let next_revision = if from_revision == 0 {
        shared.revision().await? + 1
    } else {
        from_revision
    };
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let task = WatchTask {
        key: if prefix.is_empty() {
            vec![0]
        } else {
            prefix.as_bytes().to_vec()
        },
        range_end: prefix_end(prefix.as_bytes()),
        prefix: prefix.to_owned(),
        next_revision,
        tx,
        _active: ActiveWatch::new(Arc::clone(&shared)),
        shared,
    };
    let opened = {
        let task = &task;
        with_retries(&task.shared.config, "watch", true, || task.open()).await?
    };
    match opened.value {
        Opened::Live(live) => {
            tokio::spawn(task.run(live));
        }
        Opened::Compacted(compact_revision) => {
            task.finish(task.compacted(compact_revision)).await;
        }
    }
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// Counts a running watch in [`Shared::active_watches`] for as long as it lives.
struct ActiveWatch(Arc<Shared>);

impl ActiveWatch {
    fn new(shared: Arc<Shared>) -> Self {
        shared.active_watches.fetch_add(1, Ordering::Relaxed);
        Self(shared)
    }
}

impl Drop for ActiveWatch {
    fn drop(&mut self) {
        self.0.active_watches.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An established etcd watch. The request sender is kept so the stream stays
/// open; dropping both cancels the watch on the server.
struct Live {
    _requests: WatchRequestSender,
    responses: WatchResponseStream,
}

/// What opening an etcd watch gave.
enum Opened {
    Live(Box<Live>),
    /// The start revision is older than this compaction revision.
    Compacted(Revision),
}

/// Why a live watch stopped delivering.
enum Stop {
    /// The caller dropped the stream: end quietly.
    Closed,
    /// The etcd stream broke; open a new one.
    Broken(String),
    /// The watch cannot go on; yield this error and end.
    Fatal(StoreError),
}

struct WatchTask {
    shared: Arc<Shared>,
    prefix: String,
    key: Vec<u8>,
    range_end: Vec<u8>,
    /// Every event below this revision has been delivered (or precedes the
    /// watch's start).
    next_revision: Revision,
    tx: mpsc::Sender<Item>,
    _active: ActiveWatch,
}

impl WatchTask {
    /// Opens an etcd watch from `next_revision` and waits until etcd confirms
    /// it (or reports the revision compacted).
    async fn open(&self) -> Result<Opened, etcd_client::Error> {
        let options = WatchOptions::new()
            .with_range(self.range_end.clone())
            .with_start_revision(self.next_revision)
            .with_progress_notify();
        let (requests, mut responses) = self
            .shared
            .watch
            .clone()
            .watch(self.key.clone(), Some(options))
            .await?
            .split();
        loop {
            let Some(response) = responses.message().await? else {
                return Err(etcd_client::Error::WatchError(
                    "etcd closed the watch stream before confirming the watch".into(),
                ));
            };
            let response = response.0;
            if response.compact_revision > 0 {
                return Ok(Opened::Compacted(response.compact_revision));
            }
            if response.canceled {
                return Err(cancel_error(&response));
            }
            if response.created {
                return Ok(Opened::Live(Box::new(Live {
                    _requests: requests,
                    responses,
                })));
            }
        }
    }

    fn compacted(&self, compact_revision: Revision) -> StoreError {
        StoreError::Compacted {
            requested: self.next_revision,
            compact_revision,
        }
    }

    /// Yields a last error to the caller; the stream ends when the task does.
    async fn finish(&self, error: StoreError) {
        tracing::debug!(prefix = %self.prefix, "watch on prefix '{}' ends: {error}", self.prefix);
        let _ = self.tx.send(Err(error)).await;
    }

    /// Delivers events until the caller goes away or the watch cannot go on,
    /// re-establishing the etcd watch whenever it breaks.
    async fn run(mut self, mut live: Box<Live>) {
        let max_backoff = self.shared.config.watch_max_backoff;
        let mut failures = 0u32;
        loop {
            let established = Instant::now();
            let reason = match self.forward(&mut live).await {
                Stop::Closed => return,
                Stop::Fatal(error) => return self.finish(error).await,
                Stop::Broken(reason) => reason,
            };
            drop(live);
            // A stream that stayed up for a while starts the backoff afresh;
            // one that breaks at once keeps backing off (no tight loop).
            if established.elapsed() >= max_backoff {
                failures = 0;
            }
            tracing::warn!(
                prefix = %self.prefix,
                next_revision = self.next_revision,
                "watch on prefix '{}' broke ({reason}); resuming from revision {}",
                self.prefix,
                self.next_revision
            );
            live = loop {
                failures = failures.saturating_add(1);
                let pause = self.shared.config.retry.backoff(failures, max_backoff);
                tokio::select! {
                    _ = self.tx.closed() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
                self.shared.watch_reconnects.fetch_add(1, Ordering::Relaxed);
                let attempt = tokio::select! {
                    _ = self.tx.closed() => return,
                    attempt = tokio::time::timeout(self.shared.config.request_timeout, self.open()) => attempt,
                };
                match attempt {
                    Ok(Ok(Opened::Live(live))) => {
                        tracing::info!(
                            prefix = %self.prefix,
                            next_revision = self.next_revision,
                            "watch on prefix '{}' resumed from revision {}",
                            self.prefix,
                            self.next_revision
                        );
                        break live;
                    }
                    Ok(Ok(Opened::Compacted(compact_revision))) => {
                        return self.finish(self.compacted(compact_revision)).await;
                    }
                    Ok(Err(error)) => {
                        let failure = classify(error, self.shared.config.max_txn_ops);
                        if failure.retry == Retry::Never {
                            return self.finish(failure.error).await;
                        }
                        tracing::debug!(
                            prefix = %self.prefix,
                            "re-establishing the watch on prefix '{}' failed: {}",
                            self.prefix,
                            failure.error
                        );
                    }
                    Err(_elapsed) => tracing::debug!(
                        prefix = %self.prefix,
                        "re-establishing the watch on prefix '{}' timed out",
                        self.prefix
                    ),
                }
            };
        }
    }

    /// Forwards responses of one live etcd watch until it stops.
    async fn forward(&mut self, live: &mut Live) -> Stop {
        loop {
            let message = tokio::select! {
                _ = self.tx.closed() => return Stop::Closed,
                message = live.responses.message() => message,
            };
            let response = match message {
                Ok(Some(response)) => response.0,
                Ok(None) => return Stop::Broken("etcd ended the watch stream".into()),
                Err(error) => return Stop::Broken(error.to_string()),
            };
            if let Some(stop) = self.deliver(response).await {
                return stop;
            }
        }
    }

    /// Hands one response's events to the caller; `Some` when the watch
    /// stops with it.
    async fn deliver(&mut self, response: PbWatchResponse) -> Option<Stop> {
        if response.compact_revision > 0 {
            // etcd compacted past a watcher that fell behind.
            return Some(Stop::Fatal(self.compacted(response.compact_revision)));
        }
        if response.canceled {
            let failure = classify(cancel_error(&response), self.shared.config.max_txn_ops);
            return Some(if failure.retry == Retry::Never {
                Stop::Fatal(failure.error)
            } else {
                Stop::Broken(failure.error.to_string())
            });
        }
        if response.events.is_empty() {
            if !response.created {
                // A progress notification: every later event is newer than
                // the header's revision, so a reconnect may start after it.
                if let Ok(revision) = header_revision(response.header.as_ref()) {
                    self.next_revision = self.next_revision.max(revision + 1);
                }
            }
            return None;
        }
        // All events of one revision arrive in one response; the resume point
        // moves only past whole responses.
        let mut last = None;
        for event in response.events {
            let revision = event.kv.as_ref().map_or(0, |kv| kv.mod_revision);
            if revision < self.next_revision {
                continue;
            }
            let event = match watch_event(event) {
                Ok(event) => event,
                Err(error) => return Some(Stop::Fatal(error)),
            };
            if self.tx.send(Ok(event)).await.is_err() {
                return Some(Stop::Closed);
            }
            last = Some(revision);
        }
        if let Some(revision) = last {
            self.next_revision = revision + 1;
        }
        None
    }
}

/// The error behind a watch etcd canceled without a compaction: permission
/// problems are final, anything else (no leader, server stopping) is worth a
/// new attempt.
fn cancel_error(response: &PbWatchResponse) -> etcd_client::Error {
    let reason = if response.cancel_reason.is_empty() {
        "etcd canceled the watch".to_owned()
    } else {
        format!("etcd canceled the watch: {}", response.cancel_reason)
    };
    if response.cancel_reason.contains("permission denied") {
        etcd_client::Error::GRpcStatus(tonic::Status::permission_denied(reason))
    } else {
        etcd_client::Error::WatchError(reason)
    }
}
