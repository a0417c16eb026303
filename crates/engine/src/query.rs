//! Queries: the state of a resource and listings, answered from the
//! owner's cache (committed states only: the owner answers queries when no
//! commit is in flight), and history reads, served from the store (history
//! is not cached).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use state_store::{StateStore, get_all};
use statemachine_core::keys::Bookkeeping;
use statemachine_core::record::HistoryEntry;
use statemachine_core::{AnyState, ResourceKind, Snapshot};

use crate::api::{EngineError, HistoryQuery, ResourceView};

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
            .map_err(EngineError::from)?;
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

/// The cache a query reads: the snapshot and when each resource last
/// changed since start-up.
pub(crate) struct Cache<'a> {
    pub(crate) snapshot: &'a Snapshot,
    pub(crate) last_change: &'a HashMap<(ResourceKind, String), i64>,
}

impl Cache<'_> {
    pub(crate) fn view(&self, kind: ResourceKind, name: &str) -> Option<ResourceView> {
        let topology = self.snapshot.topology();
        // A known resource without a record has its default state
        // (statemachine-core: one rule for planning and queries).
        let (state, generation) = match self.snapshot.state(kind, name) {
            Some(state) => (state, self.snapshot.stamp(kind, name).stored().unwrap_or(0)),
            None => (self.snapshot.default_state(kind, name)?, 0),
        };
        let state = state.as_str().to_owned();
        let mut metadata = BTreeMap::new();
        match kind {
            ResourceKind::Scenario => {
                if let Some(target) = topology.scenario(name).and_then(|d| d.target.as_ref()) {
                    metadata.insert("target".to_owned(), target.to_string());
                }
            }
            ResourceKind::Package => {
                if let Some(scenario) = topology.scenario_of(name) {
                    metadata.insert("scenario".to_owned(), scenario.clone());
                }
                let models: Vec<&str> = topology.models_of(name).map(|m| m.as_str()).collect();
                if !models.is_empty() {
                    metadata.insert("models".to_owned(), models.join(","));
                }
            }
            ResourceKind::Model => {
                let packages: Vec<&str> = topology.packages_of(name).map(String::as_str).collect();
                if !packages.is_empty() {
                    metadata.insert("packages".to_owned(), packages.join(","));
                }
            }
            ResourceKind::Container => {}
        }
        Some(ResourceView {
            kind,
            name: name.to_owned(),
            state,
            last_transition_ns: self.last_change.get(&(kind, name.to_owned())).copied(),
            generation: generation.max(0),
            metadata,
        })
    }

    pub(crate) fn list(
        &self,
        kind: ResourceKind,
        state: Option<&str>,
        limit: usize,
    ) -> (Vec<ResourceView>, usize) {
        let wanted = state.and_then(|s| AnyState::parse(kind, s).ok());
        if state.is_some() && wanted.is_none() {
            return (Vec::new(), 0);
        }
        let names = self.snapshot.known_names(kind);
        let mut views: Vec<ResourceView> = names
            .iter()
            .filter_map(|name| self.view(kind, name))
            .filter(|v| wanted.is_none_or(|w| w.as_str() == v.state))
            .collect();
        let total = views.len();
        if limit > 0 {
            views.truncate(limit);
        }
        (views, total)
    }
}
