//! Recovery actions and the strategy table per issue type (RECOVERY.md §2–3):
//! the ordered ladder of actions, retries, back-off and escalation, with the
//! documented defaults and the validation of a configured table.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::issue::IssueType;

/// One rung of a ladder: what the StateManager asks for (seed 003's
/// `RecoveryAction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RecoveryAction {
    /// `Reconcile(scenario, FAILED, RUNNING)` for each scenario of the package.
    Restart,
    /// `TriggerAction(scenario)`: run the scenario's action again.
    Recreate,
    /// `OffloadModel` for each Dead model to another live node.
    Relocate,
    /// Roll back to the previous version: not offered by the ActionController.
    RollbackVersion,
    /// Reset the configuration: not offered by the ActionController.
    ResetConfig,
    /// A Warning alert (critical on the last rung) and an ALERT event.
    Notify,
    /// Mark the resource isolated: no further automatic recovery.
    Isolate,
}

impl RecoveryAction {
    /// Every action, in declaration order.
    pub const ALL: [RecoveryAction; 7] = [
        RecoveryAction::Restart,
        RecoveryAction::Recreate,
        RecoveryAction::Relocate,
        RecoveryAction::RollbackVersion,
        RecoveryAction::ResetConfig,
        RecoveryAction::Notify,
        RecoveryAction::Isolate,
    ];

    /// Whether the StateManager can carry it out (RECOVERY.md §3). An
    /// unsupported rung is recorded as such and the ladder moves past it,
    /// never silently skipped.
    pub fn is_supported(self) -> bool {
        !matches!(
            self,
            RecoveryAction::RollbackVersion | RecoveryAction::ResetConfig
        )
    }

    /// The canonical name (`Restart`).
    pub fn as_str(self) -> &'static str {
        match self {
            RecoveryAction::Restart => "Restart",
            RecoveryAction::Recreate => "Recreate",
            RecoveryAction::Relocate => "Relocate",
            RecoveryAction::RollbackVersion => "RollbackVersion",
            RecoveryAction::ResetConfig => "ResetConfig",
            RecoveryAction::Notify => "Notify",
            RecoveryAction::Isolate => "Isolate",
        }
    }
}

/// Exponential back-off between repeats of one rung, with jitter so many
/// incidents do not act in step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The first delay (default 2 s).
    pub base: Duration,
    /// The largest delay before jitter (default 60 s).
    pub cap: Duration,
    /// The smallest jitter factor (default 0.5).
    pub jitter_min: f64,
    /// The largest jitter factor (default 1.0).
    pub jitter_max: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(2),
            cap: Duration::from_secs(60),
            jitter_min: 0.5,
            jitter_max: 1.0,
        }
    }
}

impl Backoff {
    /// The capped delay before repeat `attempt` (from 1), before jitter:
    /// `base × 2^(attempt-1)`, at most `cap`.
    pub fn capped(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(30);
        self.base.saturating_mul(1u32 << exponent).min(self.cap)
    }

    /// The jittered delay: `unit` in `[0, 1]` (clamped; the engine draws it)
    /// picks a factor between `jitter_min` and `jitter_max`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let unit = if unit.is_nan() {
            0.0
        } else {
            unit.clamp(0.0, 1.0)
        };
        let factor = self.jitter_min + (self.jitter_max - self.jitter_min) * unit;
        self.capped(attempt)
            .mul_f64(factor.clamp(self.jitter_min, self.jitter_max))
    }
}

/// How one issue type is recovered (seed 003's `RecoveryStrategy`).
#[derive(Debug, Clone, PartialEq)]
pub struct Strategy {
    /// A bound on all executed actions of one incident (default 8).
    pub max_retry_count: u32,
    /// The wait before a rung is repeated.
    pub backoff: Backoff,
    /// Failed validations on one rung before the next rung (default 1).
    pub escalation_threshold: u32,
    /// How long a healthy state is awaited after an action (default 30 s).
    pub validation_timeout: Duration,
    /// The wait before the first action, so the NodeAgent's own restarts
    /// can work (default 5 s; PackageError's first rung ignores it).
    pub initial_delay: Duration,
    /// The ladder, first rung first.
    pub actions: Vec<RecoveryAction>,
}

