//! The kill -9 drill (issue 17, QUALITY-BAR R1): W2's cascades on 48
//! packages x 4 models x 2 containers on 4 nodes. In each of `--kills`
//! rounds the four nodes send their full reports at once and the daemon is
//! killed with SIGKILL a seeded random 0-40 ms after the sends start, while
//! their transactions are in flight; it is then restarted on the same etcd.
//! After one more round, waited until durable, and the outbox drained, it
//! compares per package the entries into Error recorded in etcd's history
//! with the Reconcile requests the ActionController double received.
//!
//! A recorded entry without its Reconcile is lost: the drill fails. A
//! Reconcile received twice is a duplicate, which at-least-once delivery
//! allows (a kill between the ActionController's answer and the outbox
//! record's delete): it is counted and printed, not a failure. A report
//! answered SUCCESS before a kill must be in etcd at the kill (R1's
//! "acknowledged lost"), and every state key must match the rules at the end.
//!
//! A Reconcile carries no id, so a package whose one entry lost its
//! Reconcile while another one's was repeated would show no loss. An etcd
//! watch on the outbox therefore also counts the distinct outbox records
//! written per package: each entry into Error is committed with its record
//! (the record of a Reconcile a crash lost is written again with the same
//! id at start-up), so fewer records than entries is a failure too.
//!
//! The models flip between Running and Dead only: among W2's four
//! conditions a package is in Error (all four models Dead) with probability
//! 1/256 per round, two entries a run; between two it is 1/16, about 28.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use etcd_client::{EventType, WatchOptions};
use serde_json::Value;

use crate::cascade::{self, Plan};
use crate::kv;
use crate::report::{Bound, RunResult};
use crate::setup::{Common, Env};
use crate::stats::{Latencies, SplitMix64};
use crate::topology::{Cond, Round, Topology};
use crate::tracker;

/// The drill's topology: 12 packages (48 models, 96 containers) per node.
pub const TOPOLOGY: Topology = Topology {
    packages: 48,
    nodes: 4,
};

/// The conditions the models flip between (see the module doc).
const CONDS: [Cond; 2] = [Cond::Running, Cond::Dead];

/// The daemon's default `--history-limit`: entries beyond it are pruned,
/// which would hide entries into Error from the count.
const HISTORY_LIMIT: usize = 100;

/// The kill falls at most this long after the sends start.
const KILL_WITHIN_US: usize = 40_000;

/// The reports' gRPC deadline.
const REPORT_DEADLINE: Duration = Duration::from_secs(10);

/// The double's Reconcile count must stay unchanged this long at the end.
const QUIET_FOR: Duration = Duration::from_secs(2);

/// The end of the drill (outbox empty, Reconciles quiet) must come within this.
const SETTLE_WITHIN: Duration = Duration::from_secs(60);

/// Where the daemon records package transitions.
const HISTORY_PREFIX: &str = "/statemanager/history/package/";

/// Where the daemon keeps reconcile requests until delivered.
const OUTBOX_PREFIX: &str = "/statemanager/outbox/";

/// The drill's knobs.
#[derive(Debug, Clone, Copy)]
pub struct CrashOptions {
    /// Rounds ended by a SIGKILL of the daemon.
    pub kills: usize,
    /// Fraction of the models given the other state in each round.
    pub flip: f64,
}

/// What one kill round saw.
struct Kill {
    /// Sends start -> SIGKILL.
    delay: Duration,
    /// Reports answered SUCCESS before the kill.
    acknowledged: usize,
    /// Of those, nodes whose keys were not all in etcd at the kill.
    acknowledged_lost: Vec<usize>,
    /// Reports the kill cut off (a gRPC error instead of SUCCESS), with the error.
    cut_off: Vec<String>,
    /// etcd transactions (revisions) from the sends to the kill.
    txns: i64,
    /// SIGKILL -> the new daemon listening and connected.
    restart: Duration,
}

