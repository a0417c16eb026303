//! The etcd member-loss drill (QUALITY-BAR R6): one daemon (no HA) on a
//! 3-member etcd cluster, given every member's URL; W1 lifecycle load
//! ([`crate::lifecycle`], `--clients` 16) for `before`, then the cluster's
//! raft leader (asked with etcd's Status call on each member; member 0
//! when none can tell) is killed with SIGKILL and the load goes on for
//! `after`. The killed member stays down.
//!
//! Reported: the throughput before the kill, after it and in the second
//! half of `after` (recovered), the first SUCCESS to a request sent after
//! the kill, the slowest answer, the answers that were not SUCCESS by
//! kind, and the acknowledged transitions checked in etcd (read through
//! the surviving members): one lost, or an answer "nothing was written"
//! that was written, fails the drill.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::kv;
use crate::lifecycle::{self, Load};
use crate::report::{Bound, RunResult};
use crate::setup::{Common, Env};

/// etcd members.
const MEMBERS: usize = 3;
/// The first part of `before` is left out of the throughput before the kill.
const RAMP: Duration = Duration::from_secs(1);

/// The drill's knobs.
#[derive(Debug, Clone, Copy)]
pub struct MemberLossOptions {
    /// Concurrent lifecycle clients.
    pub clients: usize,
    /// Load before the kill.
    pub before: Duration,
    /// Load after the kill.
    pub after: Duration,
}

/// The raft leader as the members see it: `(index, member id, raft term)`,
/// from the first member whose Status names a leader that is one of them.
async fn raft_leader(endpoints: &[String], skip: Option<usize>) -> Option<(usize, u64, u64)> {
    let mut ids = Vec::new();
    let mut leader = None;
    for (i, endpoint) in endpoints.iter().enumerate() {
        if Some(i) == skip {
            ids.push(None);
            continue;
        }
        let status = async {
            let mut client = kv::connect(endpoint).await.ok()?;
            tokio::time::timeout(Duration::from_secs(2), client.status())
                .await
                .ok()?
                .ok()
        }
        .await;
        match status {
            Some(status) => {
                ids.push(status.header().map(|h| h.member_id()));
                if status.leader() != 0 {
                    leader.get_or_insert((status.leader(), status.raft_term()));
                }
            }
            None => ids.push(None),
        }
    }
    let (id, term) = leader?;
    let index = ids.iter().position(|m| *m == Some(id))?;
    Some((index, id, term))
}

