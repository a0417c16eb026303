//! State change requests (`SendStateChange`) and their answers, both ways.

use engine::ChangeAnswer;
use statemachine_core::{ErrorCode, StateChangeRequest};

use super::{error_code, error_code_from_number, request_kind, request_kind_number};
use crate::proto::statemanager as sm;

/// A received `StateChange` as the engine's request. Nothing is validated
/// here: the core checks the shape (type, name, states) and answers
/// INVALID_REQUEST with a message.
pub fn state_change_request(change: sm::StateChange) -> StateChangeRequest {
    StateChangeRequest {
        kind: request_kind(change.resource_type),
        name: change.resource_name,
        current_state: change.current_state,
        target_state: change.target_state,
        transition_id: change.transition_id,
        source: change.source,
    }
}

/// The `StateChange` message of a request (for clients).
pub fn state_change_message(request: StateChangeRequest, timestamp_ns: i64) -> sm::StateChange {
    sm::StateChange {
        resource_type: request_kind_number(request.kind),
        resource_name: request.name,
        current_state: request.current_state,
        target_state: request.target_state,
        transition_id: request.transition_id,
        timestamp_ns,
        source: request.source,
    }
}

/// The engine's answer as a `StateChangeResponse`; a missing decision time
/// (the engine did not answer) becomes `now_ns`.
pub fn state_change_response(answer: ChangeAnswer, now_ns: i64) -> sm::StateChangeResponse {
    sm::StateChangeResponse {
        message: answer.message,
        transition_id: answer.transition_id,
        timestamp_ns: if answer.timestamp_ns == 0 {
            now_ns
        } else {
            answer.timestamp_ns
        },
        error_code: error_code(answer.code) as i32,
        error_details: answer.details,
    }
}

/// A received `StateChangeResponse` as an answer (for clients). An error
/// code the protocol does not define reads as UNSPECIFIED.
pub fn change_answer(response: sm::StateChangeResponse) -> ChangeAnswer {
    ChangeAnswer {
        code: error_code_from_number(response.error_code).unwrap_or(ErrorCode::Unspecified),
        message: response.message,
        details: response.error_details,
        transition_id: response.transition_id,
        timestamp_ns: response.timestamp_ns,
    }
}
