//! Every conversion between protobuf messages and engine/core types, and
//! every mapping of errors to the wire's `ErrorCode` and gRPC `Status`.
//!
//! The server, the ActionController client and the StateManager client all
//! convert here, so a field number or an enum value is interpreted in one
//! place. Nothing here panics on any input: unknown enum numbers, empty or
//! negative values become `InvalidArgument` (requests) or a [`ConvertError`]
//! (answers).

use std::collections::HashMap;

use engine::{ActionError, OffloadAnswer, OffloadRequest, ReconcileRequest};
use engine::{ChangeAnswer, EngineError, HistoryQuery, ReportAnswer, ResourceView};
use engine::{Delivery, Event, EventFilter, EventKind, Severity};
use statemachine_core::name::validate;
use statemachine_core::record::HistoryEntry;
use statemachine_core::{
    AnyState, ContainerState, ErrorCode, ModelState, NodeReport, PackageState, ReportedContainer,
    RequestKind, ResourceKind, ScenarioState, StateChangeRequest,
};
use tonic::{Code, Status};

use crate::proto::actioncontroller as ac;
use crate::proto::monitoringserver as ms;
use crate::proto::statemanager as sm;

/// The metadata key of a [`lagged_event`]: how many events the subscriber missed.
pub const LAGGED_EVENTS_KEY: &str = "lagged_events";
/// The metadata key naming an event's resource kind (`container`, `model`,
/// `package`, `scenario`); containers have no `ResourceType` on the wire.
pub const RESOURCE_KIND_KEY: &str = "resource_kind";
/// The subscription filter key selecting one resource name.
pub const FILTER_RESOURCE_NAME: &str = "resource_name";
/// The subscription filter key selecting one resource kind by its lowercase
/// name (the only way to ask for container events).
pub const FILTER_RESOURCE_KIND: &str = "resource_kind";

const MANAGED_TYPES: &str =
    "use RESOURCE_TYPE_SCENARIO, RESOURCE_TYPE_PACKAGE or RESOURCE_TYPE_MODEL";

/// An answer from a peer that cannot be turned into engine types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed answer: {0}")]
pub struct ConvertError(pub String);

fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message)
}

// ---------------------------------------------------------------- enums

/// The wire's `ResourceType` of a kind. Containers have none: `UNSPECIFIED`.
pub fn resource_type(kind: ResourceKind) -> sm::ResourceType {
    match kind {
        ResourceKind::Scenario => sm::ResourceType::Scenario,
        ResourceKind::Package => sm::ResourceType::Package,
        ResourceKind::Model => sm::ResourceType::Model,
        ResourceKind::Container => sm::ResourceType::Unspecified,
    }
}

/// The request kind with the wire's `ResourceType` number; a number the
/// protocol does not define is kept ([`RequestKind::Unknown`]), so the
/// answer can name it.
pub fn request_kind(number: i32) -> RequestKind {
    match sm::ResourceType::try_from(number) {
        Ok(sm::ResourceType::Unspecified) => RequestKind::Unspecified,
        Ok(sm::ResourceType::Scenario) => RequestKind::Scenario,
        Ok(sm::ResourceType::Package) => RequestKind::Package,
        Ok(sm::ResourceType::Model) => RequestKind::Model,
        Ok(sm::ResourceType::Volume) => RequestKind::Volume,
        Ok(sm::ResourceType::Network) => RequestKind::Network,
        Ok(sm::ResourceType::Node) => RequestKind::Node,
        Err(_) => RequestKind::Unknown(number),
    }
}

/// The wire's `ResourceType` number of a request kind (unknown numbers are
/// kept, so a caller can send what it was given).
pub fn request_kind_number(kind: RequestKind) -> i32 {
    match kind {
        RequestKind::Unspecified => sm::ResourceType::Unspecified as i32,
        RequestKind::Scenario => sm::ResourceType::Scenario as i32,
        RequestKind::Package => sm::ResourceType::Package as i32,
        RequestKind::Model => sm::ResourceType::Model as i32,
        RequestKind::Volume => sm::ResourceType::Volume as i32,
        RequestKind::Network => sm::ResourceType::Network as i32,
        RequestKind::Node => sm::ResourceType::Node as i32,
        RequestKind::Unknown(number) => number,
    }
}

