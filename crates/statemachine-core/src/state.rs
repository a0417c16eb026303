//! The state enums, their canonical names and lenient parsing
//! (STATE-MACHINES.md §6).
//!
//! Canonical names are PascalCase and are what is written to the store.
//! Parsing accepts any case, `-`/`_` separators, and the protobuf enum names
//! (`MODEL_STATE_RUNNING`); anything else, whitespace included, is an error
//! naming the allowed values.

use std::fmt;
use std::str::FromStr;

use crate::name::ResourceKind;

/// A state name that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} state '{given}'; allowed: {allowed}")]
pub struct ParseStateError {
    /// The kind whose states were expected.
    pub kind: ResourceKind,
    /// The refused text (escaped).
    pub given: String,
    /// The canonical names, comma-separated.
    pub allowed: String,
}

/// Lowercases ASCII and drops `-` and `_`, so `Running`, `RUNNING`,
/// `run-ning` compare equal. Whitespace is kept, so it never matches (the
/// contract allows case and `-`/`_` variants only). Returns `None` for
/// non-ASCII input.
fn fold(text: &str) -> Option<String> {
    if !text.is_ascii() {
        return None;
    }
    Some(
        text.bytes()
            .filter(|b| !matches!(b, b'-' | b'_'))
            .map(|b| b.to_ascii_lowercase() as char)
            .collect(),
    )
}

