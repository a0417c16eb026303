//! Embedding the StateManager engine in another program, on the embedded
//! store and with an ActionController of your own: start the engine,
//! subscribe to its events, request scenario changes, read the state and its
//! history.
//!
//! ```sh
//! cargo run -p examples --example embed                 # a fresh temporary store
//! cargo run -p examples --example embed -- ./my-state   # kept in ./my-state: run it twice
//! ```
//!
//! On a second run in the same directory the scenario is already Allowed,
//! where the first run left it, and the changes from Idle are refused.
//!
//! Nothing here uses gRPC: the engine is a library. `transport-grpc` puts the
//! Pullpiri wire protocol in front of the same [`engine::EngineHandle`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use engine::{
    ActionError, ActionPort, Delivery, Engine, EngineConfig, EventFilter, HistoryQuery,
    OffloadAnswer, OffloadRequest, ReconcileRequest,
};
use statemachine_core::{ErrorCode, RequestKind, ResourceKind, StateChangeRequest};
use store_embedded::{EmbeddedConfig, EmbeddedStore};

/// The ActionController, as this program sees it: here it only prints what
/// the engine asks of it. A real one would restart the failed package.
struct PrintingActionController;

#[async_trait]
impl ActionPort for PrintingActionController {
    async fn reconcile(&self, request: ReconcileRequest) -> Result<(), ActionError> {
        println!(
            "ActionController: reconcile scenario '{}' (package '{}' is {})",
            request.scenario, request.package, request.package_state
        );
        Ok(())
    }

    async fn trigger_action(&self, scenario: &str) -> Result<(), ActionError> {
        println!("ActionController: run the action of scenario '{scenario}' again");
        Ok(())
    }

    async fn offload(&self, request: OffloadRequest) -> Result<OffloadAnswer, ActionError> {
        Ok(OffloadAnswer {
            accepted: false,
            message: format!("offloading '{}' is not supported here", request.model_name),
            transition_id: String::new(),
        })
    }
}

fn scenario_change(name: &str, target: &str, id: &str) -> StateChangeRequest {
    StateChangeRequest {
        kind: RequestKind::Scenario,
        name: name.to_owned(),
        // Empty: "I don't know the current state"; the engine checks the
        // transition against its record.
        current_state: String::new(),
        target_state: target.to_owned(),
        transition_id: id.to_owned(),
        source: "embed example".to_owned(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The store: a crash-safe file in the directory given, or in a fresh
    // temporary one. `state_store::MemoryStore::default()` keeps nothing;
    // with etcd, pass `store_etcd::EtcdStore::connect(config).await?`.
    let temporary = tempfile::tempdir()?;
    let dir = match std::env::args().nth(1) {
        Some(dir) => std::path::PathBuf::from(dir),
        None => temporary.path().to_owned(),
    };
    let store = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(&dir))?);
    println!("state kept in {}", store.path().display());
    let engine = Engine::start(
        store,
        Arc::new(PrintingActionController),
        EngineConfig::default(),
    )
    .await?;
    let handle = engine.handle();

    // Subscribed before the changes, so every one of them is delivered.
    let mut events = handle.subscribe(EventFilter {
        resource_kind: Some(ResourceKind::Scenario),
        ..EventFilter::default()
    });

    // Scenario states may be spelled `waiting`, `Waiting` or
    // `SCENARIO_STATE_WAITING`. Each answer comes after the commit.
    for (i, target) in ["waiting", "Satisfied", "SCENARIO_STATE_ALLOWED"]
        .into_iter()
        .enumerate()
    {
        let answer = handle
            .change_state(scenario_change("parking", target, &format!("t-{i}")))
            .await;
        println!("change to {target}: {} {}", answer.code, answer.message);
    }

    // A transition the scenario table does not have is refused, and nothing
    // is written.
    let refused = handle
        .change_state(scenario_change("parking", "idle", "t-bad"))
        .await;
    assert_ne!(refused.code, ErrorCode::Success);
    println!(
        "change to idle: {} {} ({})",
        refused.code, refused.message, refused.details
    );

    if let Some(view) = handle.get_state(ResourceKind::Scenario, "parking").await? {
        println!("state of scenario 'parking': {}", view.state);
    }
    for entry in handle
        .history(ResourceKind::Scenario, "parking", HistoryQuery::default())
        .await?
    {
        println!(
            "history: {} -> {} ({}, {})",
            entry.from.as_deref().unwrap_or("(none)"),
            entry.to.as_deref().unwrap_or("(deleted)"),
            entry.transition_id,
            entry.reason
        );
    }

    // The events of the accepted changes (none on a second run).
    for _ in 0..3 {
        match tokio::time::timeout(Duration::from_millis(500), events.next()).await {
            Ok(Some(Delivery::Event(event))) => println!(
                "event: {} '{}' {} -> {}",
                event.resource_kind,
                event.resource_name,
                event.from.as_deref().unwrap_or("(none)"),
                event.to.as_deref().unwrap_or("(deleted)")
            ),
            Ok(Some(Delivery::Lagged(missed))) => println!("missed {missed} events"),
            Ok(None) | Err(_) => break,
        }
    }

    engine.shutdown().await;
    Ok(())
}
