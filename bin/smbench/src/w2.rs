//! W2 cascades (P3) and W3 quiet reports (P4) on W2's topology: 100
//! packages x 4 models x 2 containers on 4 nodes, 200 containers per report.
//! W3 also runs on the embedded store (`--store embedded`); W2 needs etcd.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::baseline;
use crate::cascade::{self, Plan};
use crate::embedded;
use crate::kv;
use crate::report::{Bound, RunResult};
use crate::setup::Common;
use crate::setup::Env;
use crate::stats::{Latencies, SplitMix64};
use crate::topology::Topology;

/// W2's topology.
pub const TOPOLOGY: Topology = Topology {
    packages: 100,
    nodes: 4,
};

/// Puts of the raw baseline at W2's concurrency (4).
const W2_BASELINE_PUTS: usize = 4_000;

/// W2's knobs.
#[derive(Debug, Clone, Copy)]
pub struct W2Options {
    /// Rounds of reports per node.
    pub rounds: usize,
    /// Fraction of the models given another state in each round after the first.
    pub flip: f64,
}

/// One run of W2.
pub async fn run_w2(common: &Common, run: usize, options: W2Options) -> Result<RunResult> {
    let topo = TOPOLOGY;
    let mut result = RunResult::new(common.label("W2 cascades"));
    let mut env = Env::start(common).await?;
    let tracker = cascade::prepare(&mut env, topo, &format!("w2-r{run}"), true).await?;
    let initial = cascade::package_states(&tracker, topo).await?;
    let mut rng = SplitMix64::new(common.seed ^ (run as u64).wrapping_mul(0x9E37));
    let rounds = topo.draw_rounds(options.rounds.max(1), options.flip, &mut rng);
    let entries = topo.error_entries(&initial, &rounds);
    let plan = Plan::new(topo, &rounds);
    let started = Instant::now();
    let clock = env.cpu_clock();
    let ((outcome, cpu), baselines) = baseline::alternate(
        run,
        baseline::measure(
            &env.kv,
            &format!("w2-r{run}"),
            topo.nodes,
            W2_BASELINE_PUTS,
            &clock,
        ),
        || async {
            let (outcome, cpu) = clock
                .measure(cascade::run_rounds(&env, &tracker, plan))
                .await;
            Ok((outcome?, cpu))
        },
    )
    .await?;
    env.check_alive()?;
    let per_s = outcome.reports as f64 / outcome.wall.as_secs_f64();
    result.target("reports_per_s", "/s", per_s, "P3", Bound::AtLeast(100.0));
    result.fig("durable_p50_ms", "ms", outcome.durable.ms(0.5));
    result.fig("durable_p90_ms", "ms", outcome.durable.ms(0.9));
    result.target(
        "durable_p99_ms",
        "ms",
        outcome.durable.ms(0.99),
        "P3",
        Bound::AtMost(50.0),
    );
    result.fig("durable_max_ms", "ms", outcome.durable.max_ms());
    result.fig("answer_p50_ms", "ms", outcome.answer.ms(0.5));
    result.fig("answer_p99_ms", "ms", outcome.answer.ms(0.99));
    result.fig(
        "durable_to_answer_p50_ms",
        "ms",
        outcome.durable_to_answer.ms(0.5),
    );
    result.fig(
        "durable_to_answer_p99_ms",
        "ms",
        outcome.durable_to_answer.ms(0.99),
    );
    baselines.add_to(&mut result);
    result.fig(
        "ratio_reports_vs_raw_puts",
        "x",
        per_s / baselines.at_c.per_s,
    );
    baselines.add_cpu_to(&mut result, &cpu, "report", outcome.reports);
    cascade::verify_final(
        &env,
        topo,
        rounds.last().expect("at least one round"),
        &mut result,
    )
    .await?;
    cascade::verify_reconciles(&env, &entries, started.elapsed(), &mut result).await;
    if !result.failures.is_empty() {
        result.note(env.log_hint());
    }
    Ok(result)
}

