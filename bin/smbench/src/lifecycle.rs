//! W1's scenario lifecycles as open-ended load for the fault drills
//! (`crash --w1`, `failover`, `member-loss`): C clients, each walking its
//! own new scenarios `{prefix}-{client}-{i}` through W1's four steps (Idle
//! -> Waiting -> Satisfied -> Allowed -> Completed by `SendStateChange`,
//! [`crate::w1::STEPS`]) until told to stop. Client `c` sends every step
//! to target `c % targets` (with several daemons: spread over all of
//! them, so followers forward).
//!
//! Every answer is kept with when it was sent and answered. A step that
//! is not answered SUCCESS ends its scenario (the client waits
//! [`BACKOFF`] and starts a new one), so a scenario's state in etcd
//! afterwards is exactly what its acknowledged steps and at most one
//! unacknowledged last step made it. [`verify`] reads etcd and checks
//! that every acknowledged step is there (the state key holds its target
//! or a later state of the lifecycle: "acknowledged lost" otherwise), and
//! that no step answered "nothing was written" was written.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use etcd_client::Client;
use transport_grpc::proto::statemanager as sm;

use crate::kv;
use crate::report::{Bound, RunResult};
use crate::setup::Sm;
use crate::stats::Latencies;
use crate::w1::{STEPS, step_change};

/// The lifecycle's states in order: a step's target is `LIFECYCLE[step + 1]`.
pub const LIFECYCLE: [&str; 5] = ["Idle", "Waiting", "Satisfied", "Allowed", "Completed"];

/// Every request's gRPC deadline.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A client's pause after an answer that is not SUCCESS (no hot loop of
/// refused requests while no leader serves).
pub const BACKOFF: Duration = Duration::from_millis(50);

/// What an answer says when the daemon promises the change was not made.
const NOTHING_WRITTEN: &str = "nothing was written";

/// An answer that is not SUCCESS.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Its kind: the error code or gRPC status code and the message, with
    /// digits folded to `N` (ports, names), e.g. `gRPC Unavailable: the
    /// leader at http://N.N.N.N:N cannot be reached: ...`.
    pub kind: String,
    /// The answer said "nothing was written".
    pub unwritten: bool,
}

impl Failure {
    fn of(answer: Result<tonic::Response<sm::StateChangeResponse>, tonic::Status>) -> Option<Self> {
        let (kind, message) = match answer {
            Err(status) => (
                format!("gRPC {:?}", status.code()),
                status.message().to_owned(),
            ),
            Ok(answer) => {
                let answer = answer.into_inner();
                if answer.error_code == sm::ErrorCode::Success as i32 {
                    return None;
                }
                let code = sm::ErrorCode::try_from(answer.error_code)
                    .map(|c| c.as_str_name().to_owned())
                    .unwrap_or_else(|_| answer.error_code.to_string());
                (code, answer.message)
            }
        };
        Some(Failure {
            unwritten: message.contains(NOTHING_WRITTEN),
            kind: format!("{kind}: {}", fold_digits(&message)),
        })
    }
}

/// `message` with every run of digits replaced by `N`, cut at 160 characters.
fn fold_digits(message: &str) -> String {
    let mut out = String::new();
    let mut digits = false;
    for ch in message.chars() {
        if ch.is_ascii_digit() {
            if !digits {
                out.push('N');
            }
            digits = true;
        } else {
            digits = false;
            out.push(ch);
        }
    }
    if out.chars().count() > 160 {
        out = out.chars().take(157).collect::<String>() + "...";
    }
    out
}

/// One request and its answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The client that sent it.
    pub client: usize,
    /// The client's scenario number.
    pub scenario: usize,
    /// The step (index into [`STEPS`]).
    pub step: usize,
    /// When it was sent.
    pub sent: Instant,
    /// When its answer (or error) came.
    pub answered: Instant,
    /// `None`: SUCCESS.
    pub failure: Option<Failure>,
}

impl Answer {
    /// Answered SUCCESS.
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }

    /// Sent to answered.
    pub fn latency(&self) -> Duration {
        self.answered - self.sent
    }
}

/// The running load.
pub struct Load {
    /// When the clients started.
    pub started: Instant,
    prefix: String,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Answer>>>,
}

impl Load {
    /// Starts `clients` clients, client `c` on `targets[c % targets.len()]`.
    pub fn start(prefix: &str, targets: &[Sm], clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|c| {
                tokio::spawn(client(
                    targets[c % targets.len()].clone(),
                    c,
                    prefix.to_owned(),
                    stop.clone(),
                ))
            })
            .collect();
        Load {
            started: Instant::now(),
            prefix: prefix.to_owned(),
            stop,
            tasks,
        }
    }

    /// Stops the clients (each after its request in flight) and returns every answer.
    pub async fn finish(self) -> Result<Answers> {
        self.stop.store(true, Ordering::Relaxed);
        let stopped = Instant::now();
        let mut all = Vec::new();
        for task in self.tasks {
            all.extend(task.await.context("lifecycle client task")?);
        }
        all.sort_by_key(|a| a.answered);
        Ok(Answers {
            prefix: self.prefix,
            started: self.started,
            stopped,
            all,
        })
    }
}

