//! Fixtures for the engine's behaviour tests: a recording ActionController,
//! the two stores, and small helpers.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use engine::{
    ActionError, ActionPort, Engine, EngineConfig, EngineHandle, OffloadAnswer, OffloadRequest,
    ReconcileRequest,
};
use state_store::{Batch, MemoryStore, StateStore};
use statemachine_core::{
    ErrorCode, NodeReport, ReportedContainer, RequestKind, StateChangeRequest,
};
use tokio::sync::Mutex;

/// An ActionController that records reconcile requests and can be down.
/// The reconciles of package [`BARRIER`] are recorded apart, in
/// `barriers`: they mark a point in the outbox, they are not the test's.
#[derive(Default)]
pub struct RecordingAction {
    pub reconciles: Mutex<Vec<ReconcileRequest>>,
    /// Every call in order: `Reconcile(scenario)`, `TriggerAction(scenario)`,
    /// `OffloadModel(model, source -> target)`.
    pub calls: std::sync::Mutex<Vec<String>>,
    pub down: AtomicBool,
    pub attempts: AtomicUsize,
    pub barriers: AtomicUsize,
}

#[async_trait]
impl ActionPort for RecordingAction {
    async fn reconcile(&self, request: ReconcileRequest) -> Result<(), ActionError> {
        if self.down.load(Ordering::SeqCst) {
            if request.package != BARRIER {
                self.attempts.fetch_add(1, Ordering::SeqCst);
            }
            return Err(ActionError::Unavailable("connection refused".into()));
        }
        if request.package == BARRIER {
            self.barriers.fetch_add(1, Ordering::SeqCst);
            return Ok(());
        }
        self.attempts.fetch_add(1, Ordering::SeqCst);
        self.record(format!("Reconcile({})", request.scenario));
        self.reconciles.lock().await.push(request);
        Ok(())
    }

    async fn trigger_action(&self, scenario: &str) -> Result<(), ActionError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(ActionError::Unavailable("connection refused".into()));
        }
        self.record(format!("TriggerAction({scenario})"));
        Ok(())
    }

    async fn offload(&self, request: OffloadRequest) -> Result<OffloadAnswer, ActionError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(ActionError::Unavailable("connection refused".into()));
        }
        self.record(format!(
            "OffloadModel({}, {} -> {})",
            request.model_name, request.source_node, request.target_node
        ));
        Ok(OffloadAnswer {
            accepted: true,
            message: format!("offloading '{}'", request.model_name),
            transition_id: "ac-1".into(),
        })
    }
}