/// The wire's enum number of a state (`ScenarioState`, `PackageState`,
/// `ModelState`); `None` for a container state, which has no wire enum.
pub fn state_number(state: AnyState) -> Option<i32> {
    let number = match state {
        AnyState::Scenario(state) => i32::from(match state {
            ScenarioState::Idle => sm::ScenarioState::Idle,
            ScenarioState::Waiting => sm::ScenarioState::Waiting,
            ScenarioState::Satisfied => sm::ScenarioState::Satisfied,
            ScenarioState::Allowed => sm::ScenarioState::Allowed,
            ScenarioState::Denied => sm::ScenarioState::Denied,
            ScenarioState::Completed => sm::ScenarioState::Completed,
        }),
        AnyState::Package(state) => i32::from(match state {
            PackageState::Idle => sm::PackageState::Idle,
            PackageState::Paused => sm::PackageState::Paused,
            PackageState::Exited => sm::PackageState::Exited,
            PackageState::Degraded => sm::PackageState::Degraded,
            PackageState::Error => sm::PackageState::Error,
            PackageState::Running => sm::PackageState::Running,
        }),
        AnyState::Model(state) => i32::from(match state {
            ModelState::Created => sm::ModelState::Created,
            ModelState::Paused => sm::ModelState::Paused,
            ModelState::Exited => sm::ModelState::Exited,
            ModelState::Dead => sm::ModelState::Dead,
            ModelState::Running => sm::ModelState::Running,
        }),
        AnyState::Container(_) => return None,
    };
    Some(number)
}

/// The state of `kind` with the wire's enum number; `None` for UNSPECIFIED,
/// numbers the protocol does not define, and containers (no wire enum).
pub fn state_from_number(kind: ResourceKind, number: i32) -> Option<AnyState> {
    Some(match kind {
        ResourceKind::Scenario => {
            AnyState::Scenario(match sm::ScenarioState::try_from(number).ok()? {
                sm::ScenarioState::Idle => ScenarioState::Idle,
                sm::ScenarioState::Waiting => ScenarioState::Waiting,
                sm::ScenarioState::Satisfied => ScenarioState::Satisfied,
                sm::ScenarioState::Allowed => ScenarioState::Allowed,
                sm::ScenarioState::Denied => ScenarioState::Denied,
                sm::ScenarioState::Completed => ScenarioState::Completed,
                sm::ScenarioState::Unspecified => return None,
            })
        }
        ResourceKind::Package => {
            AnyState::Package(match sm::PackageState::try_from(number).ok()? {
                sm::PackageState::Idle => PackageState::Idle,
                sm::PackageState::Paused => PackageState::Paused,
                sm::PackageState::Exited => PackageState::Exited,
                sm::PackageState::Degraded => PackageState::Degraded,
                sm::PackageState::Error => PackageState::Error,
                sm::PackageState::Running => PackageState::Running,
                sm::PackageState::Unspecified => return None,
            })
        }
        ResourceKind::Model => AnyState::Model(match sm::ModelState::try_from(number).ok()? {
            sm::ModelState::Created => ModelState::Created,
            sm::ModelState::Paused => ModelState::Paused,
            sm::ModelState::Exited => ModelState::Exited,
            sm::ModelState::Dead => ModelState::Dead,
            sm::ModelState::Running => ModelState::Running,
            sm::ModelState::Unspecified => return None,
        }),
        ResourceKind::Container => return None,
    })
}

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

/// The wire's `ErrorCode` of a core error code.
pub fn error_code(code: ErrorCode) -> sm::ErrorCode {
    match code {
        ErrorCode::Success => sm::ErrorCode::Success,
        ErrorCode::Unspecified => sm::ErrorCode::Unspecified,
        ErrorCode::InvalidRequest => sm::ErrorCode::InvalidRequest,
        ErrorCode::ResourceNotFound => sm::ErrorCode::ResourceNotFound,
        ErrorCode::InvalidStateTransition => sm::ErrorCode::InvalidStateTransition,
        ErrorCode::PreconditionFailed => sm::ErrorCode::PreconditionFailed,
        ErrorCode::Timeout => sm::ErrorCode::Timeout,
        ErrorCode::ResourceUnavailable => sm::ErrorCode::ResourceUnavailable,
        ErrorCode::PermissionDenied => sm::ErrorCode::PermissionDenied,
        ErrorCode::InternalError => sm::ErrorCode::InternalError,
        ErrorCode::DependencyFailed => sm::ErrorCode::DependencyFailed,
        ErrorCode::RecoveryFailed => sm::ErrorCode::RecoveryFailed,
    }
}

