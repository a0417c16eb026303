//! History reads, served from the store (history is not cached).

use std::sync::Arc;
use std::time::Duration;

use state_store::{StateStore, get_all};
use statemachine_core::ResourceKind;
use statemachine_core::keys::Bookkeeping;
use statemachine_core::record::HistoryEntry;

use crate::api::{EngineError, HistoryQuery};

/// The default number of history entries a query returns.
pub const DEFAULT_HISTORY_LIMIT: usize = 100;

/// Reads a resource's history from the store.
pub(crate) struct HistoryReader {
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) keys: Bookkeeping,
    pub(crate) timeout: Duration,
}

impl HistoryReader {
    pub(crate) async fn read(
        &self,
        kind: ResourceKind,
        name: &str,
        query: HistoryQuery,
    ) -> Result<Vec<HistoryEntry>, EngineError> {
        statemachine_core::name::validate(name).map_err(|e| EngineError::Invalid(e.to_string()))?;
        let prefix = self.keys.history_prefix(kind, name);
        let read = get_all(self.store.as_ref(), &prefix, 1000);
        let (kvs, _) = tokio::time::timeout(self.timeout, read)
            .await
            .map_err(|_| EngineError::Timeout(self.timeout))?
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        let mut entries: Vec<(u64, HistoryEntry)> = kvs
            .iter()
            .filter_map(|kv| {
                let seq = Bookkeeping::parse_history_seq(&kv.key)?;
                match HistoryEntry::decode(&kv.value) {
                    Ok(entry) => Some((seq, entry)),
                    Err(error) => {
                        tracing::warn!(key = %kv.key, %error, "skipping an unreadable history entry");
                        None
                    }
                }
            })
            .filter(|(_, e)| query.start_ns == 0 || e.at_ns >= query.start_ns)
            .filter(|(_, e)| query.end_ns == 0 || e.at_ns <= query.end_ns)
            .collect();
        entries.sort_by_key(|(seq, _)| *seq);
        let limit = if query.limit == 0 {
            DEFAULT_HISTORY_LIMIT
        } else {
            query.limit
        };
        let skip = entries.len().saturating_sub(limit);
        Ok(entries.into_iter().skip(skip).map(|(_, e)| e).collect())
    }
}
