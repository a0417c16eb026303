//! Counters and histograms the daemon exposes (Prometheus). Plain atomics:
//! the engine never waits on metrics.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use statemachine_core::MethodClass;

/// Upper bounds (inclusive) of the commit batch size histogram.
pub const BATCH_SIZE_BUCKETS: [u64; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 256];
/// Upper bounds of the commit latency histogram, in microseconds.
pub const LATENCY_BUCKETS_US: [u64; 12] = [
    250, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 512_000, 2_048_000,
];

/// A histogram with fixed buckets.
#[derive(Debug)]
pub struct Histogram<const N: usize> {
    bounds: [u64; N],
    counts: [AtomicU64; N],
    overflow: AtomicU64,
    sum: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    fn new(bounds: [u64; N]) -> Self {
        Self {
            bounds,
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            overflow: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, value: u64) {
        self.sum.fetch_add(value, Ordering::Relaxed);
        match self.bounds.iter().position(|b| value <= *b) {
            Some(i) => self.counts[i].fetch_add(1, Ordering::Relaxed),
            None => self.overflow.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// `(upper bound, cumulative count)` per bucket, then the total count and the sum.
    pub fn snapshot(&self) -> (Vec<(u64, u64)>, u64, u64) {
        let mut cumulative = 0;
        let buckets = self
            .bounds
            .iter()
            .zip(&self.counts)
            .map(|(b, c)| {
                cumulative += c.load(Ordering::Relaxed);
                (*b, cumulative)
            })
            .collect();
        let total = cumulative + self.overflow.load(Ordering::Relaxed);
        (buckets, total, self.sum.load(Ordering::Relaxed))
    }
}

/// Everything the engine counts.
#[derive(Debug)]
pub struct Metrics {
    /// Committed transitions by resource kind (container, model, package, scenario).
    pub transitions: [AtomicU64; 4],
    /// Rejected requests and reports.
    pub rejected: AtomicU64,
    /// Inputs answered "unavailable" (store down, commit failed).
    pub unavailable: AtomicU64,
    /// Inputs whose caller's deadline passed while they were queued (never committed).
    pub expired: AtomicU64,
    /// Store transactions committed.
    pub commits: AtomicU64,
    /// Guard failures (another writer changed a key) that caused a re-plan.
    pub guard_conflicts: AtomicU64,
    /// Inputs per commit.
    pub batch_size: Histogram<9>,
    /// Commit latency in microseconds.
    pub commit_latency_us: Histogram<12>,
    /// Reconcile delivery attempts.
    pub reconcile_attempts: AtomicU64,
    /// Reconcile deliveries that failed.
    pub reconcile_failures: AtomicU64,
    /// Reconcile requests delivered.
    pub reconciles_delivered: AtomicU64,
    /// Outbox records written at start-up or after a re-list for packages
    /// found in a reconcile state without one (a crash lost it).
    pub lost_reconciles: AtomicU64,
    /// Reconcile records waiting in the outbox.
    pub outbox_depth: AtomicU64,
    /// Escalations (retries exhausted, recovery failed).
    pub escalations: AtomicU64,
    /// Packages that entered a reconcile state with no scenario targeting them.
    pub no_scenario: AtomicU64,
    /// Derived transitions along edges the diagrams do not document.
    pub undocumented_edges: AtomicU64,
    /// Reported containers that map to no model.
    pub unmapped_containers: AtomicU64,
    /// Model names in a container's annotations or config that are not valid
    /// resource names: skipped by the mapping, counted so they do not go unseen.
    pub invalid_model_names: AtomicU64,
    /// Node reports superseded by a newer one of the same node before planning.
    pub reports_coalesced: AtomicU64,
    /// Definitions that failed to parse.
    pub bad_definitions: AtomicU64,
    /// Incidents opened (RECOVERY.md §1).
    pub incidents_opened: AtomicU64,
    /// Incidents that ended Completed.
    pub incidents_completed: AtomicU64,
    /// Incidents that ended Failed.
    pub incidents_failed: AtomicU64,
    /// Incidents that ended Aborted.
    pub incidents_aborted: AtomicU64,
    /// Open incidents by phase: Initializing, Executing, Validating.
    pub incidents_open: [AtomicU64; 3],
    /// Moves to the next rung after a failed validation.
    pub recovery_escalations: AtomicU64,
    /// Rungs taken, by action (`RecoveryAction` order: Restart, Recreate,
    /// Relocate, RollbackVersion, ResetConfig, Notify, Isolate).
    pub recovery_actions: [AtomicU64; 7],
    /// Alerts raised (or raised again), by severity (Info, Warning, Error, Critical).
    pub alerts_raised: [AtomicU64; 4],
    /// Open (Active or Acknowledged) alerts, by severity.
    pub alerts_open: [AtomicU64; 4],
    /// Resources flapping now.
    pub flapping_resources: AtomicU64,
    /// Times a resource started flapping.
    pub flapping_detected: AtomicU64,
    /// Model and package keys another writer changed to a value the
    /// reports do not derive.
    pub foreign_writes: AtomicU64,
    /// Calls the access policy denied (mTLS), by method class in
    /// [`MethodClass::ALL`] order (state_change, report, read, recovery,
    /// offload); rendered as `statemanager_denied_total{method}`. Nothing
    /// was written for them. Counted at the gRPC edge, state changes
    /// denied by the planner included; also counted in `rejected` when the
    /// engine refused them.
    pub denied: [AtomicU64; MethodClass::ALL.len()],
    /// When each node last reported (ns since the epoch); at start-up, the
    /// start-up time for nodes known from the store.
    node_last_seen: Mutex<BTreeMap<String, i64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            transitions: std::array::from_fn(|_| AtomicU64::new(0)),
            rejected: AtomicU64::new(0),
            unavailable: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            guard_conflicts: AtomicU64::new(0),
            batch_size: Histogram::new(BATCH_SIZE_BUCKETS),
            commit_latency_us: Histogram::new(LATENCY_BUCKETS_US),
            reconcile_attempts: AtomicU64::new(0),
            reconcile_failures: AtomicU64::new(0),
            reconciles_delivered: AtomicU64::new(0),
            lost_reconciles: AtomicU64::new(0),
            outbox_depth: AtomicU64::new(0),
            escalations: AtomicU64::new(0),
            no_scenario: AtomicU64::new(0),
            undocumented_edges: AtomicU64::new(0),
            unmapped_containers: AtomicU64::new(0),
            invalid_model_names: AtomicU64::new(0),
            reports_coalesced: AtomicU64::new(0),
            bad_definitions: AtomicU64::new(0),
            incidents_opened: AtomicU64::new(0),
            incidents_completed: AtomicU64::new(0),
            incidents_failed: AtomicU64::new(0),
            incidents_aborted: AtomicU64::new(0),
            incidents_open: std::array::from_fn(|_| AtomicU64::new(0)),
            recovery_escalations: AtomicU64::new(0),
            recovery_actions: std::array::from_fn(|_| AtomicU64::new(0)),
            alerts_raised: std::array::from_fn(|_| AtomicU64::new(0)),
            alerts_open: std::array::from_fn(|_| AtomicU64::new(0)),
            flapping_resources: AtomicU64::new(0),
            flapping_detected: AtomicU64::new(0),
            foreign_writes: AtomicU64::new(0),
            denied: std::array::from_fn(|_| AtomicU64::new(0)),
            node_last_seen: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Metrics {
    /// Counts a call of `class` the access policy denied.
    pub fn count_denied(&self, class: MethodClass) {
        inc(&self.denied[class.index()]);
    }

    /// Denied calls of `class` so far.
    pub fn denied(&self, class: MethodClass) -> u64 {
        self.denied[class.index()].load(Ordering::Relaxed)
    }

    /// Every node with the time it last reported (ns since the epoch), by name.
    pub fn node_last_seen(&self) -> Vec<(String, i64)> {
        let nodes = self
            .node_last_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        nodes.iter().map(|(n, t)| (n.clone(), *t)).collect()
    }

    pub(crate) fn node_seen(&self, node: &str, at_ns: i64) {
        let mut nodes = self
            .node_last_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match nodes.get_mut(node) {
            Some(t) => *t = at_ns,
            None => {
                nodes.insert(node.to_owned(), at_ns);
            }
        }
    }
}

/// Increments a counter.
pub(crate) fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
