//! What planning is given: state change requests and node reports in the
//! shape the wire delivers them (the transport decodes, nothing is
//! validated yet), and the [`Input`] that hands one of them, or the
//! passing of time, or changed definitions, to [`crate::plan()`].

use std::collections::HashMap;

use crate::access::Identity;
use crate::derive::container_state;
use crate::name::ResourceKind;
use crate::state::ContainerState;
use crate::topology::Affected;

/// The wire's `ResourceType` of a state change request (the transport maps
/// the numbers; an undefined one is kept so the answer can name it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// `RESOURCE_TYPE_UNSPECIFIED`.
    Unspecified,
    /// A scenario.
    Scenario,
    /// A package (its state set directly, STATE-MACHINES §5).
    Package,
    /// A model (its state set directly, STATE-MACHINES §5).
    Model,
    /// A volume: not managed.
    Volume,
    /// A network: not managed.
    Network,
    /// A node: not managed.
    Node,
    /// A number the wire protocol does not define.
    Unknown(i32),
}

impl RequestKind {
    /// The managed resource kind, if this is one.
    pub fn managed(self) -> Option<ResourceKind> {
        match self {
            RequestKind::Scenario => Some(ResourceKind::Scenario),
            RequestKind::Package => Some(ResourceKind::Package),
            RequestKind::Model => Some(ResourceKind::Model),
            _ => None,
        }
    }
}

/// A requested state change (`SendStateChange`), as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChangeRequest {
    /// The resource type.
    pub kind: RequestKind,
    /// The resource name, unvalidated.
    pub name: String,
    /// The state the caller believes is current (may be empty).
    pub current_state: String,
    /// The requested state.
    pub target_state: String,
    /// The caller's id for this transition (echoed back).
    pub transition_id: String,
    /// The requesting component.
    pub source: String,
}

/// One container of a node's full report (`monitoringserver.ContainerInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportedContainer {
    /// The container id.
    pub id: String,
    /// podman's names; the first one is used, without its leading `/`.
    pub names: Vec<String>,
    /// podman's state map.
    pub state: HashMap<String, String>,
    /// The container's config map.
    pub config: HashMap<String, String>,
    /// The container's annotations.
    pub annotations: HashMap<String, String>,
    /// The state already derived from `state` by [`Self::derive_state`],
    /// which then drops the map; `None`: planning derives it from `state`.
    pub derived: Option<ContainerState>,
}

impl ReportedContainer {
    /// Derives the container's state now (STATE-MACHINES §1) and drops the
    /// podman map, which is most of a report's memory (eleven strings and a
    /// hash table per container). A transport calls this as soon as it has
    /// decoded a report, before the report waits in a queue.
    pub fn derive_state(&mut self) {
        if self.derived.is_none() {
            self.derived = Some(container_state(&self.state));
        }
        self.state = HashMap::new();
    }

    /// The container's state: derived earlier, or from `state` now.
    pub fn container_state(&self) -> ContainerState {
        self.derived.unwrap_or_else(|| container_state(&self.state))
    }
}

/// A node's full container list (`monitoringserver.ContainerList`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeReport {
    /// The reporting node.
    pub node: String,
    /// Every container on the node.
    pub containers: Vec<ReportedContainer>,
}

/// What planning is asked to do.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// Validate and apply a requested state change from a caller without
    /// an identity (no mTLS). With an access policy configured it is denied.
    StateChange(&'a StateChangeRequest),
    /// Validate and apply a requested state change from an authenticated
    /// caller; with an access policy configured, the policy decides the
    /// edge for this identity ([`crate::Policy::transition`]).
    StateChangeBy(&'a StateChangeRequest, &'a Identity),
    /// Apply a node's full container report.
    NodeReport(&'a NodeReport),
    /// Time passed: information failures whose grace ran out, silent nodes.
    Tick,
    /// Definitions changed (see [`crate::Snapshot::update_definition`]).
    Reevaluate(&'a Affected),
}
