//! The recovery and alert calls, answered by the healer.

use std::collections::BTreeMap;

use statemachine_core::alert::{AlertError, AlertFilter};
use statemachine_core::healing::diff::{AsilLevel, PlanContext};
use statemachine_core::healing::{Incident, IssueType, Phase, StateDiff, plan_diff};
use statemachine_core::{AnyState, ModelState, PackageState, ResourceKind};

use super::act::issue_name;
use super::healer::{Healer, HealerCommand, Hold, RecoveryNote, Res};
use super::records::Unsaved;
use super::{
    AlertPage, DiffAnswer, HealthCheck, HealthView, IncidentRef, RecoveryAnswer, RecoveryView,
    TriggerRequest,
};
use crate::api::EngineError;

impl Healer {
    pub(super) async fn on_command(&mut self, command: HealerCommand) {
        match command {
            HealerCommand::Trigger(request, tx) => {
                let answer = self.trigger(request).await;
                let _ = tx.send(answer);
            }
            HealerCommand::Abort(target, reason, tx) => {
                let answer = self.abort_call(target, reason).await;
                let _ = tx.send(answer);
            }
            HealerCommand::Status(target, tx) => {
                let answer = self
                    .find(&target)
                    .map(|incident| self.view(incident))
                    .ok_or_else(|| not_found(&target));
                let _ = tx.send(answer);
            }
            HealerCommand::PendingAlerts(query, tx) => {
                let filter = AlertFilter {
                    min_severity: query.min_severity,
                    kind: query.kind,
                    limit: 0,
                };
                let all = self.alerts.pending(&filter);
                let total = all.len();
                let limit = if query.limit == 0 { total } else { query.limit };
                let alerts = all.into_iter().take(limit).cloned().collect();
                let _ = tx.send(Ok(AlertPage { alerts, total }));
            }
            HealerCommand::Acknowledge {
                id,
                by,
                message,
                tx,
            } => {
                let now = self.clock.now_ns();
                let answer = match self.alerts.acknowledge(&id, &by, &message, now) {
                    Ok(alert) => {
                        let alert = alert.clone();
                        self.unsaved.insert(Unsaved::Alert(alert.id.clone()));
                        self.flush().await;
                        if self.unsaved.contains(&Unsaved::Alert(alert.id.clone())) {
                            Err(EngineError::Unavailable(
                                "the acknowledgement is recorded in memory but not yet in the store; it is written when the store answers".into(),
                            ))
                        } else {
                            Ok(alert)
                        }
                    }
                    Err(AlertError::NotFound(id)) => {
                        Err(EngineError::NotFound(format!("no alert '{id}'")))
                    }
                    Err(error) => Err(EngineError::Invalid(error.to_string())),
                };
                let _ = tx.send(answer);
            }
            HealerCommand::Health(kind, name, tx) => {
                let answer = self.health(kind, name).await;
                let _ = tx.send(answer);
            }
            HealerCommand::Diff(diff, tx) => {
                let answer = self.diff(diff).await;
                let _ = tx.send(answer);
            }
        }
    }

    /// The incident a call means.
    fn find(&self, target: &IncidentRef) -> Option<&Incident> {
        match target {
            IncidentRef::Id(id) => self.incidents.get(id),
            IncidentRef::Resource(kind, name) => {
                let res = (*kind, name.clone());
                self.open
                    .get(&res)
                    .or_else(|| self.latest.get(&res))
                    .and_then(|id| self.incidents.get(id))
            }
        }
    }

    /// The view of an incident.
    pub(super) fn view(&self, incident: &Incident) -> RecoveryView {
        let strategy = incident.strategy(&self.config.strategies);
        let ladder = strategy.actions.clone();
        let progress = if incident.phase.is_terminal() || ladder.is_empty() {
            100.0
        } else {
            (incident.rung as f32 / ladder.len() as f32 * 100.0).min(100.0)
        };
        let rung = ladder
            .get(incident.rung as usize)
            .map(|a| a.as_str())
            .unwrap_or("-");
        let message = match incident.phase {
            Phase::Initializing => format!(
                "{} incident opened; first action due",
                issue_name(incident.issue)
            ),
            Phase::Executing => format!(
                "rung {} of {} ({rung}) taken or due; {} action(s) so far",
                incident.rung + 1,
                ladder.len(),
                incident.executed
            ),
            Phase::Validating => format!(
                "validating rung {} of {} ({rung}): waiting for a healthy state",
                incident.rung + 1,
                ladder.len()
            ),
            Phase::Completed => format!(
                "completed: healthy again after {} action(s)",
                incident.executed
            ),
            Phase::Failed => format!(
                "failed after {} action(s): ladder exhausted",
                incident.executed
            ),
            Phase::Aborted => format!("aborted: {}", incident.reason),
        };
        RecoveryView {
            incident: incident.clone(),
            ladder,
            message,
            progress,
        }
    }

