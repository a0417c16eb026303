//! `SendStateDiff` (seed 003's `StateDiff` and `ActionPlan`, RECOVERY.md
//! §5) and `ForceSynchronization` (§7), both ways.

use engine::{DiffAnswer, EngineError, SyncAnswer};
use statemachine_core::healing::diff::{
    ConfigDiff, ExistenceDiff, Impact, ScaleDiff, StatusDiff, VersionDiff,
};
use statemachine_core::healing::{ActionPlan, Priority, StateDiff};
use statemachine_core::{AnyState, ErrorCode, ResourceKind};
use tonic::Status;

use super::{
    ConvertError, error_code, error_code_from_number, invalid, ladder, query_kind, query_name,
    recovery_action, recovery_kind, request_kind, resource_type,
};
use crate::proto::statemanager as sm;

/// The wire's `ActionPriority` of a plan's priority.
pub fn action_priority(priority: Priority) -> sm::ActionPriority {
    match priority {
        Priority::Low => sm::ActionPriority::Low,
        Priority::Normal => sm::ActionPriority::Normal,
        Priority::High => sm::ActionPriority::High,
        Priority::Critical => sm::ActionPriority::Critical,
    }
}

/// The priority with the wire's `ActionPriority` number; `None` for
/// UNSPECIFIED and numbers the protocol does not define.
pub fn action_priority_from_number(number: i32) -> Option<Priority> {
    Some(match sm::ActionPriority::try_from(number).ok()? {
        sm::ActionPriority::Low => Priority::Low,
        sm::ActionPriority::Normal => Priority::Normal,
        sm::ActionPriority::High => Priority::High,
        sm::ActionPriority::Critical => Priority::Critical,
        sm::ActionPriority::Unspecified => return None,
    })
}

/// A status diff's state, canonical; `InvalidArgument` naming the field
/// when it is not a state of `kind`.
fn diff_state(kind: ResourceKind, text: &str, field: &str) -> Result<String, Status> {
    AnyState::parse(kind, text)
        .map(|s| s.as_str().to_owned())
        .map_err(|e| invalid(format!("status_diff.{field}: {e}")))
}

/// A received `StateDiff` as the core's: a package or model with a valid
/// name; status states are read in any spelling and made canonical; config
/// keys must not be empty. Anything else is `InvalidArgument` naming the
/// field.
pub fn state_diff(message: sm::StateDiff) -> Result<StateDiff, Status> {
    let kind = recovery_kind(message.resource_type)?;
    query_name(&message.resource_name)?;
    let status = match message.status_diff {
        Some(s) => Some(StatusDiff {
            desired: diff_state(kind, &s.desired, "desired")?,
            actual: diff_state(kind, &s.actual, "actual")?,
        }),
        None => None,
    };
    let config = match message.config_diff {
        Some(c) => {
            if let Some(i) = c.keys.iter().position(|k| k.is_empty()) {
                return Err(invalid(format!("config_diff.keys[{i}] is empty")));
            }
            Some(ConfigDiff { keys: c.keys })
        }
        None => None,
    };
    Ok(StateDiff {
        kind,
        name: message.resource_name,
        existence: message.existence_diff.map(|e| ExistenceDiff {
            expected: e.expected,
            actual: e.actual,
        }),
        scale: message.scale_diff.map(|s| ScaleDiff {
            desired: s.desired,
            actual: s.actual,
        }),
        version: message.version_diff.map(|v| VersionDiff {
            desired: v.desired,
            actual: v.actual,
        }),
        config,
        status,
    })
}

/// The `StateDiff` message of a diff (for clients).
pub fn state_diff_message(diff: &StateDiff) -> sm::StateDiff {
    sm::StateDiff {
        resource_type: resource_type(diff.kind) as i32,
        resource_name: diff.name.clone(),
        existence_diff: diff.existence.as_ref().map(|e| sm::ExistenceDiff {
            expected: e.expected,
            actual: e.actual,
        }),
        scale_diff: diff.scale.as_ref().map(|s| sm::ScaleDiff {
            desired: s.desired,
            actual: s.actual,
        }),
        version_diff: diff.version.as_ref().map(|v| sm::VersionDiff {
            desired: v.desired.clone(),
            actual: v.actual.clone(),
        }),
        config_diff: diff.config.as_ref().map(|c| sm::ConfigDiff {
            keys: c.keys.clone(),
        }),
        status_diff: diff.status.as_ref().map(|s| sm::StatusDiff {
            desired: s.desired.clone(),
            actual: s.actual.clone(),
        }),
    }
}

/// A plan as the wire's `ActionPlan`.
pub fn action_plan(plan: &ActionPlan) -> sm::ActionPlan {
    sm::ActionPlan {
        resource_type: resource_type(plan.kind) as i32,
        resource_name: plan.name.clone(),
        actions: plan
            .actions
            .iter()
            .map(|a| recovery_action(*a) as i32)
            .collect(),
        priority: action_priority(plan.priority) as i32,
        impact_assessment: Some(sm::ImpactAssessment {
            disruptive: plan.impact.disruptive,
            parts: plan.impact.parts.clone(),
        }),
    }
}

