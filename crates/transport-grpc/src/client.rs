//! A typed client of the StateManager for other PICCOLO components (and
//! `smctl`): engine types in, engine types out, over the generated client.
//!
//! ```no_run
//! # async fn example() -> Result<(), transport_grpc::ClientError> {
//! use statemachine_core::ResourceKind;
//! let client = transport_grpc::StateManagerClient::connect("http://127.0.0.1:47006").await?;
//! let answer = client
//!     .send_state_change(ResourceKind::Scenario, "parking", "idle", "waiting", "FilterGateway")
//!     .await?;
//! println!("{}: {}", answer.code, answer.message);
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::time::Duration;

use engine::{AlertPage, AlertQuery, DiffAnswer, HealthView, IncidentRef, RecoveryAnswer};
use engine::{ChangeAnswer, HistoryQuery, ResourceView};
use engine::{Delivery, EventFilter};
use engine::{RecoveryView, SyncAnswer, TriggerRequest};
use futures::{Stream, StreamExt};
use statemachine_core::alert::Alert;
use statemachine_core::healing::StateDiff;
use statemachine_core::record::HistoryEntry;
use statemachine_core::{
    ErrorCode, ReportedContainer, RequestKind, ResourceKind, StateChangeRequest,
};
use tonic::transport::{Channel, Endpoint};
use tracing::warn;

use crate::convert::{self, ConvertError};
use crate::proto::monitoringserver as ms;
use crate::proto::statemanager as sm;
use crate::proto::statemanager::state_manager_connection_client::StateManagerConnectionClient;
use crate::server::DEFAULT_MAX_MESSAGE_BYTES;
use crate::tls::{self, ClientTls, TlsError};

/// Why a StateManager call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint is not a valid URI.
    #[error("invalid StateManager endpoint '{endpoint}': {source}")]
    InvalidEndpoint {
        /// The endpoint given.
        endpoint: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// No connection could be made.
    #[error("cannot connect to the StateManager at '{endpoint}': {source}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The StateManager answered with a gRPC error.
    #[error("StateManager answered {}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    /// No answer within the client's timeout.
    #[error("no answer from the StateManager within {0:?}")]
    Timeout(Duration),
    /// The StateManager answered `success = false`.
    #[error("StateManager refused: {0}")]
    Refused(String),
    /// The StateManager answered with an error code in its response
    /// (`ForceSynchronization`, like `SendStateChange`, answers every
    /// outcome in it).
    #[error("StateManager answered {code}: {message}")]
    Failed {
        /// The wire error code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// The answer could not be read.
    #[error(transparent)]
    Malformed(#[from] ConvertError),
    /// The TLS settings cannot be used (a file is missing or wrong).
    #[error("TLS settings for the StateManager at '{endpoint}': {source}")]
    Tls {
        /// The endpoint.
        endpoint: String,
        /// What is wrong.
        #[source]
        source: TlsError,
    },
}

impl ClientError {
    /// The wire error code this failure stands for.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            ClientError::InvalidEndpoint { .. } | ClientError::Tls { .. } => {
                ErrorCode::InvalidRequest
            }
            ClientError::Connect { .. } => ErrorCode::ResourceUnavailable,
            ClientError::Status(status) => convert::error_code_for_status(status.code()),
            ClientError::Timeout(_) => ErrorCode::Timeout,
            ClientError::Refused(_) => ErrorCode::Unspecified,
            ClientError::Failed { code, .. } => *code,
            ClientError::Malformed(_) => ErrorCode::InternalError,
        }
    }
}

/// A client of the StateManager. Cheap to clone: clones share one HTTP/2
/// connection, which reconnects by itself.
#[derive(Debug, Clone)]
pub struct StateManagerClient {
    client: StateManagerConnectionClient<Channel>,
    timeout: Duration,
}

/// The default per-call timeout of [`StateManagerClient`].
pub const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest answer read (a listing of many resources may be large).
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// The endpoint at `address`; TLS per `tls` (with no settings, only a
/// plaintext `http://` address works).
fn endpoint(address: &str, tls: Option<&ClientTls>) -> Result<Endpoint, ClientError> {
    let invalid = |source| ClientError::InvalidEndpoint {
        endpoint: address.to_owned(),
        source,
    };
    let endpoint = Endpoint::from_shared(address.to_owned())
        .map_err(invalid)?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    if !tls::is_https(address) {
        if tls.is_some() {
            warn!(endpoint = %address, "TLS settings ignored: the StateManager address is not https://");
        }
        return Ok(endpoint);
    }
    let config = tls
        .unwrap_or(&ClientTls::default())
        .tonic_config(address, CONNECT_TIMEOUT)
        .map_err(|source| ClientError::Tls {
            endpoint: address.to_owned(),
            source,
        })?;
    endpoint.tls_config(config).map_err(invalid)
}