impl Strategy {
    /// RECOVERY.md §1's default ladder and §2's defaults for `issue`.
    pub fn default_for(issue: IssueType) -> Self {
        use RecoveryAction::*;
        let actions = match issue {
            IssueType::PackageError => vec![Restart, Restart, Recreate, Notify, Isolate],
            IssueType::PackageDegraded => vec![Restart, Notify],
            IssueType::ModelDead => vec![Restart, Recreate, Relocate, Notify],
            IssueType::NodeSilent => vec![Relocate, Notify, Isolate],
            IssueType::Flapping => vec![Notify],
            // A Diff incident runs its plan's actions (Strategy::with_actions);
            // this ladder is only used when a plan names none.
            IssueType::Diff => vec![Notify],
            IssueType::Manual => vec![Restart, Recreate, Notify],
        };
        Self {
            max_retry_count: 8,
            backoff: Backoff::default(),
            escalation_threshold: 1,
            validation_timeout: Duration::from_secs(30),
            initial_delay: Duration::from_secs(5),
            actions,
        }
    }

    /// The same strategy with another ladder (a Diff plan's actions, a
    /// Manual request's strategy); an empty list keeps the ladder.
    pub fn with_actions(&self, actions: &[RecoveryAction]) -> Self {
        let mut strategy = self.clone();
        if !actions.is_empty() {
            strategy.actions = actions.to_vec();
        }
        strategy
    }

    /// Checks the bounds; `at` prefixes the field in the error
    /// (`recovery.strategy.package_error`).
    pub fn validate(&self, at: &str) -> Result<(), StrategyError> {
        let error = |field: &str, problem: &str| {
            Err(StrategyError {
                field: format!("{at}.{field}"),
                problem: problem.to_owned(),
            })
        };
        let Backoff {
            base,
            cap,
            jitter_min,
            jitter_max,
        } = self.backoff;
        if self.actions.is_empty() {
            return error("actions", "the ladder is empty");
        }
        if self.max_retry_count == 0 {
            return error("max_retry_count", "must be at least 1");
        }
        if self.escalation_threshold == 0 {
            return error("escalation_threshold", "must be at least 1");
        }
        if self.validation_timeout.is_zero() {
            return error("validation_timeout", "must be longer than 0");
        }
        if base.is_zero() {
            return error("backoff.base", "must be longer than 0");
        }
        if cap < base {
            return error("backoff.cap", "is shorter than backoff.base");
        }
        if !(0.5..=1.0).contains(&jitter_min) {
            return error("backoff.jitter_min", "must be within 0.5..=1.0");
        }
        if !(0.5..=1.0).contains(&jitter_max) || jitter_max < jitter_min {
            return error("backoff.jitter_max", "must be within jitter_min..=1.0");
        }
        Ok(())
    }
}

/// A configured strategy that breaks a bound; `field` is the full key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid recovery strategy: '{field}' {problem}")]
pub struct StrategyError {
    /// The configuration key (`recovery.strategy.package_error.backoff.cap`).
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

/// The strategy of every issue type.
#[derive(Debug, Clone, PartialEq)]
pub struct StrategyTable {
    strategies: BTreeMap<IssueType, Strategy>,
}

impl Default for StrategyTable {
    fn default() -> Self {
        Self {
            strategies: IssueType::ALL
                .into_iter()
                .map(|issue| (issue, Strategy::default_for(issue)))
                .collect(),
        }
    }
}

impl StrategyTable {
    /// The defaults with `overrides` in place of theirs.
    pub fn with(overrides: impl IntoIterator<Item = (IssueType, Strategy)>) -> Self {
        let mut table = Self::default();
        table.strategies.extend(overrides);
        table
    }

    /// The strategy for `issue`.
    pub fn get(&self, issue: IssueType) -> &Strategy {
        // Every issue type has an entry: built from the defaults.
        &self.strategies[&issue]
    }

