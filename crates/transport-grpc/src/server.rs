//! The `statemanager.StateManagerConnection` service over the engine, and
//! [`serve`], which runs it with `grpc.health.v1` and reflection.
//!
//! Each method converts its request (see [`crate::convert`]), asks the
//! [`EngineHandle`] and converts the answer. The engine bounds every answer
//! with its own deadline, so no method waits without bound. The
//! self-healing methods are in `healing` (a child module).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use engine::EngineHandle;
use engine::{Delivery, Subscription};
use futures::Stream;
use statemachine_core::{MethodClass, NodeReport};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

use crate::convert;
use crate::lean::WithLeanReports;
use crate::peer::PeerCertificate;
use crate::proto::monitoringserver as ms;
use crate::proto::statemanager as sm;
use crate::proto::statemanager::state_manager_connection_server::{
    StateManagerConnection, StateManagerConnectionServer,
};

mod access;
mod healing;

pub use healing::HEALTH_WAIT;

/// The largest request the server decodes (4 MiB); larger ones are
/// refused with `OutOfRange`/`ResourceExhausted` before they reach a handler.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// The engine a server answers from: one, or the current one of an HA
/// member, whose engine changes with its role. Shared, so that taking the
/// current one for a request costs one reference count.
#[derive(Clone)]
pub enum Engines {
    /// Always this engine.
    One(Arc<EngineHandle>),
    /// Whichever engine the channel holds when a request comes.
    Switching(watch::Receiver<Arc<EngineHandle>>),
}

impl Engines {
    /// The engine answering now.
    pub fn current(&self) -> Arc<EngineHandle> {
        match self {
            Engines::One(engine) => engine.clone(),
            Engines::Switching(engines) => engines.borrow().clone(),
        }
    }
}

impl From<EngineHandle> for Engines {
    fn from(engine: EngineHandle) -> Self {
        Engines::One(Arc::new(engine))
    }
}

impl From<watch::Receiver<Arc<EngineHandle>>> for Engines {
    fn from(engines: watch::Receiver<Arc<EngineHandle>>) -> Self {
        Engines::Switching(engines)
    }
}

/// The `StateManagerConnection` service: a thin translator in front of the
/// engine. Cheap to clone.
#[derive(Clone)]
pub struct StateManagerService {
    engines: Engines,
    /// Flips to `true` when the server shuts down, ending open subscriptions
    /// (otherwise a graceful shutdown would wait for them forever).
    shutdown: Option<watch::Receiver<bool>>,
}

impl StateManagerService {
    /// A service answering from `engine`. Its subscriptions end only when
    /// their clients leave or the engine stops; [`serve`] also ends them at
    /// shutdown.
    pub fn new(engine: impl Into<Engines>) -> Self {
        Self {
            engines: engine.into(),
            shutdown: None,
        }
    }

    fn with_shutdown(engines: Engines, shutdown: watch::Receiver<bool>) -> Self {
        Self {
            engines,
            shutdown: Some(shutdown),
        }
    }

    /// The engine to answer the current request.
    fn engine(&self) -> Arc<EngineHandle> {
        self.engines.current()
    }

    /// The tonic server for this service, decoding requests of at most
    /// `max_message_bytes` (answers are not limited: a long listing may be
    /// larger than any request). Node reports are decoded by
    /// [`crate::lean`], straight into the engine's report.
    pub fn into_server(
        self,
        max_message_bytes: usize,
    ) -> WithLeanReports<StateManagerConnectionServer<Self>> {
        let reports = self.clone();
        WithLeanReports::new(
            StateManagerConnectionServer::new(self).max_decoding_message_size(max_message_bytes),
            reports,
            max_message_bytes,
        )
    }

    /// Hands a node's report to the engine and converts its answer.
    pub(crate) async fn report(
        &self,
        report: NodeReport,
        within: Option<Duration>,
    ) -> Result<Response<ms::SendContainerListResponse>, Status> {
        let node = report.node.clone();
        let answer = self.engine().report_containers_within(report, within).await;
        convert::container_list_response(&node, answer).map(Response::new)
    }
}

/// How long the engine may take for a request whose caller set a gRPC
/// deadline (`grpc-timeout`): the deadline less a margin for the answer's
/// way back (a tenth of it, 50 ms at most). `None` without a deadline (or
/// with one that does not parse: the engine's own bound applies).
pub(crate) fn caller_deadline(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    within_deadline(metadata.get("grpc-timeout")?.to_str().ok()?)
}

