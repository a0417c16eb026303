//! Offload requests and reconcile requests, between the engine, the
//! StateManager's callers and the ActionController.

use engine::{ActionError, OffloadAnswer, OffloadRequest, ReconcileRequest};
use tonic::Status;

use crate::proto::actioncontroller as ac;
use crate::proto::statemanager as sm;

/// A received `OffloadingRequest` as the engine's offload request.
pub fn offload_request(request: sm::OffloadingRequest) -> OffloadRequest {
    OffloadRequest {
        scenario_name: request.scenario_name,
        package_name: request.package_name,
        model_name: request.model_name,
        source_node: request.source_node,
        target_node: request.target_node,
        policy_name: request.policy_name,
        reason: request.reason,
    }
}

/// The ActionController's answer to a forwarded offload: its answer as an
/// `OffloadingResponse`; a refusal is `accepted = false` with the reason; an
/// unreachable ActionController is `Unavailable`.
pub fn offloading_response(
    result: Result<OffloadAnswer, ActionError>,
) -> Result<sm::OffloadingResponse, Status> {
    match result {
        Ok(answer) => Ok(sm::OffloadingResponse {
            accepted: answer.accepted,
            message: answer.message,
            transition_id: answer.transition_id,
        }),
        Err(ActionError::Refused(reason)) => Ok(sm::OffloadingResponse {
            accepted: false,
            message: format!("ActionController refused: {reason}"),
            transition_id: String::new(),
        }),
        Err(error @ ActionError::Unavailable(_)) => Err(Status::unavailable(error.to_string())),
    }
}

/// An offload request as the ActionController's `OffloadModelRequest`.
pub fn offload_model_request(request: OffloadRequest) -> ac::OffloadModelRequest {
    ac::OffloadModelRequest {
        scenario_name: request.scenario_name,
        package_name: request.package_name,
        model_name: request.model_name,
        source_node: request.source_node,
        target_node: request.target_node,
        policy_name: request.policy_name,
        reason: request.reason,
    }
}

/// The ActionController's `OffloadModelResponse` as the engine's answer.
pub fn offload_answer(response: ac::OffloadModelResponse) -> OffloadAnswer {
    OffloadAnswer {
        accepted: response.success,
        message: response.message,
        transition_id: response.transition_id,
    }
}

/// A reconcile request as the ActionController's `ReconcileRequest`:
/// the package's scenario, from FAILED to RUNNING.
pub fn reconcile_message(request: &ReconcileRequest) -> ac::ReconcileRequest {
    ac::ReconcileRequest {
        scenario_name: request.scenario.clone(),
        current: ac::PodStatus::Failed as i32,
        desired: ac::PodStatus::Running as i32,
    }
}

/// The ActionController's `TriggerActionResponse`: status 0 accepts,
/// anything else is a refusal with its `desc`.
pub fn trigger_action_outcome(response: ac::TriggerActionResponse) -> Result<(), ActionError> {
    if response.status == 0 {
        Ok(())
    } else {
        Err(ActionError::Refused(format!(
            "trigger action status {}: {}",
            response.status, response.desc
        )))
    }
}

/// The ActionController's `ReconcileResponse`: status 0 accepts, anything
/// else is a refusal with its `desc`.
pub fn reconcile_outcome(response: ac::ReconcileResponse) -> Result<(), ActionError> {
    if response.status == 0 {
        Ok(())
    } else {
        Err(ActionError::Refused(format!(
            "reconcile status {}: {}",
            response.status, response.desc
        )))
    }
}
