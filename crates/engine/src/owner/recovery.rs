//! The owner's side of self-healing: a package entering Error opens its
//! PackageError incident in the same transaction (or joins the open one,
//! or, while recovery is held, asks for nothing); the healer's notes keep
//! that knowledge current; the context of actions and ForceSynchronization
//! come from the cache.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use state_store::Op;
use statemachine_core::healing::{Incident, IssueType, RecoveryAction};
use statemachine_core::record::{OutboxRecord, StepCall};
use statemachine_core::{Affected, AnyState, ModelState, PackageState, ResourceKind};

use super::Owner;
use super::pack::{Target, Unit};
use crate::healing::healer::{ActionContext, RecoveryNote};

/// What the owner knows of a package's recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Guard {
    /// An incident is open: an entry into Error joins it.
    Open(String),
    /// No automatic recovery (failed or isolated) until the healer releases it.
    Held,
}

/// What an entry's reconcile record becomes.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Decision {
    /// Written as planned (an entry into Degraded, or into Error that
    /// joins an open incident).
    Plain(OutboxRecord),
    /// Joins this open incident: written as planned.
    Join(OutboxRecord, String),
    /// Opens this incident: its first step is the record.
    Open(OutboxRecord, Box<Incident>),
    /// Recovery is held: nothing is written.
    Skip,
}

impl Owner {
    /// The healer's note about a package's incident.
    pub(super) fn on_note(&mut self, note: RecoveryNote) {
        match note {
            RecoveryNote::Open { package, id } => {
                self.recovery.insert(package, Guard::Open(id));
            }
            RecoveryNote::Ended { package, id, hold } => {
                let current = self.recovery.get(&package);
                let ours = id.is_empty()
                    || matches!(current, Some(Guard::Open(open)) if *open == id)
                    || current.is_none();
                if hold {
                    self.recovery.insert(package, Guard::Held);
                } else if ours {
                    self.recovery.remove(&package);
                }
            }
            RecoveryNote::Released { package } => {
                if self.recovery.get(&package) == Some(&Guard::Held) {
                    self.recovery.remove(&package);
                }
            }
        }
    }

    /// What a planned reconcile record becomes (the same answer when the
    /// atoms are built and when the commit is finished: nothing changes
    /// `recovery` while a commit is in flight).
    pub(super) fn decide(&self, record: &OutboxRecord) -> Decision {
        match self.recovery.get(&record.package) {
            Some(Guard::Held) => Decision::Skip,
            Some(Guard::Open(id)) => Decision::Join(record.clone(), id.clone()),
            None if record.package_state == PackageState::Error.as_str() => {
                let strategy = self.config.healing.strategies.get(IssueType::PackageError);
                let res = (ResourceKind::Package, record.package.clone());
                let id = crate::healing::incident_id(record.at_ns, &res);
                let mut incident = Incident::open(
                    id.clone(),
                    ResourceKind::Package,
                    record.package.clone(),
                    IssueType::PackageError,
                    strategy,
                    record.at_ns,
                );
                incident.acted(strategy, record.at_ns);
                let mut record = record.clone();
                record.step = Some(StepCall {
                    incident: id,
                    step: 0,
                    call: 0,
                    action: RecoveryAction::Restart,
                    offload: None,
                });
                Decision::Open(record, Box::new(incident))
            }
            None => Decision::Plain(record.clone()),
        }
    }

    /// The units a planned reconcile record writes: its outbox record and,
    /// when it opens one, the incident.
    pub(super) fn reconcile_units(&self, record: &OutboxRecord) -> Vec<Unit> {
        let put = |key: String, value: Vec<u8>| Unit {
            guard: None,
            op: Op::Put { key, value },
            target: Target::Other,
        };
        match self.decide(record) {
            Decision::Skip => Vec::new(),
            Decision::Plain(record) | Decision::Join(record, _) => {
                vec![put(self.keys.outbox_key(&record.id()), record.encode())]
            }
            Decision::Open(record, incident) => vec![
                put(self.keys.outbox_key(&record.id()), record.encode()),
                put(self.keys.recovery_key(&incident.id), incident.encode()),
            ],
        }
    }

