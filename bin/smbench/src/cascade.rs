//! What W2, W3 and memory share: definitions written to etcd, node reports
//! sent round by round with each node waiting until its report is durable
//! (every container, model and package key of the node equals the value the
//! rules give, as seen by the etcd watch), and the final verifications.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use transport_grpc::proto::monitoringserver as ms;
use transport_grpc::proto::statemanager as sm;

use crate::kv;
use crate::report::RunResult;
use crate::setup::Env;
use crate::stats::Latencies;
use crate::topology::{Round, Topology};
use crate::tracker::{self, Tracker};

/// How long one report may take to become durable before the run fails.
const DURABLE_WITHIN: Duration = Duration::from_secs(30);

/// Writes the definitions (before the daemon starts when `defs_first`,
/// after otherwise), starts the watch and waits until the daemon knows every
/// package and wrote its state key.
pub async fn prepare(
    env: &mut Env,
    topo: Topology,
    label: &str,
    defs_first: bool,
) -> Result<Tracker> {
    if defs_first {
        kv::put_all(&env.kv, topo.definitions(), 8).await?;
        env.start_daemon(label).await?;
    } else {
        env.start_daemon(label).await?;
        kv::put_all(&env.kv, topo.definitions(), 8).await?;
    }
    let tracker = Tracker::start(&env.kv).await?;
    wait_known(env, &tracker, topo).await?;
    Ok(tracker)
}

