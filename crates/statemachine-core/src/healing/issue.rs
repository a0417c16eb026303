//! Issue classification (RECOVERY.md §1): from a resource's committed state,
//! when it entered it and the configuration's switches, whether an incident
//! opens now, later, or not at all, and of which type.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::CoreConfig;
use crate::state::{AnyState, ModelState, PackageState};

use super::ns;
use super::tracker::{History, TrackerRules};

/// What kind of trouble an incident recovers from; it selects the strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum IssueType {
    /// A package entered Error (all its models Dead).
    PackageError,
    /// A package stayed Degraded for `degraded_after`.
    PackageDegraded,
    /// A model stayed Dead for `model_dead_after` (opt-in).
    ModelDead,
    /// `node_timeout` made a node's models Dead.
    NodeSilent,
    /// The resource changes state too often (tracker, §4).
    Flapping,
    /// A `StateDiff` the planner says needs action (§5).
    Diff,
    /// An operator's `TriggerRecovery`.
    Manual,
}

impl IssueType {
    /// Every issue type, in declaration order.
    pub const ALL: [IssueType; 7] = [
        IssueType::PackageError,
        IssueType::PackageDegraded,
        IssueType::ModelDead,
        IssueType::NodeSilent,
        IssueType::Flapping,
        IssueType::Diff,
        IssueType::Manual,
    ];

    /// The snake_case name used in configuration keys (`package_error`).
    pub fn as_key(self) -> &'static str {
        match self {
            IssueType::PackageError => "package_error",
            IssueType::PackageDegraded => "package_degraded",
            IssueType::ModelDead => "model_dead",
            IssueType::NodeSilent => "node_silent",
            IssueType::Flapping => "flapping",
            IssueType::Diff => "diff",
            IssueType::Manual => "manual",
        }
    }
}

/// The switches and delays of classification, with RECOVERY.md §1's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueRules {
    /// How long a package stays Degraded before an incident opens (60 s).
    pub degraded_after: Duration,
    /// How long a model stays Dead before an incident opens (30 s).
    pub model_dead_after: Duration,
    /// Whether Degraded packages are recovered (`reconcile_on` holds Degraded).
    pub degraded: bool,
    /// Whether Dead models get their own incident (opt-in, default off).
    pub model_dead: bool,
    /// Whether `node_timeout` is set, so silent nodes are recovered.
    pub node_silent: bool,
}

impl Default for IssueRules {
    fn default() -> Self {
        Self {
            degraded_after: Duration::from_secs(60),
            model_dead_after: Duration::from_secs(30),
            degraded: false,
            model_dead: false,
            node_silent: false,
        }
    }
}

impl IssueRules {
    /// The rules the core configuration implies (`reconcile_on`,
    /// `node_timeout`), with the ModelDead opt-in given separately.
    pub fn from_config(config: &CoreConfig, model_dead: bool) -> Self {
        Self {
            degraded: config.reconcile_on.contains(&PackageState::Degraded),
            model_dead,
            node_silent: config.node_timeout.is_some(),
            ..Self::default()
        }
    }
}

/// What the engine observed of one resource: its committed state, since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trigger {
    /// The committed state.
    pub state: AnyState,
    /// When the resource entered it (ns).
    pub entered_ns: i64,
    /// Whether the entry was caused by `node_timeout` (the node fell silent)
    /// rather than by a report.
    pub by_node_timeout: bool,
    /// For a model: whether its package has an open incident (that incident
    /// covers it, so no ModelDead opens).
    pub package_incident_open: bool,
}

/// The answer of [`classify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classification {
    /// No incident: the state is not one recovered under these rules.
    None,
    /// An incident of this type opens now.
    Open(IssueType),
    /// An incident of this type opens at this time (ns) if the resource is
    /// still in the state then; the engine sets a timer and asks again.
    At(IssueType, i64),
}

/// Whether `trigger` opens an incident at `now_ns` (RECOVERY.md §1).
///
/// PackageError and NodeSilent open on entry; PackageDegraded and ModelDead
/// only once the state has lasted its delay, so a short dip heals by itself.
pub fn classify(trigger: &Trigger, rules: &IssueRules, now_ns: i64) -> Classification {
    let after = |issue, delay: Duration| {
        let due = trigger.entered_ns.saturating_add(ns(delay));
        if now_ns >= due {
            Classification::Open(issue)
        } else {
            Classification::At(issue, due)
        }
    };
    match trigger.state {
        // §1: a package enters Error -> at once (today's Reconcile).
        AnyState::Package(PackageState::Error) => Classification::Open(IssueType::PackageError),
        AnyState::Package(PackageState::Degraded) if rules.degraded => {
            after(IssueType::PackageDegraded, rules.degraded_after)
        }
        AnyState::Model(ModelState::Dead) if trigger.by_node_timeout && rules.node_silent => {
            Classification::Open(IssueType::NodeSilent)
        }
        AnyState::Model(ModelState::Dead) if rules.model_dead && !trigger.package_incident_open => {
            after(IssueType::ModelDead, rules.model_dead_after)
        }
        _ => Classification::None,
    }
}