/// A channel to `address` that connects on its first call (inside a tokio
/// runtime), over TLS per `tls` for an `https://` address.
pub fn lazy_channel(address: &str, tls: Option<&ClientTls>) -> Result<Channel, ClientError> {
    Ok(endpoint(address, tls)?.connect_lazy())
}

impl StateManagerClient {
    /// Connects to the StateManager at `endpoint` (`http://host:port`),
    /// failing within a few seconds when it cannot be reached.
    pub async fn connect(endpoint: &str) -> Result<Self, ClientError> {
        Self::connect_endpoint(endpoint, None).await
    }

    /// Connects to the StateManager at `endpoint` (`https://host:port`)
    /// over TLS: the server is verified with `tls.ca`, and `tls.cert` and
    /// `tls.key`, when given, authenticate this client (mutual TLS). The
    /// settings are ignored (with a warning) for an `http://` endpoint.
    pub async fn connect_with_tls(endpoint: &str, tls: &ClientTls) -> Result<Self, ClientError> {
        Self::connect_endpoint(endpoint, Some(tls)).await
    }

    async fn connect_endpoint(
        endpoint: &str,
        tls: Option<&ClientTls>,
    ) -> Result<Self, ClientError> {
        let channel = self::endpoint(endpoint, tls)?
            .connect()
            .await
            .map_err(|source| ClientError::Connect {
                endpoint: endpoint.to_owned(),
                source,
            })?;
        Ok(Self::from_channel(channel))
    }

    /// A client that connects on its first call (inside a tokio runtime).
    pub fn connect_lazy(endpoint: &str) -> Result<Self, ClientError> {
        Ok(Self::from_channel(lazy_channel(endpoint, None)?))
    }

    /// As [`connect_lazy`](Self::connect_lazy), over TLS as
    /// [`connect_with_tls`](Self::connect_with_tls) describes (the files
    /// are read and checked now).
    pub fn connect_lazy_with_tls(endpoint: &str, tls: &ClientTls) -> Result<Self, ClientError> {
        Ok(Self::from_channel(lazy_channel(endpoint, Some(tls))?))
    }

    /// A client over an existing channel.
    pub fn from_channel(channel: Channel) -> Self {
        Self {
            client: StateManagerConnectionClient::new(channel)
                .max_decoding_message_size(MAX_ANSWER_BYTES)
                .max_encoding_message_size(DEFAULT_MAX_MESSAGE_BYTES),
            timeout: DEFAULT_CLIENT_TIMEOUT,
        }
    }

