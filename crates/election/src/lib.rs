//! Leadership of an HA group of StateManagers, held in etcd.
//!
//! The group's members campaign for one key, `{prefix}leader/{group}`: the
//! first to create it, bound to its own lease, leads, and the key's
//! revision at creation names its term. The others watch the key and
//! follow the leader it names, and campaign again when it is deleted (the
//! leader resigned, or its lease expired). See [`EtcdElection`].
//!
//! A leader writes only through a [`FencedStore`]: every batch carries a
//! guard that the election key still has the revision of the leader's
//! term. A leader that was paused past its lease and wakes up has lost the
//! key (deleted, or created again by the next leader), so its writes fail
//! in etcd itself, whatever its own clock believes.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod etcd;
mod fenced;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use etcd::EtcdElection;
pub use fenced::FencedStore;

/// Where this instance stands in its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// No leader is known: campaigning, or etcd cannot be reached.
    Candidate,
    /// Another instance leads.
    Follower(Leader),
    /// This instance leads, for the term.
    Leader(Term),
}

impl Role {
    /// `"leader"`, `"follower"` or `"candidate"`.
    pub fn name(&self) -> &'static str {
        match self {
            Role::Candidate => "candidate",
            Role::Follower(_) => "follower",
            Role::Leader(_) => "leader",
        }
    }

    /// `true` for [`Role::Leader`].
    pub fn is_leader(&self) -> bool {
        matches!(self, Role::Leader(_))
    }
}

/// A member of the group as the election key names it: the value a leader
/// writes into the key (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leader {
    /// The instance's id, unique per process.
    pub id: String,
    /// Where it serves gRPC, for followers to send writes to.
    pub url: String,
}

/// A term of leadership: what a [`FencedStore`] guards its writes with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// The election key.
    pub key: String,
    /// The key's revision at creation; changes with every new term.
    pub revision: i64,
    /// The lease the key is bound to.
    pub lease: i64,
    /// This instance, as the key names it.
    pub leader: Leader,
}

/// How an instance takes part in the election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionConfig {
    /// The election key (`{bookkeeping prefix}leader/{group}`).
    pub key: String,
    /// This instance: its id and advertised gRPC address.
    pub me: Leader,
    /// The lease's time to live (default 2 s; etcd may grant more). A
    /// leader that cannot renew it within this time steps down, and the
    /// others take over about this long after a leader dies.
    pub ttl: Duration,
    /// The longest any one etcd call may take.
    pub request_timeout: Duration,
}

impl ElectionConfig {
    /// The election key of `group` under the bookkeeping `prefix`.
    pub fn key_for(prefix: &str, group: &str) -> String {
        format!("{prefix}leader/{group}")
    }
}

/// The default lease TTL.
pub const DEFAULT_TTL: Duration = Duration::from_secs(2);

/// A running election, whatever holds it.
#[async_trait::async_trait]
pub trait LeaderElection: Send + Sync {
    /// This instance's role, updated as it changes.
    fn roles(&self) -> watch::Receiver<Role>;

    /// Tells the election that a write was refused for want of leadership:
    /// a leader steps down at once instead of at its next renewal.
    fn fenced(&self);

    /// Leaves the group: a leader gives up its key at once (its lease is
    /// revoked), so that another takes over without waiting for the TTL.
    async fn resign(&self);
}
