//! Values the StateManager stores under its bookkeeping prefix: node records,
//! history entries, outbox records and delivery markers, encoded as JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::healing::RecoveryAction;
use crate::name::ResourceKind;

/// Container name -> what is known of it (hashed: planning looks up every
/// reported container; stored sorted by name).
pub type NodeContainers =
    std::collections::HashMap<String, NodeContainer, foldhash::fast::RandomState>;

/// What the StateManager remembers of a node's last full report
/// (`/statemanager/nodes/{node}`): its containers, their models and their
/// information failures. Written only when one of these changes, so an
/// unchanged report writes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Container name -> what is known of it.
    #[serde(serialize_with = "sorted", deserialize_with = "unsorted")]
    pub containers: NodeContainers,
}

fn sorted<S: Serializer>(map: &NodeContainers, serializer: S) -> Result<S::Ok, S::Error> {
    map.iter().collect::<BTreeMap<_, _>>().serialize(serializer)
}

fn unsorted<'de, D: Deserializer<'de>>(deserializer: D) -> Result<NodeContainers, D::Error> {
    Ok(
        BTreeMap::<String, NodeContainer>::deserialize(deserializer)?
            .into_iter()
            .collect(),
    )
}

/// One container of a node record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeContainer {
    /// The model the container belongs to.
    pub model: String,
    /// `true` when the container vanished from the node's report while its
    /// model is still referenced (its state key has been removed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub missing: bool,
    /// Since when (ns since the epoch) the container's information could not
    /// be obtained (Unknown, or missing); `None` when it is fine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_since_ns: Option<i64>,
}

impl NodeRecord {
    /// Decodes a stored record.
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Encodes the record for the store.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// One entry of a resource's transition history
/// (`/statemanager/history/{kind}/{name}/{seq}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The state left (`None`: no record before).
    pub from: Option<String>,
    /// The state entered (`None`: the record was removed).
    pub to: Option<String>,
    /// When (ns since the epoch).
    pub at_ns: i64,
    /// Who asked, or `StateManager` for derived changes.
    pub source: String,
    /// The request's transition id, or the StateManager's for derived changes.
    pub transition_id: String,
    /// Why.
    pub reason: String,
    /// How long the resource stayed in `from`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
}

impl HistoryEntry {
    /// Decodes a stored entry.
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Encodes the entry for the store.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A reconcile request committed together with the package state that caused
/// it (`/statemanager/outbox/{id}`), deleted once delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxRecord {
    /// The scenario whose `spec.target` is the package.
    pub scenario: String,
    /// The package that entered the triggering state.
    pub package: String,
    /// The state it entered (`Error`, or `Degraded` when configured).
    pub package_state: String,
    /// When the package entered it (ns since the epoch).
    pub at_ns: i64,
    /// The kind of resource that triggered it (always Package today).
    #[serde(default = "package_kind")]
    pub kind: String,
    /// The incident step this call carries out (`None`: the plain Reconcile
    /// of an entry into a reconcile state that joined an open incident, or
    /// a record written before incidents existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<StepCall>,
}

/// One ActionController call of an incident's step (RECOVERY.md §3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepCall {
    /// The incident's `recovery_id`.
    pub incident: String,
    /// The step's index in the incident's steps.
    pub step: u32,
    /// The call's index within the step (a step may call once per scenario
    /// or per model).
    pub call: u32,
    /// What to call: Restart → `Reconcile`, Recreate → `TriggerAction`,
    /// Relocate → `OffloadModel`.
    pub action: RecoveryAction,
    /// For Relocate: the model and the nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offload: Option<OffloadCall>,
}

/// The model an `OffloadModel` call moves, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffloadCall {
    /// The model.
    pub model: String,
    /// The node it ran on.
    pub source_node: String,
    /// The node it should run on.
    pub target_node: String,
}

fn package_kind() -> String {
    ResourceKind::Package.as_key_segment().to_owned()
}

impl OutboxRecord {
    /// Decodes a stored record.
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Encodes the record for the store.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A key-safe, time-ordered id: `{at_ns:020}-{package}`, with
    /// `-s{step}c{call}` for a call of an incident's step.
    pub fn id(&self) -> String {
        match &self.step {
            None => format!("{:020}-{}", self.at_ns.max(0), self.package),
            Some(call) => format!(
                "{:020}-{}-s{}c{}",
                self.at_ns.max(0),
                self.package,
                call.step,
                call.call
            ),
        }
    }
}

/// The last reconcile delivered for a package (`/statemanager/delivered/{package}`),
/// written in the same transaction that deletes its outbox record: after a
/// crash it tells an entry into Error whose reconcile went out from one
/// whose reconcile was lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// The delivered outbox record's id.
    pub id: String,
    /// When the package entered the state the reconcile was for (ns).
    pub at_ns: i64,
    /// When the ActionController took it (ns).
    pub delivered_ns: i64,
}

impl DeliveryRecord {
    /// The marker of a delivered outbox record.
    pub fn of(record: &OutboxRecord, delivered_ns: i64) -> Self {
        Self {
            id: record.id(),
            at_ns: record.at_ns,
            delivered_ns,
        }
    }

    /// Decodes a stored marker.
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Encodes the marker for the store.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_roundtrip_and_stay_compact() {
        let mut record = NodeRecord::default();
        record.containers.insert(
            "c0".into(),
            NodeContainer {
                model: "m".into(),
                missing: true,
                failure_since_ns: Some(7),
            },
        );
        record.containers.insert(
            "c1".into(),
            NodeContainer {
                model: "m".into(),
                missing: false,
                failure_since_ns: None,
            },
        );
        let bytes = record.encode();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"containers":{"c0":{"model":"m","missing":true,"failure_since_ns":7},"c1":{"model":"m"}}}"#,
            "sorted by name, defaults omitted"
        );
        assert_eq!(NodeRecord::decode(&bytes).unwrap(), record);
        assert!(NodeRecord::decode(b"{not json").is_err());

        let outbox = OutboxRecord {
            scenario: "s".into(),
            package: "p".into(),
            package_state: "Error".into(),
            at_ns: 5,
            kind: "package".into(),
            step: None,
        };
        assert_eq!(OutboxRecord::decode(&outbox.encode()).unwrap(), outbox);
        assert_eq!(outbox.id(), "00000000000000000005-p");
        let call = OutboxRecord {
            step: Some(StepCall {
                incident: "i".into(),
                step: 2,
                call: 1,
                action: RecoveryAction::Relocate,
                offload: Some(OffloadCall {
                    model: "m".into(),
                    source_node: "a".into(),
                    target_node: "b".into(),
                }),
            }),
            ..outbox.clone()
        };
        assert_eq!(OutboxRecord::decode(&call.encode()).unwrap(), call);
        assert_eq!(call.id(), "00000000000000000005-p-s2c1", "one key per call");

        let delivered = DeliveryRecord::of(&outbox, 9);
        assert_eq!(
            String::from_utf8(delivered.encode()).unwrap(),
            r#"{"id":"00000000000000000005-p","at_ns":5,"delivered_ns":9}"#
        );
        assert_eq!(
            DeliveryRecord::decode(&delivered.encode()).unwrap(),
            delivered
        );
        assert!(DeliveryRecord::decode(b"[]").is_err());
    }
}
