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
//! - `action`: offload and reconcile requests (the ActionController);
//! - `recovery`: recovery triggers, aborts and incidents, with their enums;
//! - `alert`: pending alerts and acknowledgements;
//! - `diff`: state diffs, their plans, and forced synchronization;
//! - `health`: a resource's health in `GetResourceState`.

mod action;
mod alert;
mod change;
mod diff;
mod enums;
mod event;
mod health;
mod query;
mod recovery;
mod report;
mod status;

use tonic::Status;

pub use action::{
    offload_answer, offload_model_request, offload_request, offloading_response, reconcile_message,
    reconcile_outcome, trigger_action_outcome,
};
pub use alert::{
    ALERT_CONDITION_KEY, ALERT_COUNT_KEY, acknowledgement, alert, alert_message, alert_page,
    alert_query, alert_query_message, alert_response, alert_severity, alert_severity_from_number,
    alert_status, alert_status_from_number, pending_alerts_response,
};
pub use change::{
    change_answer, state_change_message, state_change_request, state_change_response,
};
pub use diff::{
    action_plan, action_priority, action_priority_from_number, diff_answer, force_sync_response,
    plan, state_diff, state_diff_message, state_diff_response, sync_answer, sync_message,
    sync_target,
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
pub use health::{
    HEALTH_METADATA_KEYS, HEALTH_METADATA_PREFIXES, health_status, health_view, is_health_key,
    merge_health,
};
pub use query::{
    history_entry, history_query, history_request, limit, matches_labels, query_kind, query_name,
    resource_state, resource_view, transition_history,
};
pub use recovery::{
    abort_message, abort_target, incident_ref, issue_type, issue_type_from_number, ladder,
    recovery_action, recovery_action_from_number, recovery_answer, recovery_kind, recovery_phase,
    recovery_phase_from_number, recovery_response, recovery_status, recovery_step,
    recovery_type_ladder, recovery_view, status_message, status_target, step_outcome,
    step_outcome_from_number, step_record, step_status, trigger_message, trigger_request,
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

#[cfg(test)]
mod recovery_tests;
