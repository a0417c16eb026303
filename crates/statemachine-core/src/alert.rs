//! Alerts (RECOVERY.md §6), as pure rules: what raising, acknowledging,
//! resolving and expiring do to a set of alert records. The engine stores
//! each record at `{prefix}alerts/{id}` and applies the changes these
//! functions return.
//!
//! - One condition of one resource has at most one open alert (Active or
//!   Acknowledged): raising it again moves its count and updated time.
//! - Status only moves forward: Active → Acknowledged → Resolved or
//!   Expired; Active → Resolved or Expired.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::name::ResourceKind;

/// How bad it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AlertSeverity {
    /// For the record.
    Info,
    /// Needs a look.
    Warning,
    /// Something failed.
    Error,
    /// Automatic recovery gave up or a resource was isolated.
    Critical,
}

/// Where an alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AlertStatus {
    /// Raised, nobody has acknowledged it.
    Active,
    /// An operator has seen it (`AcknowledgeAlert`).
    Acknowledged,
    /// The resource is healthy again.
    Resolved,
    /// Open longer than the alert's time to live.
    Expired,
}

impl AlertStatus {
    /// Active or Acknowledged: the condition still stands.
    pub fn is_open(self) -> bool {
        matches!(self, AlertStatus::Active | AlertStatus::Acknowledged)
    }
}

/// One alert record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Key-safe and time-ordered: `{created_ns:020}-{kind}-{name}-{condition}`.
    pub id: String,
    /// How bad it is (the highest it was raised with while open).
    pub severity: AlertSeverity,
    /// The resource's kind (stored as its key segment, `package`).
    #[serde(with = "kind_segment")]
    pub kind: ResourceKind,
    /// The resource's name.
    pub name: String,
    /// What is wrong, as a stable word (`Flapping`, `RecoveryFailed`, ...):
    /// with the resource, what makes two raises the same alert.
    pub condition: String,
    /// A one-line title.
    pub title: String,
    /// The latest description.
    pub description: String,
    /// When it was raised first (ns).
    pub created_ns: i64,
    /// When it last changed (ns).
    pub updated_ns: i64,
    /// How often it was raised while open.
    pub count: u32,
    /// Where it stands.
    pub status: AlertStatus,
    /// Who acknowledged it, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<Acknowledgement>,
}

/// Who acknowledged an alert, why, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledgement {
    /// Who (an operator, a component).
    pub by: String,
    /// Why, for the record.
    pub reason: String,
    /// When (ns).
    pub at_ns: i64,
}

impl Alert {
    /// Decodes a stored record.
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Encodes the record for the store.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A request to raise an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raise<'a> {
    /// How bad it is.
    pub severity: AlertSeverity,
    /// The resource's kind.
    pub kind: ResourceKind,
    /// The resource's name.
    pub name: &'a str,
    /// What is wrong, as a stable word.
    pub condition: &'a str,
    /// A one-line title.
    pub title: &'a str,
    /// What happened this time.
    pub description: &'a str,
}

/// Why an alert could not be acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertError {
    /// No alert has this id.
    #[error("no alert '{0}'")]
    NotFound(String),
    /// The alert was resolved or expired: there is nothing left to acknowledge.
    #[error("alert '{id}' is {status:?}: only an open alert can be acknowledged")]
    Closed {
        /// The alert.
        id: String,
        /// Where it stands.
        status: AlertStatus,
    },
    /// Acknowledging needs someone who does it.
    #[error("an acknowledgement names who makes it")]
    Anonymous,
}

/// Which alerts [`AlertBook::pending`] lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertFilter {
    /// At least this severity.
    pub min_severity: Option<AlertSeverity>,
    /// Of this kind of resource.
    pub kind: Option<ResourceKind>,
    /// At most this many, newest first (0: all).
    pub limit: usize,
}

/// The alerts known, by id (ids sort by creation time).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertBook {
    alerts: BTreeMap<String, Alert>,
}

impl AlertBook {
    /// A book of the alerts read from the store.
    pub fn new(alerts: impl IntoIterator<Item = Alert>) -> Self {
        Self {
            alerts: alerts.into_iter().map(|a| (a.id.clone(), a)).collect(),
        }
    }

    /// One alert.
    pub fn get(&self, id: &str) -> Option<&Alert> {
        self.alerts.get(id)
    }

    /// The open alert of a resource's condition, if any.
    pub fn open(&self, kind: ResourceKind, name: &str, condition: &str) -> Option<&Alert> {
        self.alerts.values().find(|a| {
            a.status.is_open() && a.kind == kind && a.name == name && a.condition == condition
        })
    }