/// Per package: entries into Error in etcd, Reconciles received, history
/// entries, distinct outbox records written.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    entries: usize,
    delivered: usize,
    history: usize,
    records: usize,
}

/// What the outbox watch saw: record key -> package, and the keys not yet deleted.
#[derive(Default)]
struct OutboxSeen {
    package_of: HashMap<String, String>,
    live: HashSet<String>,
    unreadable: Vec<String>,
}

/// An etcd watch on the outbox prefix for the whole drill (a task of its own).
struct OutboxWatch {
    seen: Arc<Mutex<OutboxSeen>>,
    task: tokio::task::JoinHandle<()>,
}

impl OutboxWatch {
    /// Watches the outbox from revision `from` on.
    async fn start(env: &Env, from: i64) -> Result<OutboxWatch> {
        let mut watch = env
            .kv
            .clone()
            .watch(
                OUTBOX_PREFIX,
                Some(WatchOptions::new().with_prefix().with_start_revision(from)),
            )
            .await
            .context("watching the outbox")?;
        let seen = Arc::new(Mutex::new(OutboxSeen::default()));
        let shared = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok(Some(message)) = watch.message().await {
                let mut seen = shared.lock().unwrap_or_else(|e| e.into_inner());
                for event in message.events() {
                    let Some(pair) = event.kv() else { continue };
                    let key = String::from_utf8_lossy(pair.key()).into_owned();
                    match event.event_type() {
                        EventType::Delete => {
                            seen.live.remove(&key);
                        }
                        EventType::Put => {
                            let package = serde_json::from_slice::<Value>(pair.value())
                                .ok()
                                .and_then(|v| v.get("package")?.as_str().map(str::to_owned));
                            match package {
                                Some(package) => {
                                    seen.package_of.insert(key.clone(), package);
                                }
                                None => seen.unreadable.push(key.clone()),
                            }
                            seen.live.insert(key);
                        }
                    }
                }
            }
        });
        Ok(OutboxWatch { seen, task })
    }

    /// Waits (up to 5 s) until the watch saw every record it saw written
    /// deleted again (the outbox was read empty), and returns the packages
    /// of the distinct records and the unreadable ones.
    async fn finish(self) -> Result<(Vec<String>, Vec<String>)> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let live = self
                .seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .live
                .len();
            if live == 0 {
                break;
            }
            if Instant::now() > deadline {
                bail!("the outbox watch still sees {live} records that a read found deleted");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.task.abort();
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        Ok((
            seen.package_of.values().cloned().collect(),
            seen.unreadable.clone(),
        ))
    }
}

impl Tally {
    fn lost(self) -> usize {
        self.entries.saturating_sub(self.delivered)
    }

    fn duplicates(self) -> usize {
        self.delivered.saturating_sub(self.entries)
    }
}

/// The package name and whether the entry enters Error, from one history
/// entry `/statemanager/history/package/{name}/{seq}` and its JSON value.
fn history_entry(key: &str, value: &str) -> Option<(String, bool)> {
    let (name, _seq) = key.strip_prefix(HISTORY_PREFIX)?.rsplit_once('/')?;
    let entry: Value = serde_json::from_str(value).ok()?;
    let into_error = entry.get("to").and_then(Value::as_str) == Some("Error");
    Some((name.to_owned(), into_error))
}

