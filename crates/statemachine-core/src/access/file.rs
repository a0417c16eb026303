//! The policy file: deserialized generically, then checked key by key so
//! every error names its rule and the offending value.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::AccessError;
use super::identity::{DEFAULT_TRUST_DOMAIN, NODE_AGENT};
use super::policy::{IdentityPattern, Policy, Reports, Rule, TransitionPattern};
use crate::name::{ResourceKind, validate};
use crate::state::AnyState;

/// The keys a rule may have.
const RULE_KEYS: &str = "name, identities, transitions, reports, read, recovery, offload";

/// The file as read: top-level keys checked by serde, rules as plain maps
/// checked here. (Public only for `Policy`'s `Deserialize`; the module is
/// private.)
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PolicyFile {
    trust_domain: Option<String>,
    #[serde(default, rename = "rule")]
    rules: Vec<Map<String, Value>>,
}

impl TryFrom<PolicyFile> for Policy {
    type Error = AccessError;

    fn try_from(file: PolicyFile) -> Result<Self, AccessError> {
        let trust_domain = file
            .trust_domain
            .unwrap_or_else(|| DEFAULT_TRUST_DOMAIN.to_owned());
        let rules = file
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, map)| rule(i, map))
            .collect::<Result<Vec<_>, _>>()?;
        Policy::new(&trust_domain, rules)
    }
}

/// The error of rule `rule` (a name, or `#n` before the name is known).
fn bad(rule: &str, problem: String) -> AccessError {
    AccessError::Rule {
        rule: rule.to_owned(),
        problem,
    }
}

/// Quotes a value of the file for an error message.
fn shown(value: &Value) -> String {
    value.to_string()
}

fn rule(index: usize, mut map: Map<String, Value>) -> Result<Rule, AccessError> {
    let number = format!("#{}", index + 1);
    let name = match map.remove("name") {
        Some(Value::String(name)) => name,
        Some(other) => {
            return Err(bad(
                &number,
                format!("'name' must be a string, not {}", shown(&other)),
            ));
        }
        None => return Err(bad(&number, "'name' is missing".to_owned())),
    };
    let at = name.as_str();
    let mut rule = Rule::new(at, Vec::new());
    for (key, value) in map {
        match key.as_str() {
            "identities" => {
                rule.identities = strings(at, &key, &value)?
                    .iter()
                    .map(|p| identity_pattern(p).map_err(|e| bad(at, e)))
                    .collect::<Result<_, _>>()?;
            }
            "transitions" => {
                rule.transitions = strings(at, &key, &value)?
                    .iter()
                    .map(|p| transition_pattern(p).map_err(|e| bad(at, e)))
                    .collect::<Result<_, _>>()?;
            }
            "reports" => {
                rule.reports = Some(match &value {
                    Value::String(s) if s == "own-node" => Reports::OwnNode,
                    Value::String(s) if s == "any" => Reports::Any,
                    other => {
                        return Err(bad(
                            at,
                            format!(
                                "'reports' must be \"own-node\" or \"any\", not {}",
                                shown(other)
                            ),
                        ));
                    }
                });
            }
            "read" => rule.read = flag(at, &key, &value)?,
            "recovery" => rule.recovery = flag(at, &key, &value)?,
            "offload" => rule.offload = flag(at, &key, &value)?,
            _ => {
                return Err(bad(
                    at,
                    format!(
                        "unknown key '{}' (a rule has {RULE_KEYS})",
                        key.escape_debug()
                    ),
                ));
            }
        }
    }
    Ok(rule)
}

fn strings<'v>(rule: &str, key: &str, value: &'v Value) -> Result<Vec<&'v str>, AccessError> {
    let not_list = || {
        bad(
            rule,
            format!("'{key}' must be a list of strings, not {}", shown(value)),
        )
    };
    let Value::Array(items) = value else {
        return Err(not_list());
    };
    items
        .iter()
        .map(|item| item.as_str().ok_or_else(not_list))
        .collect()
}

fn flag(rule: &str, key: &str, value: &Value) -> Result<bool, AccessError> {
    value.as_bool().ok_or_else(|| {
        bad(
            rule,
            format!("'{key}' must be true or false, not {}", shown(value)),
        )
    })
}

