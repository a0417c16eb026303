//! The StateDiff planner (RECOVERY.md §5, seed 003's `StateDiff` and
//! `ActionPlan`): from what differs between desired and actual, the actions
//! to take, their priority and their impact, or why nothing needs doing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::name::ResourceKind;

use super::strategy::RecoveryAction;

/// Should the resource exist, and does it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExistenceDiff {
    /// Whether it is defined (desired).
    pub expected: bool,
    /// Whether the node has it.
    pub actual: bool,
}

/// Replica counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleDiff {
    /// Replicas asked for.
    pub desired: u32,
    /// Replicas running.
    pub actual: u32,
}

/// Versions (image tags, definition versions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionDiff {
    /// The version asked for.
    pub desired: String,
    /// The version running.
    pub actual: String,
}

/// Configuration keys whose values differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigDiff {
    /// The differing keys.
    pub keys: Vec<String>,
}

/// States (canonical names, `Running`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusDiff {
    /// The state asked for.
    pub desired: String,
    /// The state observed.
    pub actual: String,
}

/// What differs for one resource (seed 003's `StateDiff`); absent parts agree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateDiff {
    /// The resource's kind.
    #[serde(with = "super::kind_segment")]
    pub kind: ResourceKind,
    /// The resource's name.
    pub name: String,
    /// Existence, if it differs.
    pub existence: Option<ExistenceDiff>,
    /// Scale, if it differs.
    pub scale: Option<ScaleDiff>,
    /// Version, if it differs.
    pub version: Option<VersionDiff>,
    /// Configuration, if it differs.
    pub config: Option<ConfigDiff>,
    /// Status, if it differs.
    pub status: Option<StatusDiff>,
}

/// How soon a plan runs; plans sort highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Priority {
    /// Scale differences.
    Low,
    /// Version and configuration differences.
    Normal,
    /// Raised by an ASIL level.
    High,
    /// Existence or status differences of a running package.
    Critical,
}

impl Priority {
    fn raised(self) -> Self {
        match self {
            Priority::Low => Priority::Normal,
            Priority::Normal => Priority::High,
            Priority::High | Priority::Critical => Priority::Critical,
        }
    }
}

/// What carrying out a plan disturbs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Impact {
    /// Whether the plan restarts or moves the workload (service interruption).
    pub disruptive: bool,
    /// Which parts of the diff the plan answers (`existence`, `status`, ...).
    pub parts: Vec<String>,
}

/// The plan for one diff (seed 003's `ActionPlan`); it runs as a Diff incident
/// whose ladder is `actions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionPlan {
    /// The resource's kind.
    #[serde(with = "super::kind_segment")]
    pub kind: ResourceKind,
    /// The resource's name.
    pub name: String,
    /// The ladder, most pressing part first, without repeats, ending in Notify.
    pub actions: Vec<RecoveryAction>,
    /// How soon it runs.
    pub priority: Priority,
    /// What it disturbs.
    pub impact: Impact,
}

/// Why a diff needs no action; the answer to `SendStateDiff`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no action for {kind} '{name}': {reason}")]
pub struct NoAction {
    /// The resource's kind.
    pub kind: ResourceKind,
    /// The resource's name.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// An ISO 26262 safety level, from a definition's annotations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AsilLevel {
    /// Quality managed: no safety level; does not raise priority.
    Qm,
    /// ASIL A.
    A,
    /// ASIL B.
    B,
    /// ASIL C.
    C,
    /// ASIL D.
    D,
}

impl AsilLevel {
    /// Reads the `asil` annotation (`QM`, `A`–`D`, optionally `ASIL-` or
    /// `ASIL_` prefixed, any case); absent or unreadable gives `None`.
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Option<Self> {
        let value = annotations.get("asil")?.trim().to_ascii_uppercase();
        let bare = value
            .strip_prefix("ASIL-")
            .or_else(|| value.strip_prefix("ASIL_"))
            .unwrap_or(&value);
        match bare {
            "QM" => Some(AsilLevel::Qm),
            "A" => Some(AsilLevel::A),
            "B" => Some(AsilLevel::B),
            "C" => Some(AsilLevel::C),
            "D" => Some(AsilLevel::D),
            _ => None,
        }
    }
}