/// Whether the tracker's history opens a Flapping incident at `now_ns`
/// (RECOVERY.md §4): at least `flap_threshold` transitions within
/// `flap_window`, whatever the states.
pub fn classify_flapping(history: &History, rules: &TrackerRules, now_ns: i64) -> Classification {
    if history.is_flapping(rules, now_ns) {
        Classification::Open(IssueType::Flapping)
    } else {
        Classification::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{ContainerState, ScenarioState};

    const S: i64 = 1_000_000_000;

    fn trigger(state: AnyState) -> Trigger {
        Trigger {
            state,
            entered_ns: 100 * S,
            by_node_timeout: false,
            package_incident_open: false,
        }
    }

    #[test]
    fn classification_follows_the_table() {
        let all_on = IssueRules {
            degraded: true,
            model_dead: true,
            node_silent: true,
            ..IssueRules::default()
        };
        let off = IssueRules::default();
        let pkg = |s| AnyState::Package(s);
        let dead = AnyState::Model(ModelState::Dead);
        let silent = Trigger {
            by_node_timeout: true,
            ..trigger(dead)
        };
        let covered = Trigger {
            package_incident_open: true,
            ..trigger(dead)
        };
        use Classification as C;
        use IssueType as I;
        // (case, trigger, rules, seconds after entry, expected)
        let cases = [
            (
                "error, at once",
                trigger(pkg(PackageState::Error)),
                &off,
                0,
                C::Open(I::PackageError),
            ),
            (
                "degraded, off",
                trigger(pkg(PackageState::Degraded)),
                &off,
                600,
                C::None,
            ),
            (
                "degraded, early",
                trigger(pkg(PackageState::Degraded)),
                &all_on,
                59,
                C::At(I::PackageDegraded, 160 * S),
            ),
            (
                "degraded, due",
                trigger(pkg(PackageState::Degraded)),
                &all_on,
                60,
                C::Open(I::PackageDegraded),
            ),
            (
                "running",
                trigger(pkg(PackageState::Running)),
                &all_on,
                600,
                C::None,
            ),
            ("model dead, off", trigger(dead), &off, 600, C::None),
            (
                "model dead, early",
                trigger(dead),
                &all_on,
                29,
                C::At(I::ModelDead, 130 * S),
            ),
            (
                "model dead, due",
                trigger(dead),
                &all_on,
                30,
                C::Open(I::ModelDead),
            ),
            (
                "model dead, package covers it",
                covered,
                &all_on,
                600,
                C::None,
            ),
            ("node silent", silent, &all_on, 0, C::Open(I::NodeSilent)),
            ("node silent, timeout off", silent, &off, 0, C::None),
            (
                "model running",
                trigger(AnyState::Model(ModelState::Running)),
                &all_on,
                600,
                C::None,
            ),
            (
                "container dead",
                trigger(AnyState::Container(ContainerState::Dead)),
                &all_on,
                600,
                C::None,
            ),
            (
                "scenario",
                trigger(AnyState::Scenario(ScenarioState::Denied)),
                &all_on,
                600,
                C::None,
            ),
        ];
        for (case, trigger, rules, after_s, expected) in cases {
            let now = trigger.entered_ns + after_s * S;
            assert_eq!(classify(&trigger, rules, now), expected, "{case}");
        }
    }

    #[test]
    fn flapping_opens_from_the_tracker() {
        use crate::healing::tracker::Transition;
        let rules = TrackerRules::default();
        let mut history = History::new(rules.capacity);
        let (run, err) = (
            AnyState::Package(PackageState::Running),
            AnyState::Package(PackageState::Error),
        );
        for i in 0..5 {
            assert_eq!(
                classify_flapping(&history, &rules, i * S),
                Classification::None
            );
            let (from, to) = if i % 2 == 0 { (run, err) } else { (err, run) };
            history.record(Transition {
                at_ns: i * S,
                from,
                to,
            });
        }
        assert_eq!(
            classify_flapping(&history, &rules, 5 * S),
            Classification::Open(IssueType::Flapping)
        );
        assert_eq!(
            classify_flapping(&history, &rules, 61 * S),
            Classification::None
        );
    }

    #[test]
    fn rules_follow_the_core_configuration() {
        let mut config = CoreConfig::default();
        assert_eq!(
            IssueRules::from_config(&config, false),
            IssueRules::default()
        );
        config.reconcile_on.push(PackageState::Degraded);
        config.node_timeout = Some(Duration::from_secs(5));
        let rules = IssueRules::from_config(&config, true);
        assert!(rules.degraded && rules.node_silent && rules.model_dead);
        assert_eq!(rules.degraded_after, Duration::from_secs(60));
        assert_eq!(rules.model_dead_after, Duration::from_secs(30));
    }

    #[test]
    fn keys_are_snake_case_and_distinct() {
        let keys: std::collections::BTreeSet<_> =
            IssueType::ALL.iter().map(|i| i.as_key()).collect();
        assert_eq!(keys.len(), IssueType::ALL.len());
        assert_eq!(IssueType::PackageError.as_key(), "package_error");
    }
}
