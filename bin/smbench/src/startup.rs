//! P7 start-up: a fresh etcd filled directly with >= 100,000 state keys of
//! a consistent topology (packages x 4 models x 2 containers, their
//! scenarios and definitions); then the daemon is spawned and timed until
//! its first successful `GetResourceState` answer.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tonic::transport::Endpoint;
use transport_grpc::proto::statemanager as sm;
use transport_grpc::proto::statemanager::state_manager_connection_client::StateManagerConnectionClient;

use crate::daemon::Daemon;
use crate::kv;
use crate::report::{Bound, RunResult};
use crate::setup::{Common, Env};
use crate::stats::SplitMix64;
use crate::topology::{MODELS, Topology};

/// Packages per node.
const PER_NODE: usize = 100;
const SCENARIO_STATES: [&str; 6] = [
    "Idle",
    "Waiting",
    "Satisfied",
    "Allowed",
    "Denied",
    "Completed",
];
const SAMPLES: usize = 100;

/// A free loopback port (bound, then released for the daemon).
fn free_port() -> Result<u16> {
    let probe = TcpListener::bind("127.0.0.1:0").context("probing a free port")?;
    Ok(probe.local_addr()?.port())
}

/// Polls every 5 ms until a `GetResourceState` answer succeeds; the instant it arrived.
async fn wait_ready(daemon: &mut Daemon, url: &str, probe: &str) -> Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if Instant::now() > deadline {
            bail!(
                "no GetResourceState answer within 120 s; log {}",
                daemon.log_path.display()
            );
        }
        if !daemon.is_running() {
            bail!(
                "the daemon exited during start-up; log {}",
                daemon.log_path.display()
            );
        }
        let endpoint = Endpoint::from_shared(url.to_owned())?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_millis(200));
        if let Ok(channel) = endpoint.connect().await {
            // The port is bound before the states are loaded: this call waits
            // on the open connection until the daemon serves.
            let mut client = StateManagerConnectionClient::new(channel);
            let mut request = tonic::Request::new(sm::ResourceStateRequest {
                resource_type: sm::ResourceType::Scenario as i32,
                resource_name: probe.to_owned(),
            });
            request.set_timeout(Duration::from_secs(60));
            if let Ok(answer) = client.get_resource_state(request).await
                && answer.into_inner().success
            {
                return Ok(Instant::now());
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One run of the start-up measurement with `packages` packages (14 state keys each).
pub async fn run(common: &Common, run: usize, packages: usize) -> Result<RunResult> {
    if common.daemon.is_some() {
        bail!("startup needs a daemon process of its own: run it without --daemon");
    }
    let packages = packages.div_ceil(PER_NODE) * PER_NODE;
    let topo = Topology {
        packages,
        nodes: packages / PER_NODE,
    };
    let mut result = RunResult::new(common.label("startup (P7)"));
    let env = Env::start(common).await?;
    let mut rng = SplitMix64::new(common.seed ^ 0x7374 ^ run as u64);
    let round = topo.draw_rounds(1, 0.0, &mut rng).remove(0);
    let mut pairs = topo.definitions();
    let mut expected = topo.expected_all(&round);
    let scenarios: Vec<&str> = (0..packages)
        .map(|_| SCENARIO_STATES[rng.below(6)])
        .collect();
    expected.extend(
        scenarios
            .iter()
            .enumerate()
            .map(|(p, s)| (format!("/scenario/s{p}/state"), (*s).to_owned())),
    );
    let state_keys = expected.len();
    pairs.extend(expected.iter().cloned());
    let total_keys = pairs.len();
    kv::put_all(&env.kv, pairs, 8).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let read_all = || async {
        let t0 = Instant::now();
        let (all, _) = kv::read_range(&env.kv, vec![0], vec![0], false).await?;
        Ok::<_, anyhow::Error>((t0.elapsed(), all.len()))
    };
    let mut baseline = None;
    if run.is_multiple_of(2) {
        baseline = Some(read_all().await?);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let revision_before = kv::revision(&env.kv).await?;
    let port = free_port()?;
    let mut daemon =
        Daemon::spawn(&env.spec(&format!("startup-r{run}"), &format!("127.0.0.1:{port}")))?;
    let ready_at = wait_ready(&mut daemon, &format!("http://127.0.0.1:{port}"), "s0").await?;
    daemon.wait_listening(Duration::from_secs(5)).await?;
    let ready = ready_at - daemon.spawned;
    let listening = daemon.listening_at.context("listening time")? - daemon.spawned;
    let (rss, _) = daemon.memory()?;
    let writes = kv::revision(&env.kv).await? - revision_before;
    if baseline.is_none() {
        tokio::time::sleep(Duration::from_millis(300)).await;
        baseline = Some(read_all().await?);
    }
    let (read_time, read_keys) = baseline.context("baseline")?;

    result.target(
        "ready_s",
        "s",
        ready.as_secs_f64(),
        "P7",
        Bound::AtMost(3.0),
    );
    result.fig("listening_line_s", "s", listening.as_secs_f64());
    result.fig("state_keys", "", state_keys as f64);
    result.fig("keys_in_etcd", "", total_keys as f64);
    result.fig("raw_read_all_keys_s", "s", read_time.as_secs_f64());
    result.fig(
        "ratio_ready_vs_raw_read",
        "x",
        ready.as_secs_f64() / read_time.as_secs_f64(),
    );
    result.fig("rss_after_start_mib", "MiB", rss as f64 / (1024.0 * 1024.0));
    result.fig("etcd_writes_during_start", "", writes as f64);
    if read_keys < total_keys {
        result.fail(format!(
            "the raw read saw {read_keys} keys, {total_keys} were written"
        ));
    }

    // The daemon loaded the states: a sample of scenarios, packages and models.
    let url = format!("http://127.0.0.1:{port}");
    let mut client = crate::setup::connect_sm(&url).await?;
    let lookup: std::collections::HashMap<&str, &str> = expected
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut wrong = Vec::new();
    for _ in 0..SAMPLES {
        let p = rng.below(packages);
        let (kind, name, key) = match rng.below(3) {
            0 => (
                sm::ResourceType::Scenario,
                format!("s{p}"),
                format!("/scenario/s{p}/state"),
            ),
            1 => (
                sm::ResourceType::Package,
                format!("p{p}"),
                format!("/package/p{p}/state"),
            ),
            _ => {
                let model = Topology::model(p, rng.below(MODELS));
                let key = format!("/model/{model}/state");
                (sm::ResourceType::Model, model, key)
            }
        };
        let answer = client
            .get_resource_state(sm::ResourceStateRequest {
                resource_type: kind as i32,
                resource_name: name.clone(),
            })
            .await
            .context("GetResourceState")?
            .into_inner();
        let got = answer
            .resource_state
            .map(|s| s.current_state)
            .unwrap_or_default();
        let want = lookup.get(key.as_str()).copied().unwrap_or("?");
        if !answer.success || got != want {
            wrong.push(format!("{name}: {got} (expected {want})"));
        }
    }
    if !wrong.is_empty() {
        result.fail(format!(
            "{} of {SAMPLES} sampled states differ from etcd, e.g. {}",
            wrong.len(),
            wrong[..wrong.len().min(5)].join(", ")
        ));
    }
    if writes > 0 {
        result.note(format!(
            "the daemon wrote {writes} revisions to etcd while starting on a consistent store"
        ));
    }
    if !result.failures.is_empty() {
        result.note(format!("daemon log: {}", daemon.log_path.display()));
    }
    daemon.stop();
    Ok(result)
}
