//! Who may do what: caller identities from client certificates, and the
//! per-edge authorization policy (SECURITY, QUALITY-BAR S1). Pure rules; the
//! transport reads the certificate and the daemon reads the file.
//!
//! # Identities
//!
//! With mutual TLS a caller is named by a URI SAN of its client certificate,
//! a SPIFFE ID in the policy's trust domain (default `piccolo`):
//!
//! - `spiffe://piccolo/component/{name}`: a component, e.g. `filtergateway`,
//!   `actioncontroller`, `policymanager`, `apiserver`, `operator` (any name
//!   that is a valid resource name; lowercased);
//! - `spiffe://piccolo/nodeagent/{node}`: the NodeAgent of `node`.
//!
//! The first URI that names one wins ([`Identity::from_san_uris`]). An
//! identity is shown, and named in policies, as `component/filtergateway` or
//! `nodeagent/n1`.
//!
//! # The policy file
//!
//! TOML; every key of a rule but `name` and `identities` is optional, and a
//! rule must allow something. Rules only allow: what no rule allows is
//! denied ("default deny"). An unknown key, kind, state or identity pattern
//! is an error naming the rule and the value.
//!
//! ```toml
//! trust-domain = "piccolo"                  # optional, the default
//!
//! [[rule]]
//! name = "filtergateway"                    # named in the decisions it gives
//! identities = ["component/filtergateway"]  # exact, "component/*", "nodeagent/*",
//!                                           # "nodeagent/{node}" or "*"
//! # "kind: From -> To": kind scenario, package or model; states in any
//! # spelling the state parser takes, or "*" for any state. The recorded
//! # state is `From`; the tables are checked as well.
//! transitions = ["scenario: Idle -> Waiting", "scenario: Waiting -> Satisfied"]
//!
//! [[rule]]
//! name = "actioncontroller"
//! identities = ["component/actioncontroller"]
//! transitions = ["scenario: waiting -> satisfied", "scenario: Allowed -> Completed",
//!                "model: * -> *", "package: * -> *"]
//!
//! [[rule]]
//! name = "nodeagents"
//! identities = ["nodeagent/*"]
//! reports = "own-node"     # SendChangedContainerList for its own node; "any": every node
//!
//! [[rule]]
//! name = "readers"
//! identities = ["*"]
//! # GetResourceState, ListResourcesByState, GetResourceStateHistory,
//! # SubscribeToStateChanges, GetRecoveryStatus, GetPendingAlerts (and the
//! # legacy SendAction, which is only logged)
//! read = true
//!
//! [[rule]]
//! name = "operators"
//! identities = ["component/operator"]
//! # TriggerRecovery, AbortRecovery, AcknowledgeAlert, ForceSynchronization,
//! # SendStateDiff
//! recovery = true
//! offload = true           # TriggerOffloading
//! ```
//!
//! # Decisions
//!
//! [`Policy::transition`] decides a `SendStateChange` edge from the recorded
//! state (the planner asks it, [`crate::plan()`]; with a policy it replaces
//! `enforce_sources`), [`Policy::report`] a node report, [`Policy::call`] the
//! other methods by [`MethodClass`]. A [`Decision`] is allowed by a rule, or
//! denied with a message naming the identity, the request and the rule:
//! `default deny: no rule allows component/filtergateway scenario Allowed ->
//! Completed`, `rule 'nodeagents': nodeagent/n1 may report only node n1, not
//! n2`.
//!
//! A request for the recorded state writes nothing and is not an edge: it
//! succeeds for any authenticated caller, as does the ApiServer's
//! registration of a scenario by asking for Idle.
//!
//! # The default policy
//!
//! With mTLS and no policy file, [`Policy::default_for_sources`] applies:
//!
//! - each scenario edge of STATE-MACHINES §4 for the components its row
//!   names (`filtergateway`: Idle→Waiting, Waiting→Satisfied, and with
//!   `allow_rearm` Completed→Waiting and Denied→Waiting; `actioncontroller`:
//!   Waiting→Satisfied, Allowed→Completed; `policymanager`:
//!   Satisfied→Allowed, Satisfied→Denied), one rule per component named
//!   after it;
//! - direct model and package sets (§5, any documented edge) for
//!   `component/actioncontroller` only (rule `actioncontroller-direct`):
//!   upstream, the ActionController is the component that runs the actions
//!   on packages and models and reports their outcome to the StateManager;
//!   no other component sets them, and models are re-derived from the next
//!   node report anyway;
//! - node reports by every NodeAgent for its own node (rule `nodeagents`);
//! - the recovery methods and offloading for `component/operator` (a
//!   person's tool, e.g. smctl) and `component/policymanager` (which decides
//!   what may happen to a scenario's package, and is upstream's caller of
//!   TriggerOffloading) (rules `operators`, `policymanager-recovery`);
//! - the read methods for every authenticated identity (rule `readers`).
//!
//! The ApiServer gets reads only: it writes definitions to the store, and
//! its registration request is a no-op (above).

mod defaults;
mod file;
mod identity;
mod policy;
#[cfg(test)]
mod tests;

pub use file::PolicyFile;
pub use identity::{DEFAULT_TRUST_DOMAIN, Identity, NODE_AGENT};
pub use policy::{
    Decision, IdentityPattern, MethodClass, Policy, Reports, Rule, TransitionPattern,
};

/// Why a certificate names no identity, or a policy is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// No URI SAN of the certificate names an identity in the trust domain.
    #[error("no URI SAN names a component or NodeAgent in trust domain '{trust_domain}': {found}")]
    NoIdentity {
        /// The trust domain looked for.
        trust_domain: String,
        /// Each URI found and why it names none.
        found: String,
    },
    /// A rule of the policy is malformed.
    #[error("policy rule '{rule}': {problem}")]
    Rule {
        /// The rule's name (`#n`, counted from 1, when it has none).
        rule: String,
        /// What is wrong, quoting the value.
        problem: String,
    },
    /// The policy's trust domain is not a SPIFFE trust domain.
    #[error(
        "policy trust-domain '{0}' is invalid: use lowercase letters, digits, '.', '-' and '_'"
    )]
    TrustDomain(String),
}
