//! A resource's health (RECOVERY.md §8) in `GetResourceState`: the
//! `health_status` field and the health figures merged into the state's
//! metadata, both ways.

use engine::{HealthCheck, HealthView};

use crate::proto::statemanager as sm;

/// The metadata keys (exact) that [`merge_health`] adds.
pub const HEALTH_METADATA_KEYS: [&str; 1] = ["service_phase"];
/// The metadata key prefixes that [`merge_health`] adds (`recovery.id`,
/// `alerts.open`, `tracker.flapping`, ...).
pub const HEALTH_METADATA_PREFIXES: [&str; 3] = ["recovery.", "alerts.", "tracker."];

/// Whether a metadata key is one of the health figures (not a fact from
/// the definitions).
pub fn is_health_key(key: &str) -> bool {
    HEALTH_METADATA_KEYS.contains(&key)
        || HEALTH_METADATA_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// A health view as a `HealthStatus`; every check carries the time of the
/// health check.
pub fn health_status(health: &HealthView) -> sm::HealthStatus {
    sm::HealthStatus {
        healthy: health.healthy,
        status_message: health.message.clone(),
        last_health_check_ns: health.checked_ns,
        checks: health
            .checks
            .iter()
            .map(|check| sm::HealthCheck {
                check_name: check.name.clone(),
                passed: check.passed,
                message: check.message.clone(),
                timestamp_ns: health.checked_ns,
            })
            .collect(),
    }
}

/// Adds a resource's health to its `ResourceState`: `health_status`, the
/// health figures in `metadata` (a key already there is kept), and
/// `desired_state` and `last_transition_time_ns` where the state has none.
pub fn merge_health(state: &mut sm::ResourceState, health: HealthView) {
    state.health_status = Some(health_status(&health));
    for (key, value) in health.metadata {
        state.metadata.entry(key).or_insert(value);
    }
    if state.desired_state.is_empty()
        && let Some(desired) = health.desired_state
    {
        state.desired_state = desired;
    }
    if state.last_transition_time_ns == 0
        && let Some(at) = health.last_transition_ns
    {
        state.last_transition_time_ns = at;
    }
}

/// The health in a received `ResourceState` (for clients); `None` when it
/// has no `health_status`. The metadata holds only the health figures
/// ([`is_health_key`]).
pub fn health_view(state: &sm::ResourceState) -> Option<HealthView> {
    let status = state.health_status.as_ref()?;
    Some(HealthView {
        healthy: status.healthy,
        message: status.status_message.clone(),
        checked_ns: status.last_health_check_ns,
        checks: status
            .checks
            .iter()
            .map(|check| HealthCheck {
                name: check.check_name.clone(),
                passed: check.passed,
                message: check.message.clone(),
            })
            .collect(),
        metadata: state
            .metadata
            .iter()
            .filter(|(key, _)| is_health_key(key))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        desired_state: (!state.desired_state.is_empty()).then(|| state.desired_state.clone()),
        last_transition_ns: (state.last_transition_time_ns != 0)
            .then_some(state.last_transition_time_ns),
    })
}
