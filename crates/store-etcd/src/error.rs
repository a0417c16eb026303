//! Mapping etcd-client errors onto [`StoreError`], and deciding which of them
//! may be retried.

use etcd_client::Error as EtcdError;
use state_store::StoreError;
use tonic::Code;

/// Whether a failed request may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// The request provably had no effect (it never reached etcd, or etcd
    /// refused it before proposing it): any request may be sent again.
    Safe,
    /// The request may or may not have been applied (the connection broke
    /// after sending, a leader changed while it was proposed): only a request
    /// whose repetition is harmless (a read, a guarded write) may be resent.
    IfIdempotent,
    /// etcd rejected the request; sending it again gives the same answer.
    Never,
}

/// A failed request: what to report and whether to retry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub error: StoreError,
    pub retry: Retry,
}

fn failure(error: StoreError, retry: Retry) -> Failure {
    Failure { error, retry }
}

fn unavailable(message: String) -> StoreError {
    StoreError::Unavailable { message }
}

fn invalid(message: String) -> StoreError {
    StoreError::InvalidRequest { message }
}

/// Texts of errors raised before a request left the client: connecting failed,
/// so nothing was sent.
const NOT_SENT_MARKERS: &[&str] = &[
    "tcp connect error",
    "error trying to connect",
    "connection refused",
    "connect timed out",
    "dns error",
];

fn not_sent(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    NOT_SENT_MARKERS.iter().any(|marker| lower.contains(marker))
}

/// Classifies an etcd-client error. `max_txn_ops` is the configured limit,
/// reported when etcd's own limit turns out to be lower.
pub(crate) fn classify(error: EtcdError, max_txn_ops: usize) -> Failure {
    match error {
        EtcdError::GRpcStatus(status) => {
            classify_status(status.code(), status.message(), max_txn_ops)
        }
        EtcdError::TransportError(e) => {
            let message = error_chain(&e);
            let retry = if not_sent(&message) {
                Retry::Safe
            } else {
                Retry::IfIdempotent
            };
            failure(unavailable(format!("transport error: {message}")), retry)
        }
        EtcdError::IoError(e) => {
            failure(unavailable(format!("i/o error: {e}")), Retry::IfIdempotent)
        }
        EtcdError::WatchError(message) => failure(
            unavailable(format!("watch error: {message}")),
            Retry::IfIdempotent,
        ),
        EtcdError::Internal(message) => failure(
            unavailable(format!("etcd client: {message}")),
            Retry::IfIdempotent,
        ),
        EtcdError::Utf8Error(e) => failure(
            StoreError::BadData {
                message: format!("etcd returned non-UTF-8 text: {e}"),
            },
            Retry::Never,
        ),
        other => failure(invalid(format!("etcd client: {other}")), Retry::Never),
    }
}

/// The error and its sources, joined: tonic's outer message alone ("transport
/// error") hides whether the connection was refused.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    message
}

