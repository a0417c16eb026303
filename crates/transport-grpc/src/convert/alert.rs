//! Alerts (RECOVERY.md §6): `GetPendingAlerts` and `AcknowledgeAlert`,
//! both ways, with the alert's severity and status.

use std::collections::HashMap;

use engine::{AlertPage, AlertQuery};
use statemachine_core::RequestKind;
use statemachine_core::alert::{Acknowledgement, Alert, AlertSeverity, AlertStatus};
use tonic::Status;

use super::{ConvertError, invalid, limit, query_kind, request_kind, resource_type};
use crate::proto::statemanager as sm;

/// The metadata key repeating an alert's `condition` (for clients that know
/// only Pullpiri's fields).
pub const ALERT_CONDITION_KEY: &str = "condition";
/// The metadata key repeating an alert's `count`.
pub const ALERT_COUNT_KEY: &str = "count";

/// The wire's `Severity` of an alert's severity.
pub fn alert_severity(severity: AlertSeverity) -> sm::Severity {
    match severity {
        AlertSeverity::Info => sm::Severity::Info,
        AlertSeverity::Warning => sm::Severity::Warning,
        AlertSeverity::Error => sm::Severity::Error,
        AlertSeverity::Critical => sm::Severity::Critical,
    }
}

/// The alert severity with the wire's `Severity` number; `None` for
/// UNSPECIFIED and numbers the protocol does not define.
pub fn alert_severity_from_number(number: i32) -> Option<AlertSeverity> {
    Some(match sm::Severity::try_from(number).ok()? {
        sm::Severity::Info => AlertSeverity::Info,
        sm::Severity::Warning => AlertSeverity::Warning,
        sm::Severity::Error => AlertSeverity::Error,
        sm::Severity::Critical => AlertSeverity::Critical,
        sm::Severity::Unspecified => return None,
    })
}

/// The wire's `AlertStatus` of a status.
pub fn alert_status(status: AlertStatus) -> sm::AlertStatus {
    match status {
        AlertStatus::Active => sm::AlertStatus::Active,
        AlertStatus::Acknowledged => sm::AlertStatus::Acknowledged,
        AlertStatus::Resolved => sm::AlertStatus::Resolved,
        AlertStatus::Expired => sm::AlertStatus::Expired,
    }
}

/// The status with the wire's `AlertStatus` number; `None` for UNSPECIFIED
/// and numbers the protocol does not define.
pub fn alert_status_from_number(number: i32) -> Option<AlertStatus> {
    Some(match sm::AlertStatus::try_from(number).ok()? {
        sm::AlertStatus::Active => AlertStatus::Active,
        sm::AlertStatus::Acknowledged => AlertStatus::Acknowledged,
        sm::AlertStatus::Resolved => AlertStatus::Resolved,
        sm::AlertStatus::Expired => AlertStatus::Expired,
        sm::AlertStatus::Unspecified => return None,
    })
}

/// A `GetPendingAlertsRequest` as the engine's query: `severity` is the
/// least severity (UNSPECIFIED: all), `resource_type` a managed type
/// (UNSPECIFIED: all), `limit` 0 all. Unknown numbers, unmanaged types and
/// a negative limit are `InvalidArgument` naming the field.
pub fn alert_query(request: &sm::GetPendingAlertsRequest) -> Result<AlertQuery, Status> {
    let min_severity = match request.severity {
        0 => None,
        n => Some(alert_severity_from_number(n).ok_or_else(|| {
            invalid(format!(
                "unknown severity {n}; use SEVERITY_INFO ... SEVERITY_CRITICAL, or SEVERITY_UNSPECIFIED for all"
            ))
        })?),
    };
    let kind = match request_kind(request.resource_type) {
        RequestKind::Unspecified => None,
        _ => Some(query_kind(request.resource_type)?),
    };
    Ok(AlertQuery {
        min_severity,
        kind,
        limit: limit(request.limit, "limit")?,
    })
}

/// The `GetPendingAlertsRequest` of a query (for clients).
pub fn alert_query_message(query: &AlertQuery) -> sm::GetPendingAlertsRequest {
    sm::GetPendingAlertsRequest {
        severity: query
            .min_severity
            .map_or(sm::Severity::Unspecified, alert_severity) as i32,
        resource_type: query
            .kind
            .map_or(sm::ResourceType::Unspecified, resource_type) as i32,
        limit: i32::try_from(query.limit).unwrap_or(i32::MAX),
    }
}

