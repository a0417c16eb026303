//! Every knob of the engine, with the defaults of the design documents.

use std::time::Duration;

use statemachine_core::CoreConfig;

use crate::healing::HealingConfig;
use statemachine_core::keys::DEFAULT_BOOKKEEPING_PREFIX;
use statemachine_core::recovery::RecoveryPolicy;

/// The engine's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// The rules' knobs (grace, node timeout, reconcile states, scenario policy).
    pub core: CoreConfig,
    /// The prefix of the StateManager's own keys (default `/statemanager/`).
    pub bookkeeping_prefix: String,
    /// History entries kept per resource (default 100); older ones are
    /// pruned in the same transaction.
    pub history_limit: usize,
    /// Inputs committed together at most (group commit).
    pub max_batch_inputs: usize,
    /// Containers of node reports committed together at most (default
    /// 4096): a burst of large reports is planned a few at a time, so the
    /// plans and transactions in memory stay bounded and the first reports
    /// are not held back by the last. A single larger report is still taken.
    pub max_batch_containers: usize,
    /// Operations one store transaction may hold (etcd's `--max-txn-ops`, 128).
    pub max_txn_ops: usize,
    /// Commands waiting for the engine at most; callers beyond wait.
    pub queue_capacity: usize,
    /// How long a commit may take before the inputs are answered "unavailable".
    pub commit_timeout: Duration,
    /// Re-plans after a guard failure (another writer changed a key) before
    /// the inputs are answered "unavailable".
    pub max_guard_retries: u32,
    /// Delivery of the outbox's calls to the ActionController: retries,
    /// back-off and the alert when it stays unreachable.
    pub recovery: RecoveryPolicy,
    /// Self-healing: incidents, ladders, tracker and alerts (RECOVERY.md).
    pub healing: HealingConfig,
    /// Events buffered per subscriber before it is told it lagged.
    pub event_buffer: usize,
    /// Page size of start-up reads.
    pub load_page_size: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            core: CoreConfig::default(),
            bookkeeping_prefix: DEFAULT_BOOKKEEPING_PREFIX.to_owned(),
            history_limit: 100,
            max_batch_inputs: 256,
            max_batch_containers: 4096,
            max_txn_ops: 128,
            queue_capacity: 4096,
            commit_timeout: Duration::from_secs(5),
            max_guard_retries: 5,
            recovery: RecoveryPolicy::default(),
            healing: HealingConfig::default(),
            event_buffer: 1024,
            load_page_size: 2000,
        }
    }
}
