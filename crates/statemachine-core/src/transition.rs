//! Transition tables as data: the scenario table of STATE-MACHINES.md §4 and
//! the documented edges of the model and package diagrams (§2, §3).

use crate::error::{ErrorCode, Rejection};
use crate::state::{ModelState, PackageState, ScenarioState};

/// The components that request scenario transitions.
pub const FILTER_GATEWAY: &str = "FilterGateway";
/// The PolicyManager component.
pub const POLICY_MANAGER: &str = "PolicyManager";
/// The ActionController component.
pub const ACTION_CONTROLLER: &str = "ActionController";

/// One row of the scenario transition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScenarioTransition {
    /// The recorded state the edge leaves.
    pub from: ScenarioState,
    /// The requested state.
    pub to: ScenarioState,
    /// The event the edge stands for.
    pub event: &'static str,
    /// The components allowed to request it (enforced only when enabled).
    pub allowed_sources: &'static [&'static str],
    /// The follow-up action the edge announces.
    pub action: &'static str,
}

/// The scenario table (STATE-MACHINES.md §4).
pub const SCENARIO_TRANSITIONS: &[ScenarioTransition] = &[
    ScenarioTransition {
        from: ScenarioState::Idle,
        to: ScenarioState::Waiting,
        event: "condition registered",
        allowed_sources: &[FILTER_GATEWAY],
        action: "start condition evaluation",
    },
    ScenarioTransition {
        from: ScenarioState::Waiting,
        to: ScenarioState::Satisfied,
        event: "condition met",
        allowed_sources: &[FILTER_GATEWAY, ACTION_CONTROLLER],
        action: "start policy verification",
    },
    ScenarioTransition {
        from: ScenarioState::Satisfied,
        to: ScenarioState::Allowed,
        event: "policy verification success",
        allowed_sources: &[POLICY_MANAGER],
        action: "execute action on target package",
    },
    ScenarioTransition {
        from: ScenarioState::Satisfied,
        to: ScenarioState::Denied,
        event: "policy verification failure",
        allowed_sources: &[POLICY_MANAGER],
        action: "log denial, raise alert",
    },
    ScenarioTransition {
        from: ScenarioState::Allowed,
        to: ScenarioState::Completed,
        event: "scenario completed",
        allowed_sources: &[ACTION_CONTROLLER],
        action: "finalize scenario",
    },
];

/// The re-arming edges added by [`ScenarioPolicy::allow_rearm`].
pub const SCENARIO_REARM_TRANSITIONS: &[ScenarioTransition] = &[
    ScenarioTransition {
        from: ScenarioState::Completed,
        to: ScenarioState::Waiting,
        event: "condition registered again",
        allowed_sources: &[FILTER_GATEWAY],
        action: "start condition evaluation",
    },
    ScenarioTransition {
        from: ScenarioState::Denied,
        to: ScenarioState::Waiting,
        event: "condition registered again",
        allowed_sources: &[FILTER_GATEWAY],
        action: "start condition evaluation",
    },
];

/// How scenario requests are validated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScenarioPolicy {
    /// Adds Completed→Waiting and Denied→Waiting.
    pub allow_rearm: bool,
    /// Rejects a request whose `current_state` disagrees with the record
    /// (PRECONDITION_FAILED) instead of reporting it in the answer.
    pub strict_current_state: bool,
    /// Checks the request's source against the edge's allowed sources
    /// (PERMISSION_DENIED otherwise).
    pub enforce_sources: bool,
}

impl ScenarioPolicy {
    /// The edge from `from` to `to`, if the table (with re-arming when
    /// enabled) has one.
    pub fn edge(
        &self,
        from: ScenarioState,
        to: ScenarioState,
    ) -> Option<&'static ScenarioTransition> {
        let rearm: &[ScenarioTransition] = if self.allow_rearm {
            SCENARIO_REARM_TRANSITIONS
        } else {
            &[]
        };
        SCENARIO_TRANSITIONS
            .iter()
            .chain(rearm)
            .find(|t| t.from == from && t.to == to)
    }

    /// The states reachable from `from` in one step.
    pub fn next_states(&self, from: ScenarioState) -> Vec<ScenarioState> {
        ScenarioState::ALL
            .iter()
            .copied()
            .filter(|to| self.edge(from, *to).is_some())
            .collect()
    }

    /// Validates a transition from the recorded state `from` to `to` requested
    /// by `source`: the table, then the source when enforced. Does not
    /// handle the no-op `from == to` (the planner does).
    pub fn check(
        &self,
        from: ScenarioState,
        to: ScenarioState,
        source: &str,
    ) -> Result<&'static ScenarioTransition, Rejection> {
        let edge = self.check_edge(from, to)?;
        if self.enforce_sources && !source_allowed(edge.allowed_sources, source) {
            return Err(Rejection::new(
                ErrorCode::PermissionDenied,
                format!(
                    "source '{}' may not request {from} -> {to}",
                    source.escape_debug()
                ),
                format!("allowed sources: {}", edge.allowed_sources.join(", ")),
            ));
        }
        Ok(edge)
    }

    /// The table's edge from `from` to `to`, or INVALID_STATE_TRANSITION
    /// with the states allowed from `from`. Sources are not checked (an
    /// access policy decides who, [`crate::Policy::transition`]).
    pub fn check_edge(
        &self,
        from: ScenarioState,
        to: ScenarioState,
    ) -> Result<&'static ScenarioTransition, Rejection> {
        let Some(edge) = self.edge(from, to) else {
            let next = self.next_states(from);
            let allowed = if next.is_empty() {
                format!("'{from}' is terminal")
            } else {
                let names: Vec<_> = next.iter().map(|s| s.as_str()).collect();
                format!("allowed from '{from}': {}", names.join(", "))
            };
            return Err(Rejection::new(
                ErrorCode::InvalidStateTransition,
                format!("scenario transition {from} -> {to} is not allowed"),
                allowed,
            ));
        };
        Ok(edge)
    }
}

