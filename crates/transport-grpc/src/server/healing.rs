//! The self-healing methods (RECOVERY.md): recovery, alerts, state diffs,
//! forced synchronization, and the health that `GetResourceState` adds.
//!
//! Each converts and checks its request (a malformed one is
//! `InvalidArgument` and the engine is not called), asks the engine within
//! the caller's `grpc-timeout`, and answers as the older methods do: a name
//! known nowhere or an unknown incident or alert is `success = false` with
//! the message; an unavailable store, a stopped engine or a missed deadline
//! is a gRPC status. `ForceSynchronization` answers every outcome in its
//! response's `error_code`, as `SendStateChange` does.

use std::future::Future;
use std::time::Duration;

use engine::EngineError;
use statemachine_core::{ErrorCode, MethodClass, ResourceKind};
use tokio::time::Instant;
use tonic::{Request, Response, Status};
use tracing::{debug, info};

use super::{StateManagerService, caller_deadline};
use crate::convert;
use crate::proto::statemanager as sm;

/// Waits for an engine call until the caller's deadline, if it set one
/// (the engine bounds the wait otherwise). A missed deadline is
/// `DeadlineExceeded`; `unknown` says what may still happen.
async fn within<T>(
    deadline: Option<Duration>,
    unknown: &str,
    call: impl Future<Output = Result<T, EngineError>>,
) -> Result<Result<T, EngineError>, Status> {
    match deadline {
        None => Ok(call.await),
        Some(limit) => tokio::time::timeout(limit, call).await.map_err(|_| {
            Status::deadline_exceeded(format!(
                "no answer within the caller's deadline ({limit:?}){unknown}"
            ))
        }),
    }
}

/// The longest `GetResourceState` waits for a resource's health (less when
/// the caller's deadline is nearer): health is an addition, and a busy or
/// starting healer must not slow the state down.
pub const HEALTH_WAIT: Duration = Duration::from_millis(500);

const MAY_STILL_HAPPEN: &str = "; the outcome is unknown: read it back with GetRecoveryStatus";

impl StateManagerService {
    /// `GetResourceState`'s health: the resource's health merged into its
    /// state, asked for [`HEALTH_WAIT`] at most, and no longer than until
    /// `deadline` (the caller's, if any). Without an answer in time, or
    /// with an error, the state is served without health.
    pub(super) async fn add_health(
        &self,
        state: &mut sm::ResourceState,
        kind: ResourceKind,
        deadline: Option<Instant>,
    ) {
        let left = deadline.map_or(HEALTH_WAIT, |d| {
            d.saturating_duration_since(Instant::now()).min(HEALTH_WAIT)
        });
        let engine = self.engine();
        let health = engine.health(kind, &state.resource_name);
        match within(Some(left), "", health).await {
            Ok(Ok(health)) => convert::merge_health(state, health),
            Ok(Err(error)) => {
                debug!(%error, name = %state.resource_name, "no health for the resource; served without it");
            }
            Err(status) => {
                debug!(message = status.message(), name = %state.resource_name, "no health in time; served without it");
            }
        }
    }

    pub(super) async fn force_synchronization_call(
        &self,
        request: Request<sm::ForceSynchronizationRequest>,
    ) -> Result<Response<sm::ForceSynchronizationResponse>, Status> {
        let deadline = caller_deadline(request.metadata());
        let resource = request.get_ref().resource_name.clone();
        let class = MethodClass::Recovery;
        if let Err(denial) = self.authorize_call(&request, "ForceSynchronization", class, &resource)
        {
            // Answered in its error_code, as every outcome of this method.
            return Ok(Response::new(sm::ForceSynchronizationResponse {
                message: denial.message,
                timestamp_ns: engine::wall_clock_ns(),
                error_code: convert::error_code(ErrorCode::PermissionDenied) as i32,
                error_details: denial.rule,
                ..Default::default()
            }));
        }
        let (kind, name, deep) = convert::sync_target(request.get_ref())?;
        info!(%kind, name = %name, deep, "forced synchronization requested");
        let answer = self.engine().force_sync(kind, &name, deep, deadline).await;
        Ok(Response::new(convert::force_sync_response(
            answer,
            engine::wall_clock_ns(),
        )))
    }

    pub(super) async fn trigger_recovery_call(
        &self,
        request: Request<sm::TriggerRecoveryRequest>,
    ) -> Result<Response<sm::RecoveryResponse>, Status> {
        let deadline = caller_deadline(request.metadata());
        let resource = request.get_ref().resource_name.clone();
        self.gate(
            &request,
            "TriggerRecovery",
            MethodClass::Recovery,
            &resource,
        )?;
        let request = convert::trigger_request(request.into_inner())?;
        info!(kind = %request.kind, name = %request.name, force = request.force, "recovery triggered");
        let answer = within(
            deadline,
            MAY_STILL_HAPPEN,
            self.engine().trigger_recovery(request),
        )
        .await?;
        recovery_response(answer)
    }

    pub(super) async fn abort_recovery_call(
        &self,
        request: Request<sm::AbortRecoveryRequest>,
    ) -> Result<Response<sm::RecoveryResponse>, Status> {
        let deadline = caller_deadline(request.metadata());
        let resource = request.get_ref().resource_name.clone();
        self.gate(&request, "AbortRecovery", MethodClass::Recovery, &resource)?;
        let (target, reason) = convert::abort_target(request.get_ref())?;
        info!(?target, "recovery abort requested");
        let answer = within(
            deadline,
            MAY_STILL_HAPPEN,
            self.engine().abort_recovery(target, reason),
        )
        .await?;
        recovery_response(answer)
    }

