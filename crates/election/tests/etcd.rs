//! The election and the fence against a real etcd.

use std::sync::Arc;
use std::time::Duration;

use election::{ElectionConfig, EtcdElection, FencedStore, Leader, LeaderElection, Role, Term};
use state_store::{Batch, StateStore, StoreError};
use store_etcd::{EtcdConfig, EtcdStore};
use tokio::sync::watch;

const KEY: &str = "/statemanager/leader/test";
const WAIT: Duration = Duration::from_secs(10);

fn config(id: &str) -> ElectionConfig {
    ElectionConfig {
        key: KEY.to_owned(),
        me: Leader {
            id: id.to_owned(),
            url: format!("http://{id}"),
        },
        ttl: Duration::from_secs(2),
        request_timeout: Duration::from_secs(2),
    }
}

async fn store(etcd: &etcd_harness::Etcd) -> EtcdStore {
    EtcdStore::connect(EtcdConfig::new(etcd.endpoints()))
        .await
        .unwrap()
}

/// Waits until `roles` shows a role `matches` accepts; returns it.
async fn until(
    roles: &mut watch::Receiver<Role>,
    what: &str,
    matches: impl Fn(&Role) -> bool,
) -> Role {
    let waited = tokio::time::timeout(WAIT, roles.wait_for(|role| matches(role)))
        .await
        .map(|role| role.map(|r| r.clone()));
    match waited {
        Ok(Ok(role)) => role,
        _ => panic!(
            "no {what} within {WAIT:?}; the role is {:?}",
            *roles.borrow()
        ),
    }
}

fn term_of(role: &Role) -> Term {
    match role {
        Role::Leader(term) => term.clone(),
        other => panic!("not a leader: {other:?}"),
    }
}

#[tokio::test]
async fn one_leads_the_other_follows_and_takes_over_when_it_resigns() {
    let etcd = etcd_harness::Etcd::start().unwrap();
    let store = store(&etcd).await;
    let a = EtcdElection::spawn(store.client(), config("a"));
    let mut a_roles = a.roles();
    let a_term = term_of(&until(&mut a_roles, "leader a", Role::is_leader).await);
    let b = EtcdElection::spawn(store.client(), config("b"));
    let mut b_roles = b.roles();
    let followed = until(&mut b_roles, "follower b", |r| {
        matches!(r, Role::Follower(_))
    })
    .await;
    assert_eq!(followed, Role::Follower(config("a").me));
    assert!(a_roles.borrow().is_leader(), "a still leads");

    let kv = store.get(KEY).await.unwrap().expect("the election key");
    assert_eq!(kv.mod_revision, a_term.revision);
    assert_eq!(
        serde_json::from_slice::<Leader>(&kv.value).unwrap(),
        config("a").me
    );

    // Resigning revokes the lease: b takes over at once, not after the TTL.
    let resigned = tokio::time::Instant::now();
    a.resign().await;
    let b_term = term_of(&until(&mut b_roles, "leader b", Role::is_leader).await);
    assert!(
        resigned.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        resigned.elapsed()
    );
    assert!(b_term.revision > a_term.revision);
    assert_eq!(*a_roles.borrow(), Role::Candidate);
    b.resign().await;
    assert_eq!(
        store.get(KEY).await.unwrap(),
        None,
        "the key goes with the lease"
    );
}

#[tokio::test]
async fn writes_of_an_ended_term_are_fenced_and_the_leader_follows_the_next() {
    let etcd = etcd_harness::Etcd::start().unwrap();
    let store = store(&etcd).await;
    let a = Arc::new(EtcdElection::spawn(store.client(), config("a")));
    let mut a_roles = a.roles();
    let term = term_of(&until(&mut a_roles, "leader a", Role::is_leader).await);
    let election = a.clone();
    let fenced = FencedStore::new(Arc::new(store.clone()), &term, move || election.fenced());
    fenced.apply(Batch::new().put("/k", "1")).await.unwrap();

    // Another member's term, as if a's lease had expired while it was
    // paused and b had been elected meanwhile.
    let b = serde_json::to_vec(&config("b").me).unwrap();
    store.apply(Batch::new().put(KEY, b)).await.unwrap();
    let before = store.revision().await.unwrap();
    let error = fenced.apply(Batch::new().put("/k", "2")).await.unwrap_err();
    assert!(matches!(error, StoreError::Unavailable { .. }), "{error:?}");
    assert!(fenced.delete("/k").await.is_err());
    assert_eq!(fenced.fenced_writes(), 2);
    assert_eq!(
        store.revision().await.unwrap(),
        before,
        "nothing was written"
    );
    assert_eq!(store.get("/k").await.unwrap().unwrap().value, b"1");
    let follows = until(&mut a_roles, "a to follow b", |r| {
        matches!(r, Role::Follower(_))
    })
    .await;
    assert_eq!(follows, Role::Follower(config("b").me));
}

#[tokio::test]
async fn a_revoked_lease_ends_the_term_and_a_new_one_begins() {
    let etcd = etcd_harness::Etcd::start().unwrap();
    let store = store(&etcd).await;
    let a = Arc::new(EtcdElection::spawn(store.client(), config("a")));
    let mut roles = a.roles();
    let first = term_of(&until(&mut roles, "leader", Role::is_leader).await);
    let old = FencedStore::new(Arc::new(store.clone()), &first, || {});
    let mut client = store.client();
    client.lease_revoke(first.lease).await.unwrap();
    let second = term_of(
        &until(
            &mut roles,
            "a new term",
            |r| matches!(r, Role::Leader(t) if t.revision > first.revision),
        )
        .await,
    );
    assert_ne!(second.lease, first.lease);
    let before = store.revision().await.unwrap();
    assert!(old.apply(Batch::new().put("/k", "old")).await.is_err());
    let new = FencedStore::new(Arc::new(store.clone()), &second, || {});
    new.apply(Batch::new().put("/k", "new")).await.unwrap();
    assert_eq!(store.revision().await.unwrap(), before + 1);
    a.resign().await;
}

#[tokio::test]
async fn a_leader_whose_key_is_deleted_steps_down_and_campaigns_again() {
    let etcd = etcd_harness::Etcd::start().unwrap();
    let store = store(&etcd).await;
    let a = EtcdElection::spawn(store.client(), config("a"));
    let mut roles = a.roles();
    let first = term_of(&until(&mut roles, "leader", Role::is_leader).await);
    store.delete(KEY).await.unwrap();
    until(&mut roles, "a step down", |r| !r.is_leader()).await;
    let second = term_of(&until(&mut roles, "a new term", Role::is_leader).await);
    assert!(
        second.revision > first.revision,
        "{second:?} after {first:?}"
    );
    assert_ne!(second.lease, first.lease);
    a.resign().await;
}

#[tokio::test]
async fn a_key_this_version_cannot_read_names_no_leader_until_it_goes() {
    let etcd = etcd_harness::Etcd::start().unwrap();
    let store = store(&etcd).await;
    store
        .apply(Batch::new().put(KEY, "not json"))
        .await
        .unwrap();
    let a = EtcdElection::spawn(store.client(), config("a"));
    let mut roles = a.roles();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*roles.borrow(), Role::Candidate);
    let held = store.get(KEY).await.unwrap().expect("the key stays");
    assert_eq!(held.value, b"not json", "nobody campaigned over it");
    store.delete(KEY).await.unwrap();
    until(&mut roles, "leader", Role::is_leader).await;
    a.resign().await;
}
