//! The state values the bridge writes to the service.
//!
//! Our store holds canonical PascalCase state names (`Waiting`, `Error`,
//! `Running`). Upstream's own StateManager writes scenario and package states
//! as their protobuf enum names (`SCENARIO_STATE_WAITING`,
//! `PACKAGE_STATE_ERROR`) and model states PascalCase (`Running`); upstream
//! writes no container keys, so ours keep their PascalCase names.
//! [`service_value`] turns one into the other; it is pure so that the table
//! can be tested row by row.

use std::borrow::Cow;

use statemachine_core::keys::parse_state_key;
use statemachine_core::{ContainerState, ModelState, PackageState, ResourceKind, ScenarioState};

use crate::ValueFormat;

/// The value to write to the service for `value` under `key`.
///
/// With [`ValueFormat::Canonical`] it is `value` unchanged. With
/// [`ValueFormat::Upstream`], for a state key (`/{kind}/{name}/state`):
///
/// | kind | ours | the service's |
/// |---|---|---|
/// | scenario | `Waiting` | `SCENARIO_STATE_WAITING` |
/// | package | `Error` | `PACKAGE_STATE_ERROR` |
/// | model | `Running` | `Running` |
/// | container | `Exited` | `Exited` |
///
/// A value that is not a state of the key's kind, and any other key, is
/// written unchanged: the bridge mirrors what it cannot translate rather than
/// dropping it.
pub fn service_value<'v>(format: ValueFormat, key: &str, value: &'v str) -> Cow<'v, str> {
    if format == ValueFormat::Canonical {
        return Cow::Borrowed(value);
    }
    let Some((kind, _)) = parse_state_key(key) else {
        return Cow::Borrowed(value);
    };
    let translated = match kind {
        ResourceKind::Scenario => ScenarioState::parse(value)
            .ok()
            .map(|state| enum_name("SCENARIO_STATE_", state.as_str())),
        ResourceKind::Package => PackageState::parse(value)
            .ok()
            .map(|state| enum_name("PACKAGE_STATE_", state.as_str())),
        ResourceKind::Model => ModelState::parse(value)
            .ok()
            .map(|state| state.as_str().to_owned()),
        ResourceKind::Container => ContainerState::parse(value)
            .ok()
            .map(|state| state.as_str().to_owned()),
    };
    match translated {
        Some(translated) if translated != value => Cow::Owned(translated),
        _ => Cow::Borrowed(value),
    }
}

/// The protobuf enum name of a PascalCase state: `prefix` followed by the
/// name in SCREAMING_SNAKE_CASE (`SCENARIO_STATE_` + `Waiting` gives
/// `SCENARIO_STATE_WAITING`; a two-word `NotReady` would give `NOT_READY`).
fn enum_name(prefix: &str, pascal: &str) -> String {
    let mut name = String::with_capacity(prefix.len() + pascal.len() + 4);
    name.push_str(prefix);
    for (i, c) in pascal.chars().enumerate() {
        if i > 0 && c.is_ascii_uppercase() {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_values_are_what_upstreams_statemanager_writes() {
        use ValueFormat::Upstream;
        let cases: &[(&str, &str, &str)] = &[
            // Scenario states: statemanager.proto's ScenarioState names.
            ("/scenario/s/state", "Idle", "SCENARIO_STATE_IDLE"),
            ("/scenario/s/state", "Waiting", "SCENARIO_STATE_WAITING"),
            ("/scenario/s/state", "Satisfied", "SCENARIO_STATE_SATISFIED"),
            ("/scenario/s/state", "Allowed", "SCENARIO_STATE_ALLOWED"),
            ("/scenario/s/state", "Denied", "SCENARIO_STATE_DENIED"),
            ("/scenario/s/state", "Completed", "SCENARIO_STATE_COMPLETED"),
            // Package states: PackageState names.
            ("/package/p/state", "Idle", "PACKAGE_STATE_IDLE"),
            ("/package/p/state", "Paused", "PACKAGE_STATE_PAUSED"),
            ("/package/p/state", "Exited", "PACKAGE_STATE_EXITED"),
            ("/package/p/state", "Degraded", "PACKAGE_STATE_DEGRADED"),
            ("/package/p/state", "Error", "PACKAGE_STATE_ERROR"),
            ("/package/p/state", "Running", "PACKAGE_STATE_RUNNING"),
            // Model states: PascalCase, as save_model_state_to_etcd writes them.
            ("/model/m/state", "Created", "Created"),
            ("/model/m/state", "Paused", "Paused"),
            ("/model/m/state", "Exited", "Exited"),
            ("/model/m/state", "Dead", "Dead"),
            ("/model/m/state", "Running", "Running"),
            // Container states: PascalCase (upstream writes none).
            ("/container/c/state", "Created", "Created"),
            ("/container/c/state", "Initialized", "Initialized"),
            ("/container/c/state", "Running", "Running"),
            ("/container/c/state", "Paused", "Paused"),
            ("/container/c/state", "Exited", "Exited"),
            ("/container/c/state", "Dead", "Dead"),
            ("/container/c/state", "Unknown", "Unknown"),
            // A foreign spelling is normalised to what upstream writes.
            ("/scenario/s/state", "waiting", "SCENARIO_STATE_WAITING"),
            (
                "/scenario/s/state",
                "SCENARIO_STATE_DENIED",
                "SCENARIO_STATE_DENIED",
            ),
            ("/package/p/state", "degraded", "PACKAGE_STATE_DEGRADED"),
            ("/model/m/state", "MODEL_STATE_DEAD", "Dead"),
            ("/container/c/state", "exited", "Exited"),
            // What cannot be translated is written unchanged.
            ("/scenario/s/state", "Running", "Running"),
            ("/package/p/state", "Satisfied", "Satisfied"),
            ("/model/m/state", "Unknown", "Unknown"),
            ("/model/m/state", "", ""),
            ("/scenario/s/state", " Waiting", " Waiting"),
            ("/scenario/s/history", "Waiting", "Waiting"),
            ("/scenario/a{b/state", "Waiting", "Waiting"),
            ("/volume/v/state", "Waiting", "Waiting"),
            ("Scenario/s", "Waiting", "Waiting"),
        ];
        for (key, ours, theirs) in cases {
            assert_eq!(
                service_value(Upstream, key, ours),
                *theirs,
                "{key} = {ours:?}"
            );
        }
    }

    #[test]
    fn canonical_values_are_written_unchanged() {
        for (key, value) in [
            ("/scenario/s/state", "Waiting"),
            ("/package/p/state", "Error"),
            ("/model/m/state", "Running"),
            ("/container/c/state", "Exited"),
            ("/scenario/s/state", "waiting"),
        ] {
            assert_eq!(service_value(ValueFormat::Canonical, key, value), value);
        }
    }

    #[test]
    fn unchanged_values_are_borrowed() {
        let value = "Running";
        assert!(matches!(
            service_value(ValueFormat::Upstream, "/model/m/state", value),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn enum_names_split_words() {
        assert_eq!(enum_name("X_", "Waiting"), "X_WAITING");
        assert_eq!(enum_name("NODE_STATE_", "NotReady"), "NODE_STATE_NOT_READY");
        assert_eq!(enum_name("X_", ""), "X_");
    }
}