/// `*`, `component/*`, `nodeagent/*`, `component/{name}`, `nodeagent/{node}`.
pub(super) fn identity_pattern(text: &str) -> Result<IdentityPattern, String> {
    let unknown = || {
        format!(
            "unknown identity pattern '{}' (use component/{{name}}, component/*, \
             {NODE_AGENT}/{{node}}, {NODE_AGENT}/* or *)",
            text.escape_debug()
        )
    };
    if text == "*" {
        return Ok(IdentityPattern::Any);
    }
    let (prefix, name) = text.split_once('/').ok_or_else(unknown)?;
    match (prefix, name) {
        ("component", "*") => Ok(IdentityPattern::AnyComponent),
        (NODE_AGENT, "*") => Ok(IdentityPattern::AnyNodeAgent),
        ("component", name) => {
            validate(name)
                .map_err(|e| format!("identity pattern '{}': {e}", text.escape_debug()))?;
            let name = name.to_ascii_lowercase();
            if name == NODE_AGENT {
                return Err(format!(
                    "identity pattern '{}': NodeAgents are {NODE_AGENT}/{{node}} or {NODE_AGENT}/*",
                    text.escape_debug()
                ));
            }
            Ok(IdentityPattern::Component(name))
        }
        (NODE_AGENT, node) => {
            validate(node)
                .map_err(|e| format!("identity pattern '{}': {e}", text.escape_debug()))?;
            Ok(IdentityPattern::NodeAgent(node.to_owned()))
        }
        _ => Err(unknown()),
    }
}

/// `kind: From -> To`: kind `scenario`, `package` or `model` (any case),
/// states in any spelling the state parser takes, or `*`.
pub(super) fn transition_pattern(text: &str) -> Result<TransitionPattern, String> {
    let quoted = text.escape_debug();
    let (kind, edge) = text.split_once(':').ok_or_else(|| {
        format!(
            "transition '{quoted}' is not 'kind: From -> To' (e.g. \"scenario: Idle -> Waiting\")"
        )
    })?;
    let kind = match kind.trim().to_ascii_lowercase().as_str() {
        "scenario" => ResourceKind::Scenario,
        "package" => ResourceKind::Package,
        "model" => ResourceKind::Model,
        other => {
            return Err(format!(
                "transition '{quoted}': unknown kind '{}' (use scenario, package or model)",
                other.escape_debug()
            ));
        }
    };
    let (from, to) = edge.split_once("->").ok_or_else(|| {
        format!(
            "transition '{quoted}' is not 'kind: From -> To' (e.g. \"scenario: Idle -> Waiting\")"
        )
    })?;
    let state = |s: &str| -> Result<Option<AnyState>, String> {
        match s.trim() {
            "*" => Ok(None),
            s => AnyState::parse(kind, s)
                .map(Some)
                .map_err(|e| format!("transition '{quoted}': {e}")),
        }
    };
    Ok(TransitionPattern {
        kind,
        from: state(from)?,
        to: state(to)?,
    })
}

/// A SPIFFE trust domain: lowercase letters, digits, `.`, `-` and `_`.
pub(super) fn check_trust_domain(domain: &str) -> Result<(), AccessError> {
    let ok = !domain.is_empty()
        && domain.len() <= 255
        && domain.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(AccessError::TrustDomain(domain.escape_debug().to_string()))
    }
}

/// A rule needs a name no earlier rule has, identities and a grant.
pub(super) fn check_rule(rule: &Rule, earlier: &[Rule]) -> Result<(), AccessError> {
    let at = rule.name.as_str();
    if at.trim().is_empty() {
        return Err(bad(at, "'name' is empty".to_owned()));
    }
    if earlier.iter().any(|r| r.name == rule.name) {
        return Err(bad(at, "another rule has the same name".to_owned()));
    }
    if rule.identities.is_empty() {
        return Err(bad(at, "'identities' is missing or empty".to_owned()));
    }
    let grants = !rule.transitions.is_empty()
        || rule.reports.is_some()
        || rule.read
        || rule.recovery
        || rule.offload;
    if !grants {
        return Err(bad(
            at,
            "allows nothing: give transitions, reports, read, recovery or offload".to_owned(),
        ));
    }
    Ok(())
}