    pub(super) async fn get_recovery_status_call(
        &self,
        request: Request<sm::RecoveryStatusRequest>,
    ) -> Result<Response<sm::RecoveryStatusResponse>, Status> {
        let deadline = caller_deadline(request.metadata());
        let resource = request.get_ref().resource_name.clone();
        self.gate(&request, "GetRecoveryStatus", MethodClass::Read, &resource)?;
        let target = convert::status_target(request.get_ref())?;
        match within(deadline, "", self.engine().recovery_status(target)).await? {
            Ok(view) => Ok(Response::new(sm::RecoveryStatusResponse {
                status: Some(convert::recovery_status(&view)),
                success: true,
                message: view.message,
            })),
            Err(EngineError::NotFound(what)) => Ok(Response::new(sm::RecoveryStatusResponse {
                status: None,
                success: false,
                message: what,
            })),
            Err(error) => Err(convert::engine_status(&error)),
        }
    }

    pub(super) async fn acknowledge_alert_call(
        &self,
        request: Request<sm::AcknowledgeAlertRequest>,
    ) -> Result<Response<sm::AlertResponse>, Status> {
        let deadline = caller_deadline(request.metadata());
        let resource = format!("alert/{}", request.get_ref().alert_id);
        self.gate(
            &request,
            "AcknowledgeAlert",
            MethodClass::Recovery,
            &resource,
        )?;
        let request = request.into_inner();
        convert::acknowledgement(&request)?;
        let answer = within(
            deadline,
            "; the outcome is unknown: read it back with GetPendingAlerts",
            self.engine().acknowledge_alert(
                &request.alert_id,
                &request.acknowledged_by,
                &request.acknowledgment_message,
            ),
        )
        .await?;
        match answer {
            Ok(alert) => Ok(Response::new(convert::alert_response(&alert))),
            Err(EngineError::NotFound(what)) => Ok(Response::new(sm::AlertResponse {
                success: false,
                message: what,
                alert: None,
            })),
            Err(error) => Err(convert::engine_status(&error)),
        }
    }

    pub(super) async fn get_pending_alerts_call(
        &self,
        request: Request<sm::GetPendingAlertsRequest>,
    ) -> Result<Response<sm::GetPendingAlertsResponse>, Status> {
        let deadline = caller_deadline(request.metadata());
        self.gate(&request, "GetPendingAlerts", MethodClass::Read, "")?;
        let query = convert::alert_query(request.get_ref())?;
        let page = within(deadline, "", self.engine().pending_alerts(query))
            .await?
            .map_err(|error| convert::engine_status(&error))?;
        Ok(Response::new(convert::pending_alerts_response(&page)))
    }

    pub(super) async fn send_state_diff_call(
        &self,
        request: Request<sm::StateDiff>,
    ) -> Result<Response<sm::StateDiffResponse>, Status> {
        let deadline = caller_deadline(request.metadata());
        let resource = request.get_ref().resource_name.clone();
        self.gate(&request, "SendStateDiff", MethodClass::Recovery, &resource)?;
        let diff = convert::state_diff(request.into_inner())?;
        debug!(kind = %diff.kind, name = %diff.name, "state diff received");
        let answer = within(
            deadline,
            "; the outcome is unknown: read it back with GetRecoveryStatus",
            self.engine().state_diff(diff),
        )
        .await?;
        match answer {
            Ok(answer) => Ok(Response::new(convert::state_diff_response(&answer))),
            Err(EngineError::NotFound(what)) => Ok(Response::new(sm::StateDiffResponse {
                success: false,
                message: what,
                recovery_id: String::new(),
                plan: None,
            })),
            Err(error) => Err(convert::engine_status(&error)),
        }
    }
}

/// A trigger's or abort's answer: the incident, or `success = false` for
/// a resource or incident known nowhere, or a status.
fn recovery_response(
    answer: Result<engine::RecoveryAnswer, EngineError>,
) -> Result<Response<sm::RecoveryResponse>, Status> {
    let now = engine::wall_clock_ns();
    match answer {
        Ok(answer) => Ok(Response::new(convert::recovery_response(answer, now))),
        Err(EngineError::NotFound(what)) => Ok(Response::new(sm::RecoveryResponse {
            success: false,
            message: what,
            recovery_id: String::new(),
            timestamp_ns: now,
            status: None,
        })),
        Err(error) => Err(convert::engine_status(&error)),
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[tokio::test]
    async fn a_call_past_the_callers_deadline_is_deadline_exceeded() {
        let never = std::future::pending::<Result<(), EngineError>>();
        let status = within(Some(Duration::from_millis(10)), MAY_STILL_HAPPEN, never)
            .await
            .expect_err("no answer in time");
        assert_eq!(status.code(), Code::DeadlineExceeded);
        assert!(status.message().contains("10ms"), "{status:?}");
        assert!(status.message().contains("GetRecoveryStatus"), "{status:?}");

        let answered = within(None, "", async { Ok::<_, EngineError>(7) }).await;
        assert_eq!(answered.expect("in time"), Ok(7));
        let failed = within(Some(Duration::from_secs(1)), "", async {
            Err::<(), _>(EngineError::Stopped)
        })
        .await;
        assert_eq!(failed.expect("in time"), Err(EngineError::Stopped));
    }
}
