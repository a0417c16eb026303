//! The frozen-store drill (QUALITY-BAR R2): the daemon runs with
//! `--commit-timeout 5s`; 16 clients send W1's first step (scenario
//! `o{client}-{i}` Idle -> Waiting, a new scenario each time, gRPC deadline
//! 10 s) in a loop; after 3 s etcd is stopped with SIGSTOP for `--freeze`
//! while they keep sending, continued with SIGCONT, and the load runs 3 s
//! more.
//!
//! Every answer's latency and outcome is recorded: SUCCESS,
//! RESOURCE_UNAVAILABLE saying "nothing was written" (never committed),
//! RESOURCE_UNAVAILABLE without it (a transaction sent and not confirmed in
//! time, which etcd may still apply), another error code, or a gRPC error
//! status. The drill fails when a caller's deadline is missed
//! (DEADLINE_EXCEEDED or CANCELLED, or an answer after 10 s), when a
//! scenario answered SUCCESS is not `Waiting` in etcd afterwards, when a
//! scenario answered "nothing was written" is in etcd, or when no SUCCESS
//! follows SIGCONT.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use transport_grpc::proto::statemanager as sm;

use crate::kv;
use crate::report::{Bound, RunResult};
use crate::setup::{Common, Env, Sm};
use crate::stats::Latencies;

/// Concurrent clients.
const CLIENTS: usize = 16;
/// The daemon's `--commit-timeout`.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Every request's gRPC deadline.
const DEADLINE: Duration = Duration::from_secs(10);
/// Load before the freeze.
const BEFORE: Duration = Duration::from_secs(3);
/// Load after the freeze.
const AFTER: Duration = Duration::from_secs(3);
/// An answer later than `COMMIT_TIMEOUT` plus this is counted late.
const LATE_MARGIN: Duration = Duration::from_millis(100);
/// What a RESOURCE_UNAVAILABLE answer says when the change was never committed.
const NOTHING_WRITTEN: &str = "nothing was written";

/// The drill's knobs.
#[derive(Debug, Clone, Copy)]
pub struct OutageOptions {
    /// How long etcd stays stopped.
    pub freeze: Duration,
}

/// How a request was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// `ERROR_CODE_SUCCESS`: durable.
    Success,
    /// `ERROR_CODE_RESOURCE_UNAVAILABLE`, with its message.
    Unavailable(String),
    /// Another error code: its name and message.
    Refused(String),
    /// A gRPC error status instead of an answer.
    Grpc(tonic::Code, String),
}

impl Outcome {
    fn from_answer(
        answer: Result<tonic::Response<sm::StateChangeResponse>, tonic::Status>,
    ) -> Self {
        match answer {
            Err(status) => Outcome::Grpc(status.code(), status.message().to_owned()),
            Ok(answer) => {
                let answer = answer.into_inner();
                match sm::ErrorCode::try_from(answer.error_code) {
                    Ok(sm::ErrorCode::Success) => Outcome::Success,
                    Ok(sm::ErrorCode::ResourceUnavailable) => Outcome::Unavailable(answer.message),
                    Ok(code) => {
                        Outcome::Refused(format!("{}: {}", code.as_str_name(), answer.message))
                    }
                    Err(_) => {
                        Outcome::Refused(format!("{}: {}", answer.error_code, answer.message))
                    }
                }
            }
        }
    }

    /// RESOURCE_UNAVAILABLE with the promise that nothing was written.
    fn unwritten(&self) -> bool {
        matches!(self, Outcome::Unavailable(m) if m.contains(NOTHING_WRITTEN))
    }

    /// RESOURCE_UNAVAILABLE without that promise: etcd may still apply it.
    fn in_doubt(&self) -> bool {
        matches!(self, Outcome::Unavailable(_)) && !self.unwritten()
    }

    /// The caller's deadline passed before an answer.
    fn deadline_missed(&self) -> bool {
        matches!(
            self,
            Outcome::Grpc(tonic::Code::DeadlineExceeded | tonic::Code::Cancelled, _)
        )
    }

    /// The row of the printed table.
    fn row(&self) -> &'static str {
        match self {
            Outcome::Success => "SUCCESS",
            Outcome::Unavailable(_) if self.unwritten() => "UNAVAILABLE, nothing was written",
            Outcome::Unavailable(_) => "UNAVAILABLE, in doubt",
            Outcome::Refused(_) => "another error code",
            Outcome::Grpc(..) => "gRPC error status",
        }
    }
}

/// One request and its answer.
struct Answer {
    name: String,
    sent: Instant,
    answered: Instant,
    outcome: Outcome,
}

impl Answer {
    fn latency(&self) -> Duration {
        self.answered - self.sent
    }
}