/// One client: new scenarios through the lifecycle until `stop`.
async fn client(mut sm: Sm, client: usize, prefix: String, stop: Arc<AtomicBool>) -> Vec<Answer> {
    let mut out = Vec::new();
    for scenario in 0.. {
        let name = format!("{prefix}-{client}-{scenario}");
        for step in 0..STEPS.len() {
            if stop.load(Ordering::Relaxed) {
                return out;
            }
            let mut request = tonic::Request::new(step_change(&name, step));
            request.set_timeout(DEADLINE);
            let sent = Instant::now();
            let failure = Failure::of(sm.send_state_change(request).await);
            let failed = failure.is_some();
            out.push(Answer {
                client,
                scenario,
                step,
                sent,
                answered: Instant::now(),
                failure,
            });
            if failed {
                tokio::time::sleep(BACKOFF).await;
                break;
            }
        }
    }
    out
}

/// Every answer of a load, in the order they came.
pub struct Answers {
    prefix: String,
    /// When the clients started.
    pub started: Instant,
    /// When they were told to stop.
    pub stopped: Instant,
    /// The answers, by the time they came.
    pub all: Vec<Answer>,
}

impl Answers {
    /// SUCCESS answers that came in `[from, to)`.
    pub fn successes(&self, from: Instant, to: Instant) -> usize {
        self.all
            .iter()
            .filter(|a| a.ok() && a.answered >= from && a.answered < to)
            .count()
    }

    /// Acknowledged transitions per second in `[from, to)` (NaN for an empty window).
    pub fn rate(&self, from: Instant, to: Instant) -> f64 {
        if to <= from {
            return f64::NAN;
        }
        self.successes(from, to) as f64 / (to - from).as_secs_f64()
    }

    /// The first SUCCESS to a request sent at or after `at`: when it came.
    pub fn first_success_sent_after(&self, at: Instant) -> Option<Instant> {
        self.all
            .iter()
            .find(|a| a.ok() && a.sent >= at)
            .map(|a| a.answered)
    }

    /// Answers that were not SUCCESS and came in `[from, to)`, by kind.
    pub fn errors(&self, from: Instant, to: Instant) -> BTreeMap<String, usize> {
        let mut kinds = BTreeMap::new();
        for a in &self.all {
            if let Some(f) = &a.failure
                && a.answered >= from
                && a.answered < to
            {
                *kinds.entry(f.kind.clone()).or_default() += 1;
            }
        }
        kinds
    }

    /// SUCCESS answers per whole second from `from` until the load stopped.
    pub fn per_second(&self, from: Instant) -> Vec<usize> {
        let seconds = self.stopped.saturating_duration_since(from).as_secs() as usize;
        let mut out = vec![0; seconds];
        for a in self.all.iter().filter(|a| a.ok() && a.answered >= from) {
            if let Some(slot) = out.get_mut((a.answered - from).as_secs() as usize) {
                *slot += 1;
            }
        }
        out
    }

    /// The latencies of the answers sent in `[from, to)`.
    pub fn latencies(&self, from: Instant, to: Instant) -> Latencies {
        let mut out = Latencies::default();
        for a in self.all.iter().filter(|a| a.sent >= from && a.sent < to) {
            out.record(a.latency());
        }
        out
    }
}

/// What etcd holds of the acknowledged steps.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Steps answered SUCCESS.
    pub acknowledged: usize,
    /// Scenarios with at least one acknowledged step.
    pub scenarios: usize,
    /// Scenarios whose state in etcd is before their last acknowledged
    /// step's target: `name: acknowledged X, etcd Y`.
    pub lost: Vec<String>,
    /// Steps answered "nothing was written" whose target etcd holds.
    pub unwritten_written: Vec<String>,
    /// Other answers that were not SUCCESS (in doubt: sent, outcome unknown).
    pub in_doubt: usize,
    /// Of them, steps etcd holds.
    pub in_doubt_written: usize,
}

fn position(state: Option<&str>) -> Option<usize> {
    match state {
        None => Some(0),
        Some(state) => LIFECYCLE.iter().position(|s| s.eq_ignore_ascii_case(state)),
    }
}

