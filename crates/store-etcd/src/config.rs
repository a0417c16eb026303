use std::path::PathBuf;
use std::time::Duration;

use state_store::StoreError;

/// How to reach etcd and how patient to be with it.
///
/// The defaults suit a local etcd with default settings; every duration is a
/// bound, so no call of [`EtcdStore`](crate::EtcdStore) waits longer than
/// [`request_timeout`](Self::request_timeout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs of the etcd members, e.g. `http://127.0.0.1:2379`. Several
    /// endpoints (a cluster) are load-balanced by one client; a member that
    /// is down is skipped.
    pub endpoints: Vec<String>,
    /// Deadline for opening a TCP (and TLS) connection to one member.
    pub connect_timeout: Duration,
    /// Deadline of one store call, retries included: a call returns within it,
    /// with [`StoreError::Timeout`] when etcd did not answer in time.
    pub request_timeout: Duration,
    /// Deadline of one attempt of a call that may be repeated (reads, guarded
    /// writes); capped by what is left of
    /// [`request_timeout`](Self::request_timeout). An attempt stuck behind a
    /// dead leader (etcd holds such a proposal for up to 7 s) is abandoned and
    /// sent again, reaching the new leader. An attempt that may not be
    /// repeated (unguarded writes) has the whole `request_timeout`.
    pub attempt_timeout: Duration,
    /// Retries of transient failures within [`request_timeout`](Self::request_timeout).
    pub retry: RetryPolicy,
    /// The longest pause between two attempts to re-establish a broken watch.
    /// A watch retries for as long as its stream is alive; the pause starts at
    /// [`RetryPolicy::base_backoff`] and doubles up to this cap.
    pub watch_max_backoff: Duration,
    /// HTTP/2 keep-alive ping interval. A connection whose member stopped
    /// answering (host frozen, network cut) is declared dead after
    /// `keep_alive_interval + keep_alive_timeout`, which breaks its watches
    /// so they reconnect. etcd refuses pings more often than every 5 s
    /// (`--grpc-keepalive-min-time`).
    pub keep_alive_interval: Duration,
    /// How long a keep-alive ping may go unanswered.
    pub keep_alive_timeout: Duration,
    /// TLS to etcd; the endpoints must then be `https://` URLs (or bare
    /// `host:port`).
    pub tls: Option<TlsConfig>,
    /// User name and password for etcd's authentication.
    pub credentials: Option<Credentials>,
    /// The prefix of the StateManager's bookkeeping keys (history, outbox,
    /// nodes), so several deployments can share one etcd. The store itself
    /// does not restrict keys; the engine builds its keys from this.
    pub bookkeeping_prefix: String,
    /// The most guards, and separately the most ops, one batch may hold
    /// (etcd's `--max-txn-ops`, 128 by default). Larger batches fail with
    /// [`StoreError::TooLarge`] before anything is sent.
    pub max_txn_ops: usize,
    /// Keys per page of a prefix read that does not ask for a limit.
    pub page_size: usize,
    /// The largest response the client accepts, in bytes. gRPC's default of
    /// 4 MiB is too small for a page of large definitions.
    pub max_response_bytes: usize,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        Self {
            endpoints: vec!["http://127.0.0.1:2379".to_owned()],
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(2),
            retry: RetryPolicy::default(),
            watch_max_backoff: Duration::from_secs(2),
            keep_alive_interval: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(5),
            tls: None,
            credentials: None,
            bookkeeping_prefix: "/statemanager/".to_owned(),
            max_txn_ops: 128,
            page_size: 1000,
            max_response_bytes: 64 * 1024 * 1024,
        }
    }
}

