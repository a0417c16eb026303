//! What the runs on the embedded store (`--store embedded`) use where the
//! etcd runs read or watch etcd: the definitions written into the fresh data
//! directory before the daemon opens it (the daemon owns the file while it
//! runs), reports applied round by round until answered (the daemon answers
//! a report once its transaction is fsync'd), the daemon's own commit counter
//! and outbox gauge for "quiet", and the final checks over gRPC and, once
//! the daemon has stopped, in the file itself.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use state_store::{Batch, StateStore};
use store_embedded::{EmbeddedConfig, EmbeddedStore};
use transport_grpc::proto::statemanager as sm;

use crate::kv;
use crate::report::RunResult;
use crate::scrape::{self, Metrics};
use crate::setup::Env;
use crate::topology::{Round, Topology};
use crate::tracker;

/// Keys per page when reading the file back.
const PAGE: usize = 10_000;

async fn open(dir: &Path) -> Result<EmbeddedStore> {
    let config = EmbeddedConfig::new(dir);
    tokio::task::spawn_blocking(move || EmbeddedStore::open(config))
        .await
        .context("opening the embedded store")?
        .with_context(|| format!("opening the embedded store in {}", dir.display()))
}

/// Writes `pairs` into the embedded store in `dir` (created when missing)
/// and closes it, in transactions of at most [`kv::TXN_OPS`] puts.
pub async fn seed(dir: &Path, pairs: &[(String, String)]) -> Result<()> {
    let store = open(dir).await?;
    for chunk in pairs.chunks(kv::TXN_OPS) {
        let batch = chunk.iter().fold(Batch::new(), |batch, (key, value)| {
            batch.put(key.clone(), value.clone().into_bytes())
        });
        store
            .apply(batch)
            .await
            .with_context(|| format!("writing the definitions into {}", dir.display()))?;
    }
    Ok(())
}

/// Every key (and its value) under `prefixes` in the embedded store in
/// `dir`; the daemon must have exited (it holds the file while it runs).
pub async fn read(dir: &Path, prefixes: &[&str]) -> Result<HashMap<String, String>> {
    let store = open(dir).await?;
    let mut out = HashMap::new();
    for prefix in prefixes {
        let (kvs, _) = state_store::get_all(&store, prefix, PAGE)
            .await
            .with_context(|| format!("reading {prefix} from {}", dir.display()))?;
        out.extend(kvs.into_iter().map(|kv| {
            let value = String::from_utf8_lossy(&kv.value).into_owned();
            (kv.key, value)
        }));
    }
    Ok(out)
}

