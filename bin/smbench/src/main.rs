//! `smbench`: the load generator for the StateManager daemon. It runs the
//! QUALITY-BAR workloads against the real daemon binary over real gRPC, and
//! reports each figure next to a raw etcd baseline measured in the same run.
//!
//! ```sh
//! cargo build --release -p statemanager -p smbench && target/release/smbench all --runs 3
//! target/release/smbench w1            # P1 (c=64) and P2 (c=1)
//! target/release/smbench w2            # P3: cascades, report -> durable
//! target/release/smbench w3            # P4: quiet reports, zero etcd writes
//! target/release/smbench w1 --store etcd,embedded   # W1 on etcd, then on the embedded store
//! target/release/smbench w1 --tls plain,mtls        # W1 in plaintext, then over mutual TLS
//! target/release/smbench memory        # P6: RSS with 10k models, 20k containers
//! target/release/smbench startup       # P7: ready with >= 100k state keys
//! target/release/smbench crash         # drill (R1, issue 17): kill -9 mid-cascade, no reconcile lost
//! target/release/smbench outage        # drill (R2): etcd frozen 10 s under load, deadlines kept
//! target/release/smbench crash --w1    # drill (R1): kill -9 of the only daemon under W1, 10 times
//! target/release/smbench failover      # drill (HA): kill -9 of the leader of 2 daemons, 10 times
//! target/release/smbench member-loss   # drill (R6): kill -9 of the raft leader of a 3-member etcd
//! ```
//!
//! The drills are run by hand, not by `all` (nor in CI): `crash` kills
//! the daemon with SIGKILL `--kills` times while the four nodes' reports
//! are being committed and restarts it on the same etcd, then checks that
//! every entry of a package into Error recorded in etcd got its Reconcile;
//! `outage` stops etcd with SIGSTOP for `--freeze` under 16 clients' load
//! and checks that every request is answered before its deadline and that
//! the answers tell the truth about what etcd holds afterwards.
//! `crash --w1`, `failover` and `member-loss` run W1's lifecycles with
//! `--clients` clients for as long as the drill lasts ([`lifecycle`]) and
//! check at the end that etcd holds every transition answered SUCCESS:
//! `crash --w1` kills and restarts the only daemon, `failover` kills the
//! leader of an HA group of `--members` daemons on a 3-member etcd and
//! times the takeover ([`failover`]), `member-loss` kills the raft leader
//! of a 3-member etcd under one daemon ([`member_loss`]). `--quick` makes
//! each of the three a smoke test of 5-10 s (2 cores).
//!
//! For every measurement it starts a fresh etcd (etcd-harness, loopback,
//! temporary directory, `--auto-compaction-retention 1`), the in-process
//! ActionController double and the daemon (`--daemon-bin`, default the
//! `statemanager` next to this executable) with `--listen 127.0.0.1:0`; it
//! learns the daemon's port from its `listening on` log line. All tasks share
//! one gRPC channel and one etcd client, except W1's, which share one
//! channel per component they act as (FilterGateway, PolicyManager,
//! ActionController). W3 encodes each node's report once
//! and sends the same bytes (a NodeAgent encodes a report once; re-encoding
//! 200 containers per call made the load generator, not the daemon, the
//! bottleneck).
//!
//! Each workload is verified by reading etcd afterwards; a run whose
//! verification fails is printed FAILED and smbench exits non-zero. With
//! `--runs N` each workload is repeated on a fresh etcd and daemon and the
//! median of every figure is printed; the baseline runs first in odd runs and
//! after the workload in even runs. `--json FILE` writes every figure.
//!
//! `--store embedded` runs the daemon on the embedded store instead (its
//! `--store embedded --data-dir` a fresh directory per run); a fresh etcd is
//! still started for the raw baseline the ratios compare against, but
//! nothing is verified through it: W1 is verified over the daemon's gRPC API
//! (ListResourcesByState, GetResourceStateHistory of every scenario), W3's
//! definitions are written into the data directory before the daemon opens
//! it, its "no write" check reads the daemon's `statemanager_commits_total`
//! from `/metrics`, and its final states are checked over gRPC and in the
//! store file once the daemon has stopped. `--store etcd,embedded` runs each
//! workload on each store in turn, labelled `W1 c=64 [etcd]`, `W1 c=64
//! [embedded]`. Only W1 and W3 take the embedded store; W2, memory, startup
//! and the drills need etcd and refuse it (`all` runs them on etcd when it
//! is listed).
//!
//! `--tls mtls` runs the daemon with mutual TLS (`--tls-cert --tls-key
//! --tls-client-ca`): smbench makes a CA, a server certificate for
//! 127.0.0.1 and client certificates in its working directory
//! (`transport_grpc::testing::pki`), and every connection presents one. W1
//! connects once per component it acts as (FilterGateway, PolicyManager,
//! ActionController, in plaintext too), each with that component's
//! certificate, under the daemon's default policy, which allows exactly
//! W1's edges to the matching `source`s; W3 sends every node's reports over
//! smbench's own connection, so its daemon gets a policy letting smbench's
//! identity report for any node and read. Each W1 run also times 20 fresh
//! connections (TCP and, with mTLS, the handshake) and their first call.
//! `--tls plain,mtls` runs each workload both ways in turn, labelled
//! `W1 c=64 [plain]`, `W1 c=64 [mtls]`. Only W1 and W3 take mtls.
//!
//! `--etcd URL` / `--daemon URL` use already-running ones instead; then a
//! fresh etcd per run is the caller's job, reconcile counts are not checked
//! and `memory`/`startup` (which need their own daemon process) refuse to run,
//! as do `crash` and `outage` with either (they kill the daemon or stop etcd).

