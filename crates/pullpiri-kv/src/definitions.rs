//! Definitions, from the service into our store.
//!
//! Every `poll` the task reads each definition prefix from the service
//! (GetByPrefix) and our store's keys under it, and applies the difference to
//! our store: changed and added keys are put, keys the service does not have
//! are deleted. The engine watches these prefixes in our store, so it sees the
//! changes as it would see them from etcd. The service is authoritative for
//! the prefixes, but only what it answered counts: a prefix whose read failed
//! is left alone, so an unreachable service never deletes a definition.
//!
//! Each write is guarded by the `mod_revision` it was planned from: a key
//! changed in our store meanwhile fails the batch, and the next poll plans
//! again from what is there.

use std::collections::BTreeMap;
use std::sync::Arc;

use state_store::{Batch, KeyValue, StoreError, get_all};
use tracing::{debug, info};

use crate::shared::{Shared, shown};
use crate::shutdown::Shutdown;
use crate::{DEFINITION_PREFIXES, STORE_PAGE_SIZE, SyncError};

/// Polls until shutdown: every `poll` after a round that succeeded or met a
/// concurrent writer, after a growing back-off (never shorter than `poll`)
/// after a failed one.
pub(crate) async fn run(shared: Arc<Shared>, mut shutdown: Shutdown) {
    let mut backoff = shared.backoff();
    loop {
        let Some(round) = shutdown.run(poll(&shared)).await else {
            return;
        };
        let delay = match round {
            Round::Synced | Round::Conflict => {
                backoff.reset();
                shared.config.poll
            }
            Round::Failed => backoff.next_delay().max(shared.config.poll),
        };
        if shutdown.sleep(delay).await {
            return;
        }
    }
}

/// How a round over the definition prefixes ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// Every prefix was read and applied.
    Synced,
    /// A key changed in our store while the round wrote it (a guard did not
    /// hold); the next poll plans again. Nothing failed.
    Conflict,
    /// The service or our store failed.
    Failed,
}

/// One round over every prefix. A failure ends the round: the next prefix
/// would most likely fail alike.
async fn poll(shared: &Shared) -> Round {
    for prefix in DEFINITION_PREFIXES {
        match sync_prefix(shared, prefix).await {
            Ok(()) => {}
            Err(SyncError::Store(StoreError::GuardFailed { .. })) => return Round::Conflict,
            Err(error) => {
                // The failure is already counted and logged where it happened.
                debug!("definitions under '{prefix}' not synced this round: {error}");
                return Round::Failed;
            }
        }
    }
    shared.stats.synced_now();
    Round::Synced
}

/// Reads `prefix` on both sides and applies the difference to our store.
async fn sync_prefix(shared: &Shared, prefix: &str) -> Result<(), SyncError> {
    let theirs: BTreeMap<String, String> = shared
        .observe(shared.client.get_by_prefix(prefix).await)?
        .into_iter()
        .collect();
    let (ours, _) = shared.store(
        "reading definitions",
        get_all(shared.store.as_ref(), prefix, STORE_PAGE_SIZE).await,
    )?;
    let plan = plan_definitions(
        &theirs,
        &ours,
        shared.config.store_batch_ops,
        shared.config.store_batch_bytes,
    );
    if plan.batches.is_empty() {
        return Ok(());
    }
    for batch in plan.batches {
        let ops = batch.ops.len();
        for op in &batch.ops {
            debug!(
                "definition '{}' from the RocksDbService: {}",
                shown(op.key()),
                match op {
                    state_store::Op::Put { .. } => "put",
                    state_store::Op::Delete { .. } => "deleted",
                }
            );
        }
        shared.store("writing definitions", shared.store.apply(batch).await)?;
        shared.stats.add_definitions_applied(ops);
    }
    info!(
        "definitions under '{prefix}' from the RocksDbService: {} added, {} changed, {} deleted",
        plan.added, plan.changed, plan.deleted
    );
    Ok(())
}

/// The writes that make our definitions under one prefix equal the service's.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct DefinitionPlan {
    /// The writes, in key order, cut to the store's limits; each op guarded by
    /// the revision it was planned from.
    pub(crate) batches: Vec<Batch>,
    /// Keys the service has and we do not.
    pub(crate) added: usize,
    /// Keys whose value differs.
    pub(crate) changed: usize,
    /// Keys we have and the service does not.
    pub(crate) deleted: usize,
}

/// Plans the writes from the service's pairs (`theirs`, one prefix) and our
/// keys under the same prefix (`ours`). Each batch holds at most `max_ops`
/// ops (and as many guards) and at most `max_bytes` of keys and values,
/// except that one op larger than that travels alone.
pub(crate) fn plan_definitions(
    theirs: &BTreeMap<String, String>,
    ours: &[KeyValue],
    max_ops: usize,
    max_bytes: usize,
) -> DefinitionPlan {
    let ours: BTreeMap<&str, &KeyValue> = ours.iter().map(|kv| (kv.key.as_str(), kv)).collect();
    let mut plan = DefinitionPlan::default();
    let mut batcher = Batcher::new(max_ops, max_bytes);
    // Both maps are in key order; one merged walk keeps the plan sorted.
    let mut keys: Vec<&str> = theirs.keys().map(String::as_str).collect();
    keys.extend(ours.keys().filter(|key| !theirs.contains_key(**key)));
    keys.sort_unstable();
    for key in keys {
        match (theirs.get(key), ours.get(key)) {
            (Some(value), None) => {
                plan.added += 1;
                batcher.push(Batch::new().guard(key, 0).put(key, value.as_bytes()));
            }
            (Some(value), Some(kv)) if kv.value != value.as_bytes() => {
                plan.changed += 1;
                batcher.push(
                    Batch::new()
                        .guard(key, kv.mod_revision)
                        .put(key, value.as_bytes()),
                );
            }
            (None, Some(kv)) => {
                plan.deleted += 1;
                batcher.push(Batch::new().guard(key, kv.mod_revision).delete(key));
            }
            _ => {}
        }
    }
    plan.batches = batcher.finish();
    plan
}