    async fn trigger(&mut self, request: TriggerRequest) -> Result<RecoveryAnswer, EngineError> {
        if !matches!(request.kind, ResourceKind::Package | ResourceKind::Model) {
            return Err(EngineError::Invalid(format!(
                "recovery is for packages and models, not {}s",
                request.kind
            )));
        }
        let res: Res = (request.kind, request.name.clone());
        let ctx = self.context(&res).await?;
        if !ctx.known {
            return Err(EngineError::NotFound(format!(
                "{} '{}' is defined nowhere",
                request.kind, request.name
            )));
        }
        if let Some(state) = ctx.state {
            self.states.insert(res.clone(), state);
        }
        let now = self.clock.now_ns();
        if let Some(id) = self.open.get(&res).cloned() {
            if request.force {
                self.abort(&id, "replaced by TriggerRecovery with force", now)
                    .await;
            } else {
                let view = match self.incidents.get_mut(&id) {
                    Some(incident) => {
                        incident.join();
                        let incident = incident.clone();
                        self.unsaved.insert(Unsaved::Incident(id.clone()));
                        self.flush().await;
                        self.view(&incident)
                    }
                    None => return Err(EngineError::NotFound(id)),
                };
                return Ok(RecoveryAnswer {
                    message: format!("joined the open incident {id} (use force to start anew)"),
                    view,
                });
            }
        }
        let released = self.held.remove(&res);
        if released.is_some() && res.0 == ResourceKind::Package {
            self.note(RecoveryNote::Released {
                package: res.1.clone(),
            })
            .await;
        }
        let reason = if request.reason.is_empty() {
            "TriggerRecovery".to_owned()
        } else {
            request.reason.clone()
        };
        let Some(id) = self
            .open_incident(
                &res,
                IssueType::Manual,
                request.actions.clone(),
                reason,
                now,
            )
            .await
        else {
            if let Some(hold) = released {
                self.held.insert(res, hold);
            }
            return Err(EngineError::Unavailable(
                "the incident could not be written: the store is unavailable".into(),
            ));
        };
        self.flush().await;
        let incident = self
            .incidents
            .get(&id)
            .ok_or_else(|| EngineError::NotFound(id.clone()))?;
        let message = match (released, incident.phase) {
            (_, Phase::Completed) => {
                format!("incident {id} completed at once: the resource is healthy")
            }
            (Some(Hold::Isolated), _) => format!("isolation lifted; incident {id} opened"),
            (Some(Hold::Failed), _) => format!("failed recovery retried; incident {id} opened"),
            (None, _) => format!("incident {id} opened"),
        };
        Ok(RecoveryAnswer {
            message,
            view: self.view(incident),
        })
    }

    async fn abort_call(
        &mut self,
        target: IncidentRef,
        reason: String,
    ) -> Result<RecoveryAnswer, EngineError> {
        let incident = self
            .find(&target)
            .cloned()
            .ok_or_else(|| not_found(&target))?;
        let now = self.clock.now_ns();
        let reason = if reason.is_empty() {
            "AbortRecovery".to_owned()
        } else {
            reason
        };
        let message = if self.abort(&incident.id, &reason, now).await {
            self.flush().await;
            format!("incident {} aborted", incident.id)
        } else {
            format!(
                "incident {} had already ended {:?}: nothing to abort",
                incident.id, incident.phase
            )
        };
        let incident = self.incidents.get(&incident.id).unwrap_or(&incident);
        Ok(RecoveryAnswer {
            message,
            view: self.view(incident),
        })
    }

