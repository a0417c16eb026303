//! The kill -9 drills under W1 lifecycles: `smbench failover` (an HA
//! group of `--members` daemons with `--ha --ha-lease-ttl 2s` on a
//! 3-member etcd) and `smbench crash --w1` (QUALITY-BAR R1 as worded: the
//! only daemon, no HA, on one etcd).
//!
//! [`lifecycle`](crate::lifecycle) clients (`--clients`, 16) walk new
//! scenarios through W1's four steps, spread over every member's address
//! (so followers forward). After `warmup` each of `--kills` rounds finds
//! the leader (the member whose `/healthz?leader` answers 200), kills it
//! with SIGKILL and waits for another member to answer `/healthz?leader`
//! 200 (the takeover), then restarts the killed member on its gRPC port
//! (it rejoins as a follower; the clients' channels reconnect) and waits
//! until its `/healthz` says `follower`; the load goes on for `between`
//! before the next kill. With one member there is nobody to take over:
//! the killed daemon is restarted at once and the "takeover" is its
//! `/healthz?leader` answering 200 (a lone daemon leads).
//!
//! Measured per kill: the takeover (kill -> a member answers
//! `/healthz?leader` 200), the first SUCCESS to a request sent after the
//! kill, the new leader's `statemanager_ha_last_takeover_seconds` (elected
//! -> engine loaded), kill -> the killed member back, the answers that
//! were not SUCCESS in the gap (from the kill until the member is back and
//! a SUCCESS came; requests the kill cut off included) by kind, those
//! outside any gap, and the throughput from the gap's end to the next kill
//! against the throughput before the first kill. At the end every acknowledged transition must be in
//! etcd ([`lifecycle::verify`]), and no answer saying "nothing was
//! written" may have been written; any other member exiting, two members
//! answering `/healthz?leader` 200 at once, a takeover that does not come
//! within [`TAKEOVER_WITHIN`], or a panic in a daemon log fails the drill.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::daemon::{Daemon, DaemonSpec, log_tail};
use crate::lifecycle::{self, Answers, Load};
use crate::report::{Bound, RunResult};
use crate::scrape::{Metrics, http_get};
use crate::setup::{Common, Env, connect_sm};
use crate::stats::Latencies;

/// A takeover (or, with one member, a restart) must come within this.
const TAKEOVER_WITHIN: Duration = Duration::from_secs(30);
/// How often `/healthz?leader` is asked while waiting for a leader.
const POLL: Duration = Duration::from_millis(10);
/// Connect and read limit of one `/healthz` request.
const HEALTH_TIMEOUT: Duration = Duration::from_millis(500);
/// The first part of the warm-up is left out of the throughput before the kills.
const RAMP: Duration = Duration::from_secs(1);
/// What a daemon log shows when a thread panicked.
const PANIC: &str = "panicked at";

/// The drill's knobs.
#[derive(Debug, Clone, Copy)]
pub struct FailoverOptions {
    /// Daemons (1: no HA, the R1 drill).
    pub members: usize,
    /// etcd members.
    pub etcd_members: usize,
    /// `--ha-lease-ttl` in seconds (with more than one member).
    pub lease_ttl_s: u64,
    /// Rounds ended by a SIGKILL of the leader.
    pub kills: usize,
    /// Concurrent lifecycle clients.
    pub clients: usize,
    /// Load before the first kill.
    pub warmup: Duration,
    /// Load after a killed member is back, before the next kill (and after the last).
    pub between: Duration,
}

impl FailoverOptions {
    /// `true` for an HA group (more than one member).
    pub fn ha(&self) -> bool {
        self.members > 1
    }
}

/// One daemon of the group.
struct Member {
    /// Its process (None between a kill and the restart).
    daemon: Option<Daemon>,
    /// Its gRPC address, kept across restarts.
    grpc: SocketAddr,
    /// Restarts so far (names its log files).
    life: usize,
}

/// What one kill round saw.
struct Round {
    killed: usize,
    killed_at: Instant,
    /// When a member first answered `/healthz?leader` 200, and which.
    leader_at: Instant,
    new_leader: usize,
    /// The new leader's `statemanager_ha_last_takeover_seconds` (HA only).
    engine_load_s: Option<f64>,
    /// When the killed member was back (listening, and a follower with HA).
    back_at: Instant,
}