/// Waits until ListResourcesByState counts every package and every
/// `/package/p{i}/state` key exists.
pub async fn wait_known(env: &Env, tracker: &Tracker, topo: Topology) -> Result<()> {
    let mut client = env.sm()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let keys: Vec<String> = (0..topo.packages)
        .map(|p| format!("/package/p{p}/state"))
        .collect();
    loop {
        let listed = client
            .list_resources_by_state(sm::ListResourcesByStateRequest {
                resource_type: sm::ResourceType::Package as i32,
                state: String::new(),
                label_selector: HashMap::new(),
                limit: 1,
            })
            .await
            .context("ListResourcesByState")?
            .into_inner();
        if usize::try_from(listed.total_count).unwrap_or(0) >= topo.packages {
            let map = tracker.snapshot().await?;
            let missing = keys.iter().filter(|k| !map.contains_key(*k)).count();
            if missing == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{missing} package state keys still absent after 120 s; {}",
                    env.log_hint()
                );
            }
        } else if Instant::now() > deadline {
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

/// Every node's report and expected keys for every round, built before timing.
pub struct Plan {
    /// `[node][round]`.
    reports: Vec<Vec<ms::ContainerList>>,
    /// `[node][round]`.
    expected: Vec<Vec<Vec<(String, String)>>>,
}

impl Plan {
    /// The plan of `rounds` on `topo`.
    pub fn new(topo: Topology, rounds: &[Round]) -> Plan {
        let reports = (0..topo.nodes)
            .map(|n| rounds.iter().map(|r| topo.report(n, r)).collect())
            .collect();
        let expected = (0..topo.nodes)
            .map(|n| rounds.iter().map(|r| topo.expected(n, r)).collect())
            .collect();
        Plan { reports, expected }
    }
}

/// What the rounds measured.
pub struct RoundsOutcome {
    /// Reports sent.
    pub reports: usize,
    /// Wall time of all rounds.
    pub wall: Duration,
    /// Send -> the watch event that made the report durable.
    pub durable: Latencies,
    /// Send -> answer.
    pub answer: Latencies,
    /// Durable -> answer (0 when answered first): how long after its
    /// states were visible in etcd the daemon answered.
    pub durable_to_answer: Latencies,
}

/// One task per node sends its rounds' reports; each waits until its report
/// is durable before sending the next.
pub async fn run_rounds(env: &Env, tracker: &Tracker, plan: Plan) -> Result<RoundsOutcome> {
    let client = env.sm()?;
    let started = Instant::now();
    let tasks: Vec<_> = plan
        .reports
        .into_iter()
        .zip(plan.expected)
        .enumerate()
        .map(|(node, (reports, expected))| {
            let client = client.clone();
            let tracker = tracker.clone();
            tokio::spawn(async move {
                let mut durable = Latencies::default();
                // The answers are collected on the side: the next round is
                // sent as soon as this one is durable (P3 counts reports
                // until durable), and every answer must be OK.
                let mut answers = tokio::task::JoinSet::new();
                let mut durable_at_of = Vec::new();
                for (round, (report, expected)) in reports.into_iter().zip(expected).enumerate() {
                    let rx = tracker.expect(node, expected.clone())?;
                    let mut request = tonic::Request::new(report);
                    request.set_timeout(Duration::from_secs(30));
                    let t0 = Instant::now();
                    let mut call_client = client.clone();
                    answers.spawn(async move {
                        let answer = call_client.send_changed_container_list(request).await;
                        (round, t0, Instant::now(), answer.map(|_| ()))
                    });
                    let durable_at = match tokio::time::timeout(DURABLE_WITHIN, rx).await {
                        Ok(Ok(at)) => at,
                        Ok(Err(_)) => bail!("the etcd watch ended"),
                        Err(_) => bail!(
                            "node-{node} round {round}: {}",
                            tracker.describe_mismatch(&expected, DURABLE_WITHIN).await
                        ),
                    };
                    durable.record(durable_at.saturating_duration_since(t0));
                    durable_at_of.push(durable_at);
                }
                let mut answer = Latencies::default();
                let mut gap = Latencies::default();
                while let Some(joined) = answers.join_next().await {
                    let (round, t0, answered, status) = joined.context("answer task")?;
                    status.with_context(|| format!("node-{node} round {round}: report refused"))?;
                    answer.record(answered - t0);
                    gap.record(answered.saturating_duration_since(durable_at_of[round]));
                }
                Ok::<_, anyhow::Error>((durable, answer, gap))
            })
        })
        .collect();
    let mut outcome = RoundsOutcome {
        reports: 0,
        wall: Duration::ZERO,
        durable: Latencies::default(),
        answer: Latencies::default(),
        durable_to_answer: Latencies::default(),
    };
    let mut first_error = None;
    for task in tasks {
        match task.await.context("node task")? {
            Ok((durable, answer, gap)) => {
                outcome.durable.merge(&durable);
                outcome.answer.merge(&answer);
                outcome.durable_to_answer.merge(&gap);
            }
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    if let Some(error) = first_error {
        return Err(error.context(env.log_hint()));
    }
    outcome.wall = started.elapsed();
    outcome.reports = usize::try_from(outcome.durable.count()).unwrap_or(0);
    Ok(outcome)
}

/// A full read of etcd: every container, model and package key equals the
/// expected value of the last round, and (on a fresh etcd) no other key exists there.
pub async fn verify_final(
    env: &Env,
    topo: Topology,
    last: &Round,
    result: &mut RunResult,
) -> Result<()> {
    let expected: HashMap<String, String> = topo.expected_all(last).into_iter().collect();
    let mut actual = HashMap::new();
    for prefix in tracker::PREFIXES {
        actual.extend(kv::read_prefix(&env.kv, prefix, false).await?);
    }
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(k, v)| actual.get(*k) != Some(*v))
        .map(|(k, v)| {
            format!(
                "{k}={} (expected {v})",
                actual.get(k).map(String::as_str).unwrap_or("<absent>")
            )
        })
        .collect();
    if !wrong.is_empty() {
        result.fail(format!(
            "final etcd read: {} of {} keys differ from the rules, e.g. {}",
            wrong.len(),
            expected.len(),
            wrong[..wrong.len().min(5)].join(", ")
        ));
    }
    if env.etcd.is_some() {
        let extra: Vec<&String> = actual
            .keys()
            .filter(|k| !expected.contains_key(*k))
            .collect();
        if !extra.is_empty() {
            result.fail(format!(
                "final etcd read: {} unexpected keys, e.g. {:?}",
                extra.len(),
                &extra[..extra.len().min(5)]
            ));
        }
    }
    Ok(())
}

/// The Reconcile requests the ActionController double received match the
/// packages' entries into Error: the same count per scenario when the run was
/// shorter than the daemon's one-minute recovery re-check, at least as many otherwise.
pub async fn verify_reconciles(
    env: &Env,
    entries: &[usize],
    elapsed: Duration,
    result: &mut RunResult,
) {
    if !env.owns_daemon() {
        result.note("reconciles not checked (--daemon: its ActionController is not ours)");
        return;
    }
    let total: usize = entries.iter().sum();
    let received = env
        .ac
        .wait_for_reconciles(total, Duration::from_secs(15))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received = if env.ac.reconciles().len() > received.len() {
        env.ac.reconciles()
    } else {
        received
    };
    let mut per_scenario: HashMap<String, usize> = HashMap::new();
    for r in &received {
        *per_scenario.entry(r.scenario_name.clone()).or_default() += 1;
    }
    let exact = elapsed < Duration::from_secs(55);
    let mut wrong = Vec::new();
    for (p, &want) in entries.iter().enumerate() {
        let got = per_scenario.remove(&format!("s{p}")).unwrap_or(0);
        if got < want || (exact && got != want) {
            wrong.push(format!("s{p}: {got} (expected {want})"));
        }
    }
    for (scenario, got) in per_scenario {
        wrong.push(format!("{scenario}: {got} (expected 0)"));
    }
    result.fig("error_entries", "", total as f64);
    result.fig("reconciles_received", "", received.len() as f64);
    if !wrong.is_empty() {
        result.fail(format!(
            "Reconcile requests {} entries into Error ({} received for {total} entries): {}",
            if exact { "do not match" } else { "fewer than" },
            received.len(),
            wrong[..wrong.len().min(5)].join(", ")
        ));
    }
    if !exact {
        result.note("run longer than 55 s: the daemon may re-ask after its 1-minute recovery check, so only received >= entries was required");
    }
}

/// Waits until the daemon is quiet: the reconciles delivered, the outbox
/// empty and etcd's revision unchanged for 500 ms.
pub async fn wait_quiet(env: &Env, reconciles: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = kv::revision(&env.kv).await?;
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let revision = kv::revision(&env.kv).await?;
        if revision != last {
            last = revision;
            since = Instant::now();
        }
        let delivered = !env.owns_daemon() || env.ac.reconciles().len() >= reconciles;
        let outbox = kv::read_prefix(&env.kv, "/statemanager/outbox/", true)
            .await?
            .len();
        if delivered && outbox == 0 && since.elapsed() >= Duration::from_millis(500) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the daemon did not go quiet within 30 s (outbox {outbox}, reconciles {} of {reconciles}, revision moving); {}",
                env.ac.reconciles().len(),
                env.log_hint()
            );
        }
    }
}

/// The package states (`Idle` when absent) the rounds start from.
pub async fn package_states(tracker: &Tracker, topo: Topology) -> Result<Vec<String>> {
    let map = tracker.snapshot().await?;
    Ok((0..topo.packages)
        .map(|p| {
            map.get(&format!("/package/p{p}/state"))
                .cloned()
                .unwrap_or_else(|| "Idle".into())
        })
        .collect())
}
