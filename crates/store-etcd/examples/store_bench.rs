//! EtcdStore::apply against raw etcd-client requests, in the same run, against
//! the same etcd.
//!
//! For each shape (1 key, 8 keys) and concurrency (1, 64) it starts a fresh
//! etcd (or uses `--endpoint`), warms up, then alternates short rounds of the
//! variants so that drift in etcd's and the machine's speed hits all of them
//! alike; the ratio column is the median of the per-round ratios:
//!
//! - `raw`: what a plain client would send: one put (1 key), or a txn of 8
//!   puts (8 keys), without guards;
//! - `raw txn` (1 key only): a txn holding that one put, without guards: it
//!   separates etcd's cost of a transaction from the cost of its compares;
//! - `raw guarded`: the same etcd request EtcdStore sends, built by hand with
//!   etcd-client: a txn with a `mod_revision` compare per key and the puts
//!   (no failure branch: EtcdStore reads the guards only after a failure);
//! - `raw guarded, failure reads` (with `--failure-reads`): the same with
//!   keys-only reads of the guarded keys as the failure branch, the request
//!   EtcdStore sent before, to show what that branch costs;
//! - `ours`: `EtcdStore::apply` of a guarded batch, as the engine writes.
//!
//! Every worker owns its keys and guards each write with the revision of its
//! previous one, so no guard fails.
//!
//! ```text
//! cargo run --release -p store-etcd --example store_bench
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
use state_store::{Batch, StateStore};
use store_etcd::{EtcdConfig, EtcdStore};

#[derive(Parser, Debug)]
#[command(about = "EtcdStore::apply vs raw etcd-client requests")]
struct Args {
    /// Use this etcd instead of starting a fresh one per scenario.
    #[arg(long)]
    endpoint: Option<String>,
    /// Measured rounds per variant and scenario (alternating).
    #[arg(long, default_value_t = 8)]
    rounds: usize,
    /// Length of one round in milliseconds.
    #[arg(long, default_value_t = 1000)]
    round_ms: u64,
    /// Warm-up per scenario in milliseconds (all variants).
    #[arg(long, default_value_t = 500)]
    warmup_ms: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 16)]
    value_bytes: usize,
    /// Batch sizes to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 8])]
    keys: Vec<usize>,
    /// Concurrencies to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 64])]
    concurrency: Vec<usize>,
    /// Also measure the guarded txn with a failure branch of keys-only
    /// reads of the guarded keys (what EtcdStore sent before it read a
    /// failed guard afterwards), to show what that branch costs.
    #[arg(long)]
    failure_reads: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Raw,
    RawTxn,
    RawGuarded,
    RawGuardedWithReads,
    Ours,
}

impl Variant {
    /// The variants measured for a batch of `keys` keys; `Ours` comes last.
    fn for_keys(keys: usize, failure_reads: bool) -> Vec<Variant> {
        let mut variants = vec![Variant::Raw];
        if keys == 1 {
            variants.push(Variant::RawTxn);
        }
        if failure_reads {
            variants.push(Variant::RawGuardedWithReads);
        }
        variants.extend([Variant::RawGuarded, Variant::Ours]);
        variants
    }

    fn name(self) -> &'static str {
        match self {
            Variant::Raw => "raw",
            Variant::RawTxn => "raw txn",
            Variant::RawGuarded => "raw guarded",
            Variant::RawGuardedWithReads => "raw guarded, failure reads",
            Variant::Ours => "ours",
        }
    }
}

#[derive(Default)]
struct Measured {
    /// Requests per second of each round.
    throughputs: Vec<f64>,
    latencies: Vec<Duration>,
}

impl Measured {
    fn median_throughput(&self) -> f64 {
        let mut t = self.throughputs.clone();
        t.sort_by(f64::total_cmp);
        t.get(t.len() / 2).copied().unwrap_or(0.0)
    }

    fn percentile(&self, p: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort_unstable();
        if l.is_empty() {
            return Duration::ZERO;
        }
        let index = ((l.len() as f64 - 1.0) * p).round() as usize;
        l[index.min(l.len() - 1)]
    }
}

struct Target {
    raw: Client,
    store: Arc<EtcdStore>,
    value: Vec<u8>,
}

/// One worker's keys and the revision of its last write.
struct Worker {
    keys: Vec<String>,
    revision: i64,
}

