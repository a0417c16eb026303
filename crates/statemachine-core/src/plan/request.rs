//! Planning a requested state change: the request's shape, whether the
//! resource is known, and the transition tables (STATE-MACHINES §4, §5).

use super::cascade::Cascade;
use super::{Plan, Reason, reject};
use crate::access::{Decision, Identity};
use crate::error::{ErrorCode, Rejection};
use crate::input::{RequestKind, StateChangeRequest};
use crate::name::{ResourceKind, validate};
use crate::snapshot::Snapshot;
use crate::state::AnyState;
use crate::transition::{
    MODEL_EDGES, PACKAGE_EDGES, is_documented_model_edge, is_documented_package_edge,
};

pub(super) fn plan_request<'a>(
    s: &'a Snapshot,
    request: &'a StateChangeRequest,
    caller: Option<&Identity>,
    now: i64,
) -> Plan {
    // WIRE-PROTOCOL: the shape of the request is checked before the record.
    let kind = match request.kind {
        RequestKind::Unspecified => {
            return reject(
                ErrorCode::InvalidRequest,
                "resource_type is unspecified",
                "use SCENARIO, PACKAGE or MODEL",
            );
        }
        RequestKind::Unknown(n) => {
            return reject(
                ErrorCode::InvalidRequest,
                format!("unknown resource_type {n}"),
                "use SCENARIO, PACKAGE or MODEL",
            );
        }
        RequestKind::Volume | RequestKind::Network | RequestKind::Node => {
            return reject(
                ErrorCode::InvalidRequest,
                format!(
                    "{:?} resources are not managed by the StateManager",
                    request.kind
                ),
                "managed resource types: SCENARIO, PACKAGE, MODEL",
            );
        }
        other => other.managed().unwrap_or(ResourceKind::Scenario),
    };
    let name = request.name.as_str();
    if let Err(e) = validate(name) {
        return reject(
            ErrorCode::InvalidRequest,
            format!("invalid resource_name: {e}"),
            "",
        );
    }
    let target = match AnyState::parse(kind, &request.target_state) {
        Ok(t) => t,
        Err(e) => {
            return reject(
                ErrorCode::InvalidRequest,
                format!("invalid target_state: {e}"),
                "",
            );
        }
    };
    // Empty: not given. Anything else must be a state name (§6: blanks are not).
    let claimed = if request.current_state.is_empty() {
        None
    } else {
        match AnyState::parse(kind, &request.current_state) {
            Ok(c) => Some(c),
            Err(e) => {
                return reject(
                    ErrorCode::InvalidRequest,
                    format!("invalid current_state: {e}"),
                    "",
                );
            }
        }
    };
    if claimed == Some(target) {
        return reject(
            ErrorCode::InvalidRequest,
            format!("current_state and target_state are both '{target}'"),
            "a transition needs a different target state",
        );
    }

    // §5: the transition starts from the recorded state, or else from the
    // default state; a resource with neither is not known
    // (`Snapshot::is_known`).
    let Some(from) = s.state_or_default(kind, name) else {
        // Upstream's ApiServer registers a scenario by asking for its
        // initial state, with no current state, right after writing the
        // definition, which may not have reached us yet: the resource will
        // have that state on creation, so nothing is left to do.
        if claimed.is_none() && AnyState::initial(kind) == Some(target) {
            return Cascade::new(s, now).finish(
                format!(
                    "{kind} '{name}' has no definition yet; it starts as '{target}' \
                     when its definition arrives"
                ),
                Vec::new(),
                None,
            );
        }
        return reject(
            ErrorCode::ResourceNotFound,
            format!("{kind} '{name}' is not known"),
            "it has no definition and no recorded state",
        );
    };

    let mut note = String::new();
    if let Some(claimed) = claimed
        && claimed != from
    {
        note = format!(" (the request said current state '{claimed}'; the record said '{from}')");
    }
    // A request for the recorded state is a safe retry, strict or not.
    if from == target {
        return Cascade::new(s, now).finish(
            format!("{kind} '{name}' is already '{target}'; nothing to do{note}"),
            Vec::new(),
            None,
        );
    }
    if let Some(claimed) = claimed
        && claimed != from
        && s.config.scenario_policy.strict_current_state
    {
        return reject(
            ErrorCode::PreconditionFailed,
            format!("{kind} '{name}' is '{from}', not '{claimed}'"),
            "current_state must match the recorded state",
        );
    }

    let mut cascade = Cascade::new(s, now);
    let detail = match (from, target) {
        (AnyState::Scenario(f), AnyState::Scenario(t)) => {
            let scenarios = &s.config.scenario_policy;
            // With an access policy, the caller's identity replaces the
            // self-declared source (STATE-MACHINES §4).
            let checked = match &s.config.access {
                Some(_) => scenarios.check_edge(f, t),
                None => scenarios.check(f, t, &request.source),
            };
            let edge = match checked {
                Ok(edge) => edge,
                Err(rejection) => return Plan::rejected(rejection),
            };
            if let Err(denied) = authorize(s, caller, kind, name, from, target) {
                return Plan::rejected(denied);
            }
            cascade.push(
                kind,
                name,
                s.state(kind, name),
                Some(target),
                Reason::Requested,
            );
            format!("; {}: {}", edge.event, edge.action)
        }
        (AnyState::Model(f), AnyState::Model(t)) => {
            if !is_documented_model_edge(f, t) {
                return undocumented(kind, name, from, target, allowed_next(MODEL_EDGES, f));
            }
            if let Err(denied) = authorize(s, caller, kind, name, from, target) {
                return Plan::rejected(denied);
            }
            cascade.set_model(name, Some(t), Reason::Requested);
            cascade.evaluate_packages(s.topology.packages_of(name).map(String::as_str));
            String::new()
        }
        (AnyState::Package(f), AnyState::Package(t)) => {
            if !is_documented_package_edge(f, t) {
                return undocumented(kind, name, from, target, allowed_next(PACKAGE_EDGES, f));
            }
            if let Err(denied) = authorize(s, caller, kind, name, from, target) {
                return Plan::rejected(denied);
            }
            cascade.set_package(name, t, Reason::Requested);
            String::new()
        }
        _ => return reject(ErrorCode::InternalError, "state kinds disagree", ""),
    };
    cascade.finish(
        format!("{kind} '{name}' {from} -> {target}{detail}{note}"),
        Vec::new(),
        None,
    )
}

