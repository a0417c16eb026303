//! Mapping etcd-client errors onto [`StoreError`], and deciding which of them
//! may be retried.
//!
//! The decision rests on what kind of error it is, never on the wording of a
//! client library's message:
//!
//! - an error raised while connecting ([`tonic::ConnectError`] in the source
//!   chain, which tonic also keeps under the UNAVAILABLE status it makes of
//!   it) means the request never left the client;
//! - otherwise the [`etcd_client::Error`] variant and the gRPC [`Code`] say
//!   how far the request got;
//! - etcd itself answers a few different refusals under one code
//!   (RESOURCE_EXHAUSTED: too many requests, or no space left;
//!   INVALID_ARGUMENT: too many operations, or a request too large) and names
//!   them only by their message. Those are told apart by etcd's exact error
//!   texts (its `rpctypes`), as etcd's own client does, in [`EtcdRefusal`].
//!
//! Every error keeps the client library's error as its
//! [`source`](std::error::Error::source).

use std::error::Error;

use etcd_client::Error as EtcdError;
use state_store::{Cause, StoreError};
use tonic::{Code, Status};

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

fn unavailable(message: String, cause: Cause) -> StoreError {
    StoreError::Unavailable {
        message,
        source: Some(cause),
    }
}

fn invalid(message: String, cause: Cause) -> StoreError {
    StoreError::InvalidRequest {
        message,
        source: Some(cause),
    }
}

/// `true` when `error` or one of its sources is tonic's marker of a failure
/// to connect (TCP, DNS, TLS handshake, connect timeout): nothing was sent.
fn while_connecting(error: &(dyn Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error.is::<tonic::ConnectError>() {
            return true;
        }
        next = error.source();
    }
    false
}

/// Refusals etcd answers under a code it also uses for other errors, known
/// by etcd's message for them (`rpctypes`: `ErrGRPCTooManyRequests`,
/// `ErrGRPCNoSpace`, `ErrGRPCTooManyOps`, `ErrGRPCRequestTooLarge`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EtcdRefusal {
    /// RESOURCE_EXHAUSTED: the apply queue is full; refused before proposing.
    TooManyRequests,
    /// RESOURCE_EXHAUSTED: the NOSPACE alarm is raised; writes fail until an
    /// operator defragments.
    NoSpace,
    /// INVALID_ARGUMENT: more operations than `--max-txn-ops`.
    TooManyOps,
    /// INVALID_ARGUMENT: more bytes than `--max-request-bytes`.
    RequestTooLarge,
}