/// Counts, per package of `topo`, the history entries, the entries into
/// Error, the Reconciles (scenario `s{p}` targets package `p{p}`) and the
/// outbox records (one package name per distinct record); Reconciles and
/// records of names the topology does not define are returned aside.
fn tally(
    topo: Topology,
    history: &[(String, String)],
    scenarios: &[String],
    records: &[String],
) -> Result<(Vec<Tally>, HashMap<String, usize>)> {
    let index: HashMap<String, usize> = (0..topo.packages).map(|p| (format!("p{p}"), p)).collect();
    let mut out = vec![Tally::default(); topo.packages];
    for (key, value) in history {
        let (name, into_error) =
            history_entry(key, value).with_context(|| format!("unreadable history entry {key}"))?;
        let Some(&p) = index.get(&name) else {
            bail!("history entry of a package the drill did not define: {key}");
        };
        out[p].history += 1;
        out[p].entries += usize::from(into_error);
    }
    let mut unknown: HashMap<String, usize> = HashMap::new();
    for scenario in scenarios {
        match scenario
            .strip_prefix('s')
            .and_then(|p| index.get(&format!("p{p}")))
        {
            Some(&p) => out[p].delivered += 1,
            None => *unknown.entry(scenario.clone()).or_default() += 1,
        }
    }
    for package in records {
        match index.get(package) {
            Some(&p) => out[p].records += 1,
            None => *unknown.entry(format!("record of {package}")).or_default() += 1,
        }
    }
    Ok((out, unknown))
}

/// Node `n`'s keys of `round` that etcd does not hold (read now).
async fn missing_keys(env: &Env, topo: Topology, n: usize, round: &Round) -> Result<usize> {
    let mut actual = HashMap::new();
    for prefix in tracker::PREFIXES {
        actual.extend(kv::read_prefix(&env.kv, prefix, false).await?);
    }
    Ok(topo
        .expected(n, round)
        .iter()
        .filter(|(k, v)| actual.get(k) != Some(v))
        .count())
}

/// One kill round: the four reports sent at once, SIGKILL after `delay`,
/// the acknowledged reports checked in etcd, the daemon restarted as `label`.
async fn kill_round(
    env: &mut Env,
    topo: Topology,
    round: &Round,
    delay: Duration,
    label: &str,
) -> Result<Kill> {
    let channel = env.channel()?;
    let encoded: Vec<_> = (0..topo.nodes)
        .map(|n| crate::raw::encode(&topo.report(n, round)))
        .collect();
    let before = kv::revision(&env.kv).await?;
    let started = Instant::now();
    let sends: Vec<_> = encoded
        .into_iter()
        .enumerate()
        .map(|(n, report)| {
            let mut client = crate::raw::client(channel.clone());
            tokio::spawn(async move {
                let answer = crate::raw::send_report(&mut client, report, REPORT_DEADLINE).await;
                (n, answer.map(|_| ()))
            })
        })
        .collect();
    tokio::time::sleep_until((started + delay).into()).await;
    let mut daemon = env
        .daemon
        .take()
        .context("the drill's daemon is not running")?;
    daemon.kill()?;
    let killed = Instant::now();
    let delay = killed - started;
    let log = daemon.log_path.clone();
    drop(daemon);
    let mut acknowledged = Vec::new();
    let mut cut_off = Vec::new();
    for send in sends {
        match send.await.context("report task")? {
            (n, Ok(())) => acknowledged.push(n),
            (_, Err(status)) => cut_off.push(format!("{:?} '{}'", status.code(), status.message())),
        }
    }
    // Nothing writes now but transactions etcd received before the kill.
    let txns = kv::revision(&env.kv).await? - before;
    let mut acknowledged_lost = Vec::new();
    for &n in &acknowledged {
        if missing_keys(env, topo, n, round).await? > 0 {
            acknowledged_lost.push(n);
        }
    }
    let spec = env.spec(label, "127.0.0.1:0");
    env.spawn_daemon(&spec).await.with_context(|| {
        format!(
            "restarting the daemon after the kill (log of the killed one: {})",
            log.display()
        )
    })?;
    Ok(Kill {
        delay,
        acknowledged: acknowledged.len(),
        acknowledged_lost,
        cut_off,
        txns,
        restart: killed.elapsed(),
    })
}

