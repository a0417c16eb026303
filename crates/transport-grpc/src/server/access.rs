//! Authorization at the edge (SECURITY, QUALITY-BAR S1): with an access
//! policy in the engine's configuration
//! ([`CoreConfig::access`](statemachine_core::CoreConfig::access)), every
//! method takes the caller's identity from its client certificate
//! ([`PeerCertificate`]) and asks the policy before the engine is called.
//!
//! - Reads, recovery methods and offloading: [`Policy::call`] by
//!   [`MethodClass`]; denied is a `PERMISSION_DENIED` status, except for
//!   `ForceSynchronization`, which answers it in its `error_code`.
//! - Node reports: [`Policy::report`] for the report's node;
//!   `PERMISSION_DENIED` status.
//! - State changes: the request's `source` must name the identity's
//!   component (an empty one is filled in with it); the edge itself is
//!   decided by the planner from the recorded state
//!   ([`Policy::transition`]). Denied is `ERROR_CODE_PERMISSION_DENIED` in
//!   the answer, as every `SendStateChange` outcome is.
//!
//! No certificate, or one whose URI SANs name no identity in the policy's
//! trust domain, is denied as well. Every denial writes nothing, is counted
//! in [`engine::Metrics::denied`] by class and logged as one `audit` line at
//! warn; allowed writes are logged at debug on the same target. Without a
//! policy nothing is checked.

use std::sync::Arc;

use statemachine_core::{
    Decision, ErrorCode, Identity, MethodClass, Policy, ResourceKind, StateChangeRequest,
};
use tonic::{Request, Status};
use tracing::{debug, warn};

use super::StateManagerService;
use crate::peer::PeerCertificate;

/// A refused call: who asked (as far as known), why, and under which rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Denial {
    /// The identity, or what is known of a caller without one.
    pub(crate) who: String,
    /// The message the caller gets.
    pub(crate) message: String,
    /// The rule for the audit line (`rule 'x'`, `default deny`, ...).
    pub(crate) rule: String,
}

impl Denial {
    /// The denial as the `PERMISSION_DENIED` status of methods without an
    /// `error_code`.
    pub(crate) fn status(&self) -> Status {
        crate::convert::status_for(ErrorCode::PermissionDenied, self.message.clone())
    }

    /// The denial as a `SendStateChange` answer (`error_code`
    /// PERMISSION_DENIED, the rule in the details).
    pub(crate) fn change_answer(self, transition_id: String) -> engine::ChangeAnswer {
        engine::ChangeAnswer {
            code: ErrorCode::PermissionDenied,
            message: self.message,
            details: self.rule,
            transition_id,
            timestamp_ns: 0,
        }
    }
}

/// The resource of a state change for audit lines (`scenario/s1`).
pub(crate) fn change_resource(request: &StateChangeRequest) -> String {
    let kind = request
        .kind
        .managed()
        .map_or("unmanaged", ResourceKind::as_key_segment);
    format!("{kind}/{}", request.name)
}

/// What is known of a certificate that names no identity, for audit lines.
fn unidentified(cert: &PeerCertificate) -> String {
    match &cert.common_name {
        Some(cn) => format!("unidentified (CN '{}')", cn.escape_debug()),
        None => "unidentified".to_owned(),
    }
}

impl StateManagerService {
    /// The engine's access policy, if any.
    fn policy(&self) -> Option<Arc<Policy>> {
        self.engine().access_policy().cloned()
    }

    /// The caller's identity under `policy`, from its certificate, or the
    /// denial.
    fn identify(policy: &Policy, peer: Option<&PeerCertificate>) -> Result<Identity, Denial> {
        let Some(cert) = peer else {
            return Err(Denial {
                who: "unauthenticated".to_owned(),
                message: "no client certificate".to_owned(),
                rule: "unauthenticated".to_owned(),
            });
        };
        policy.identify(&cert.san_uris).map_err(|error| Denial {
            who: unidentified(cert),
            message: error.to_string(),
            rule: "unauthenticated".to_owned(),
        })
    }

    /// Counts and logs a denial of `method` (of `class`) on `resource`.
    pub(crate) fn audit_denied(
        &self,
        method: &str,
        class: MethodClass,
        resource: &str,
        denial: &Denial,
    ) {
        self.engine().metrics().count_denied(class);
        warn!(
            target: "audit",
            identity = %denial.who,
            method,
            resource = %resource.escape_debug(),
            decision = "denied",
            rule = %denial.rule,
            "{}",
            denial.message
        );
    }

