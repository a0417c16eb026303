//! The bridge's metrics: plain atomics, cheap to update from its tasks and
//! to read from the daemon's `/metrics` renderer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Counters and gauges of a running [`Bridge`](crate::Bridge), shared through
/// [`Bridge::stats`](crate::Bridge::stats). Every read is a relaxed atomic
/// load; [`snapshot`](Self::snapshot) reads them all.
#[derive(Debug, Default)]
pub struct BridgeStats {
    backlog: AtomicU64,
    mirrored_keys: AtomicU64,
    definitions_applied: AtomicU64,
    failures: AtomicU64,
    resyncs: AtomicU64,
    last_sync: AtomicU64,
    keys_skipped: AtomicU64,
    connected: AtomicBool,
}

/// The values of [`BridgeStats`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BridgeStatsSnapshot {
    /// Gauge: state keys waiting to be sent to the service (coalesced by
    /// key, so at most one per key).
    pub backlog: u64,
    /// Counter: state keys written to or deleted from the service, by a
    /// resync or by forwarding a change. A key sent twice counts twice.
    pub mirrored_keys_total: u64,
    /// Counter: definition keys put into or deleted from our store because
    /// the service's differed.
    pub definitions_applied_total: u64,
    /// Counter: failed attempts: gRPC calls that failed or timed out (not
    /// the keys the service refused, see `keys_skipped_total`), store
    /// operations that failed, and watches that ended with an error. Each
    /// retry that fails counts again.
    pub failures_total: u64,
    /// Counter: completed full resyncs of the state keys (at start-up, after
    /// an outage, a backlog overflow or a compacted watch).
    pub resyncs_total: u64,
    /// Unix time in seconds of the last moment the service was known to be
    /// up to date in one direction: a full resync finished, the backlog was
    /// emptied by a successful send, or a definitions poll of every prefix
    /// succeeded. 0 until the first.
    pub last_sync_unix_seconds: u64,
    /// Counter: keys not sent because the service refuses them (empty, over
    /// 1024 bytes, `< > ? { }`, or refused with INVALID_ARGUMENT when sent)
    /// or because their value is not UTF-8. A key skipped again by a later
    /// resync counts again.
    pub keys_skipped_total: u64,
    /// Whether the last gRPC call of the bridge got an answer from the
    /// service (a refusal counts as an answer). `false` before the first.
    pub connected: bool,
}

impl BridgeStats {
    /// See [`BridgeStatsSnapshot::backlog`].
    pub fn backlog(&self) -> u64 {
        self.backlog.load(Ordering::Relaxed)
    }

    /// See [`BridgeStatsSnapshot::mirrored_keys_total`].
    pub fn mirrored_keys_total(&self) -> u64 {
        self.mirrored_keys.load(Ordering::Relaxed)
    }

    /// See [`BridgeStatsSnapshot::definitions_applied_total`].
    pub fn definitions_applied_total(&self) -> u64 {
        self.definitions_applied.load(Ordering::Relaxed)
    }

    /// See [`BridgeStatsSnapshot::failures_total`].
    pub fn failures_total(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// See [`BridgeStatsSnapshot::resyncs_total`].
    pub fn resyncs_total(&self) -> u64 {
        self.resyncs.load(Ordering::Relaxed)
    }

    /// See [`BridgeStatsSnapshot::last_sync_unix_seconds`].
    pub fn last_sync_unix_seconds(&self) -> u64 {
        self.last_sync.load(Ordering::Relaxed)
    }

    /// See [`BridgeStatsSnapshot::keys_skipped_total`].
    pub fn keys_skipped_total(&self) -> u64 {
        self.keys_skipped.load(Ordering::Relaxed)
    }

    /// See [`BridgeStatsSnapshot::connected`].
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Every value at once (each read separately, so not one atomic cut).
    pub fn snapshot(&self) -> BridgeStatsSnapshot {
        BridgeStatsSnapshot {
            backlog: self.backlog(),
            mirrored_keys_total: self.mirrored_keys_total(),
            definitions_applied_total: self.definitions_applied_total(),
            failures_total: self.failures_total(),
            resyncs_total: self.resyncs_total(),
            last_sync_unix_seconds: self.last_sync_unix_seconds(),
            keys_skipped_total: self.keys_skipped_total(),
            connected: self.connected(),
        }
    }

    pub(crate) fn set_backlog(&self, keys: usize) {
        self.backlog
            .store(u64::try_from(keys).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub(crate) fn add_mirrored(&self, keys: usize) {
        self.mirrored_keys
            .fetch_add(u64::try_from(keys).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub(crate) fn add_definitions_applied(&self, keys: usize) {
        self.definitions_applied
            .fetch_add(u64::try_from(keys).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub(crate) fn add_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_resync(&self) {
        self.resyncs.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_skipped(&self) {
        self.keys_skipped.fetch_add(1, Ordering::Relaxed);
    }

    /// Records "in sync now" with the wall clock.
    pub(crate) fn synced_now(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        self.last_sync.store(now, Ordering::Relaxed);
    }

    /// Sets `connected`; returns the previous value.
    pub(crate) fn set_connected(&self, connected: bool) -> bool {
        self.connected.swap(connected, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snapshot_reads_every_value() {
        let stats = BridgeStats::default();
        assert_eq!(stats.snapshot(), BridgeStatsSnapshot::default());
        stats.set_backlog(3);
        stats.add_mirrored(2);
        stats.add_mirrored(1);
        stats.add_definitions_applied(4);
        stats.add_failure();
        stats.add_resync();
        stats.add_skipped();
        assert!(!stats.set_connected(true));
        stats.synced_now();
        let snapshot = stats.snapshot();
        assert_eq!(
            snapshot,
            BridgeStatsSnapshot {
                backlog: 3,
                mirrored_keys_total: 3,
                definitions_applied_total: 4,
                failures_total: 1,
                resyncs_total: 1,
                last_sync_unix_seconds: snapshot.last_sync_unix_seconds,
                keys_skipped_total: 1,
                connected: true,
            }
        );
        assert!(snapshot.last_sync_unix_seconds > 1_700_000_000);
    }
}