/// Classifies a gRPC status by its code and, where etcd reuses one code for
/// different situations, by etcd's message (etcd's `rpctypes` error texts).
pub(crate) fn classify_status(code: Code, message: &str, max_txn_ops: usize) -> Failure {
    let text = format!("{message} ({code:?})");
    match code {
        Code::Unavailable if not_sent(message) => failure(unavailable(text), Retry::Safe),
        // "leader changed", "no leader", "request timed out", "server
        // stopped", transport errors: the request may have been proposed.
        Code::Unavailable | Code::Unknown | Code::Internal | Code::Aborted | Code::Cancelled => {
            failure(unavailable(text), Retry::IfIdempotent)
        }
        Code::DeadlineExceeded => failure(unavailable(text), Retry::IfIdempotent),
        Code::ResourceExhausted if message.contains("too many requests") => {
            // etcd refuses before proposing when its apply queue is full.
            failure(unavailable(text), Retry::Safe)
        }
        Code::ResourceExhausted if message.contains("space exceeded") => {
            // The NOSPACE alarm: writes fail until an operator defragments.
            failure(unavailable(text), Retry::Never)
        }
        Code::ResourceExhausted => failure(
            invalid(format!(
                "{text}; the request or its answer exceeds a size limit"
            )),
            Retry::Never,
        ),
        Code::InvalidArgument if message.contains("too many operations in txn") => failure(
            StoreError::TooLarge {
                ops: max_txn_ops,
                limit: max_txn_ops.saturating_sub(1),
            },
            Retry::Never,
        ),
        Code::InvalidArgument if message.contains("request is too large") => failure(
            invalid(format!(
                "{text}: the transaction exceeds etcd's request size limit \
                 (--max-request-bytes, 1.5 MiB by default); split the batch"
            )),
            Retry::Never,
        ),
        Code::PermissionDenied | Code::Unauthenticated => failure(
            invalid(format!(
                "etcd refused the credentials or permission: {text}"
            )),
            Retry::Never,
        ),
        Code::DataLoss => failure(StoreError::BadData { message: text }, Retry::Never),
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::Ok => failure(invalid(text), Retry::Never),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_the_right_error_and_retry_class() {
        let cases: &[(Code, &str, &str, Retry)] = &[
            (
                Code::Unavailable,
                "error trying to connect: tcp connect error: Connection refused (os error 111)",
                "Unavailable",
                Retry::Safe,
            ),
            (
                Code::Unavailable,
                "etcdserver: leader changed",
                "Unavailable",
                Retry::IfIdempotent,
            ),
            (
                Code::Unavailable,
                "etcdserver: request timed out",
                "Unavailable",
                Retry::IfIdempotent,
            ),
            (
                Code::Unknown,
                "transport error",
                "Unavailable",
                Retry::IfIdempotent,
            ),
            (
                Code::Cancelled,
                "operation was canceled",
                "Unavailable",
                Retry::IfIdempotent,
            ),
            (
                Code::ResourceExhausted,
                "etcdserver: too many requests",
                "Unavailable",
                Retry::Safe,
            ),
            (
                Code::ResourceExhausted,
                "etcdserver: mvcc: database space exceeded",
                "Unavailable",
                Retry::Never,
            ),
            (
                Code::InvalidArgument,
                "etcdserver: too many operations in txn request",
                "TooLarge",
                Retry::Never,
            ),
            (
                Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request",
                "InvalidRequest",
                Retry::Never,
            ),
            (
                Code::PermissionDenied,
                "etcdserver: permission denied",
                "InvalidRequest",
                Retry::Never,
            ),
            (
                Code::InvalidArgument,
                "etcdserver: authentication failed, invalid user ID or password",
                "InvalidRequest",
                Retry::Never,
            ),
            (
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
                "InvalidRequest",
                Retry::Never,
            ),
            (Code::DataLoss, "corrupt", "BadData", Retry::Never),
        ];
        for (code, message, variant, retry) in cases {
            let got = classify_status(*code, message, 128);
            let name = match &got.error {
                StoreError::Unavailable { .. } => "Unavailable",
                StoreError::TooLarge { .. } => "TooLarge",
                StoreError::InvalidRequest { .. } => "InvalidRequest",
                StoreError::BadData { .. } => "BadData",
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!((name, got.retry), (*variant, *retry), "{code:?} {message}");
            assert!(
                got.error.is_transient() == (name == "Unavailable"),
                "only unavailability is transient: {got:?}"
            );
        }
    }

    #[test]
    fn client_side_errors_are_not_retried() {
        let got = classify(EtcdError::InvalidArgs("empty endpoints".into()), 128);
        assert_eq!(got.retry, Retry::Never);
        assert!(matches!(got.error, StoreError::InvalidRequest { .. }));
        let got = classify(EtcdError::WatchError("closed".into()), 128);
        assert_eq!(got.retry, Retry::IfIdempotent);
        assert!(got.error.is_unavailable());
    }
}
