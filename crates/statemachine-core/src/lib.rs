//! The rules of the PICCOLO StateManager, pure.
//!
//! Everything the StateManager decides is decided here, without async, I/O
//! or clocks (time is a parameter), so it can be unit- and property-tested
//! without a runtime:
//!
//! - [`name`]: resource kinds and validated names; [`keys`]: store keys;
//! - [`state`]: the state enums with canonical names and lenient parsing;
//! - [`mod@derive`]: container state from podman's map, model from containers,
//!   package from models;
//! - [`transition`]: the scenario table and the documented model/package edges;
//! - [`definition`] and [`topology`]: the ApiServer's definitions and the
//!   relations built from them;
//! - [`input`]: state change requests and node reports as received, and
//!   the [`Input`] of planning;
//! - [`snapshot`] and [`mod@plan`]: cascade planning — an input against a
//!   snapshot gives the key writes and effects to commit;
//! - [`recovery`]: the retry and escalation ladder for reconcile requests;
//! - [`alert`]: alert records and their lifecycle (raise, acknowledge,
//!   resolve, expire);
//! - [`healing`]: self-healing incidents: issue classification, the
//!   strategy ladder, the tracker's figures and the StateDiff planner;
//! - [`access`]: caller identities from client certificates and the
//!   per-edge authorization policy.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod access;
pub mod alert;
pub mod config;
mod counting_sort;
pub mod definition;
pub mod derive;
pub mod error;
mod fastmap;
pub mod healing;
pub mod input;
pub mod keys;
pub mod name;
pub mod plan;
pub mod record;
pub mod recovery;
pub mod snapshot;
pub mod state;
pub mod topology;
pub mod transition;

pub use access::{Decision, Identity, MethodClass, Policy};
pub use config::CoreConfig;
pub use derive::{
    ContainerSet, ContainerStateFold, ModelSet, container_state, model_state, package_state,
};
pub use error::{ErrorCode, Rejection};
pub use input::{Input, NodeReport, ReportedContainer, RequestKind, StateChangeRequest};
pub use name::{NameError, ResourceKind, ResourceName};
pub use plan::{Change, Effect, NodeChange, Plan, Reason, plan};
pub use snapshot::{Revision, Snapshot, Stamp, Tag};
pub use state::{
    AnyState, ContainerState, ModelState, PackageState, ParseStateError, ScenarioState,
};
pub use topology::{Affected, ModelSource, Topology};