/// Reads every scenario state from etcd and judges the answers by it.
pub async fn verify(kv: &Client, answers: &Answers) -> Result<Verdict> {
    let states: HashMap<String, String> = kv::read_prefix(kv, "/scenario/", false)
        .await
        .context("reading the scenario states")?
        .into_iter()
        .collect();
    // Per scenario: the last acknowledged step's target (position), and its failure.
    let mut acknowledged: HashMap<(usize, usize), usize> = HashMap::new();
    let mut failed: Vec<&Answer> = Vec::new();
    let mut verdict = Verdict::default();
    for a in &answers.all {
        if a.ok() {
            verdict.acknowledged += 1;
            let reached = acknowledged.entry((a.client, a.scenario)).or_default();
            *reached = (*reached).max(a.step + 1);
        } else {
            failed.push(a);
        }
    }
    verdict.scenarios = acknowledged.len();
    let held = |client: usize, scenario: usize| {
        let name = format!("{}-{client}-{scenario}", answers.prefix);
        let state = states.get(&format!("/scenario/{name}/state"));
        (name, state.cloned(), position(state.map(String::as_str)))
    };
    let mut lost: Vec<((usize, usize), String)> = Vec::new();
    for (&(client, scenario), &reached) in &acknowledged {
        let (name, state, at) = held(client, scenario);
        if at.is_none_or(|at| at < reached) {
            lost.push((
                (client, scenario),
                format!(
                    "{name}: acknowledged {}, etcd {}",
                    LIFECYCLE[reached],
                    state.as_deref().unwrap_or("<absent>")
                ),
            ));
        }
    }
    lost.sort();
    verdict.lost = lost.into_iter().map(|(_, line)| line).collect();
    for a in failed {
        let (name, state, at) = held(a.client, a.scenario);
        let written = at.is_none_or(|at| at > a.step);
        let unwritten = a.failure.as_ref().is_some_and(|f| f.unwritten);
        if unwritten {
            if written {
                verdict.unwritten_written.push(format!(
                    "{name} {}->{}: answered '{}', etcd {}",
                    LIFECYCLE[a.step],
                    LIFECYCLE[a.step + 1],
                    a.failure.as_ref().map(|f| f.kind.as_str()).unwrap_or(""),
                    state.as_deref().unwrap_or("<absent>")
                ));
            }
        } else {
            verdict.in_doubt += 1;
            verdict.in_doubt_written += usize::from(written);
        }
    }
    Ok(verdict)
}

impl Verdict {
    /// Adds the figures (`acknowledged_lost` and `unwritten_answers_written`
    /// judged by target `id`) and a failure for each broken promise.
    pub fn add_to(&self, result: &mut RunResult, id: &'static str) {
        result.fig("transitions_acknowledged", "", self.acknowledged as f64);
        result.fig("scenarios_acknowledged", "", self.scenarios as f64);
        result.target(
            "acknowledged_lost",
            "",
            self.lost.len() as f64,
            id,
            Bound::AtMost(0.0),
        );
        result.target(
            "unwritten_answers_written",
            "",
            self.unwritten_written.len() as f64,
            id,
            Bound::AtMost(0.0),
        );
        result.fig("in_doubt_answers", "", self.in_doubt as f64);
        result.fig("in_doubt_written", "", self.in_doubt_written as f64);
        if !self.lost.is_empty() {
            result.fail(format!(
                "{} scenarios lost an acknowledged transition (etcd holds an earlier state), e.g. {}",
                self.lost.len(),
                self.lost[..self.lost.len().min(5)].join("; ")
            ));
        }
        if !self.unwritten_written.is_empty() {
            result.fail(format!(
                "{} answers said \"{NOTHING_WRITTEN}\" but etcd holds the change, e.g. {}",
                self.unwritten_written.len(),
                self.unwritten_written[..self.unwritten_written.len().min(5)].join("; ")
            ));
        }
    }
}

/// Prints error kinds with their counts, most frequent first, indented.
pub fn print_errors(title: &str, kinds: &BTreeMap<String, usize>) {
    let total: usize = kinds.values().sum();
    println!("    {title}: {total}");
    let mut sorted: Vec<(&String, &usize)> = kinds.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (kind, count) in sorted {
        println!("      {count:>7} x {kind}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_digits_of_error_messages() {
        assert_eq!(
            fold_digits("the leader at http://127.0.0.1:40123 cannot be reached"),
            "the leader at http://N.N.N.N:N cannot be reached"
        );
    }

    #[test]
    fn places_states_in_the_lifecycle() {
        assert_eq!(position(None), Some(0));
        assert_eq!(position(Some("Allowed")), Some(3));
        assert_eq!(position(Some("Denied")), None);
        assert_eq!(LIFECYCLE[STEPS.len()], "Completed");
        for (step, (from, to, _)) in STEPS.iter().enumerate() {
            assert_eq!((LIFECYCLE[step], LIFECYCLE[step + 1]), (*from, *to));
        }
    }

    #[test]
    fn classifies_answers() {
        let answer = |code: sm::ErrorCode, message: &str| {
            Ok(tonic::Response::new(sm::StateChangeResponse {
                message: message.into(),
                transition_id: String::new(),
                timestamp_ns: 0,
                error_code: code as i32,
                error_details: String::new(),
            }))
        };
        assert!(Failure::of(answer(sm::ErrorCode::Success, "ok")).is_none());
        let refused = Failure::of(answer(
            sm::ErrorCode::ResourceUnavailable,
            "this instance is not the leader and knows none yet; nothing was written",
        ))
        .expect("a failure");
        assert!(refused.unwritten);
        assert!(
            refused
                .kind
                .starts_with("ERROR_CODE_RESOURCE_UNAVAILABLE: ")
        );
        let cut =
            Failure::of(Err(tonic::Status::unavailable("connection reset"))).expect("a failure");
        assert!(!cut.unwritten);
        assert_eq!(cut.kind, "gRPC Unavailable: connection reset");
    }
}
