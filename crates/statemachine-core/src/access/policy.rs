//! The rules of a policy and the decisions they give.

use std::fmt;

use super::identity::{DEFAULT_TRUST_DOMAIN, Identity, NODE_AGENT};
use crate::name::ResourceKind;
use crate::state::AnyState;

/// The methods a policy grants by class, besides transitions and reports.
/// Also the label of the denial counters (`statemanager_denied_total{method}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MethodClass {
    /// `SendStateChange`: each edge is decided by [`Policy::transition`].
    StateChange,
    /// `SendChangedContainerList`: each node by [`Policy::report`].
    Report,
    /// `GetResourceState`, `ListResourcesByState`, `GetResourceStateHistory`,
    /// `SubscribeToStateChanges`, `GetRecoveryStatus`, `GetPendingAlerts`,
    /// and the legacy `SendAction` (only logged).
    Read,
    /// `TriggerRecovery`, `AbortRecovery`, `AcknowledgeAlert`,
    /// `ForceSynchronization`, `SendStateDiff`.
    Recovery,
    /// `TriggerOffloading`.
    Offload,
}

impl MethodClass {
    /// Every class, in the order of [`Self::index`].
    pub const ALL: [MethodClass; 5] = [
        MethodClass::StateChange,
        MethodClass::Report,
        MethodClass::Read,
        MethodClass::Recovery,
        MethodClass::Offload,
    ];

    /// The position in [`Self::ALL`] (for per-class counters).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The metric label: `state_change`, `report`, `read`, `recovery`, `offload`.
    pub fn as_str(self) -> &'static str {
        match self {
            MethodClass::StateChange => "state_change",
            MethodClass::Report => "report",
            MethodClass::Read => "read",
            MethodClass::Recovery => "recovery",
            MethodClass::Offload => "offload",
        }
    }

    /// What the class is, for denial messages.
    fn describe(self) -> &'static str {
        match self {
            MethodClass::StateChange => "state changes",
            MethodClass::Report => "node reports",
            MethodClass::Read => "read calls",
            MethodClass::Recovery => "recovery calls",
            MethodClass::Offload => "offloading",
        }
    }
}

impl fmt::Display for MethodClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which identities a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityPattern {
    /// `*`: every authenticated identity.
    Any,
    /// `component/*`: every component but the NodeAgents.
    AnyComponent,
    /// `nodeagent/*`: every NodeAgent.
    AnyNodeAgent,
    /// `component/{name}` (lowercase).
    Component(String),
    /// `nodeagent/{node}`.
    NodeAgent(String),
}

impl IdentityPattern {
    /// Whether `identity` is one of the pattern's.
    pub fn matches(&self, identity: &Identity) -> bool {
        match (self, &identity.node) {
            (IdentityPattern::Any, _) => true,
            (IdentityPattern::AnyComponent, None) => true,
            (IdentityPattern::AnyNodeAgent, Some(_)) => true,
            (IdentityPattern::Component(c), None) => *c == identity.component,
            (IdentityPattern::NodeAgent(n), Some(node)) => n == node,
            _ => false,
        }
    }
}

impl fmt::Display for IdentityPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityPattern::Any => f.write_str("*"),
            IdentityPattern::AnyComponent => f.write_str("component/*"),
            IdentityPattern::AnyNodeAgent => write!(f, "{NODE_AGENT}/*"),
            IdentityPattern::Component(c) => write!(f, "component/{c}"),
            IdentityPattern::NodeAgent(n) => write!(f, "{NODE_AGENT}/{n}"),
        }
    }
}

/// The transitions a rule allows: a kind, and a state or any (`None`) on
/// either side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransitionPattern {
    /// Scenario, package or model.
    pub kind: ResourceKind,
    /// The recorded state left (`None`: any).
    pub from: Option<AnyState>,
    /// The requested state (`None`: any).
    pub to: Option<AnyState>,
}

impl TransitionPattern {
    /// Whether the pattern covers `kind` `from -> to`.
    pub fn matches(&self, kind: ResourceKind, from: AnyState, to: AnyState) -> bool {
        self.kind == kind && self.from.is_none_or(|f| f == from) && self.to.is_none_or(|t| t == to)
    }
}