/// Checks an `AcknowledgeAlertRequest`: `alert_id` and `acknowledged_by`
/// must be given (`InvalidArgument` naming the field).
pub fn acknowledgement(request: &sm::AcknowledgeAlertRequest) -> Result<(), Status> {
    if request.alert_id.is_empty() {
        return Err(invalid("alert_id is empty: name the alert to acknowledge"));
    }
    if request.acknowledged_by.trim().is_empty() {
        return Err(invalid(
            "acknowledged_by is empty: an acknowledgement names who makes it",
        ));
    }
    Ok(())
}

/// An alert as the wire's `Alert`: Pullpiri's fields, ours (condition,
/// count, acknowledgement), and `metadata` repeating condition and count.
pub fn alert_message(alert: &Alert) -> sm::Alert {
    let (by, reason, at) = match &alert.acknowledged {
        Some(ack) => (ack.by.clone(), ack.reason.clone(), ack.at_ns),
        None => (String::new(), String::new(), 0),
    };
    sm::Alert {
        alert_id: alert.id.clone(),
        severity: alert_severity(alert.severity) as i32,
        resource_type: resource_type(alert.kind) as i32,
        resource_name: alert.name.clone(),
        title: alert.title.clone(),
        description: alert.description.clone(),
        created_time_ns: alert.created_ns,
        updated_time_ns: alert.updated_ns,
        status: alert_status(alert.status) as i32,
        metadata: HashMap::from([
            (ALERT_CONDITION_KEY.to_owned(), alert.condition.clone()),
            (ALERT_COUNT_KEY.to_owned(), alert.count.to_string()),
        ]),
        condition: alert.condition.clone(),
        count: i32::try_from(alert.count).unwrap_or(i32::MAX),
        acknowledged_by: by,
        acknowledgment_message: reason,
        acknowledged_time_ns: at,
    }
}

/// A received `Alert` (for clients). An acknowledgement is read when
/// `acknowledged_by` is set.
pub fn alert(message: sm::Alert) -> Result<Alert, ConvertError> {
    let id = message.alert_id;
    let kind = request_kind(message.resource_type)
        .managed()
        .ok_or_else(|| {
            ConvertError(format!(
                "alert '{id}' has resource_type {}",
                message.resource_type
            ))
        })?;
    let severity = alert_severity_from_number(message.severity)
        .ok_or_else(|| ConvertError(format!("alert '{id}' has severity {}", message.severity)))?;
    let status = alert_status_from_number(message.status)
        .ok_or_else(|| ConvertError(format!("alert '{id}' has status {}", message.status)))?;
    let count = u32::try_from(message.count)
        .map_err(|_| ConvertError(format!("alert '{id}' has count {}", message.count)))?;
    let acknowledged = (!message.acknowledged_by.is_empty()).then_some(Acknowledgement {
        by: message.acknowledged_by,
        reason: message.acknowledgment_message,
        at_ns: message.acknowledged_time_ns,
    });
    Ok(Alert {
        id,
        severity,
        kind,
        name: message.resource_name,
        condition: message.condition,
        title: message.title,
        description: message.description,
        created_ns: message.created_time_ns,
        updated_ns: message.updated_time_ns,
        count,
        status,
        acknowledged,
    })
}

/// A page of pending alerts as a `GetPendingAlertsResponse`.
pub fn pending_alerts_response(page: &AlertPage) -> sm::GetPendingAlertsResponse {
    sm::GetPendingAlertsResponse {
        alerts: page.alerts.iter().map(alert_message).collect(),
        success: true,
        message: String::new(),
        total_count: i32::try_from(page.total).unwrap_or(i32::MAX),
    }
}

/// A received `GetPendingAlertsResponse` as a page (for clients).
pub fn alert_page(response: sm::GetPendingAlertsResponse) -> Result<AlertPage, ConvertError> {
    let total = usize::try_from(response.total_count).map_err(|_| {
        ConvertError(format!(
            "pending alerts with total_count {}",
            response.total_count
        ))
    })?;
    Ok(AlertPage {
        alerts: response
            .alerts
            .into_iter()
            .map(alert)
            .collect::<Result<_, _>>()?,
        total,
    })
}

/// An acknowledged alert as an `AlertResponse` (`success = true`).
pub fn alert_response(alert: &Alert) -> sm::AlertResponse {
    let by = alert
        .acknowledged
        .as_ref()
        .map_or("", |ack| ack.by.as_str());
    sm::AlertResponse {
        success: true,
        message: format!(
            "alert '{}' acknowledged by '{}'",
            alert.id,
            by.escape_debug()
        ),
        alert: Some(alert_message(alert)),
    }
}
