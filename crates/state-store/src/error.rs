use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::Revision;

/// Why a store operation failed.
///
/// The variants keep apart what a caller must treat differently: a store that
/// cannot be reached (answer RESOURCE_UNAVAILABLE, maybe retry later), a guard
/// that did not hold (re-read and re-plan), and a request or stored value that
/// is wrong (never retry).
///
/// Where the failure comes from an error of the client library (a gRPC status,
/// a transport error), that error is the [`source`](Error::source) of the
/// variant, so callers and logs can follow the chain; the message already
/// says what it said, for callers that print only the top error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or did not answer.
    #[error("store unavailable: {message}")]
    Unavailable {
        /// What went wrong, for people.
        message: String,
        /// The client library's error, when there is one.
        #[source]
        source: Option<Cause>,
    },
    /// The operation did not finish within its deadline.
    #[error("store operation '{operation}' timed out after {after:?}")]
    Timeout {
        /// The operation (get, apply, ...).
        operation: &'static str,
        /// The deadline that passed.
        after: Duration,
    },
    /// A guard of a batch did not hold; nothing was written.
    #[error("guard failed on key '{key}': expected revision {expected}, found {actual}")]
    GuardFailed {
        /// The guarded key.
        key: String,
        /// The `mod_revision` the guard expected (0: absent).
        expected: Revision,
        /// The key's actual `mod_revision` (0: absent).
        actual: Revision,
    },
    /// A watch asked for a revision that has been compacted away.
    #[error("revision {requested} has been compacted (oldest available: {compact_revision})")]
    Compacted {
        /// The revision the watch asked for.
        requested: Revision,
        /// The store's compaction revision.
        compact_revision: Revision,
    },
    /// The batch exceeds what one transaction may hold.
    #[error("batch too large: {ops} operations, the store allows {limit}")]
    TooLarge {
        /// Operations (or guards) in the batch.
        ops: usize,
        /// The store's limit.
        limit: usize,
    },
    /// The request itself is wrong (empty key, ...), or the store refused it
    /// for good (permissions, size limits).
    #[error("invalid store request: {message}")]
    InvalidRequest {
        /// What is wrong.
        message: String,
        /// The client library's error, when the store refused the request.
        #[source]
        source: Option<Cause>,
    },
    /// The store answered something that cannot be understood.
    #[error("bad data from store: {message}")]
    BadData {
        /// What is wrong.
        message: String,
        /// The decoding error, when there is one.
        #[source]
        source: Option<Cause>,
    },
}

impl StoreError {
    /// [`StoreError::Unavailable`] without an underlying error.
    pub fn unavailable(message: impl Into<String>) -> Self {
        StoreError::Unavailable {
            message: message.into(),
            source: None,
        }
    }

    /// [`StoreError::InvalidRequest`] without an underlying error.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        StoreError::InvalidRequest {
            message: message.into(),
            source: None,
        }
    }

    /// [`StoreError::BadData`] without an underlying error.
    pub fn bad_data(message: impl Into<String>) -> Self {
        StoreError::BadData {
            message: message.into(),
            source: None,
        }
    }

    /// `true` for errors worth retrying with backoff (the store may come back);
    /// never for guard failures or bad requests.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable { .. } | StoreError::Timeout { .. }
        )
    }

    /// `true` when the store could not be reached or did not answer in time.
    pub fn is_unavailable(&self) -> bool {
        self.is_transient()
    }
}

/// The underlying error of a [`StoreError`]: what the client library reported.
///
/// Shared, so that a `StoreError` stays cheap to clone (the engine hands one
/// error to every input of a failed commit). Two causes are equal when they
/// say the same, so store errors compare by what they report, as they did
/// when they carried text only.
#[derive(Clone)]
pub struct Cause(Arc<dyn Error + Send + Sync + 'static>);

impl Cause {
    /// Wraps a client library's error.
    pub fn new(error: impl Error + Send + Sync + 'static) -> Self {
        Cause(Arc::new(error))
    }

    /// The wrapped error, for downcasting to the client library's type.
    pub fn get(&self) -> &(dyn Error + Send + Sync + 'static) {
        self.0.as_ref()
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Error for Cause {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.to_string() == other.0.to_string()
    }
}

impl Eq for Cause {}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("connection refused")]
    struct Refused;

    #[derive(Debug, thiserror::Error)]
    #[error("tcp connect error")]
    struct Connect(#[source] Refused);

    #[test]
    fn the_cause_and_its_own_sources_form_the_chain() {
        let error = StoreError::Unavailable {
            message: "tcp connect error".into(),
            source: Some(Cause::new(Connect(Refused))),
        };
        let mut chain = Vec::new();
        let mut next: Option<&(dyn Error + 'static)> = Some(&error);
        while let Some(e) = next {
            chain.push(e.to_string());
            next = e.source();
        }
        assert_eq!(
            chain,
            [
                "store unavailable: tcp connect error",
                "tcp connect error",
                "connection refused"
            ]
        );
        let cause = error.source().unwrap();
        assert!(cause.downcast_ref::<Cause>().unwrap().get().is::<Connect>());
    }

    #[test]
    fn errors_without_an_underlying_error_have_no_source() {
        for error in [
            StoreError::unavailable("down"),
            StoreError::invalid_request("empty key"),
            StoreError::bad_data("not UTF-8"),
            StoreError::Timeout {
                operation: "get",
                after: Duration::from_secs(1),
            },
        ] {
            assert!(error.source().is_none(), "{error:?}");
        }
    }

    #[test]
    fn errors_compare_by_what_they_say() {
        let with = |cause: &str| StoreError::BadData {
            message: "m".into(),
            source: Some(Cause::new(std::io::Error::other(cause.to_owned()))),
        };
        assert_eq!(with("a"), with("a"));
        assert_ne!(with("a"), with("b"));
        assert_ne!(with("a"), StoreError::bad_data("m"));
        assert_eq!(with("a").clone(), with("a"));
    }
}
