//! One store call: attempts under one deadline, retried with backoff while the
//! failure is transient and a retry is safe.

use std::future::Future;

use state_store::StoreError;
use tokio::time::Instant;

use crate::EtcdConfig;
use crate::error::{Failure, Retry, classify};

/// A successful call.
#[derive(Debug)]
pub(crate) struct Outcome<T> {
    /// The answer of the attempt that succeeded.
    pub value: T,
    /// `true` when an earlier attempt failed in a way that leaves open whether
    /// etcd applied it (only possible for idempotent calls).
    pub after_ambiguous: bool,
}

/// Runs `attempt` until it succeeds, fails for good, the retry budget
/// ([`RetryPolicy::max_attempts`](crate::RetryPolicy::max_attempts)) is spent,
/// or [`EtcdConfig::request_timeout`] has passed since the call began.
///
/// `idempotent` says whether sending the request twice is harmless (reads;
/// guarded writes, whose repetition fails its guard instead of writing twice).
/// A request that is not idempotent is only resent after a failure that proves
/// it had no effect (no connection could be made).
///
/// With several endpoints, a failure to connect is retried at once, up to
/// twice per endpoint, before it counts as a failed attempt: the client
/// balances requests over the members and keeps offering a member whose
/// connection was just refused, so the next try most likely goes to a live one.
pub(crate) async fn with_retries<T, F, Fut>(
    config: &EtcdConfig,
    operation: &'static str,
    idempotent: bool,
    mut attempt: F,
) -> Result<Outcome<T>, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = Instant::now() + config.request_timeout;
    let mut failures = 0u32;
    let mut after_ambiguous = false;
    let failover_budget = if config.endpoints.len() > 1 {
        2 * config.endpoints.len()
    } else {
        0
    };
    let mut failovers_left = failover_budget;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let attempt_timeout = if idempotent {
            remaining.min(config.attempt_timeout)
        } else {
            remaining
        };
        let failure = match tokio::time::timeout(attempt_timeout, attempt()).await {
            Ok(Ok(value)) => {
                return Ok(Outcome {
                    value,
                    after_ambiguous,
                });
            }
            Ok(Err(error)) => classify(error, config.max_txn_ops),
            Err(_elapsed) if attempt_timeout < remaining => Failure {
                error: StoreError::unavailable(format!(
                    "etcd did not answer within {attempt_timeout:?}"
                )),
                retry: Retry::IfIdempotent,
            },
            Err(_elapsed) => {
                return Err(StoreError::Timeout {
                    operation,
                    after: config.request_timeout,
                });
            }
        };
        if failure.retry == Retry::Safe && failovers_left > 0 {
            failovers_left -= 1;
            continue;
        }
        failovers_left = failover_budget;
        failures += 1;
        let may_retry = match failure.retry {
            Retry::Safe => true,
            Retry::IfIdempotent => idempotent,
            Retry::Never => false,
        };
        if !may_retry || failures >= config.retry.max_attempts {
            return Err(failure.error);
        }
        let pause = config.retry.backoff(failures, config.retry.max_backoff);
        if Instant::now() + pause >= deadline {
            return Err(failure.error);
        }
        after_ambiguous |= failure.retry == Retry::IfIdempotent;
        tracing::debug!(
            operation,
            attempt = failures,
            ?pause,
            "etcd {operation} failed ({}); retrying in {pause:?}",
            failure.error
        );
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::RetryPolicy;

    fn config() -> EtcdConfig {
        EtcdConfig {
            request_timeout: Duration::from_secs(2),
            retry: RetryPolicy {
                max_attempts: 4,
                base_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_millis(400),
            },
            ..EtcdConfig::default()
        }
    }

    fn status(code: tonic::Code, message: &str) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(tonic::Status::new(code, message))
    }

    /// A refused connection as tonic reports it (see `error::tests`).
    fn refused() -> etcd_client::Error {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        etcd_client::Error::GRpcStatus(tonic::Status::from_error(Box::new(tonic::ConnectError(
            Box::new(io),
        ))))
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_with_growing_pauses() {
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let outcome = with_retries(&config(), "get", true, || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(status(
                    tonic::Code::Unavailable,
                    "etcdserver: leader changed",
                ))
            } else {
                Ok(7)
            }
        })
        .await
        .unwrap();
        assert_eq!(outcome.value, 7);
        assert!(outcome.after_ambiguous);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Pauses: 50..100 ms, then 100..200 ms.
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(150) && waited <= Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_are_bounded() {
        let calls = AtomicU32::new(0);
        let error = with_retries(&config(), "get", true, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(refused())
        })
        .await
        .unwrap_err();
        assert!(error.is_unavailable());
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_failures_are_not_retried() {
        let calls = AtomicU32::new(0);
        let error = with_retries(&config(), "apply", true, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(status(
                tonic::Code::InvalidArgument,
                "etcdserver: duplicate key",
            ))
        })
        .await
        .unwrap_err();
        assert!(matches!(error, StoreError::InvalidRequest { .. }));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn non_idempotent_calls_retry_only_what_was_never_sent() {
        let calls = AtomicU32::new(0);
        let error = with_retries(&config(), "delete", false, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(status(
                tonic::Code::Unavailable,
                "etcdserver: request timed out",
            ))
        })
        .await
        .unwrap_err();
        assert!(error.is_unavailable());
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "the write may have happened"
        );

        let calls = AtomicU32::new(0);
        let outcome = with_retries(&config(), "delete", false, || async {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(refused())
            } else {
                Ok(())
            }
        })
        .await
        .unwrap();
        assert!(!outcome.after_ambiguous);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn refused_connections_fail_over_at_once_when_there_are_several_endpoints() {
        let mut config = config();
        config.endpoints = vec![
            "http://a:1".into(),
            "http://b:1".into(),
            "http://c:1".into(),
        ];
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let outcome = with_retries(&config, "delete", false, || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 5 {
                Err(refused())
            } else {
                Ok(())
            }
        })
        .await;
        assert!(outcome.is_ok());
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "no backoff within the failover budget"
        );

        let calls = AtomicU32::new(0);
        let error = with_retries(&config, "get", true, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(refused())
        })
        .await
        .unwrap_err();
        assert!(error.is_unavailable());
        assert_eq!(
            calls.load(Ordering::SeqCst),
            4 * 7,
            "bounded: (1 + 6) tries per attempt"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stuck_attempt_is_abandoned_and_sent_again() {
        let mut config = config();
        config.attempt_timeout = Duration::from_millis(500);
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let outcome = with_retries(&config, "apply", true, || async {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                std::future::pending::<Result<u8, etcd_client::Error>>().await
            } else {
                Ok(1)
            }
        })
        .await
        .unwrap();
        assert!(
            outcome.after_ambiguous,
            "the stuck attempt may have been applied"
        );
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(550) && took <= Duration::from_millis(600));

        // A write that may not be repeated keeps the whole deadline.
        let calls = AtomicU32::new(0);
        let error = with_retries(&config, "apply", false, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<Result<u8, etcd_client::Error>>().await
        })
        .await
        .unwrap_err();
        assert!(matches!(error, StoreError::Timeout { .. }));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_call_ends_with_a_timeout_at_the_deadline() {
        let mut config = config();
        config.attempt_timeout = config.request_timeout;
        let started = Instant::now();
        let error = with_retries(&config, "get", true, || async {
            std::future::pending::<Result<(), etcd_client::Error>>().await
        })
        .await
        .unwrap_err();
        assert_eq!(
            error,
            StoreError::Timeout {
                operation: "get",
                after: Duration::from_secs(2)
            }
        );
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn no_retry_starts_that_would_end_after_the_deadline() {
        let mut config = config();
        config.request_timeout = Duration::from_millis(120);
        config.retry.max_attempts = 100;
        let started = Instant::now();
        let error = with_retries(&config, "get", true, || async { Err::<(), _>(refused()) })
            .await
            .unwrap_err();
        assert!(error.is_unavailable());
        assert!(started.elapsed() < Duration::from_millis(120));
    }
}