impl EtcdRefusal {
    const TEXTS: [(&'static str, EtcdRefusal); 4] = [
        (
            "etcdserver: too many requests",
            EtcdRefusal::TooManyRequests,
        ),
        (
            "etcdserver: mvcc: database space exceeded",
            EtcdRefusal::NoSpace,
        ),
        (
            "etcdserver: too many operations in txn request",
            EtcdRefusal::TooManyOps,
        ),
        (
            "etcdserver: request is too large",
            EtcdRefusal::RequestTooLarge,
        ),
    ];

    fn of(status: &Status) -> Option<EtcdRefusal> {
        Self::TEXTS
            .iter()
            .find(|(text, _)| status.message() == *text)
            .map(|(_, refusal)| *refusal)
    }
}

/// Classifies an etcd-client error. `max_txn_ops` is the configured limit,
/// reported when etcd's own limit turns out to be lower.
pub(crate) fn classify(error: EtcdError, max_txn_ops: usize) -> Failure {
    match error {
        EtcdError::GRpcStatus(status) => classify_status(status, max_txn_ops),
        EtcdError::TransportError(e) => {
            let message = format!("transport error: {}", error_chain(&e));
            let retry = if while_connecting(&e) {
                Retry::Safe
            } else {
                Retry::IfIdempotent
            };
            failure(unavailable(message, Cause::new(e)), retry)
        }
        EtcdError::IoError(e) => failure(
            unavailable(format!("i/o error: {e}"), Cause::new(e)),
            Retry::IfIdempotent,
        ),
        EtcdError::WatchError(ref message) => failure(
            unavailable(format!("watch error: {message}"), Cause::new(error)),
            Retry::IfIdempotent,
        ),
        EtcdError::Internal(ref message) => failure(
            unavailable(format!("etcd client: {message}"), Cause::new(error)),
            Retry::IfIdempotent,
        ),
        EtcdError::Utf8Error(e) => failure(
            StoreError::BadData {
                message: format!("etcd returned non-UTF-8 text: {e}"),
                source: Some(Cause::new(e)),
            },
            Retry::Never,
        ),
        other => failure(
            invalid(format!("etcd client: {other}"), Cause::new(other)),
            Retry::Never,
        ),
    }
}

/// The error and its sources, joined: tonic's outer message alone ("transport
/// error") hides whether the connection was refused.
fn error_chain(error: &dyn Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    message
}

/// Classifies a gRPC status by its code, whether it stands for a failure to
/// connect, and, where etcd answers several refusals under one code, which
/// one it is.
fn classify_status(status: Status, max_txn_ops: usize) -> Failure {
    let code = status.code();
    let text = format!("{} ({code:?})", status.message());
    let refusal = EtcdRefusal::of(&status);
    let not_sent = while_connecting(&status);
    let cause = Cause::new(status);
    match code {
        Code::Unavailable if not_sent => failure(unavailable(text, cause), Retry::Safe),
        // "leader changed", "no leader", "request timed out", "server
        // stopped", a connection broken after sending: the request may have
        // been proposed.
        Code::Unavailable
        | Code::Unknown
        | Code::Internal
        | Code::Aborted
        | Code::Cancelled
        | Code::DeadlineExceeded => failure(unavailable(text, cause), Retry::IfIdempotent),
        Code::ResourceExhausted => match refusal {
            // Refused before proposing; the queue drains.
            Some(EtcdRefusal::TooManyRequests) => failure(unavailable(text, cause), Retry::Safe),
            // Refused before proposing, but nothing changes until an
            // operator acts.
            Some(EtcdRefusal::NoSpace) => failure(unavailable(text, cause), Retry::Never),
            _ => failure(
                invalid(
                    format!("{text}; the request or its answer exceeds a size limit"),
                    cause,
                ),
                Retry::Never,
            ),
        },
        Code::InvalidArgument if refusal == Some(EtcdRefusal::TooManyOps) => failure(
            StoreError::TooLarge {
                ops: max_txn_ops,
                limit: max_txn_ops.saturating_sub(1),
            },
            Retry::Never,
        ),
        Code::InvalidArgument if refusal == Some(EtcdRefusal::RequestTooLarge) => failure(
            invalid(
                format!(
                    "{text}: the transaction exceeds etcd's request size limit \
                     (--max-request-bytes, 1.5 MiB by default); split the batch"
                ),
                cause,
            ),
            Retry::Never,
        ),
        Code::PermissionDenied | Code::Unauthenticated => failure(
            invalid(
                format!("etcd refused the credentials or permission: {text}"),
                cause,
            ),
            Retry::Never,
        ),
        Code::DataLoss => failure(
            StoreError::BadData {
                message: text,
                source: Some(cause),
            },
            Retry::Never,
        ),
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::Ok => failure(invalid(text, cause), Retry::Never),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: Code, message: &str) -> EtcdError {
        EtcdError::GRpcStatus(Status::new(code, message))
    }

    /// A failure to connect as tonic reports it: an UNAVAILABLE status made
    /// from a `ConnectError` it keeps as its source.
    fn connect_failure(io: std::io::Error) -> EtcdError {
        EtcdError::GRpcStatus(Status::from_error(Box::new(tonic::ConnectError(Box::new(
            io,
        )))))
    }

    fn variant(error: &StoreError) -> &'static str {
        match error {
            StoreError::Unavailable { .. } => "Unavailable",
            StoreError::TooLarge { .. } => "TooLarge",
            StoreError::InvalidRequest { .. } => "InvalidRequest",
            StoreError::BadData { .. } => "BadData",
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn statuses_map_to_the_right_error_and_retry_class() {
        use std::io::{Error as IoError, ErrorKind};
        let cases: Vec<(&str, EtcdError, &str, Retry)> = vec![
            (
                "connection refused",
                connect_failure(IoError::from(ErrorKind::ConnectionRefused)),
                "Unavailable",
                Retry::Safe,
            ),
            (
                "name not resolved",
                connect_failure(IoError::other("failed to lookup address information")),
                "Unavailable",
                Retry::Safe,
            ),
            (
                "connect timed out",
                connect_failure(IoError::from(ErrorKind::TimedOut)),
                "Unavailable",
                Retry::Safe,
            ),
            (
                // The words of a failed connect, without tonic's marker: the
                // text is not what decides.
                "connect words, no marker",
                status(Code::Unavailable, "tcp connect error: Connection refused"),
                "Unavailable",
                Retry::IfIdempotent,
            ),
            (
                "leader changed",
                status(Code::Unavailable, "etcdserver: leader changed"),
                "Unavailable",
                Retry::IfIdempotent,
            ),
            (
                "request timed out",
                status(Code::Unavailable, "etcdserver: request timed out"),
                "Unavailable",
                Retry::IfIdempotent,
            ),
            (
                "broken connection",
                status(Code::Unknown, "transport error"),
                "Unavailable",
                Retry::IfIdempotent,
            ),
            (
                "cancelled",
                status(Code::Cancelled, "operation was canceled"),
                "Unavailable",
                Retry::IfIdempotent,
            ),
            (
                "deadline exceeded",
                status(Code::DeadlineExceeded, "context deadline exceeded"),
                "Unavailable",
                Retry::IfIdempotent,
            ),
            (
                "too many requests",
                status(Code::ResourceExhausted, "etcdserver: too many requests"),
                "Unavailable",
                Retry::Safe,
            ),
            (
                "no space",
                status(
                    Code::ResourceExhausted,
                    "etcdserver: mvcc: database space exceeded",
                ),
                "Unavailable",
                Retry::Never,
            ),
            (
                "message over the gRPC limit",
                status(
                    Code::ResourceExhausted,
                    "grpc: received message larger than max (5000000 vs. 4194304)",
                ),
                "InvalidRequest",
                Retry::Never,
            ),
            (
                "too many operations",
                status(
                    Code::InvalidArgument,
                    "etcdserver: too many operations in txn request",
                ),
                "TooLarge",
                Retry::Never,
            ),
            (
                "request too large",
                status(Code::InvalidArgument, "etcdserver: request is too large"),
                "InvalidRequest",
                Retry::Never,
            ),
            (
                "duplicate key",
                status(
                    Code::InvalidArgument,
                    "etcdserver: duplicate key given in txn request",
                ),
                "InvalidRequest",
                Retry::Never,
            ),
            (
                "permission denied",
                status(Code::PermissionDenied, "etcdserver: permission denied"),
                "InvalidRequest",
                Retry::Never,
            ),
            (
                "authentication failed",
                status(
                    Code::InvalidArgument,
                    "etcdserver: authentication failed, invalid user ID or password",
                ),
                "InvalidRequest",
                Retry::Never,
            ),
            (
                "compacted",
                status(
                    Code::OutOfRange,
                    "etcdserver: mvcc: required revision has been compacted",
                ),
                "InvalidRequest",
                Retry::Never,
            ),
            (
                "data loss",
                status(Code::DataLoss, "corrupt"),
                "BadData",
                Retry::Never,
            ),
        ];
        for (case, error, expected_variant, expected_retry) in cases {
            let got = classify(error, 128);
            let name = variant(&got.error);
            assert_eq!(
                (name, got.retry),
                (expected_variant, expected_retry),
                "{case}"
            );
            assert!(
                got.error.is_transient() == (name == "Unavailable"),
                "only unavailability is transient: {got:?}"
            );
            if name != "TooLarge" {
                let cause = got.error.source().expect("the status is the source");
                assert!(
                    cause.downcast_ref::<Cause>().unwrap().get().is::<Status>(),
                    "{case}: {cause:?}"
                );
            }
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
        let got = classify(
            EtcdError::IoError(std::io::ErrorKind::BrokenPipe.into()),
            128,
        );
        assert_eq!(got.retry, Retry::IfIdempotent);
        assert!(got.error.is_unavailable());
        let bytes = vec![0xff];
        let utf8 = std::str::from_utf8(&bytes).unwrap_err();
        let got = classify(EtcdError::Utf8Error(utf8), 128);
        assert_eq!(got.retry, Retry::Never);
        assert!(matches!(got.error, StoreError::BadData { .. }));
        assert!(got.error.source().is_some());
    }

    /// tonic still marks a refused connection the way [`while_connecting`]
    /// looks for: a real client against a port nobody listens on.
    #[tokio::test]
    async fn a_refused_connection_is_known_as_never_sent() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let mut client = etcd_client::Client::connect([format!("http://{address}")], None)
            .await
            .unwrap();
        let error = client.get("k", None).await.unwrap_err();
        let got = classify(error, 128);
        assert_eq!(got.retry, Retry::Safe, "{got:?}");
        assert!(got.error.is_unavailable());
    }
}