fn spec_of(env: &Env, options: &FailoverOptions, label: &str, listen: &str) -> DaemonSpec {
    let mut spec = env.spec(label, listen);
    if options.ha() {
        spec.extra_args.extend([
            "--ha".to_owned(),
            "--ha-lease-ttl".to_owned(),
            format!("{}s", options.lease_ttl_s),
        ]);
    }
    spec
}

/// `/healthz{query}` of a member: its status code and body (None: no answer).
async fn health(member: &Member, query: &str) -> Option<(u16, String)> {
    let addr = member.daemon.as_ref()?.metrics?;
    http_get(addr, &format!("/healthz{query}"), HEALTH_TIMEOUT)
        .await
        .ok()
}

/// The members answering `/healthz?leader` 200 now.
async fn leaders(members: &[Member]) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, member) in members.iter().enumerate() {
        if matches!(health(member, "?leader").await, Some((200, _))) {
            out.push(i);
        }
    }
    out
}

/// Polls until exactly one member leads; counts the polls that saw two.
async fn wait_leader(members: &[Member], within: Duration, split: &mut usize) -> Result<usize> {
    let deadline = Instant::now() + within;
    loop {
        let now = leaders(members).await;
        match now.as_slice() {
            [one] => return Ok(*one),
            [] => {}
            _ => *split += 1,
        }
        if Instant::now() > deadline {
            bail!(
                "no single member answered /healthz?leader 200 within {within:?} (leaders: {now:?})"
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls until `/healthz` of `member` answers 200 and, with HA, names the follower role.
async fn wait_back(member: &Member, ha: bool, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if let Some((200, body)) = health(member, "").await
            && (!ha || body.contains("follower") || body.contains("leader"))
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the restarted member did not answer /healthz as a follower within {within:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Spawns member `i`'s daemon on `listen` and waits until it listens.
async fn spawn(
    env: &Env,
    options: &FailoverOptions,
    tag: &str,
    i: usize,
    life: usize,
    listen: &str,
) -> Result<Daemon> {
    let spec = spec_of(env, options, &format!("{tag}-m{i}-life{life}"), listen);
    let mut daemon = Daemon::spawn(&spec)?;
    daemon.wait_listening(Duration::from_secs(60)).await?;
    Ok(daemon)
}

/// One kill round: SIGKILL of `leader`, the takeover, the restart.
async fn kill_round(
    env: &Env,
    options: &FailoverOptions,
    members: &mut [Member],
    leader: usize,
    tag: &str,
    split: &mut usize,
) -> Result<Round> {
    let mut daemon = members[leader]
        .daemon
        .take()
        .context("the leader is not running")?;
    // The kill's moment is when SIGKILL is sent (`kill` then reaps it).
    let killed_at = Instant::now();
    daemon.kill()?;
    drop(daemon);
    let restart = |members: &mut [Member]| {
        let member = &mut members[leader];
        member.life += 1;
        (member.life, member.grpc.to_string())
    };
    let (leader_at, new_leader, back_at) = if options.ha() {
        let new_leader = wait_leader(members, TAKEOVER_WITHIN, split)
            .await
            .context("no takeover after the leader's kill")?;
        let leader_at = Instant::now();
        let (life, listen) = restart(members);
        members[leader].daemon = Some(spawn(env, options, tag, leader, life, &listen).await?);
        wait_back(&members[leader], true, Duration::from_secs(30)).await?;
        (leader_at, new_leader, Instant::now())
    } else {
        let (life, listen) = restart(members);
        members[leader].daemon = Some(spawn(env, options, tag, leader, life, &listen).await?);
        let new_leader = wait_leader(members, TAKEOVER_WITHIN, split).await?;
        let at = Instant::now();
        (at, new_leader, at)
    };
    let engine_load_s = match (options.ha(), members[new_leader].daemon.as_ref()) {
        (
            true,
            Some(Daemon {
                metrics: Some(addr),
                ..
            }),
        ) => Metrics::fetch(*addr)
            .await
            .ok()
            .and_then(|m| m.value("statemanager_ha_last_takeover_seconds")),
        _ => None,
    };
    Ok(Round {
        killed: leader,
        killed_at,
        leader_at,
        new_leader,
        engine_load_s,
        back_at,
    })
}

/// Every line of the drill's daemon logs that reports a panic.
fn panics(common: &Common, tag: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(&common.workdir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(tag) || !name.ends_with(".log") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains(PANIC)) {
            out.push(format!("{name}: {line}"));
        }
    }
    out
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Seconds from `from` to `at` (negative before it).
fn signed(at: Instant, from: Instant) -> f64 {
    if at >= from {
        secs(at - from)
    } else {
        -secs(from - at)
    }
}

/// One run of the drill.
pub async fn run(
    common: &Common,
    run: usize,
    label: &str,
    options: FailoverOptions,
) -> Result<RunResult> {
    if common.daemon.is_some() || common.etcd.is_some() {
        bail!(
            "{label} kills and restarts its own daemons on a fresh etcd: run it without --daemon and --etcd"
        );
    }
    let id = if options.ha() { "HA" } else { "R1" };
    let tag = if options.ha() {
        format!("failover-r{run}")
    } else {
        format!("crash-w1-r{run}")
    };
    let mut result = RunResult::new(label);
    let env = Env::start_cluster(common, options.etcd_members).await?;
    // Declared after `env`: dropped (SIGTERM) before its etcd.
    let mut members: Vec<Member> = Vec::new();
    for i in 0..options.members {
        let daemon = spawn(&env, &options, &tag, i, 0, "127.0.0.1:0").await?;
        let grpc = daemon.grpc.context("the daemon's gRPC address")?;
        members.push(Member {
            daemon: Some(daemon),
            grpc,
            life: 0,
        });
    }
    let mut split = 0usize;
    let first = wait_leader(&members, TAKEOVER_WITHIN, &mut split).await?;
    for member in &members {
        wait_back(member, options.ha(), Duration::from_secs(30)).await?;
    }
    let mut targets = Vec::new();
    for member in &members {
        targets.push(connect_sm(&format!("http://{}", member.grpc)).await?);
    }
    println!(
        "    {} daemon(s) on {} etcd member(s){}; member {first} leads; {} clients spread over them",
        options.members,
        options.etcd_members,
        if options.ha() {
            format!(", --ha --ha-lease-ttl {}s", options.lease_ttl_s)
        } else {
            String::new()
        },
        options.clients
    );

    let prefix = format!("{}-{}", tag, common.session);
    let load = Load::start(&prefix, &targets, options.clients);
    tokio::time::sleep(options.warmup).await;
    let mut rounds: Vec<Round> = Vec::new();
    let mut aborted = None;
    for k in 0..options.kills {
        let leader = match wait_leader(&members, TAKEOVER_WITHIN, &mut split).await {
            Ok(leader) => leader,
            Err(error) => {
                aborted = Some(format!("before kill {}: {error:#}", k + 1));
                break;
            }
        };
        match kill_round(&env, &options, &mut members, leader, &tag, &mut split).await {
            Ok(round) => {
                if options.ha() {
                    println!(
                        "    kill {}/{}: member {} (leader) killed; member {} answers /healthz?leader after {:.3} s{}; member {} back as a follower after {:.3} s",
                        k + 1,
                        options.kills,
                        round.killed,
                        round.new_leader,
                        secs(round.leader_at - round.killed_at),
                        round
                            .engine_load_s
                            .map(|s| format!(" (engine load {:.0} ms)", s * 1e3))
                            .unwrap_or_default(),
                        round.killed,
                        secs(round.back_at - round.killed_at),
                    );
                } else {
                    println!(
                        "    kill {}/{}: daemon killed; restarted, it answers /healthz?leader after {:.3} s",
                        k + 1,
                        options.kills,
                        secs(round.leader_at - round.killed_at),
                    );
                }
                rounds.push(round);
            }
            Err(error) => {
                aborted = Some(format!("kill {}: {error:#}", k + 1));
                break;
            }
        }
        tokio::time::sleep(options.between).await;
    }
    if aborted.is_none() && rounds.is_empty() {
        tokio::time::sleep(options.between).await;
    }
    let answers = load.finish().await?;

    // Members that exited on their own (none was being killed now).
    let mut exited = Vec::new();
    for (i, member) in members.iter_mut().enumerate() {
        if let Some(daemon) = &mut member.daemon
            && !daemon.is_running()
        {
            exited.push(format!(
                "member {i} exited; log {}:\n{}",
                daemon.log_path.display(),
                log_tail(&daemon.log_path)
            ));
        }
    }
    let fenced = fenced_writes(&members).await;
    let verdict = lifecycle::verify(&env.kv, &answers).await?;
    report(&mut result, &options, &answers, &rounds, id);
    if options.ha() {
        result.fig("fenced_writes", "", fenced);
        result.target(
            "polls_with_two_leaders",
            "",
            split as f64,
            id,
            Bound::AtMost(0.0),
        );
    }
    verdict.add_to(&mut result, id);
    if split > 0 {
        result.fail(format!(
            "{split} polls saw two members answer /healthz?leader 200 at once"
        ));
    }
    if let Some(why) = aborted {
        result.fail(format!(
            "the drill stopped after {} of {} kills: {why}",
            rounds.len(),
            options.kills
        ));
    }
    for exit in exited {
        result.fail(exit);
    }
    let panicked = panics(common, &tag);
    if !panicked.is_empty() {
        result.fail(format!(
            "{} panics in the daemon logs, e.g. {}",
            panicked.len(),
            panicked[..panicked.len().min(3)].join(" | ")
        ));
    }
    if !result.failures.is_empty() {
        result.note(format!(
            "daemon logs: {}/{tag}-m*-life*.log",
            common.workdir.display()
        ));
    }
    drop(members);
    Ok(result)
}

/// `statemanager_ha_fenced_writes_total` summed over the running members.
async fn fenced_writes(members: &[Member]) -> f64 {
    let mut total = 0.0;
    for member in members {
        if let Some(Daemon {
            metrics: Some(addr),
            ..
        }) = &member.daemon
            && let Ok(metrics) = Metrics::fetch(*addr).await
        {
            total += metrics
                .value("statemanager_ha_fenced_writes_total")
                .unwrap_or(0.0);
        }
    }
    total
}

/// Prints the rounds and adds the figures.
///
/// Gap `k` runs from kill `k` until the killed member is back and a request
/// sent after the kill was answered SUCCESS; an answer that is not SUCCESS
/// belongs to it when it came after the kill and was sent before the gap
/// ended (requests cut off by the kill included). Every other such answer
/// is "outside the gaps" and printed with where it fell.
fn report(
    result: &mut RunResult,
    options: &FailoverOptions,
    answers: &Answers,
    rounds: &[Round],
    id: &'static str,
) {
    let first_kill = rounds.first().map_or(answers.stopped, |r| r.killed_at);
    let ramp_end = answers.started + RAMP.min(options.warmup / 4);
    let before = answers.rate(ramp_end, first_kill);
    let mut takeover = Latencies::default();
    let mut first_success = Latencies::default();
    let mut back = Latencies::default();
    let mut engine_load = Latencies::default();
    let mut after_rates = Vec::new();
    let mut never_recovered = 0;
    let mut gaps = Vec::new();
    for (k, round) in rounds.iter().enumerate() {
        let until = rounds.get(k + 1).map_or(answers.stopped, |r| r.killed_at);
        let success = answers.first_success_sent_after(round.killed_at);
        let gap_end = success.map_or(round.back_at, |s| s.max(round.back_at));
        gaps.push((round.killed_at, gap_end, until, success));
    }
    let gap_of = |a: &lifecycle::Answer| {
        gaps.iter()
            .position(|&(kill, end, _, _)| a.answered >= kill && a.sent < end)
    };
    let mut per_gap = vec![0usize; gaps.len()];
    let mut gap_errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut steady_errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut steady_examples = Vec::new();
    for a in &answers.all {
        let Some(failure) = &a.failure else { continue };
        match gap_of(a) {
            Some(k) => {
                per_gap[k] += 1;
                *gap_errors.entry(failure.kind.clone()).or_default() += 1;
            }
            None => {
                *steady_errors.entry(failure.kind.clone()).or_default() += 1;
                if steady_examples.len() < 8 {
                    // Placed after the last gap that ended before it was sent.
                    let (what, from) = gaps
                        .iter()
                        .enumerate()
                        .rev()
                        .find(|(_, g)| g.1 <= a.sent)
                        .map_or(("the start".to_owned(), answers.started), |(k, g)| {
                            (format!("the end of gap {}", k + 1), g.1)
                        });
                    steady_examples.push(format!(
                        "client {} step {}: sent {:+.3} s, answered {:+.3} s from {what}: {}",
                        a.client,
                        a.step,
                        signed(a.sent, from),
                        signed(a.answered, from),
                        failure.kind
                    ));
                }
            }
        }
    }
    println!(
        "    throughput before the first kill: {before:.0} transitions/s; per kill: takeover, first SUCCESS sent after the kill, member back, answers not SUCCESS in the gap, transitions/s from the gap's end to the next kill"
    );
    for (k, (round, &(kill, gap_end, until, success))) in rounds.iter().zip(&gaps).enumerate() {
        let after = answers.rate(gap_end, until);
        takeover.record(round.leader_at - kill);
        back.record(round.back_at - kill);
        if let Some(s) = round.engine_load_s {
            engine_load.record(Duration::from_secs_f64(s.max(0.0)));
        }
        match success {
            Some(at) if at <= until => first_success.record(at - kill),
            _ => never_recovered += 1,
        }
        println!(
            "      kill {:>2}: {:.3} s, {}, {:.3} s, {} errors, {:.0}/s",
            k + 1,
            secs(round.leader_at - kill),
            success.map_or("none".to_owned(), |at| format!("{:.3} s", secs(at - kill))),
            secs(round.back_at - kill),
            per_gap[k],
            after
        );
        if !after.is_nan() {
            after_rates.push(after);
        }
    }
    lifecycle::print_errors("answers not SUCCESS in the gaps", &gap_errors);
    lifecycle::print_errors("answers not SUCCESS outside the gaps", &steady_errors);
    for example in &steady_examples {
        println!("        e.g. {example}");
    }

    let timeline: Vec<String> = answers
        .per_second(answers.started)
        .iter()
        .map(usize::to_string)
        .collect();
    let kills_at: Vec<String> = rounds
        .iter()
        .map(|r| format!("{:.1}", secs(r.killed_at - answers.started)))
        .collect();
    println!(
        "    transitions per second from the start (kills at {} s): {}",
        kills_at.join(", "),
        timeline.join(" ")
    );
    let latencies = answers.latencies(answers.started, answers.stopped);
    let total = answers.all.iter().filter(|a| a.ok()).count();
    let median_after = crate::stats::median(&after_rates);
    let min_after = after_rates.iter().copied().fold(f64::NAN, f64::min);
    result.fig("kills", "", rounds.len() as f64);
    if options.ha() {
        result.fig("takeover_p50_s", "s", takeover.ms(0.5) / 1e3);
        result.fig("takeover_max_s", "s", takeover.max_ms() / 1e3);
        result.fig("engine_load_p50_ms", "ms", engine_load.ms(0.5));
        result.fig("engine_load_max_ms", "ms", engine_load.max_ms());
    } else {
        result.fig("restart_to_leader_p50_s", "s", takeover.ms(0.5) / 1e3);
        result.fig("restart_to_leader_max_s", "s", takeover.max_ms() / 1e3);
    }
    result.fig("first_success_p50_s", "s", first_success.ms(0.5) / 1e3);
    result.fig("first_success_max_s", "s", first_success.max_ms() / 1e3);
    result.target(
        "kills_without_success_after",
        "",
        never_recovered as f64,
        id,
        Bound::AtMost(0.0),
    );
    result.fig("killed_member_back_p50_s", "s", back.ms(0.5) / 1e3);
    result.fig("per_s_before_kills", "/s", before);
    result.fig("per_s_after_p50", "/s", median_after);
    result.fig("per_s_after_min", "/s", min_after);
    result.fig("ratio_after_vs_before", "x", median_after / before);
    result.fig(
        "per_s_overall",
        "/s",
        total as f64 / secs(answers.stopped - answers.started),
    );
    result.latencies("answer", &latencies);
    result.fig(
        "errors_in_gaps",
        "",
        gap_errors.values().sum::<usize>() as f64,
    );
    result.fig(
        "errors_outside_gaps",
        "",
        steady_errors.values().sum::<usize>() as f64,
    );
    if never_recovered > 0 {
        result.fail(format!(
            "{never_recovered} kills were not followed by any SUCCESS before the next kill or the end"
        ));
    }
}
