//! Who a caller is: the identity its client certificate's URI SANs name.

use std::fmt;

use super::AccessError;
use crate::name::validate;

/// The trust domain of PICCOLO's SPIFFE IDs unless a policy names another.
pub const DEFAULT_TRUST_DOMAIN: &str = "piccolo";

/// The component name of a NodeAgent; its identities carry their node.
pub const NODE_AGENT: &str = "nodeagent";

/// An authenticated caller: a component, and for a NodeAgent the node it
/// runs on. Displayed as the path of its SPIFFE ID (`component/filtergateway`,
/// `nodeagent/n1`), which is also how policies name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The component, lowercase (`filtergateway`, `actioncontroller`,
    /// `policymanager`, `apiserver`, `nodeagent`, `operator`, or any other).
    pub component: String,
    /// The node of a NodeAgent (`None` for every other component).
    pub node: Option<String>,
}

impl Identity {
    /// A component's identity; the name is lowercased, as in SPIFFE IDs.
    pub fn component(name: &str) -> Self {
        Self {
            component: name.to_ascii_lowercase(),
            node: None,
        }
    }

    /// The NodeAgent of `node`.
    pub fn node_agent(node: &str) -> Self {
        Self {
            component: NODE_AGENT.to_owned(),
            node: Some(node.to_owned()),
        }
    }

    /// The identity the first URI naming one in `trust_domain` gives:
    /// `spiffe://{trust_domain}/component/{name}` or
    /// `spiffe://{trust_domain}/nodeagent/{node}` (names as resource names;
    /// the trust domain and the `spiffe` scheme in any case). Other URIs are
    /// skipped; with none left, the error lists each URI and why it does not
    /// name an identity.
    pub fn from_san_uris(uris: &[String], trust_domain: &str) -> Result<Identity, AccessError> {
        let mut refused = Vec::with_capacity(uris.len());
        for uri in uris {
            match parse_spiffe_id(uri, trust_domain) {
                Ok(identity) => return Ok(identity),
                Err(why) => refused.push(format!("'{}' ({why})", uri.escape_debug())),
            }
        }
        Err(AccessError::NoIdentity {
            trust_domain: trust_domain.to_owned(),
            found: if refused.is_empty() {
                "the certificate has no URI SAN".to_owned()
            } else {
                refused.join("; ")
            },
        })
    }

    /// `true` for a NodeAgent's identity.
    pub fn is_node_agent(&self) -> bool {
        self.node.is_some()
    }

    /// Whether this identity's component is the one `source` names (a
    /// request's self-declared `source`). Case, `-`, `_` and spaces are
    /// ignored, so `FilterGateway` and `filter-gateway` name
    /// `component/filtergateway`; an empty source names every identity (the
    /// caller's own component is then used).
    pub fn is_named_by(&self, source: &str) -> bool {
        source.is_empty() || crate::transition::source_allowed(&[&self.component], source)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node {
            Some(node) => write!(f, "{NODE_AGENT}/{node}"),
            None => write!(f, "component/{}", self.component),
        }
    }
}

/// One URI as an identity, or why it is none.
fn parse_spiffe_id(uri: &str, trust_domain: &str) -> Result<Identity, String> {
    let scheme = "spiffe://";
    let rest = match uri.get(..scheme.len()) {
        Some(s) if s.eq_ignore_ascii_case(scheme) => &uri[scheme.len()..],
        _ => return Err("not a spiffe:// URI".to_owned()),
    };
    let (domain, path) = rest.split_once('/').unwrap_or((rest, ""));
    if !domain.eq_ignore_ascii_case(trust_domain) {
        return Err(format!(
            "trust domain '{}', not '{trust_domain}'",
            domain.escape_debug()
        ));
    }
    match path.split_once('/') {
        Some(("component", name)) => {
            validate(name).map_err(|e| format!("component name: {e}"))?;
            let identity = Identity::component(name);
            if identity.component == NODE_AGENT {
                return Err(format!(
                    "a NodeAgent is named spiffe://{trust_domain}/{NODE_AGENT}/{{node}}"
                ));
            }
            Ok(identity)
        }
        Some((NODE_AGENT, node)) => {
            validate(node).map_err(|e| format!("node name: {e}"))?;
            Ok(Identity::node_agent(node))
        }
        _ => Err(format!(
            "path '/{}' is neither /component/{{name}} nor /{NODE_AGENT}/{{node}}",
            path.escape_debug()
        )),
    }
}
