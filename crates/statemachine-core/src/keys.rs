//! Store keys (ETCD-CONTRACT.md): state keys other components read, and the
//! StateManager's own bookkeeping keys under a configurable prefix.

use crate::name::ResourceKind;

/// The state key of a resource: `/{kind}/{name}/state`.
pub fn state_key(kind: ResourceKind, name: &str) -> String {
    let segment = kind.as_key_segment();
    let mut key = String::with_capacity(segment.len() + name.len() + 8);
    key.push('/');
    key.push_str(segment);
    key.push('/');
    key.push_str(name);
    key.push_str("/state");
    key
}

/// The prefix of all state keys of a kind: `/{kind}/`.
pub fn state_prefix(kind: ResourceKind) -> String {
    format!("/{}/", kind.as_key_segment())
}

/// Splits a state key into kind and name; `None` for any other key.
pub fn parse_state_key(key: &str) -> Option<(ResourceKind, &str)> {
    let rest = key.strip_prefix('/')?;
    let (segment, rest) = rest.split_once('/')?;
    let name = rest.strip_suffix("/state")?;
    let kind = ResourceKind::from_key_segment(segment)?;
    crate::name::validate(name).ok()?;
    Some((kind, name))
}

/// The bookkeeping keys under the StateManager's prefix (default `/statemanager/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bookkeeping {
    prefix: String,
}

/// The default bookkeeping prefix.
pub const DEFAULT_BOOKKEEPING_PREFIX: &str = "/statemanager/";

impl Default for Bookkeeping {
    fn default() -> Self {
        Self::new(DEFAULT_BOOKKEEPING_PREFIX)
    }
}

impl Bookkeeping {
    /// Bookkeeping under `prefix` (a trailing `/` is added when missing).
    pub fn new(prefix: &str) -> Self {
        let mut prefix = prefix.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Self { prefix }
    }

    /// The prefix itself.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `{prefix}history/{kind}/{name}/`.
    pub fn history_prefix(&self, kind: ResourceKind, name: &str) -> String {
        format!("{}history/{}/{name}/", self.prefix, kind.as_key_segment())
    }

    /// `{prefix}history/{kind}/{name}/{seq}`, the sequence zero-padded so keys sort by it.
    pub fn history_key(&self, kind: ResourceKind, name: &str, seq: u64) -> String {
        format!("{}{seq:020}", self.history_prefix(kind, name))
    }

    /// Splits `{prefix}history/{kind}/{name}/{seq}` into kind, name and
    /// sequence; `None` for any other key.
    pub fn parse_history_key<'k>(&self, key: &'k str) -> Option<(ResourceKind, &'k str, u64)> {
        let rest = key
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix("history/")?;
        let (segment, rest) = rest.split_once('/')?;
        let (name, seq) = rest.rsplit_once('/')?;
        let kind = ResourceKind::from_key_segment(segment)?;
        crate::name::validate(name).ok()?;
        Some((kind, name, seq.parse().ok()?))
    }

    /// The sequence number at the end of a history key.
    pub fn parse_history_seq(key: &str) -> Option<u64> {
        key.rsplit('/').next()?.parse().ok()
    }

    /// `{prefix}history/`: every history entry.
    pub fn all_history_prefix(&self) -> String {
        format!("{}history/", self.prefix)
    }

    /// `{prefix}outbox/`.
    pub fn outbox_prefix(&self) -> String {
        format!("{}outbox/", self.prefix)
    }

    /// `{prefix}outbox/{id}`.
    pub fn outbox_key(&self, id: &str) -> String {
        format!("{}outbox/{id}", self.prefix)
    }

    /// `{prefix}delivered/`.
    pub fn delivered_prefix(&self) -> String {
        format!("{}delivered/", self.prefix)
    }

    /// `{prefix}delivered/{package}`: the last reconcile delivered for it.
    pub fn delivered_key(&self, package: &str) -> String {
        format!("{}delivered/{package}", self.prefix)
    }

    /// `{prefix}recovery/`: every incident.
    pub fn recovery_prefix(&self) -> String {
        format!("{}recovery/", self.prefix)
    }

    /// `{prefix}recovery/{id}`: one incident (RECOVERY.md §1).
    pub fn recovery_key(&self, id: &str) -> String {
        format!("{}recovery/{id}", self.prefix)
    }

    /// `{prefix}alerts/`: every alert.
    pub fn alerts_prefix(&self) -> String {
        format!("{}alerts/", self.prefix)
    }

    /// `{prefix}alerts/{id}`: one alert (RECOVERY.md §6).
    pub fn alert_key(&self, id: &str) -> String {
        format!("{}alerts/{id}", self.prefix)
    }

    /// `{prefix}nodes/`.
    pub fn nodes_prefix(&self) -> String {
        format!("{}nodes/", self.prefix)
    }

    /// `{prefix}nodes/{node}`.
    pub fn node_key(&self, node: &str) -> String {
        format!("{}nodes/{node}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_keys_follow_the_contract() {
        assert_eq!(state_key(ResourceKind::Model, "m"), "/model/m/state");
        assert_eq!(state_key(ResourceKind::Scenario, "s"), "/scenario/s/state");
        for kind in ResourceKind::ALL {
            let key = state_key(kind, "a.b-c");
            assert_eq!(parse_state_key(&key), Some((kind, "a.b-c")));
        }
        for other in [
            "/model/m",
            "/model//state",
            "/volume/v/state",
            "model/m/state",
            "/model/a/b/state",
        ] {
            assert_eq!(parse_state_key(other), None, "{other}");
        }
    }

    #[test]
    fn bookkeeping_keys_live_under_the_prefix() {
        let b = Bookkeeping::new("/sm");
        assert_eq!(b.node_key("n1"), "/sm/nodes/n1");
        assert_eq!(b.outbox_key("7"), "/sm/outbox/7");
        let key = b.history_key(ResourceKind::Package, "p", 42);
        assert_eq!(key, "/sm/history/package/p/00000000000000000042");
        assert_eq!(Bookkeeping::parse_history_seq(&key), Some(42));
        assert!(b.history_key(ResourceKind::Package, "p", 9) < key);
        assert_eq!(
            b.parse_history_key(&key),
            Some((ResourceKind::Package, "p", 42))
        );
        for other in [
            "/sm/nodes/n1",
            "/sm/history/package/p",
            "/sm/history/volume/v/00000000000000000001",
            "/sm/history/package/a/b/00000000000000000001",
            "/sm/history/package/p/x",
            "/other/history/package/p/00000000000000000001",
        ] {
            assert_eq!(b.parse_history_key(other), None, "{other}");
        }
    }
}
