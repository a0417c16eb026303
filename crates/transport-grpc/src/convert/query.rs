//! Queries: resource kinds and names, resource states, label selectors and
//! history, both ways.

use std::collections::HashMap;

use engine::{HistoryQuery, ResourceView};
use statemachine_core::name::validate;
use statemachine_core::record::HistoryEntry;
use statemachine_core::{RequestKind, ResourceKind};
use tonic::Status;

use super::{ConvertError, invalid, request_kind, resource_type};
use crate::proto::statemanager as sm;

const MANAGED_TYPES: &str =
    "use RESOURCE_TYPE_SCENARIO, RESOURCE_TYPE_PACKAGE or RESOURCE_TYPE_MODEL";

/// The managed kind a query's `resource_type` names; `InvalidArgument`
/// for UNSPECIFIED, unmanaged types (volume, network, node) and numbers the
/// protocol does not define.
pub fn query_kind(number: i32) -> Result<ResourceKind, Status> {
    let kind = request_kind(number);
    if let Some(managed) = kind.managed() {
        return Ok(managed);
    }
    Err(invalid(match kind {
        RequestKind::Unspecified => format!("resource_type is unspecified; {MANAGED_TYPES}"),
        RequestKind::Unknown(n) => format!("unknown resource_type {n}; {MANAGED_TYPES}"),
        other => {
            format!("{other:?} resources are not managed by the StateManager; {MANAGED_TYPES}")
        }
    }))
}

/// A non-negative `limit` field as a count; `InvalidArgument` when negative.
pub fn limit(value: i32, field: &str) -> Result<usize, Status> {
    usize::try_from(value).map_err(|_| invalid(format!("{field} is {value}; it must be 0 or more")))
}

/// Checks a queried resource name; `InvalidArgument` says what is wrong.
pub fn query_name(name: &str) -> Result<(), Status> {
    validate(name).map_err(|e| invalid(format!("invalid resource_name: {e}")))
}

/// A resource's state as a `ResourceState`. The view carries no desired
/// state and no health: `desired_state` is empty and `health_status`
/// absent until [`super::merge_health`] adds them (`GetResourceState`
/// does); `history` is left empty (see `GetResourceStateHistory`).
pub fn resource_state(view: ResourceView) -> sm::ResourceState {
    sm::ResourceState {
        resource_type: resource_type(view.kind) as i32,
        resource_name: view.name,
        current_state: view.state,
        desired_state: String::new(),
        last_transition_time_ns: view.last_transition_ns.unwrap_or(0),
        state_generation: view.generation,
        metadata: view.metadata.into_iter().collect(),
        history: Vec::new(),
        health_status: None,
    }
}

/// A received `ResourceState` as a view (for clients).
pub fn resource_view(state: sm::ResourceState) -> Result<ResourceView, ConvertError> {
    let kind = request_kind(state.resource_type).managed().ok_or_else(|| {
        ConvertError(format!(
            "resource '{}' has resource_type {}, not a managed type",
            state.resource_name, state.resource_type
        ))
    })?;
    Ok(ResourceView {
        kind,
        name: state.resource_name,
        state: state.current_state,
        last_transition_ns: (state.last_transition_time_ns != 0)
            .then_some(state.last_transition_time_ns),
        generation: state.state_generation,
        metadata: state.metadata.into_iter().collect(),
    })
}

/// Whether a resource carries every `label_selector` pair in its metadata
/// (an empty selector selects everything).
pub fn matches_labels(view: &ResourceView, selector: &HashMap<String, String>) -> bool {
    selector
        .iter()
        .all(|(key, value)| view.metadata.get(key) == Some(value))
}

/// A history request's bounds; `InvalidArgument` for negative values or an
/// empty range. 0 means unbounded (times) or the default of 100 (limit).
pub fn history_query(request: &sm::ResourceStateHistoryRequest) -> Result<HistoryQuery, Status> {
    if request.start_time_ns < 0 || request.end_time_ns < 0 {
        return Err(invalid(format!(
            "start_time_ns {} / end_time_ns {}: times are ns since the epoch, 0 for unbounded",
            request.start_time_ns, request.end_time_ns
        )));
    }
    if request.end_time_ns != 0 && request.start_time_ns > request.end_time_ns {
        return Err(invalid(format!(
            "start_time_ns {} is after end_time_ns {}",
            request.start_time_ns, request.end_time_ns
        )));
    }
    Ok(HistoryQuery {
        start_ns: request.start_time_ns,
        end_ns: request.end_time_ns,
        limit: limit(request.limit, "limit")?,
    })
}

/// The history request of a query (for clients).
pub fn history_request(
    kind: ResourceKind,
    name: &str,
    query: &HistoryQuery,
) -> sm::ResourceStateHistoryRequest {
    sm::ResourceStateHistoryRequest {
        resource_type: resource_type(kind) as i32,
        resource_name: name.to_owned(),
        start_time_ns: query.start_ns,
        end_time_ns: query.end_ns,
        limit: i32::try_from(query.limit).unwrap_or(i32::MAX),
    }
}

/// A history entry as a `StateTransitionHistory`. Only committed
/// transitions are recorded, so `success` is always true; a missing
/// state (none before, removed after) is the empty string.
pub fn transition_history(entry: HistoryEntry) -> sm::StateTransitionHistory {
    sm::StateTransitionHistory {
        from_state: entry.from.unwrap_or_default(),
        to_state: entry.to.unwrap_or_default(),
        timestamp_ns: entry.at_ns,
        transition_id: entry.transition_id,
        reason: entry.reason,
        source: entry.source,
        duration_ms: entry.duration_ms.unwrap_or(0),
        success: true,
    }
}

/// A received `StateTransitionHistory` as a history entry (for clients).
/// Empty states read as `None`; a duration of 0 reads as unknown.
pub fn history_entry(history: sm::StateTransitionHistory) -> HistoryEntry {
    let state = |s: String| (!s.is_empty()).then_some(s);
    HistoryEntry {
        from: state(history.from_state),
        to: state(history.to_state),
        at_ns: history.timestamp_ns,
        source: history.source,
        transition_id: history.transition_id,
        reason: history.reason,
        duration_ms: (history.duration_ms != 0).then_some(history.duration_ms),
    }
}
