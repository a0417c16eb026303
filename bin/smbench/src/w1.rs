//! W1 scenario lifecycles (P1 at concurrency 64, P2 at concurrency 1): S
//! distinct scenarios, each Idle -> Waiting -> Satisfied -> Allowed ->
//! Completed by `SendStateChange`, C client tasks pulling scenario indexes
//! from a shared counter. Verified afterwards by reading etcd, or on the
//! embedded store (`--store embedded`) over the daemon's gRPC API.
//!
//! Each step is sent on the connection of the component that requests it
//! (one connection each for FilterGateway, PolicyManager and
//! ActionController, shared by the C tasks): with `--tls mtls` each
//! presents its component's certificate, so the daemon's default policy
//! allows exactly these edges. Before the timed part, [`CONNECTS`] fresh
//! connections are timed (TCP, the TLS handshake, HTTP/2's preface) with
//! their first call.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use transport_grpc::proto::statemanager as sm;

use crate::baseline;
use crate::kv;
use crate::report::{Bound, RunResult};
use crate::scrape::CommitCounters;
use crate::setup::{Common, Env, Sm, client_on};
use crate::stats::Latencies;

/// STATE-MACHINES §4: each step's target and the component that requests it.
pub const STEPS: [(&str, &str, &str); 4] = [
    ("Idle", "Waiting", "FilterGateway"),
    ("Waiting", "Satisfied", "FilterGateway"),
    ("Satisfied", "Allowed", "PolicyManager"),
    ("Allowed", "Completed", "ActionController"),
];

/// The request of W1's step `step` (an index into [`STEPS`]) for scenario
/// `name`, as the step's component sends it.
pub fn step_change(name: &str, step: usize) -> sm::StateChange {
    let (from, to, source) = STEPS[step];
    sm::StateChange {
        resource_type: sm::ResourceType::Scenario as i32,
        resource_name: name.to_owned(),
        current_state: from.into(),
        target_state: to.into(),
        transition_id: format!("{name}-{step}"),
        timestamp_ns: 0,
        source: source.into(),
    }
}

/// The default number of scenarios at a concurrency.
pub fn default_scenarios(concurrency: usize) -> usize {
    if concurrency >= 16 { 16_000 } else { 2_000 }
}

struct Outcome {
    wall: Duration,
    latencies: Latencies,
    failures: usize,
    first_failure: Option<String>,
}

/// One client per step, on the connection of the step's component (one
/// connection per component, shared by every task).
async fn step_clients(env: &Env) -> Result<Vec<Sm>> {
    let mut by_component: HashMap<&str, Sm> = HashMap::new();
    let mut clients = Vec::new();
    for (_, _, source) in STEPS {
        let client = match by_component.get(source) {
            Some(client) => client.clone(),
            None => {
                let client = client_on(env.connect_as(source).await?);
                by_component.insert(source, client.clone());
                client
            }
        };
        clients.push(client);
    }
    Ok(clients)
}

/// Fresh connections timed before the workload.
pub const CONNECTS: usize = 20;

/// `CONNECTS` fresh connections as the FilterGateway, one after the other:
/// the time to connect (TCP and, with mutual TLS, the handshake as the
/// client sees it, and HTTP/2's preface), and to connect and have a first
/// call answered (GetResourceState of an unknown scenario: with mutual TLS
/// the server has then checked the client certificate and the policy).
async fn time_connects(env: &Env) -> Result<(Latencies, Latencies)> {
    let tls = env.client_tls(STEPS[0].2)?;
    let endpoint = crate::pki::endpoint(env.url()?, tls.as_ref())?;
    let mut connect = Latencies::default();
    let mut first_call = Latencies::default();
    for i in 0..CONNECTS {
        let t0 = Instant::now();
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("fresh connection {i} to {}", env.url().unwrap_or("?")))?;
        connect.record(t0.elapsed());
        let mut client = client_on(channel);
        client
            .get_resource_state(sm::ResourceStateRequest {
                resource_type: sm::ResourceType::Scenario as i32,
                resource_name: format!("w1-connect-{i}"),
            })
            .await
            .with_context(|| format!("first call on fresh connection {i}"))?;
        first_call.record(t0.elapsed());
    }
    Ok((connect, first_call))
}