    /// Counts and logs a state change the planner denied (its answer is
    /// PERMISSION_DENIED, the rule in its details), or logs an allowed one
    /// at debug. Nothing without a policy.
    pub(crate) fn audit_change(
        &self,
        caller: Option<&Identity>,
        resource: &str,
        answer: &engine::ChangeAnswer,
    ) {
        const METHOD: &str = "SendStateChange";
        if self.policy().is_none() {
            return;
        }
        match answer.code {
            ErrorCode::PermissionDenied => {
                let denial = Denial {
                    who: caller.map_or_else(|| "unauthenticated".to_owned(), Identity::to_string),
                    message: answer.message.clone(),
                    rule: answer.details.clone(),
                };
                self.audit_denied(METHOD, MethodClass::StateChange, resource, &denial);
            }
            ErrorCode::Success => {
                if let Some(identity) = caller {
                    self.audit_allowed(identity, METHOD, resource);
                }
            }
            _ => {}
        }
    }

    /// Logs an allowed write at debug.
    pub(crate) fn audit_allowed(&self, identity: &Identity, method: &str, resource: &str) {
        debug!(
            target: "audit",
            identity = %identity,
            method,
            resource = %resource.escape_debug(),
            decision = "allowed",
            "{method} allowed"
        );
    }

    /// Checks a read, recovery or offloading call. `Ok(None)` without a
    /// policy; the caller's identity when allowed; the denial (counted
    /// and logged) otherwise.
    pub(crate) fn authorize_call<T>(
        &self,
        request: &Request<T>,
        method: &str,
        class: MethodClass,
        resource: &str,
    ) -> Result<Option<Identity>, Denial> {
        let Some(policy) = self.policy() else {
            return Ok(None);
        };
        let checked =
            Self::identify(&policy, PeerCertificate::of(request)).and_then(|identity| match policy
                .call(&identity, class)
            {
                Decision::Allowed { .. } => Ok(identity),
                denied @ Decision::Denied { .. } => Err(Denial {
                    who: identity.to_string(),
                    message: denied.to_string(),
                    rule: denied.rule_label(),
                }),
            });
        match checked {
            Ok(identity) => {
                if class != MethodClass::Read {
                    self.audit_allowed(&identity, method, resource);
                }
                Ok(Some(identity))
            }
            Err(denial) => {
                self.audit_denied(method, class, resource, &denial);
                Err(denial)
            }
        }
    }

    /// [`Self::authorize_call`] for methods that answer a denial with a
    /// `PERMISSION_DENIED` status.
    pub(crate) fn gate<T>(
        &self,
        request: &Request<T>,
        method: &str,
        class: MethodClass,
        resource: &str,
    ) -> Result<(), Status> {
        self.authorize_call(request, method, class, resource)
            .map(drop)
            .map_err(|denial| denial.status())
    }

    /// Checks a node report for `node` ([`Policy::report`]). `Ok(())`
    /// without a policy; a `PERMISSION_DENIED` status (counted and logged)
    /// when denied.
    pub(crate) fn authorize_report<T>(
        &self,
        request: &Request<T>,
        node: &str,
    ) -> Result<(), Status> {
        const METHOD: &str = "SendChangedContainerList";
        let Some(policy) = self.policy() else {
            return Ok(());
        };
        let resource = format!("node/{node}");
        let checked =
            Self::identify(&policy, PeerCertificate::of(request)).and_then(|identity| match policy
                .report(&identity, node)
            {
                Decision::Allowed { .. } => Ok(identity),
                denied @ Decision::Denied { .. } => Err(Denial {
                    who: identity.to_string(),
                    message: denied.to_string(),
                    rule: denied.rule_label(),
                }),
            });
        match checked {
            Ok(identity) => {
                self.audit_allowed(&identity, METHOD, &resource);
                Ok(())
            }
            Err(denial) => {
                self.audit_denied(METHOD, MethodClass::Report, &resource, &denial);
                Err(denial.status())
            }
        }
    }

    /// The identity of a state change's caller, with the request's
    /// `source` checked against it (case, `-`, `_` and spaces ignored) and
    /// filled in when empty. `Ok(None)` without a policy; the denial
    /// (counted and logged) when there is no identity or the source names
    /// another component.
    pub(crate) fn authorize_change(
        &self,
        peer: Option<&PeerCertificate>,
        source: &mut String,
        resource: &str,
    ) -> Result<Option<Identity>, Denial> {
        const METHOD: &str = "SendStateChange";
        let Some(policy) = self.policy() else {
            return Ok(None);
        };
        let checked = Self::identify(&policy, peer).and_then(|identity| {
            if identity.is_named_by(source) {
                Ok(identity)
            } else {
                Err(Denial {
                    message: format!(
                        "source '{}' does not name the caller {identity}",
                        source.escape_debug()
                    ),
                    who: identity.to_string(),
                    rule: "source mismatch".to_owned(),
                })
            }
        });
        match checked {
            Ok(identity) => {
                if source.is_empty() {
                    source.clone_from(&identity.component);
                }
                Ok(Some(identity))
            }
            Err(denial) => {
                self.audit_denied(METHOD, MethodClass::StateChange, resource, &denial);
                Err(denial)
            }
        }
    }
}