/// One run of W3 at `concurrency`: W2's first round applied and durable,
/// then `reports` copies of the nodes' last reports; the store must see no
/// write (etcd's revision, or on the embedded store the daemon's
/// `statemanager_commits_total`).
pub async fn run_w3(
    common: &Common,
    run: usize,
    concurrency: usize,
    reports: usize,
) -> Result<RunResult> {
    let topo = TOPOLOGY;
    // Every node's reports go over smbench's one connection: with mutual
    // TLS its identity needs W3's policy to report for any node.
    let common = &common.reporting();
    let mut result = RunResult::new(common.label(&format!("W3 quiet c={concurrency}")));
    let mut env = Env::start(common).await?;
    let label = common.file_label(&format!("w3-c{concurrency}-r{run}"));
    let mut rng = SplitMix64::new(common.seed ^ (run as u64).wrapping_mul(0x9E37));
    let rounds = topo.draw_rounds(1, 0.0, &mut rng);
    if env.embedded() {
        embedded::prepare(&mut env, topo, &label).await?;
        let initial = embedded::package_states(&env, topo).await?;
        let entries = topo.error_entries(&initial, &rounds);
        embedded::apply_round(&env, topo, &rounds[0]).await?;
        embedded::wait_quiet(&env, entries.iter().sum()).await?;
    } else {
        let tracker = cascade::prepare(&mut env, topo, &label, true).await?;
        let initial = cascade::package_states(&tracker, topo).await?;
        let entries = topo.error_entries(&initial, &rounds);
        cascade::run_rounds(&env, &tracker, Plan::new(topo, &rounds)).await?;
        cascade::wait_quiet(&env, entries.iter().sum()).await?;
    }
    let last: Vec<_> = (0..topo.nodes)
        .map(|n| topo.report(n, &rounds[0]))
        .collect();
    let clock = env.cpu_clock();
    let ((outcome, writes, cpu), baselines) = baseline::alternate(
        run,
        baseline::measure(&env.kv, &format!("w3-r{run}"), concurrency, reports, &clock),
        || async {
            let before = writes_so_far(&env).await?;
            let (outcome, cpu) = clock
                .measure(quiet(&env, &last, concurrency, reports))
                .await;
            let outcome = outcome?;
            let after = writes_so_far(&env).await?;
            Ok((outcome, after - before, cpu))
        },
    )
    .await?;
    env.check_alive()?;
    let (wall, latencies, failures) = outcome;
    let per_s = reports as f64 / wall.as_secs_f64();
    result.target("reports_per_s", "/s", per_s, "P4", Bound::AtLeast(2000.0));
    result.latencies("answer", &latencies);
    let writes_figure = if env.embedded() {
        "store_commits"
    } else {
        "etcd_writes"
    };
    result.target(writes_figure, "", writes as f64, "P4", Bound::AtMost(0.0));
    baselines.add_to(&mut result);
    result.fig(
        "ratio_reports_vs_raw_puts",
        "x",
        per_s / baselines.at_c.per_s,
    );
    baselines.add_cpu_to(&mut result, &cpu, "report", reports);
    if writes != 0 {
        result.fail(if env.embedded() {
            format!(
                "the daemon committed {writes} store transactions during the quiet reports (statemanager_commits_total; expected 0)"
            )
        } else {
            format!("etcd's revision moved by {writes} during the quiet reports (expected 0 writes)")
        });
    }
    if let Some((count, first)) = failures {
        result.fail(format!("{count} quiet reports failed, first: {first}"));
    }
    if env.embedded() {
        embedded::verify_final(&mut env, topo, &label, &rounds[0], &mut result).await?;
    } else {
        cascade::verify_final(&env, topo, &rounds[0], &mut result).await?;
    }
    if !result.failures.is_empty() {
        result.note(env.log_hint());
    }
    Ok(result)
}

/// Writes the store has seen so far: etcd's revision, or on the embedded
/// store the daemon's store transactions.
async fn writes_so_far(env: &Env) -> Result<i64> {
    if env.embedded() {
        Ok(i64::try_from(embedded::commits(env).await?).unwrap_or(i64::MAX))
    } else {
        kv::revision(&env.kv).await
    }
}

type QuietOutcome = (Duration, Latencies, Option<(usize, String)>);

/// `count` unchanged reports, `concurrency` in flight; task t sends node t mod nodes.
async fn quiet(
    env: &Env,
    last: &[transport_grpc::proto::monitoringserver::ContainerList],
    concurrency: usize,
    count: usize,
) -> Result<QuietOutcome> {
    let channel = env.channel()?;
    // Each node's report encoded once, as a NodeAgent would.
    let encoded: Vec<_> = last.iter().map(crate::raw::encode).collect();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let mut client = crate::raw::client(channel.clone());
            let next = next.clone();
            let report = encoded[t % encoded.len()].clone();
            tokio::spawn(async move {
                let mut latencies = Latencies::default();
                let mut failures = 0usize;
                let mut first = None;
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    let t0 = Instant::now();
                    let answer = crate::raw::send_report(
                        &mut client,
                        report.clone(),
                        Duration::from_secs(30),
                    )
                    .await;
                    latencies.record(t0.elapsed());
                    if let Err(status) = answer {
                        failures += 1;
                        first.get_or_insert_with(|| status.to_string());
                    }
                }
                (latencies, failures, first)
            })
        })
        .collect();
    let mut latencies = Latencies::default();
    let mut failures = 0;
    let mut first = None;
    for task in tasks {
        let (l, f, fst) = task.await.context("W3 task")?;
        latencies.merge(&l);
        failures += f;
        if first.is_none() {
            first = fst;
        }
    }
    let wall = started.elapsed();
    Ok((wall, latencies, first.map(|f| (failures, f))))
}