mod baseline;
mod cascade;
mod context;
mod cpu;
mod crash;
mod daemon;
mod embedded;
mod failover;
mod kv;
mod lifecycle;
mod member_loss;
mod memory;
mod outage;
mod pki;
mod raw;
mod report;
mod rules;
mod scrape;
mod setup;
mod startup;
mod stats;
mod topology;
mod tracker;
mod w1;
mod w2;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use serde_json::json;

use crate::context::MachineContext;
use crate::pki::{Pki, Tls};
use crate::report::{RunResult, WorkloadSummary};
use crate::setup::{Common, Store};

/// Load generator for the StateManager daemon (QUALITY-BAR workloads W1, W2, W3, memory, start-up, and the crash, outage, failover and member-loss drills).
///
/// Every measurement starts a fresh etcd and the daemon itself (loopback only)
/// and prints throughput, latency percentiles, the raw etcd baseline of the
/// same run and the ratio. A failed verification prints FAILED and makes the
/// exit code non-zero.
#[derive(Debug, Parser)]
#[command(
    name = "smbench",
    version,
    after_help = "Examples:\n  \
    cargo build --release -p statemanager -p smbench && target/release/smbench all --runs 3\n  \
    target/release/smbench w1 --runs 3 --json w1.json\n  \
    target/release/smbench w1 --store etcd,embedded\n  \
    target/release/smbench w3 --store etcd,embedded\n  \
    target/release/smbench w1 --tls plain,mtls\n  \
    target/release/smbench w3 --tls mtls,plain --store etcd,embedded\n  \
    target/release/smbench w2 --rounds 100 --flip-fraction 0.25\n  \
    target/release/smbench w3 --w3-concurrency 4,16 --reports 8000\n  \
    target/release/smbench memory\n  \
    target/release/smbench startup --startup-packages 7200\n  \
    target/release/smbench crash --kills 8 --seed 7\n  \
    target/release/smbench crash --w1 --kills 10\n  \
    target/release/smbench outage --freeze 10s --runs 3 --json outage.json\n  \
    target/release/smbench failover --kills 10 --members 2\n  \
    target/release/smbench member-loss\n  \
    target/release/smbench failover --quick    # CI smoke: 2 kills"
)]
struct Cli {
    #[command(subcommand)]
    command: Workloads,
    /// Repetitions of each workload, each on a fresh etcd and daemon [default: 3 for `all`, 1 otherwise].
    #[arg(long, global = true)]
    runs: Option<usize>,
    /// Also write every figure (per run and median) to this JSON file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// The daemon binary [default: `statemanager` next to smbench's executable].
    #[arg(long, global = true)]
    daemon_bin: Option<PathBuf>,
    /// Use this running etcd instead of a fresh one per run. A fresh or
    /// settled etcd per run is then your job (etcd 3.4 slows after big bursts).
    #[arg(long, global = true)]
    etcd: Option<String>,
    /// Use this running daemon (`http://host:port`, configured with the same
    /// etcd) instead of spawning one. Reconcile counts are then not checked;
    /// `memory`, `startup` and the drills refuse to run, and so does
    /// `--store embedded`.
    #[arg(long, global = true)]
    daemon: Option<String>,
    /// Where the daemon keeps its states: `etcd` (the run's fresh etcd), or
    /// `embedded` (`--store embedded --data-dir`, a fresh directory per run;
    /// etcd then serves only the raw baseline, results are verified over
    /// gRPC and /metrics). A list (`etcd,embedded`) runs each workload on each
    /// store in turn. W1 and W3 only: W2, memory, startup and the drills
    /// need etcd.
    #[arg(
        long,
        global = true,
        value_enum,
        value_delimiter = ',',
        default_value = "etcd"
    )]
    store: Vec<Store>,
    /// How smbench talks to the daemon: `plain` (plaintext gRPC), or `mtls`
    /// (mutual TLS with certificates made for this invocation in its working
    /// directory; the daemon's default policy for W1, one letting smbench
    /// report for every node for W3). A list (`plain,mtls`) runs each
    /// workload both ways in turn. W1 and W3 only.
    #[arg(
        long,
        global = true,
        value_enum,
        value_delimiter = ',',
        default_value = "plain"
    )]
    tls: Vec<Tls>,
    /// Seed of the W2/W3/memory/startup state draws and of crash's kill delays.
    #[arg(long, global = true, default_value_t = 42)]
    seed: u64,
    /// W1: scenarios per run [default: 16000 at c=64, 2000 at c=1].
    #[arg(long, global = true)]
    scenarios: Option<usize>,
    /// W1: client concurrencies to measure (P1 at 64, P2 at 1).
    #[arg(long, global = true, value_delimiter = ',', default_values_t = [64, 1])]
    w1_concurrency: Vec<usize>,
    /// W2: rounds of reports per node.
    #[arg(long, global = true, default_value_t = 50)]
    rounds: usize,
    /// W2/memory/crash: fraction of the models flipped to another state in each round after the first.
    #[arg(long, global = true, default_value_t = 0.5)]
    flip_fraction: f64,
    /// W3: quiet reports per measurement.
    #[arg(long, global = true, default_value_t = 4000)]
    reports: usize,
    /// W3: concurrencies to measure (4 = one task per node).
    #[arg(long, global = true, value_delimiter = ',', default_values_t = [4, 16])]
    w3_concurrency: Vec<usize>,
    /// memory: flip rounds after the first full round.
    #[arg(long, global = true, default_value_t = 3)]
    memory_rounds: usize,
    /// startup: packages written to etcd (14 state keys each; 7200 gives 100,800).
    #[arg(long, global = true, default_value_t = 7200)]
    startup_packages: usize,
    /// crash/failover: rounds ended by a SIGKILL of the daemon (crash: 0-40
    /// ms after the reports are sent; crash --w1 and failover: of the
    /// leader, under load) [default: 8 for crash, 10 for crash --w1 and
    /// failover; with --quick 2].
    #[arg(long, global = true)]
    kills: Option<usize>,
    /// crash: kill -9 under W1 lifecycles (QUALITY-BAR R1 as worded: 0
    /// acknowledged transitions lost over 10 kills) instead of W2's cascades.
    #[arg(long, global = true)]
    w1: bool,
    /// failover: daemons in the HA group (the etcd cluster has 3 members).
    #[arg(long, global = true, default_value_t = 2, value_parser = clap::value_parser!(u16).range(2..=5))]
    members: u16,
    /// failover: the members' --ha-lease-ttl (whole seconds).
    #[arg(long, global = true, default_value = "2s", value_parser = parse_whole_seconds)]
    ha_lease_ttl: u64,
    /// crash --w1, failover, member-loss: concurrent W1 lifecycle clients.
    #[arg(long, global = true, default_value_t = 16)]
    clients: usize,
    /// crash --w1, failover, member-loss: a short run for a CI smoke test
    /// (2 kills, shorter load windows; 5-10 s each on 2 cores).
    #[arg(long, global = true)]
    quick: bool,
    /// outage: how long etcd stays stopped (SIGSTOP), e.g. `10s`, `2500ms`.
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    freeze: Duration,
}

