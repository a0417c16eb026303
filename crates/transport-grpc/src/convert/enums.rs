//! The wire's enum numbers, both ways: resource types, states, error codes,
//! event types and severities. A number the protocol does not define is
//! kept ([`RequestKind::Unknown`]) or reads as `None`, never a panic.

use engine::{EventKind, Severity};
use statemachine_core::{
    AnyState, ErrorCode, ModelState, PackageState, RequestKind, ResourceKind, ScenarioState,
};

use crate::proto::statemanager as sm;

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
