//! Recovery (RECOVERY.md §1–3): `TriggerRecovery`, `AbortRecovery`,
//! `GetRecoveryStatus`, both ways, and the enums of incidents (actions,
//! phases, issue types, step outcomes).
//!
//! Requests are checked here before the engine is called: a resource type
//! other than package or model, an invalid name, an unknown or unspecified
//! action or recovery type, or a strategy field the StateManager does not
//! honour is `InvalidArgument` naming the field.

use engine::{IncidentRef, RecoveryAnswer, RecoveryView, TriggerRequest};
use statemachine_core::healing::ladder::{Outcome, StepRecord};
use statemachine_core::healing::{Incident, IssueType, Phase, RecoveryAction};
use statemachine_core::{RequestKind, ResourceKind};
use tonic::Status;

use super::{ConvertError, invalid, query_name, request_kind, resource_type};
use crate::proto::statemanager as sm;

const RECOVERY_TYPES: &str = "use RESOURCE_TYPE_PACKAGE or RESOURCE_TYPE_MODEL";

/// The wire's `RecoveryAction` of an action.
pub fn recovery_action(action: RecoveryAction) -> sm::RecoveryAction {
    match action {
        RecoveryAction::Restart => sm::RecoveryAction::Restart,
        RecoveryAction::Recreate => sm::RecoveryAction::Recreate,
        RecoveryAction::Relocate => sm::RecoveryAction::Relocate,
        RecoveryAction::RollbackVersion => sm::RecoveryAction::RollbackVersion,
        RecoveryAction::ResetConfig => sm::RecoveryAction::ResetConfig,
        RecoveryAction::Notify => sm::RecoveryAction::Notify,
        RecoveryAction::Isolate => sm::RecoveryAction::Isolate,
    }
}

/// The action with the wire's `RecoveryAction` number; `None` for
/// UNSPECIFIED and numbers the protocol does not define.
pub fn recovery_action_from_number(number: i32) -> Option<RecoveryAction> {
    Some(match sm::RecoveryAction::try_from(number).ok()? {
        sm::RecoveryAction::Restart => RecoveryAction::Restart,
        sm::RecoveryAction::Recreate => RecoveryAction::Recreate,
        sm::RecoveryAction::Relocate => RecoveryAction::Relocate,
        sm::RecoveryAction::RollbackVersion => RecoveryAction::RollbackVersion,
        sm::RecoveryAction::ResetConfig => RecoveryAction::ResetConfig,
        sm::RecoveryAction::Notify => RecoveryAction::Notify,
        sm::RecoveryAction::Isolate => RecoveryAction::Isolate,
        sm::RecoveryAction::Unspecified => return None,
    })
}

/// The wire's `RecoveryPhase` of a phase.
pub fn recovery_phase(phase: Phase) -> sm::RecoveryPhase {
    match phase {
        Phase::Initializing => sm::RecoveryPhase::Initializing,
        Phase::Executing => sm::RecoveryPhase::Executing,
        Phase::Validating => sm::RecoveryPhase::Validating,
        Phase::Completed => sm::RecoveryPhase::Completed,
        Phase::Failed => sm::RecoveryPhase::Failed,
        Phase::Aborted => sm::RecoveryPhase::Aborted,
    }
}

/// The phase with the wire's `RecoveryPhase` number; `None` for
/// UNSPECIFIED and numbers the protocol does not define.
pub fn recovery_phase_from_number(number: i32) -> Option<Phase> {
    Some(match sm::RecoveryPhase::try_from(number).ok()? {
        sm::RecoveryPhase::Initializing => Phase::Initializing,
        sm::RecoveryPhase::Executing => Phase::Executing,
        sm::RecoveryPhase::Validating => Phase::Validating,
        sm::RecoveryPhase::Completed => Phase::Completed,
        sm::RecoveryPhase::Failed => Phase::Failed,
        sm::RecoveryPhase::Aborted => Phase::Aborted,
        sm::RecoveryPhase::Unspecified => return None,
    })
}

/// The wire's `IssueType` of an issue type.
pub fn issue_type(issue: IssueType) -> sm::IssueType {
    match issue {
        IssueType::PackageError => sm::IssueType::PackageError,
        IssueType::PackageDegraded => sm::IssueType::PackageDegraded,
        IssueType::ModelDead => sm::IssueType::ModelDead,
        IssueType::NodeSilent => sm::IssueType::NodeSilent,
        IssueType::Flapping => sm::IssueType::Flapping,
        IssueType::Diff => sm::IssueType::Diff,
        IssueType::Manual => sm::IssueType::Manual,
    }
}