/// The time to answer within for a `grpc-timeout` value: the timeout less
/// the margin [`caller_deadline`] describes.
pub(crate) fn within_deadline(grpc_timeout: &str) -> Option<Duration> {
    let timeout = parse_grpc_timeout(grpc_timeout)?;
    let margin = (timeout / 10).min(Duration::from_millis(50));
    Some(timeout - margin)
}

/// Parses a `grpc-timeout` header value: at most 8 digits and a unit
/// (`H`, `M`, `S`, `m`, `u`, `n`), as the gRPC HTTP/2 protocol defines it.
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let unit = value.chars().last()?;
    let digits = &value[..value.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(amount.saturating_mul(3600)),
        'M' => Duration::from_secs(amount.saturating_mul(60)),
        'S' => Duration::from_secs(amount),
        'm' => Duration::from_millis(amount),
        'u' => Duration::from_micros(amount),
        'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The stream of a subscription: engine events, converted, until the
/// client leaves (the stream is dropped, and with it the subscription), the
/// engine stops or the server shuts down.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<sm::StateChangeEvent, Status>> + Send>>;

/// Completes when the server shuts down (or its signal is gone); never
/// without a signal.
async fn stopping(shutdown: &mut Option<watch::Receiver<bool>>) {
    match shutdown {
        Some(signal) => {
            let _ = signal.wait_for(|stopping| *stopping).await;
        }
        None => std::future::pending().await,
    }
}

fn event_stream(
    subscription: Subscription,
    shutdown: Option<watch::Receiver<bool>>,
) -> EventStream {
    Box::pin(futures::stream::unfold(
        (subscription, shutdown, false),
        |(mut subscription, mut shutdown, done)| async move {
            if done {
                return None;
            }
            let delivery = tokio::select! {
                delivery = subscription.next() => delivery,
                () = stopping(&mut shutdown) => {
                    let status = Status::unavailable("the state manager is shutting down");
                    return Some((Err(status), (subscription, shutdown, true)));
                }
            };
            let item = match delivery {
                Some(Delivery::Event(event)) => Ok(convert::state_change_event(&event)),
                Some(Delivery::Lagged(missed)) => {
                    warn!(missed, "a state change subscriber fell behind");
                    Ok(convert::lagged_event(missed, engine::wall_clock_ns()))
                }
                None => Err(Status::unavailable("the state manager engine has stopped")),
            };
            let done = item.is_err();
            Some((item, (subscription, shutdown, done)))
        },
    ))
}

#[tonic::async_trait]
impl StateManagerConnection for StateManagerService {
    async fn send_state_change(
        &self,
        request: Request<sm::StateChange>,
    ) -> Result<Response<sm::StateChangeResponse>, Status> {
        let within = caller_deadline(request.metadata());
        let (_, extensions, message) = request.into_parts();
        let mut request = convert::state_change_request(message);
        debug!(
            name = %request.name.escape_debug(),
            target = %request.target_state.escape_debug(),
            "state change requested"
        );
        let resource = access::change_resource(&request);
        let peer = PeerCertificate::in_extensions(&extensions);
        let caller = match self.authorize_change(peer, &mut request.source, &resource) {
            Ok(caller) => caller,
            Err(denial) => {
                return Ok(Response::new(convert::state_change_response(
                    denial.change_answer(request.transition_id),
                    engine::wall_clock_ns(),
                )));
            }
        };
        let answer = self
            .engine()
            .change_state_by(request, caller.clone(), within)
            .await;
        self.audit_change(caller.as_ref(), &resource, &answer);
        Ok(Response::new(convert::state_change_response(
            answer,
            engine::wall_clock_ns(),
        )))
    }

    async fn send_changed_container_list(
        &self,
        request: Request<ms::ContainerList>,
    ) -> Result<Response<ms::SendContainerListResponse>, Status> {
        // Served by `crate::lean` in `serve`; this path remains for callers
        // of the generated server.
        let within = caller_deadline(request.metadata());
        self.authorize_report(&request, &request.get_ref().node_name)?;
        self.report(convert::node_report(request.into_inner()), within)
            .await
    }

    async fn send_action(
        &self,
        request: Request<sm::Action>,
    ) -> Result<Response<sm::Response>, Status> {
        // Legacy: Pullpiri only logs it.
        self.gate(&request, "SendAction", MethodClass::Read, "")?;
        let action = request.into_inner().action;
        info!(action = %action.escape_debug(), "legacy SendAction received");
        Ok(Response::new(sm::Response {
            resp: format!("action '{}' received", action.escape_debug()),
        }))
    }

    async fn trigger_offloading(
        &self,
        request: Request<sm::OffloadingRequest>,
    ) -> Result<Response<sm::OffloadingResponse>, Status> {
        let resource = format!("package/{}", request.get_ref().package_name);
        self.gate(
            &request,
            "TriggerOffloading",
            MethodClass::Offload,
            &resource,
        )?;
        let request = convert::offload_request(request.into_inner());
        let result = self.engine().offload(request).await;
        convert::offloading_response(result).map(Response::new)
    }

    async fn get_resource_state(
        &self,
        request: Request<sm::ResourceStateRequest>,
    ) -> Result<Response<sm::ResourceStateResponse>, Status> {
        let deadline = caller_deadline(request.metadata()).map(|d| tokio::time::Instant::now() + d);
        let resource = request.get_ref().resource_name.clone();
        self.gate(&request, "GetResourceState", MethodClass::Read, &resource)?;
        let request = request.into_inner();
        let kind = convert::query_kind(request.resource_type)?;
        convert::query_name(&request.resource_name)?;
        let view = match self.engine().get_state(kind, &request.resource_name).await {
            Ok(view) => view,
            Err(engine::EngineError::NotFound(_)) => None,
            Err(error) => return Err(convert::engine_status(&error)),
        };
        Ok(Response::new(match view {
            Some(view) => {
                // RECOVERY.md §8: health, incident and tracker figures; the
                // state is served without them when they do not come in time.
                let mut state = convert::resource_state(view);
                self.add_health(&mut state, kind, deadline).await;
                sm::ResourceStateResponse {
                    resource_state: Some(state),
                    success: true,
                    message: String::new(),
                }
            }
            None => sm::ResourceStateResponse {
                resource_state: None,
                success: false,
                message: format!("{kind} '{}' not found", request.resource_name),
            },
        }))
    }

    async fn list_resources_by_state(
        &self,
        request: Request<sm::ListResourcesByStateRequest>,
    ) -> Result<Response<sm::ListResourcesByStateResponse>, Status> {
        self.gate(&request, "ListResourcesByState", MethodClass::Read, "")?;
        let request = request.into_inner();
        let kind = convert::query_kind(request.resource_type)?;
        let limit = convert::limit(request.limit, "limit")?;
        // Empty: every state. Anything else must be a state name (blanks are not).
        let state = (!request.state.is_empty()).then_some(request.state.as_str());
        let labelled = !request.label_selector.is_empty();
        // The engine does not know labels: with a selector, filter here and
        // apply the limit afterwards.
        let engine_limit = if labelled { 0 } else { limit };
        let (views, total) = self
            .engine()
            .list(kind, state, engine_limit)
            .await
            .map_err(|error| convert::engine_status(&error))?;
        let (resources, total) = if labelled {
            let selected: Vec<_> = views
                .into_iter()
                .filter(|view| convert::matches_labels(view, &request.label_selector))
                .collect();
            let total = selected.len();
            let kept = if limit == 0 { total } else { limit.min(total) };
            (selected.into_iter().take(kept).collect::<Vec<_>>(), total)
        } else {
            (views, total)
        };
        Ok(Response::new(sm::ListResourcesByStateResponse {
            resources: resources.into_iter().map(convert::resource_state).collect(),
            success: true,
            message: String::new(),
            total_count: i32::try_from(total).unwrap_or(i32::MAX),
        }))
    }

    async fn get_resource_state_history(
        &self,
        request: Request<sm::ResourceStateHistoryRequest>,
    ) -> Result<Response<sm::ResourceStateHistoryResponse>, Status> {
        let resource = request.get_ref().resource_name.clone();
        self.gate(
            &request,
            "GetResourceStateHistory",
            MethodClass::Read,
            &resource,
        )?;
        let request = request.into_inner();
        let kind = convert::query_kind(request.resource_type)?;
        convert::query_name(&request.resource_name)?;
        let query = convert::history_query(&request)?;
        match self
            .engine()
            .history(kind, &request.resource_name, query)
            .await
        {
            // No history: say "not found" when the name is also known nowhere.
            Ok(entries)
                if entries.is_empty()
                    && matches!(
                        self.engine().get_state(kind, &request.resource_name).await,
                        Ok(None) | Err(engine::EngineError::NotFound(_))
                    ) =>
            {
                Ok(Response::new(sm::ResourceStateHistoryResponse {
                    history: Vec::new(),
                    success: false,
                    message: format!("{kind} '{}' not found", request.resource_name),
                }))
            }
            Ok(entries) => Ok(Response::new(sm::ResourceStateHistoryResponse {
                history: entries
                    .into_iter()
                    .map(convert::transition_history)
                    .collect(),
                success: true,
                message: String::new(),
            })),
            Err(engine::EngineError::NotFound(what)) => {
                Ok(Response::new(sm::ResourceStateHistoryResponse {
                    history: Vec::new(),
                    success: false,
                    message: format!("{kind} '{}' not found: {what}", request.resource_name),
                }))
            }
            Err(error) => Err(convert::engine_status(&error)),
        }
    }

    async fn force_synchronization(
        &self,
        request: Request<sm::ForceSynchronizationRequest>,
    ) -> Result<Response<sm::ForceSynchronizationResponse>, Status> {
        self.force_synchronization_call(request).await
    }

    async fn trigger_recovery(
        &self,
        request: Request<sm::TriggerRecoveryRequest>,
    ) -> Result<Response<sm::RecoveryResponse>, Status> {
        self.trigger_recovery_call(request).await
    }

    async fn abort_recovery(
        &self,
        request: Request<sm::AbortRecoveryRequest>,
    ) -> Result<Response<sm::RecoveryResponse>, Status> {
        self.abort_recovery_call(request).await
    }

    async fn get_recovery_status(
        &self,
        request: Request<sm::RecoveryStatusRequest>,
    ) -> Result<Response<sm::RecoveryStatusResponse>, Status> {
        self.get_recovery_status_call(request).await
    }

    async fn acknowledge_alert(
        &self,
        request: Request<sm::AcknowledgeAlertRequest>,
    ) -> Result<Response<sm::AlertResponse>, Status> {
        self.acknowledge_alert_call(request).await
    }

    async fn get_pending_alerts(
        &self,
        request: Request<sm::GetPendingAlertsRequest>,
    ) -> Result<Response<sm::GetPendingAlertsResponse>, Status> {
        self.get_pending_alerts_call(request).await
    }

    async fn send_state_diff(
        &self,
        request: Request<sm::StateDiff>,
    ) -> Result<Response<sm::StateDiffResponse>, Status> {
        self.send_state_diff_call(request).await
    }

    type SubscribeToStateChangesStream = EventStream;

    async fn subscribe_to_state_changes(
        &self,
        request: Request<sm::StateChangeSubscriptionRequest>,
    ) -> Result<Response<Self::SubscribeToStateChangesStream>, Status> {
        self.gate(&request, "SubscribeToStateChanges", MethodClass::Read, "")?;
        let filter = convert::event_filter(request.get_ref())?;
        // WIRE-PROTOCOL: registered before the response headers are sent, so
        // every change committed after the client has them is delivered.
        let subscription = self.engine().subscribe(filter);
        Ok(Response::new(event_stream(
            subscription,
            self.shutdown.clone(),
        )))
    }
}

/// How [`serve`] runs the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOptions {
    /// The largest request decoded (default 4 MiB).
    pub max_message_bytes: usize,
    /// Requests handled at once per connection (default 256).
    pub concurrency_per_connection: usize,
    /// HTTP/2 streams open at once per connection (default 1024).
    pub max_concurrent_streams: u32,
    /// How often an idle connection is pinged (default 30 s).
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed (default 10 s).
    pub keepalive_timeout: Duration,
    /// The longest a unary request may take (default 30 s); clients may ask
    /// for less with `grpc-timeout`.
    pub request_timeout: Duration,
    /// TLS, or mutual TLS when it has a client CA (default none: plaintext).
    /// Its certificates may be reloaded while the server runs
    /// ([`ServerTls::reload`](crate::tls::ServerTls::reload)).
    pub tls: Option<crate::tls::ServerTls>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            concurrency_per_connection: 256,
            max_concurrent_streams: 1024,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            tls: None,
        }
    }
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The reflection service could not be built from the descriptor set.
    #[error("building the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The listening address could not be read.
    #[error("reading the listening address: {0}")]
    Address(#[source] std::io::Error),
    /// The server failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves `statemanager.StateManagerConnection` over `engine`, plus
/// `grpc.health.v1.Health` (SERVING for the service and the server) and
/// gRPC reflection (v1 and v1alpha), on `listener` until `shutdown`
/// completes. At shutdown the health status turns NOT_SERVING, open
/// subscriptions end with `Unavailable`, and in-flight requests are drained.
///
/// With [`ServeOptions::tls`], connections are TLS ([`crate::tls::incoming`]):
/// a failed or slow handshake drops only that connection, and with mutual TLS
/// every request carries the caller's certificate ([`crate::PeerCertificate`]).
pub async fn serve<F>(
    engine: EngineHandle,
    listener: TcpListener,
    options: ServeOptions,
    shutdown: F,
) -> Result<(), ServeError>
where
    F: Future<Output = ()> + Send,
{
    let (_, no_leader) = watch::channel(None);
    serve_member(engine.into(), no_leader, listener, options, shutdown).await
}

/// [`serve`] for a member of an HA group: requests are answered by the
/// engine `engines` holds at the time, and while `routes` names a leader
/// the methods it does not answer itself go there ([`crate::forward`]).
pub async fn serve_member<F>(
    engines: Engines,
    routes: crate::forward::Routes,
    listener: TcpListener,
    options: ServeOptions,
    shutdown: F,
) -> Result<(), ServeError>
where
    F: Future<Output = ()> + Send,
{
    let address: SocketAddr = listener.local_addr().map_err(ServeError::Address)?;
    let (stop_streams, stopping) = watch::channel(false);
    let forward = crate::forward::ForwardLayer {
        routes,
        engines: engines.clone(),
    };
    let service = StateManagerService::with_shutdown(engines, stopping)
        .into_server(options.max_message_bytes);

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<StateManagerConnectionServer<StateManagerService>>()
        .await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let stopped = async move {
        shutdown.await;
        info!(%address, "gRPC server shutting down");
        health
            .set_not_serving::<StateManagerConnectionServer<StateManagerService>>()
            .await;
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        let _ = stop_streams.send(true);
    };

    let tls_mode = match &options.tls {
        None => "off",
        Some(tls) if tls.client_auth() => "mutual",
        Some(_) => "server",
    };
    info!(%address, tls = tls_mode, "gRPC server listening");
    let router = tonic::transport::Server::builder()
        .concurrency_limit_per_connection(options.concurrency_per_connection)
        .max_concurrent_streams(options.max_concurrent_streams)
        .http2_keepalive_interval(Some(options.keepalive_interval))
        .http2_keepalive_timeout(Some(options.keepalive_timeout))
        .timeout(options.request_timeout)
        .layer(forward)
        .add_service(service)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    match options.tls {
        // The builder's tcp_nodelay/tcp_keepalive apply only to listeners it
        // binds itself; without NODELAY a small answer waits for the peer's
        // delayed ACK (40 ms on Linux).
        None => {
            router
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(listener)
                        .with_nodelay(Some(true))
                        .with_keepalive(Some(Duration::from_secs(60))),
                    stopped,
                )
                .await?
        }
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(crate::tls::incoming(listener, tls), stopped)
                .await?
        }
    }
    info!(%address, "gRPC server stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_as_the_protocol_defines_them() {
        let cases = [
            ("10S", Some(Duration::from_secs(10))),
            ("1H", Some(Duration::from_secs(3600))),
            ("2M", Some(Duration::from_secs(120))),
            ("250m", Some(Duration::from_millis(250))),
            ("99999999u", Some(Duration::from_micros(99_999_999))),
            ("5n", Some(Duration::from_nanos(5))),
            ("123456789S", None),
            ("S", None),
            ("10", None),
            ("10s", None),
            ("-1S", None),
            ("1.5S", None),
            ("", None),
            ("10é", None),
        ];
        for (value, expected) in cases {
            assert_eq!(parse_grpc_timeout(value), expected, "{value:?}");
        }
    }

    #[test]
    fn the_engine_gets_the_callers_deadline_less_a_margin() {
        let mut metadata = tonic::metadata::MetadataMap::new();
        assert_eq!(caller_deadline(&metadata), None);
        metadata.insert("grpc-timeout", "10S".parse().unwrap());
        assert_eq!(
            caller_deadline(&metadata),
            Some(Duration::from_millis(9950))
        );
        metadata.insert("grpc-timeout", "100m".parse().unwrap());
        assert_eq!(caller_deadline(&metadata), Some(Duration::from_millis(90)));
        metadata.insert("grpc-timeout", "soon".parse().unwrap());
        assert_eq!(caller_deadline(&metadata), None);
    }
}
