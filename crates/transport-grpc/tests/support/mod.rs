//! Fixtures for the gRPC tests: the in-test ActionController
//! (`transport_grpc::testing`), and a StateManager served over gRPC on the
//! engine with a `MemoryStore`.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::{Engine, EngineConfig};
use state_store::{Batch, MemoryStore, StateStore};
use statemachine_core::ResourceKind;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use transport_grpc::proto::monitoringserver as ms;
use transport_grpc::proto::statemanager::state_manager_connection_client::StateManagerConnectionClient;
use transport_grpc::{
    ActionControllerClient, ActionControllerOptions, ServeError, ServeOptions, StateManagerClient,
};

/// The in-test ActionController (shared with the daemon's end-to-end tests).
pub use transport_grpc::testing::ActionControllerDouble as ActionControllerServer;

/// An address where nothing listens (bound, then released).
pub async fn closed_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    drop(listener);
    format!("http://{address}")
}

/// Engine settings for tests: no grace period, fast retries, short deadlines.
pub fn config() -> EngineConfig {
    let mut config = EngineConfig::default();
    config.core.info_failure_grace = Duration::ZERO;
    config.commit_timeout = Duration::from_secs(2);
    config.recovery.base_backoff = Duration::from_millis(20);
    config.recovery.max_backoff = Duration::from_millis(100);
    config
}

pub fn action_options() -> ActionControllerOptions {
    ActionControllerOptions {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(1),
        ..ActionControllerOptions::default()
    }
}

/// A StateManager served over gRPC on 127.0.0.1:0.
pub struct StateManager {
    pub store: Arc<dyn StateStore>,
    pub url: String,
    pub client: StateManagerClient,
    pub raw: StateManagerConnectionClient<Channel>,
    engine: Option<Engine>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), ServeError>>>,
}

impl StateManager {
    /// Scenario `s1` -> package `p1` = {m1, m2} on node `n1`, an engine on a
    /// `MemoryStore` calling the ActionController at `action_controller`.
    pub async fn start(action_controller: &str) -> Self {
        Self::start_with(action_controller, config(), ServeOptions::default()).await
    }

    /// As [`StateManager::start`], with the given engine and server settings.
    pub async fn start_with(
        action_controller: &str,
        engine_config: EngineConfig,
        options: ServeOptions,
    ) -> Self {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::default());
        put(
            store.as_ref(),
            "Scenario/s1",
            "kind: Scenario\nmetadata:\n  name: s1\nspec:\n  target: p1\n",
        )
        .await;
        put(
            store.as_ref(),
            "Package/p1",
            "kind: Package\nmetadata:\n  name: p1\nspec:\n  models:\n    - name: m1\n      node: n1\n    - name: m2\n      node: n1\n",
        )
        .await;
        let action = ActionControllerClient::new(action_controller, &action_options())
            .expect("valid address");
        let engine = Engine::start(store.clone(), Arc::new(action), engine_config)
            .await
            .expect("engine starts");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(transport_grpc::serve(
            engine.handle(),
            listener,
            options,
            async {
                let _ = stopped.await;
            },
        ));
        let client = StateManagerClient::connect(&url)
            .await
            .expect("connects")
            .with_timeout(Duration::from_secs(5));
        let raw = client.raw();
        Self {
            store,
            url,
            client,
            raw,
            engine: Some(engine),
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// The engine's handle, to call the service without the network.
    pub fn handle(&self) -> engine::EngineHandle {
        self.engine.as_ref().expect("engine running").handle()
    }

    /// Asks the server to stop and waits (5 s at most) for `serve` to return.
    pub async fn stop_server(&mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let server = self.server.take().expect("server running");
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("serve returns within 5 s of shutdown")
            .expect("serve task does not panic")
    }

    pub async fn shutdown(mut self) {
        if self.server.is_some() {
            self.stop_server().await.expect("server stops cleanly");
        }
        if let Some(engine) = self.engine.take() {
            engine.shutdown().await;
        }
    }

    pub async fn value(&self, key: &str) -> Option<String> {
        self.store
            .get(key)
            .await
            .expect("get")
            .map(|kv| String::from_utf8(kv.value).expect("utf-8"))
    }

    /// Defines scenario `barrier` -> package `barrier` = {model `barrier` on
    /// node `barrier`} for [`StateManager::reconcile_barrier`], and waits
    /// (5 s at most) until the engine knows the package.
    pub async fn define_barrier(&self) {
        put(
            self.store.as_ref(),
            "Scenario/barrier",
            "kind: Scenario\nmetadata:\n  name: barrier\nspec:\n  target: barrier\n",
        )
        .await;
        put(
            self.store.as_ref(),
            "Package/barrier",
            "kind: Package\nmetadata:\n  name: barrier\nspec:\n  models:\n    - name: barrier\n      node: barrier\n",
        )
        .await;
        let started = Instant::now();
        while !matches!(
            self.handle()
                .get_state(ResourceKind::Package, "barrier")
                .await,
            Ok(Some(_))
        ) {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the engine did not learn the barrier's package within 5 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Returns once every Reconcile the engine was asked for before this
    /// call has reached `ac`: reports, over gRPC, the barrier's container
    /// dead, which drives package `barrier` into Error, and takes the
    /// barrier's Reconcile out of `ac`'s record (see
    /// [`ActionControllerServer::take_reconcile`]). A report is answered
    /// after the reconciles it causes are handed to the outbox worker, which
    /// delivers them in that order while the ActionController is up. Once
    /// per StateManager, after [`StateManager::define_barrier`].
    pub async fn reconcile_barrier(&self, ac: &ActionControllerServer) {
        self.raw
            .clone()
            .send_changed_container_list(ms::ContainerList {
                node_name: "barrier".into(),
                containers: vec![container("model-barrier", &[("Status", "dead")])],
            })
            .await
            .expect("the barrier's report is accepted");
        ac.take_reconcile("barrier", Duration::from_secs(5))
            .await
            .expect("the barrier's Reconcile arrives within 5 s");
    }
}

impl Drop for StateManager {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

pub async fn put(store: &dyn StateStore, key: &str, value: &str) {
    store
        .apply(Batch::new().put(key, value))
        .await
        .expect("put");
}

/// A podman-like container of model `m` (`model-{m}` naming).
pub fn container(
    name: &str,
    state: &[(&str, &str)],
) -> transport_grpc::proto::monitoringserver::ContainerInfo {
    transport_grpc::proto::monitoringserver::ContainerInfo {
        id: format!("id-{name}"),
        names: vec![format!("/{name}")],
        image: "registry.local/app:1".into(),
        state: state
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}
