//! The recovery strategy for reconcile requests (seed 003: retry count,
//! backoff, escalation): how long to wait before the next delivery attempt,
//! and when to stop retrying and escalate instead of looping forever.

use std::time::Duration;

/// How reconcile requests are retried and escalated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryPolicy {
    /// Delivery attempts to an unreachable ActionController before the
    /// request is escalated (it stays in the outbox and is retried at the
    /// capped backoff, but an alert is raised once).
    pub max_delivery_attempts: u32,
    /// Reconciles requested for one package that is still in Error before
    /// the StateManager stops asking and escalates.
    pub max_reconciles_per_incident: u32,
    /// The first retry delay.
    pub base_backoff: Duration,
    /// The largest retry delay.
    pub max_backoff: Duration,
}

impl Default for RecoveryPolicy {
    fn default() -> Self {
        Self {
            max_delivery_attempts: 10,
            max_reconciles_per_incident: 3,
            base_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// What to do after a failed delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Try again after this delay.
    Retry(Duration),
    /// Raise an alert once, then keep retrying after this (capped) delay.
    EscalateAndRetry(Duration),
}

impl RecoveryPolicy {
    /// The delay before attempt `attempt + 1` (attempt counts from 1),
    /// exponential from `base_backoff`, capped at `max_backoff`, scaled by
    /// `jitter` in `[0.5, 1.0]` (clamped) so many requests do not retry in step.
    pub fn backoff(&self, attempt: u32, jitter: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(30);
        let raw = self.base_backoff.saturating_mul(1u32 << exponent);
        raw.min(self.max_backoff).mul_f64(jitter.clamp(0.5, 1.0))
    }

    /// What to do after delivery attempt `attempt` (from 1) failed.
    pub fn after_failure(&self, attempt: u32, jitter: f64) -> NextStep {
        let delay = self.backoff(attempt, jitter);
        if attempt == self.max_delivery_attempts {
            NextStep::EscalateAndRetry(delay)
        } else {
            NextStep::Retry(delay)
        }
    }

    /// Whether another reconcile may be requested for a package that entered
    /// Error for the `incident`-th time without recovering in between.
    pub fn may_reconcile(&self, incident: u32) -> bool {
        incident <= self.max_reconciles_per_incident
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let policy = RecoveryPolicy {
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            ..Default::default()
        };
        let delays: Vec<_> = (1..=6)
            .map(|a| policy.backoff(a, 1.0).as_millis())
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(policy.backoff(1, 0.5), Duration::from_millis(50));
        assert_eq!(policy.backoff(1, 7.0), Duration::from_millis(100));
        assert_eq!(policy.backoff(u32::MAX, 1.0), Duration::from_secs(1));
    }

    #[test]
    fn escalates_exactly_once_at_the_limit() {
        let policy = RecoveryPolicy {
            max_delivery_attempts: 3,
            ..Default::default()
        };
        let steps: Vec<_> = (1..=5).map(|a| policy.after_failure(a, 1.0)).collect();
        assert!(matches!(steps[0], NextStep::Retry(_)));
        assert!(matches!(steps[1], NextStep::Retry(_)));
        assert!(matches!(steps[2], NextStep::EscalateAndRetry(_)));
        assert!(matches!(steps[3], NextStep::Retry(_)));
        assert!(policy.may_reconcile(3));
        assert!(!policy.may_reconcile(4));
    }
}