/// The issue type with the wire's `IssueType` number; `None` for
/// UNSPECIFIED and numbers the protocol does not define.
pub fn issue_type_from_number(number: i32) -> Option<IssueType> {
    Some(match sm::IssueType::try_from(number).ok()? {
        sm::IssueType::PackageError => IssueType::PackageError,
        sm::IssueType::PackageDegraded => IssueType::PackageDegraded,
        sm::IssueType::ModelDead => IssueType::ModelDead,
        sm::IssueType::NodeSilent => IssueType::NodeSilent,
        sm::IssueType::Flapping => IssueType::Flapping,
        sm::IssueType::Diff => IssueType::Diff,
        sm::IssueType::Manual => IssueType::Manual,
        sm::IssueType::Unspecified => return None,
    })
}

/// The wire's `RecoveryStepOutcome` of a step's outcome (one to one).
pub fn step_outcome(outcome: Outcome) -> sm::RecoveryStepOutcome {
    match outcome {
        Outcome::Pending => sm::RecoveryStepOutcome::Pending,
        Outcome::Delivered => sm::RecoveryStepOutcome::Delivered,
        Outcome::Unsupported => sm::RecoveryStepOutcome::Unsupported,
        Outcome::Healthy => sm::RecoveryStepOutcome::Healthy,
        Outcome::TimedOut => sm::RecoveryStepOutcome::TimedOut,
        Outcome::Ignored => sm::RecoveryStepOutcome::Ignored,
    }
}

/// The outcome with the wire's `RecoveryStepOutcome` number; `None` for
/// UNSPECIFIED and numbers the protocol does not define.
pub fn step_outcome_from_number(number: i32) -> Option<Outcome> {
    Some(match sm::RecoveryStepOutcome::try_from(number).ok()? {
        sm::RecoveryStepOutcome::Pending => Outcome::Pending,
        sm::RecoveryStepOutcome::Delivered => Outcome::Delivered,
        sm::RecoveryStepOutcome::Unsupported => Outcome::Unsupported,
        sm::RecoveryStepOutcome::Healthy => Outcome::Healthy,
        sm::RecoveryStepOutcome::TimedOut => Outcome::TimedOut,
        sm::RecoveryStepOutcome::Ignored => Outcome::Ignored,
        sm::RecoveryStepOutcome::Unspecified => return None,
    })
}

/// Pullpiri's coarser `RecoveryStepStatus` of an outcome: in the outbox is
/// PENDING, delivered and validating RUNNING, healthy COMPLETED, timed out
/// FAILED, unsupported or ignored SKIPPED. One way only:
/// [`step_outcome`] is the exact one.
pub fn step_status(outcome: Outcome) -> sm::RecoveryStepStatus {
    match outcome {
        Outcome::Pending => sm::RecoveryStepStatus::Pending,
        Outcome::Delivered => sm::RecoveryStepStatus::Running,
        Outcome::Healthy => sm::RecoveryStepStatus::Completed,
        Outcome::TimedOut => sm::RecoveryStepStatus::Failed,
        Outcome::Unsupported | Outcome::Ignored => sm::RecoveryStepStatus::Skipped,
    }
}

/// The ladder Pullpiri's `RecoveryType` names: one rung (RESTART: Restart,
/// FAILOVER: Relocate, ROLLBACK: RollbackVersion, RESET: ResetConfig);
/// UNSPECIFIED: none. DEGRADED_MODE has no action here and unknown numbers
/// are not types: both `InvalidArgument`.
pub fn recovery_type_ladder(number: i32) -> Result<Vec<RecoveryAction>, Status> {
    let action = match sm::RecoveryType::try_from(number) {
        Ok(sm::RecoveryType::Unspecified) => return Ok(Vec::new()),
        Ok(sm::RecoveryType::Restart) => RecoveryAction::Restart,
        Ok(sm::RecoveryType::Failover) => RecoveryAction::Relocate,
        Ok(sm::RecoveryType::Rollback) => RecoveryAction::RollbackVersion,
        Ok(sm::RecoveryType::Reset) => RecoveryAction::ResetConfig,
        Ok(sm::RecoveryType::DegradedMode) => {
            return Err(invalid(
                "recovery_strategy.type RECOVERY_TYPE_DEGRADED_MODE has no recovery action in this StateManager; name the ladder in recovery_strategy.actions",
            ));
        }
        Err(_) => {
            return Err(invalid(format!("unknown recovery_strategy.type {number}")));
        }
    };
    Ok(vec![action])
}

