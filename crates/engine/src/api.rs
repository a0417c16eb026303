//! The engine's public handle: typed inputs and answers. The gRPC layer only
//! converts protobuf to these types and calls the handle.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use state_store::StoreError;
use statemachine_core::alert::Alert;
use statemachine_core::healing::StateDiff;
use statemachine_core::record::HistoryEntry;
use statemachine_core::{
    ErrorCode, Identity, NodeReport, Policy, ResourceKind, StateChangeRequest,
};
use std::sync::atomic::{AtomicU8, Ordering};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;

use crate::events::{Event, EventFilter, Subscription};
use crate::healing::healer::{ActionContext, HealerCommand, RecoveryNote};
use crate::healing::{
    AlertPage, AlertQuery, DiffAnswer, HealthView, IncidentRef, RecoveryAnswer, RecoveryView,
    SyncAnswer, TriggerRequest,
};
use crate::metrics::Metrics;
use crate::ports::{ActionError, ActionPort, OffloadAnswer, OffloadRequest};
use crate::query::HistoryReader;

/// The answer to a state change request (`StateChangeResponse`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeAnswer {
    /// SUCCESS means the transition is durably in the store.
    pub code: ErrorCode,
    /// For people.
    pub message: String,
    /// Why, or what would be accepted.
    pub details: String,
    /// The request's transition id (generated when it had none).
    pub transition_id: String,
    /// When it was decided (ns since the epoch).
    pub timestamp_ns: i64,
}

/// The answer to a node's container report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportAnswer {
    /// SUCCESS when the report was applied (or superseded by a newer one of
    /// the same node); INVALID_REQUEST, RESOURCE_UNAVAILABLE, ... otherwise.
    pub code: ErrorCode,
    /// For people.
    pub message: String,
}

/// The state of one resource, as queries answer it (`ResourceState`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceView {
    /// The kind.
    pub kind: ResourceKind,
    /// The name.
    pub name: String,
    /// The canonical state name.
    pub state: String,
    /// When it last changed, when known since start-up (ns).
    pub last_transition_ns: Option<i64>,
    /// The store revision of its state key (0: no key, the default state).
    pub generation: i64,
    /// Facts from the definitions: `scenario`, `package(s)`, `target`, `node`.
    pub metadata: BTreeMap<String, String>,
}

/// A history query (`ResourceStateHistoryRequest`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HistoryQuery {
    /// Entries at or after this time (ns); 0: unbounded.
    pub start_ns: i64,
    /// Entries at or before this time (ns); 0: unbounded.
    pub end_ns: i64,
    /// At most this many (the newest), oldest first; 0: the default (100).
    pub limit: usize,
}

/// Why the engine could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The engine has stopped.
    #[error("the state manager engine has stopped")]
    Stopped,
    /// No answer within the deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The store is too slow or unavailable: an input was not committed
    /// within its deadline, or its outcome is unknown. Says what happened;
    /// a store call that failed is [`EngineError::Store`].
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A store call failed; the [`StoreError`] is the source, and its text
    /// the message (as [`EngineError::Unavailable`] would say it).
    #[error("store unavailable: {0}")]
    Store(#[from] StoreError),
    /// The request is malformed.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The resource is known nowhere.
    #[error("not found: {0}")]
    NotFound(String),
}

impl EngineError {
    /// The wire error code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            EngineError::Stopped => ErrorCode::ResourceUnavailable,
            EngineError::Timeout(_) => ErrorCode::Timeout,
            EngineError::Unavailable(_) | EngineError::Store(_) => ErrorCode::ResourceUnavailable,
            EngineError::Invalid(_) => ErrorCode::InvalidRequest,
            EngineError::NotFound(_) => ErrorCode::ResourceNotFound,
        }
    }
}

/// Who waits for an input's answer, and until when. An input is either
/// taken by the owner before its deadline (then the owner answers it by the
/// deadline) or abandoned by its caller at the deadline (then it is never
/// committed): whoever moves it out of `WAITING` first decides.
pub(crate) struct Caller<T> {
    pub(crate) reply: oneshot::Sender<T>,
    pub(crate) deadline: Instant,
    fate: Arc<AtomicU8>,
}

const WAITING: u8 = 0;
const TAKEN: u8 = 1;
const ABANDONED: u8 = 2;