    async fn health(
        &mut self,
        kind: ResourceKind,
        name: String,
    ) -> Result<HealthView, EngineError> {
        let res: Res = (kind, name);
        let now = self.clock.now_ns();
        let ctx = Some(self.context(&res).await?);
        let state = ctx
            .as_ref()
            .and_then(|c| c.state)
            .or_else(|| self.states.get(&res).copied());
        let mut checks = Vec::new();
        let state_ok = state.is_none_or(statemachine_core::healing::is_healthy);
        checks.push(HealthCheck {
            name: "state".into(),
            passed: state_ok,
            message: match state {
                Some(s) => format!("{} is {}", kind, s.as_str()),
                None => "no state recorded".into(),
            },
        });
        let open = self.open.get(&res).and_then(|id| self.incidents.get(id));
        let mut metadata = BTreeMap::new();
        checks.push(HealthCheck {
            name: "recovery".into(),
            passed: open.is_none() && !self.held.contains_key(&res),
            message: match (open, self.held.get(&res)) {
                (Some(i), _) => {
                    let strategy = i.strategy(&self.config.strategies);
                    format!(
                        "incident {} {:?} on rung {} of {}, {} action(s)",
                        i.id,
                        i.phase,
                        i.rung + 1,
                        strategy.actions.len(),
                        i.executed
                    )
                }
                (None, Some(Hold::Isolated)) => {
                    "isolated: no automatic recovery until TriggerRecovery".into()
                }
                (None, Some(Hold::Failed)) => {
                    "recovery failed: no automatic recovery until healthy or TriggerRecovery".into()
                }
                (None, None) => "no open incident".into(),
            },
        });
        if let Some(i) =
            open.or_else(|| self.latest.get(&res).and_then(|id| self.incidents.get(id)))
        {
            metadata.insert("recovery.id".into(), i.id.clone());
            metadata.insert("recovery.phase".into(), format!("{:?}", i.phase));
            metadata.insert("recovery.issue".into(), issue_name(i.issue).into());
            metadata.insert("recovery.rung".into(), i.rung.to_string());
            metadata.insert("recovery.actions".into(), i.executed.to_string());
        }
        if let Some(hold) = self.held.get(&res) {
            metadata.insert(
                "recovery.hold".into(),
                match hold {
                    Hold::Isolated => "isolated",
                    Hold::Failed => "failed",
                }
                .into(),
            );
        }
        let history = self.trackers.get(&res);
        let stability = history.map(|h| h.stability(&self.config.tracker, now));
        let flapping = stability.as_ref().is_some_and(|s| s.flapping);
        checks.push(HealthCheck {
            name: "flapping".into(),
            passed: !flapping,
            message: match &stability {
                Some(s) => format!(
                    "{} transition(s) within {:?} (threshold {})",
                    s.transitions_in_window,
                    self.config.tracker.flap_window,
                    self.config.tracker.flap_threshold
                ),
                None => "no transitions recorded".into(),
            },
        });
        if let Some(s) = &stability {
            metadata.insert(
                "tracker.transitions_in_window".into(),
                s.transitions_in_window.to_string(),
            );
            metadata.insert("tracker.flapping".into(), s.flapping.to_string());
            if let Some(t) = s.time_in_state {
                metadata.insert("tracker.time_in_state_ms".into(), t.as_millis().to_string());
            }
            if let Some(m) = s.mtbf {
                metadata.insert("tracker.mtbf_ms".into(), m.as_millis().to_string());
            }
            for edge in &s.last_durations {
                metadata.insert(
                    format!(
                        "tracker.last_duration_ms.{}_to_{}",
                        edge.from.as_str(),
                        edge.to.as_str()
                    ),
                    edge.duration.as_millis().to_string(),
                );
            }
        }
        let alerts: Vec<_> = self
            .alerts
            .pending(&AlertFilter::default())
            .into_iter()
            .filter(|a| a.kind == kind && a.name == res.1)
            .collect();
        checks.push(HealthCheck {
            name: "alerts".into(),
            passed: alerts.is_empty(),
            message: match alerts.first() {
                Some(a) => format!("{} open alert(s), newest: {}", alerts.len(), a.title),
                None => "no open alert".into(),
            },
        });
        metadata.insert("alerts.open".into(), alerts.len().to_string());
        if kind == ResourceKind::Package {
            let phase = service_phase(
                state,
                ctx.as_ref(),
                open,
                self.latest.get(&res).and_then(|id| self.incidents.get(id)),
            );
            metadata.insert("service_phase".into(), phase.into());
        }
        let healthy = checks.iter().all(|c| c.passed);
        let message = if healthy {
            "healthy".to_owned()
        } else {
            checks
                .iter()
                .filter(|c| !c.passed)
                .map(|c| c.message.clone())
                .collect::<Vec<_>>()
                .join("; ")
        };
        let desired_state = open.map(|_| match kind {
            ResourceKind::Model => ModelState::Running.as_str().to_owned(),
            _ => PackageState::Running.as_str().to_owned(),
        });
        Ok(HealthView {
            healthy,
            message,
            checked_ns: now,
            checks,
            metadata,
            desired_state,
            last_transition_ns: self.entered(&res),
        })
    }

