//! Shared fixtures of the bridge's tests: our store (a `MemoryStore`), the
//! service double over real gRPC, a running bridge, and "eventually".

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pullpiri_kv::testing::RocksDbServiceDouble;
use pullpiri_kv::{Bridge, BridgeConfig, BridgeStats, STATE_PREFIXES, ValueFormat};
use state_store::{Batch, MemoryStore, StateStore, get_all};
use tokio::sync::watch;

/// How long "eventually" waits before failing.
pub const WITHIN: Duration = Duration::from_secs(10);

/// A configuration for tests: fast polls and back-off, generous deadlines.
pub fn config(url: String) -> BridgeConfig {
    BridgeConfig {
        url,
        poll: Duration::from_millis(50),
        request_timeout: Duration::from_secs(2),
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..BridgeConfig::default()
    }
}

/// Our store, the double and a bridge between them.
pub struct Fixture {
    pub store: MemoryStore,
    pub double: RocksDbServiceDouble,
    pub bridge: Option<Bridge>,
    pub stats: Arc<BridgeStats>,
    pub stop: watch::Sender<bool>,
}

impl Fixture {
    /// A bridge with [`config`] between a fresh store and a fresh double.
    pub async fn start() -> Self {
        Self::start_with(MemoryStore::default(), |_| {}).await
    }

    /// A bridge between `store` and a fresh double; `adjust` edits the
    /// configuration, `prepare` the double before the bridge starts.
    pub async fn start_with(store: MemoryStore, adjust: impl FnOnce(&mut BridgeConfig)) -> Self {
        let double = RocksDbServiceDouble::start()
            .await
            .expect("start the double");
        Self::start_between(store, double, adjust)
    }

    /// A bridge between `store` and `double`.
    pub fn start_between(
        store: MemoryStore,
        double: RocksDbServiceDouble,
        adjust: impl FnOnce(&mut BridgeConfig),
    ) -> Self {
        let mut config = config(double.url());
        adjust(&mut config);
        let (stop, shutdown) = watch::channel(false);
        let shared: Arc<dyn StateStore> = Arc::new(store.clone());
        let bridge = Bridge::spawn(shared, config, shutdown).expect("spawn the bridge");
        let stats = bridge.stats();
        Self {
            store,
            double,
            bridge: Some(bridge),
            stats,
            stop,
        }
    }

    /// Asks for shutdown and waits (5 s at most) for the bridge to end.
    pub async fn shutdown(&mut self) {
        let _ = self.stop.send(true);
        if let Some(bridge) = self.bridge.take() {
            tokio::time::timeout(Duration::from_secs(5), bridge.join())
                .await
                .expect("the bridge ends within 5 s of shutdown");
        }
    }

    /// Puts `key` = `value` into our store.
    pub async fn put(&self, key: &str, value: &str) {
        self.store
            .apply(Batch::new().put(key, value))
            .await
            .expect("put into our store");
    }

    /// Deletes `key` from our store.
    pub async fn delete(&self, key: &str) {
        self.store.delete(key).await.expect("delete from our store");
    }

    /// The value of `key` in our store.
    pub async fn ours(&self, key: &str) -> Option<String> {
        read(&self.store, key).await
    }

    /// Our state keys, with values as the service should hold them.
    pub async fn our_states(&self, format: ValueFormat) -> BTreeMap<String, String> {
        let mut states = BTreeMap::new();
        for prefix in STATE_PREFIXES {
            let (kvs, _) = get_all(&self.store, prefix, 100).await.expect("read ours");
            for kv in kvs {
                let value = String::from_utf8(kv.value).expect("UTF-8");
                let theirs = pullpiri_kv::service_value(format, &kv.key, &value).into_owned();
                states.insert(kv.key, theirs);
            }
        }
        states
    }

    /// The service's keys under the state prefixes.
    pub fn their_states(&self) -> BTreeMap<String, String> {
        STATE_PREFIXES
            .iter()
            .flat_map(|prefix| self.double.snapshot_under(prefix))
            .collect()
    }
}

/// The value of `key` in `store`.
pub async fn read(store: &MemoryStore, key: &str) -> Option<String> {
    store
        .get(key)
        .await
        .expect("read our store")
        .map(|kv| String::from_utf8(kv.value).expect("UTF-8"))
}

/// Waits until `check` holds, polling every 20 ms; fails the test naming
/// `what` after [`WITHIN`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return;
        }
        assert!(started.elapsed() < WITHIN, "not within {WITHIN:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`eventually`] for a check that needs no `.await`.
pub async fn eventually_sync(what: &str, mut check: impl FnMut() -> bool) {
    eventually(what, || std::future::ready(check())).await;
}
