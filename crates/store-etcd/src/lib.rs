//! [`EtcdStore`]: the StateManager's [`StateStore`](state_store::StateStore)
//! on etcd v3.
//!
//! - one long-lived client shared by every call and watch (never a connection
//!   per operation);
//! - [`apply`](state_store::StateStore::apply) is one etcd transaction with
//!   `mod_revision` compares for the guards;
//! - prefix reads are paged;
//! - watches resume from the last delivered revision after a disconnect and
//!   report compaction instead of silently missing events;
//! - every call has a deadline, and transient failures (etcd unreachable,
//!   leader change) are retried with exponential backoff and jitter, never
//!   guard failures or bad requests;
//! - several endpoints (a cluster), TLS and user/password authentication.
//!
//! ```no_run
//! use state_store::{Batch, StateStore};
//! use store_etcd::{EtcdConfig, EtcdStore};
//!
//! # async fn example() -> Result<(), state_store::StoreError> {
//! let store = EtcdStore::connect(EtcdConfig::new(["http://127.0.0.1:2379"])).await?;
//! let current = store.get("/model/media-player/state").await?;
//! let expected = current.map_or(0, |kv| kv.mod_revision);
//! store
//!     .apply(
//!         Batch::new()
//!             .guard("/model/media-player/state", expected)
//!             .put("/model/media-player/state", "Running"),
//!     )
//!     .await?;
//! # Ok(())
//! # }
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod config;
mod convert;
mod error;
mod retry;
mod store;
mod watch;

pub use config::{Credentials, EtcdConfig, RetryPolicy, TlsConfig};
pub use store::EtcdStore;