/// Writes the definitions into the data directory of the daemon labelled
/// `label`, spawns it and waits until it lists every package.
pub async fn prepare(env: &mut Env, topo: Topology, label: &str) -> Result<()> {
    seed(&env.data_dir(label), &topo.definitions()).await?;
    env.start_daemon(label).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let listed = list(env, sm::ResourceType::Package, 1).await?;
        if usize::try_from(listed.total_count).unwrap_or(0) >= topo.packages {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the daemon lists {} of {} packages after 120 s; {}",
                listed.total_count,
                topo.packages,
                env.log_hint()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn list(
    env: &Env,
    kind: sm::ResourceType,
    limit: i32,
) -> Result<sm::ListResourcesByStateResponse> {
    let listed = env
        .sm()?
        .list_resources_by_state(sm::ListResourcesByStateRequest {
            resource_type: kind as i32,
            state: String::new(),
            label_selector: HashMap::new(),
            limit,
        })
        .await
        .context("ListResourcesByState")?
        .into_inner();
    if !listed.success {
        bail!("ListResourcesByState {kind:?}: {}", listed.message);
    }
    Ok(listed)
}

/// Every resource of `kind` the daemon knows, by name, with its state.
pub async fn states(env: &Env, kind: sm::ResourceType) -> Result<HashMap<String, String>> {
    Ok(list(env, kind, 0)
        .await?
        .resources
        .into_iter()
        .map(|r| (r.resource_name, r.current_state))
        .collect())
}

/// The package states (`Idle` when not listed) the rounds start from.
pub async fn package_states(env: &Env, topo: Topology) -> Result<Vec<String>> {
    let states = states(env, sm::ResourceType::Package).await?;
    Ok((0..topo.packages)
        .map(|p| {
            states
                .get(&format!("p{p}"))
                .cloned()
                .unwrap_or_else(|| "Idle".into())
        })
        .collect())
}

/// Sends every node's report of `round` at once and waits for every answer.
pub async fn apply_round(env: &Env, topo: Topology, round: &Round) -> Result<()> {
    let client = env.sm()?;
    let calls: Vec<_> = (0..topo.nodes)
        .map(|n| {
            let mut client = client.clone();
            let mut request = tonic::Request::new(topo.report(n, round));
            request.set_timeout(Duration::from_secs(30));
            tokio::spawn(async move { (n, client.send_changed_container_list(request).await) })
        })
        .collect();
    for call in calls {
        let (n, answer) = call.await.context("report task")?;
        answer.with_context(|| format!("node-{n}: report refused; {}", env.log_hint()))?;
    }
    Ok(())
}

/// The daemon's store transactions so far (`statemanager_commits_total`).
pub async fn commits(env: &Env) -> Result<u64> {
    let metrics = Metrics::fetch(env.metrics_addr()?).await?;
    // A counter: an integer, exact in an f64 up to 2^53.
    Ok(metrics.require(scrape::COMMITS)? as u64)
}

/// Waits until the daemon is quiet: the reconciles delivered, its outbox
/// empty and its commit counter unchanged for 500 ms.
pub async fn wait_quiet(env: &Env, reconciles: usize) -> Result<()> {
    let addr = env.metrics_addr()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    let mut since = Instant::now();
    loop {
        let metrics = Metrics::fetch(addr).await?;
        let commits = metrics.require(scrape::COMMITS)?;
        let outbox = metrics.require(scrape::OUTBOX_DEPTH)?;
        if last != Some(commits) {
            last = Some(commits);
            since = Instant::now();
        }
        let delivered = env.ac.reconciles().len() >= reconciles;
        if delivered && outbox == 0.0 && since.elapsed() >= Duration::from_millis(500) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the daemon did not go quiet within 30 s (outbox {outbox}, reconciles {} of {reconciles}, commits moving); {}",
                env.ac.reconciles().len(),
                env.log_hint()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The final checks of a run on the embedded store: every model and package
/// the daemon lists over gRPC is in the state the rules give for `last`;
/// then, once the daemon has stopped gracefully, the file holds exactly the
/// expected container, model and package keys (containers are not listed
/// over gRPC). Stops the daemon.
pub async fn verify_final(
    env: &mut Env,
    topo: Topology,
    label: &str,
    last: &Round,
    result: &mut RunResult,
) -> Result<()> {
    let expected: HashMap<String, String> = topo.expected_all(last).into_iter().collect();
    let mut listed = HashMap::new();
    for (kind, path) in [
        (sm::ResourceType::Model, "model"),
        (sm::ResourceType::Package, "package"),
    ] {
        listed.extend(
            states(env, kind)
                .await?
                .into_iter()
                .map(|(name, state)| (format!("/{path}/{name}/state"), state)),
        );
    }
    let over_grpc: Vec<(&String, &String)> = expected
        .iter()
        .filter(|(k, _)| k.starts_with("/model/") || k.starts_with("/package/"))
        .collect();
    compare("ListResourcesByState", &over_grpc, &listed, result);

    env.stop_daemon();
    let in_file = read(&env.data_dir(label), &tracker::PREFIXES).await?;
    let all: Vec<(&String, &String)> = expected.iter().collect();
    compare(
        "the store file after the daemon stopped",
        &all,
        &in_file,
        result,
    );
    let extra: Vec<&String> = in_file
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .collect();
    if !extra.is_empty() {
        result.fail(format!(
            "the store file after the daemon stopped: {} unexpected keys, e.g. {:?}",
            extra.len(),
            &extra[..extra.len().min(5)]
        ));
    }
    Ok(())
}

fn compare(
    source: &str,
    expected: &[(&String, &String)],
    actual: &HashMap<String, String>,
    result: &mut RunResult,
) {
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(k, v)| actual.get(*k) != Some(*v))
        .map(|(k, v)| {
            format!(
                "{k}={} (expected {v})",
                actual.get(*k).map(String::as_str).unwrap_or("<absent>")
            )
        })
        .collect();
    if !wrong.is_empty() {
        result.fail(format!(
            "{source}: {} of {} states differ from the rules, e.g. {}",
            wrong.len(),
            expected.len(),
            wrong[..wrong.len().min(5)].join(", ")
        ));
    }
}