/// Waits until the outbox prefix is empty and the double's Reconcile count
/// has not changed for [`QUIET_FOR`]; returns how long that took.
async fn wait_settled(env: &Env) -> Result<Duration> {
    let started = Instant::now();
    let mut count = env.ac.reconciles().len();
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = env.ac.reconciles().len();
        if now != count {
            count = now;
            since = Instant::now();
        }
        let outbox = kv::read_prefix(&env.kv, OUTBOX_PREFIX, true).await?.len();
        if outbox == 0 && since.elapsed() >= QUIET_FOR {
            return Ok(started.elapsed());
        }
        if started.elapsed() > SETTLE_WITHIN {
            bail!(
                "not settled within {SETTLE_WITHIN:?}: {outbox} outbox records left, {count} Reconciles received (last change {:?} ago); {}",
                since.elapsed(),
                env.log_hint()
            );
        }
    }
}

/// Prints the per-package table: entries into Error / Reconciles received.
fn print_tallies(tallies: &[Tally]) {
    println!("    per package: entries into Error in etcd / Reconciles received");
    for (row, chunk) in tallies.chunks(8).enumerate() {
        let cells: Vec<String> = chunk
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let p = row * 8 + i;
                let mark = if t.lost() > 0 {
                    format!(" LOST {}", t.lost())
                } else if t.duplicates() > 0 {
                    format!(" dup {}", t.duplicates())
                } else {
                    String::new()
                };
                format!(
                    "{:<14}",
                    format!("p{p} {}/{}{mark}", t.entries, t.delivered)
                )
            })
            .collect();
        println!("      {}", cells.join(" ").trim_end());
    }
}