impl fmt::Display for TransitionPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = |s: Option<AnyState>| s.map_or("*", AnyState::as_str);
        write!(
            f,
            "{}: {} -> {}",
            self.kind.as_key_segment(),
            side(self.from),
            side(self.to)
        )
    }
}

/// Which nodes' reports a rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reports {
    /// A NodeAgent's own node only (`own-node`).
    OwnNode,
    /// Any node (`any`): a test harness or a relay.
    Any,
}

/// One rule: the identities it applies to and what it allows them. Rules
/// only allow; what no rule allows is denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Named in the decisions the rule gives.
    pub name: String,
    /// The identities the rule applies to (at least one).
    pub identities: Vec<IdentityPattern>,
    /// `SendStateChange` edges.
    pub transitions: Vec<TransitionPattern>,
    /// `SendChangedContainerList`, if allowed.
    pub reports: Option<Reports>,
    /// The read methods ([`MethodClass::Read`]).
    pub read: bool,
    /// The recovery methods ([`MethodClass::Recovery`]).
    pub recovery: bool,
    /// `TriggerOffloading`.
    pub offload: bool,
}

impl Rule {
    /// A rule named `name` for `identities` allowing nothing yet.
    pub fn new(name: &str, identities: Vec<IdentityPattern>) -> Self {
        Self {
            name: name.to_owned(),
            identities,
            transitions: Vec::new(),
            reports: None,
            read: false,
            recovery: false,
            offload: false,
        }
    }

    /// Whether the rule applies to `identity`.
    pub fn applies_to(&self, identity: &Identity) -> bool {
        self.identities.iter().any(|p| p.matches(identity))
    }

    fn grants(&self, class: MethodClass) -> bool {
        match class {
            MethodClass::StateChange => !self.transitions.is_empty(),
            MethodClass::Report => self.reports.is_some(),
            MethodClass::Read => self.read,
            MethodClass::Recovery => self.recovery,
            MethodClass::Offload => self.offload,
        }
    }
}

/// A policy's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by the named rule.
    Allowed {
        /// The first rule that allows it.
        rule: String,
    },
    /// Denied: nothing may be written, the caller gets PERMISSION_DENIED.
    Denied {
        /// The rule that denied it (a NodeAgent reporting another node);
        /// `None` when no rule allows it (default deny).
        rule: Option<String>,
        /// Why, naming the identity, what was asked and the rule.
        message: String,
    },
}

impl Decision {
    /// `true` when allowed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed { .. })
    }

    /// The rule that allowed or denied it (`None`: default deny).
    pub fn rule(&self) -> Option<&str> {
        match self {
            Decision::Allowed { rule } => Some(rule),
            Decision::Denied { rule, .. } => rule.as_deref(),
        }
    }

    /// The rule for audit lines: `rule 'name'`, or `default deny`.
    pub fn rule_label(&self) -> String {
        self.rule()
            .map_or_else(|| "default deny".to_owned(), |r| format!("rule '{r}'"))
    }

    fn default_deny(message: String) -> Self {
        Decision::Denied {
            rule: None,
            message: format!("default deny: {message}"),
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Allowed { rule } => write!(f, "allowed by rule '{rule}'"),
            Decision::Denied { message, .. } => f.write_str(message),
        }
    }
}

/// Who may do what (see the [module docs](super) for the file format and
/// the default). Rules only allow; anything no rule allows is denied.
/// Deserializes from the policy file (TOML), refusing what
/// [`Policy::validate`] refuses and any unknown key, kind, state or
/// identity pattern, with the rule and the value named.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "super::file::PolicyFile")]
pub struct Policy {
    trust_domain: String,
    rules: Vec<Rule>,
}

impl Policy {
    /// A policy of `rules` for identities in `trust_domain` (checked as
    /// the file's are: see [`Policy::validate`] for what is refused).
    pub fn new(trust_domain: &str, rules: Vec<Rule>) -> Result<Self, super::AccessError> {
        let policy = Self {
            trust_domain: trust_domain.to_owned(),
            rules,
        };
        policy.validate()?;
        Ok(policy)
    }

