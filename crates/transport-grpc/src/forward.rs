//! A follower's forwarding (HA): writes, recovery and alert methods and
//! subscriptions go to the leader of the group, whatever instance the
//! client called; queries are answered here from the warm cache.
//!
//! The forwarding is a layer in front of the gRPC routes: the request is
//! passed on as it came (HTTP/2, body unread) over a channel to the
//! leader, and its answer (a stream, for a subscription) comes back the
//! same way. A forwarded request carries [`FORWARDED_HEADER`] and is never
//! forwarded again, so two instances that each believe the other leads
//! answer instead of passing a request back and forth. With mutual TLS the
//! caller's certificate names are sent along in [`FORWARDED_FOR_HEADER`];
//! the leader takes them only from a peer whose own certificate names the
//! StateManager component (see the server's access checks).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::watch;
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::codegen::http::{self, HeaderValue};
use tonic::transport::Channel;
use tracing::debug;

use statemachine_core::Policy;

use crate::peer::PeerCertificate;
use crate::server::Engines;

/// Set on a request one instance passed to another.
pub const FORWARDED_HEADER: &str = "x-statemanager-forwarded";
/// The URI names of the original caller's certificate, comma-separated.
pub const FORWARDED_FOR_HEADER: &str = "x-statemanager-forwarded-for";

const SERVICE_PATH: &str = "/statemanager.StateManagerConnection/";
/// Methods a follower answers itself, from its cache and the store.
const LOCAL_METHODS: [&str; 3] = [
    "GetResourceState",
    "ListResourcesByState",
    "GetResourceStateHistory",
];

/// Where a follower sends what it does not answer itself.
#[derive(Clone, Debug)]
pub struct LeaderRoute {
    /// The leader's advertised address, for messages.
    pub url: String,
    /// A (lazily connecting) channel to it.
    pub channel: Channel,
}

/// The current route: `None` on the leader itself, and while no leader is
/// known (the local engine then answers writes RESOURCE_UNAVAILABLE).
pub type Routes = watch::Receiver<Option<LeaderRoute>>;

/// `true` for a request a follower passes to the leader.
pub fn is_forwarded_method(path: &str) -> bool {
    path.strip_prefix(SERVICE_PATH)
        .is_some_and(|method| !LOCAL_METHODS.contains(&method))
}

/// The layer: [`Forward`] around the routes.
#[derive(Clone)]
pub(crate) struct ForwardLayer {
    pub(crate) routes: Routes,
    /// The engine, for its access policy (who counts as a member).
    pub(crate) engines: Engines,
}

impl<S> tower_layer::Layer<S> for ForwardLayer {
    type Service = Forward<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Forward {
            inner,
            routes: self.routes.clone(),
            engines: self.engines.clone(),
        }
    }
}

/// Passes requests for the leader to it, everything else to `inner`.
#[derive(Clone)]
pub(crate) struct Forward<S> {
    inner: S,
    routes: Routes,
    engines: Engines,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> Service<http::Request<Body>> for Forward<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        if request.headers().contains_key(FORWARDED_FOR_HEADER) {
            let engine = self.engines.current();
            adopt_forwarded_caller(&mut request, engine.access_policy().map(|p| &**p));
        }
        let route = if request.headers().contains_key(FORWARDED_HEADER)
            || !is_forwarded_method(request.uri().path())
        {
            None
        } else {
            self.routes.borrow().clone()
        };
        let Some(route) = route else {
            return Box::pin(self.inner.call(request));
        };
        mark(&mut request);
        debug!(path = request.uri().path(), leader = %route.url, "forwarding to the leader");
        // The caller's deadline less a margin, so that a leader that does not
        // answer is reported before the caller gives up.
        let within = request
            .headers()
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok())
            .and_then(crate::server::within_deadline);
        let mut channel = route.channel;
        Box::pin(async move {
            let send = async {
                // A channel takes a call only once it said it is ready.
                std::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
                channel.call(request).await
            };
            let sent = match within {
                Some(limit) => match tokio::time::timeout(limit, send).await {
                    Ok(sent) => sent,
                    Err(_) => {
                        return Ok(tonic::Status::unavailable(format!(
                            "the leader at {} did not answer within {limit:?}; \
                             the call may or may not have taken effect",
                            route.url
                        ))
                        .into_http());
                    }
                },
                None => send.await,
            };
            match sent {
                Ok(response) => Ok(response),
                Err(error) => {
                    // Only a failure to connect proves the call never left.
                    let outcome = if while_connecting(&error) {
                        "nothing was written"
                    } else {
                        "the call may or may not have taken effect"
                    };
                    Ok(tonic::Status::unavailable(format!(
                        "the leader at {} cannot be reached: {error}; {outcome}",
                        route.url
                    ))
                    .into_http())
                }
            }
        })
    }
}

/// `true` when `error` or one of its sources is tonic's marker of a failure
/// to connect (TCP, TLS handshake, connect timeout).
fn while_connecting(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error.is::<tonic::ConnectError>() {
            return true;
        }
        next = error.source();
    }
    false
}