macro_rules! state_enum {
    (
        $(#[$meta:meta])*
        $name:ident, kind = $kind:expr, proto_prefix = $prefix:literal,
        { $( $(#[$vmeta:meta])* $variant:ident ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every state, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The canonical PascalCase name, as written to the store.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => stringify!($variant)),+ }
            }

            /// Parses a state name leniently: any case, `-`/`_`, or the
            /// protobuf enum name (with its `KIND_STATE_` prefix). Whitespace,
            /// even around the name, is refused.
            pub fn parse(text: &str) -> Result<Self, ParseStateError> {
                let error = || ParseStateError {
                    kind: $kind,
                    given: text.escape_debug().to_string(),
                    allowed: Self::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                };
                let folded = fold(text).ok_or_else(error)?;
                let prefix = fold($prefix).unwrap_or_default();
                let bare = folded.strip_prefix(prefix.as_str()).unwrap_or(&folded);
                Self::ALL
                    .iter()
                    .copied()
                    .find(|s| fold(s.as_str()).as_deref() == Some(bare))
                    .ok_or_else(error)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ParseStateError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    };
}

state_enum! {
    /// The state of a container, derived from podman's state map (STATE-MACHINES.md §1).
    ContainerState, kind = ResourceKind::Container, proto_prefix = "CONTAINER_STATE_",
    {
        /// Configured, never started.
        Created,
        /// Runtime set up, main process not started.
        Initialized,
        /// Main process active.
        Running,
        /// Frozen, memory kept.
        Paused,
        /// Terminated normally (exit code 0 or `podman stop`).
        Exited,
        /// Terminated abnormally.
        Dead,
        /// The state cannot be determined: an information failure.
        Unknown,
    }
}

state_enum! {
    /// The state of a model (pod), derived from its containers (STATE-MACHINES.md §2).
    ModelState, kind = ResourceKind::Model, proto_prefix = "MODEL_STATE_",
    {
        /// Initial: no container has started yet.
        Created,
        /// All containers paused.
        Paused,
        /// All containers exited.
        Exited,
        /// A container is dead, or the model's information could not be obtained.
        Dead,
        /// None of the above.
        Running,
    }
}

state_enum! {
    /// The state of a package, derived from its models (STATE-MACHINES.md §3).
    PackageState, kind = ResourceKind::Package, proto_prefix = "PACKAGE_STATE_",
    {
        /// Initial: no models, or all models still Created.
        Idle,
        /// All models paused.
        Paused,
        /// All models exited.
        Exited,
        /// Some, not all, models dead.
        Degraded,
        /// All models dead.
        Error,
        /// None of the above.
        Running,
    }
}

state_enum! {
    /// The state of a scenario, requested by components (STATE-MACHINES.md §4).
    ScenarioState, kind = ResourceKind::Scenario, proto_prefix = "SCENARIO_STATE_",
    {
        /// No record yet: the state on creation.
        Idle,
        /// A condition is registered.
        Waiting,
        /// The condition is met.
        Satisfied,
        /// The policy allowed the action.
        Allowed,
        /// The policy denied the action (terminal unless re-arming is allowed).
        Denied,
        /// The scenario finished (terminal unless re-arming is allowed).
        Completed,
    }
}

impl ModelState {
    /// A model's state before its first record (STATE-MACHINES §2).
    pub const INITIAL: ModelState = ModelState::Created;
}

impl PackageState {
    /// A package's state before its first record (STATE-MACHINES §3).
    pub const INITIAL: PackageState = PackageState::Idle;
}

impl ScenarioState {
    /// A scenario's state before its first record (STATE-MACHINES §4).
    pub const INITIAL: ScenarioState = ScenarioState::Idle;
}

/// A state of any kind, tagged with its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnyState {
    /// A container state.
    Container(ContainerState),
    /// A model state.
    Model(ModelState),
    /// A package state.
    Package(PackageState),
    /// A scenario state.
    Scenario(ScenarioState),
}

impl AnyState {
    /// The kind of resource this state belongs to.
    pub fn kind(self) -> ResourceKind {
        match self {
            AnyState::Container(_) => ResourceKind::Container,
            AnyState::Model(_) => ResourceKind::Model,
            AnyState::Package(_) => ResourceKind::Package,
            AnyState::Scenario(_) => ResourceKind::Scenario,
        }
    }

    /// The state a resource of `kind` has before it has a record: a
    /// scenario or package is Idle, a model Created (STATE-MACHINES §2–§4).
    /// Containers have none: they exist only as reported. Whether a given
    /// resource without a record has it is
    /// [`Snapshot::default_state`](crate::Snapshot::default_state).
    pub fn initial(kind: ResourceKind) -> Option<AnyState> {
        match kind {
            ResourceKind::Container => None,
            ResourceKind::Model => Some(AnyState::Model(ModelState::INITIAL)),
            ResourceKind::Package => Some(AnyState::Package(PackageState::INITIAL)),
            ResourceKind::Scenario => Some(AnyState::Scenario(ScenarioState::INITIAL)),
        }
    }

    /// The canonical name.
    pub fn as_str(self) -> &'static str {
        match self {
            AnyState::Container(s) => s.as_str(),
            AnyState::Model(s) => s.as_str(),
            AnyState::Package(s) => s.as_str(),
            AnyState::Scenario(s) => s.as_str(),
        }
    }

    /// Parses a state name of the given kind leniently.
    pub fn parse(kind: ResourceKind, text: &str) -> Result<Self, ParseStateError> {
        Ok(match kind {
            ResourceKind::Container => AnyState::Container(ContainerState::parse(text)?),
            ResourceKind::Model => AnyState::Model(ModelState::parse(text)?),
            ResourceKind::Package => AnyState::Package(PackageState::parse(text)?),
            ResourceKind::Scenario => AnyState::Scenario(ScenarioState::parse(text)?),
        })
    }
}

impl fmt::Display for AnyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_names_are_pascal_case() {
        assert_eq!(ModelState::Running.as_str(), "Running");
        assert_eq!(PackageState::Degraded.as_str(), "Degraded");
        assert_eq!(ScenarioState::Waiting.to_string(), "Waiting");
        assert_eq!(ContainerState::Initialized.as_str(), "Initialized");
    }

    #[test]
    fn parsing_is_lenient() {
        for text in [
            "Running",
            "running",
            "RUNNING",
            "run-ning",
            "run_ning",
            "MODEL_STATE_RUNNING",
            "model-state-running",
        ] {
            assert_eq!(ModelState::parse(text), Ok(ModelState::Running), "{text}");
        }
        assert_eq!(
            ScenarioState::parse("SCENARIO_STATE_WAITING"),
            Ok(ScenarioState::Waiting)
        );
        assert_eq!(
            PackageState::parse("PACKAGE_STATE_ERROR"),
            Ok(PackageState::Error)
        );
    }

    #[test]
    fn whitespace_is_refused_anywhere() {
        // STATE-MACHINES §6: case, `-`/`_` and the enum names only.
        for text in [
            "Waiting ",
            "waiting\n",
            " Waiting",
            "\tWaiting",
            "Waiting\r\n",
            "Wait ing",
            "SCENARIO_STATE_WAITING ",
            "SCENARIO STATE WAITING",
            " ",
        ] {
            let err = ScenarioState::parse(text).unwrap_err();
            assert_eq!(err.given, text.escape_debug().to_string());
            assert!(err.to_string().contains("allowed: Idle, Waiting"), "{err}");
        }
        assert!(ModelState::parse(" Running").is_err());
        assert!(AnyState::parse(ResourceKind::Package, "error ").is_err());
    }

    #[test]
    fn unknown_names_list_the_allowed_values() {
        let err = ScenarioState::parse("finished").unwrap_err();
        assert_eq!(err.kind, ResourceKind::Scenario);
        assert_eq!(
            err.to_string(),
            "unknown Scenario state 'finished'; allowed: Idle, Waiting, Satisfied, Allowed, Denied, Completed"
        );
        for bad in [
            "",
            "UNSPECIFIED",
            "SCENARIO_STATE_UNSPECIFIED",
            "MODEL_STATE_WAITING",
            "wäiting",
        ] {
            assert!(ScenarioState::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_resource_without_a_record_has_its_initial_state() {
        assert_eq!(
            AnyState::initial(ResourceKind::Scenario),
            Some(AnyState::Scenario(ScenarioState::Idle))
        );
        assert_eq!(
            AnyState::initial(ResourceKind::Package),
            Some(AnyState::Package(PackageState::Idle))
        );
        assert_eq!(
            AnyState::initial(ResourceKind::Model),
            Some(AnyState::Model(ModelState::Created))
        );
        assert_eq!(AnyState::initial(ResourceKind::Container), None);
    }

    #[test]
    fn any_state_parses_by_kind() {
        assert_eq!(
            AnyState::parse(ResourceKind::Package, "error"),
            Ok(AnyState::Package(PackageState::Error))
        );
        assert!(AnyState::parse(ResourceKind::Model, "Degraded").is_err());
    }
}