async fn drive(env: &Env, prefix: &str, scenarios: usize, concurrency: usize) -> Result<Outcome> {
    let clients = step_clients(env).await?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let mut clients = clients.clone();
            let next = next.clone();
            let prefix = prefix.to_owned();
            tokio::spawn(async move {
                let mut latencies = Latencies::default();
                let mut failures = 0usize;
                let mut first_failure = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= scenarios {
                        return (latencies, failures, first_failure);
                    }
                    let name = format!("{prefix}-{i}");
                    for (step, (from, to, _)) in STEPS.iter().enumerate() {
                        let mut call = tonic::Request::new(step_change(&name, step));
                        call.set_timeout(Duration::from_secs(30));
                        let t0 = Instant::now();
                        let answer = clients[step].send_state_change(call).await;
                        latencies.record(t0.elapsed());
                        let problem = match answer {
                            Ok(a) => {
                                let a = a.into_inner();
                                (a.error_code != sm::ErrorCode::Success as i32).then(|| {
                                    format!(
                                        "'{name}' {from}->{to}: {} {}",
                                        sm::ErrorCode::try_from(a.error_code)
                                            .map(|c| c.as_str_name().to_owned())
                                            .unwrap_or_else(|_| a.error_code.to_string()),
                                        a.message
                                    )
                                })
                            }
                            Err(status) => Some(format!("'{name}' {from}->{to}: gRPC {status}")),
                        };
                        if let Some(problem) = problem {
                            failures += 1;
                            first_failure.get_or_insert(problem);
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    let mut outcome = Outcome {
        wall: Duration::ZERO,
        latencies: Latencies::default(),
        failures: 0,
        first_failure: None,
    };
    for task in tasks {
        let (latencies, failures, first) = task.await.context("W1 task")?;
        outcome.latencies.merge(&latencies);
        outcome.failures += failures;
        if outcome.first_failure.is_none() {
            outcome.first_failure = first;
        }
    }
    outcome.wall = started.elapsed();
    Ok(outcome)
}

/// History reads in flight while verifying over gRPC.
const HISTORY_READS_IN_FLIGHT: usize = 16;

/// Every scenario `{prefix}-{i}` reads `Completed` and has exactly 4 history records.
async fn verify(env: &Env, prefix: &str, scenarios: usize, result: &mut RunResult) -> Result<()> {
    let states: HashMap<String, String> = kv::read_prefix(&env.kv, "/scenario/", false)
        .await?
        .into_iter()
        .collect();
    let mut history: HashMap<String, usize> = HashMap::new();
    for (key, _) in kv::read_prefix(&env.kv, "/statemanager/history/scenario/", true).await? {
        if let Some(name) = key
            .strip_prefix("/statemanager/history/scenario/")
            .and_then(|rest| rest.rsplit_once('/'))
            .map(|(name, _)| name)
            && name.starts_with(prefix)
        {
            *history.entry(name.to_owned()).or_default() += 1;
        }
    }
    let mut wrong_state = Vec::new();
    let mut wrong_history = Vec::new();
    for i in 0..scenarios {
        let name = format!("{prefix}-{i}");
        let state = states.get(&format!("/scenario/{name}/state"));
        if state.map(String::as_str) != Some("Completed") {
            wrong_state.push(format!(
                "{name}={}",
                state.map(String::as_str).unwrap_or("<absent>")
            ));
        }
        let records = history.get(&name).copied().unwrap_or(0);
        if records != 4 {
            wrong_history.push(format!("{name}: {records} records"));
        }
    }
    if !wrong_state.is_empty() {
        result.fail(format!(
            "{} of {scenarios} scenarios not Completed in etcd, e.g. {}",
            wrong_state.len(),
            wrong_state[..wrong_state.len().min(5)].join(", ")
        ));
    }
    if !wrong_history.is_empty() {
        result.fail(format!(
            "{} of {scenarios} scenarios without exactly 4 history records, e.g. {}",
            wrong_history.len(),
            wrong_history[..wrong_history.len().min(5)].join(", ")
        ));
    }
    Ok(())
}

/// Over the daemon's gRPC API: ListResourcesByState lists every scenario
/// `{prefix}-{i}` as `Completed`, and GetResourceStateHistory gives each
/// exactly 4 records, Waiting, Satisfied, Allowed, Completed.
async fn verify_over_grpc(
    env: &Env,
    prefix: &str,
    scenarios: usize,
    result: &mut RunResult,
) -> Result<()> {
    let mut client = env.sm()?;
    let listed = client
        .list_resources_by_state(sm::ListResourcesByStateRequest {
            resource_type: sm::ResourceType::Scenario as i32,
            state: "Completed".into(),
            label_selector: HashMap::new(),
            limit: 0,
        })
        .await
        .context("ListResourcesByState")?
        .into_inner();
    if !listed.success {
        result.fail(format!("ListResourcesByState failed: {}", listed.message));
        return Ok(());
    }
    let completed: std::collections::HashSet<String> = listed
        .resources
        .into_iter()
        .map(|r| r.resource_name)
        .collect();
    let not_completed: Vec<String> = (0..scenarios)
        .map(|i| format!("{prefix}-{i}"))
        .filter(|name| !completed.contains(name))
        .collect();
    if !not_completed.is_empty() {
        let mut examples = Vec::new();
        for name in not_completed.iter().take(5) {
            let state = client
                .get_resource_state(sm::ResourceStateRequest {
                    resource_type: sm::ResourceType::Scenario as i32,
                    resource_name: name.clone(),
                })
                .await
                .map(|a| {
                    let a = a.into_inner();
                    match a.resource_state {
                        Some(s) if a.success => s.current_state,
                        _ => format!("<{}>", a.message),
                    }
                })
                .unwrap_or_else(|status| format!("<gRPC {status}>"));
            examples.push(format!("{name}={state}"));
        }
        result.fail(format!(
            "{} of {scenarios} scenarios not listed Completed by the daemon, e.g. {}",
            not_completed.len(),
            examples.join(", ")
        ));
    }
    let wrong_history: Vec<String> = futures::stream::iter(0..scenarios)
        .map(|i| {
            let mut client = client.clone();
            let name = format!("{prefix}-{i}");
            async move {
                let answer = client
                    .get_resource_state_history(sm::ResourceStateHistoryRequest {
                        resource_type: sm::ResourceType::Scenario as i32,
                        resource_name: name.clone(),
                        start_time_ns: 0,
                        end_time_ns: 0,
                        limit: 0,
                    })
                    .await;
                let problem = match answer {
                    Err(status) => Some(format!("gRPC {status}")),
                    Ok(a) => {
                        let a = a.into_inner();
                        let targets: Vec<&str> =
                            a.history.iter().map(|h| h.to_state.as_str()).collect();
                        let as_expected = targets.len() == STEPS.len()
                            && targets
                                .iter()
                                .zip(STEPS)
                                .all(|(got, (_, want, _))| got.eq_ignore_ascii_case(want));
                        if !a.success {
                            Some(a.message)
                        } else if as_expected {
                            None
                        } else {
                            Some(format!("{} records to {targets:?}", targets.len()))
                        }
                    }
                };
                problem.map(|p| format!("{name}: {p}"))
            }
        })
        .buffer_unordered(HISTORY_READS_IN_FLIGHT)
        .filter_map(|problem| async move { problem })
        .collect()
        .await;
    if !wrong_history.is_empty() {
        result.fail(format!(
            "{} of {scenarios} scenarios without exactly 4 history records Waiting, Satisfied, Allowed, Completed (GetResourceStateHistory), e.g. {}",
            wrong_history.len(),
            wrong_history[..wrong_history.len().min(5)].join(", ")
        ));
    }
    Ok(())
}

/// One run of W1 at `concurrency` with `scenarios` scenarios, against a
/// fresh etcd (the baseline's, and the daemon's unless on the embedded store)
/// and daemon.
pub async fn run(
    common: &Common,
    run: usize,
    concurrency: usize,
    scenarios: usize,
) -> Result<RunResult> {
    let mut result = RunResult::new(common.label(&format!("W1 c={concurrency}")));
    let mut env = Env::start(common).await?;
    env.start_daemon(&common.file_label(&format!("w1-c{concurrency}-r{run}")))
        .await?;
    let prefix = format!("w1-{}-r{run}-c{concurrency}", common.session);
    let transitions = scenarios * STEPS.len();
    let (connects, first_calls) = time_connects(&env).await?;
    let clock = env.cpu_clock();
    let metrics = env.daemon.as_ref().and_then(|d| d.metrics);
    let ((outcome, cpu, commits), baselines) = baseline::alternate(
        run,
        baseline::measure(
            &env.kv,
            &format!("w1-r{run}"),
            concurrency,
            transitions,
            &clock,
        ),
        || async {
            let before = CommitCounters::read(metrics).await;
            let (outcome, cpu) = clock
                .measure(drive(&env, &prefix, scenarios, concurrency))
                .await;
            let after = CommitCounters::read(metrics).await;
            Ok((outcome?, cpu, before.zip(after)))
        },
    )
    .await?;
    env.check_alive()?;
    let per_s = transitions as f64 / outcome.wall.as_secs_f64();
    let base = &baselines.at_c;
    result.fig("transitions_per_s", "/s", per_s);
    result.latencies("latency", &outcome.latencies);
    baselines.add_to(&mut result);
    if concurrency == 64 {
        result.target(
            "ratio_vs_raw_put_throughput",
            "x",
            per_s / base.per_s,
            "P1",
            Bound::AtLeast(1.0),
        );
    } else {
        result.fig("ratio_vs_raw_put_throughput", "x", per_s / base.per_s);
    }
    if concurrency == 1 {
        let p50 = outcome.latencies.ms(0.5);
        let raw = baselines.c1.latencies.ms(0.5);
        result.target(
            "p50_minus_raw_p50_ms",
            "ms",
            p50 - raw,
            "P2",
            Bound::AtMost(0.5),
        );
        result.fig("ratio_p50_vs_raw_p50", "x", p50 / raw);
    }
    baselines.add_cpu_to(&mut result, &cpu, "transition", transitions);
    result.fig("connect_p50_ms", "ms", connects.ms(0.5));
    result.fig("connect_max_ms", "ms", connects.max_ms());
    result.fig("connect_first_call_p50_ms", "ms", first_calls.ms(0.5));
    if let Some((before, after)) = commits {
        after.add_since(&before, &mut result, "transition", transitions);
    }
    if outcome.failures > 0 {
        result.fail(format!(
            "{} answers were not ERROR_CODE_SUCCESS, first: {}; {}",
            outcome.failures,
            outcome.first_failure.unwrap_or_default(),
            env.log_hint()
        ));
    }
    if env.embedded() {
        verify_over_grpc(&env, &prefix, scenarios, &mut result).await?;
    } else {
        verify(&env, &prefix, scenarios, &mut result).await?;
    }
    if !result.failures.is_empty() {
        result.note(env.log_hint());
    }
    Ok(result)
}