    /// The same client with another per-call timeout (sent as
    /// `grpc-timeout`, so the server gives up too).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The generated client, for calls this type does not wrap.
    pub fn raw(&self) -> StateManagerConnectionClient<Channel> {
        self.client.clone()
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        request
    }

    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, ClientError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(ClientError::Status(status)),
            Err(_) => Err(ClientError::Timeout(self.timeout)),
        }
    }

    /// Asks for a state change of a scenario, package or model. States may
    /// be spelled `waiting`, `Waiting` or `SCENARIO_STATE_WAITING`; `current`
    /// may be empty. The answer's code is SUCCESS once the change is durable.
    pub async fn send_state_change(
        &self,
        kind: ResourceKind,
        name: &str,
        current: &str,
        target: &str,
        source: &str,
    ) -> Result<ChangeAnswer, ClientError> {
        let kind = match kind {
            ResourceKind::Scenario => RequestKind::Scenario,
            ResourceKind::Package => RequestKind::Package,
            ResourceKind::Model => RequestKind::Model,
            ResourceKind::Container => RequestKind::Unspecified,
        };
        self.send_state_change_request(StateChangeRequest {
            kind,
            name: name.to_owned(),
            current_state: current.to_owned(),
            target_state: target.to_owned(),
            transition_id: String::new(),
            source: source.to_owned(),
        })
        .await
    }

    /// Sends a state change request as given (any resource type number,
    /// a transition id of the caller's choosing).
    pub async fn send_state_change_request(
        &self,
        request: StateChangeRequest,
    ) -> Result<ChangeAnswer, ClientError> {
        let message = self.request(convert::state_change_message(
            request,
            engine::wall_clock_ns(),
        ));
        let mut client = self.client.clone();
        let response = self.bounded(client.send_state_change(message)).await?;
        Ok(convert::change_answer(response))
    }

    /// Sends a node's full container list; answers with the server's
    /// account of what happened. A refused report is
    /// `ClientError::Status(InvalidArgument)`.
    pub async fn report_containers(
        &self,
        node: &str,
        containers: Vec<ReportedContainer>,
    ) -> Result<String, ClientError> {
        let message = self.request(ms::ContainerList {
            node_name: node.to_owned(),
            containers: containers
                .into_iter()
                .map(convert::container_info)
                .collect(),
        });
        let mut client = self.client.clone();
        let response = self
            .bounded(client.send_changed_container_list(message))
            .await?;
        Ok(response.resp)
    }

    /// The state of a resource; `None` when the name is known nowhere.
    pub async fn get_state(
        &self,
        kind: ResourceKind,
        name: &str,
    ) -> Result<Option<ResourceView>, ClientError> {
        Ok(self
            .get_state_with_health(kind, name)
            .await?
            .map(|(view, _)| view))
    }

    /// The state of a resource with its health (RECOVERY.md §8): the
    /// health checks, the incident, tracker and alert figures (also in the
    /// view's metadata) and the desired state. The health is `None` when
    /// the server could not tell it in time; the whole answer `None` when
    /// the name is known nowhere.
    pub async fn get_state_with_health(
        &self,
        kind: ResourceKind,
        name: &str,
    ) -> Result<Option<(ResourceView, Option<HealthView>)>, ClientError> {
        let message = self.request(sm::ResourceStateRequest {
            resource_type: convert::resource_type(kind) as i32,
            resource_name: name.to_owned(),
        });
        let mut client = self.client.clone();
        let response = self.bounded(client.get_resource_state(message)).await?;
        match (response.success, response.resource_state) {
            (true, Some(state)) => {
                let health = convert::health_view(&state);
                Ok(Some((convert::resource_view(state)?, health)))
            }
            (true, None) => Err(ConvertError("success without a resource_state".into()).into()),
            (false, _) => Ok(None),
        }
    }

    /// The resources of a kind, optionally only those in `state`, sorted by
    /// name; at most `limit` (0: all) and the total count.
    pub async fn list(
        &self,
        kind: ResourceKind,
        state: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ResourceView>, usize), ClientError> {
        let message = self.request(sm::ListResourcesByStateRequest {
            resource_type: convert::resource_type(kind) as i32,
            state: state.unwrap_or_default().to_owned(),
            label_selector: Default::default(),
            limit: i32::try_from(limit).unwrap_or(i32::MAX),
        });
        let mut client = self.client.clone();
        let response = self
            .bounded(client.list_resources_by_state(message))
            .await?;
        if !response.success {
            return Err(ClientError::Refused(response.message));
        }
        let views = response
            .resources
            .into_iter()
            .map(convert::resource_view)
            .collect::<Result<Vec<_>, _>>()?;
        let total = usize::try_from(response.total_count).unwrap_or(0);
        Ok((views, total))
    }

    /// A resource's transition history, oldest first.
    pub async fn history(
        &self,
        kind: ResourceKind,
        name: &str,
        query: HistoryQuery,
    ) -> Result<Vec<HistoryEntry>, ClientError> {
        let message = self.request(convert::history_request(kind, name, &query));
        let mut client = self.client.clone();
        let response = self
            .bounded(client.get_resource_state_history(message))
            .await?;
        if !response.success {
            return Err(ClientError::Refused(response.message));
        }
        Ok(response
            .history
            .into_iter()
            .map(convert::history_entry)
            .collect())
    }

    /// Re-derives a resource (with `deep`, what is under it too) from the
    /// latest node reports and definitions, commits what differs and
    /// answers what changed. An error code in the answer is
    /// [`ClientError::Failed`].
    pub async fn force_sync(
        &self,
        kind: ResourceKind,
        name: &str,
        deep: bool,
    ) -> Result<SyncAnswer, ClientError> {
        let message = self.request(convert::sync_message(kind, name, deep));
        let mut client = self.client.clone();
        let response = self.bounded(client.force_synchronization(message)).await?;
        convert::sync_answer(response)
            .map_err(|(code, message)| ClientError::Failed { code, message })
    }

    /// Opens a manual recovery incident for a package or model (or joins
    /// its open one; `force` replaces it). A resource known nowhere is
    /// [`ClientError::Refused`].
    pub async fn trigger_recovery(
        &self,
        request: &TriggerRequest,
    ) -> Result<RecoveryAnswer, ClientError> {
        let message = self.request(convert::trigger_message(request));
        let mut client = self.client.clone();
        let response = self.bounded(client.trigger_recovery(message)).await?;
        convert::recovery_answer(response)?.map_err(ClientError::Refused)
    }

    /// Ends an incident Aborted (`reason` for the record). An unknown
    /// incident is [`ClientError::Refused`].
    pub async fn abort_recovery(
        &self,
        target: &IncidentRef,
        reason: &str,
    ) -> Result<RecoveryAnswer, ClientError> {
        let message = self.request(convert::abort_message(target, reason));
        let mut client = self.client.clone();
        let response = self.bounded(client.abort_recovery(message)).await?;
        convert::recovery_answer(response)?.map_err(ClientError::Refused)
    }

    /// An incident, open or ended; `None` when there is none.
    pub async fn recovery_status(
        &self,
        target: &IncidentRef,
    ) -> Result<Option<RecoveryView>, ClientError> {
        let message = self.request(convert::status_message(target));
        let mut client = self.client.clone();
        let response = self.bounded(client.get_recovery_status(message)).await?;
        match (response.success, response.status) {
            (true, Some(status)) => Ok(Some(convert::recovery_view(status)?)),
            (true, None) => Err(ConvertError("success without a recovery status".into()).into()),
            (false, _) => Ok(None),
        }
    }

    /// The Active and Acknowledged alerts the query selects, newest first,
    /// and how many matched before its limit.
    pub async fn pending_alerts(&self, query: &AlertQuery) -> Result<AlertPage, ClientError> {
        let message = self.request(convert::alert_query_message(query));
        let mut client = self.client.clone();
        let response = self.bounded(client.get_pending_alerts(message)).await?;
        if !response.success {
            return Err(ClientError::Refused(response.message));
        }
        Ok(convert::alert_page(response)?)
    }

    /// Acknowledges an alert (`by`: who; `message`: why) and answers it as
    /// acknowledged. An unknown alert is [`ClientError::Refused`].
    pub async fn acknowledge_alert(
        &self,
        id: &str,
        by: &str,
        message: &str,
    ) -> Result<Alert, ClientError> {
        let request = self.request(sm::AcknowledgeAlertRequest {
            alert_id: id.to_owned(),
            acknowledged_by: by.to_owned(),
            acknowledgment_message: message.to_owned(),
        });
        let mut client = self.client.clone();
        let response = self.bounded(client.acknowledge_alert(request)).await?;
        if !response.success {
            return Err(ClientError::Refused(response.message));
        }
        let alert = response
            .alert
            .ok_or_else(|| ConvertError("success without the alert".into()))?;
        Ok(convert::alert(alert)?)
    }

    /// Sends a state diff: the answer carries the plan and the incident
    /// that runs it, or why nothing needs doing. A resource known nowhere
    /// is [`ClientError::Refused`].
    pub async fn send_state_diff(&self, diff: &StateDiff) -> Result<DiffAnswer, ClientError> {
        let message = self.request(convert::state_diff_message(diff));
        let mut client = self.client.clone();
        let response = self.bounded(client.send_state_diff(message)).await?;
        convert::diff_answer(response)?.map_err(ClientError::Refused)
    }

    /// Subscribes to state changes (and, as the filter asks, recovery and
    /// health events). When this returns the subscription is active: every
    /// change committed afterwards is delivered. The stream ends when the
    /// server ends it; dropping it unsubscribes.
    pub async fn subscribe(
        &self,
        filter: &EventFilter,
    ) -> Result<impl Stream<Item = Result<Delivery, ClientError>> + Send + use<>, ClientError> {
        // No grpc-timeout: it would end the stream. Only the wait for the
        // response headers is bounded.
        let message = tonic::Request::new(convert::subscription_request(filter));
        let mut client = self.client.clone();
        let stream = self
            .bounded(client.subscribe_to_state_changes(message))
            .await?;
        Ok(stream.map(|item| match item {
            Ok(event) => convert::delivery(event).map_err(ClientError::from),
            Err(status) => Err(ClientError::Status(status)),
        }))
    }
}