/// The core error code with the wire's `ErrorCode` number; `None` for a
/// number the protocol does not define.
pub fn error_code_from_number(number: i32) -> Option<ErrorCode> {
    Some(match sm::ErrorCode::try_from(number).ok()? {
        sm::ErrorCode::Success => ErrorCode::Success,
        sm::ErrorCode::Unspecified => ErrorCode::Unspecified,
        sm::ErrorCode::InvalidRequest => ErrorCode::InvalidRequest,
        sm::ErrorCode::ResourceNotFound => ErrorCode::ResourceNotFound,
        sm::ErrorCode::InvalidStateTransition => ErrorCode::InvalidStateTransition,
        sm::ErrorCode::PreconditionFailed => ErrorCode::PreconditionFailed,
        sm::ErrorCode::Timeout => ErrorCode::Timeout,
        sm::ErrorCode::ResourceUnavailable => ErrorCode::ResourceUnavailable,
        sm::ErrorCode::PermissionDenied => ErrorCode::PermissionDenied,
        sm::ErrorCode::InternalError => ErrorCode::InternalError,
        sm::ErrorCode::DependencyFailed => ErrorCode::DependencyFailed,
        sm::ErrorCode::RecoveryFailed => ErrorCode::RecoveryFailed,
    })
}

/// The wire's `EventType` of an event kind.
pub fn event_type(kind: EventKind) -> sm::EventType {
    match kind {
        EventKind::StateChange => sm::EventType::StateChange,
        EventKind::RecoveryStart => sm::EventType::RecoveryStart,
        EventKind::RecoveryComplete => sm::EventType::RecoveryComplete,
        EventKind::RecoveryFailed => sm::EventType::RecoveryFailed,
        EventKind::Alert => sm::EventType::Alert,
        EventKind::Warning => sm::EventType::Warning,
    }
}

/// The event kind with the wire's `EventType` number; `None` for
/// UNSPECIFIED, HEALTH_STATUS (the engine emits none) and unknown numbers.
pub fn event_kind_from_number(number: i32) -> Option<EventKind> {
    match sm::EventType::try_from(number).ok()? {
        sm::EventType::StateChange => Some(EventKind::StateChange),
        sm::EventType::RecoveryStart => Some(EventKind::RecoveryStart),
        sm::EventType::RecoveryComplete => Some(EventKind::RecoveryComplete),
        sm::EventType::RecoveryFailed => Some(EventKind::RecoveryFailed),
        sm::EventType::Alert => Some(EventKind::Alert),
        sm::EventType::Warning => Some(EventKind::Warning),
        sm::EventType::Unspecified | sm::EventType::HealthStatus => None,
    }
}

/// The wire's `Severity` of a severity.
pub fn severity(severity: Severity) -> sm::Severity {
    match severity {
        Severity::Info => sm::Severity::Info,
        Severity::Warning => sm::Severity::Warning,
        Severity::Error => sm::Severity::Error,
        Severity::Critical => sm::Severity::Critical,
    }
}

/// The severity with the wire's `Severity` number; `None` for UNSPECIFIED
/// and unknown numbers.
pub fn severity_from_number(number: i32) -> Option<Severity> {
    match sm::Severity::try_from(number).ok()? {
        sm::Severity::Info => Some(Severity::Info),
        sm::Severity::Warning => Some(Severity::Warning),
        sm::Severity::Error => Some(Severity::Error),
        sm::Severity::Critical => Some(Severity::Critical),
        sm::Severity::Unspecified => None,
    }
}

// ---------------------------------------------------------------- errors

/// The gRPC status for a failure with a wire error code (used where a
/// method has no `error_code` field to answer in).
pub fn status_for(code: ErrorCode, message: impl Into<String>) -> Status {
    let grpc = match code {
        ErrorCode::Success => Code::Ok,
        ErrorCode::Unspecified => Code::Unknown,
        ErrorCode::InvalidRequest => Code::InvalidArgument,
        ErrorCode::ResourceNotFound => Code::NotFound,
        ErrorCode::InvalidStateTransition | ErrorCode::PreconditionFailed => {
            Code::FailedPrecondition
        }
        ErrorCode::Timeout => Code::DeadlineExceeded,
        ErrorCode::ResourceUnavailable | ErrorCode::DependencyFailed => Code::Unavailable,
        ErrorCode::PermissionDenied => Code::PermissionDenied,
        ErrorCode::InternalError | ErrorCode::RecoveryFailed => Code::Internal,
    };
    Status::new(grpc, message)
}