    /// Checks every strategy; errors name `{prefix}.{issue}.{field}`.
    pub fn validate(&self, prefix: &str) -> Result<(), StrategyError> {
        self.strategies
            .iter()
            .try_for_each(|(issue, s)| s.validate(&format!("{prefix}.{}", issue.as_key())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RecoveryAction::*;
    use proptest::prelude::{prop_assert, proptest};

    #[test]
    fn default_ladders_follow_recovery_md() {
        let table = StrategyTable::default();
        let cases = [
            (
                IssueType::PackageError,
                vec![Restart, Restart, Recreate, Notify, Isolate],
            ),
            (IssueType::PackageDegraded, vec![Restart, Notify]),
            (
                IssueType::ModelDead,
                vec![Restart, Recreate, Relocate, Notify],
            ),
            (IssueType::NodeSilent, vec![Relocate, Notify, Isolate]),
            (IssueType::Flapping, vec![Notify]),
            (IssueType::Diff, vec![Notify]),
            (IssueType::Manual, vec![Restart, Recreate, Notify]),
        ];
        for (issue, ladder) in cases {
            let s = table.get(issue);
            assert_eq!(s.actions, ladder, "{issue:?}");
            assert_eq!(s.escalation_threshold, 1, "{issue:?}");
            assert_eq!(s.max_retry_count, 8, "{issue:?}");
            assert!(s.actions.len() as u32 <= s.max_retry_count, "{issue:?}");
            assert_eq!(s.validation_timeout, Duration::from_secs(30), "{issue:?}");
            assert_eq!(s.initial_delay, Duration::from_secs(5), "{issue:?}");
        }
        table.validate("recovery.strategy").unwrap();
    }

    #[test]
    fn support_follows_the_action_controller() {
        let unsupported: Vec<_> = RecoveryAction::ALL
            .into_iter()
            .filter(|a| !a.is_supported())
            .collect();
        assert_eq!(unsupported, [RollbackVersion, ResetConfig]);
        assert_eq!(Relocate.as_str(), "Relocate");
    }

    #[test]
    fn validation_names_the_field() {
        let good = Strategy::default_for(IssueType::Manual);
        let with = |f: fn(&mut Strategy)| {
            let mut s = good.clone();
            f(&mut s);
            s
        };
        let cases: [(Strategy, &str); 9] = [
            (with(|s| s.actions.clear()), "actions"),
            (with(|s| s.max_retry_count = 0), "max_retry_count"),
            (with(|s| s.escalation_threshold = 0), "escalation_threshold"),
            (
                with(|s| s.validation_timeout = Duration::ZERO),
                "validation_timeout",
            ),
            (with(|s| s.backoff.base = Duration::ZERO), "backoff.base"),
            (
                with(|s| s.backoff.cap = Duration::from_secs(1)),
                "backoff.cap",
            ),
            (with(|s| s.backoff.jitter_min = 0.2), "backoff.jitter_min"),
            (with(|s| s.backoff.jitter_max = 1.5), "backoff.jitter_max"),
            (
                with(|s| {
                    s.backoff.jitter_min = 0.9;
                    s.backoff.jitter_max = 0.6;
                }),
                "backoff.jitter_max",
            ),
        ];
        for (strategy, field) in cases {
            let table = StrategyTable::with([(IssueType::NodeSilent, strategy)]);
            let error = table.validate("recovery.strategy").unwrap_err();
            assert_eq!(
                error.field,
                format!("recovery.strategy.node_silent.{field}")
            );
            assert!(error.to_string().contains(&error.field));
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let b = Backoff::default();
        let secs: Vec<_> = (1..=7).map(|a| b.capped(a).as_secs()).collect();
        assert_eq!(secs, [2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(b.delay(1, 0.0), Duration::from_secs(1));
        assert_eq!(b.delay(1, 1.0), Duration::from_secs(2));
        assert_eq!(b.delay(1, f64::NAN), Duration::from_secs(1));
        assert_eq!(b.capped(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn with_actions_replaces_the_ladder_unless_empty() {
        let s = Strategy::default_for(IssueType::Diff);
        assert_eq!(s.with_actions(&[Recreate]).actions, [Recreate]);
        assert_eq!(s.with_actions(&[]).actions, [Notify]);
    }

    proptest! {
        #[test]
        fn jittered_backoff_stays_within_half_and_whole(
            attempt in 0u32..100,
            unit in proptest::num::f64::ANY,
            base_ms in 1u64..10_000,
            extra_ms in 0u64..100_000,
        ) {
            let b = Backoff {
                base: Duration::from_millis(base_ms),
                cap: Duration::from_millis(base_ms + extra_ms),
                ..Backoff::default()
            };
            let capped = b.capped(attempt);
            let delay = b.delay(attempt, unit);
            prop_assert!(capped <= b.cap);
            prop_assert!(delay <= capped);
            prop_assert!(delay >= capped.mul_f64(0.5).saturating_sub(Duration::from_nanos(1)));
        }
    }
}
