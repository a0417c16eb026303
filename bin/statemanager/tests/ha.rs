//! End-to-end high availability: several real `statemanager` daemons with
//! `--ha` on one real etcd (three members where a cluster matters). One
//! leads and writes, the others follow, answer queries from their warm
//! cache and forward writes; a dead leader is replaced within about its
//! lease; a paused leader that wakes up after losing its lease writes
//! nothing and steps down; without a reachable leader a write is refused
//! within its deadline; and the flags are checked at start-up.

mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use support::{ActionController, Daemon, Keys, StateManagerConnection};
use transport_grpc::proto::statemanager as sm;
use transport_grpc::proto::statemanager::{ErrorCode, ResourceType};

const SCENARIO: ResourceType = ResourceType::Scenario;
/// The election key of the group `--ha` joins.
const LEADER_KEY: &str = "/statemanager/leader/default";
/// The lease TTL the tests give (`--ha-lease-ttl`), the default.
const TTL: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(25);

/// A 3-member etcd cluster.
fn etcd_cluster() -> etcd_harness::Etcd {
    etcd_harness::Etcd::builder()
        .members(3)
        .start()
        .unwrap_or_else(|error| panic!("a 3-member etcd starts: {error}"))
}

/// The usual flags and `--ha --ha-lease-ttl 2s`.
fn ha_args(etcd: &etcd_harness::Etcd, action_controller: &str) -> Vec<String> {
    let mut args = Daemon::args(etcd, action_controller);
    args.extend([
        "--ha".into(),
        "--ha-lease-ttl".into(),
        format!("{}s", TTL.as_secs()),
    ]);
    args
}

/// Starts two members of the group at the same time.
async fn two_members(args: &[String]) -> (Daemon, Daemon) {
    tokio::join!(Daemon::start(args), Daemon::start(args))
}