/// The wire error code a gRPC status stands for (the inverse of
/// [`status_for`] where it is one to one).
pub fn error_code_for_status(code: Code) -> ErrorCode {
    match code {
        Code::Ok => ErrorCode::Success,
        Code::InvalidArgument | Code::OutOfRange => ErrorCode::InvalidRequest,
        Code::NotFound => ErrorCode::ResourceNotFound,
        Code::FailedPrecondition => ErrorCode::PreconditionFailed,
        Code::DeadlineExceeded | Code::Cancelled => ErrorCode::Timeout,
        Code::Unavailable | Code::ResourceExhausted | Code::Aborted => {
            ErrorCode::ResourceUnavailable
        }
        Code::PermissionDenied | Code::Unauthenticated => ErrorCode::PermissionDenied,
        Code::Internal | Code::DataLoss | Code::Unimplemented => ErrorCode::InternalError,
        Code::Unknown | Code::AlreadyExists => ErrorCode::Unspecified,
    }
}

/// The gRPC status for a request that is not a valid protobuf message: the
/// caller sent it, so `InvalidArgument` with the decode error (tonic's
/// default, `Internal`, would blame the server).
pub fn undecodable_request(error: &prost::DecodeError) -> Status {
    invalid(error.to_string())
}

/// The gRPC status for an engine that could not answer.
pub fn engine_status(error: &EngineError) -> Status {
    status_for(error.code(), error.to_string())
}

/// What an ActionController's gRPC failure means to the engine: transport
/// failures, timeouts and overload are worth retrying (`Unavailable`); a
/// refusal of the request itself is not (`Refused`).
pub fn action_error(status: &Status) -> ActionError {
    let text = if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        format!("{:?}: {}", status.code(), status.message())
    };
    match status.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::Unauthenticated => ActionError::Refused(text),
        _ => ActionError::Unavailable(text),
    }
}

// ---------------------------------------------------------------- state changes

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

// ---------------------------------------------------------------- container reports

/// A received `ContainerList` as the engine's node report. The image and
/// stats maps are not used by the rules and are dropped.
pub fn node_report(list: ms::ContainerList) -> NodeReport {
    NodeReport {
        node: list.node_name,
        containers: list
            .containers
            .into_iter()
            .map(|info| {
                let mut container = ReportedContainer {
                    id: info.id,
                    names: info.names,
                    state: info.state,
                    config: info.config,
                    annotations: info.annotation,
                    derived: None,
                };
                // Queued reports keep only what planning needs.
                container.derive_state();
                container
            })
            .collect(),
    }
}

/// A container as a `ContainerInfo` message (for clients).
/// A container whose podman map was dropped by
/// [`ReportedContainer::derive_state`] is sent with a minimal map that
/// derives to the same state.
pub fn container_info(container: ReportedContainer) -> ms::ContainerInfo {
    let state = match container.derived {
        Some(derived) if container.state.is_empty() => podman_map(derived),
        _ => container.state,
    };
    ms::ContainerInfo {
        id: container.id,
        names: container.names,
        image: String::new(),
        state,
        config: container.config,
        annotation: container.annotations,
        stats: HashMap::new(),
    }
}

/// A podman state map that derives to `state` (STATE-MACHINES §1).
fn podman_map(state: ContainerState) -> HashMap<String, String> {
    let status = match state {
        ContainerState::Dead => "dead",
        ContainerState::Exited => "exited",
        ContainerState::Paused => "paused",
        ContainerState::Running => "running",
        ContainerState::Initialized => "initialized",
        ContainerState::Created => "created",
        ContainerState::Unknown => return HashMap::new(),
    };
    HashMap::from([("Status".to_owned(), status.to_owned())])
}

/// The engine's answer to a node's report: `resp` says what happened; a
/// rejected report is `InvalidArgument`, an unavailable store `Unavailable`
/// (see [`status_for`]).
pub fn container_list_response(
    node: &str,
    answer: ReportAnswer,
) -> Result<ms::SendContainerListResponse, Status> {
    if answer.code != ErrorCode::Success {
        let message = if answer.message.is_empty() {
            format!("container list of node '{node}' refused: {}", answer.code)
        } else {
            answer.message
        };
        return Err(status_for(answer.code, message));
    }
    let resp = if answer.message.is_empty() {
        format!("container list of node '{node}' applied")
    } else {
        answer.message
    };
    Ok(ms::SendContainerListResponse { resp })
}

