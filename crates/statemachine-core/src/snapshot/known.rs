//! Which resources are known, and the state a known resource has before its
//! first record: one rule for planning and for queries (STATE-MACHINES §5,
//! "Known resources and default states").

use super::Snapshot;
use crate::name::ResourceKind;
use crate::state::AnyState;

impl Snapshot {
    /// The state a resource has while it has no recorded state, or `None`
    /// when it has none (then only a record makes it known):
    ///
    /// - a scenario: Idle, whatever its name: any scenario may be requested
    ///   from Idle, and a never-seen scenario answers Idle (STATE-MACHINES
    ///   §4, WIRE-PROTOCOL);
    /// - a package: Idle while a `Package/` definition exists;
    /// - a model: Created while a definition references it (a `Model/`
    ///   definition or a package listing it) or a node record holds
    ///   containers of it (STATE-MACHINES §5);
    /// - a container: none; a container exists only as reported.
    ///
    /// The recorded state, if any, is not consulted (see [`Self::is_known`]).
    pub fn default_state(&self, kind: ResourceKind, name: &str) -> Option<AnyState> {
        let has_default = match kind {
            ResourceKind::Scenario => true,
            ResourceKind::Package => self.topology.package(name).is_some(),
            ResourceKind::Model => {
                self.topology.is_model_referenced(name) || self.model_index.contains_key(name)
            }
            ResourceKind::Container => false,
        };
        if has_default {
            AnyState::initial(kind)
        } else {
            None
        }
    }

    /// Whether a resource is known: it has a recorded state or a default
    /// state ([`Self::default_state`]), so every known resource has a
    /// state to show. A request for a resource not known is
    /// RESOURCE_NOT_FOUND; a query for one answers "not found".
    pub fn is_known(&self, kind: ResourceKind, name: &str) -> bool {
        self.state_or_default(kind, name).is_some()
    }

    /// The recorded state, or else the default state; `None` exactly when
    /// the resource is not known.
    pub(crate) fn state_or_default(&self, kind: ResourceKind, name: &str) -> Option<AnyState> {
        self.state(kind, name)
            .or_else(|| self.default_state(kind, name))
    }

    /// The known resources of `kind` the snapshot can name, sorted: those
    /// with a recorded state and those with a default state. Any scenario
    /// name is known, but only the recorded and the defined ones are listed.
    pub fn known_names(&self, kind: ResourceKind) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .states(kind)
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        let topology = &self.topology;
        match kind {
            ResourceKind::Scenario => names.extend(topology.scenarios().map(|d| d.name.as_str())),
            ResourceKind::Package => names.extend(topology.packages().map(|d| d.name.as_str())),
            ResourceKind::Model => {
                names.extend(topology.models().map(|d| d.name.as_str()));
                names.extend(
                    topology
                        .packages()
                        .flat_map(|p| p.models.iter().map(|m| m.name.as_str())),
                );
                names.extend(self.model_index.keys().map(String::as_str));
            }
            ResourceKind::Container => {}
        }
        names.sort_unstable();
        names.dedup();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CoreConfig;
    use crate::record::{NodeContainer, NodeRecord};
    use crate::state::{ModelState, PackageState, ScenarioState};

    const S: ResourceKind = ResourceKind::Scenario;
    const P: ResourceKind = ResourceKind::Package;
    const M: ResourceKind = ResourceKind::Model;
    const C: ResourceKind = ResourceKind::Container;

    /// Defined: scenario `s-def`, package `p-def` listing `m-listed`, model
    /// `m-def`. Recorded without a definition: `s-rec`, `p-rec`, `m-rec`,
    /// `c-rec`. Node `n1` holds container `c-idx` of model `m-idx`, which
    /// has no definition and no recorded state.
    fn test_snapshot() -> Snapshot {
        let mut s = Snapshot::new(CoreConfig::default());
        for (key, yaml) in [
            ("Scenario/s-def", "kind: Scenario\nspec:\n  target: p-def\n"),
            (
                "Package/p-def",
                "kind: Package\nspec:\n  models:\n    - name: m-listed\n      node: n1\n",
            ),
            ("Model/m-def", "spec:\n  containers:\n    - name: main\n"),
        ] {
            s.update_definition(key, Some(yaml)).unwrap();
        }
        for (kind, name, state) in [
            (S, "s-rec", "Waiting"),
            (P, "p-rec", "Running"),
            (M, "m-rec", "Running"),
            (C, "c-rec", "Running"),
        ] {
            s.load_state(kind, name, state, 5).unwrap();
        }
        let mut record = NodeRecord::default();
        record.containers.insert(
            "c-idx".to_owned(),
            NodeContainer {
                model: "m-idx".to_owned(),
                missing: false,
                failure_since_ns: None,
            },
        );
        s.load_node("n1", record, 6);
        s
    }

    #[test]
    fn default_states_and_known_resources() {
        let idle = Some(AnyState::Scenario(ScenarioState::Idle));
        let package_idle = Some(AnyState::Package(PackageState::Idle));
        let created = Some(AnyState::Model(ModelState::Created));
        // (kind, name, default state, known)
        let cases = [
            (S, "s-def", idle, true),
            (S, "s-rec", idle, true),
            (S, "never-seen", idle, true),
            (P, "p-def", package_idle, true),
            (P, "p-rec", None, true),
            (P, "ghost", None, false),
            (M, "m-def", created, true),
            (M, "m-listed", created, true),
            // Known only through the model index: containers in a node
            // record, no definition, no recorded state.
            (M, "m-idx", created, true),
            (M, "m-rec", None, true),
            (M, "ghost", None, false),
            (C, "c-rec", None, true),
            // In a node record but without a state key: not known.
            (C, "c-idx", None, false),
            (C, "ghost", None, false),
        ];
        let s = test_snapshot();
        for (kind, name, default, known) in cases {
            assert_eq!(s.default_state(kind, name), default, "{kind} '{name}'");
            assert_eq!(s.is_known(kind, name), known, "{kind} '{name}'");
        }
    }

    #[test]
    fn every_known_name_is_known_and_has_a_state() {
        let s = test_snapshot();
        let cases: [(ResourceKind, &[&str]); 4] = [
            (S, &["s-def", "s-rec"]),
            (P, &["p-def", "p-rec"]),
            (M, &["m-def", "m-idx", "m-listed", "m-rec"]),
            (C, &["c-rec"]),
        ];
        for (kind, expected) in cases {
            let names = s.known_names(kind);
            assert_eq!(names, expected, "{kind}");
            for name in names {
                assert!(s.is_known(kind, name), "{kind} '{name}'");
                assert!(s.state_or_default(kind, name).is_some(), "{kind} '{name}'");
            }
        }
    }

    #[test]
    fn a_model_leaves_the_index_with_its_last_container() {
        let mut s = test_snapshot();
        s.remove_node("n1");
        assert_eq!(s.default_state(M, "m-idx"), None);
        assert!(!s.is_known(M, "m-idx"));
    }
}
