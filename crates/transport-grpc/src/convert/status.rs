//! Failures as gRPC statuses: the wire's error codes to `Status` codes and
//! back, undecodable requests, engine errors and the ActionController's
//! failures.

use engine::{ActionError, EngineError};
use statemachine_core::ErrorCode;
use tonic::{Code, Status};

use super::invalid;

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
