//! The ActionController client: the engine's [`ActionPort`] over gRPC.
//!
//! The channel connects lazily and reconnects by itself, so the StateManager
//! starts (and keeps running) while the ActionController is down. Every call
//! is bounded by a connect timeout and a request timeout; a down or wedged
//! ActionController is [`ActionError::Unavailable`] quickly (the engine's
//! outbox retries), never a panic or a hang.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use engine::{ActionError, ActionPort, OffloadAnswer, OffloadRequest, ReconcileRequest};
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, warn};

use crate::convert;
use crate::proto::actioncontroller::action_controller_connection_client::ActionControllerConnectionClient;
use crate::tls::{self, ClientTls, TlsError};

/// Timeouts and keepalive of the ActionController channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionControllerOptions {
    /// How long establishing a connection may take (default 1 s).
    pub connect_timeout: Duration,
    /// How long one call may take, connecting included (default 5 s).
    pub request_timeout: Duration,
    /// How often an idle connection is pinged (default 30 s).
    pub keepalive_interval: Duration,
    /// TLS settings for an `https://` address (default none). The server is
    /// verified with `ca`; `cert` and `key` authenticate the StateManager
    /// (mutual TLS). Ignored, with a warning, for an `http://` address.
    pub tls: Option<ClientTls>,
}

impl Default for ActionControllerOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(30),
            tls: None,
        }
    }
}

/// Why an ActionController client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ActionClientError {
    /// The address is not a valid URI (e.g. `http://127.0.0.1:47001`).
    #[error("invalid ActionController address '{address}': {source}")]
    InvalidAddress {
        /// The address given.
        address: String,
        /// Why it is invalid.
        #[source]
        source: tonic::transport::Error,
    },
    /// The TLS settings cannot be used (a file is missing or wrong).
    #[error("TLS settings for the ActionController at '{address}': {source}")]
    Tls {
        /// The address given.
        address: String,
        /// What is wrong.
        #[source]
        source: TlsError,
    },
}

/// The ActionController, as the engine's [`ActionPort`]. Cheap to clone:
/// clones share one HTTP/2 connection.
#[derive(Debug, Clone)]
pub struct ActionControllerClient {
    client: ActionControllerConnectionClient<Channel>,
    address: String,
    request_timeout: Duration,
}

impl ActionControllerClient {
    /// A client of the ActionController at `address`
    /// (`http://host:port`, or `https://host:port` with
    /// [`ActionControllerOptions::tls`]). Nothing is connected yet: the first call
    /// connects, and a failed connection is retried by later calls. Must be
    /// called inside a tokio runtime (the channel runs a background task).
    pub fn new(
        address: &str,
        options: &ActionControllerOptions,
    ) -> Result<Self, ActionClientError> {
        let invalid = |source| ActionClientError::InvalidAddress {
            address: address.to_owned(),
            source,
        };
        let endpoint = Endpoint::from_shared(address.to_owned())
            .map_err(invalid)?
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(options.keepalive_interval)
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(false);
        let endpoint = if tls::is_https(address) {
            let config = options
                .tls
                .clone()
                .unwrap_or_default()
                .tonic_config(address, options.connect_timeout)
                .map_err(|source| ActionClientError::Tls {
                    address: address.to_owned(),
                    source,
                })?;
            endpoint.tls_config(config).map_err(invalid)?
        } else {
            if options.tls.is_some() {
                warn!(%address, "TLS settings ignored: the ActionController address is not https://");
            }
            endpoint
        };
        Ok(Self {
            client: ActionControllerConnectionClient::new(endpoint.connect_lazy()),
            address: address.to_owned(),
            request_timeout: options.request_timeout,
        })
    }

    /// The address the client calls.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Runs one call under the request timeout (the channel has one too;
    /// this also bounds waiting for the channel to become ready).
    async fn bounded<T>(
        &self,
        method: &str,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, ActionError> {
        match tokio::time::timeout(self.request_timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => {
                debug!(address = %self.address, method, %status, "ActionController call failed");
                Err(convert::action_error(&status))
            }
            Err(_) => Err(ActionError::Unavailable(format!(
                "{method} to '{}' got no answer within {:?}",
                self.address, self.request_timeout
            ))),
        }
    }
}

#[async_trait]
impl ActionPort for ActionControllerClient {
    async fn reconcile(&self, request: ReconcileRequest) -> Result<(), ActionError> {
        let mut message = tonic::Request::new(convert::reconcile_message(&request));
        message.set_timeout(self.request_timeout);
        let mut client = self.client.clone();
        let response = self.bounded("Reconcile", client.reconcile(message)).await?;
        convert::reconcile_outcome(response)
    }

    async fn trigger_action(&self, scenario: &str) -> Result<(), ActionError> {
        let mut message =
            tonic::Request::new(crate::proto::actioncontroller::TriggerActionRequest {
                scenario_name: scenario.to_owned(),
            });
        message.set_timeout(self.request_timeout);
        let mut client = self.client.clone();
        let response = self
            .bounded("TriggerAction", client.trigger_action(message))
            .await?;
        convert::trigger_action_outcome(response)
    }

    async fn offload(&self, request: OffloadRequest) -> Result<OffloadAnswer, ActionError> {
        let mut message = tonic::Request::new(convert::offload_model_request(request));
        message.set_timeout(self.request_timeout);
        let mut client = self.client.clone();
        let response = self
            .bounded("OffloadModel", client.offload_model(message))
            .await?;
        Ok(convert::offload_answer(response))
    }
}