/// One client: new scenarios Idle -> Waiting, one at a time, until `stop`.
async fn client(mut sm: Sm, client: usize, stop: Arc<AtomicBool>) -> Vec<Answer> {
    let mut out = Vec::new();
    for i in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let name = format!("o{client}-{i}");
        let mut request = tonic::Request::new(sm::StateChange {
            resource_type: sm::ResourceType::Scenario as i32,
            resource_name: name.clone(),
            current_state: "Idle".into(),
            target_state: "Waiting".into(),
            transition_id: format!("{name}-0"),
            timestamp_ns: 0,
            source: "FilterGateway".into(),
        });
        request.set_timeout(DEADLINE);
        let sent = Instant::now();
        let answer = sm.send_state_change(request).await;
        out.push(Answer {
            name,
            answered: Instant::now(),
            sent,
            outcome: Outcome::from_answer(answer),
        });
    }
    out
}

/// When the freeze began and ended.
struct Timeline {
    started: Instant,
    paused: Instant,
    resumed: Instant,
    stopped: Instant,
}

impl Timeline {
    /// 0: sent before the freeze, 1: during, 2: after.
    fn phase(&self, at: Instant) -> usize {
        if at < self.paused {
            0
        } else if at < self.resumed {
            1
        } else {
            2
        }
    }

    /// Seconds from SIGSTOP to `at` (negative before it).
    fn since_pause(&self, at: Instant) -> f64 {
        if at >= self.paused {
            (at - self.paused).as_secs_f64()
        } else {
            -(self.paused - at).as_secs_f64()
        }
    }
}

/// Runs the load around the freeze and returns every answer.
async fn load(env: &Env, freeze: Duration) -> Result<(Vec<Answer>, Timeline)> {
    let sm = env.sm()?;
    let etcd = env
        .etcd
        .as_ref()
        .context("the drill needs an etcd of its own")?;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(client(sm.clone(), c, stop.clone())))
        .collect();
    tokio::time::sleep(BEFORE).await;
    etcd.pause().context("SIGSTOP to etcd")?;
    let paused = Instant::now();
    tokio::time::sleep(freeze).await;
    let resumed_result = etcd.resume();
    let resumed = Instant::now();
    resumed_result.context("SIGCONT to etcd")?;
    tokio::time::sleep(AFTER).await;
    stop.store(true, Ordering::Relaxed);
    let stopped = Instant::now();
    let mut answers = Vec::new();
    for task in tasks {
        answers.extend(task.await.context("client task")?);
    }
    Ok((
        answers,
        Timeline {
            started,
            paused,
            resumed,
            stopped,
        },
    ))
}

/// Prints the answers by outcome and phase, and the distinct messages of
/// RESOURCE_UNAVAILABLE and errors.
fn print_breakdown(answers: &[Answer], timeline: &Timeline) {
    let rows = [
        "SUCCESS",
        "UNAVAILABLE, nothing was written",
        "UNAVAILABLE, in doubt",
        "another error code",
        "gRPC error status",
    ];
    let mut table: HashMap<&str, [usize; 3]> = HashMap::new();
    let mut messages: BTreeMap<String, usize> = BTreeMap::new();
    for a in answers {
        table.entry(a.outcome.row()).or_default()[timeline.phase(a.sent)] += 1;
        let message = match &a.outcome {
            Outcome::Success => continue,
            Outcome::Unavailable(m) => format!("UNAVAILABLE '{m}'"),
            Outcome::Refused(m) => m.clone(),
            Outcome::Grpc(code, m) => format!("gRPC {code:?} '{m}'"),
        };
        *messages.entry(message).or_default() += 1;
    }
    println!(
        "    answers by outcome, sent before / during / after the freeze ({} requests):",
        answers.len()
    );
    for row in rows {
        let [before, during, after] = table.get(row).copied().unwrap_or_default();
        println!("      {row:<34} {before:>7} / {during:>5} / {after:>7}");
    }
    for (message, count) in &messages {
        println!("      {count:>7} x {message}");
    }
}

