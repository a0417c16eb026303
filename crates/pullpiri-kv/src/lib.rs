//! A bridge between the StateManager's store and upstream Pullpiri's
//! RocksDbService.
//!
//! Current upstream Pullpiri keeps the keys its components share in
//! `rocksdbservice.RocksDbService`, a gRPC key-value service (port 47007) with
//! no revisions and no watch. The StateManager keeps its own store (embedded
//! or etcd, behind [`StateStore`]) as the source of truth. The [`Bridge`]
//! connects the two with two independent tasks:
//!
//! - **definitions in**: every `poll` it reads `Scenario/`, `Package/` and
//!   `Model/` from the service and applies the differences to our store
//!   (guarded batches within the store's limits). The engine watches those
//!   prefixes, so it sees additions, changes and deletions as it would from
//!   etcd. The service is authoritative for them, but only after a successful
//!   read of a prefix: an unreachable service never deletes a definition.
//! - **states out**: every committed key under `/scenario/`, `/package/`,
//!   `/model/` and `/container/` is mirrored to the service: a full resync at
//!   start-up, after an outage, a backlog overflow or a compacted watch; in
//!   between, the store's watch forwarded in commit order through a backlog
//!   coalesced by key. Values are written as upstream's StateManager writes
//!   them ([`ValueFormat::Upstream`], see [`service_value`]) or unchanged
//!   ([`ValueFormat::Canonical`]).
//!
//! The bridge never blocks or fails the engine: it only reads our store's
//! state keys and writes definitions through guarded batches; every gRPC
//! call has a deadline, every retry loop a bounded back-off with jitter.
//! Its metrics are in [`BridgeStats`]. `docs/pullpiri.md` describes it for
//! operators.
//!
//! The `testing` feature adds [`testing::RocksDbServiceDouble`], an
//! in-process RocksDbService with upstream's quirks, for tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod backlog;
mod backoff;
mod client;
mod config;
mod definitions;
mod error;
mod key;
mod mirror;
pub mod proto;
mod shared;
mod shutdown;
mod stats;
#[cfg(feature = "testing")]
pub mod testing;
mod value;

use std::sync::Arc;

use state_store::StateStore;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info};

pub use client::{Health, RocksDbClient};
pub use config::{BridgeConfig, DEFAULT_URL, ParseValueFormatError, ValueFormat};
pub use error::{BridgeError, CallError};
pub use key::{FORBIDDEN_KEY_CHARS, KeyRefusal, MAX_KEY_BYTES, check_service_key};
pub use stats::{BridgeStats, BridgeStatsSnapshot};
pub use value::service_value;

use error::SyncError;
use shared::Shared;
use shutdown::Shutdown;

/// The definition prefixes read from the service into our store
/// (ETCD-CONTRACT.md: the keys the StateManager reads).
pub const DEFINITION_PREFIXES: [&str; 3] = ["Scenario/", "Package/", "Model/"];

/// The state prefixes mirrored from our store to the service
/// (ETCD-CONTRACT.md: the keys the StateManager writes).
pub const STATE_PREFIXES: [&str; 4] = ["/scenario/", "/package/", "/model/", "/container/"];

/// The page size of the bridge's reads of our store.
const STORE_PAGE_SIZE: usize = 500;

/// A running bridge: its tasks and their metrics.
///
/// The tasks end when the shutdown flag given to [`spawn`](Self::spawn)
/// turns `true` (or its sender is dropped); dropping the `Bridge` does not
/// stop them.
#[derive(Debug)]
pub struct Bridge {
    stats: Arc<BridgeStats>,
    tasks: Vec<JoinHandle<()>>,
}

impl Bridge {
    /// Starts the bridge's tasks; they end when `shutdown` turns true.
    ///
    /// Nothing is contacted yet: the service may be down at start-up (the
    /// bridge retries with back-off). The only errors are a URL that is not
    /// `http://host:port` and a call outside a Tokio runtime.
    pub fn spawn(
        store: Arc<dyn StateStore>,
        config: BridgeConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Bridge, BridgeError> {
        let config = config.clamped();
        let client = RocksDbClient::lazy(
            &config.url,
            config.request_timeout,
            config.max_message_bytes,
        )?;
        let stats = Arc::new(BridgeStats::default());
        let shared = Arc::new(Shared::new(store, client, config, Arc::clone(&stats)));
        let mut tasks = Vec::with_capacity(2);
        if shared.config.read_definitions {
            tasks.push(tokio::spawn(definitions::run(
                Arc::clone(&shared),
                Shutdown::new(shutdown.clone()),
            )));
        }
        if shared.config.mirror_states {
            tasks.push(tokio::spawn(mirror::run(
                Arc::clone(&shared),
                Shutdown::new(shutdown),
            )));
        }
        let definitions = if shared.config.read_definitions {
            format!("read every {:?}", shared.config.poll)
        } else {
            "not read".to_owned()
        };
        let states = if shared.config.mirror_states {
            format!("mirrored as {} values", shared.config.values)
        } else {
            "not mirrored".to_owned()
        };
        info!(
            "bridge to the RocksDbService at '{}' started: definitions {definitions}, states {states}",
            shared.config.url
        );
        Ok(Bridge { stats, tasks })
    }

    /// The bridge's metrics, updated live.
    pub fn stats(&self) -> Arc<BridgeStats> {
        Arc::clone(&self.stats)
    }

    /// Waits until every task of the bridge has ended (after shutdown).
    pub async fn join(self) {
        for task in self.tasks {
            if let Err(error) = task.await
                && error.is_panic()
            {
                error!("a task of the RocksDbService bridge panicked: {error}");
            }
        }
    }
}