/// `10s`, `2500ms` or `10` (seconds).
fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 1e-3)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a duration; write e.g. 10s or 2500ms"))?;
    Duration::try_from_secs_f64(value * scale)
        .map_err(|_| format!("'{text}' is not a duration; write e.g. 10s or 2500ms"))
}

/// `2s` or `2` as whole seconds (at least 1).
fn parse_whole_seconds(text: &str) -> std::result::Result<u64, String> {
    let duration = parse_duration(text)?;
    if duration.subsec_nanos() != 0 || duration.as_secs() == 0 {
        return Err(format!(
            "'{text}' is not a whole number of seconds (at least 1s)"
        ));
    }
    Ok(duration.as_secs())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
enum Workloads {
    /// Every workload: W1, W2, W3, memory, startup.
    All,
    /// W1 scenario lifecycles at concurrency 64 (P1) and 1 (P2).
    W1,
    /// W2 cascades (P3): rounds of full node reports, each waited until durable in etcd.
    W2,
    /// W3 quiet reports (P4): unchanged reports, zero etcd writes (on the embedded store: zero store commits).
    W3,
    /// Memory (P6): RSS with 2.5k packages, 10k models, 20k containers on 20 nodes.
    Memory,
    /// Start-up (P7): spawn -> first answer with >= 100k state keys in etcd.
    Startup,
    /// Drill (R1, issue 17), not part of `all`: kill -9 of the daemon while
    /// cascades commit, restart; no entry into Error without its Reconcile.
    /// With --w1: kill -9 of the only daemon under W1 lifecycles, `--kills`
    /// (10) times; no acknowledged transition lost.
    Crash,
    /// Drill (R2), not part of `all`: etcd stopped (SIGSTOP) for `--freeze`
    /// under load; every answer within its deadline and true to what etcd holds.
    Outage,
    /// Drill (HA), not part of `all`: `--members` (2) daemons with --ha on a
    /// 3-member etcd under W1 lifecycles sent to every member; the leader
    /// killed with kill -9 `--kills` (10) times and restarted; takeover time,
    /// first success, throughput, errors; no acknowledged transition lost.
    Failover,
    /// Drill (R6), not part of `all`: one daemon on a 3-member etcd under
    /// W1 lifecycles; the raft leader killed with kill -9 after 5 s, 10 s
    /// more load; throughput before/after, errors, no acknowledged lost.
    MemberLoss,
}

impl Workloads {
    /// The subcommand's name.
    fn name(self) -> &'static str {
        match self {
            Workloads::All => "all",
            Workloads::W1 => "w1",
            Workloads::W2 => "w2",
            Workloads::W3 => "w3",
            Workloads::Memory => "memory",
            Workloads::Startup => "startup",
            Workloads::Crash => "crash",
            Workloads::Outage => "outage",
            Workloads::Failover => "failover",
            Workloads::MemberLoss => "member-loss",
        }
    }

    /// Why a workload cannot run on the embedded store (`None`: it can).
    fn needs_etcd(self) -> Option<&'static str> {
        match self {
            Workloads::All | Workloads::W1 | Workloads::W3 => None,
            Workloads::W2 => Some(
                "it times each report until durable with an etcd watch and checks every key in etcd",
            ),
            Workloads::Memory => {
                Some("it applies W2's rounds, timed and checked with an etcd watch")
            }
            Workloads::Startup => {
                Some("it writes 100k state keys to etcd and checks that start-up writes none")
            }
            Workloads::Crash => Some(
                "it restarts the daemon on the same etcd and checks states, outbox and reconciles in etcd",
            ),
            Workloads::Outage => Some("it freezes the daemon's etcd under load"),
            Workloads::Failover => Some("its daemons elect a leader in etcd"),
            Workloads::MemberLoss => Some("it kills a member of the daemon's etcd cluster"),
        }
    }
}