/// A received `ActionPlan` (for clients).
pub fn plan(message: sm::ActionPlan) -> Result<ActionPlan, ConvertError> {
    let name = message.resource_name;
    let kind = request_kind(message.resource_type)
        .managed()
        .ok_or_else(|| {
            ConvertError(format!(
                "plan for '{name}' has resource_type {}",
                message.resource_type
            ))
        })?;
    let actions = ladder(&message.actions, "actions")
        .map_err(|status| ConvertError(format!("plan for '{name}': {}", status.message())))?;
    let priority = action_priority_from_number(message.priority).ok_or_else(|| {
        ConvertError(format!(
            "plan for '{name}' has priority {}",
            message.priority
        ))
    })?;
    let impact = message.impact_assessment.unwrap_or_default();
    Ok(ActionPlan {
        kind,
        name,
        actions,
        priority,
        impact: Impact {
            disruptive: impact.disruptive,
            parts: impact.parts,
        },
    })
}

/// The engine's answer to a diff as a `StateDiffResponse` (`success =
/// true`; no plan when the diff needs no action).
pub fn state_diff_response(answer: &DiffAnswer) -> sm::StateDiffResponse {
    sm::StateDiffResponse {
        success: true,
        message: answer.message.clone(),
        recovery_id: answer.recovery_id.clone().unwrap_or_default(),
        plan: answer.plan.as_ref().map(action_plan),
    }
}

/// A received `StateDiffResponse` as an answer (for clients); `Ok(Err)`
/// with the message when it says `success = false`.
pub fn diff_answer(
    response: sm::StateDiffResponse,
) -> Result<Result<DiffAnswer, String>, ConvertError> {
    if !response.success {
        return Ok(Err(response.message));
    }
    Ok(Ok(DiffAnswer {
        plan: response.plan.map(plan).transpose()?,
        recovery_id: (!response.recovery_id.is_empty()).then_some(response.recovery_id),
        message: response.message,
    }))
}

/// The resource a `ForceSynchronizationRequest` names and whether to go
/// deep; `InvalidArgument` for a bad type or name.
pub fn sync_target(
    request: &sm::ForceSynchronizationRequest,
) -> Result<(ResourceKind, String, bool), Status> {
    let kind = query_kind(request.resource_type)?;
    query_name(&request.resource_name)?;
    Ok((kind, request.resource_name.clone(), request.deep_sync))
}

/// The `ForceSynchronizationRequest` for a resource (for clients).
pub fn sync_message(kind: ResourceKind, name: &str, deep: bool) -> sm::ForceSynchronizationRequest {
    sm::ForceSynchronizationRequest {
        resource_type: resource_type(kind) as i32,
        resource_name: name.to_owned(),
        deep_sync: deep,
    }
}

/// The engine's answer to a synchronization as a
/// `ForceSynchronizationResponse`. Every outcome is answered in it, as
/// `SendStateChange` does: an engine error is its error code and message;
/// a missing time becomes `now_ns`.
pub fn force_sync_response(
    answer: Result<SyncAnswer, EngineError>,
    now_ns: i64,
) -> sm::ForceSynchronizationResponse {
    match answer {
        Ok(answer) => sm::ForceSynchronizationResponse {
            message: answer.message,
            transition_id: answer.transition_id,
            timestamp_ns: if answer.timestamp_ns == 0 {
                now_ns
            } else {
                answer.timestamp_ns
            },
            error_code: sm::ErrorCode::Success as i32,
            error_details: String::new(),
            changes: answer.changed,
        },
        Err(error) => sm::ForceSynchronizationResponse {
            message: error.to_string(),
            transition_id: String::new(),
            timestamp_ns: now_ns,
            error_code: error_code(error.code()) as i32,
            error_details: String::new(),
            changes: Vec::new(),
        },
    }
}

/// A received `ForceSynchronizationResponse` (for clients): the answer,
/// or the error code and message it carries instead. An error code the
/// protocol does not define reads as UNSPECIFIED.
pub fn sync_answer(
    response: sm::ForceSynchronizationResponse,
) -> Result<SyncAnswer, (ErrorCode, String)> {
    let code = error_code_from_number(response.error_code).unwrap_or(ErrorCode::Unspecified);
    if code != ErrorCode::Success {
        let message = if response.error_details.is_empty() {
            response.message
        } else {
            format!("{}: {}", response.message, response.error_details)
        };
        return Err((code, message));
    }
    Ok(SyncAnswer {
        changed: response.changes,
        message: response.message,
        transition_id: response.transition_id,
        timestamp_ns: response.timestamp_ns,
    })
}