    /// Raises an alert: a new one, or the open one of the same condition of
    /// the same resource with its count, time, description and (when
    /// higher) severity moved. Returns the record to store.
    pub fn raise(&mut self, raise: &Raise<'_>, now_ns: i64) -> Alert {
        let open = self
            .open(raise.kind, raise.name, raise.condition)
            .map(|a| a.id.clone());
        match open.and_then(|id| self.alerts.get_mut(&id)) {
            Some(alert) => {
                alert.count = alert.count.saturating_add(1);
                alert.updated_ns = now_ns;
                alert.severity = alert.severity.max(raise.severity);
                raise.description.clone_into(&mut alert.description);
                alert.clone()
            }
            None => {
                let mut id = alert_id(now_ns, raise.kind, raise.name, raise.condition);
                // Raised again in the nanosecond it was closed: a new record.
                let base = id.clone();
                let mut n = 1;
                while self.alerts.contains_key(&id) {
                    n += 1;
                    id = format!("{base}-{n}");
                }
                let alert = Alert {
                    id,
                    severity: raise.severity,
                    kind: raise.kind,
                    name: raise.name.to_owned(),
                    condition: raise.condition.to_owned(),
                    title: raise.title.to_owned(),
                    description: raise.description.to_owned(),
                    created_ns: now_ns,
                    updated_ns: now_ns,
                    count: 1,
                    status: AlertStatus::Active,
                    acknowledged: None,
                };
                self.alerts.insert(alert.id.clone(), alert.clone());
                alert
            }
        }
    }

    /// Acknowledges an open alert. Acknowledging an acknowledged one again
    /// records the latest acknowledgement.
    pub fn acknowledge(
        &mut self,
        id: &str,
        by: &str,
        reason: &str,
        now_ns: i64,
    ) -> Result<Alert, AlertError> {
        if by.trim().is_empty() {
            return Err(AlertError::Anonymous);
        }
        let alert = self
            .alerts
            .get_mut(id)
            .ok_or_else(|| AlertError::NotFound(id.to_owned()))?;
        if !alert.status.is_open() {
            return Err(AlertError::Closed {
                id: id.to_owned(),
                status: alert.status,
            });
        }
        alert.status = AlertStatus::Acknowledged;
        alert.updated_ns = now_ns;
        alert.acknowledged = Some(Acknowledgement {
            by: by.to_owned(),
            reason: reason.to_owned(),
            at_ns: now_ns,
        });
        Ok(alert.clone())
    }

    /// The resource is healthy again: its open alerts are resolved.
    /// Returns the records to store.
    pub fn resolve(&mut self, kind: ResourceKind, name: &str, now_ns: i64) -> Vec<Alert> {
        self.close(now_ns, AlertStatus::Resolved, |a| {
            a.kind == kind && a.name == name
        })
    }

    /// Open alerts not updated for `ttl_ns` expire. Returns the records to
    /// store.
    pub fn expire(&mut self, now_ns: i64, ttl_ns: i64) -> Vec<Alert> {
        self.close(now_ns, AlertStatus::Expired, |a| {
            now_ns.saturating_sub(a.updated_ns) >= ttl_ns
        })
    }

    fn close(
        &mut self,
        now_ns: i64,
        status: AlertStatus,
        which: impl Fn(&Alert) -> bool,
    ) -> Vec<Alert> {
        let mut closed = Vec::new();
        for alert in self.alerts.values_mut() {
            if alert.status.is_open() && which(alert) {
                alert.status = status;
                alert.updated_ns = now_ns;
                closed.push(alert.clone());
            }
        }
        closed
    }

    /// Forgets closed alerts beyond the newest `keep` (their records are
    /// deleted); returns their ids. Open alerts are never forgotten.
    pub fn prune(&mut self, keep: usize) -> Vec<String> {
        let closed: Vec<String> = self
            .alerts
            .values()
            .filter(|a| !a.status.is_open())
            .map(|a| a.id.clone())
            .collect();
        let excess = closed.len().saturating_sub(keep);
        let gone: Vec<String> = closed.into_iter().take(excess).collect();
        for id in &gone {
            self.alerts.remove(id);
        }
        gone
    }

    /// The open alerts that pass `filter`, newest first.
    pub fn pending(&self, filter: &AlertFilter) -> Vec<&Alert> {
        let matching = self
            .alerts
            .values()
            .rev()
            .filter(|a| a.status.is_open())
            .filter(|a| filter.min_severity.is_none_or(|min| a.severity >= min))
            .filter(|a| filter.kind.is_none_or(|kind| a.kind == kind));
        match filter.limit {
            0 => matching.collect(),
            limit => matching.take(limit).collect(),
        }
    }
}

/// A resource kind as its key segment (`package`), as the store's keys
/// spell it.
mod kind_segment {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    use crate::name::ResourceKind;