/// The kind of a resource that recovery applies to: a package or a model.
/// Anything else is `InvalidArgument` naming `resource_type`.
pub fn recovery_kind(number: i32) -> Result<ResourceKind, Status> {
    match request_kind(number) {
        RequestKind::Package => Ok(ResourceKind::Package),
        RequestKind::Model => Ok(ResourceKind::Model),
        RequestKind::Unspecified => Err(invalid(format!(
            "resource_type is unspecified; {RECOVERY_TYPES}"
        ))),
        RequestKind::Unknown(n) => Err(invalid(format!(
            "unknown resource_type {n}; {RECOVERY_TYPES}"
        ))),
        other => Err(invalid(format!(
            "resource_type {other:?}: recovery is for packages and models; {RECOVERY_TYPES}"
        ))),
    }
}

/// The actions of a wire ladder; an unknown or unspecified action is
/// `InvalidArgument` naming `{field}[i]`.
pub fn ladder(numbers: &[i32], field: &str) -> Result<Vec<RecoveryAction>, Status> {
    numbers
        .iter()
        .enumerate()
        .map(|(i, &number)| {
            recovery_action_from_number(number).ok_or_else(|| {
                invalid(format!(
                    "{field}[{i}] is {number}, not a RecoveryAction (RECOVERY_ACTION_RESTART ... RECOVERY_ACTION_ISOLATE)"
                ))
            })
        })
        .collect()
}

