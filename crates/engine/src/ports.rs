//! The engine's seams to the outside besides the store: the ActionController
//! and the clock. Implemented over gRPC in `transport-grpc`, mocked in tests.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

/// A reconcile request for the ActionController
/// (`Reconcile{scenario_name, current: FAILED, desired: RUNNING}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileRequest {
    /// The scenario whose `spec.target` is the failed package.
    pub scenario: String,
    /// The package that entered the triggering state.
    pub package: String,
    /// That state (`Error`, or `Degraded` when configured).
    pub package_state: String,
}

/// An offloading request (`TriggerOffloading`), forwarded to the
/// ActionController's `OffloadModel`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffloadRequest {
    /// The scenario.
    pub scenario_name: String,
    /// The package.
    pub package_name: String,
    /// The model to move.
    pub model_name: String,
    /// Where it runs now.
    pub source_node: String,
    /// Where it should run.
    pub target_node: String,
    /// The policy that decided it.
    pub policy_name: String,
    /// Why.
    pub reason: String,
}

/// The ActionController's answer to an offload request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffloadAnswer {
    /// Whether the ActionController accepted it.
    pub accepted: bool,
    /// Its message.
    pub message: String,
    /// Its transition id.
    pub transition_id: String,
}

/// Why a call to the ActionController failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// It could not be reached or did not answer in time: worth retrying.
    #[error("ActionController unavailable: {0}")]
    Unavailable(String),
    /// It answered with a refusal.
    #[error("ActionController refused: {0}")]
    Refused(String),
}

/// The ActionController, as the engine needs it.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait ActionPort: Send + Sync + 'static {
    /// Asks the ActionController to reconcile a failed package's scenario.
    /// Implementations bound the call with a timeout.
    async fn reconcile(&self, request: ReconcileRequest) -> Result<(), ActionError>;

    /// Asks the ActionController to run a scenario's action again from its
    /// definition (`TriggerAction`, a recovery's Recreate rung).
    /// Implementations bound the call with a timeout.
    async fn trigger_action(&self, scenario: &str) -> Result<(), ActionError>;

    /// Forwards an offload request.
    async fn offload(&self, request: OffloadRequest) -> Result<OffloadAnswer, ActionError>;
}

/// The time source: wall-clock time for records, plus sleeping, so tests can
/// use tokio's paused clock.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
pub trait Clock: Send + Sync + 'static {
    /// Nanoseconds since the Unix epoch.
    fn now_ns(&self) -> i64;
}

/// The system's wall-clock time in nanoseconds since the Unix epoch (0 before
/// the epoch, `i64::MAX` past 2262): the one conversion of `SystemTime` used
/// for records and wire timestamps. Unlike [`SystemClock`] it does not stop
/// with `tokio::time::pause()`.
pub fn wall_clock_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Wall-clock time, anchored once and advanced with tokio's clock, so
/// `tokio::time::pause()` also pauses it in tests.
#[derive(Debug, Clone)]
pub struct SystemClock {
    anchor_ns: i64,
    anchor: tokio::time::Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        Self {
            anchor_ns: wall_clock_ns(),
            anchor: tokio::time::Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now_ns(&self) -> i64 {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.anchor);
        self.anchor_ns
            .saturating_add(i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX))
    }
}

/// Converts nanoseconds to a `Duration` (0 for negative values).
pub fn ns_to_duration(ns: i64) -> Duration {
    Duration::from_nanos(u64::try_from(ns).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_ns_is_the_system_time() {
        let ns = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_nanos();
        let before = ns(SystemTime::now());
        let now = u128::try_from(wall_clock_ns()).unwrap();
        let after = ns(SystemTime::now());
        assert!(
            before <= now && now <= after,
            "{before} <= {now} <= {after}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_system_clock_starts_at_the_wall_clock_and_moves_with_tokio_time() {
        let clock = SystemClock::default();
        let start = clock.now_ns();
        assert!((wall_clock_ns() - start).abs() < 1_000_000_000);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(clock.now_ns() - start, 5_000_000_000);
    }
}
