//! Walking a strategy's ladder (RECOVERY.md §2): the [`Incident`] record,
//! [`next_step`] (what to do now) and the pure transitions that apply a
//! step or an outcome. The engine stores the incident as JSON at
//! `/statemanager/recovery/{id}` after every change.
//!
//! Phases: Initializing → Executing ⇄ Validating → Completed | Failed |
//! Aborted. A rung's action is taken ([`Incident::acted`]), delivered
//! ([`Incident::delivered`]), then validated until `validation_timeout`;
//! a timed-out validation counts a failure and either repeats the rung
//! after the back-off or escalates to the next rung.

use serde::{Deserialize, Serialize};

use crate::name::ResourceKind;

use super::issue::IssueType;
use super::ns;
use super::strategy::{RecoveryAction, Strategy, StrategyTable};

/// Where an incident stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// Opened; waiting `initial_delay` before the first action.
    Initializing,
    /// An action is due, or taken and not yet delivered.
    Executing,
    /// An action was delivered; waiting for a healthy state.
    Validating,
    /// The resource is healthy again.
    Completed,
    /// Ladder exhausted or retries spent (`RECOVERY_FAILED`).
    Failed,
    /// `AbortRecovery`.
    Aborted,
}

impl Phase {
    /// Completed, Failed or Aborted: nothing more happens.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Completed | Phase::Failed | Phase::Aborted)
    }
}

/// What became of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    /// Handed to the outbox, not delivered yet.
    Pending,
    /// Delivered to the ActionController; validating.
    Delivered,
    /// Not offered by the ActionController: recorded, the ladder moved on.
    Unsupported,
    /// The resource became healthy after it.
    Healthy,
    /// Validation timed out.
    TimedOut,
    /// The incident ended while the step was in flight (healthy or
    /// aborted before its delivery), or was aborted while the step was
    /// validated: its outcome is ignored.
    Ignored,
}

/// One rung taken, with its times (ns).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The rung's index in the ladder.
    pub rung: u32,
    /// The action.
    pub action: RecoveryAction,
    /// When it was taken.
    pub at_ns: i64,
    /// When it was delivered, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_ns: Option<i64>,
    /// What became of it.
    pub outcome: Outcome,
}

/// One recovery of one resource (RECOVERY.md §1–2), durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// The `recovery_id`.
    pub id: String,
    /// The resource's kind (its key segment, `package`).
    #[serde(with = "super::kind_segment")]
    pub kind: ResourceKind,
    /// The resource's name.
    pub name: String,
    /// What it recovers from.
    pub issue: IssueType,
    /// Where it stands.
    pub phase: Phase,
    /// The current rung (index into the strategy's ladder).
    pub rung: u32,
    /// Failed validations on the current rung.
    pub failures: u32,
    /// Actions executed so far (unsupported rungs not counted).
    pub executed: u32,
    /// Further triggers that joined this incident instead of opening one.
    #[serde(default)]
    pub joined: u32,
    /// When it opened (ns).
    pub opened_ns: i64,
    /// When the next thing is due (ns): the first or a repeated action, or
    /// the end of validation. `None` while waiting for a delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_ns: Option<i64>,
    /// When it ended (ns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ns: Option<i64>,
    /// Every step taken, oldest first.
    #[serde(default)]
    pub steps: Vec<StepRecord>,
    /// The ladder, when it is not the issue type's (a Diff plan's actions,
    /// a Manual request's); empty: the strategy table's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ladder: Vec<RecoveryAction>,
    /// Why it was opened, for people (a Manual request's reason, a Diff's parts).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// What the engine knows of the resource when it asks for the next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Observation {
    /// Whether its committed state is healthy (package Running / Paused /
    /// Exited as requested; model Running).
    pub healthy: bool,
    /// While it flaps: the time it will have been stable for `flap_window`
    /// (from [`super::tracker::History::quiet_until`]); actions wait for it.
    pub quiet_until_ns: Option<i64>,
}

/// What to do now ([`next_step`]). Apply it with [`Incident::apply`] (or,
/// for [`Step::Act`], [`Incident::acted`] once the action is in the outbox).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing until this time (initial delay, back-off, damping).
    Wait(i64),
    /// Take this rung's action: put it in the outbox, then call
    /// [`Incident::acted`]. An unsupported action is only recorded (no call).
    Act(RecoveryAction),
    /// The action is in the outbox and not delivered: wait for it.
    AwaitDelivery,
    /// Wait for a healthy state until this time.
    Validate(i64),
    /// Validation timed out: count a failure and repeat the rung after the back-off.
    Retry,
    /// Validation timed out often enough: move to the next rung at once.
    Escalate,
    /// Healthy: end Completed.
    Complete,
    /// Ladder exhausted or retries spent: end Failed.
    Fail,
    /// The incident has ended.
    Done,
}

