//! EtcdStore::apply against raw etcd-client requests, in the same run, against
//! the same etcd.
//!
//! For each shape (1 key, 8 keys) and concurrency (1, 64) it starts a fresh
//! etcd (or uses `--endpoint`), warms up, then alternates short rounds of
//! three variants so that drift in etcd's speed hits all of them alike:
//!
//! - `raw`: what a plain client would send: one put (1 key), or a txn of 8
//!   puts (8 keys), without guards;
//! - `raw guarded`: the same etcd request EtcdStore sends: a txn with a
//!   `mod_revision` compare per key, built by hand with etcd-client;
//! - `ours`: `EtcdStore::apply` of a guarded batch, as the engine writes.
//!
//! Every worker owns its keys and guards each write with the revision of its
//! previous one, so no guard fails.
//!
//! ```text
//! cargo run --release -p store-etcd --example store_bench -- --rounds 3 --round-ms 2000
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use state_store::{Batch, StateStore};
use store_etcd::{EtcdConfig, EtcdStore};

#[derive(Parser, Debug)]
#[command(about = "EtcdStore::apply vs raw etcd-client requests")]
struct Args {
    /// Use this etcd instead of starting a fresh one per scenario.
    #[arg(long)]
    endpoint: Option<String>,
    /// Measured rounds per variant and scenario (alternating).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Length of one round in milliseconds.
    #[arg(long, default_value_t = 2000)]
    round_ms: u64,
    /// Warm-up per scenario in milliseconds (all variants).
    #[arg(long, default_value_t = 500)]
    warmup_ms: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 16)]
    value_bytes: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Raw,
    RawGuarded,
    Ours,
}

impl Variant {
    const ALL: [Variant; 3] = [Variant::Raw, Variant::RawGuarded, Variant::Ours];

    fn name(self) -> &'static str {
        match self {
            Variant::Raw => "raw",
            Variant::RawGuarded => "raw guarded",
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
        Variant::RawGuarded => {
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
            let response = raw.txn(Txn::new().when(compares).and_then(puts)).await?;
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

async fn scenario(args: &Args, keys: usize, concurrency: usize) -> anyhow::Result<[Measured; 3]> {
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
    for variant in Variant::ALL {
        run_round(&target, variant, keys, concurrency, warmup, 0).await?;
    }
    let mut measured: [Measured; 3] = Default::default();
    for r in 1..=args.rounds {
        // Rotate the order, so no variant always runs first or last.
        for i in 0..Variant::ALL.len() {
            let index = (i + r) % Variant::ALL.len();
            let variant = Variant::ALL[index];
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
        "| keys | concurrency | variant | requests/s | keys/s | p50 ms | p99 ms | ours / this |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for keys in [1usize, 8] {
        for concurrency in [1usize, 64] {
            let measured = scenario(&args, keys, concurrency).await?;
            let ours = measured[2].median_throughput();
            for (variant, m) in Variant::ALL.iter().zip(&measured) {
                let throughput = m.median_throughput();
                let ratio = if *variant == Variant::Ours {
                    "—".to_owned()
                } else {
                    format!("{:.2}", ours / throughput)
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