impl EtcdConfig {
    /// The default configuration for the given endpoints.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// Checks the values that would make the store misbehave rather than fail.
    pub fn validate(&self) -> Result<(), StoreError> {
        let invalid = |message: &str| {
            Err(StoreError::invalid_request(format!(
                "etcd configuration: {message}"
            )))
        };
        if self.endpoints.is_empty() || self.endpoints.iter().any(|e| e.trim().is_empty()) {
            return invalid("at least one non-empty endpoint is needed");
        }
        if self.request_timeout.is_zero()
            || self.connect_timeout.is_zero()
            || self.attempt_timeout.is_zero()
        {
            return invalid(
                "request_timeout, attempt_timeout and connect_timeout must be positive",
            );
        }
        if self.retry.max_attempts == 0 {
            return invalid("retry.max_attempts must be at least 1");
        }
        if self.retry.base_backoff.is_zero() || self.retry.max_backoff < self.retry.base_backoff {
            return invalid("retry backoff must be positive and max_backoff >= base_backoff");
        }
        if self.watch_max_backoff < self.retry.base_backoff {
            return invalid("watch_max_backoff must be at least retry.base_backoff");
        }
        if self.max_txn_ops == 0 || self.page_size == 0 {
            return invalid("max_txn_ops and page_size must be at least 1");
        }
        if self.bookkeeping_prefix.is_empty() {
            return invalid("bookkeeping_prefix must not be empty");
        }
        if let Some(tls) = &self.tls
            && tls.client_cert.is_some() != tls.client_key.is_some()
        {
            return invalid("tls.client_cert and tls.client_key go together");
        }
        Ok(())
    }
}

/// Bounded retries with exponential backoff and jitter, for transient
/// failures only (etcd unreachable, leader change, transport error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per call, the first included (1: never retry).
    pub max_attempts: u32,
    /// The pause after the first failure; it doubles after each further one.
    pub base_backoff: Duration,
    /// The longest pause between two attempts.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 16 attempts: with pauses of 25 ms doubling to 1 s (halved at random
    /// by the jitter), the call's deadline (`request_timeout`, 5 s) is what
    /// ends the retries, so a call rides through an etcd leader election —
    /// about a second, longer on a loaded machine. The attempt count is the
    /// safety bound for a deadline set very long.
    fn default() -> Self {
        Self {
            max_attempts: 16,
            base_backoff: Duration::from_millis(25),
            max_backoff: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// The pause before attempt `failures + 1`, after `failures` failures
    /// (1 or more): `base * 2^(failures-1)` capped at `cap`, of which a random
    /// half is kept ("equal jitter"), so many clients that failed together do
    /// not retry together.
    pub fn backoff(&self, failures: u32, cap: Duration) -> Duration {
        let exponent = failures.saturating_sub(1).min(20);
        let full = self
            .base_backoff
            .saturating_mul(1u32 << exponent)
            .min(cap)
            .max(self.base_backoff.min(cap));
        let half = full / 2;
        let jitter_nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(rand::random_range(0..=jitter_nanos))
    }
}

/// TLS material for the connection to etcd, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsConfig {
    /// The CA that signed etcd's server certificate; `None` trusts no
    /// additional CA.
    pub ca_cert: Option<PathBuf>,
    /// The client certificate for mutual TLS (with [`client_key`](Self::client_key)).
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key.
    pub client_key: Option<PathBuf>,
    /// The name to verify etcd's certificate against, when it differs from the
    /// endpoint's host.
    pub domain_name: Option<String>,
}

/// etcd user and password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The etcd user.
    pub user: String,
    /// Its password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_stays_under_the_cap() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        for _ in 0..100 {
            let first = policy.backoff(1, policy.max_backoff);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = policy.backoff(3, policy.max_backoff);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            let late = policy.backoff(u32::MAX, policy.max_backoff);
            assert!(late >= Duration::from_millis(500) && late <= Duration::from_secs(1));
        }
    }

    #[test]
    fn validation_rejects_unusable_values() {
        assert!(EtcdConfig::default().validate().is_ok());
        let cases: Vec<fn(&mut EtcdConfig)> = vec![
            |c| c.endpoints.clear(),
            |c| c.endpoints = vec![" ".into()],
            |c| c.request_timeout = Duration::ZERO,
            |c| c.retry.max_attempts = 0,
            |c| c.retry.max_backoff = Duration::from_millis(1),
            |c| c.max_txn_ops = 0,
            |c| c.page_size = 0,
            |c| c.bookkeeping_prefix.clear(),
            |c| {
                c.tls = Some(TlsConfig {
                    client_cert: Some("cert.pem".into()),
                    ..TlsConfig::default()
                })
            },
        ];
        for (i, change) in cases.into_iter().enumerate() {
            let mut config = EtcdConfig::default();
            change(&mut config);
            assert!(
                matches!(config.validate(), Err(StoreError::InvalidRequest { .. })),
                "case {i} must be rejected"
            );
        }
    }

    #[test]
    fn credentials_do_not_print_the_password() {
        let credentials = Credentials {
            user: "root".into(),
            password: "secret".into(),
        };
        assert!(!format!("{credentials:?}").contains("secret"));
    }
}