/// One run of the drill.
pub async fn run(common: &Common, run: usize, options: OutageOptions) -> Result<RunResult> {
    if common.daemon.is_some() || common.etcd.is_some() {
        bail!("outage stops its own etcd under its own daemon: run it without --daemon and --etcd");
    }
    let mut result = RunResult::new("outage (etcd frozen)");
    let mut env = Env::start(common).await?;
    let mut spec = env.spec(&format!("outage-r{run}"), "127.0.0.1:0");
    spec.extra_args = vec![
        "--commit-timeout".into(),
        format!("{}ms", COMMIT_TIMEOUT.as_millis()),
    ];
    env.spawn_daemon(&spec).await?;
    let (answers, timeline) = load(&env, options.freeze).await?;
    env.check_alive()?;
    print_breakdown(&answers, &timeline);

    let mut all = Latencies::default();
    let mut frozen = Latencies::default();
    for a in &answers {
        all.record(a.latency());
        if timeline.phase(a.sent) == 1 {
            frozen.record(a.latency());
        }
    }
    let slowest = answers
        .iter()
        .max_by_key(|a| a.latency())
        .context("no request was answered")?;
    let late: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.latency() > COMMIT_TIMEOUT + LATE_MARGIN)
        .collect();
    let past_deadline = answers.iter().filter(|a| a.latency() > DEADLINE).count();
    let misses = answers
        .iter()
        .filter(|a| a.outcome.deadline_missed())
        .count();
    let count = |f: &dyn Fn(&Answer) -> bool| answers.iter().filter(|a| f(a)).count();
    let success = count(&|a| a.outcome == Outcome::Success);
    let unwritten = count(&|a| a.outcome.unwritten());
    let in_doubt = count(&|a| a.outcome.in_doubt());
    let refused = count(&|a| matches!(a.outcome, Outcome::Refused(_)));
    let grpc = count(&|a| matches!(a.outcome, Outcome::Grpc(..)));

    // Throughput before the freeze and after recovery, answers counted when they came.
    let recovered = answers
        .iter()
        .filter(|a| a.outcome == Outcome::Success && a.answered >= timeline.resumed)
        .map(|a| a.answered)
        .min();
    let per_s = |from: Instant, to: Instant| {
        let n = answers
            .iter()
            .filter(|a| a.outcome == Outcome::Success && a.answered >= from && a.answered < to)
            .count();
        n as f64 / (to - from).as_secs_f64()
    };
    let before_per_s = per_s(timeline.started, timeline.paused);

    // What etcd holds afterwards.
    let states: HashMap<String, String> = kv::read_prefix(&env.kv, "/scenario/", false)
        .await?
        .into_iter()
        .collect();
    let state = |a: &Answer| states.get(&format!("/scenario/{}/state", a.name));
    let acknowledged_lost: Vec<&Answer> = answers
        .iter()
        .filter(|a| {
            a.outcome == Outcome::Success && state(a).map(String::as_str) != Some("Waiting")
        })
        .collect();
    let unwritten_present: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.outcome.unwritten() && state(a).is_some())
        .collect();
    let in_doubt_present = count(&|a| a.outcome.in_doubt() && state(a).is_some());
    let other_present = count(&|a| {
        matches!(a.outcome, Outcome::Refused(_) | Outcome::Grpc(..)) && state(a).is_some()
    });
    let asked: std::collections::HashSet<String> = answers
        .iter()
        .map(|a| format!("/scenario/{}/state", a.name))
        .collect();
    let extra = states.keys().filter(|k| !asked.contains(*k)).count();

    result.fig("requests", "", answers.len() as f64);
    result.fig(
        "freeze_s",
        "s",
        (timeline.resumed - timeline.paused).as_secs_f64(),
    );
    result.fig("answers_success", "", success as f64);
    result.fig("answers_unavailable_nothing_written", "", unwritten as f64);
    result.fig("answers_unavailable_in_doubt", "", in_doubt as f64);
    result.fig("answers_other_code", "", refused as f64);
    result.fig("answers_grpc_error", "", grpc as f64);
    result.latencies("answer", &all);
    result.fig("frozen_answer_p50_ms", "ms", frozen.ms(0.5));
    result.fig("frozen_answer_max_ms", "ms", frozen.max_ms());
    result.fig("slowest_answer_s", "s", slowest.latency().as_secs_f64());
    result.fig(
        "slowest_vs_commit_timeout",
        "x",
        slowest.latency().as_secs_f64() / COMMIT_TIMEOUT.as_secs_f64(),
    );
    result.fig(
        "slowest_vs_deadline",
        "x",
        slowest.latency().as_secs_f64() / DEADLINE.as_secs_f64(),
    );
    result.target(
        "answers_after_commit_timeout",
        "",
        late.len() as f64,
        "R2",
        Bound::AtMost(0.0),
    );
    result.target(
        "grpc_deadline_misses",
        "",
        misses as f64,
        "R2",
        Bound::AtMost(0.0),
    );
    result.target(
        "acknowledged_lost",
        "",
        acknowledged_lost.len() as f64,
        "R2",
        Bound::AtMost(0.0),
    );
    result.target(
        "unwritten_answered_in_etcd",
        "",
        unwritten_present.len() as f64,
        "R2",
        Bound::AtMost(0.0),
    );
    result.fig("in_doubt_in_etcd", "", in_doubt_present as f64);
    result.fig(
        "recovery_s",
        "s",
        recovered.map_or(f64::NAN, |at| (at - timeline.resumed).as_secs_f64()),
    );
    result.fig("success_per_s_before", "/s", before_per_s);
    if let Some(at) = recovered {
        let after_per_s = per_s(at, timeline.stopped);
        result.fig("success_per_s_after_recovery", "/s", after_per_s);
        result.fig("ratio_after_vs_before", "x", after_per_s / before_per_s);
    }

    println!(
        "    slowest answer {:.3} s ({:?}, sent {:+.3} s from SIGSTOP) = {:.2} x commit_timeout {COMMIT_TIMEOUT:?}, {:.2} x deadline {DEADLINE:?}",
        slowest.latency().as_secs_f64(),
        slowest.outcome.row(),
        timeline.since_pause(slowest.sent),
        slowest.latency().as_secs_f64() / COMMIT_TIMEOUT.as_secs_f64(),
        slowest.latency().as_secs_f64() / DEADLINE.as_secs_f64(),
    );
    if !late.is_empty() {
        let examples: Vec<String> = late
            .iter()
            .take(5)
            .map(|a| {
                format!(
                    "'{}' sent {:+.3} s from SIGSTOP, answered after {:.3} s: {}",
                    a.name,
                    timeline.since_pause(a.sent),
                    a.latency().as_secs_f64(),
                    a.outcome.row()
                )
            })
            .collect();
        result.note(format!(
            "{} answers came later than commit_timeout + {LATE_MARGIN:?}, e.g. {}",
            late.len(),
            examples.join("; ")
        ));
    }
    if misses > 0 || past_deadline > 0 {
        result.fail(format!(
            "{misses} requests missed their gRPC deadline (DEADLINE_EXCEEDED/CANCELLED), {past_deadline} were answered after {DEADLINE:?}"
        ));
    }
    if !acknowledged_lost.is_empty() {
        let examples: Vec<String> = acknowledged_lost
            .iter()
            .take(5)
            .map(|a| {
                format!(
                    "{}={}",
                    a.name,
                    state(a).map(String::as_str).unwrap_or("<absent>")
                )
            })
            .collect();
        result.fail(format!(
            "{} scenarios answered SUCCESS are not Waiting in etcd, e.g. {}",
            acknowledged_lost.len(),
            examples.join(", ")
        ));
    }
    if !unwritten_present.is_empty() {
        let examples: Vec<String> = unwritten_present
            .iter()
            .take(5)
            .map(|a| {
                format!(
                    "'{}' sent {:+.3} s from SIGSTOP, answered after {:.3} s",
                    a.name,
                    timeline.since_pause(a.sent),
                    a.latency().as_secs_f64()
                )
            })
            .collect();
        result.fail(format!(
            "{} scenarios answered \"{NOTHING_WRITTEN}\" are in etcd, e.g. {}",
            unwritten_present.len(),
            examples.join("; ")
        ));
    }
    if recovered.is_none() {
        result.fail("no SUCCESS answer after SIGCONT: the daemon did not recover");
    }
    if in_doubt > 0 {
        result.note(format!(
            "{in_doubt_present} of {in_doubt} requests answered RESOURCE_UNAVAILABLE without \"{NOTHING_WRITTEN}\" are in etcd (sent, not confirmed in time; etcd applied them when it continued)"
        ));
    }
    if refused + grpc > 0 {
        result.note(format!(
            "{} answers were neither SUCCESS nor RESOURCE_UNAVAILABLE ({other_present} of them in etcd)",
            refused + grpc
        ));
    }
    if extra > 0 {
        result.fail(format!(
            "etcd holds {extra} scenario keys no request asked for"
        ));
    }
    if !result.failures.is_empty() {
        result.note(env.log_hint());
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(code: sm::ErrorCode, message: &str) -> Outcome {
        Outcome::from_answer(Ok(tonic::Response::new(sm::StateChangeResponse {
            message: message.into(),
            transition_id: String::new(),
            timestamp_ns: 0,
            error_code: code as i32,
            error_details: String::new(),
        })))
    }

    #[test]
    fn classifies_answers() {
        assert_eq!(answered(sm::ErrorCode::Success, "ok"), Outcome::Success);
        let unwritten = answered(
            sm::ErrorCode::ResourceUnavailable,
            "the state store is unavailable; nothing was written",
        );
        assert!(unwritten.unwritten() && !unwritten.in_doubt());
        let doubt = answered(
            sm::ErrorCode::ResourceUnavailable,
            "the state store did not confirm the whole commit in time; part or all of it may be written",
        );
        assert!(doubt.in_doubt() && !doubt.unwritten());
        let missed = Outcome::from_answer(Err(tonic::Status::deadline_exceeded("late")));
        assert!(missed.deadline_missed());
        assert!(!Outcome::from_answer(Err(tonic::Status::unavailable("down"))).deadline_missed());
    }
}
