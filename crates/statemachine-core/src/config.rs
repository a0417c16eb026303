//! The knobs of the rules, with the defaults of STATE-MACHINES.md.

use std::sync::Arc;
use std::time::Duration;

use crate::access::Policy;
use crate::state::PackageState;
use crate::topology::ModelMapping;
use crate::transition::ScenarioPolicy;

/// How the rules are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreConfig {
    /// Scenario validation (re-arming, strict current state, source checks).
    pub scenario_policy: ScenarioPolicy,
    /// How long an information failure lasts before its model is Dead (default 10 s).
    pub info_failure_grace: Duration,
    /// Silence after which a node's models count as an information failure
    /// (default off: NodeAgent reports only on change).
    pub node_timeout: Option<Duration>,
    /// Package states whose entering asks the ActionController to reconcile
    /// (default Error only).
    pub reconcile_on: Vec<PackageState>,
    /// Where a container's model is looked up.
    pub model_mapping: ModelMapping,
    /// The source recorded for changes the StateManager derives itself.
    pub derived_source: String,
    /// Who may request which edge (mTLS): when set, every state change
    /// edge is decided by the policy for the caller's identity and
    /// `scenario_policy.enforce_sources` is not consulted; a caller
    /// without an identity is denied. `None` (default): no identities.
    pub access: Option<Arc<Policy>>,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            scenario_policy: ScenarioPolicy::default(),
            info_failure_grace: Duration::from_secs(10),
            node_timeout: None,
            reconcile_on: vec![PackageState::Error],
            model_mapping: ModelMapping::default(),
            derived_source: "StateManager".to_owned(),
            access: None,
        }
    }
}