/// The access policy's decision on the edge `from -> to` for `caller`,
/// when one is configured: a denial is PERMISSION_DENIED with the
/// decision's message, and the rule (or "default deny") in the details.
fn authorize(
    s: &Snapshot,
    caller: Option<&Identity>,
    kind: ResourceKind,
    name: &str,
    from: AnyState,
    to: AnyState,
) -> Result<(), Rejection> {
    let Some(policy) = &s.config.access else {
        return Ok(());
    };
    let Some(caller) = caller else {
        return Err(Rejection::new(
            ErrorCode::PermissionDenied,
            format!("unauthenticated: no identity may request {kind} '{name}' {from} -> {to}"),
            "unauthenticated",
        ));
    };
    match policy.transition(caller, kind, from, to) {
        Decision::Allowed { .. } => Ok(()),
        denied @ Decision::Denied { .. } => Err(Rejection::new(
            ErrorCode::PermissionDenied,
            denied.to_string(),
            denied.rule_label(),
        )),
    }
}

fn allowed_next<S: PartialEq + Copy + std::fmt::Display>(edges: &[(S, S)], from: S) -> String {
    let next: Vec<String> = edges
        .iter()
        .filter(|(f, _)| *f == from)
        .map(|(_, t)| t.to_string())
        .collect();
    if next.is_empty() {
        format!("no transition leaves '{from}'")
    } else {
        format!("allowed from '{from}': {}", next.join(", "))
    }
}

fn undocumented(
    kind: ResourceKind,
    name: &str,
    from: AnyState,
    to: AnyState,
    allowed: String,
) -> Plan {
    reject(
        ErrorCode::InvalidStateTransition,
        format!("{kind} transition {from} -> {to} of '{name}' is not allowed"),
        allowed,
    )
}