/// Waits (`within` at most) until exactly one of `daemons` answers
/// `/healthz?leader` 200 and every other one 503 naming it as the leader;
/// returns the leader's index. Two members answering 200 at once is a
/// split brain and fails at once.
async fn settled_leader(daemons: &[&Daemon], within: Duration) -> usize {
    let started = Instant::now();
    loop {
        let mut answers = Vec::new();
        for daemon in daemons {
            answers.push(daemon.healthz("?leader").await);
        }
        let leaders: Vec<usize> = (0..answers.len())
            .filter(|&i| answers[i].0 == 200)
            .collect();
        assert!(
            leaders.len() <= 1,
            "expected at most one member to lead at any time, found {leaders:?} answering \
             /healthz?leader 200: {answers:?}"
        );
        if let [leader] = leaders[..] {
            // http:// or, with TLS, https://
            let named = format!("://{}", daemons[leader].address);
            let followers_agree = (0..answers.len()).filter(|&i| i != leader).all(|i| {
                answers[i].0 == 503
                    && answers[i].1.starts_with("follower: the leader is http")
                    && answers[i].1.ends_with(&named)
            });
            if followers_agree {
                return leader;
            }
        }
        assert!(
            started.elapsed() < within,
            "expected one leader and followers naming it within {within:?}; \
             /healthz?leader answers {answers:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits (`within` at most) until `daemon` answers `/healthz?leader` 200;
/// returns how long that took.
async fn until_leads(daemon: &Daemon, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let answer = daemon.healthz("?leader").await;
        if answer.0 == 200 {
            assert_eq!(answer.1, "ok: leader", "the leader's /healthz?leader body");
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "expected {} to lead (/healthz?leader 200) within {within:?}, last answer {answer:?}",
            daemon.url()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits (`within` at most) until `daemon`'s `/healthz?leader` answers
/// exactly `expected`.
async fn until_health(daemon: &Daemon, expected: (u16, &str), within: Duration) {
    let started = Instant::now();
    loop {
        let answer = daemon.healthz("?leader").await;
        if (answer.0, answer.1.as_str()) == expected {
            return;
        }
        assert!(
            started.elapsed() < within,
            "expected /healthz?leader of {} to answer {expected:?} within {within:?}, \
             last answer {answer:?}",
            daemon.url()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits (`within` at most) until the metric `name` of `daemon` is at least `min`.
async fn until_metric_at_least(daemon: &Daemon, name: &str, min: f64, within: Duration) -> f64 {
    let started = Instant::now();
    loop {
        let value = daemon.metric(name).await;
        if value >= min {
            return value;
        }
        assert!(
            started.elapsed() < within,
            "expected {name} >= {min} on {} within {within:?}, found {value}",
            daemon.url()
        );
        tokio::time::sleep(POLL).await;
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid}: {status}");
}

fn change(name: &str, current: &str, target: &str, transition_id: &str) -> sm::StateChange {
    sm::StateChange {
        resource_type: SCENARIO as i32,
        resource_name: name.into(),
        current_state: current.into(),
        target_state: target.into(),
        transition_id: transition_id.into(),
        timestamp_ns: 1_756_720_800_000_000_000,
        source: "FilterGateway".into(),
    }
}

async fn send(sm: &mut StateManagerConnection, change: sm::StateChange) -> sm::StateChangeResponse {
    let what = format!("{change:?}");
    sm.send_state_change(change)
        .await
        .unwrap_or_else(|status| panic!("expected SendStateChange {what} to answer: {status}"))
        .into_inner()
}

fn assert_success(answer: &sm::StateChangeResponse, what: &str) {
    assert_eq!(
        answer.error_code,
        ErrorCode::Success as i32,
        "expected SUCCESS for {what}: {answer:?}"
    );
}

/// The scenario's state as `daemon` answers GetResourceState.
async fn state_of(sm: &mut StateManagerConnection, name: &str) -> String {
    let answer = sm
        .get_resource_state(sm::ResourceStateRequest {
            resource_type: SCENARIO as i32,
            resource_name: name.into(),
        })
        .await
        .expect("GetResourceState answers")
        .into_inner();
    assert!(
        answer.success,
        "GetResourceState {name}: {}",
        answer.message
    );
    answer
        .resource_state
        .expect("a resource state")
        .current_state
}

/// Waits (5 s at most) until GetResourceState on `sm` answers `expected`
/// for scenario `name`; returns how long that took.
async fn until_state(sm: &mut StateManagerConnection, name: &str, expected: &str) -> Duration {
    let started = Instant::now();
    let within = Duration::from_secs(5);
    loop {
        let found = state_of(sm, name).await;
        if found == expected {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "expected GetResourceState of scenario {name} to answer {expected} within \
             {within:?}, found {found}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The election key's value and create revision, straight from etcd.
async fn election_key(etcd: &etcd_harness::Etcd) -> Option<(serde_json::Value, i64)> {
    let mut client = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .expect("etcd client");
    let answer = client
        .get(LEADER_KEY, None)
        .await
        .expect("get the election key");
    answer.kvs().first().map(|kv| {
        (
            serde_json::from_slice(kv.value()).expect("the election key holds JSON"),
            kv.create_revision(),
        )
    })
}

#[tokio::test]
async fn one_member_leads_and_the_others_follow_and_forward() {
    let etcd = etcd_cluster();
    let keys = Keys::connect(&etcd).await;
    keys.define_package("p", &[("m1", "n1")]).await;
    keys.define_scenario("s", "p").await;
    let ac = ActionController::start().await;
    let (a, b) = two_members(&ha_args(&etcd, &ac.url())).await;
    let daemons = [&a, &b];
    let index = settled_leader(&daemons, Duration::from_secs(10)).await;
    let (leader, follower) = (daemons[index], daemons[1 - index]);

    // The role is on /metrics and /healthz of both.
    assert_eq!(
        leader.metric("statemanager_ha_leader").await,
        1.0,
        "the leader's ha_leader"
    );
    assert_eq!(
        follower.metric("statemanager_ha_leader").await,
        0.0,
        "the follower's ha_leader"
    );
    assert_eq!(
        leader
            .metric("statemanager_ha_role{group=\"default\",role=\"leader\"}")
            .await,
        1.0,
        "the leader's ha_role says leader"
    );
    assert_eq!(
        follower
            .metric("statemanager_ha_role{group=\"default\",role=\"follower\"}")
            .await,
        1.0,
        "the follower's ha_role says follower"
    );
    assert_eq!(leader.healthz("").await, (200, "ok: leader".to_owned()));
    assert_eq!(follower.healthz("").await, (200, "ok: follower".to_owned()));
    // The election key names the leader, and its term is the key's revision.
    let (value, created) = election_key(&etcd).await.expect("the election key exists");
    assert_eq!(
        value["url"].as_str(),
        Some(leader.url().as_str()),
        "the election key names the leader's address: {value}"
    );
    assert_eq!(
        leader.metric("statemanager_ha_term").await,
        created as f64,
        "the leader's ha_term is the election key's create revision"
    );
    assert_eq!(
        follower.metric("statemanager_ha_term").await,
        0.0,
        "a follower has no term"
    );

    keys.eventually("/scenario/s/state", Some("Idle")).await;
    let mut to_follower = follower.client().await;
    let mut to_leader = leader.client().await;

    // A write sent to the follower is forwarded, committed by the leader
    // and in etcd when acknowledged.
    let answer = send(
        &mut to_follower,
        change("s", "Idle", "Waiting", "via-follower"),
    )
    .await;
    assert_success(&answer, "Idle -> Waiting sent to the follower");
    assert_eq!(
        answer.transition_id, "via-follower",
        "the transition id is echoed"
    );
    assert_eq!(
        keys.get("/scenario/s/state").await.as_deref(),
        Some("Waiting"),
        "SUCCESS from the follower means the leader already wrote it to etcd"
    );
    // The follower's own cache catches up from the watch.
    let lag = until_state(&mut to_follower, "s", "Waiting").await;
    println!("the follower's GetResourceState showed Waiting {lag:?} after the acknowledgement");
    assert_eq!(
        state_of(&mut to_leader, "s").await,
        "Waiting",
        "the leader's state"
    );

    // A request already forwarded once is answered where it lands: the
    // follower writes nothing itself.
    let revision = keys.revision().await;
    let mut request = tonic::Request::new(change("s", "Waiting", "Satisfied", "no-hop"));
    request.metadata_mut().insert(
        "x-statemanager-forwarded",
        "1".parse().expect("a header value"),
    );
    let refused = to_follower
        .send_state_change(request)
        .await
        .expect("the follower answers a forwarded write")
        .into_inner();
    assert_eq!(
        refused.error_code,
        ErrorCode::ResourceUnavailable as i32,
        "expected RESOURCE_UNAVAILABLE for a forwarded write reaching a follower: {refused:?}"
    );
    assert!(
        refused.message.contains("nothing was written"),
        "expected the refusal to say nothing was written: {refused:?}"
    );
    assert_eq!(
        keys.revision().await,
        revision,
        "expected nothing written for the refused write"
    );
    assert_eq!(
        keys.get("/scenario/s/state").await.as_deref(),
        Some("Waiting")
    );

    // A subscription opened on the follower sees the leader's next change.
    let mut events = to_follower
        .subscribe_to_state_changes(sm::StateChangeSubscriptionRequest {
            resource_type: SCENARIO as i32,
            ..Default::default()
        })
        .await
        .expect("expected the follower to open (forward) a subscription")
        .into_inner();
    assert_success(
        &send(
            &mut to_leader,
            change("s", "Waiting", "Satisfied", "via-leader"),
        )
        .await,
        "Waiting -> Satisfied sent to the leader",
    );
    let event = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("expected an event on the follower's subscription within 5 s")
        .expect("expected the subscription to stay open")
        .expect("expected an event, not an error");
    let seen = event.state_change.expect("a state change event");
    assert_eq!(
        (
            seen.resource_name.as_str(),
            seen.current_state.as_str(),
            seen.target_state.as_str(),
            seen.transition_id.as_str()
        ),
        ("s", "Waiting", "Satisfied", "via-leader"),
        "expected the follower's subscriber to see s Waiting -> Satisfied: {seen:?}"
    );
    until_state(&mut to_follower, "s", "Satisfied").await;
}

#[tokio::test]
async fn killing_the_leader_hands_over_without_losing_acknowledged_writes() {
    let etcd = etcd_cluster();
    let keys = Keys::connect(&etcd).await;
    let ac = ActionController::start().await;
    let (a, b) = two_members(&ha_args(&etcd, &ac.url())).await;
    let index = settled_leader(&[&a, &b], Duration::from_secs(10)).await;
    let (leader, survivor) = if index == 0 { (a, b) } else { (b, a) };

    // A writer sends transitions to the leader, one after another, and
    // notes the acknowledged ones, until told to stop (also while and after
    // the leader is killed: those fail).
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let acknowledged = acknowledged.clone();
        let stop = stop.clone();
        let sm = leader.client().await;
        tokio::spawn(async move {
            let mut failures = 0;
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let name = format!("w{i}");
                let mut request = tonic::Request::new(change(&name, "Idle", "Waiting", &name));
                request.set_timeout(Duration::from_secs(2));
                match sm.clone().send_state_change(request).await {
                    Ok(answer) if answer.get_ref().error_code == ErrorCode::Success as i32 => {
                        acknowledged.lock().unwrap().push(name);
                    }
                    _ => {
                        failures += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            failures
        })
    };
    let started = Instant::now();
    while acknowledged.lock().unwrap().len() < 20 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "expected 20 acknowledged writes on the leader within 10 s, got {:?}",
            acknowledged.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    leader.kill9();
    let killed = Instant::now();
    let limit = TTL * 3 + Duration::from_secs(2);
    until_leads(&survivor, limit).await;
    let takeover = killed.elapsed();
    stop.store(true, Ordering::Relaxed);
    let failures = writer.await.expect("the writer ends");
    let acknowledged = acknowledged.lock().unwrap().clone();
    let serving = until_metric_at_least(
        &survivor,
        "statemanager_ha_takeovers_total",
        1.0,
        Duration::from_secs(5),
    )
    .await;
    let load = survivor
        .metric("statemanager_ha_last_takeover_seconds")
        .await;
    println!(
        "takeover: /healthz?leader 200 on the survivor {takeover:?} after SIGKILL of the leader \
         (TTL {TTL:?}); its engine took {load} s to load and serve; {} writes acknowledged, \
         {failures} failed around the kill",
        acknowledged.len()
    );
    assert!(
        takeover < limit,
        "expected a takeover within {limit:?}, took {takeover:?}"
    );
    assert_eq!(
        serving, 1.0,
        "expected exactly one takeover by the survivor"
    );
    assert_eq!(survivor.metric("statemanager_ha_leader").await, 1.0);

    // Every acknowledged write is in etcd and in the new leader's state.
    let mut sm = survivor.client().await;
    for name in &acknowledged {
        assert_eq!(
            keys.get(&format!("/scenario/{name}/state"))
                .await
                .as_deref(),
            Some("Waiting"),
            "expected the acknowledged write {name} in etcd"
        );
        assert_eq!(
            state_of(&mut sm, name).await,
            "Waiting",
            "expected the new leader to know the acknowledged write {name}"
        );
    }
    // The new leader takes writes at once.
    for (name, current, target) in [("w0", "Waiting", "Satisfied"), ("after", "Idle", "Waiting")] {
        let answer = send(&mut sm, change(name, current, target, "after-takeover")).await;
        assert_success(
            &answer,
            &format!("{name} {current} -> {target} on the new leader"),
        );
        assert_eq!(
            keys.get(&format!("/scenario/{name}/state"))
                .await
                .as_deref(),
            Some(target),
            "expected the new leader's write of {name} in etcd"
        );
    }
}

#[tokio::test]
async fn a_paused_leader_writes_nothing_after_its_lease_and_steps_down() {
    let etcd = support::etcd();
    let keys = Keys::connect(&etcd).await;
    let ac = ActionController::start().await;
    let args = ha_args(&etcd, &ac.url());
    // The first to start leads, the second follows.
    let old = Daemon::start(&args).await;
    until_leads(&old, Duration::from_secs(10)).await;
    let new = Daemon::start(&args).await;
    settled_leader(&[&old, &new], Duration::from_secs(10)).await;
    let mut to_old = old.client().await;
    assert_success(
        &send(&mut to_old, change("z", "Idle", "Waiting", "before-pause")).await,
        "Idle -> Waiting on the leader before the pause",
    );
    assert_eq!(
        keys.get("/scenario/z/state").await.as_deref(),
        Some("Waiting")
    );
    // The connection is open and has carried a call before the pause.
    assert_eq!(state_of(&mut to_old, "z").await, "Waiting");

    signal(old.pid(), "STOP");
    let paused = Instant::now();
    // A write to the paused leader, marked forwarded so that it cannot be
    // passed on: it waits in the socket until the process runs again.
    let pending = {
        let mut sm = to_old.clone();
        tokio::spawn(async move {
            let mut request = tonic::Request::new(change("z", "Waiting", "Satisfied", "zombie"));
            request.metadata_mut().insert(
                "x-statemanager-forwarded",
                "1".parse().expect("a header value"),
            );
            sm.send_state_change(request).await
        })
    };
    let took = until_leads(&new, TTL * 3 + Duration::from_secs(2)).await;
    until_metric_at_least(
        &new,
        "statemanager_ha_takeovers_total",
        1.0,
        Duration::from_secs(5),
    )
    .await;
    println!(
        "the follower took over {took:?} after it was checked, {:?} after SIGSTOP",
        paused.elapsed()
    );
    assert!(
        !pending.is_finished(),
        "expected the write to the paused leader to wait"
    );
    let revision = keys.revision().await;

    signal(old.pid(), "CONT");
    let answer = tokio::time::timeout(Duration::from_secs(8), pending)
        .await
        .expect("expected the paused leader to answer the pending write within 8 s of SIGCONT")
        .expect("the request task");
    match &answer {
        Ok(answer) => assert_eq!(
            answer.get_ref().error_code,
            ErrorCode::ResourceUnavailable as i32,
            "expected the woken leader to refuse the write RESOURCE_UNAVAILABLE: {answer:?}"
        ),
        Err(status) => println!("the woken leader answered the pending write with {status}"),
    }
    println!("the woken leader answered the pending write: {answer:?}");
    println!(
        "the woken leader's log after SIGCONT:\n{}",
        old.output()
            .lines()
            .filter(|line| ["election", "ha:", "fenced", "leading"]
                .iter()
                .any(|w| line.contains(w)))
            .collect::<Vec<_>>()
            .join("\n")
    );
    until_health(
        &old,
        (503, &format!("follower: the leader is {}", new.url())),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        old.metric("statemanager_ha_leader").await,
        0.0,
        "expected the woken leader to have stepped down"
    );
    let fenced = old.metric("statemanager_ha_fenced_writes_total").await;
    println!("the woken leader's statemanager_ha_fenced_writes_total: {fenced}");
    // Nothing written since the new leader took over: not the zombie's
    // write, and nothing the old leader had queued.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        keys.get("/scenario/z/state").await.as_deref(),
        Some("Waiting"),
        "expected the zombie's write not to reach etcd"
    );
    assert_eq!(
        keys.revision().await,
        revision,
        "expected no write to etcd after the new leader took over (nothing was sent to it)"
    );
    assert_eq!(
        new.healthz("?leader").await.0,
        200,
        "expected the new leader to keep leading"
    );
    assert_eq!(old.metric("statemanager_ha_leader").await, 0.0);
    // Both members agree the new leader leads, and a write through the old
    // one now reaches it.
    let mut to_old = old.client().await;
    assert_success(
        &send(
            &mut to_old,
            change("z", "Waiting", "Satisfied", "after-wake"),
        )
        .await,
        "Waiting -> Satisfied through the old leader, now a follower",
    );
    assert_eq!(
        keys.get("/scenario/z/state").await.as_deref(),
        Some("Satisfied")
    );
}

#[tokio::test]
async fn without_a_leader_writes_are_refused_in_time() {
    let etcd = support::etcd();
    let keys = Keys::connect(&etcd).await;
    let mut client = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .expect("etcd client");
    // A leader that died: its process is gone (nothing listens at its
    // address), its key stays as long as its 60 s lease.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let dead_url = format!("http://{}", dead.local_addr().expect("address"));
    drop(dead);
    let lease = client
        .lease_grant(60, None)
        .await
        .expect("lease grant")
        .id();
    let put_leader = |url: String| {
        let mut client = client.clone();
        async move {
            let value = serde_json::json!({ "id": "gone-leader", "url": url }).to_string();
            client
                .put(
                    LEADER_KEY,
                    value,
                    Some(etcd_client::PutOptions::new().with_lease(lease)),
                )
                .await
                .expect("put the election key");
        }
    };
    put_leader(dead_url.clone()).await;

    let ac = ActionController::start().await;
    let daemon = Daemon::start(&ha_args(&etcd, &ac.url())).await;
    until_health(
        &daemon,
        (503, &format!("follower: the leader is {dead_url}")),
        Duration::from_secs(5),
    )
    .await;
    let mut sm = daemon.client().await;
    let deadline = Duration::from_secs(3);

    // A write answered within its deadline, and nothing written to etcd.
    let mut refused_in_time = async |what: &str| {
        let revision = keys.revision().await;
        let mut request = tonic::Request::new(change("s", "Idle", "Waiting", what));
        request.set_timeout(deadline);
        let asked = Instant::now();
        let answer = sm.send_state_change(request).await;
        let waited = asked.elapsed();
        println!("a write with the leader {what}: answered after {waited:?}: {answer:?}");
        assert!(
            waited < deadline,
            "expected an answer within the {deadline:?} deadline with the leader {what}, \
             took {waited:?}: {answer:?}"
        );
        assert_eq!(
            keys.revision().await,
            revision,
            "expected nothing written to etcd with the leader {what}"
        );
        answer
    };
    // Refused: RESOURCE_UNAVAILABLE in the answer, or an UNAVAILABLE status.
    let refused =
        |what: &str, answer: Result<tonic::Response<sm::StateChangeResponse>, tonic::Status>| {
            match answer {
                Ok(answer) => assert_eq!(
                    answer.get_ref().error_code,
                    ErrorCode::ResourceUnavailable as i32,
                    "expected RESOURCE_UNAVAILABLE with the leader {what}: {answer:?}"
                ),
                Err(status) => assert_eq!(
                    status.code(),
                    tonic::Code::Unavailable,
                    "expected UNAVAILABLE before the deadline with the leader {what}: {status}"
                ),
            }
        };

    // The leader's address refuses connections.
    refused("dead", refused_in_time("dead").await);

    // The leader's address accepts connections and never answers (a hung
    // process): the answer must still come within the deadline.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let hung_url = format!("http://{}", hung.local_addr().expect("address"));
    put_leader(hung_url.clone()).await;
    until_health(
        &daemon,
        (503, &format!("follower: the leader is {hung_url}")),
        Duration::from_secs(5),
    )
    .await;
    refused("hung", refused_in_time("hung").await);
    drop(hung);

    // The key names no leader this version understands: no leader is
    // known, and the member answers writes itself, RESOURCE_UNAVAILABLE.
    let garbage = serde_json::json!({ "not": "a leader" }).to_string();
    client
        .put(
            LEADER_KEY,
            garbage,
            Some(etcd_client::PutOptions::new().with_lease(lease)),
        )
        .await
        .expect("put the election key");
    until_health(
        &daemon,
        (503, "candidate: no leader is known"),
        Duration::from_secs(5),
    )
    .await;
    let answer = refused_in_time("unknown")
        .await
        .expect("expected a candidate to answer a write itself, not with a gRPC error")
        .into_inner();
    assert_eq!(
        answer.error_code,
        ErrorCode::ResourceUnavailable as i32,
        "expected RESOURCE_UNAVAILABLE while no leader is known: {answer:?}"
    );
    assert!(
        answer.message.contains("nothing was written"),
        "expected the refusal to say nothing was written: {answer:?}"
    );
    assert_eq!(
        keys.get("/scenario/s/state").await,
        None,
        "expected nothing written for s"
    );

    // The gone leader's lease ends: the member takes over and writes.
    client
        .lease_revoke(lease)
        .await
        .expect("revoke the gone leader's lease");
    let revoked = Instant::now();
    until_leads(&daemon, Duration::from_secs(5)).await;
    println!(
        "the member led {:?} after the lease was revoked",
        revoked.elapsed()
    );
    until_metric_at_least(
        &daemon,
        "statemanager_ha_takeovers_total",
        1.0,
        Duration::from_secs(5),
    )
    .await;
    let mut sm = daemon.client().await;
    assert_success(
        &send(&mut sm, change("s", "Idle", "Waiting", "led")).await,
        "Idle -> Waiting once the member leads",
    );
    assert_eq!(
        keys.get("/scenario/s/state").await.as_deref(),
        Some("Waiting")
    );
}

/// Runs the binary with `args` (15 s at most): its exit code and stderr.
async fn exit_of(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_statemanager"))
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the statemanager binary starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("expected statemanager {args:?} to exit at start-up; it still ran after 15 s");
        }
        tokio::time::sleep(POLL).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    (status.code(), stderr)
}

#[tokio::test]
async fn bad_ha_flags_are_refused_at_start() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let data = dir.path().display().to_string();
    let etcd = ["--store", "etcd", "--etcd-endpoints", "http://127.0.0.1:9"];
    let common = [
        "--listen",
        "127.0.0.1:0",
        "--action-controller",
        "http://127.0.0.1:9",
    ];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--ha", "--store", "embedded", "--data-dir", &data],
            "--ha needs --store etcd",
        ),
        (vec!["--ha", "--store", "memory"], "--ha needs --store etcd"),
        (
            vec!["--ha-group", "g1", "--store", "memory"],
            "--ha needs --store etcd",
        ),
        (
            [&["--ha", "--ha-lease-ttl", "500ms"][..], &etcd].concat(),
            "--ha-lease-ttl must be whole seconds",
        ),
        (
            [&["--ha", "--ha-lease-ttl", "1500ms"][..], &etcd].concat(),
            "--ha-lease-ttl must be whole seconds",
        ),
        (
            [&["--ha-lease-ttl", "3s"][..], &etcd].concat(),
            "--ha-lease-ttl and --ha-advertise apply only with --ha or --ha-group",
        ),
        (
            [&["--ha-advertise", "http://127.0.0.1:50051"][..], &etcd].concat(),
            "--ha-lease-ttl and --ha-advertise apply only with --ha or --ha-group",
        ),
        (
            [&["--ha-group", "a/b"][..], &etcd].concat(),
            "--ha-group 'a/b' must be letters",
        ),
    ];
    for (flags, expected) in cases {
        let args = [&common[..], &flags].concat();
        let (code, stderr) = exit_of(&args).await;
        assert_eq!(
            code,
            Some(1),
            "expected statemanager {flags:?} to exit with 1 (configuration error); stderr:\n{stderr}"
        );
        assert!(
            stderr.contains("configuration error") && stderr.contains(expected),
            "expected statemanager {flags:?} to say '{expected}'; stderr:\n{stderr}"
        );
    }
    // Listening on every address, a member must be told what to advertise.
    let (code, stderr) = exit_of(
        &[
            &[
                "--listen",
                "0.0.0.0:0",
                "--action-controller",
                "http://127.0.0.1:9",
                "--ha",
            ][..],
            &etcd,
        ]
        .concat(),
    )
    .await;
    assert_eq!(
        code,
        Some(1),
        "expected --ha on 0.0.0.0 without --ha-advertise to fail: {stderr}"
    );
    assert!(
        stderr.contains("--ha-advertise"),
        "expected the error to name --ha-advertise: {stderr}"
    );
}

#[tokio::test]
async fn sigterm_on_the_leader_hands_over_at_once() {
    let etcd = support::etcd();
    let keys = Keys::connect(&etcd).await;
    let ac = ActionController::start().await;
    let (a, b) = two_members(&ha_args(&etcd, &ac.url())).await;
    let index = settled_leader(&[&a, &b], Duration::from_secs(10)).await;
    let (leader, survivor) = if index == 0 { (a, b) } else { (b, a) };
    let mut to_leader = leader.client().await;
    assert_success(
        &send(
            &mut to_leader,
            change("t", "Idle", "Waiting", "before-term"),
        )
        .await,
        "Idle -> Waiting on the leader",
    );

    let asked = Instant::now();
    let status = leader.sigterm().await;
    assert_eq!(
        status.code(),
        Some(0),
        "expected the leader to exit 0 on SIGTERM: {status}"
    );
    // The resigning leader revoked its lease: no waiting out the TTL.
    let limit = TTL / 2;
    until_leads(&survivor, limit).await;
    println!(
        "after SIGTERM of the leader, the other led {:?} later",
        asked.elapsed()
    );
    until_metric_at_least(
        &survivor,
        "statemanager_ha_takeovers_total",
        1.0,
        Duration::from_secs(5),
    )
    .await;
    let mut sm = survivor.client().await;
    assert_eq!(
        state_of(&mut sm, "t").await,
        "Waiting",
        "expected the new leader to know t"
    );
    assert_success(
        &send(&mut sm, change("t", "Waiting", "Satisfied", "after-term")).await,
        "Waiting -> Satisfied on the new leader",
    );
    assert_eq!(
        keys.get("/scenario/t/state").await.as_deref(),
        Some("Satisfied")
    );
}

/// A report of `node` with its containers in `status` (`running`, `dead`).
fn node_report(
    node: &str,
    containers: &[&str],
    status: &str,
) -> transport_grpc::proto::monitoringserver::ContainerList {
    let exit = if status == "running" { 0 } else { 137 };
    support::report(
        node,
        containers
            .iter()
            .map(|name| support::container(name, support::podman_state(status, exit, false)))
            .collect(),
    )
}

/// Takeover resumes the outbox: a Reconcile the old leader delivered is not
/// sent again by the new one, and one still pending when the old leader
/// died is delivered by the new one, once.
#[tokio::test]
async fn a_new_leader_delivers_what_was_pending_and_repeats_nothing_delivered() {
    let etcd = support::etcd();
    let keys = Keys::connect(&etcd).await;
    keys.define_package("p1", &[("m1", "n1")]).await;
    keys.define_scenario("s1", "p1").await;
    keys.define_package("p2", &[("m2", "n2")]).await;
    keys.define_scenario("s2", "p2").await;
    let mut ac = ActionController::start().await;
    let (a, b) = two_members(&ha_args(&etcd, &ac.url())).await;
    let index = settled_leader(&[&a, &b], Duration::from_secs(10)).await;
    let (leader, survivor) = if index == 0 { (a, b) } else { (b, a) };
    until_metric_at_least(
        &leader,
        "statemanager_ha_takeovers_total",
        1.0,
        Duration::from_secs(5),
    )
    .await;
    let mut sm = leader.client().await;

    // p1 fails while the ActionController is up: its Reconcile is delivered
    // and its outbox record removed.
    for status in ["running", "dead"] {
        sm.send_changed_container_list(node_report("n1", &["model-m1"], status))
            .await
            .expect("the leader takes n1's report");
    }
    keys.eventually("/package/p1/state", Some("Error")).await;
    let delivered = ac.wait_for_reconciles(1, Duration::from_secs(5)).await;
    assert_eq!(delivered.len(), 1, "expected p1's Reconcile: {delivered:?}");
    keys.eventually_count("/statemanager/outbox/", 0).await;

    // p2 fails while it is down: its Reconcile waits in the outbox.
    ac.stop().await;
    for status in ["running", "dead"] {
        sm.send_changed_container_list(node_report("n2", &["model-m2"], status))
            .await
            .expect("the leader takes n2's report");
    }
    keys.eventually("/package/p2/state", Some("Error")).await;
    keys.eventually_count("/statemanager/outbox/", 1).await;

    leader.kill9();
    until_leads(&survivor, Duration::from_secs(10)).await;
    ac.up().await;
    let received = ac.wait_for_reconciles(2, Duration::from_secs(10)).await;
    assert_eq!(
        received.len(),
        2,
        "expected p2's pending Reconcile from the new leader: {received:?}"
    );
    keys.eventually_count("/statemanager/outbox/", 0).await;
    // Long enough for a repeated delivery (the outbox retries within
    // milliseconds while the ActionController is up) to show.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let scenarios: Vec<String> = ac
        .reconciles()
        .into_iter()
        .map(|r| r.scenario_name)
        .collect();
    assert_eq!(
        scenarios,
        ["s1", "s2"],
        "expected one Reconcile each, p1's not repeated by the new leader"
    );
}

/// With mutual TLS and a policy: a follower forwards over mutual TLS with
/// its own member certificate, and the leader decides the call as its
/// original caller's (the caller's allowed edge passes, another is denied
/// by the caller's rules), while a caller that is no member cannot speak
/// for another by setting the forwarding header itself.
#[tokio::test]
async fn with_mutual_tls_a_forwarded_call_is_decided_as_its_callers() {
    use transport_grpc::StateManagerClient;
    use transport_grpc::forward::FORWARDED_FOR_HEADER;
    use transport_grpc::testing::pki::{Ca, Files};

    const POLICY: &str = r#"
trust-domain = "piccolo"

[[rule]]
name = "filtergateway-conditions"
identities = ["component/filtergateway"]
transitions = ["scenario: Idle -> Waiting"]

[[rule]]
name = "readers"
identities = ["*"]
read = true
"#;
    let etcd = support::etcd();
    let keys = Keys::connect(&etcd).await;
    let ca = Ca::new("PICCOLO test CA");
    let files = Files::new();
    let member = ca.member("spiffe://piccolo/component/statemanager");
    let (cert, key) = files.leaf("member", &member);
    let client_ca = files.write("client-ca.pem", &ca.pem);
    let policy = files.write("policy.toml", POLICY);
    let ac = ActionController::start().await;
    let mut args = ha_args(&etcd, &ac.url());
    for (flag, path) in [
        ("--tls-cert", &cert),
        ("--tls-key", &key),
        ("--tls-client-ca", &client_ca),
        ("--policy", &policy),
    ] {
        args.extend([flag.to_owned(), path.display().to_string()]);
    }
    let (a, b) = two_members(&args).await;
    let index = settled_leader(&[&a, &b], Duration::from_secs(10)).await;
    let (leader, follower) = if index == 0 { (&a, &b) } else { (&b, &a) };
    until_metric_at_least(
        leader,
        "statemanager_ha_takeovers_total",
        1.0,
        Duration::from_secs(5),
    )
    .await;
    let connect = async |daemon: &Daemon, uri: &str, name: &str| {
        let tls = files.client(name, &ca, Some(&ca.client(uri, name)));
        StateManagerClient::connect_with_tls(&format!("https://{}", daemon.address), &tls)
            .await
            .unwrap_or_else(|e| panic!("{name} connects over mutual TLS: {e}"))
    };
    let gateway = connect(follower, "spiffe://piccolo/component/filtergateway", "fg").await;

    let mut allowed = change("s", "Idle", "Waiting", "fg-1");
    allowed.source = String::new();
    let answer = gateway
        .raw()
        .send_state_change(allowed)
        .await
        .expect("the follower forwards the FilterGateway's change")
        .into_inner();
    assert_success(
        &answer,
        "the FilterGateway's Idle -> Waiting through the follower",
    );
    keys.eventually("/scenario/s/state", Some("Waiting")).await;

    let revision = keys.revision().await;
    let mut denied = change("s", "Waiting", "Satisfied", "fg-2");
    denied.source = String::new();
    let answer = gateway
        .raw()
        .send_state_change(denied)
        .await
        .expect("the leader answers")
        .into_inner();
    assert_eq!(
        answer.error_code,
        ErrorCode::PermissionDenied as i32,
        "expected the leader to deny the FilterGateway an edge its rules do not give: {answer:?}"
    );

    // A NodeAgent claims to speak for the FilterGateway, straight to the leader.
    let nodeagent = connect(leader, "spiffe://piccolo/nodeagent/n1", "na").await;
    let mut forged = tonic::Request::new(change("s2", "Idle", "Waiting", "na-1"));
    forged.get_mut().source = String::new();
    forged.metadata_mut().insert(
        FORWARDED_FOR_HEADER,
        "spiffe://piccolo/component/filtergateway".parse().unwrap(),
    );
    let answer = nodeagent
        .raw()
        .send_state_change(forged)
        .await
        .expect("the leader answers")
        .into_inner();
    assert_eq!(
        answer.error_code,
        ErrorCode::PermissionDenied as i32,
        "expected the NodeAgent to stay itself despite the header: {answer:?}"
    );
    assert_eq!(
        keys.revision().await,
        revision,
        "expected nothing written by the denials"
    );
}