// ---------------------------------------------------------------- queries

/// A non-negative `limit` field as a count; `InvalidArgument` when negative.
pub fn limit(value: i32, field: &str) -> Result<usize, Status> {
    usize::try_from(value).map_err(|_| invalid(format!("{field} is {value}; it must be 0 or more")))
}

/// Checks a queried resource name; `InvalidArgument` says what is wrong.
pub fn query_name(name: &str) -> Result<(), Status> {
    validate(name).map_err(|e| invalid(format!("invalid resource_name: {e}")))
}

/// A resource's state as a `ResourceState`. The StateManager records no
/// separate desired state, so `desired_state` is empty; `history` is left
/// empty (see `GetResourceStateHistory`).
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

// ---------------------------------------------------------------- subscriptions

/// A subscription request as the engine's filter. `resource_type`
/// UNSPECIFIED means all types; `filter` may hold `resource_name` and
/// `resource_kind` (`container`, `model`, `package`, `scenario`). Unknown
/// types, unmanaged types, unknown filter keys and bad names are
/// `InvalidArgument`.
pub fn event_filter(request: &sm::StateChangeSubscriptionRequest) -> Result<EventFilter, Status> {
    let mut kind = match request_kind(request.resource_type) {
        RequestKind::Unspecified => None,
        other => Some(query_kind(request_kind_number(other))?),
    };
    let mut resource_name = None;
    for (key, value) in &request.filter {
        match key.as_str() {
            FILTER_RESOURCE_NAME => {
                query_name(value)?;
                resource_name = Some(value.clone());
            }
            FILTER_RESOURCE_KIND => {
                let named = ResourceKind::from_key_segment(value).ok_or_else(|| {
                    invalid(format!(
                        "filter resource_kind '{}' is not one of container, model, package, scenario",
                        value.escape_debug()
                    ))
                })?;
                if kind.is_some_and(|k| k != named) {
                    return Err(invalid(format!(
                        "filter resource_kind '{value}' contradicts resource_type {}",
                        request.resource_type
                    )));
                }
                kind = Some(named);
            }
            other => {
                return Err(invalid(format!(
                    "unknown filter key '{}'; supported: {FILTER_RESOURCE_NAME}, {FILTER_RESOURCE_KIND}",
                    other.escape_debug()
                )));
            }
        }
    }
    Ok(EventFilter {
        resource_kind: kind,
        resource_name,
        include_recovery: request.include_recovery_events,
        include_health: request.include_health_events,
    })
}

/// The subscription request of a filter (for clients).
pub fn subscription_request(filter: &EventFilter) -> sm::StateChangeSubscriptionRequest {
    let mut map = HashMap::new();
    let mut resource_type = sm::ResourceType::Unspecified;
    match filter.resource_kind {
        Some(ResourceKind::Container) => {
            map.insert(
                FILTER_RESOURCE_KIND.to_owned(),
                ResourceKind::Container.as_key_segment().to_owned(),
            );
        }
        Some(kind) => resource_type = self::resource_type(kind),
        None => {}
    }
    if let Some(name) = &filter.resource_name {
        map.insert(FILTER_RESOURCE_NAME.to_owned(), name.clone());
    }
    sm::StateChangeSubscriptionRequest {
        resource_type: resource_type as i32,
        filter: map,
        include_health_events: filter.include_health,
        include_recovery_events: filter.include_recovery,
    }
}

/// An engine event as a `StateChangeEvent`: `state_change` carries the
/// resource, the states left and entered (empty: none), the transition id,
/// the time and the source; the metadata also names the resource kind.
pub fn state_change_event(event: &Event) -> sm::StateChangeEvent {
    let mut metadata: HashMap<String, String> = event
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    metadata
        .entry(RESOURCE_KIND_KEY.to_owned())
        .or_insert_with(|| event.resource_kind.as_key_segment().to_owned());
    sm::StateChangeEvent {
        event_type: event_type(event.kind) as i32,
        state_change: Some(sm::StateChange {
            resource_type: resource_type(event.resource_kind) as i32,
            resource_name: event.resource_name.clone(),
            current_state: event.from.clone().unwrap_or_default(),
            target_state: event.to.clone().unwrap_or_default(),
            transition_id: event.transition_id.clone(),
            timestamp_ns: event.at_ns,
            source: event.source.clone(),
        }),
        event_timestamp_ns: event.at_ns,
        event_id: event.id.clone(),
        severity: severity(event.severity) as i32,
        description: event.description.clone(),
        metadata,
    }
}