    async fn diff(&mut self, diff: StateDiff) -> Result<DiffAnswer, EngineError> {
        if !matches!(diff.kind, ResourceKind::Package | ResourceKind::Model) {
            return Err(EngineError::Invalid(format!(
                "a StateDiff is for a package or a model, not a {}",
                diff.kind
            )));
        }
        let res: Res = (diff.kind, diff.name.clone());
        let ctx = self.context(&res).await?;
        if !ctx.known {
            return Err(EngineError::NotFound(format!(
                "{} '{}' is defined nowhere",
                diff.kind, diff.name
            )));
        }
        let context = PlanContext {
            running: matches!(
                ctx.state,
                Some(
                    AnyState::Package(PackageState::Running) | AnyState::Model(ModelState::Running)
                )
            ),
            asil: AsilLevel::from_annotations(&ctx.annotations),
        };
        let plan = match plan_diff(&diff, context) {
            Ok(plan) => plan,
            Err(none) => {
                return Ok(DiffAnswer {
                    plan: None,
                    recovery_id: None,
                    message: format!("no action needed: {}", none.reason),
                });
            }
        };
        let now = self.clock.now_ns();
        if let Some(id) = self.open.get(&res).cloned() {
            if let Some(incident) = self.incidents.get_mut(&id) {
                incident.join();
                self.unsaved.insert(Unsaved::Incident(id.clone()));
                self.flush().await;
            }
            return Ok(DiffAnswer {
                plan: Some(plan),
                recovery_id: Some(id.clone()),
                message: format!("joined the open incident {id}"),
            });
        }
        if self.held.get(&res) == Some(&Hold::Isolated) {
            return Ok(DiffAnswer {
                plan: Some(plan),
                recovery_id: None,
                message: "the resource is isolated: no automatic recovery until TriggerRecovery"
                    .into(),
            });
        }
        let reason = format!("StateDiff: {}", plan.impact.parts.join(", "));
        let Some(id) = self
            .open_incident(&res, IssueType::Diff, plan.actions.clone(), reason, now)
            .await
        else {
            return Err(EngineError::Unavailable(
                "the incident could not be written: the store is unavailable".into(),
            ));
        };
        self.flush().await;
        Ok(DiffAnswer {
            message: format!(
                "plan {:?} with {} action(s) runs as incident {id}",
                plan.priority,
                plan.actions.len()
            ),
            plan: Some(plan),
            recovery_id: Some(id),
        })
    }
}

/// Seed 003's service phase of a package (RECOVERY.md §8).
fn service_phase(
    state: Option<AnyState>,
    ctx: Option<&super::healer::ActionContext>,
    open: Option<&Incident>,
    latest: Option<&Incident>,
) -> &'static str {
    let failed_incident = open.is_none() && latest.is_some_and(|i| i.phase == Phase::Failed);
    match state {
        Some(AnyState::Package(PackageState::Error)) => "Failed",
        Some(AnyState::Package(PackageState::Degraded)) if failed_incident => "Failed",
        Some(AnyState::Package(PackageState::Degraded)) => "Degraded",
        Some(AnyState::Package(PackageState::Running)) => "Running",
        Some(AnyState::Package(PackageState::Idle)) | None => {
            let models = ctx.map(|c| c.model_states.as_slice()).unwrap_or(&[]);
            let created = |s: &AnyState| *s == AnyState::Model(ModelState::Created);
            if ctx.is_some_and(|c| !c.reported) {
                "Pending"
            } else if !models.is_empty() && models.iter().all(created) {
                "Initializing"
            } else {
                "Pending"
            }
        }
        // Paused or Exited: stopped as requested.
        Some(_) => "Stopped",
    }
}

fn not_found(target: &IncidentRef) -> EngineError {
    match target {
        IncidentRef::Id(id) => EngineError::NotFound(format!("no incident '{id}'")),
        IncidentRef::Resource(kind, name) => {
            EngineError::NotFound(format!("{kind} '{name}' has no incident"))
        }
    }
}