/// The stores `--store` lists, each once, checked against the workload.
fn stores(cli: &Cli) -> Result<Vec<Store>> {
    let mut stores: Vec<Store> = Vec::new();
    for &store in &cli.store {
        if !stores.contains(&store) {
            stores.push(store);
        }
    }
    if stores.is_empty() {
        stores.push(Store::Etcd);
    }
    if !stores.contains(&Store::Embedded) {
        return Ok(stores);
    }
    if cli.daemon.is_some() {
        bail!(
            "--store embedded spawns its own daemon on a fresh data directory: it cannot be combined with --daemon"
        );
    }
    if let Some(why) = cli.command.needs_etcd() {
        bail!(
            "smbench {}: --store embedded is not supported ({why}); only w1 and w3 run on the embedded store",
            cli.command.name()
        );
    }
    if cli.command == Workloads::All && !stores.contains(&Store::Etcd) {
        bail!(
            "smbench all --store embedded: w2, memory and startup need etcd; give --store etcd,embedded to run them on etcd and w1 and w3 on both"
        );
    }
    Ok(stores)
}

/// The transports `--tls` lists, each once, checked against the workload.
fn transports(cli: &Cli) -> Result<Vec<Tls>> {
    let mut transports: Vec<Tls> = Vec::new();
    for &tls in &cli.tls {
        if !transports.contains(&tls) {
            transports.push(tls);
        }
    }
    if transports.is_empty() {
        transports.push(Tls::Plain);
    }
    if !transports.contains(&Tls::Mtls) {
        return Ok(transports);
    }
    if cli.daemon.is_some() {
        bail!(
            "--tls mtls spawns its own daemon with certificates made for this run: it cannot be combined with --daemon"
        );
    }
    if !matches!(cli.command, Workloads::All | Workloads::W1 | Workloads::W3) {
        bail!(
            "smbench {}: --tls mtls is not supported; only w1 and w3 run over mutual TLS",
            cli.command.name()
        );
    }
    if cli.command == Workloads::All && !transports.contains(&Tls::Plain) {
        bail!(
            "smbench all --tls mtls: w2, memory and startup run in plaintext only; give --tls plain,mtls to run them in plaintext and w1 and w3 both ways"
        );
    }
    Ok(transports)
}