/// The ladder a `RecoveryStrategy` asks for: `actions`, or the rung `type`
/// names, or none (the Manual strategy's). Fields whose bound the
/// strategy table sets must be left unset; `validation_required` is
/// ignored (every rung is validated).
fn strategy_ladder(strategy: &sm::RecoveryStrategy) -> Result<Vec<RecoveryAction>, Status> {
    let unset = |field: &str, set: bool| {
        if set {
            Err(invalid(format!(
                "recovery_strategy.{field} is not supported: the StateManager's strategy table bounds time and retries; leave it unset"
            )))
        } else {
            Ok(())
        }
    };
    unset("timeout_ms", strategy.timeout_ms != 0)?;
    unset("max_retries", strategy.max_retries != 0)?;
    unset("backup_instance", strategy.backup_instance)?;
    unset("parameters", !strategy.parameters.is_empty())?;
    let actions = ladder(&strategy.actions, "recovery_strategy.actions")?;
    let typed = recovery_type_ladder(strategy.r#type)?;
    match (actions.is_empty(), typed.is_empty()) {
        (false, false) => Err(invalid(
            "recovery_strategy.type and recovery_strategy.actions both name a ladder; give one",
        )),
        (false, true) => Ok(actions),
        _ => Ok(typed),
    }
}

/// A `TriggerRecoveryRequest` as the engine's request; `InvalidArgument`
/// for a bad resource type or name and for a strategy it cannot honour.
pub fn trigger_request(request: sm::TriggerRecoveryRequest) -> Result<TriggerRequest, Status> {
    let kind = recovery_kind(request.resource_type)?;
    query_name(&request.resource_name)?;
    let actions = match &request.recovery_strategy {
        Some(strategy) => strategy_ladder(strategy)?,
        None => Vec::new(),
    };
    Ok(TriggerRequest {
        kind,
        name: request.resource_name,
        actions,
        reason: request.reason,
        force: request.force,
    })
}

/// The `TriggerRecoveryRequest` of a request (for clients): its ladder as
/// `recovery_strategy.actions`, no strategy when it has none.
pub fn trigger_message(request: &TriggerRequest) -> sm::TriggerRecoveryRequest {
    sm::TriggerRecoveryRequest {
        resource_type: resource_type(request.kind) as i32,
        resource_name: request.name.clone(),
        recovery_strategy: (!request.actions.is_empty()).then(|| sm::RecoveryStrategy {
            actions: request
                .actions
                .iter()
                .map(|a| recovery_action(*a) as i32)
                .collect(),
            ..Default::default()
        }),
        reason: request.reason.clone(),
        force: request.force,
    }
}

/// Which incident a request means: `recovery_id`, or when it is empty the
/// resource's (its open incident, else its latest); `InvalidArgument` when
/// neither is given properly.
pub fn incident_ref(
    resource_type: i32,
    resource_name: &str,
    recovery_id: &str,
) -> Result<IncidentRef, Status> {
    if !recovery_id.is_empty() {
        return Ok(IncidentRef::Id(recovery_id.to_owned()));
    }
    let kind = recovery_kind(resource_type).map_err(|status| {
        invalid(format!(
            "recovery_id is empty, so the resource names the incident: {}",
            status.message()
        ))
    })?;
    query_name(resource_name)?;
    Ok(IncidentRef::Resource(kind, resource_name.to_owned()))
}

/// The incident and reason of an `AbortRecoveryRequest`.
pub fn abort_target(request: &sm::AbortRecoveryRequest) -> Result<(IncidentRef, String), Status> {
    let target = incident_ref(
        request.resource_type,
        &request.resource_name,
        &request.recovery_id,
    )?;
    Ok((target, request.reason.clone()))
}

/// The incident of a `RecoveryStatusRequest`.
pub fn status_target(request: &sm::RecoveryStatusRequest) -> Result<IncidentRef, Status> {
    incident_ref(
        request.resource_type,
        &request.resource_name,
        &request.recovery_id,
    )
}

/// `(resource_type, resource_name, recovery_id)` of an incident reference
/// (for clients).
fn incident_fields(target: &IncidentRef) -> (i32, String, String) {
    match target {
        IncidentRef::Id(id) => (
            sm::ResourceType::Unspecified as i32,
            String::new(),
            id.clone(),
        ),
        IncidentRef::Resource(kind, name) => {
            (resource_type(*kind) as i32, name.clone(), String::new())
        }
    }
}

/// The `AbortRecoveryRequest` of an incident reference (for clients).
pub fn abort_message(target: &IncidentRef, reason: &str) -> sm::AbortRecoveryRequest {
    let (resource_type, resource_name, recovery_id) = incident_fields(target);
    sm::AbortRecoveryRequest {
        resource_type,
        resource_name,
        recovery_id,
        reason: reason.to_owned(),
    }
}

/// The `RecoveryStatusRequest` of an incident reference (for clients).
pub fn status_message(target: &IncidentRef) -> sm::RecoveryStatusRequest {
    let (resource_type, resource_name, recovery_id) = incident_fields(target);
    sm::RecoveryStatusRequest {
        resource_type,
        resource_name,
        recovery_id,
    }
}

fn count(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// One step as a `RecoveryStep`: `step_name` is the action's name,
/// `completion_time_ns` when its call was delivered (0: not yet).
pub fn recovery_step(step: &StepRecord) -> sm::RecoveryStep {
    let message = match step.outcome {
        Outcome::Pending => "handed to the ActionController's outbox, not delivered yet",
        Outcome::Delivered => "delivered; waiting for a healthy state",
        Outcome::Unsupported => {
            "not offered by the ActionController: recorded, the ladder moved on"
        }
        Outcome::Healthy => "the resource became healthy after it",
        Outcome::TimedOut => "no healthy state within the validation timeout",
        Outcome::Ignored => {
            "the incident ended while it was in flight or being validated: its outcome is ignored"
        }
    };
    sm::RecoveryStep {
        step_name: step.action.as_str().to_owned(),
        status: step_status(step.outcome) as i32,
        start_time_ns: step.at_ns,
        completion_time_ns: step.delivered_ns.unwrap_or(0),
        message: format!(
            "rung {}, {}: {message}",
            step.rung + 1,
            step.action.as_str()
        ),
        rung: count(step.rung),
        action: recovery_action(step.action) as i32,
        outcome: step_outcome(step.outcome) as i32,
    }
}

/// An incident as a `RecoveryStatus` (RECOVERY.md §2): Pullpiri's fields
/// and ours (the resource, the issue, the ladder and where it stands).
pub fn recovery_status(view: &RecoveryView) -> sm::RecoveryStatus {
    let incident = &view.incident;
    sm::RecoveryStatus {
        recovery_id: incident.id.clone(),
        phase: recovery_phase(incident.phase) as i32,
        retry_count: count(incident.executed),
        start_time_ns: incident.opened_ns,
        estimated_completion_ns: incident.ended_ns.unwrap_or(0),
        status_message: view.message.clone(),
        progress_percentage: view.progress,
        steps: incident.steps.iter().map(recovery_step).collect(),
        resource_type: resource_type(incident.kind) as i32,
        resource_name: incident.name.clone(),
        issue: issue_type(incident.issue) as i32,
        rung: count(incident.rung),
        ladder: view
            .ladder
            .iter()
            .map(|a| recovery_action(*a) as i32)
            .collect(),
        failures: count(incident.failures),
        joined: count(incident.joined),
        reason: incident.reason.clone(),
        next_due_ns: incident.due_ns.unwrap_or(0),
    }
}

/// The answer of `TriggerRecovery` or `AbortRecovery` as a
/// `RecoveryResponse` (`success = true`), answered at `now_ns`.
pub fn recovery_response(answer: RecoveryAnswer, now_ns: i64) -> sm::RecoveryResponse {
    sm::RecoveryResponse {
        success: true,
        message: answer.message,
        recovery_id: answer.view.incident.id.clone(),
        timestamp_ns: now_ns,
        status: Some(recovery_status(&answer.view)),
    }
}

fn unsigned(value: i32, field: &str, id: &str) -> Result<u32, ConvertError> {
    u32::try_from(value).map_err(|_| ConvertError(format!("recovery '{id}' has {field} {value}")))
}

/// A received `RecoveryStep` as a step record (for clients).
pub fn step_record(step: sm::RecoveryStep, id: &str) -> Result<StepRecord, ConvertError> {
    Ok(StepRecord {
        rung: unsigned(step.rung, "a step with rung", id)?,
        action: recovery_action_from_number(step.action).ok_or_else(|| {
            ConvertError(format!(
                "recovery '{id}' has a step with action {}",
                step.action
            ))
        })?,
        at_ns: step.start_time_ns,
        delivered_ns: (step.completion_time_ns != 0).then_some(step.completion_time_ns),
        outcome: step_outcome_from_number(step.outcome).ok_or_else(|| {
            ConvertError(format!(
                "recovery '{id}' has a step with outcome {}",
                step.outcome
            ))
        })?,
    })
}

/// A received `RecoveryStatus` as a view (for clients). The wire does not
/// say whether the ladder was the strategy table's or the incident's own:
/// `incident.ladder` reads as the ladder walked, like `view.ladder`.
pub fn recovery_view(status: sm::RecoveryStatus) -> Result<RecoveryView, ConvertError> {
    let id = status.recovery_id;
    let kind = request_kind(status.resource_type)
        .managed()
        .ok_or_else(|| {
            ConvertError(format!(
                "recovery '{id}' has resource_type {}",
                status.resource_type
            ))
        })?;
    let phase = recovery_phase_from_number(status.phase)
        .ok_or_else(|| ConvertError(format!("recovery '{id}' has phase {}", status.phase)))?;
    let issue = issue_type_from_number(status.issue)
        .ok_or_else(|| ConvertError(format!("recovery '{id}' has issue {}", status.issue)))?;
    let ladder = status
        .ladder
        .iter()
        .map(|&n| {
            recovery_action_from_number(n)
                .ok_or_else(|| ConvertError(format!("recovery '{id}' has a rung {n}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let steps = status
        .steps
        .into_iter()
        .map(|s| step_record(s, &id))
        .collect::<Result<Vec<_>, _>>()?;
    let incident = Incident {
        kind,
        name: status.resource_name,
        issue,
        phase,
        rung: unsigned(status.rung, "rung", &id)?,
        failures: unsigned(status.failures, "failures", &id)?,
        executed: unsigned(status.retry_count, "retry_count", &id)?,
        joined: unsigned(status.joined, "joined", &id)?,
        opened_ns: status.start_time_ns,
        due_ns: (status.next_due_ns != 0).then_some(status.next_due_ns),
        ended_ns: (phase.is_terminal() && status.estimated_completion_ns != 0)
            .then_some(status.estimated_completion_ns),
        steps,
        ladder: ladder.clone(),
        reason: status.reason,
        id,
    };
    Ok(RecoveryView {
        incident,
        ladder,
        message: status.status_message,
        progress: status.progress_percentage,
    })
}

/// A received `RecoveryResponse` as an answer (for clients); `Ok(Err)`
/// with the message when it says `success = false`.
pub fn recovery_answer(
    response: sm::RecoveryResponse,
) -> Result<Result<RecoveryAnswer, String>, ConvertError> {
    if !response.success {
        return Ok(Err(response.message));
    }
    let status = response
        .status
        .ok_or_else(|| ConvertError("a recovery answer without its status".into()))?;
    Ok(Ok(RecoveryAnswer {
        message: response.message,
        view: recovery_view(status)?,
    }))
}
