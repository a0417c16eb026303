//! P6 memory: 2,500 packages x 4 models x 2 containers (10k models, 20k
//! containers, 2.5k scenarios) on 20 nodes, 1,000 containers per report.
//! The daemon's VmRSS after every key is durable and a few flip rounds,
//! against its own VmRSS right after start on an empty etcd.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cascade::{self, Plan};
use crate::kv;
use crate::report::{Bound, RunResult};
use crate::setup::{Common, Env};
use crate::stats::SplitMix64;
use crate::topology::Topology;
use crate::tracker::Tracker;

/// P6's topology.
pub const TOPOLOGY: Topology = Topology {
    packages: 2_500,
    nodes: 20,
};

const MIB: f64 = 1024.0 * 1024.0;

/// One run of the memory measurement, with `flip_rounds` rounds after the first.
pub async fn run(common: &Common, run: usize, flip: f64, flip_rounds: usize) -> Result<RunResult> {
    if common.daemon.is_some() {
        bail!("memory needs a daemon process of its own: run it without --daemon");
    }
    let topo = TOPOLOGY;
    let mut result = RunResult::new(common.label("memory (P6)"));
    let mut env = Env::start(common).await?;
    env.start_daemon(&format!("memory-r{run}")).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let daemon = env.daemon.as_ref().context("spawned daemon")?;
    let (rss_empty, _) = daemon.memory()?;
    kv::put_all(&env.kv, topo.definitions(), 8).await?;
    let tracker = Tracker::start(&env.kv).await?;
    cascade::wait_known(&env, &tracker, topo).await?;
    let initial = cascade::package_states(&tracker, topo).await?;
    let mut rng = SplitMix64::new(common.seed ^ 0x6d656d ^ run as u64);
    let rounds = topo.draw_rounds(1 + flip_rounds, flip, &mut rng);
    let entries = topo.error_entries(&initial, &rounds);
    let started = Instant::now();
    let outcome = cascade::run_rounds(&env, &tracker, Plan::new(topo, &rounds)).await?;
    env.check_alive()?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss, hwm) = env.daemon.as_ref().context("spawned daemon")?.memory()?;
    result.target(
        "rss_mib",
        "MiB",
        rss as f64 / MIB,
        "P6",
        Bound::AtMost(64.0),
    );
    result.fig("hwm_mib", "MiB", hwm as f64 / MIB);
    result.fig("baseline_rss_empty_mib", "MiB", rss_empty as f64 / MIB);
    result.fig("ratio_rss_vs_empty", "x", rss as f64 / rss_empty as f64);
    result.fig(
        "reports_per_s",
        "/s",
        outcome.reports as f64 / outcome.wall.as_secs_f64(),
    );
    result.fig("durable_p50_ms", "ms", outcome.durable.ms(0.5));
    result.fig("durable_p99_ms", "ms", outcome.durable.ms(0.99));
    cascade::verify_final(&env, topo, rounds.last().expect("rounds"), &mut result).await?;
    cascade::verify_reconciles(&env, &entries, started.elapsed(), &mut result).await;
    if !result.failures.is_empty() {
        result.note(env.log_hint());
    }
    Ok(result)
}
