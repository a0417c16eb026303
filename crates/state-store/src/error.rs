use std::time::Duration;

use crate::Revision;

/// Why a store operation failed.
///
/// The variants keep apart what a caller must treat differently: a store that
/// cannot be reached (answer RESOURCE_UNAVAILABLE, maybe retry later), a guard
/// that did not hold (re-read and re-plan), and a request or stored value that
/// is wrong (never retry).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or did not answer.
    #[error("store unavailable: {message}")]
    Unavailable {
        /// What the client library said.
        message: String,
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
    /// The request itself is wrong (empty key, ...).
    #[error("invalid store request: {message}")]
    InvalidRequest {
        /// What is wrong.
        message: String,
    },
    /// The store answered something that cannot be understood.
    #[error("bad data from store: {message}")]
    BadData {
        /// What is wrong.
        message: String,
    },
}

impl StoreError {
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