impl Incident {
    /// A new incident in Initializing. Its first action is due after the
    /// strategy's `initial_delay`, except PackageError's (the Reconcile of
    /// the transition that entered Error, §2.1) and those an operator or a
    /// StateDiff asked for (Manual, Diff), which are due at once.
    pub fn open(
        id: impl Into<String>,
        kind: ResourceKind,
        name: impl Into<String>,
        issue: IssueType,
        strategy: &Strategy,
        now_ns: i64,
    ) -> Self {
        let delay = match issue {
            IssueType::PackageError | IssueType::Manual | IssueType::Diff => 0,
            _ => ns(strategy.initial_delay),
        };
        Self {
            id: id.into(),
            kind,
            name: name.into(),
            issue,
            phase: Phase::Initializing,
            rung: 0,
            failures: 0,
            executed: 0,
            joined: 0,
            opened_ns: now_ns,
            due_ns: Some(now_ns.saturating_add(delay)),
            ended_ns: None,
            steps: Vec::new(),
            ladder: Vec::new(),
            reason: String::new(),
        }
    }

    /// Decodes a stored record.
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Encodes the record for the store.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The strategy this incident walks: the table's for its issue type,
    /// with its own ladder when it has one.
    pub fn strategy(&self, table: &StrategyTable) -> Strategy {
        table.get(self.issue).with_actions(&self.ladder)
    }

    /// Whether an Isolate rung was carried out: no further automatic
    /// recovery for the resource until an operator asks for it.
    pub fn isolated(&self) -> bool {
        self.steps.iter().any(|s| {
            s.action == RecoveryAction::Isolate
                && matches!(
                    s.outcome,
                    Outcome::Delivered | Outcome::TimedOut | Outcome::Healthy
                )
        })
    }

    /// The action on the current rung, if the ladder has one.
    pub fn current_action(&self, strategy: &Strategy) -> Option<RecoveryAction> {
        strategy.actions.get(self.rung as usize).copied()
    }

    fn in_flight(&mut self) -> Option<&mut StepRecord> {
        self.steps
            .last_mut()
            .filter(|s| s.outcome == Outcome::Pending)
    }

    fn end(&mut self, phase: Phase, now_ns: i64) {
        let outcome = match phase {
            Phase::Completed => Outcome::Healthy,
            Phase::Failed => Outcome::TimedOut,
            _ => Outcome::Ignored,
        };
        if let Some(last) = self.steps.last_mut() {
            match last.outcome {
                Outcome::Pending => last.outcome = Outcome::Ignored,
                Outcome::Delivered => last.outcome = outcome,
                _ => {}
            }
        }
        self.phase = phase;
        self.due_ns = None;
        self.ended_ns = Some(now_ns);
    }

    /// Records that the current rung's action was taken at `now_ns` (handed
    /// to the outbox). A supported action counts as executed and awaits its
    /// delivery; an unsupported one is recorded as such and the ladder moves
    /// to the next rung at once. Ignored unless an action is due.
    pub fn acted(&mut self, strategy: &Strategy, now_ns: i64) {
        let Some(action) = self.current_action(strategy) else {
            return;
        };
        if self.phase.is_terminal() || self.phase == Phase::Validating || self.in_flight().is_some()
        {
            return;
        }
        let supported = action.is_supported();
        self.steps.push(StepRecord {
            rung: self.rung,
            action,
            at_ns: now_ns,
            delivered_ns: None,
            outcome: if supported {
                Outcome::Pending
            } else {
                Outcome::Unsupported
            },
        });
        self.phase = Phase::Executing;
        if supported {
            self.executed += 1;
            self.due_ns = None;
        } else {
            self.rung += 1;
            self.failures = 0;
            self.due_ns = Some(now_ns);
        }
    }

    /// Records the delivery of the action in flight: validation runs until
    /// `now_ns + validation_timeout` (a delivery still failing is not a
    /// validation failure). Ignored when nothing is in flight or the
    /// incident has ended.
    pub fn delivered(&mut self, strategy: &Strategy, now_ns: i64) {
        if self.phase.is_terminal() {
            return;
        }
        let Some(step) = self.in_flight() else {
            return;
        };
        step.outcome = Outcome::Delivered;
        step.delivered_ns = Some(now_ns);
        self.phase = Phase::Validating;
        self.due_ns = Some(now_ns.saturating_add(ns(strategy.validation_timeout)));
    }