    /// A policy known to be valid (built in this crate).
    pub(super) fn from_parts(trust_domain: &str, rules: Vec<Rule>) -> Self {
        Self {
            trust_domain: trust_domain.to_owned(),
            rules,
        }
    }

    /// Refuses a bad trust domain, a rule without a name, identities or
    /// grants, and two rules of one name.
    pub fn validate(&self) -> Result<(), super::AccessError> {
        super::file::check_trust_domain(&self.trust_domain)?;
        for (i, rule) in self.rules.iter().enumerate() {
            super::file::check_rule(rule, &self.rules[..i])?;
        }
        Ok(())
    }

    /// The trust domain the certificates' SPIFFE IDs must be in.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The identity `uris` (a client certificate's URI SANs) name in this
    /// policy's trust domain.
    pub fn identify(&self, uris: &[String]) -> Result<Identity, super::AccessError> {
        Identity::from_san_uris(uris, &self.trust_domain)
    }

    fn applying<'a>(&'a self, identity: &'a Identity) -> impl Iterator<Item = &'a Rule> {
        self.rules.iter().filter(move |r| r.applies_to(identity))
    }

    /// May `identity` request `kind` `from -> to` (`from` the recorded
    /// state)? Only the edge is decided here; whether the tables have it is
    /// the planner's check.
    pub fn transition(
        &self,
        identity: &Identity,
        kind: ResourceKind,
        from: AnyState,
        to: AnyState,
    ) -> Decision {
        match self
            .applying(identity)
            .find(|r| r.transitions.iter().any(|t| t.matches(kind, from, to)))
        {
            Some(rule) => Decision::Allowed {
                rule: rule.name.clone(),
            },
            None => Decision::default_deny(format!(
                "no rule allows {identity} {} {from} -> {to}",
                kind.as_key_segment()
            )),
        }
    }

    /// May `identity` report the containers of `node`? A rule with
    /// `reports = "own-node"` allows a NodeAgent its own node only; when
    /// that is all that applies, the denial names it.
    pub fn report(&self, identity: &Identity, node: &str) -> Decision {
        let mut own_node_rule = None;
        for rule in self.applying(identity) {
            match rule.reports {
                Some(Reports::Any) => {
                    return Decision::Allowed {
                        rule: rule.name.clone(),
                    };
                }
                Some(Reports::OwnNode) if identity.node.as_deref() == Some(node) => {
                    return Decision::Allowed {
                        rule: rule.name.clone(),
                    };
                }
                Some(Reports::OwnNode) => {
                    own_node_rule.get_or_insert(rule);
                }
                None => {}
            }
        }
        match own_node_rule {
            Some(rule) => Decision::Denied {
                rule: Some(rule.name.clone()),
                message: match &identity.node {
                    Some(own) => format!(
                        "rule '{}': {identity} may report only node {own}, not {}",
                        rule.name,
                        node.escape_debug()
                    ),
                    None => format!(
                        "rule '{}': {identity} is not a NodeAgent and has no node of its own to report",
                        rule.name
                    ),
                },
            },
            None => Decision::default_deny(format!(
                "no rule allows {identity} to report node {}",
                node.escape_debug()
            )),
        }
    }

    /// May `identity` call the methods of `class`? For
    /// [`MethodClass::StateChange`] and [`MethodClass::Report`] this says
    /// only whether some rule grants any edge or any node; the call itself
    /// is decided by [`Self::transition`] and [`Self::report`].
    pub fn call(&self, identity: &Identity, class: MethodClass) -> Decision {
        match self.applying(identity).find(|r| r.grants(class)) {
            Some(rule) => Decision::Allowed {
                rule: rule.name.clone(),
            },
            None => {
                Decision::default_deny(format!("no rule allows {identity} {}", class.describe()))
            }
        }
    }
}

impl Default for Policy {
    /// Denies everything (no rules) in the default trust domain.
    fn default() -> Self {
        Self {
            trust_domain: DEFAULT_TRUST_DOMAIN.to_owned(),
            rules: Vec::new(),
        }
    }
}