/// One run of the drill.
pub async fn run(common: &Common, run: usize, options: CrashOptions) -> Result<RunResult> {
    if common.daemon.is_some() || common.etcd.is_some() {
        bail!(
            "crash kills and restarts its own daemon on a fresh etcd: run it without --daemon and --etcd"
        );
    }
    let topo = TOPOLOGY;
    let mut result = RunResult::new("crash (kill -9)");
    // A settling round, the kill rounds, the final round.
    let rounds_total = options.kills + 2;
    if rounds_total >= HISTORY_LIMIT {
        bail!(
            "--kills {}: {rounds_total} rounds could reach the daemon's history limit ({HISTORY_LIMIT}) and prune entries into Error before they are counted",
            options.kills
        );
    }
    let mut env = Env::start(common).await?;
    let mut life_started = Instant::now();
    let tracker = cascade::prepare(&mut env, topo, &format!("crash-r{run}-life0"), true).await?;
    let initial = cascade::package_states(&tracker, topo).await?;
    let outbox = OutboxWatch::start(&env, kv::revision(&env.kv).await? + 1).await?;
    let mut rng = SplitMix64::new(common.seed ^ (run as u64).wrapping_mul(0x9E37));
    let rounds = topo.draw_rounds_among(&CONDS, rounds_total, options.flip, &mut rng);
    let delays: Vec<Duration> = (0..options.kills)
        .map(|_| Duration::from_micros(rng.below(KILL_WITHIN_US + 1) as u64))
        .collect();
    let started = Instant::now();
    cascade::run_rounds(&env, &tracker, Plan::new(topo, &rounds[..1])).await?;

    let mut kills = Vec::with_capacity(options.kills);
    let mut longest_life = Duration::ZERO;
    for (k, delay) in delays.into_iter().enumerate() {
        let round = &rounds[k + 1];
        let kill = kill_round(
            &mut env,
            topo,
            round,
            delay,
            &format!("crash-r{run}-life{}", k + 1),
        )
        .await?;
        longest_life = longest_life.max(life_started.elapsed().saturating_sub(kill.restart));
        life_started = Instant::now();
        println!(
            "    kill {}/{}: SIGKILL {:.1} ms after the sends; {} of {} reports acknowledged{}, {} cut off; {} etcd txns in the round; restarted in {:.2} s",
            k + 1,
            options.kills,
            kill.delay.as_secs_f64() * 1e3,
            kill.acknowledged,
            topo.nodes,
            if kill.acknowledged_lost.is_empty() {
                String::new()
            } else {
                format!(" (NOT in etcd: nodes {:?})", kill.acknowledged_lost)
            },
            kill.cut_off.len(),
            kill.txns,
            kill.restart.as_secs_f64()
        );
        kills.push(kill);
    }

    let last = rounds.last().expect("at least two rounds");
    cascade::run_rounds(&env, &tracker, Plan::new(topo, std::slice::from_ref(last))).await?;
    let settle = wait_settled(&env).await?;
    longest_life = longest_life.max(life_started.elapsed());
    env.check_alive()?;
    let elapsed = started.elapsed();

    let history = kv::read_prefix(&env.kv, HISTORY_PREFIX, false).await?;
    let scenarios: Vec<String> = env
        .ac
        .reconciles()
        .into_iter()
        .map(|r| r.scenario_name)
        .collect();
    let (records, unreadable) = outbox.finish().await?;
    let (tallies, unknown) = tally(topo, &history, &scenarios, &records)?;
    print_tallies(&tallies);

    let entries: usize = tallies.iter().map(|t| t.entries).sum();
    let delivered: usize = tallies.iter().map(|t| t.delivered).sum();
    let lost: usize = tallies.iter().map(|t| t.lost()).sum();
    let duplicates: usize = tallies.iter().map(|t| t.duplicates()).sum();
    let max_history = tallies.iter().map(|t| t.history).max().unwrap_or(0);
    let acknowledged: usize = kills.iter().map(|k| k.acknowledged).sum();
    let acknowledged_lost: usize = kills.iter().map(|k| k.acknowledged_lost.len()).sum();
    let mid_round = kills
        .iter()
        .filter(|k| k.txns > 0 && k.acknowledged < topo.nodes)
        .count();
    let mut restart = Latencies::default();
    let mut delay = Latencies::default();
    for kill in &kills {
        restart.record(kill.restart);
        delay.record(kill.delay);
    }

    result.fig("kills", "", kills.len() as f64);
    result.fig("kill_delay_p50_ms", "ms", delay.ms(0.5));
    result.fig("kills_mid_round", "", mid_round as f64);
    result.fig(
        "etcd_txns_before_kills",
        "",
        kills.iter().map(|k| k.txns).sum::<i64>() as f64,
    );
    result.fig("reports_acknowledged_before_kill", "", acknowledged as f64);
    let mut errors: std::collections::BTreeMap<&str, usize> = Default::default();
    for error in kills.iter().flat_map(|k| &k.cut_off) {
        *errors.entry(error).or_default() += 1;
    }
    result.fig(
        "reports_cut_off_by_kill",
        "",
        errors.values().sum::<usize>() as f64,
    );
    result.target(
        "acknowledged_reports_lost",
        "",
        acknowledged_lost as f64,
        "R1",
        Bound::AtMost(0.0),
    );
    result.fig("restart_p50_s", "s", restart.ms(0.5) / 1e3);
    result.fig("restart_max_s", "s", restart.max_ms() / 1e3);
    result.fig("error_entries", "", entries as f64);
    result.fig(
        "error_entries_without_kills",
        "",
        topo.error_entries(&initial, &rounds).iter().sum::<usize>() as f64,
    );
    result.fig("reconciles_delivered", "", delivered as f64);
    result.target("reconciles_lost", "", lost as f64, "R1", Bound::AtMost(0.0));
    result.fig("reconciles_duplicated", "", duplicates as f64);
    result.fig("outbox_records_written", "", records.len() as f64);
    result.fig("max_history_per_package", "", max_history as f64);
    result.fig("settle_s", "s", settle.as_secs_f64());
    result.fig("drill_s", "s", elapsed.as_secs_f64());

    if acknowledged_lost > 0 {
        result.fail(format!(
            "{acknowledged_lost} reports answered SUCCESS before a kill were not in etcd at the kill"
        ));
    }
    if lost > 0 {
        let which: Vec<String> = tallies
            .iter()
            .enumerate()
            .filter(|(_, t)| t.lost() > 0)
            .map(|(p, t)| format!("p{p}: {} entries, {} Reconciles", t.entries, t.delivered))
            .collect();
        result.fail(format!(
            "{lost} entries into Error recorded in etcd have no Reconcile ({} packages), e.g. {}",
            which.len(),
            which[..which.len().min(5)].join("; ")
        ));
    }
    let unrecorded: Vec<String> = tallies
        .iter()
        .enumerate()
        .filter(|(_, t)| t.records < t.entries)
        .map(|(p, t)| format!("p{p}: {} entries, {} records", t.entries, t.records))
        .collect();
    if !unrecorded.is_empty() {
        result.fail(format!(
            "packages with fewer outbox records than entries into Error (a Reconcile never asked for, whatever the count of Reconciles says): {}",
            unrecorded.join("; ")
        ));
    }
    if !unknown.is_empty() || !unreadable.is_empty() {
        result.fail(format!(
            "Reconciles or outbox records the drill did not define: {unknown:?}, unreadable records {unreadable:?}"
        ));
    }
    if max_history >= HISTORY_LIMIT {
        result.fail(format!(
            "a package has {max_history} history entries: the daemon prunes at {HISTORY_LIMIT}, so entries into Error may be missing from the count"
        ));
    }
    if !errors.is_empty() {
        let listed: Vec<String> = errors.iter().map(|(e, n)| format!("{n} x {e}")).collect();
        result.note(format!(
            "reports cut off by the kills: {}",
            listed.join(", ")
        ));
    }
    if duplicates > 0 {
        result.note(format!(
            "{duplicates} Reconciles delivered twice: at-least-once delivery repeats one when the daemon is killed between the ActionController's answer and the outbox record's delete"
        ));
    }
    if longest_life >= Duration::from_secs(55) {
        result.note(format!(
            "a daemon lived {:.0} s: its 1-minute recovery check may have asked again for a package still in Error, counted as a duplicate",
            longest_life.as_secs_f64()
        ));
    }
    cascade::verify_final(&env, topo, last, &mut result).await?;
    if !result.failures.is_empty() {
        result.note(format!("daemon logs: {}", common.workdir.display()));
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_history_entry() {
        let key = "/statemanager/history/package/p7/00000001757000000000";
        let value = r#"{"from":"Degraded","to":"Error","at_ns":1,"source":"StateManager","transition_id":"t","reason":"r"}"#;
        assert_eq!(history_entry(key, value), Some(("p7".into(), true)));
        let value = r#"{"from":"Error","to":"Running","at_ns":1,"source":"StateManager","transition_id":"t","reason":"r"}"#;
        assert_eq!(history_entry(key, value), Some(("p7".into(), false)));
        assert_eq!(history_entry("/other/p7/1", value), None);
    }

    #[test]
    fn counts_lost_and_duplicated_reconciles_per_package() {
        let topo = Topology {
            packages: 2,
            nodes: 1,
        };
        let entry = |p: usize, seq: usize, to: &str| {
            (
                format!("{HISTORY_PREFIX}p{p}/{seq:020}"),
                format!(r#"{{"from":null,"to":"{to}"}}"#),
            )
        };
        let history = vec![
            entry(0, 1, "Error"),
            entry(0, 2, "Running"),
            entry(0, 3, "Error"),
            entry(1, 1, "Error"),
        ];
        let scenarios = vec!["s0".to_owned(), "s1".into(), "s1".into(), "x".into()];
        let records = vec!["p0".to_owned(), "p0".into(), "p1".into()];
        let (tallies, unknown) = tally(topo, &history, &scenarios, &records).expect("tally");
        assert_eq!((tallies[0].entries, tallies[0].delivered), (2, 1));
        assert_eq!((tallies[0].lost(), tallies[0].duplicates()), (1, 0));
        assert_eq!((tallies[1].lost(), tallies[1].duplicates()), (0, 1));
        assert_eq!((tallies[0].history, tallies[0].records), (3, 2));
        assert_eq!(unknown, HashMap::from([("x".to_owned(), 1)]));
    }
}