impl<T> Caller<T> {
    /// The owner takes the input for planning; `false` when its caller
    /// abandoned it (it must then be dropped, unanswered and unwritten).
    pub(crate) fn take(&self) -> bool {
        matches!(
            self.fate
                .compare_exchange(WAITING, TAKEN, Ordering::AcqRel, Ordering::Acquire),
            Ok(_) | Err(TAKEN)
        )
    }
}

/// Commands the owner task processes.
pub(crate) enum Command {
    Change(StateChangeRequest, Option<Identity>, Caller<ChangeAnswer>),
    Report(NodeReport, Caller<ReportAnswer>),
    Get(ResourceKind, String, oneshot::Sender<Option<ResourceView>>),
    List(
        ResourceKind,
        Option<String>,
        usize,
        oneshot::Sender<(Vec<ResourceView>, usize)>,
    ),
    Sync(
        ResourceKind,
        String,
        bool,
        Caller<Result<SyncAnswer, EngineError>>,
    ),
    /// What a recovery action needs to know of a resource.
    Context(ResourceKind, String, oneshot::Sender<ActionContext>),
    /// The healer's news about incidents (opened elsewhere, ended, held).
    Recovery(RecoveryNote),
}

/// A cheap, cloneable handle to a running engine.
#[derive(Clone)]
pub struct EngineHandle {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) events: broadcast::Sender<Arc<Event>>,
    pub(crate) history: Arc<HistoryReader>,
    pub(crate) action: Arc<dyn ActionPort>,
    pub(crate) healer: mpsc::Sender<HealerCommand>,
    pub(crate) answer_timeout: Duration,
    /// The most an input (a change, a report) waits, queued or committing.
    pub(crate) commit_timeout: Duration,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) access: Option<Arc<Policy>>,
    /// A follower's handle (HA): it has no healer to ask.
    pub(crate) follower: bool,
}

/// How long a caller whose input was taken waits past its deadline for the
/// owner's answer (the owner answers by the deadline unless it is stuck).
const ANSWER_SLACK: Duration = Duration::from_millis(20);

impl EngineHandle {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, EngineError> {
        let (tx, rx) = oneshot::channel();
        let deadline = self.answer_timeout;
        let asked = async {
            self.commands
                .send(make(tx))
                .await
                .map_err(|_| EngineError::Stopped)?;
            rx.await.map_err(|_| EngineError::Stopped)
        };
        tokio::time::timeout(deadline, asked)
            .await
            .map_err(|_| EngineError::Timeout(deadline))?
    }

