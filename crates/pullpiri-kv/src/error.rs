//! The bridge's errors: [`BridgeError`] for starting it, [`CallError`] for
//! one gRPC call, and the crate's own `SyncError` for one round of work.

use std::time::Duration;

use state_store::StoreError;

/// Why [`Bridge::spawn`](crate::Bridge::spawn) or
/// [`RocksDbClient::lazy`](crate::RocksDbClient::lazy) could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BridgeError {
    /// The service URL cannot be used.
    #[error("bad RocksDbService URL '{url}': {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Called outside a Tokio runtime, where the bridge cannot run its tasks.
    #[error("the RocksDbService bridge must be started inside a Tokio runtime")]
    NoRuntime,
}

/// Why one call to the service failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No answer within the request timeout (connecting included).
    #[error("RocksDbService {call} timed out after {after:?}")]
    Timeout {
        /// The rpc (`BatchPut`, ...).
        call: &'static str,
        /// The deadline that passed.
        after: Duration,
    },
    /// The service refused the request with INVALID_ARGUMENT (a bad key, an
    /// empty prefix). Sending it again gets the same answer.
    #[error("RocksDbService refused {call}: {}", .status.message())]
    Refused {
        /// The rpc.
        call: &'static str,
        /// The service's answer.
        #[source]
        status: Box<tonic::Status>,
    },
    /// Any other error status: unreachable (UNAVAILABLE), failing
    /// (INTERNAL), or not the service we expect (UNIMPLEMENTED).
    #[error("RocksDbService {call} failed: {:?}: {}", .status.code(), .status.message())]
    Status {
        /// The rpc.
        call: &'static str,
        /// The service's (or the transport's) answer.
        #[source]
        status: Box<tonic::Status>,
    },
    /// The service answered, but with `success: false` or a non-empty
    /// `error` field.
    #[error("RocksDbService {call} did not succeed: {message}")]
    Unsuccessful {
        /// The rpc.
        call: &'static str,
        /// The service's `error` text.
        message: String,
    },
}

impl CallError {
    /// Sorts an error status: INVALID_ARGUMENT is [`CallError::Refused`],
    /// anything else [`CallError::Status`].
    pub(crate) fn from_status(call: &'static str, status: tonic::Status) -> Self {
        let status = Box::new(status);
        if status.code() == tonic::Code::InvalidArgument {
            CallError::Refused { call, status }
        } else {
            CallError::Status { call, status }
        }
    }

    /// `true` when the service refused the request for good (INVALID_ARGUMENT):
    /// retrying it is pointless.
    pub fn is_refused(&self) -> bool {
        matches!(self, CallError::Refused { .. })
    }

    /// `true` when the service answered at all (a refusal, or an answer
    /// without success); `false` for timeouts and error statuses, which say
    /// nothing came back from a working service.
    pub fn service_answered(&self) -> bool {
        matches!(
            self,
            CallError::Refused { .. } | CallError::Unsuccessful { .. }
        )
    }
}

/// Why one round of the bridge's work (a poll, a resync) stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SyncError {
    /// A call to the service failed.
    #[error(transparent)]
    Service(#[from] CallError),
    /// Our store failed (or a guard did not hold).
    #[error("our store: {0}")]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_is_a_refusal_and_other_codes_are_failures() {
        let refused = CallError::from_status("Put", tonic::Status::invalid_argument("bad key"));
        assert!(refused.is_refused() && refused.service_answered());
        assert_eq!(refused.to_string(), "RocksDbService refused Put: bad key");

        let down = CallError::from_status("Get", tonic::Status::unavailable("refused"));
        assert!(!down.is_refused() && !down.service_answered());
        assert_eq!(
            down.to_string(),
            "RocksDbService Get failed: Unavailable: refused"
        );

        let late = CallError::Timeout {
            call: "BatchPut",
            after: Duration::from_millis(50),
        };
        assert!(!late.is_refused() && !late.service_answered());
        assert_eq!(
            late.to_string(),
            "RocksDbService BatchPut timed out after 50ms"
        );
    }
}