/// The component a member of an HA group is, as its certificate names it.
pub const MEMBER_COMPONENT: &str = "statemanager";

/// On the receiving side: a request another member forwarded is
/// authorized as its original caller. The caller's names are taken from
/// [`FORWARDED_FOR_HEADER`] only when `policy` identifies the connection's
/// own certificate as the StateManager component (in the policy's trust
/// domain); from anyone else, or without a policy (nothing is authorized
/// then), the header is dropped and the peer is who its certificate says.
fn adopt_forwarded_caller(request: &mut http::Request<Body>, policy: Option<&Policy>) {
    let Some(names) = request.headers_mut().remove(FORWARDED_FOR_HEADER) else {
        return;
    };
    let from_member = policy.is_some_and(|policy| {
        PeerCertificate::in_extensions(request.extensions())
            .and_then(|peer| policy.identify(&peer.san_uris).ok())
            .is_some_and(|peer| peer.component == MEMBER_COMPONENT && peer.node.is_none())
    });
    if !from_member {
        return;
    }
    let san_uris = names
        .to_str()
        .unwrap_or_default()
        .split(',')
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect();
    request.extensions_mut().insert(PeerCertificate {
        san_uris,
        common_name: None,
    });
}

/// Marks a request as forwarded, with its caller's certificate names.
fn mark(request: &mut http::Request<Body>) {
    let names = PeerCertificate::in_extensions(request.extensions())
        .map(|cert| cert.san_uris.join(","))
        .and_then(|names| HeaderValue::from_str(&names).ok());
    let headers = request.headers_mut();
    headers.remove(FORWARDED_FOR_HEADER);
    headers.insert(FORWARDED_HEADER, HeaderValue::from_static("1"));
    if let Some(names) = names {
        headers.insert(FORWARDED_FOR_HEADER, names);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(peer: Option<&str>, forwarded_for: Option<&str>) -> http::Request<Body> {
        let mut request = http::Request::new(Body::empty());
        if let Some(peer) = peer {
            request.extensions_mut().insert(PeerCertificate {
                san_uris: vec![peer.to_owned()],
                common_name: None,
            });
        }
        if let Some(names) = forwarded_for {
            request
                .headers_mut()
                .insert(FORWARDED_FOR_HEADER, HeaderValue::from_str(names).unwrap());
        }
        request
    }

    fn caller(request: &http::Request<Body>) -> Option<Vec<String>> {
        PeerCertificate::in_extensions(request.extensions()).map(|c| c.san_uris.clone())
    }

    #[test]
    fn only_a_member_may_speak_for_its_caller() {
        let policy = Policy::default();
        let member = "spiffe://piccolo/component/statemanager";
        let gateway = "spiffe://piccolo/component/filtergateway";
        let mut forwarded = request(Some(member), Some(gateway));
        adopt_forwarded_caller(&mut forwarded, Some(&policy));
        assert_eq!(caller(&forwarded), Some(vec![gateway.to_owned()]));

        // Not a member, a member of another trust domain, no certificate,
        // no policy: the header is dropped.
        for (peer, policy) in [
            (Some("spiffe://piccolo/nodeagent/a"), Some(&policy)),
            (
                Some("spiffe://elsewhere/component/statemanager"),
                Some(&policy),
            ),
            (None, Some(&policy)),
            (Some(member), None),
        ] {
            let mut forged = request(peer, Some(gateway));
            adopt_forwarded_caller(&mut forged, policy);
            assert_eq!(
                caller(&forged),
                peer.map(|p| vec![p.to_owned()]),
                "{peer:?} with a policy: {}",
                policy.is_some()
            );
            assert!(!forged.headers().contains_key(FORWARDED_FOR_HEADER));
        }
    }

    #[test]
    fn a_forwarded_request_names_its_caller_and_nobody_else() {
        let gateway = "spiffe://piccolo/component/filtergateway";
        let mut incoming = request(
            Some(gateway),
            Some("spiffe://piccolo/component/policymanager"),
        );
        mark(&mut incoming);
        assert_eq!(incoming.headers()[FORWARDED_FOR_HEADER], gateway);
        assert_eq!(incoming.headers()[FORWARDED_HEADER], "1");
        let mut anonymous = request(None, Some(gateway));
        mark(&mut anonymous);
        assert!(!anonymous.headers().contains_key(FORWARDED_FOR_HEADER));
    }

    #[test]
    fn queries_stay_and_everything_else_of_the_service_goes() {
        for method in LOCAL_METHODS {
            assert!(!is_forwarded_method(&format!("{SERVICE_PATH}{method}")));
        }
        for method in [
            "SendStateChange",
            "SendChangedContainerList",
            "SubscribeToStateChanges",
            "TriggerRecovery",
            "GetPendingAlerts",
        ] {
            assert!(is_forwarded_method(&format!("{SERVICE_PATH}{method}")));
        }
        assert!(!is_forwarded_method("/grpc.health.v1.Health/Check"));
    }
}
