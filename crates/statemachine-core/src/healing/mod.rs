//! Self-healing rules (RECOVERY.md §1–5, issue 11 item 1), pure: when an
//! incident opens ([`issue`]), the strategy ladder per issue type
//! ([`strategy`]), walking the ladder ([`ladder`]), the tracker's flapping
//! and stability figures ([`tracker`]) and the StateDiff planner ([`diff`]).
//!
//! Times are nanoseconds since the Unix epoch (`i64`), as in the history
//! records; the engine passes `now` in. Nothing here reads a clock.

pub mod diff;
pub mod issue;
pub mod ladder;
pub mod strategy;
pub mod tracker;

pub use diff::{ActionPlan, NoAction, PlanContext, Priority, StateDiff, plan_diff};
pub use issue::{Classification, IssueRules, IssueType, Trigger, classify, classify_flapping};
pub use ladder::{Incident, Observation, Phase, Step, next_step};
pub use strategy::{Backoff, RecoveryAction, Strategy, StrategyError, StrategyTable};
pub use tracker::{History, Stability, TrackerRules, is_healthy};

/// `Duration` to nanoseconds, saturating at `i64::MAX`.
pub(crate) fn ns(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

/// Serde for a [`crate::ResourceKind`] as its key segment (`package`).
pub(crate) mod kind_segment {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    use crate::name::ResourceKind;

    pub(crate) fn serialize<S: Serializer>(kind: &ResourceKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(kind.as_key_segment())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ResourceKind, D::Error> {
        let segment = String::deserialize(d)?;
        ResourceKind::from_key_segment(&segment)
            .ok_or_else(|| D::Error::custom(format!("unknown resource kind '{segment}'")))
    }
}