/// The WARNING event telling a subscriber that it fell behind and missed
/// `missed` events (metadata `lagged_events`).
pub fn lagged_event(missed: u64, now_ns: i64) -> sm::StateChangeEvent {
    sm::StateChangeEvent {
        event_type: sm::EventType::Warning as i32,
        state_change: None,
        event_timestamp_ns: now_ns,
        event_id: format!("lagged-{now_ns}"),
        severity: sm::Severity::Warning as i32,
        description: format!(
            "this subscriber fell behind and missed {missed} events; re-read the states it depends on"
        ),
        metadata: HashMap::from([(LAGGED_EVENTS_KEY.to_owned(), missed.to_string())]),
    }
}

/// A received `StateChangeEvent` as a delivery (for clients): a
/// [`lagged_event`] becomes [`Delivery::Lagged`], anything else an event.
pub fn delivery(event: sm::StateChangeEvent) -> Result<Delivery, ConvertError> {
    if event.event_type == sm::EventType::Warning as i32
        && let Some(missed) = event.metadata.get(LAGGED_EVENTS_KEY)
    {
        let missed = missed
            .parse()
            .map_err(|_| ConvertError(format!("lagged_events '{missed}' is not a count")))?;
        return Ok(Delivery::Lagged(missed));
    }
    let kind = event_kind_from_number(event.event_type).ok_or_else(|| {
        ConvertError(format!(
            "event '{}' has event_type {}",
            event.event_id, event.event_type
        ))
    })?;
    let severity = severity_from_number(event.severity).ok_or_else(|| {
        ConvertError(format!(
            "event '{}' has severity {}",
            event.event_id, event.severity
        ))
    })?;
    let change = event.state_change.unwrap_or_default();
    let resource_kind = request_kind(change.resource_type)
        .managed()
        .or_else(|| {
            event
                .metadata
                .get(RESOURCE_KIND_KEY)
                .and_then(|k| ResourceKind::from_key_segment(k))
        })
        .ok_or_else(|| {
            ConvertError(format!("event '{}' names no resource kind", event.event_id))
        })?;
    let state = |s: String| (!s.is_empty()).then_some(s);
    let mut metadata: std::collections::BTreeMap<String, String> =
        event.metadata.into_iter().collect();
    metadata.remove(RESOURCE_KIND_KEY);
    Ok(Delivery::Event(std::sync::Arc::new(Event {
        id: event.event_id,
        kind,
        severity,
        resource_kind,
        resource_name: change.resource_name,
        from: state(change.current_state),
        to: state(change.target_state),
        at_ns: event.event_timestamp_ns,
        source: change.source,
        transition_id: change.transition_id,
        description: event.description,
        metadata,
    })))
}

// ---------------------------------------------------------------- the ActionController

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

#[cfg(test)]
mod tests;

#[cfg(test)]
mod compact_reports {
    use super::*;

    fn info(name: &str, state: &[(&str, &str)]) -> ms::ContainerInfo {
        ms::ContainerInfo {
            id: format!("id-{name}"),
            names: vec![format!("/{name}")],
            state: state
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_decoded_report_keeps_the_derived_state_not_the_podman_map() {
        let report = node_report(ms::ContainerList {
            node_name: "n1".into(),
            containers: vec![
                info("a", &[("Status", "exited"), ("ExitCode", "137")]),
                info("b", &[("Status", "Paused"), ("Pid", "7")]),
                info("c", &[]),
            ],
        });
        let states: Vec<_> = report
            .containers
            .iter()
            .map(|c| (c.state.is_empty(), c.container_state()))
            .collect();
        assert_eq!(
            states,
            [
                (true, ContainerState::Dead),
                (true, ContainerState::Paused),
                (true, ContainerState::Unknown)
            ]
        );
    }

    #[test]
    fn a_derived_container_is_sent_with_a_map_that_derives_the_same() {
        for state in [
            ContainerState::Dead,
            ContainerState::Exited,
            ContainerState::Paused,
            ContainerState::Running,
            ContainerState::Initialized,
            ContainerState::Created,
            ContainerState::Unknown,
        ] {
            let sent = container_info(ReportedContainer {
                names: vec!["/x".into()],
                derived: Some(state),
                ..Default::default()
            });
            let back = node_report(ms::ContainerList {
                node_name: "n1".into(),
                containers: vec![sent],
            });
            assert_eq!(back.containers[0].container_state(), state);
        }
    }
}
