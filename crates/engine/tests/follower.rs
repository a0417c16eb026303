//! A follower engine (HA) beside a leader on one store: it answers queries
//! from a cache its watches keep in line with the leader's writes, and
//! writes nothing itself.

mod support;

use std::sync::Arc;
use std::time::Duration;

use engine::{Engine, Metrics};
use state_store::StateStore;
use statemachine_core::{ErrorCode, ResourceKind};
use support::*;

async fn follower(store: Arc<dyn StateStore>) -> Engine {
    Engine::start_follower(
        store,
        Arc::new(RecordingAction::default()),
        config(),
        Arc::new(Metrics::default()),
    )
    .await
    .expect("the follower starts")
}

/// Waits (5 s at most) until the follower's cache shows `state`.
async fn shows(engine: &Engine, kind: ResourceKind, name: &str, state: &str) {
    let h = engine.handle();
    for _ in 0..500 {
        if let Ok(Some(view)) = h.get_state(kind, name).await
            && view.state == state
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the follower never showed {kind} '{name}' {state}");
}

async fn follows_and_writes_nothing(store: Arc<dyn StateStore>) {
    define_infotainment(store.as_ref()).await;
    let (leader, action) = start(store.clone(), config()).await;
    let follower = follower(store.clone()).await;
    let f = follower.handle();
    let h = leader.handle();

    // The leader's commits reach the follower's cache.
    let answer = h.change_state(scenario("s1", "Idle", "Waiting")).await;
    assert_success(answer.code, &answer.message);
    shows(&follower, ResourceKind::Scenario, "s1", "Waiting").await;
    let dead = report("n1", vec![container("model-m1", &[("Status", "dead")])]);
    assert_success(h.report_containers(dead).await.code, "the leader's report");
    shows(&follower, ResourceKind::Model, "m1", "Dead").await;
    let (listed, _) = f.list(ResourceKind::Model, None, 10).await.unwrap();
    assert!(
        listed.iter().any(|v| v.name == "m1" && v.state == "Dead"),
        "{listed:?}"
    );

    // Its own inputs are refused, and nothing reaches the store.
    let before = store.revision().await.unwrap();
    let refused = f.change_state(scenario("s1", "Waiting", "Satisfied")).await;
    assert_eq!(
        refused.code,
        ErrorCode::ResourceUnavailable,
        "{}",
        refused.message
    );
    assert!(
        refused.message.contains("not the leader"),
        "{}",
        refused.message
    );
    let report = report("n1", vec![container("model-m2", &[("Status", "dead")])]);
    assert_eq!(
        f.report_containers(report).await.code,
        ErrorCode::ResourceUnavailable
    );
    // The recovery and alert methods are the leader's too.
    let alerts = f.pending_alerts(engine::AlertQuery::default()).await;
    assert!(
        matches!(&alerts, Err(engine::EngineError::Unavailable(m)) if m.contains("not the leader")),
        "{alerts:?}"
    );
    assert_eq!(
        store.revision().await.unwrap(),
        before,
        "refused inputs wrote nothing"
    );

    // With the leader gone, a new definition reaches the follower's cache
    // and nothing else happens: no initial states, no re-evaluation.
    leader.shutdown().await;
    put(
        store.as_ref(),
        "Package/p2",
        "kind: Package\nmetadata:\n  name: p2\nspec:\n  models:\n    - name: m9\n      node: n9\n",
    )
    .await;
    shows(&follower, ResourceKind::Package, "p2", "Idle").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        store.revision().await.unwrap(),
        before + 1,
        "only the definition was written"
    );
    assert!(
        action.calls().iter().all(|c| !c.contains("m2")),
        "the follower delivered nothing: {:?}",
        action.calls()
    );
    follower.shutdown().await;
}

#[tokio::test]
async fn a_follower_follows_the_leader_and_writes_nothing_on_memory() {
    follows_and_writes_nothing(memory()).await;
}

#[tokio::test]
async fn a_follower_follows_the_leader_and_writes_nothing_on_etcd() {
    let (_etcd, store) = etcd().await;
    follows_and_writes_nothing(store).await;
}
