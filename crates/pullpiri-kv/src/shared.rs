//! What both tasks of the bridge share: our store, the service's client, the
//! configuration and the metrics, with the bookkeeping every call makes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use state_store::{StateStore, StoreError};
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::key::check_service_key;
use crate::value::service_value;
use crate::{BridgeConfig, BridgeStats, CallError, RocksDbClient};

/// The service's reachability as last logged, so an outage is logged once
/// when it starts and once when it ends, not at every retry.
const LINK_UNKNOWN: u8 = 0;
const LINK_UP: u8 = 1;
const LINK_DOWN: u8 = 2;

pub(crate) struct Shared {
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) client: RocksDbClient,
    pub(crate) config: BridgeConfig,
    pub(crate) stats: Arc<BridgeStats>,
    link: AtomicU8,
}

impl Shared {
    pub(crate) fn new(
        store: Arc<dyn StateStore>,
        client: RocksDbClient,
        config: BridgeConfig,
        stats: Arc<BridgeStats>,
    ) -> Self {
        Self {
            store,
            client,
            config,
            stats,
            link: AtomicU8::new(LINK_UNKNOWN),
        }
    }

    /// A fresh back-off of the configured bounds.
    pub(crate) fn backoff(&self) -> Backoff {
        Backoff::new(self.config.backoff_initial, self.config.backoff_max)
    }

    /// Books the outcome of a gRPC call: `connected`, `failures_total`, and a
    /// log line when the service goes away or comes back. A refusal is an
    /// answer, not a failure: the caller skips the refused key.
    pub(crate) fn observe<T>(&self, result: Result<T, CallError>) -> Result<T, CallError> {
        match &result {
            Ok(_) => self.link_up(),
            Err(error) if error.is_refused() => self.link_up(),
            Err(error) if error.service_answered() => {
                self.link_up();
                self.stats.add_failure();
                warn!(
                    "the RocksDbService at '{}' answered without success: {error}",
                    self.config.url
                );
            }
            Err(error) => {
                self.stats.add_failure();
                self.stats.set_connected(false);
                if self.link.swap(LINK_DOWN, Ordering::Relaxed) != LINK_DOWN {
                    warn!(
                        "the RocksDbService at '{}' cannot be reached: {error}; retrying with back-off",
                        self.config.url
                    );
                } else {
                    debug!("the RocksDbService is still unreachable: {error}");
                }
            }
        }
        result
    }

    fn link_up(&self) {
        self.stats.set_connected(true);
        match self.link.swap(LINK_UP, Ordering::Relaxed) {
            LINK_DOWN => info!("the RocksDbService at '{}' answers again", self.config.url),
            LINK_UNKNOWN => info!("the RocksDbService at '{}' answers", self.config.url),
            _ => {}
        }
    }

    /// Books the outcome of an operation on our store: a failure counts in
    /// `failures_total` and is logged, except a guard that did not hold (a
    /// concurrent writer; the next round re-plans).
    pub(crate) fn store<T>(
        &self,
        what: &str,
        result: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match &result {
            Ok(_) => {}
            Err(StoreError::GuardFailed { key, .. }) => {
                debug!(
                    "{what}: key '{}' changed in our store meanwhile; trying again later",
                    shown(key)
                );
            }
            Err(error) => {
                self.stats.add_failure();
                warn!("{what}: our store failed: {error}");
            }
        }
        result
    }

    /// The service's form of a state key's value, or `None` (counted and
    /// logged) when the key cannot be sent: the service would refuse the key,
    /// or the value is not UTF-8 (the service's values are strings).
    pub(crate) fn prepare(&self, key: &str, value: &[u8]) -> Option<String> {
        if let Err(refusal) = check_service_key(key) {
            self.skip(key, &refusal);
            return None;
        }
        let Ok(value) = std::str::from_utf8(value) else {
            self.skip(key, &"its value is not UTF-8");
            return None;
        };
        Some(service_value(self.config.values, key, value).into_owned())
    }

    /// Counts and logs a key the bridge does not send.
    pub(crate) fn skip(&self, key: &str, why: &dyn std::fmt::Display) {
        self.stats.add_skipped();
        warn!(
            "state key '{}' is not mirrored to the RocksDbService: {why}",
            shown(key)
        );
    }
}

/// A key as logged: escaped, and cut after 120 characters (a refused key may
/// be long).
pub(crate) fn shown(key: &str) -> String {
    const SHOWN: usize = 120;
    let mut text: String = key.chars().take(SHOWN).collect::<String>();
    if key.chars().nth(SHOWN).is_some() {
        text.push_str("...");
    }
    text.escape_debug().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_keys_are_cut_and_escaped_in_logs() {
        assert_eq!(shown("/model/m/state"), "/model/m/state");
        assert_eq!(shown("a\nb"), "a\\nb");
        let long = "k".repeat(2000);
        assert_eq!(shown(&long), format!("{}...", "k".repeat(120)));
    }
}