/// Compares component names ignoring case, `-`, `_` and spaces, so
/// `filtergateway` and `filter-gateway` name the FilterGateway.
pub fn source_allowed(allowed: &[&str], source: &str) -> bool {
    let fold = |s: &str| -> String {
        s.chars()
            .filter(|c| !matches!(c, '-' | '_' | ' '))
            .flat_map(char::to_lowercase)
            .collect()
    };
    let source = fold(source);
    allowed.iter().any(|a| fold(a) == source)
}

/// The documented model edges (the model state diagram, STATE-MACHINES.md).
pub const MODEL_EDGES: &[(ModelState, ModelState)] = {
    use ModelState::*;
    &[
        (Created, Running),
        (Running, Paused),
        (Paused, Running),
        (Running, Exited),
        (Exited, Running),
        (Running, Dead),
        (Dead, Running),
        (Paused, Exited),
        (Paused, Dead),
        (Dead, Exited),
        (Exited, Dead),
    ]
};

/// The documented package edges (the package state diagram, STATE-MACHINES.md).
pub const PACKAGE_EDGES: &[(PackageState, PackageState)] = {
    use PackageState::*;
    &[
        (Idle, Running),
        (Running, Paused),
        (Paused, Running),
        (Running, Exited),
        (Exited, Running),
        (Running, Degraded),
        (Degraded, Running),
        (Running, Error),
        (Error, Running),
        (Degraded, Exited),
        (Exited, Degraded),
        (Degraded, Error),
        (Error, Degraded),
        (Error, Exited),
    ]
};

/// `true` when the model diagram documents `from -> to`.
pub fn is_documented_model_edge(from: ModelState, to: ModelState) -> bool {
    MODEL_EDGES.contains(&(from, to))
}

/// `true` when the package diagram documents `from -> to`.
pub fn is_documented_package_edge(from: PackageState, to: PackageState) -> bool {
    PACKAGE_EDGES.contains(&(from, to))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ScenarioState as S;

    #[test]
    fn every_row_of_the_scenario_table_is_allowed_and_nothing_else() {
        let policy = ScenarioPolicy::default();
        let rows = [
            (S::Idle, S::Waiting),
            (S::Waiting, S::Satisfied),
            (S::Satisfied, S::Allowed),
            (S::Satisfied, S::Denied),
            (S::Allowed, S::Completed),
        ];
        for &from in S::ALL {
            for &to in S::ALL {
                let expected = rows.contains(&(from, to));
                assert_eq!(policy.edge(from, to).is_some(), expected, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn terminal_states_rearm_only_when_allowed() {
        let strict = ScenarioPolicy::default();
        assert!(strict.next_states(S::Completed).is_empty());
        assert!(strict.next_states(S::Denied).is_empty());
        let rearm = ScenarioPolicy {
            allow_rearm: true,
            ..Default::default()
        };
        assert_eq!(rearm.next_states(S::Completed), vec![S::Waiting]);
        assert_eq!(rearm.next_states(S::Denied), vec![S::Waiting]);
        let err = strict.check(S::Completed, S::Waiting, "x").unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidStateTransition);
        assert!(err.details.contains("terminal"), "{err:?}");
    }

    #[test]
    fn sources_are_checked_only_when_enforced() {
        let open = ScenarioPolicy::default();
        assert!(open.check(S::Idle, S::Waiting, "anyone").is_ok());
        let enforced = ScenarioPolicy {
            enforce_sources: true,
            ..Default::default()
        };
        assert!(
            enforced
                .check(S::Idle, S::Waiting, "filter-gateway")
                .is_ok()
        );
        assert!(enforced.check(S::Idle, S::Waiting, "FILTERGATEWAY").is_ok());
        let err = enforced
            .check(S::Idle, S::Waiting, "PolicyManager")
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::PermissionDenied);
        assert!(
            enforced
                .check(S::Waiting, S::Satisfied, "actioncontroller")
                .is_ok()
        );
        assert!(
            enforced
                .check(S::Satisfied, S::Denied, "policymanager")
                .is_ok()
        );
    }

    #[test]
    fn invalid_transitions_say_what_is_allowed() {
        let err = ScenarioPolicy::default()
            .check(S::Idle, S::Allowed, "")
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidStateTransition);
        assert_eq!(
            err.message,
            "scenario transition Idle -> Allowed is not allowed"
        );
        assert_eq!(err.details, "allowed from 'Idle': Waiting");
    }

    #[test]
    fn documented_edges_follow_the_diagrams() {
        use ModelState as M;
        use PackageState as P;
        assert!(is_documented_model_edge(M::Created, M::Running));
        assert!(is_documented_model_edge(M::Exited, M::Dead));
        assert!(!is_documented_model_edge(M::Exited, M::Paused));
        assert!(!is_documented_model_edge(M::Created, M::Dead));
        assert_eq!(MODEL_EDGES.len(), 11);
        assert!(is_documented_package_edge(P::Idle, P::Running));
        assert!(is_documented_package_edge(P::Error, P::Exited));
        assert!(!is_documented_package_edge(P::Exited, P::Error));
        assert!(!is_documented_package_edge(P::Idle, P::Error));
        assert_eq!(PACKAGE_EDGES.len(), 14);
    }
}
