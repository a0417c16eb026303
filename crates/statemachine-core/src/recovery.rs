//! The recovery strategy for reconcile requests (retry count,
//! backoff, escalation): how long to wait before the next delivery attempt,
//! and when to stop retrying and escalate instead of looping forever.

use std::time::Duration;

use crate::ResourceKind;
use crate::record::{DeliveryRecord, HistoryEntry, OutboxRecord};
use crate::state::PackageState;

/// How reconcile requests are retried and escalated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryPolicy {
    /// Delivery attempts to an unreachable ActionController before the
    /// request is escalated (it stays in the outbox and is retried at the
    /// capped backoff, but an alert is raised once).
    pub max_delivery_attempts: u32,
    /// The first retry delay.
    pub base_backoff: Duration,
    /// The largest retry delay.
    pub max_backoff: Duration,
}

impl Default for RecoveryPolicy {
    fn default() -> Self {
        Self {
            max_delivery_attempts: 10,
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
}

/// A package found in a reconcile state when the outbox is checked (at
/// start-up, after a watch was re-listed), with what the store says of it.
#[derive(Debug, Clone, Copy)]
pub struct FailedPackage<'a> {
    /// The package.
    pub package: &'a str,
    /// Its state (one the configuration reconciles on).
    pub state: PackageState,
    /// The scenario whose `spec.target` it is, if any.
    pub scenario: Option<&'a str>,
    /// Its newest history entry: it tells when it entered `state`.
    pub latest: Option<&'a HistoryEntry>,
    /// Whether an outbox record for it is pending.
    pub pending: bool,
    /// The last delivery recorded for it.
    pub delivered: Option<&'a DeliveryRecord>,
}

/// The reconcile a crash lost, if any: a package in a reconcile state with
/// no pending outbox record and no delivery recorded since it entered that
/// state gets one. The record is the one the transition would have
/// written (same `at_ns`, so the same id), and writing it is idempotent.
/// When the entry time is unknown (no history entry to that state), a
/// recorded delivery counts as the one, and a new record is dated `now_ns`.
pub fn lost_reconcile(failed: &FailedPackage<'_>, now_ns: i64) -> Option<OutboxRecord> {
    if failed.pending {
        return None;
    }
    let scenario = failed.scenario?;
    let entered = failed
        .latest
        .filter(|e| e.to.as_deref() == Some(failed.state.as_str()))
        .map(|e| e.at_ns);
    let delivered_since = match (entered, failed.delivered) {
        (Some(at), Some(delivered)) => delivered.at_ns >= at,
        (None, Some(_)) => true,
        (_, None) => false,
    };
    (!delivered_since).then(|| OutboxRecord {
        scenario: scenario.to_owned(),
        package: failed.package.to_owned(),
        package_state: failed.state.as_str().to_owned(),
        at_ns: entered.unwrap_or(now_ns),
        kind: ResourceKind::Package.as_key_segment().to_owned(),
        step: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(to: &str, at_ns: i64) -> HistoryEntry {
        HistoryEntry {
            from: Some("Running".into()),
            to: Some(to.into()),
            at_ns,
            source: "StateManager".into(),
            transition_id: "t".into(),
            reason: "derived".into(),
            duration_ms: None,
        }
    }

    fn delivered(at_ns: i64) -> DeliveryRecord {
        DeliveryRecord {
            id: format!("{at_ns:020}-p"),
            at_ns,
            delivered_ns: at_ns + 1,
        }
    }

    #[test]
    fn a_lost_reconcile_is_found_once_per_entry() {
        let into_error = entry("Error", 100);
        let other = entry("Running", 100);
        let (old, same, later) = (delivered(50), delivered(100), delivered(200));
        let base = FailedPackage {
            package: "p",
            state: PackageState::Error,
            scenario: Some("s"),
            latest: Some(&into_error),
            pending: false,
            delivered: None,
        };
        // (case, expected at_ns of the record, or None)
        let cases: Vec<(&str, FailedPackage<'_>, Option<i64>)> = vec![
            ("never delivered", base, Some(100)),
            (
                "pending",
                FailedPackage {
                    pending: true,
                    ..base
                },
                None,
            ),
            (
                "no scenario",
                FailedPackage {
                    scenario: None,
                    ..base
                },
                None,
            ),
            (
                "delivered before this entry",
                FailedPackage {
                    delivered: Some(&old),
                    ..base
                },
                Some(100),
            ),
            (
                "delivered for this entry",
                FailedPackage {
                    delivered: Some(&same),
                    ..base
                },
                None,
            ),
            (
                "delivered later",
                FailedPackage {
                    delivered: Some(&later),
                    ..base
                },
                None,
            ),
            (
                "no history",
                FailedPackage {
                    latest: None,
                    ..base
                },
                Some(7),
            ),
            (
                "no history, delivered",
                FailedPackage {
                    latest: None,
                    delivered: Some(&old),
                    ..base
                },
                None,
            ),
            (
                "history to another state",
                FailedPackage {
                    latest: Some(&other),
                    ..base
                },
                Some(7),
            ),
        ];
        for (case, failed, expected) in cases {
            let record = lost_reconcile(&failed, 7);
            assert_eq!(record.as_ref().map(|r| r.at_ns), expected, "{case}");
            if let Some(record) = record {
                assert_eq!(
                    (
                        record.scenario.as_str(),
                        record.package.as_str(),
                        record.package_state.as_str()
                    ),
                    ("s", "p", "Error"),
                    "{case}"
                );
            }
        }
        // The record is the one the transition would have written.
        let record = lost_reconcile(&base, 7).unwrap();
        assert_eq!(record.id(), format!("{:020}-p", 100));
    }

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
    }
}