    /// The rung failed without waiting for validation (Relocate with no
    /// live target node, RECOVERY.md §3): the step in flight or being
    /// validated times out now, so [`next_step`] answers Retry, Escalate or
    /// Fail at once.
    pub fn rung_failed(&mut self, now_ns: i64) {
        if self.phase.is_terminal() {
            return;
        }
        if let Some(step) = self.in_flight() {
            step.outcome = Outcome::Delivered;
        }
        if self
            .steps
            .last()
            .is_some_and(|s| s.outcome == Outcome::Delivered)
        {
            self.phase = Phase::Validating;
            self.due_ns = Some(now_ns);
        }
    }

    /// Whether the current rung is the ladder's last (Notify is critical there).
    pub fn on_last_rung(&self, strategy: &Strategy) -> bool {
        self.rung as usize + 1 >= strategy.actions.len()
    }

    /// `AbortRecovery`: Aborted at once; a step in flight keeps going at the
    /// ActionController but its outcome is ignored. Returns whether it was open.
    pub fn abort(&mut self, now_ns: i64) -> bool {
        if self.phase.is_terminal() {
            return false;
        }
        self.end(Phase::Aborted, now_ns);
        true
    }

    /// A second trigger for the same resource joins this incident (§1).
    pub fn join(&mut self) {
        self.joined = self.joined.saturating_add(1);
    }

    /// Applies a step [`next_step`] returned (other than [`Step::Act`], see
    /// [`Incident::acted`]); `jitter` in `[0, 1]` picks the back-off's factor.
    pub fn apply(&mut self, step: Step, strategy: &Strategy, now_ns: i64, jitter: f64) {
        if self.phase.is_terminal() {
            return;
        }
        match step {
            Step::Complete => self.end(Phase::Completed, now_ns),
            Step::Fail => self.end(Phase::Failed, now_ns),
            Step::Retry | Step::Escalate => {
                if let Some(last) = self.steps.last_mut() {
                    last.outcome = Outcome::TimedOut;
                }
                self.phase = Phase::Executing;
                if step == Step::Escalate {
                    self.rung += 1;
                    self.failures = 0;
                    self.due_ns = Some(now_ns);
                } else {
                    self.failures += 1;
                    let delay = strategy.backoff.delay(self.failures, jitter);
                    self.due_ns = Some(now_ns.saturating_add(ns(delay)));
                }
            }
            Step::Act(_) => self.acted(strategy, now_ns),
            Step::Wait(_) | Step::AwaitDelivery | Step::Validate(_) | Step::Done => {}
        }
    }
}

/// What to do now for `incident` under `strategy` (RECOVERY.md §2 steps 1–6).
///
/// Healthy at any point before the end → Complete. An action is taken only
/// when due, not damped, a rung is left and retries remain; otherwise Fail.
/// A timed-out validation gives Retry or, after `escalation_threshold`
/// failures, Escalate (Fail if no rung or retry is left).
pub fn next_step(
    incident: &Incident,
    strategy: &Strategy,
    observed: Observation,
    now_ns: i64,
) -> Step {
    if incident.phase.is_terminal() {
        return Step::Done;
    }
    if observed.healthy {
        return Step::Complete;
    }
    let exhausted = |rung: u32| {
        rung as usize >= strategy.actions.len() || incident.executed >= strategy.max_retry_count
    };
    let in_flight = incident
        .steps
        .last()
        .is_some_and(|s| s.outcome == Outcome::Pending);
    match incident.phase {
        Phase::Validating => {
            let until = incident.due_ns.unwrap_or(now_ns);
            if now_ns < until {
                return Step::Validate(until);
            }
            let failures = incident.failures + 1;
            let escalate = failures >= strategy.escalation_threshold;
            let next_rung = incident.rung + u32::from(escalate);
            if exhausted(next_rung) {
                Step::Fail
            } else if escalate {
                Step::Escalate
            } else {
                Step::Retry
            }
        }
        _ if in_flight => Step::AwaitDelivery,
        _ => {
            let Some(action) = incident.current_action(strategy) else {
                return Step::Fail;
            };
            // A supported action needs a retry left; an unsupported one is
            // only recorded, so it spends none.
            if action.is_supported() && incident.executed >= strategy.max_retry_count {
                return Step::Fail;
            }
            let due = incident.due_ns.unwrap_or(now_ns);
            let due = match observed.quiet_until_ns {
                Some(quiet) => due.max(quiet),
                None => due,
            };
            if now_ns < due {
                Step::Wait(due)
            } else {
                Step::Act(action)
            }
        }
    }
}

#[cfg(test)]
#[path = "ladder_tests.rs"]
mod tests;
