//! Error codes shared with the wire protocol, and rejections of requests.

use std::fmt;

/// The wire protocol's `ErrorCode` (WIRE-PROTOCOL.md), numbered as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request succeeded.
    Success = 0,
    /// Unspecified failure.
    Unspecified = 1,
    /// The request is malformed (bad name, unknown state, unmanaged type, ...).
    InvalidRequest = 2,
    /// The resource is known nowhere.
    ResourceNotFound = 3,
    /// The transition is not in the table.
    InvalidStateTransition = 4,
    /// The request's `current_state` disagrees with the record (strict mode).
    PreconditionFailed = 5,
    /// The request did not finish in time.
    Timeout = 6,
    /// The store is unavailable.
    ResourceUnavailable = 7,
    /// The source may not request this transition.
    PermissionDenied = 8,
    /// A bug or an unexpected condition.
    InternalError = 9,
    /// A component the request depends on failed.
    DependencyFailed = 10,
    /// Recovery failed.
    RecoveryFailed = 11,
}

impl ErrorCode {
    /// The number on the wire.
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The protobuf enum name (`ERROR_CODE_INVALID_REQUEST`).
    pub fn as_proto_name(self) -> &'static str {
        match self {
            ErrorCode::Success => "ERROR_CODE_SUCCESS",
            ErrorCode::Unspecified => "ERROR_CODE_UNSPECIFIED",
            ErrorCode::InvalidRequest => "ERROR_CODE_INVALID_REQUEST",
            ErrorCode::ResourceNotFound => "ERROR_CODE_RESOURCE_NOT_FOUND",
            ErrorCode::InvalidStateTransition => "ERROR_CODE_INVALID_STATE_TRANSITION",
            ErrorCode::PreconditionFailed => "ERROR_CODE_PRECONDITION_FAILED",
            ErrorCode::Timeout => "ERROR_CODE_TIMEOUT",
            ErrorCode::ResourceUnavailable => "ERROR_CODE_RESOURCE_UNAVAILABLE",
            ErrorCode::PermissionDenied => "ERROR_CODE_PERMISSION_DENIED",
            ErrorCode::InternalError => "ERROR_CODE_INTERNAL_ERROR",
            ErrorCode::DependencyFailed => "ERROR_CODE_DEPENDENCY_FAILED",
            ErrorCode::RecoveryFailed => "ERROR_CODE_RECOVERY_FAILED",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_proto_name())
    }
}

/// A refused request: nothing is written, the caller gets this answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Rejection {
    /// The wire error code.
    pub code: ErrorCode,
    /// What was refused, for people.
    pub message: String,
    /// Why, or what would be accepted.
    pub details: String,
}

impl Rejection {
    /// A rejection with a code, a message and details.
    pub fn new(code: ErrorCode, message: impl Into<String>, details: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: details.into(),
        }
    }

    /// An INVALID_REQUEST rejection.
    pub fn invalid(message: impl Into<String>, details: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message, details)
    }
}