async fn one_request(target: &Target, variant: Variant, worker: &mut Worker) -> anyhow::Result<()> {
    match variant {
        Variant::Raw => {
            let mut raw = target.raw.clone();
            if worker.keys.len() == 1 {
                raw.put(worker.keys[0].as_str(), target.value.clone(), None)
                    .await?;
            } else {
                let puts: Vec<TxnOp> = worker
                    .keys
                    .iter()
                    .map(|k| TxnOp::put(k.as_str(), target.value.clone(), None))
                    .collect();
                raw.txn(Txn::new().and_then(puts)).await?;
            }
        }
        Variant::RawTxn => {
            let mut raw = target.raw.clone();
            let puts: Vec<TxnOp> = worker
                .keys
                .iter()
                .map(|k| TxnOp::put(k.as_str(), target.value.clone(), None))
                .collect();
            raw.txn(Txn::new().and_then(puts)).await?;
        }
        Variant::RawGuarded | Variant::RawGuardedWithReads => {
            let mut raw = target.raw.clone();
            let compares: Vec<Compare> = worker
                .keys
                .iter()
                .map(|k| Compare::mod_revision(k.as_str(), CompareOp::Equal, worker.revision))
                .collect();
            let puts: Vec<TxnOp> = worker
                .keys
                .iter()
                .map(|k| TxnOp::put(k.as_str(), target.value.clone(), None))
                .collect();
            let mut txn = Txn::new().when(compares).and_then(puts);
            if variant == Variant::RawGuardedWithReads {
                let reads: Vec<TxnOp> = worker
                    .keys
                    .iter()
                    .map(|k| TxnOp::get(k.as_str(), Some(GetOptions::new().with_keys_only())))
                    .collect();
                txn = txn.or_else(reads);
            }
            let response = raw.txn(txn).await?;
            if !response.succeeded() {
                bail!("a raw guarded txn failed its guard");
            }
            worker.revision = response.header().context("no header")?.revision();
        }
        Variant::Ours => {
            let batch = worker.keys.iter().fold(Batch::new(), |b, k| {
                b.guard(k.as_str(), worker.revision)
                    .put(k.as_str(), target.value.clone())
            });
            worker.revision = target.store.apply(batch).await?.revision;
        }
    }
    Ok(())
}

/// Runs `concurrency` workers of `variant` for `duration`; returns requests/s
/// and every request's latency.
async fn run_round(
    target: &Arc<Target>,
    variant: Variant,
    keys: usize,
    concurrency: usize,
    duration: Duration,
    round: usize,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|w| {
            let target = Arc::clone(target);
            tokio::spawn(async move {
                // Fresh keys per round: the first guard expects "absent".
                let mut worker = Worker {
                    keys: (0..keys)
                        .map(|k| format!("/bench/{}/r{round}/w{w}/k{k}", variant.name()))
                        .collect(),
                    revision: 0,
                };
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    one_request(&target, variant, &mut worker).await?;
                    latencies.push(t.elapsed());
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok((all.len() as f64 / elapsed, all))
}

async fn scenario(
    args: &Args,
    variants: &[Variant],
    keys: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<Measured>> {
    let etcd = match &args.endpoint {
        Some(_) => None,
        None => Some(etcd_harness::Etcd::start().context("starting etcd")?),
    };
    let endpoint = match (&args.endpoint, &etcd) {
        (Some(endpoint), _) => endpoint.clone(),
        (None, Some(etcd)) => etcd.endpoint(),
        (None, None) => unreachable!("etcd was started above"),
    };
    let raw = Client::connect([endpoint.as_str()], None).await?;
    let store = EtcdStore::connect(EtcdConfig::new([endpoint.as_str()])).await?;
    let target = Arc::new(Target {
        raw,
        store: Arc::new(store),
        value: vec![b'v'; args.value_bytes],
    });
    let round = Duration::from_millis(args.round_ms);
    let warmup = Duration::from_millis(args.warmup_ms);
    for variant in variants {
        run_round(&target, *variant, keys, concurrency, warmup, 0).await?;
    }
    let mut measured: Vec<Measured> = variants.iter().map(|_| Measured::default()).collect();
    for r in 1..=args.rounds {
        // Rotate the order, so no variant always runs first or last.
        for i in 0..variants.len() {
            let index = (i + r) % variants.len();
            let variant = variants[index];
            let (throughput, latencies) =
                run_round(&target, variant, keys, concurrency, round, r).await?;
            measured[index].throughputs.push(throughput);
            measured[index].latencies.extend(latencies);
        }
    }
    drop(etcd);
    Ok(measured)
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "| keys | concurrency | variant | requests/s | keys/s | p50 ms | p99 ms | ours / this, median (range) of rounds |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &keys in &args.keys {
        for &concurrency in &args.concurrency {
            let variants = Variant::for_keys(keys, args.failure_reads);
            let measured = scenario(&args, &variants, keys, concurrency).await?;
            let ours = measured
                .last()
                .map(|m| m.throughputs.clone())
                .unwrap_or_default();
            for (variant, m) in variants.iter().zip(&measured) {
                let throughput = m.median_throughput();
                // The median of per-round ratios: each round of `ours` is
                // compared with the same round of the other variant, run
                // next to it, which cancels the machine's slow drift.
                let ratio = if *variant == Variant::Ours {
                    "—".to_owned()
                } else {
                    let mut ratios: Vec<f64> = ours
                        .iter()
                        .zip(&m.throughputs)
                        .map(|(o, t)| o / t)
                        .collect();
                    ratios.sort_by(f64::total_cmp);
                    format!(
                        "{:.2} ({:.2}–{:.2})",
                        ratios.get(ratios.len() / 2).copied().unwrap_or(0.0),
                        ratios.first().copied().unwrap_or(0.0),
                        ratios.last().copied().unwrap_or(0.0)
                    )
                };
                println!(
                    "| {keys} | {concurrency} | {} | {:.0} | {:.0} | {} | {} | {ratio} |",
                    variant.name(),
                    throughput,
                    throughput * keys as f64,
                    ms(m.percentile(0.50)),
                    ms(m.percentile(0.99)),
                );
            }
        }
    }
    Ok(())
}
