//! Planning a node's full container report: the report's shape, the
//! mapping of containers to models, the difference to the node's stored
//! record (changed, vanished and moved containers), then the cascade.

use super::cascade::{Cascade, NodeSlots, Slot};
use super::{Effect, NodeChange, Plan, Reason, reject};
use crate::counting_sort::group_by;
use crate::error::ErrorCode;
use crate::fastmap::{FastMap, FastSet};
use crate::input::NodeReport;
use crate::name::validate;
use crate::record::{NodeContainer, NodeRecord};
use crate::snapshot::{Snapshot, Stamp};
use crate::state::ContainerState;

pub(super) fn plan_report<'a>(s: &'a Snapshot, report: &'a NodeReport, now: i64) -> Plan {
    let node = report.node.as_str();
    if let Err(e) = validate(node) {
        return reject(
            ErrorCode::InvalidRequest,
            format!("invalid node_name: {e}"),
            "",
        );
    }
    let mapping = &s.config.model_mapping;
    // Effects of invalid model names (no allocation while there are none).
    let mut invalid_names: Vec<Effect> = Vec::new();
    let mut present: FastSet<&str> = FastSet::default();
    present.reserve(report.containers.len());
    let mut entries = Vec::with_capacity(report.containers.len());
    for (i, c) in report.containers.iter().enumerate() {
        let Some(raw) = c.names.first() else {
            return reject(
                ErrorCode::InvalidRequest,
                format!(
                    "container {i} (id '{}') of node '{node}' has no name",
                    c.id.escape_debug()
                ),
                "",
            );
        };
        let name = raw.strip_prefix('/').unwrap_or(raw);
        if let Err(e) = validate(name) {
            return reject(
                ErrorCode::InvalidRequest,
                format!("container {i} of node '{node}': invalid name: {e}"),
                "",
            );
        }
        if !present.insert(name) {
            return reject(
                ErrorCode::InvalidRequest,
                format!("container '{name}' appears twice in the report of node '{node}'"),
                "",
            );
        }
        let state = c.container_state();
        // (Empty maps are common: skip hashing the keys at all.)
        let model = s.topology.model_for_container(
            name,
            |k| {
                (!c.annotations.is_empty())
                    .then(|| c.annotations.get(k))
                    .flatten()
                    .map(String::as_str)
            },
            |k| {
                (!c.config.is_empty())
                    .then(|| c.config.get(k))
                    .flatten()
                    .map(String::as_str)
            },
            mapping,
            |source, key, value| {
                invalid_names.push(Effect::InvalidModelName {
                    node: node.to_owned(),
                    container: name.to_owned(),
                    source,
                    key: key.to_owned(),
                    value: value.to_owned(),
                })
            },
        );
        entries.push((name, state, model));
    }

    let mut cascade = Cascade::new(s, now);
    cascade.effects.append(&mut invalid_names);
    let prev = cascade.node_entry(node);
    let prev_record = prev.map(|e| &e.record).filter(|r| !r.containers.is_empty());
    // The new record, borrowed.
    let mut record: Vec<Slot<'a>> = Vec::with_capacity(entries.len());
    // Affected models in first-seen order, deduplicated.
    let mut affected: Vec<&'a str> = Vec::new();
    let mut affected_index: FastMap<&'a str, usize> = FastMap::default();
    let mut affect = |model: &'a str| {
        affected_index.entry(model).or_insert_with(|| {
            affected.push(model);
            affected.len() - 1
        });
    };
    // Entries equal to the stored record's; the record is rewritten only
    // when something differs, so a node's periodic report of unchanged
    // containers writes nothing to the store.
    let mut same = 0usize;
    let mut changed = false;
    // Previous entries seen again; when all are, none vanished.
    let mut matched = 0usize;
    for (name, state, model) in entries {
        let prev_entry = prev_record.and_then(|r| r.containers.get(name));
        matched += usize::from(prev_entry.is_some());
        if let Some(prev_entry) = prev_entry
            && Some(prev_entry.model.as_str()) != model
        {
            affect(prev_entry.model.as_str());
        }
        let Some(model) = model else {
            cascade.effects.push(Effect::UnmappedContainer {
                node: node.to_owned(),
                container: name.to_owned(),
            });
            cascade.set_container(name, None, Reason::Unmapped);
            changed |= prev_entry.is_some();
            continue;
        };
        // STATE-MACHINES §2: Unknown is an information failure; keep its start.
        let failure_since_ns = (state == ContainerState::Unknown)
            .then(|| prev_entry.and_then(|e| e.failure_since_ns).unwrap_or(now));
        match prev_entry {
            Some(p) if p.model == model && !p.missing && p.failure_since_ns == failure_since_ns => {
                same += 1
            }
            _ => changed = true,
        }
        record.push(Slot {
            model,
            container: name,
            state: Some(state),
            failure_since_ns,
        });
        cascade.set_container(name, Some(state), Reason::Derived);
        affect(model);
    }
    if let Some(prev_record) = prev_record.filter(|r| r.containers.len() > matched) {
        // Sorted, so a plan does not depend on the hash order.
        let mut gone: Vec<(&'a String, &'a NodeContainer)> = prev_record
            .containers
            .iter()
            .filter(|(name, _)| !present.contains(name.as_str()))
            .collect();
        gone.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (name, entry) in gone {
            affect(entry.model.as_str());
            // Moved, not vanished: another node reports it now (offloading).
            // Container keys are not scoped by node, so its key stays.
            if cascade.reported_elsewhere(node, name, &entry.model) {
                continue;
            }
            cascade.set_container(name, None, Reason::Vanished);
            // Vanishing is a failure only while a definition references the model.
            if s.topology.is_model_referenced(&entry.model) {
                let since = entry.failure_since_ns.unwrap_or(now);
                if entry.missing && entry.failure_since_ns == Some(since) {
                    same += 1;
                }
                record.push(Slot {
                    model: entry.model.as_str(),
                    container: name,
                    state: None,
                    failure_since_ns: Some(since),
                });
            }
        }
    }
    let unchanged =
        !changed && same == prev_record.map_or(0, |r| r.containers.len()) && same == record.len();
    let node_change = (!unchanged).then(|| NodeChange {
        node: node.to_owned(),
        old: prev_record.cloned(),
        new: (!record.is_empty()).then(|| NodeRecord {
            containers: record
                .iter()
                .map(|slot| {
                    let entry = NodeContainer {
                        model: slot.model.to_owned(),
                        missing: slot.state.is_none(),
                        failure_since_ns: slot.failure_since_ns,
                    };
                    (slot.container.to_owned(), entry)
                })
                .collect(),
        }),
        old_stamp: prev.map_or(Stamp::ABSENT, |e| e.stamp),
    });
    // (Every slot's model is in `affected_index`.)
    let (slots, starts) = group_by(record, affected.len(), |slot| {
        affected_index.get(slot.model).copied().unwrap_or(0)
    });
    let mut by_model = FastMap::default();
    by_model.reserve(affected.len());
    for (model, &i) in &affected_index {
        if starts[i] < starts[i + 1] {
            by_model.insert(*model, (starts[i], starts[i + 1]));
        }
    }
    cascade.node = Some(NodeSlots {
        node,
        slots,
        by_model,
    });
    cascade.evaluate_models(affected);
    let message = format!(
        "node '{node}': {} containers, {} state changes",
        report.containers.len(),
        cascade.changes.len()
    );
    cascade.finish(
        message,
        node_change.into_iter().collect(),
        Some((node.to_owned(), now)),
    )
}

impl Cascade<'_> {
    /// Whether a node other than `node` currently reports `container` of `model`.
    fn reported_elsewhere(&mut self, node: &str, container: &str, model: &str) -> bool {
        let s = self.s;
        s.model_index.get(model).is_some_and(|entries| {
            entries.iter().any(|(other, c)| {
                other != node
                    && c == container
                    && self
                        .node_entry(other)
                        .and_then(|e| e.record.containers.get(c))
                        .is_some_and(|e| !e.missing && e.model == model)
            })
        })
    }
}
