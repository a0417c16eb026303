//! Subscriptions: filters, events and the lagged-subscriber warning, both
//! ways.

use std::collections::HashMap;

use engine::{Delivery, Event, EventFilter};
use statemachine_core::{RequestKind, ResourceKind};
use tonic::Status;

use super::{
    ConvertError, event_kind_from_number, event_type, invalid, query_kind, query_name,
    request_kind, request_kind_number, resource_type, severity, severity_from_number,
};
use crate::proto::statemanager as sm;

/// The metadata key of a [`lagged_event`]: how many events the subscriber missed.
pub const LAGGED_EVENTS_KEY: &str = "lagged_events";
/// The metadata key naming an event's resource kind (`container`, `model`,
/// `package`, `scenario`); containers have no `ResourceType` on the wire.
pub const RESOURCE_KIND_KEY: &str = "resource_kind";
/// The subscription filter key selecting one resource name.
pub const FILTER_RESOURCE_NAME: &str = "resource_name";
/// The subscription filter key selecting one resource kind by its lowercase
/// name (the only way to ask for container events).
pub const FILTER_RESOURCE_KIND: &str = "resource_kind";

/// A subscription request as the engine's filter. `resource_type`
/// UNSPECIFIED means all types; `filter` may hold `resource_name` and
/// `resource_kind` (`container`, `model`, `package`, `scenario`). Unknown
/// types, unmanaged types, unknown filter keys and bad names are
/// `InvalidArgument`.
pub fn event_filter(request: &sm::StateChangeSubscriptionRequest) -> Result<EventFilter, Status> {
    let mut kind = match request_kind(request.resource_type) {
        RequestKind::Unspecified => None,
        other => Some(query_kind(request_kind_number(other))?),
    };
    let mut resource_name = None;
    for (key, value) in &request.filter {
        match key.as_str() {
            FILTER_RESOURCE_NAME => {
                query_name(value)?;
                resource_name = Some(value.clone());
            }
            FILTER_RESOURCE_KIND => {
                let named = ResourceKind::from_key_segment(value).ok_or_else(|| {
                    invalid(format!(
                        "filter resource_kind '{}' is not one of container, model, package, scenario",
                        value.escape_debug()
                    ))
                })?;
                if kind.is_some_and(|k| k != named) {
                    return Err(invalid(format!(
                        "filter resource_kind '{value}' contradicts resource_type {}",
                        request.resource_type
                    )));
                }
                kind = Some(named);
            }
            other => {
                return Err(invalid(format!(
                    "unknown filter key '{}'; supported: {FILTER_RESOURCE_NAME}, {FILTER_RESOURCE_KIND}",
                    other.escape_debug()
                )));
            }
        }
    }
    Ok(EventFilter {
        resource_kind: kind,
        resource_name,
        include_recovery: request.include_recovery_events,
        include_health: request.include_health_events,
    })
}

/// The subscription request of a filter (for clients).
pub fn subscription_request(filter: &EventFilter) -> sm::StateChangeSubscriptionRequest {
    let mut map = HashMap::new();
    let mut resource_type = sm::ResourceType::Unspecified;
    match filter.resource_kind {
        Some(ResourceKind::Container) => {
            map.insert(
                FILTER_RESOURCE_KIND.to_owned(),
                ResourceKind::Container.as_key_segment().to_owned(),
            );
        }
        Some(kind) => resource_type = self::resource_type(kind),
        None => {}
    }
    if let Some(name) = &filter.resource_name {
        map.insert(FILTER_RESOURCE_NAME.to_owned(), name.clone());
    }
    sm::StateChangeSubscriptionRequest {
        resource_type: resource_type as i32,
        filter: map,
        include_health_events: filter.include_health,
        include_recovery_events: filter.include_recovery,
    }
}

/// An engine event as a `StateChangeEvent`: `state_change` carries the
/// resource, the states left and entered (empty: none), the transition id,
/// the time and the source; the metadata also names the resource kind.
pub fn state_change_event(event: &Event) -> sm::StateChangeEvent {
    let mut metadata: HashMap<String, String> = event
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    metadata
        .entry(RESOURCE_KIND_KEY.to_owned())
        .or_insert_with(|| event.resource_kind.as_key_segment().to_owned());
    sm::StateChangeEvent {
        event_type: event_type(event.kind) as i32,
        state_change: Some(sm::StateChange {
            resource_type: resource_type(event.resource_kind) as i32,
            resource_name: event.resource_name.clone(),
            current_state: event.from.clone().unwrap_or_default(),
            target_state: event.to.clone().unwrap_or_default(),
            transition_id: event.transition_id.clone(),
            timestamp_ns: event.at_ns,
            source: event.source.clone(),
        }),
        event_timestamp_ns: event.at_ns,
        event_id: event.id.clone(),
        severity: severity(event.severity) as i32,
        description: event.description.clone(),
        metadata,
    }
}

/// The WARNING event telling a subscriber that it fell behind and missed
/// `missed` events (metadata `lagged_events`).
pub fn lagged_event(missed: u64, now_ns: i64) -> sm::StateChangeEvent {
    sm::StateChangeEvent {
        event_type: sm::EventType::Warning as i32,
        state_change: None,
        event_timestamp_ns: now_ns,
        event_id: format!("lagged-{now_ns}"),
        severity: sm::Severity::Warning as i32,
        description: format!(
            "this subscriber fell behind and missed {missed} events; re-read the states it depends on"
        ),
        metadata: HashMap::from([(LAGGED_EVENTS_KEY.to_owned(), missed.to_string())]),
    }
}

/// A received `StateChangeEvent` as a delivery (for clients): a
/// [`lagged_event`] becomes [`Delivery::Lagged`], anything else an event.
pub fn delivery(event: sm::StateChangeEvent) -> Result<Delivery, ConvertError> {
    if event.event_type == sm::EventType::Warning as i32
        && let Some(missed) = event.metadata.get(LAGGED_EVENTS_KEY)
    {
        let missed = missed
            .parse()
            .map_err(|_| ConvertError(format!("lagged_events '{missed}' is not a count")))?;
        return Ok(Delivery::Lagged(missed));
    }
    let kind = event_kind_from_number(event.event_type).ok_or_else(|| {
        ConvertError(format!(
            "event '{}' has event_type {}",
            event.event_id, event.event_type
        ))
    })?;
    let severity = severity_from_number(event.severity).ok_or_else(|| {
        ConvertError(format!(
            "event '{}' has severity {}",
            event.event_id, event.severity
        ))
    })?;
    let change = event.state_change.unwrap_or_default();
    let resource_kind = request_kind(change.resource_type)
        .managed()
        .or_else(|| {
            event
                .metadata
                .get(RESOURCE_KIND_KEY)
                .and_then(|k| ResourceKind::from_key_segment(k))
        })
        .ok_or_else(|| {
            ConvertError(format!("event '{}' names no resource kind", event.event_id))
        })?;
    let state = |s: String| (!s.is_empty()).then_some(s);
    let mut metadata: std::collections::BTreeMap<String, String> =
        event.metadata.into_iter().collect();
    metadata.remove(RESOURCE_KIND_KEY);
    Ok(Delivery::Event(std::sync::Arc::new(Event {
        id: event.event_id,
        kind,
        severity,
        resource_kind,
        resource_name: change.resource_name,
        from: state(change.current_state),
        to: state(change.target_state),
        at_ns: event.event_timestamp_ns,
        source: change.source,
        transition_id: change.transition_id,
        description: event.description,
        metadata,
    })))
}
