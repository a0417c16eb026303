//! Helpers shared by the etcd-backed tests.

#![allow(dead_code)]

use std::time::Duration;

use etcd_harness::Etcd;
use store_etcd::{EtcdConfig, EtcdStore, RetryPolicy};

/// Short deadlines, so fault tests finish quickly.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// Starts a single-member etcd, failing the test with the harness's message
/// (which says how to install etcd) when it cannot.
pub fn start_etcd() -> Etcd {
    match Etcd::start() {
        Ok(etcd) => etcd,
        Err(error) => panic!("{error}"),
    }
}

/// A test configuration for `etcd`: 1 s deadlines, quick retries.
pub fn test_config(etcd: &Etcd) -> EtcdConfig {
    EtcdConfig {
        connect_timeout: Duration::from_millis(500),
        request_timeout: REQUEST_TIMEOUT,
        retry: RetryPolicy {
            max_attempts: 4,
            base_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
        },
        watch_max_backoff: Duration::from_millis(300),
        ..EtcdConfig::new(etcd.endpoints())
    }
}

pub async fn connect(config: EtcdConfig) -> EtcdStore {
    EtcdStore::connect(config)
        .await
        .expect("EtcdStore::connect")
}

/// Polls `check` every 50 ms until it returns true or `within` passed.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