fn daemon_bin(given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(bin) = given {
        return Ok(bin);
    }
    let me = std::env::current_exe().context("locating smbench's executable")?;
    Ok(me.with_file_name("statemanager"))
}

async fn repeat<F, Fut>(summaries: &mut Vec<WorkloadSummary>, label: &str, runs: usize, mut one: F)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<RunResult>>,
{
    let mut results = Vec::new();
    for run in 0..runs {
        let result = match one(run).await {
            Ok(result) => result,
            Err(error) => {
                let mut failed = RunResult::new(label);
                failed.fail(format!("{error:#}"));
                failed
            }
        };
        result.print_brief(run);
        results.push(result);
    }
    let workload = results
        .first()
        .map(|r| r.workload.clone())
        .unwrap_or_else(|| label.to_owned());
    summaries.push(WorkloadSummary {
        workload,
        runs: results,
    });
}

async fn run(cli: Cli) -> Result<bool> {
    let stores = stores(&cli)?;
    let transports = transports(&cli)?;
    let runs = cli
        .runs
        .unwrap_or(if cli.command == Workloads::All { 3 } else { 1 })
        .max(1);
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let workdir = std::env::temp_dir().join(format!(
        "smbench-{}-{}",
        std::process::id(),
        stamp.as_secs()
    ));
    std::fs::create_dir_all(&workdir).with_context(|| format!("creating {}", workdir.display()))?;
    let common = Common {
        daemon_bin: daemon_bin(cli.daemon_bin.clone())?,
        etcd: cli.etcd.clone(),
        daemon: cli.daemon.clone(),
        workdir: workdir.clone(),
        seed: cli.seed,
        session: format!("{:x}", stamp.as_millis() % 0xff_ffff),
        store: Store::Etcd,
        label_store: stores != [Store::Etcd],
        tls: Tls::Plain,
        label_tls: transports != [Tls::Plain],
        pki: None,
        reports_policy: false,
    };
    let common = if transports.contains(&Tls::Mtls) {
        Common {
            pki: Some(Pki::create(&workdir.join("pki"))?),
            ..common
        }
    } else {
        common
    };
    // W2, memory, startup and the drills run on etcd in plaintext only
    // (`stores` and `transports` refused them otherwise).
    let etcd = common.on(Store::Etcd);
    if common.daemon.is_none() && !common.daemon_bin.exists() {
        bail!(
            "daemon binary {} not found: cargo build --release -p statemanager, or pass --daemon-bin",
            common.daemon_bin.display()
        );
    }
    let machine = MachineContext::read();
    machine.print();
    println!(
        "runs per workload: {runs}; daemon logs in {}",
        workdir.display()
    );
    if common.label_store {
        let names: Vec<&str> = stores.iter().map(|s| s.name()).collect();
        println!(
            "stores: {} (raw baselines always on the run's etcd)",
            names.join(", ")
        );
    }
    if common.label_tls {
        let names: Vec<&str> = transports.iter().map(|t| t.name()).collect();
        println!(
            "transports: {} (mtls: certificates in {}; raw baselines always plaintext etcd)",
            names.join(", "),
            workdir.join("pki").display()
        );
    }

    let all = cli.command == Workloads::All;
    let mut summaries = Vec::new();
    if all || cli.command == Workloads::W1 {
        for &c in &cli.w1_concurrency {
            let scenarios = cli.scenarios.unwrap_or_else(|| w1::default_scenarios(c));
            for &store in &stores {
                for &tls in &transports {
                    let common = common.on(store).over(tls);
                    let label = common.label(&format!("W1 c={c}"));
                    println!("\n{label}: {scenarios} scenarios x 4 transitions, concurrency {c}");
                    repeat(&mut summaries, &label, runs, |run| {
                        w1::run(&common, run, c, scenarios)
                    })
                    .await;
                }
            }
        }
    }

    if all || cli.command == Workloads::W2 {
        let options = w2::W2Options {
            rounds: cli.rounds,
            flip: cli.flip_fraction,
        };
        println!(
            "\nW2: 100 packages x 4 models x 2 containers on 4 nodes, {} rounds, flip fraction {}",
            options.rounds, options.flip
        );
        repeat(&mut summaries, &etcd.label("W2 cascades"), runs, |run| {
            w2::run_w2(&etcd, run, options)
        })
        .await;
    }
    if all || cli.command == Workloads::W3 {
        for &c in &cli.w3_concurrency {
            for &store in &stores {
                for &tls in &transports {
                    let common = common.on(store).over(tls);
                    let label = common.label(&format!("W3 quiet c={c}"));
                    println!(
                        "\n{label}: {} unchanged 200-container reports, concurrency {c}",
                        cli.reports
                    );
                    repeat(&mut summaries, &label, runs, |run| {
                        w2::run_w3(&common, run, c, cli.reports)
                    })
                    .await;
                }
            }
        }
    }
    if all || cli.command == Workloads::Memory {
        println!(
            "\nmemory: 2500 packages x 4 models x 2 containers on 20 nodes, 1 + {} rounds",
            cli.memory_rounds
        );
        repeat(&mut summaries, &etcd.label("memory (P6)"), runs, |run| {
            memory::run(&etcd, run, cli.flip_fraction, cli.memory_rounds)
        })
        .await;
    }
    if all || cli.command == Workloads::Startup {
        println!(
            "\nstartup: {} packages (14 state keys each) in etcd",
            cli.startup_packages
        );
        repeat(&mut summaries, &etcd.label("startup (P7)"), runs, |run| {
            startup::run(&etcd, run, cli.startup_packages)
        })
        .await;
    }

    if cli.command == Workloads::Crash && cli.w1 {
        let options = failover::FailoverOptions {
            members: 1,
            etcd_members: 1,
            lease_ttl_s: cli.ha_lease_ttl,
            kills: cli.kills.unwrap_or(if cli.quick { 2 } else { 10 }),
            clients: cli.clients,
            warmup: Duration::from_secs(if cli.quick { 2 } else { 3 }),
            between: Duration::from_secs(if cli.quick { 1 } else { 2 }),
        };
        println!(
            "\ncrash --w1: {} clients on W1 lifecycles; after {:?}, {} rounds: kill -9 of the daemon, restart on the same etcd and port, {:?} of load",
            options.clients, options.warmup, options.kills, options.between
        );
        repeat(&mut summaries, "crash W1 (kill -9)", runs, |run| {
            failover::run(&etcd, run, "crash W1 (kill -9)", options)
        })
        .await;
    }
    if cli.command == Workloads::Crash && !cli.w1 {
        let options = crash::CrashOptions {
            kills: cli.kills.unwrap_or(if cli.quick { 2 } else { 8 }),
            flip: cli.flip_fraction,
        };
        println!(
            "\ncrash: 48 packages x 4 models x 2 containers on 4 nodes; {} rounds each ended by kill -9 0-40 ms after the reports, then a final round; flip fraction {}, seed {}",
            options.kills, options.flip, cli.seed
        );
        repeat(&mut summaries, "crash (kill -9)", runs, |run| {
            crash::run(&etcd, run, options)
        })
        .await;
    }
    if cli.command == Workloads::Outage {
        let options = outage::OutageOptions { freeze: cli.freeze };
        println!(
            "\noutage: 16 clients, new scenarios Idle->Waiting (deadline 10 s), daemon --commit-timeout 5s; etcd SIGSTOP for {:?} after 3 s, 3 s more after SIGCONT",
            options.freeze
        );
        repeat(&mut summaries, "outage (etcd frozen)", runs, |run| {
            outage::run(&etcd, run, options)
        })
        .await;
    }
    if cli.command == Workloads::Failover {
        let options = failover::FailoverOptions {
            members: usize::from(cli.members),
            etcd_members: 3,
            lease_ttl_s: cli.ha_lease_ttl,
            kills: cli.kills.unwrap_or(if cli.quick { 2 } else { 10 }),
            clients: cli.clients,
            warmup: Duration::from_secs(if cli.quick { 2 } else { 5 }),
            between: Duration::from_secs(if cli.quick { 1 } else { 3 }),
        };
        let label = format!("failover ({} members)", options.members);
        println!(
            "\nfailover: {} daemons --ha --ha-lease-ttl {}s on a 3-member etcd, {} clients on W1 lifecycles spread over them; after {:?}, {} rounds: kill -9 of the leader, takeover, restart, {:?} of load",
            options.members,
            options.lease_ttl_s,
            options.clients,
            options.warmup,
            options.kills,
            options.between
        );
        repeat(&mut summaries, &label, runs, |run| {
            failover::run(&etcd, run, &label, options)
        })
        .await;
    }
    if cli.command == Workloads::MemberLoss {
        let options = member_loss::MemberLossOptions {
            clients: cli.clients,
            before: Duration::from_secs(if cli.quick { 3 } else { 5 }),
            after: Duration::from_secs(if cli.quick { 5 } else { 10 }),
        };
        println!(
            "\nmember-loss: one daemon on a 3-member etcd, {} clients on W1 lifecycles; the raft leader killed with kill -9 after {:?}, {:?} more load",
            options.clients, options.before, options.after
        );
        repeat(
            &mut summaries,
            "member-loss (etcd member killed)",
            runs,
            |run| member_loss::run(&etcd, run, options),
        )
        .await;
    }

    println!("\n==================== summary ====================");
    machine.print();
    for summary in &summaries {
        summary.print();
    }
    let passed = summaries.iter().all(WorkloadSummary::passed);
    if let Some(path) = &cli.json {
        let doc = json!({
            "machine": machine.to_json(),
            "runs": runs,
            "stores": stores.iter().map(|s| s.name()).collect::<Vec<_>>(),
            "transports": transports.iter().map(|t| t.name()).collect::<Vec<_>>(),
            "passed": passed,
            "workloads": summaries.iter().map(WorkloadSummary::to_json).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("\nJSON written to {}", path.display());
    }
    if passed {
        let _ = std::fs::remove_dir_all(&workdir);
        println!("\nall verifications passed");
    } else {
        println!(
            "\nFAILED: see above; daemon logs kept in {}",
            workdir.display()
        );
    }
    Ok(passed)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("smbench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drill_options_parse() {
        let cli = Cli::try_parse_from(["smbench", "failover", "--members", "3", "--quick"])
            .expect("parses");
        assert_eq!(cli.command, Workloads::Failover);
        assert_eq!((cli.members, cli.kills, cli.quick), (3, None, true));
        assert_eq!(cli.ha_lease_ttl, 2);
        assert!(Cli::try_parse_from(["smbench", "failover", "--members", "1"]).is_err());
        let cli =
            Cli::try_parse_from(["smbench", "member-loss", "--clients", "8"]).expect("parses");
        assert_eq!((cli.command, cli.clients), (Workloads::MemberLoss, 8));
        let cli =
            Cli::try_parse_from(["smbench", "crash", "--w1", "--kills", "3"]).expect("parses");
        assert_eq!((cli.w1, cli.kills), (true, Some(3)));
        assert_eq!(parse_whole_seconds("3s"), Ok(3));
        assert!(parse_whole_seconds("1500ms").is_err());
        assert!(parse_whole_seconds("0s").is_err());
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2500ms"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    fn stores_of(args: &[&str]) -> Result<Vec<Store>> {
        let cli = Cli::try_parse_from(std::iter::once("smbench").chain(args.iter().copied()))?;
        stores(&cli)
    }

    #[test]
    fn store_list_defaults_to_etcd_and_keeps_the_given_order() {
        assert_eq!(stores_of(&["w1"]).ok(), Some(vec![Store::Etcd]));
        assert_eq!(
            stores_of(&["w3", "--store", "embedded,etcd,embedded"]).ok(),
            Some(vec![Store::Embedded, Store::Etcd])
        );
        assert_eq!(
            stores_of(&["all", "--store", "etcd,embedded"]).ok(),
            Some(vec![Store::Etcd, Store::Embedded])
        );
        assert!(stores_of(&["w1", "--store", "rocksdb"]).is_err());
    }

    #[test]
    fn workloads_that_need_etcd_refuse_the_embedded_store_by_name() {
        for workload in [
            "w2",
            "memory",
            "startup",
            "crash",
            "outage",
            "failover",
            "member-loss",
        ] {
            let refused = stores_of(&[workload, "--store", "etcd,embedded"])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                refused.contains(&format!("smbench {workload}:")),
                "{workload}: {refused}"
            );
        }
        assert!(stores_of(&["all", "--store", "embedded"]).is_err());
        assert!(stores_of(&["w1", "--store", "embedded", "--daemon", "http://x:1"]).is_err());
        assert!(stores_of(&["w2", "--store", "etcd"]).is_ok());
    }

    fn transports_of(args: &[&str]) -> Result<Vec<Tls>> {
        let cli = Cli::try_parse_from(std::iter::once("smbench").chain(args.iter().copied()))?;
        transports(&cli)
    }

    #[test]
    fn tls_list_defaults_to_plain_and_only_w1_and_w3_take_mtls() {
        assert_eq!(transports_of(&["w1"]).ok(), Some(vec![Tls::Plain]));
        assert_eq!(
            transports_of(&["w1", "--tls", "mtls,plain,mtls"]).ok(),
            Some(vec![Tls::Mtls, Tls::Plain])
        );
        assert_eq!(
            transports_of(&["all", "--tls", "plain,mtls"]).ok(),
            Some(vec![Tls::Plain, Tls::Mtls])
        );
        assert!(transports_of(&["w1", "--tls", "tls"]).is_err());
        assert!(transports_of(&["all", "--tls", "mtls"]).is_err());
        assert!(transports_of(&["w1", "--tls", "mtls", "--daemon", "http://x:1"]).is_err());
        for workload in [
            "w2",
            "memory",
            "startup",
            "crash",
            "outage",
            "failover",
            "member-loss",
        ] {
            let refused = transports_of(&[workload, "--tls", "plain,mtls"])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                refused.contains(&format!("smbench {workload}:")),
                "{workload}: {refused}"
            );
            assert!(transports_of(&[workload, "--tls", "plain"]).is_ok());
        }
    }
}