/// What the planner knows beyond the diff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlanContext {
    /// Whether the resource is a package whose committed state is Running
    /// (or, for a model, whose package is): its outage is critical.
    pub running: bool,
    /// The safety level from the package's definition annotations.
    pub asil: Option<AsilLevel>,
}

/// Plans `diff` (RECOVERY.md §5): existence or status diffs of a running
/// package are Critical, version and config Normal, scale Low; an ASIL level
/// above QM raises the priority one step. Parts whose desired and actual
/// agree are ignored; if none is left the answer is [`NoAction`].
pub fn plan_diff(diff: &StateDiff, context: PlanContext) -> Result<ActionPlan, NoAction> {
    use RecoveryAction::*;
    let no_action = |reason: &str| NoAction {
        kind: diff.kind,
        name: diff.name.clone(),
        reason: reason.to_owned(),
    };
    let outage = if context.running {
        Priority::Critical
    } else {
        Priority::Normal
    };
    // (part, priority, actions), most pressing first.
    let mut parts: Vec<(&str, Priority, &[RecoveryAction])> = Vec::new();
    if let Some(e) = diff.existence.as_ref().filter(|e| e.expected != e.actual) {
        // Missing: run the scenario's action again. Present but not defined:
        // the ActionController cannot delete it, so tell an operator.
        let actions: &[RecoveryAction] = if e.expected { &[Recreate] } else { &[Notify] };
        parts.push(("existence", outage, actions));
    }
    if diff.status.as_ref().is_some_and(|s| s.desired != s.actual) {
        parts.push(("status", outage, &[Restart, Recreate]));
    }
    if diff.version.as_ref().is_some_and(|v| v.desired != v.actual) {
        parts.push(("version", Priority::Normal, &[Recreate, RollbackVersion]));
    }
    if diff.config.as_ref().is_some_and(|c| !c.keys.is_empty()) {
        parts.push(("config", Priority::Normal, &[ResetConfig, Recreate]));
    }
    if diff.scale.as_ref().is_some_and(|s| s.desired != s.actual) {
        // No scaling call exists at the ActionController.
        parts.push(("scale", Priority::Low, &[Notify]));
    }
    if parts.is_empty() {
        let any = diff.existence.is_some()
            || diff.scale.is_some()
            || diff.version.is_some()
            || diff.config.is_some()
            || diff.status.is_some();
        return Err(no_action(if any {
            "desired and actual agree in every part"
        } else {
            "the diff holds no difference"
        }));
    }
    parts.sort_by_key(|(_, priority, _)| std::cmp::Reverse(*priority));
    let mut priority = parts[0].1;
    if context.asil.is_some_and(|a| a > AsilLevel::Qm) {
        priority = priority.raised();
    }
    let mut actions: Vec<RecoveryAction> = Vec::new();
    for action in parts
        .iter()
        .flat_map(|(_, _, a)| a.iter().copied())
        .chain([Notify])
    {
        if !actions.contains(&action) {
            actions.push(action);
        }
    }
    // Notify last: it is the rung after every fix has been tried.
    actions.retain(|a| *a != Notify);
    actions.push(Notify);
    let disruptive = actions
        .iter()
        .any(|a| matches!(a, Restart | Recreate | Relocate | RollbackVersion | Isolate));
    Ok(ActionPlan {
        kind: diff.kind,
        name: diff.name.clone(),
        actions,
        priority,
        impact: Impact {
            disruptive,
            parts: parts.iter().map(|(p, _, _)| (*p).to_owned()).collect(),
        },
    })
}

/// Orders plans highest priority first (stable: equal plans keep their order).
pub fn sort_plans(plans: &mut [ActionPlan]) {
    plans.sort_by_key(|p| std::cmp::Reverse(p.priority));
}

#[cfg(test)]
#[path = "diff_tests.rs"]
mod tests;
