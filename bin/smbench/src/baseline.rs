//! The raw etcd baseline, measured against the same etcd in the same run:
//! single puts of a short value to distinct keys under `/smbench/raw/`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use etcd_client::Client;

use crate::cpu::{CpuClock, CpuUse};
use crate::report::RunResult;
use crate::stats::Latencies;

/// Puts per run of the concurrency-1 latency baseline.
pub const C1_PUTS: usize = 1_000;

/// What a baseline measured.
pub struct Baseline {
    /// Concurrency.
    pub concurrency: usize,
    /// Puts per second over the wall time.
    pub per_s: f64,
    /// Put latencies.
    pub latencies: Latencies,
    /// The CPU the puts cost etcd and smbench.
    pub cpu: CpuUse,
    /// Puts made.
    pub count: usize,
}

/// `count` single puts of `Completed` to distinct keys, `concurrency` in flight.
pub async fn raw_puts(
    kv: &Client,
    tag: &str,
    concurrency: usize,
    count: usize,
    clock: &CpuClock,
) -> Result<Baseline> {
    let (result, mut cpu) = clock.measure(puts(kv, tag, concurrency, count)).await;
    // The daemon idles meanwhile: only etcd and the client count.
    cpu.daemon = None;
    let (per_s, latencies) = result?;
    Ok(Baseline {
        concurrency,
        per_s,
        latencies,
        cpu,
        count,
    })
}

async fn puts(
    kv: &Client,
    tag: &str,
    concurrency: usize,
    count: usize,
) -> Result<(f64, Latencies)> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let mut kv = kv.clone();
            let next = next.clone();
            let tag = tag.to_owned();
            tokio::spawn(async move {
                let mut latencies = Latencies::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return Ok::<_, anyhow::Error>(latencies);
                    }
                    let key = format!("/smbench/raw/{tag}/{i:08}");
                    let t0 = Instant::now();
                    kv.put(key, "Completed", None).await.context("raw put")?;
                    latencies.record(t0.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Latencies::default();
    for task in tasks {
        latencies.merge(&task.await.context("baseline task")??);
    }
    let wall = started.elapsed();
    Ok((count as f64 / wall.as_secs_f64().max(1e-9), latencies))
}

/// The two baselines of a workload at `concurrency`: throughput there, and
/// latency at concurrency 1.
pub struct Baselines {
    /// At the workload's concurrency.
    pub at_c: Baseline,
    /// At concurrency 1.
    pub c1: Baseline,
}

/// Measures [`Baselines`]: `count` puts at `concurrency`, [`C1_PUTS`] at 1.
pub async fn measure(
    kv: &Client,
    tag: &str,
    concurrency: usize,
    count: usize,
    clock: &CpuClock,
) -> Result<Baselines> {
    let at_c = raw_puts(
        kv,
        &format!("{tag}-c{concurrency}"),
        concurrency,
        count,
        clock,
    )
    .await?;
    let c1 = if concurrency == 1 {
        Baseline {
            concurrency: 1,
            per_s: at_c.per_s,
            latencies: at_c.latencies.clone(),
            cpu: at_c.cpu,
            count: at_c.count,
        }
    } else {
        raw_puts(kv, &format!("{tag}-c1"), 1, C1_PUTS, clock).await?
    };
    Ok(Baselines { at_c, c1 })
}

impl Baselines {
    /// Adds the baseline figures to a run.
    pub fn add_to(&self, result: &mut RunResult) {
        let c = self.at_c.concurrency;
        result.fig(&format!("raw_put_c{c}_per_s"), "/s", self.at_c.per_s);
        result.fig(
            &format!("raw_put_c{c}_p50_ms"),
            "ms",
            self.at_c.latencies.ms(0.5),
        );
        result.fig(
            &format!("raw_put_c{c}_p99_ms"),
            "ms",
            self.at_c.latencies.ms(0.99),
        );
        if c != 1 {
            result.fig("raw_put_c1_p50_ms", "ms", self.c1.latencies.ms(0.5));
            result.fig("raw_put_c1_p99_ms", "ms", self.c1.latencies.ms(0.99));
        }
    }

    /// Adds the CPU per put at the workload's concurrency, and the workload's
    /// CPU per operation (`ours`, `operations` of them) with the ratio of the
    /// two totals.
    pub fn add_cpu_to(&self, result: &mut RunResult, ours: &CpuUse, unit: &str, operations: usize) {
        let ours = ours.add_to(result, &format!("cpu_per_{unit}"), operations);
        let c = self.at_c.concurrency;
        let raw = self
            .at_c
            .cpu
            .add_to(result, &format!("raw_cpu_per_put_c{c}"), self.at_c.count);
        if let (Some(ours), Some(raw)) = (ours, raw)
            && raw > 0.0
        {
            result.fig(&format!("cpu_ratio_{unit}_vs_put"), "x", ours / raw);
        }
    }
}

/// Runs `workload` and the baselines in the order of the run: baseline
/// first in odd runs (1, 3, ...), workload first in even runs, so drift of
/// the machine or of etcd hits both.
pub async fn alternate<W, F, T>(
    run: usize,
    baseline: impl std::future::Future<Output = Result<Baselines>>,
    workload: W,
) -> Result<(T, Baselines)>
where
    W: FnOnce() -> F,
    F: std::future::Future<Output = Result<T>>,
{
    if run.is_multiple_of(2) {
        let b = baseline.await?;
        settle().await;
        let w = workload().await?;
        Ok((w, b))
    } else {
        let w = workload().await?;
        settle().await;
        let b = baseline.await?;
        Ok((w, b))
    }
}

/// A short pause between two measurements of one run.
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}
