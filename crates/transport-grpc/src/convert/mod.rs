//! Every conversion between protobuf messages and engine/core types, and
//! every mapping of errors to the wire's `ErrorCode` and gRPC `Status`.
//!
//! The server, the ActionController client and the StateManager client all
//! convert here, so a field number or an enum value is interpreted in one
//! place. Nothing here panics on any input: unknown enum numbers, empty or
//! negative values become `InvalidArgument` (requests) or a [`ConvertError`]
//! (answers). By topic:
//!
//! - `enums`: the wire's enum numbers (resource types, states, error codes,
//!   event types, severities);
//! - `status`: failures as gRPC statuses;
//! - `change`: state change requests and answers;
//! - `report`: node container reports;
//! - `query`: resource states, label selectors, history;
//! - `event`: subscriptions and events;
//! - `action`: offload and reconcile requests (the ActionController).

mod action;
mod change;
mod enums;
mod event;
mod query;
mod report;
mod status;

use tonic::Status;

pub use action::{
    offload_answer, offload_model_request, offload_request, offloading_response, reconcile_message,
    reconcile_outcome, trigger_action_outcome,
};
pub use change::{
    change_answer, state_change_message, state_change_request, state_change_response,
};
pub use enums::{
    error_code, error_code_from_number, event_kind_from_number, event_type, request_kind,
    request_kind_number, resource_type, severity, severity_from_number, state_from_number,
    state_number,
};
pub use event::{
    FILTER_RESOURCE_KIND, FILTER_RESOURCE_NAME, LAGGED_EVENTS_KEY, RESOURCE_KIND_KEY, delivery,
    event_filter, lagged_event, state_change_event, subscription_request,
};
pub use query::{
    history_entry, history_query, history_request, limit, matches_labels, query_kind, query_name,
    resource_state, resource_view, transition_history,
};
pub use report::{container_info, container_list_response, node_report};
pub use status::{
    action_error, engine_status, error_code_for_status, status_for, undecodable_request,
};

/// An answer from a peer that cannot be turned into engine types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed answer: {0}")]
pub struct ConvertError(pub String);

fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message)
}

#[cfg(test)]
mod tests;