    pub(super) fn serialize<S: Serializer>(kind: &ResourceKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(kind.as_key_segment())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ResourceKind, D::Error> {
        let segment = String::deserialize(d)?;
        ResourceKind::from_key_segment(&segment)
            .ok_or_else(|| D::Error::custom(format!("unknown resource kind '{segment}'")))
    }
}

/// `{created_ns:020}-{kind}-{name}-{condition}`: sorts by creation time and
/// is a valid key segment (names are key-safe; a condition is one word).
fn alert_id(created_ns: i64, kind: ResourceKind, name: &str, condition: &str) -> String {
    let condition: String = condition
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!(
        "{:020}-{}-{name}-{condition}",
        created_ns.max(0),
        kind.as_key_segment()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raise<'a>(name: &'a str, condition: &'a str, severity: AlertSeverity) -> Raise<'a> {
        Raise {
            severity,
            kind: ResourceKind::Package,
            name,
            condition,
            title: "t",
            description: "d",
        }
    }

    #[test]
    fn the_same_condition_of_the_same_resource_is_one_open_alert() {
        let mut book = AlertBook::default();
        let first = book.raise(&raise("p", "Flapping", AlertSeverity::Warning), 10);
        let again = book.raise(&raise("p", "Flapping", AlertSeverity::Critical), 20);
        assert_eq!(first.id, again.id);
        assert_eq!((again.count, again.updated_ns), (2, 20));
        assert_eq!(
            again.severity,
            AlertSeverity::Critical,
            "the highest severity"
        );
        let milder = book.raise(&raise("p", "Flapping", AlertSeverity::Info), 30);
        assert_eq!(milder.severity, AlertSeverity::Critical);
        // Another condition, or another resource: another alert.
        let other = book.raise(&raise("p", "RecoveryFailed", AlertSeverity::Critical), 40);
        let elsewhere = book.raise(&raise("q", "Flapping", AlertSeverity::Warning), 50);
        assert_ne!(other.id, first.id);
        assert_ne!(elsewhere.id, first.id);
        // Once resolved, the same condition opens a new alert.
        assert_eq!(book.resolve(ResourceKind::Package, "p", 60).len(), 2);
        let later = book.raise(&raise("p", "Flapping", AlertSeverity::Warning), 70);
        assert_ne!(later.id, first.id);
        assert_eq!(later.count, 1);
    }

    #[test]
    fn status_only_moves_forward() {
        let mut book = AlertBook::default();
        let id = book.raise(&raise("p", "X", AlertSeverity::Error), 1).id;
        assert_eq!(
            book.acknowledge(&id, "", "seen", 2),
            Err(AlertError::Anonymous)
        );
        assert_eq!(
            book.acknowledge("nope", "op", "seen", 2),
            Err(AlertError::NotFound("nope".into()))
        );
        let acked = book.acknowledge(&id, "op", "looking", 3).unwrap();
        assert_eq!(acked.status, AlertStatus::Acknowledged);
        assert_eq!(
            acked.acknowledged.as_ref().map(|a| a.by.as_str()),
            Some("op")
        );
        // Still open: raising again counts on the acknowledged alert.
        assert_eq!(book.raise(&raise("p", "X", AlertSeverity::Error), 4).id, id);
        assert_eq!(
            book.resolve(ResourceKind::Package, "p", 5)[0].status,
            AlertStatus::Resolved
        );
        assert_eq!(
            book.acknowledge(&id, "op", "late", 6),
            Err(AlertError::Closed {
                id: id.clone(),
                status: AlertStatus::Resolved
            })
        );
        assert!(
            book.expire(i64::MAX, 1).is_empty(),
            "a closed alert stays closed"
        );
    }

    #[test]
    fn open_alerts_expire_after_their_time_to_live_since_the_last_update() {
        let mut book = AlertBook::default();
        book.raise(&raise("a", "X", AlertSeverity::Warning), 100);
        book.raise(&raise("b", "X", AlertSeverity::Warning), 100);
        book.raise(&raise("b", "X", AlertSeverity::Warning), 150);
        let expired = book.expire(200, 100);
        assert_eq!(expired.len(), 1);
        assert_eq!(
            (expired[0].name.as_str(), expired[0].status),
            ("a", AlertStatus::Expired)
        );
        assert_eq!(
            book.expire(250, 100).len(),
            1,
            "b expires 100 after its update"
        );
    }

    #[test]
    fn pending_lists_open_alerts_newest_first_filtered_and_limited() {
        let mut book = AlertBook::default();
        book.raise(&raise("a", "X", AlertSeverity::Info), 1);
        book.raise(&raise("b", "X", AlertSeverity::Critical), 2);
        let mut model = raise("m", "X", AlertSeverity::Warning);
        model.kind = ResourceKind::Model;
        book.raise(&model, 3);
        book.raise(&raise("c", "X", AlertSeverity::Error), 4);
        book.resolve(ResourceKind::Package, "c", 5);
        let names = |filter: AlertFilter| -> Vec<String> {
            book.pending(&filter)
                .iter()
                .map(|a| a.name.clone())
                .collect()
        };
        let cases = [
            (
                "all open, newest first",
                AlertFilter::default(),
                vec!["m", "b", "a"],
            ),
            (
                "at least a warning",
                AlertFilter {
                    min_severity: Some(AlertSeverity::Warning),
                    ..Default::default()
                },
                vec!["m", "b"],
            ),
            (
                "packages only",
                AlertFilter {
                    kind: Some(ResourceKind::Package),
                    ..Default::default()
                },
                vec!["b", "a"],
            ),
            (
                "limited",
                AlertFilter {
                    limit: 1,
                    ..Default::default()
                },
                vec!["m"],
            ),
        ];
        for (case, filter, expected) in cases {
            assert_eq!(names(filter), expected, "{case}");
        }
    }

    #[test]
    fn pruning_forgets_the_oldest_closed_alerts_only() {
        let mut book = AlertBook::default();
        for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
            book.raise(&raise(name, "X", AlertSeverity::Warning), i as i64 + 1);
        }
        book.resolve(ResourceKind::Package, "a", 10);
        book.resolve(ResourceKind::Package, "b", 11);
        book.resolve(ResourceKind::Package, "c", 12);
        let gone = book.prune(1);
        assert_eq!(gone.len(), 2);
        assert!(
            gone[0].contains("-a-") && gone[1].contains("-b-"),
            "{gone:?}"
        );
        assert_eq!(
            book.pending(&AlertFilter::default()).len(),
            1,
            "d stays open"
        );
        assert!(book.prune(0).iter().all(|id| id.contains("-c-")));
    }

    #[test]
    fn records_roundtrip_and_ids_are_key_safe() {
        let mut book = AlertBook::default();
        let alert = book.raise(
            &raise("p.1", "Recovery failed/x", AlertSeverity::Critical),
            7,
        );
        assert_eq!(
            alert.id,
            "00000000000000000007-package-p.1-Recovery_failed_x"
        );
        assert_eq!(Alert::decode(&alert.encode()).unwrap(), alert);
        assert!(Alert::decode(b"{}").is_err());
        // Closed and raised again at the same time: a record of its own.
        book.resolve(ResourceKind::Package, "p.1", 7);
        let again = book.raise(
            &raise("p.1", "Recovery failed/x", AlertSeverity::Critical),
            7,
        );
        assert_eq!(again.id, format!("{}-2", alert.id));
        assert_eq!(
            book.get(&alert.id).map(|a| a.status),
            Some(AlertStatus::Resolved)
        );
        assert_eq!(AlertBook::new([alert.clone()]).get(&alert.id), Some(&alert));
    }

    proptest::proptest! {
        /// Whatever happens, a resource's condition has one open alert at
        /// most, and no alert goes back to an earlier status.
        #[test]
        fn one_open_alert_per_condition_and_no_way_back(
            ops in proptest::collection::vec((0u8..5, 0usize..3, 0usize..2), 0..60)
        ) {
            let names = ["a", "b", "c"];
            let conditions = ["X", "Y"];
            let rank = |s: AlertStatus| match s {
                AlertStatus::Active => 0,
                AlertStatus::Acknowledged => 1,
                AlertStatus::Resolved | AlertStatus::Expired => 2,
            };
            let mut book = AlertBook::default();
            let mut seen: BTreeMap<String, AlertStatus> = BTreeMap::new();
            for (t, (op, n, c)) in ops.into_iter().enumerate() {
                let now = t as i64 * 10;
                match op {
                    0 | 1 => {
                        book.raise(&raise(names[n], conditions[c], AlertSeverity::Warning), now);
                    }
                    2 => {
                        if let Some(id) = book.open(ResourceKind::Package, names[n], conditions[c]).map(|a| a.id.clone()) {
                            book.acknowledge(&id, "op", "", now).unwrap();
                        }
                    }
                    3 => {
                        book.resolve(ResourceKind::Package, names[n], now);
                    }
                    _ => {
                        book.expire(now, 25);
                    }
                }
                for alert in book.alerts.values() {
                    if let Some(before) = seen.insert(alert.id.clone(), alert.status) {
                        proptest::prop_assert!(rank(alert.status) >= rank(before));
                        proptest::prop_assert!(before.is_open() || alert.status == before);
                    }
                }
                for name in names {
                    for condition in conditions {
                        let open = book.alerts.values().filter(|a| {
                            a.status.is_open() && a.name == name && a.condition == condition
                        });
                        proptest::prop_assert!(open.count() <= 1);
                    }
                }
            }
        }
    }
}
