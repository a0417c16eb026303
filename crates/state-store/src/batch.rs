use std::collections::BTreeMap;

use crate::{Revision, StoreError, is_valid_key};

/// A compare guard of a [`Batch`]: the key's `mod_revision` must equal
/// `mod_revision` (0: the key must not exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    /// The guarded key.
    pub key: String,
    /// The expected `mod_revision`; 0 means "absent".
    pub mod_revision: Revision,
}

/// One write of a [`Batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create or replace a key.
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: Vec<u8>,
    },
    /// Delete a key (a no-op when absent).
    Delete {
        /// The key.
        key: String,
    },
}

impl Op {
    /// The key this op writes.
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// Writes applied atomically, all or nothing, if every guard holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Batch {
    /// Conditions checked before anything is written.
    pub guards: Vec<Guard>,
    /// The writes, applied in order.
    pub ops: Vec<Op>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a guard: `key` must have `mod_revision` (0: must be absent).
    pub fn guard(mut self, key: impl Into<String>, mod_revision: Revision) -> Self {
        self.guards.push(Guard {
            key: key.into(),
            mod_revision,
        });
        self
    }

    /// Adds a put.
    pub fn put(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.ops.push(Op::Put {
            key: key.into(),
            value: value.into(),
        });
        self
    }

    /// Adds a delete.
    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.ops.push(Op::Delete { key: key.into() });
        self
    }

    /// `true` when the batch has neither guards nor ops.
    pub fn is_empty(&self) -> bool {
        self.guards.is_empty() && self.ops.is_empty()
    }

    /// What every store does before applying a batch: [`Batch::normalize`],
    /// then the transaction size limit (guards and ops each at most
    /// `max_txn_ops`, as etcd's `--max-txn-ops`), then [`is_valid_key`] for
    /// every key.
    pub fn validated(self, max_txn_ops: usize) -> Result<Batch, StoreError> {
        let batch = self.normalize().map_err(|key| {
            StoreError::invalid_request(format!(
                "the batch has contradicting guards on key '{key}'"
            ))
        })?;
        for count in [batch.guards.len(), batch.ops.len()] {
            if count > max_txn_ops {
                return Err(StoreError::TooLarge {
                    ops: count,
                    limit: max_txn_ops,
                });
            }
        }
        let mut keys = (batch.guards.iter().map(|guard| guard.key.as_str()))
            .chain(batch.ops.iter().map(Op::key));
        if !keys.all(is_valid_key) {
            return Err(StoreError::invalid_request("the batch names an empty key"));
        }
        Ok(batch)
    }

    /// Merges ops and guards that name the same key, since etcd rejects a
    /// transaction that names a key twice.
    ///
    /// For ops the last one wins (a put after a delete is a put, a delete after
    /// a put is a delete), keeping the position of the key's first op. For
    /// guards the first one wins: two guards on one key with different
    /// revisions can never both hold, and that contradiction is kept by
    /// returning the key in `Err` so the caller can report it.
    pub fn normalize(self) -> Result<Batch, String> {
        let mut guards: Vec<Guard> = Vec::with_capacity(self.guards.len());
        let mut guard_index: BTreeMap<String, usize> = BTreeMap::new();
        for guard in self.guards {
            match guard_index.get(&guard.key) {
                Some(&i) if guards[i].mod_revision != guard.mod_revision => {
                    return Err(guard.key);
                }
                Some(_) => {}
                None => {
                    guard_index.insert(guard.key.clone(), guards.len());
                    guards.push(guard);
                }
            }
        }
        let mut ops: Vec<Op> = Vec::with_capacity(self.ops.len());
        let mut op_index: BTreeMap<String, usize> = BTreeMap::new();
        for op in self.ops {
            match op_index.get(op.key()) {
                Some(&i) => ops[i] = op,
                None => {
                    op_index.insert(op.key().to_owned(), ops.len());
                    ops.push(op);
                }
            }
        }
        Ok(Batch { guards, ops })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_keeps_the_last_op_per_key_in_first_position() {
        let batch = Batch::new()
            .put("a", "1")
            .put("b", "1")
            .delete("a")
            .put("a", "3")
            .normalize()
            .unwrap();
        assert_eq!(
            batch.ops,
            vec![
                Op::Put {
                    key: "a".into(),
                    value: b"3".to_vec()
                },
                Op::Put {
                    key: "b".into(),
                    value: b"1".to_vec()
                },
            ]
        );
    }

    #[test]
    fn normalize_merges_equal_guards_and_rejects_contradicting_ones() {
        let ok = Batch::new()
            .guard("k", 3)
            .guard("k", 3)
            .normalize()
            .unwrap();
        assert_eq!(ok.guards.len(), 1);
        assert_eq!(
            Batch::new().guard("k", 3).guard("k", 4).normalize(),
            Err("k".to_owned())
        );
    }
}