impl RecordingAction {
    fn record(&self, call: String) {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(call);
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub async fn count(&self) -> usize {
        self.reconciles.lock().await.len()
    }

    /// Waits until `n` reconciles arrived (5 s at most).
    pub async fn wait_for(&self, n: usize) -> Vec<ReconcileRequest> {
        for _ in 0..500 {
            if self.count().await >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.reconciles.lock().await.clone()
    }
}

/// The scenario, package, model and node of the outbox barrier (see
/// [`outbox_barrier`]); its container is `model-barrier`.
pub const BARRIER: &str = "barrier";

/// Defines scenario `barrier` -> package `barrier` = {model `barrier` on node
/// `barrier`}. Call it before the engine starts, so that the engine knows
/// the package from its first load (a definition written later reaches it
/// through a watch, in its own time).
pub async fn define_barrier(store: &dyn StateStore) {
    put(
        store,
        "Scenario/barrier",
        "kind: Scenario\nmetadata:\n  name: barrier\nspec:\n  target: barrier\n",
    )
    .await;
    put(
        store,
        "Package/barrier",
        "kind: Package\nmetadata:\n  name: barrier\nspec:\n  models:\n    - name: barrier\n      node: barrier\n",
    )
    .await;
}

/// Returns once every reconcile the engine handed to its outbox worker
/// before this call has been delivered, or shown never to have existed:
/// drives package `barrier` into Error and waits (5 s at most) for its
/// reconcile. An input is answered only after its reconciles were handed to
/// the worker, and the worker delivers them in that order (each due at once
/// while the ActionController is up), so none handed over earlier is still
/// pending when the barrier's arrives. The package stays in Error: once per
/// engine, after [`define_barrier`].
pub async fn outbox_barrier(h: &EngineHandle, action: &RecordingAction) {
    let before = action.barriers.load(Ordering::SeqCst);
    let dead = report(
        BARRIER,
        vec![container("model-barrier", &[("Status", "dead")])],
    );
    assert_success(h.report_containers(dead).await.code, "the barrier's report");
    for _ in 0..500 {
        if action.barriers.load(Ordering::SeqCst) > before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the barrier's reconcile did not arrive within 5 s");
}

/// Test configuration: no grace period, fast retries, short timeouts.
pub fn config() -> EngineConfig {
    let mut config = EngineConfig::default();
    config.core.info_failure_grace = Duration::ZERO;
    config.commit_timeout = Duration::from_secs(2);
    config.recovery.base_backoff = Duration::from_millis(20);
    config.recovery.max_backoff = Duration::from_millis(100);
    config
}

pub fn memory() -> Arc<dyn StateStore> {
    Arc::new(MemoryStore::default())
}

/// A real etcd for one test, and a store on it. Keep the `Etcd` alive.
pub async fn etcd() -> (etcd_harness::Etcd, Arc<dyn StateStore>) {
    let etcd = etcd_harness::Etcd::start().expect("etcd starts (run scripts/install-deps.sh)");
    let mut config = store_etcd::EtcdConfig::new(etcd.endpoints());
    config.request_timeout = Duration::from_secs(1);
    let store = store_etcd::EtcdStore::connect(config)
        .await
        .expect("connect");
    (etcd, Arc::new(store))
}

pub async fn start(
    store: Arc<dyn StateStore>,
    config: EngineConfig,
) -> (Engine, Arc<RecordingAction>) {
    let action = Arc::new(RecordingAction::default());
    let engine = Engine::start(store, action.clone(), config)
        .await
        .expect("engine starts");
    (engine, action)
}

pub async fn put(store: &dyn StateStore, key: &str, value: &str) {
    store
        .apply(Batch::new().put(key, value))
        .await
        .expect("put");
}

pub async fn value(store: &dyn StateStore, key: &str) -> Option<String> {
    store
        .get(key)
        .await
        .expect("get")
        .map(|kv| String::from_utf8(kv.value).expect("utf-8"))
}

/// Waits until `key` holds `expected` (5 s at most).
pub async fn eventually(store: &dyn StateStore, key: &str, expected: Option<&str>) {
    let mut last = None;
    for _ in 0..500 {
        last = value(store, key).await;
        if last.as_deref() == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{key}: expected {expected:?}, found {last:?}");
}

pub fn scenario(name: &str, current: &str, target: &str) -> StateChangeRequest {
    StateChangeRequest {
        kind: RequestKind::Scenario,
        name: name.to_owned(),
        current_state: current.to_owned(),
        target_state: target.to_owned(),
        transition_id: format!("{name}:{current}->{target}"),
        source: String::new(),
    }
}

pub fn container(name: &str, state: &[(&str, &str)]) -> ReportedContainer {
    ReportedContainer {
        id: format!("id-{name}"),
        names: vec![format!("/{name}")],
        state: state
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

pub fn report(node: &str, containers: Vec<ReportedContainer>) -> NodeReport {
    NodeReport {
        node: node.to_owned(),
        containers,
    }
}

/// Scenario s1 -> package p1 = {m1, m2}; containers `model-m1`, `model-m2`.
pub async fn define_infotainment(store: &dyn StateStore) {
    put(
        store,
        "Scenario/s1",
        "kind: Scenario\nmetadata:\n  name: s1\nspec:\n  target: p1\n",
    )
    .await;
    put(
        store,
        "Package/p1",
        "kind: Package\nmetadata:\n  name: p1\nspec:\n  models:\n    - name: m1\n      node: n1\n    - name: m2\n      node: n1\n",
    )
    .await;
}

pub fn assert_success(code: ErrorCode, message: &str) {
    assert_eq!(code, ErrorCode::Success, "{message}");
}

/// Waits (5 s at most) until the package's open incident validates its
/// delivered step: the healer's write of that step is done, so the store's
/// revision stays put until something new happens.
pub async fn incident_validating(h: &EngineHandle, package: &str) {
    use statemachine_core::healing::Phase;
    let target =
        engine::IncidentRef::Resource(statemachine_core::ResourceKind::Package, package.into());
    for _ in 0..500 {
        if let Ok(view) = h.recovery_status(target.clone()).await
            && view.incident.phase == Phase::Validating
        {
            // The write follows the change in memory at once.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the incident of package '{package}' never reached Validating");
}