    /// Sends an input and waits for its answer until its deadline: the
    /// engine's `commit_timeout` from now, or `within` when sooner (a
    /// caller's own deadline). An input still queued at its deadline is
    /// abandoned: it is never committed.
    async fn ask_input<T>(
        &self,
        within: Option<Duration>,
        make: impl FnOnce(Caller<T>) -> Command,
    ) -> Result<T, EngineError> {
        let wait = within.map_or(self.commit_timeout, |w| w.min(self.commit_timeout));
        let deadline = Instant::now() + wait;
        let fate = Arc::new(AtomicU8::new(WAITING));
        let (reply, mut answer) = oneshot::channel();
        let caller = Caller {
            reply,
            deadline,
            fate: fate.clone(),
        };
        let sent = tokio::time::timeout_at(deadline, self.commands.send(make(caller))).await;
        match sent {
            Ok(Err(_)) => return Err(EngineError::Stopped),
            Ok(Ok(())) => {
                if let Ok(answer) = tokio::time::timeout_at(deadline, &mut answer).await {
                    return answer.map_err(|_| EngineError::Stopped);
                }
            }
            // The queue stayed full: the input never reached the owner.
            Err(_) => fate.store(ABANDONED, Ordering::Release),
        }
        let abandoned = fate
            .compare_exchange(WAITING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            || fate.load(Ordering::Acquire) == ABANDONED;
        if abandoned {
            return Err(EngineError::Unavailable(format!(
                "not committed within {wait:?}: the state store is slow or unavailable; nothing was written"
            )));
        }
        // Taken: the owner answers by the deadline, or tells why not.
        match tokio::time::timeout_at(deadline + ANSWER_SLACK, answer).await {
            Ok(answer) => answer.map_err(|_| EngineError::Stopped),
            Err(_) => Err(EngineError::Unavailable(format!(
                "no answer within {wait:?}: the outcome is unknown"
            ))),
        }
    }

    /// The engine's counters (the edge counts its denials there).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The access policy the engine decides edges with
    /// ([`CoreConfig::access`](statemachine_core::CoreConfig::access)); the
    /// transport enforces the same one at the edge, so the two never differ.
    pub fn access_policy(&self) -> Option<&Arc<Policy>> {
        self.access.as_ref()
    }

    /// Whether the engine still processes inputs (for health checks).
    pub fn is_running(&self) -> bool {
        !self.commands.is_closed()
    }

    /// Validates and applies a requested state change; answers after the
    /// commit (SUCCESS means durable) or with the rejection.
    pub async fn change_state(&self, request: StateChangeRequest) -> ChangeAnswer {
        self.change_state_within(request, None).await
    }

    /// [`Self::change_state`] for a caller that waits at most `within` (a
    /// gRPC deadline): the answer comes by then, RESOURCE_UNAVAILABLE when
    /// the store did not commit in time.
    pub async fn change_state_within(
        &self,
        request: StateChangeRequest,
        within: Option<Duration>,
    ) -> ChangeAnswer {
        self.change_state_by(request, None, within).await
    }

    /// [`Self::change_state_within`] for a caller with an identity (its
    /// client certificate's): with an access policy configured
    /// ([`CoreConfig::access`](statemachine_core::CoreConfig::access)) the
    /// policy decides the edge for it, and a caller without one is denied.
    pub async fn change_state_by(
        &self,
        request: StateChangeRequest,
        caller: Option<Identity>,
        within: Option<Duration>,
    ) -> ChangeAnswer {
        let transition_id = request.transition_id.clone();
        match self
            .ask_input(within, |reply| Command::Change(request, caller, reply))
            .await
        {
            Ok(answer) => answer,
            Err(error) => ChangeAnswer {
                code: error.code(),
                message: error.to_string(),
                details: String::new(),
                transition_id,
                timestamp_ns: 0,
            },
        }
    }

    /// Applies a node's full container report; answers after the commit.
    pub async fn report_containers(&self, report: NodeReport) -> ReportAnswer {
        self.report_containers_within(report, None).await
    }

    /// [`Self::report_containers`] for a caller that waits at most `within`.
    pub async fn report_containers_within(
        &self,
        report: NodeReport,
        within: Option<Duration>,
    ) -> ReportAnswer {
        match self
            .ask_input(within, |caller| Command::Report(report, caller))
            .await
        {
            Ok(answer) => answer,
            Err(error) => ReportAnswer {
                code: error.code(),
                message: error.to_string(),
            },
        }
    }

    /// The state of one resource: the recorded one, or the default state of a
    /// defined resource (scenario: Idle, package: Idle, model: Created).
    /// `Ok(None)` when the name is known nowhere.
    pub async fn get_state(
        &self,
        kind: ResourceKind,
        name: &str,
    ) -> Result<Option<ResourceView>, EngineError> {
        let name = name.to_owned();
        self.ask(|tx| Command::Get(kind, name, tx)).await
    }

    /// The resources of a kind, optionally only those in `state` (any
    /// spelling; an unknown state name is `EngineError::Invalid` naming the
    /// allowed ones), sorted by name; at most `limit` (0: all) and the total
    /// count.
    pub async fn list(
        &self,
        kind: ResourceKind,
        state: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ResourceView>, usize), EngineError> {
        if let Some(state) = state {
            statemachine_core::AnyState::parse(kind, state)
                .map_err(|e| EngineError::Invalid(e.to_string()))?;
        }
        let state = state.map(str::to_owned);
        self.ask(|tx| Command::List(kind, state, limit, tx)).await
    }

    /// A resource's transition history, oldest first.
    pub async fn history(
        &self,
        kind: ResourceKind,
        name: &str,
        query: HistoryQuery,
    ) -> Result<Vec<HistoryEntry>, EngineError> {
        self.history.read(kind, name, query).await
    }

    /// Subscribes to committed transitions and recovery events. The
    /// subscription is registered when this returns: every event committed
    /// afterwards is delivered (or reported as lagged).
    pub fn subscribe(&self, filter: EventFilter) -> Subscription {
        Subscription::new(self.events.subscribe(), filter)
    }

    /// Forwards an offload request to the ActionController.
    pub async fn offload(&self, request: OffloadRequest) -> Result<OffloadAnswer, ActionError> {
        self.action.offload(request).await
    }

    /// Asks the healer and waits for its answer (bounded like a query).
    async fn ask_healer<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, EngineError>>) -> HealerCommand,
    ) -> Result<T, EngineError> {
        if self.follower {
            return Err(EngineError::Unavailable(
                crate::owner::FOLLOWER_ANSWER.to_owned(),
            ));
        }
        let (tx, rx) = oneshot::channel();
        let deadline = self.answer_timeout;
        let asked = async {
            self.healer
                .send(make(tx))
                .await
                .map_err(|_| EngineError::Stopped)?;
            rx.await.map_err(|_| EngineError::Stopped)?
        };
        tokio::time::timeout(deadline, asked)
            .await
            .map_err(|_| EngineError::Timeout(deadline))?
    }

    /// `TriggerRecovery`: opens a Manual incident for the resource (or joins
    /// its open one; `force` aborts that one first). Lifts an isolation or a
    /// failed incident's hold. Answers once the incident is durable.
    pub async fn trigger_recovery(
        &self,
        request: TriggerRequest,
    ) -> Result<RecoveryAnswer, EngineError> {
        self.ask_healer(|tx| HealerCommand::Trigger(request, tx))
            .await
    }

    /// `AbortRecovery`: ends the incident Aborted (a step in flight is not
    /// recalled; its outcome is ignored). Answers once that is durable.
    pub async fn abort_recovery(
        &self,
        target: IncidentRef,
        reason: String,
    ) -> Result<RecoveryAnswer, EngineError> {
        self.ask_healer(|tx| HealerCommand::Abort(target, reason, tx))
            .await
    }

    /// `GetRecoveryStatus`: the incident (open or kept after it ended).
    pub async fn recovery_status(&self, target: IncidentRef) -> Result<RecoveryView, EngineError> {
        self.ask_healer(|tx| HealerCommand::Status(target, tx))
            .await
    }

    /// `GetPendingAlerts`: Active and Acknowledged alerts, newest first.
    pub async fn pending_alerts(&self, query: AlertQuery) -> Result<AlertPage, EngineError> {
        self.ask_healer(|tx| HealerCommand::PendingAlerts(query, tx))
            .await
    }

    /// `AcknowledgeAlert`: Active → Acknowledged, with who and why; answers
    /// once that is durable.
    pub async fn acknowledge_alert(
        &self,
        id: &str,
        by: &str,
        message: &str,
    ) -> Result<Alert, EngineError> {
        let (id, by, message) = (id.to_owned(), by.to_owned(), message.to_owned());
        self.ask_healer(|tx| HealerCommand::Acknowledge {
            id,
            by,
            message,
            tx,
        })
        .await
    }

    /// A resource's health, incident and tracker figures (RECOVERY.md §8).
    pub async fn health(&self, kind: ResourceKind, name: &str) -> Result<HealthView, EngineError> {
        let name = name.to_owned();
        self.ask_healer(|tx| HealerCommand::Health(kind, name, tx))
            .await
    }

    /// `SendStateDiff`: plans the diff (seed 003) and runs the plan as an
    /// incident of type Diff; a diff that needs no action is answered with
    /// the reason.
    pub async fn state_diff(&self, diff: StateDiff) -> Result<DiffAnswer, EngineError> {
        self.ask_healer(|tx| HealerCommand::Diff(diff, tx)).await
    }

    /// `ForceSynchronization`: re-derives the resource (with `deep`, what
    /// is under it too) from the latest node reports and definitions and
    /// commits what differs, as one input; answers what changed.
    pub async fn force_sync(
        &self,
        kind: ResourceKind,
        name: &str,
        deep: bool,
        within: Option<Duration>,
    ) -> Result<SyncAnswer, EngineError> {
        let name = name.to_owned();
        self.ask_input(within, |caller| Command::Sync(kind, name, deep, caller))
            .await?
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use state_store::Cause;

    use super::*;

    #[test]
    fn a_store_error_is_the_source_and_keeps_its_text() {
        let store = StoreError::Unavailable {
            message: "tcp connect error".into(),
            source: Some(Cause::new(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused,
            ))),
        };
        let error = EngineError::from(store.clone());
        assert_eq!(
            error.to_string(),
            EngineError::Unavailable(store.to_string()).to_string()
        );
        assert_eq!(error.code(), ErrorCode::ResourceUnavailable);
        let source = error.source().expect("the store error");
        assert_eq!(source.downcast_ref::<StoreError>(), Some(&store));
        assert!(source.source().is_some(), "and the store error's own cause");
    }
}