/// One run of the drill.
pub async fn run(common: &Common, run: usize, options: MemberLossOptions) -> Result<RunResult> {
    if common.daemon.is_some() || common.etcd.is_some() {
        bail!(
            "member-loss kills a member of its own etcd cluster: run it without --daemon and --etcd"
        );
    }
    let mut result = RunResult::new("member-loss (etcd member killed)");
    let mut env = Env::start_cluster(common, MEMBERS).await?;
    let tag = format!("member-loss-r{run}");
    env.start_daemon(&tag).await?;
    let endpoints: Vec<String> = env.etcd_url.split(',').map(str::to_owned).collect();
    let target = env.sm()?;
    let load = Load::start(
        &format!("{tag}-{}", common.session),
        std::slice::from_ref(&target),
        options.clients,
    );
    tokio::time::sleep(options.before).await;
    let (victim, how) = match raft_leader(&endpoints, None).await {
        Some((index, id, term)) => (
            index,
            format!("the raft leader (member {index}, id {id:x}, term {term})"),
        ),
        None => (0, "member 0 (no member named the raft leader)".to_owned()),
    };
    let killed_at = Instant::now();
    env.etcd
        .as_mut()
        .context("the drill's etcd")?
        .kill_member(victim)
        .context("killing the etcd member")?;
    println!(
        "    {} clients on one daemon (--etcd-endpoints of all {MEMBERS} members); after {:.1} s killed {how} with SIGKILL",
        options.clients,
        options.before.as_secs_f64()
    );
    tokio::time::sleep(options.after).await;
    let answers = load.finish().await?;
    env.check_alive()?;
    let survivors: Vec<String> = endpoints
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, e)| e.clone())
        .collect();
    let new_leader = raft_leader(&endpoints, Some(victim)).await;
    let reader = kv::connect(&survivors.join(",")).await?;
    let verdict = lifecycle::verify(&reader, &answers).await?;

    let ramp_end = answers.started + RAMP.min(options.before / 4);
    let before = answers.rate(ramp_end, killed_at);
    let after = answers.rate(killed_at, answers.stopped);
    let half = killed_at + (answers.stopped - killed_at) / 2;
    let recovered = answers.rate(half, answers.stopped);
    let first = answers.first_success_sent_after(killed_at);
    let around = answers.latencies(killed_at - Duration::from_secs(1), answers.stopped);
    let before_latencies = answers.latencies(ramp_end, killed_at);
    let errors_before = answers.errors(answers.started, killed_at);
    let errors_after = answers.errors(killed_at, answers.stopped);
    let slowest = answers
        .all
        .iter()
        .max_by_key(|a| a.latency())
        .context("no request was answered")?;

    let timeline: Vec<String> = answers
        .per_second(answers.started)
        .iter()
        .map(usize::to_string)
        .collect();
    println!(
        "    transitions per second from the start (kill at {:.1} s): {}",
        (killed_at - answers.started).as_secs_f64(),
        timeline.join(" ")
    );
    match &new_leader {
        Some((index, id, term)) => {
            println!("    afterwards the raft leader is member {index} (id {id:x}, term {term})")
        }
        None => println!("    afterwards no surviving member names a raft leader"),
    }
    println!(
        "    slowest answer {:.3} s, sent {:+.3} s from the kill ({})",
        slowest.latency().as_secs_f64(),
        if slowest.sent >= killed_at {
            (slowest.sent - killed_at).as_secs_f64()
        } else {
            -(killed_at - slowest.sent).as_secs_f64()
        },
        slowest
            .failure
            .as_ref()
            .map_or("SUCCESS", |f| f.kind.as_str())
    );
    lifecycle::print_errors("answers not SUCCESS before the kill", &errors_before);
    lifecycle::print_errors("answers not SUCCESS after the kill", &errors_after);

    result.fig(
        "killed_was_raft_leader",
        "",
        f64::from(u8::from(how.starts_with("the raft"))),
    );
    result.fig("per_s_before", "/s", before);
    result.fig("per_s_after_kill", "/s", after);
    result.fig("per_s_second_half_after", "/s", recovered);
    result.fig("ratio_recovered_vs_before", "x", recovered / before);
    result.fig(
        "first_success_after_kill_ms",
        "ms",
        first.map_or(f64::NAN, |at| (at - killed_at).as_secs_f64() * 1e3),
    );
    result.fig("answer_p50_ms_before", "ms", before_latencies.ms(0.5));
    result.fig("answer_p99_ms_before", "ms", before_latencies.ms(0.99));
    result.fig("answer_p99_ms_around_kill", "ms", around.ms(0.99));
    result.fig("answer_max_ms_around_kill", "ms", around.max_ms());
    result.fig(
        "errors_before_kill",
        "",
        errors_before.values().sum::<usize>() as f64,
    );
    result.fig(
        "errors_after_kill",
        "",
        errors_after.values().sum::<usize>() as f64,
    );
    result.target(
        "recovered",
        "",
        f64::from(u8::from(first.is_some())),
        "R6",
        Bound::AtLeast(1.0),
    );
    verdict.add_to(&mut result, "R6");
    if first.is_none() {
        result.fail("no SUCCESS to a request sent after the kill: the daemon did not recover");
    }
    if !result.failures.is_empty() {
        result.note(env.log_hint());
    }
    Ok(result)
}