    /// The package and model states loaded, for the healer's start.
    pub(crate) fn recovered_states(&self) -> Vec<((ResourceKind, String), AnyState)> {
        [ResourceKind::Package, ResourceKind::Model]
            .into_iter()
            .flat_map(|kind| {
                self.snapshot
                    .states(kind)
                    .into_iter()
                    .map(move |(name, state)| ((kind, name.to_owned()), state))
            })
            .collect()
    }

    /// What a recovery action needs to know of a resource.
    pub(super) fn action_context(&self, kind: ResourceKind, name: &str) -> ActionContext {
        let topology = self.snapshot.topology();
        let state = self.snapshot.state(kind, name);
        let package = match kind {
            ResourceKind::Package => Some(name.to_owned()),
            ResourceKind::Model => topology.packages_of(name).next().cloned(),
            _ => None,
        };
        let known = state.is_some() || self.snapshot.is_known(kind, name);
        let scenarios: Vec<String> = package
            .as_deref()
            .map(|p| {
                topology
                    .scenarios()
                    .filter(|s| s.target.as_ref().is_some_and(|t| t.as_str() == p))
                    .map(|s| s.name.as_str().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        let models: Vec<String> = match kind {
            ResourceKind::Model => vec![name.to_owned()],
            _ => package
                .as_deref()
                .map(|p| {
                    topology
                        .models_of(p)
                        .map(|m| m.as_str().to_owned())
                        .collect()
                })
                .unwrap_or_default(),
        };
        // Where each model's containers were last reported.
        let mut node_of: HashMap<&str, &str> = HashMap::new();
        for (node, entry) in self.snapshot.nodes() {
            for container in entry.record.containers.values() {
                node_of
                    .entry(container.model.as_str())
                    .or_insert(node.as_str());
            }
        }
        let model_states: Vec<AnyState> = models
            .iter()
            .map(|m| {
                self.snapshot
                    .state(ResourceKind::Model, m)
                    .unwrap_or(AnyState::Model(ModelState::Created))
            })
            .collect();
        let dead_models = models
            .iter()
            .zip(&model_states)
            .filter(|(_, s)| **s == AnyState::Model(ModelState::Dead))
            .filter_map(|(m, _)| Some((m.clone(), node_of.get(m.as_str())?.to_string())))
            .collect();
        let reported = models.iter().any(|m| node_of.contains_key(m.as_str()));
        let now = self.clock.now_ns();
        let within =
            i64::try_from(self.config.healing.live_node_within.as_nanos()).unwrap_or(i64::MAX);
        let live_nodes: BTreeSet<String> = self
            .snapshot
            .nodes()
            .filter(|(_, e)| {
                e.last_seen_ns
                    .is_some_and(|t| now.saturating_sub(t) <= within)
            })
            .map(|(n, _)| n.clone())
            .collect();
        let mut annotations = BTreeMap::new();
        for model in &models {
            if let Some(def) = topology.model(model) {
                for (k, v) in &def.annotations {
                    annotations.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
        ActionContext {
            known,
            state,
            package,
            scenarios,
            dead_models,
            live_nodes: live_nodes.into_iter().collect(),
            annotations,
            model_states,
            reported,
        }
    }

    /// What ForceSynchronization re-derives for a resource: a package
    /// (with `deep`, its models too), a model (and its packages), a
    /// scenario's package (only with `deep`: a scenario's own state is
    /// requested, never derived).
    pub(super) fn sync_scope(&self, kind: ResourceKind, name: &str, deep: bool) -> Affected {
        let topology = self.snapshot.topology();
        let mut affected = Affected::default();
        let add_package = |affected: &mut Affected, package: &str| {
            affected.packages.insert(package.to_owned());
            if deep {
                affected
                    .models
                    .extend(topology.models_of(package).map(|m| m.as_str().to_owned()));
            }
        };
        match kind {
            ResourceKind::Package => add_package(&mut affected, name),
            ResourceKind::Model => {
                affected.models.insert(name.to_owned());
                affected
                    .packages
                    .extend(topology.packages_of(name).cloned());
            }
            ResourceKind::Scenario if deep => {
                if let Some(target) = topology.scenario(name).and_then(|s| s.target.clone()) {
                    add_package(&mut affected, target.as_str());
                }
            }
            _ => {}
        }
        affected
    }
}