/// Packs single-op batches (an op and its guard) into batches within limits.
struct Batcher {
    max_ops: usize,
    max_bytes: usize,
    done: Vec<Batch>,
    current: Batch,
    bytes: usize,
}

impl Batcher {
    fn new(max_ops: usize, max_bytes: usize) -> Self {
        Self {
            max_ops: max_ops.max(1),
            max_bytes,
            done: Vec::new(),
            current: Batch::new(),
            bytes: 0,
        }
    }

    fn push(&mut self, one: Batch) {
        let size: usize = one
            .ops
            .iter()
            .map(|op| match op {
                state_store::Op::Put { key, value } => key.len() + value.len(),
                state_store::Op::Delete { key } => key.len(),
            })
            .sum::<usize>()
            + one
                .guards
                .iter()
                .map(|guard| guard.key.len())
                .sum::<usize>();
        let full = self.current.ops.len() + one.ops.len() > self.max_ops
            || self.current.guards.len() + one.guards.len() > self.max_ops
            || self.bytes + size > self.max_bytes;
        if full && !self.current.ops.is_empty() {
            self.done.push(std::mem::take(&mut self.current));
            self.bytes = 0;
        }
        self.current.guards.extend(one.guards);
        self.current.ops.extend(one.ops);
        self.bytes += size;
    }

    fn finish(mut self) -> Vec<Batch> {
        if !self.current.is_empty() {
            self.done.push(self.current);
        }
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use state_store::{Guard, Op};

    fn ours(list: &[(&str, &str, i64)]) -> Vec<KeyValue> {
        list.iter()
            .map(|(key, value, revision)| KeyValue {
                key: (*key).to_owned(),
                value: value.as_bytes().to_vec(),
                create_revision: *revision,
                mod_revision: *revision,
            })
            .collect()
    }

    fn theirs(list: &[(&str, &str)]) -> BTreeMap<String, String> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_plan_adds_changes_and_deletes_under_guards() {
        let plan = plan_definitions(
            &theirs(&[
                ("Scenario/a", "new"),
                ("Scenario/b", "same"),
                ("Scenario/d", "d"),
            ]),
            &ours(&[
                ("Scenario/a", "old", 5),
                ("Scenario/b", "same", 6),
                ("Scenario/c", "c", 7),
            ]),
            128,
            1 << 20,
        );
        assert_eq!((plan.added, plan.changed, plan.deleted), (1, 1, 1));
        assert_eq!(
            plan.batches,
            vec![Batch {
                guards: vec![
                    Guard {
                        key: "Scenario/a".into(),
                        mod_revision: 5
                    },
                    Guard {
                        key: "Scenario/c".into(),
                        mod_revision: 7
                    },
                    Guard {
                        key: "Scenario/d".into(),
                        mod_revision: 0
                    },
                ],
                ops: vec![
                    Op::Put {
                        key: "Scenario/a".into(),
                        value: b"new".to_vec()
                    },
                    Op::Delete {
                        key: "Scenario/c".into()
                    },
                    Op::Put {
                        key: "Scenario/d".into(),
                        value: b"d".to_vec()
                    },
                ],
            }]
        );
    }

    #[test]
    fn nothing_differs_nothing_is_written() {
        let plan = plan_definitions(
            &theirs(&[("Model/m", "x")]),
            &ours(&[("Model/m", "x", 3)]),
            128,
            1 << 20,
        );
        assert_eq!(plan, DefinitionPlan::default());
    }

    #[test]
    fn large_diffs_are_cut_at_the_store_batch_limit() {
        let many: BTreeMap<String, String> = (0..300)
            .map(|i| (format!("Package/p{i:03}"), "v".to_owned()))
            .collect();
        let plan = plan_definitions(&many, &[], 128, 1 << 20);
        let sizes: Vec<(usize, usize)> = plan
            .batches
            .iter()
            .map(|b| (b.guards.len(), b.ops.len()))
            .collect();
        assert_eq!(sizes, vec![(128, 128), (128, 128), (44, 44)]);
        assert_eq!(plan.added, 300);
        // Every batch passes the store's own check.
        for batch in plan.batches {
            assert!(batch.validated(128).is_ok());
        }
    }

    #[test]
    fn large_values_are_cut_by_bytes_and_a_huge_one_travels_alone() {
        let big = "x".repeat(600);
        let huge = "x".repeat(5000);
        let plan = plan_definitions(
            &theirs(&[
                ("Model/a", &big),
                ("Model/b", &big),
                ("Model/c", &huge),
                ("Model/d", "s"),
            ]),
            &[],
            128,
            1500,
        );
        let keys: Vec<Vec<&str>> = plan
            .batches
            .iter()
            .map(|b| b.ops.iter().map(Op::key).collect())
            .collect();
        assert_eq!(
            keys,
            vec![vec!["Model/a", "Model/b"], vec!["Model/c"], vec!["Model/d"]]
        );
    }
}
