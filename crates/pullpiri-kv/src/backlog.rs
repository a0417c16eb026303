//! The state changes waiting to be sent to the service, coalesced by key.
//!
//! Each key is queued once, with its newest change, at the position of that
//! change: a key written again moves behind the keys written since, so the
//! queue stays in commit order of the newest changes, and a key put then
//! deleted leaves only its delete. Entries leave the queue only once the
//! service has them ([`Backlog::ack`]); a change that arrived while its key
//! was being sent stays queued.

use std::collections::{BTreeMap, HashMap};

/// The newest change of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// Write this value (already in the service's format).
    Put(String),
    /// Delete the key.
    Delete,
}

/// What to send next: a run of puts (one BatchPut) or one delete (the service
/// deletes one key per call).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// Key-value pairs for one BatchPut, in queue order.
    Puts(Vec<(String, String)>),
    /// One key to delete.
    Delete(String),
}

/// A sent entry: its key and the sequence number it was queued under.
pub(crate) type Ticket = (String, u64);

/// The coalescing queue.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    /// Sequence number → key, in queue order.
    order: BTreeMap<u64, String>,
    /// Key → (sequence number, newest change).
    entries: HashMap<String, (u64, Change)>,
    next_seq: u64,
}

impl Backlog {
    /// Queues `change` of `key`, replacing an older queued change of it.
    pub(crate) fn push(&mut self, key: String, change: Change) {
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some((old, _)) = self.entries.insert(key.clone(), (seq, change)) {
            self.order.remove(&old);
        }
        self.order.insert(seq, key);
    }

    /// How many keys are queued.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// `true` when nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The front of the queue: the longest run of puts (at most `max_puts`,
    /// at least 1) or a single delete, with the tickets to [`ack`](Self::ack)
    /// once it was delivered. `None` when the queue is empty.
    pub(crate) fn next_chunk(&self, max_puts: usize) -> Option<(Chunk, Vec<Ticket>)> {
        let mut pairs = Vec::new();
        let mut tickets = Vec::new();
        for (&seq, key) in &self.order {
            let Some((_, change)) = self.entries.get(key) else {
                continue;
            };
            match change {
                Change::Delete if pairs.is_empty() => {
                    return Some((Chunk::Delete(key.clone()), vec![(key.clone(), seq)]));
                }
                Change::Delete => break,
                Change::Put(value) => {
                    pairs.push((key.clone(), value.clone()));
                    tickets.push((key.clone(), seq));
                    if pairs.len() >= max_puts.max(1) {
                        break;
                    }
                }
            }
        }
        (!pairs.is_empty()).then_some((Chunk::Puts(pairs), tickets))
    }

    /// Removes the delivered entries, unless their key was queued again
    /// since (a newer change is still to be sent).
    pub(crate) fn ack(&mut self, tickets: &[Ticket]) {
        for (key, seq) in tickets {
            if self
                .entries
                .get(key)
                .is_some_and(|(queued, _)| queued == seq)
            {
                self.entries.remove(key);
                self.order.remove(seq);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(value: &str) -> Change {
        Change::Put(value.to_owned())
    }

    fn pairs(list: &[(&str, &str)]) -> Chunk {
        Chunk::Puts(
            list.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    /// Sends everything, chunk by chunk, acknowledging each.
    fn drain(backlog: &mut Backlog, max_puts: usize) -> Vec<Chunk> {
        let mut sent = Vec::new();
        while let Some((chunk, tickets)) = backlog.next_chunk(max_puts) {
            backlog.ack(&tickets);
            sent.push(chunk);
        }
        sent
    }

    #[test]
    fn puts_run_together_and_deletes_go_alone_in_commit_order() {
        let mut backlog = Backlog::default();
        backlog.push("a".into(), put("1"));
        backlog.push("b".into(), put("1"));
        backlog.push("c".into(), Change::Delete);
        backlog.push("d".into(), put("1"));
        assert_eq!(backlog.len(), 4);
        assert_eq!(
            drain(&mut backlog, 10),
            vec![
                pairs(&[("a", "1"), ("b", "1")]),
                Chunk::Delete("c".into()),
                pairs(&[("d", "1")]),
            ]
        );
        assert!(backlog.is_empty());
    }

    #[test]
    fn a_newer_change_replaces_the_queued_one_and_moves_back() {
        let mut backlog = Backlog::default();
        backlog.push("a".into(), put("1"));
        backlog.push("b".into(), put("1"));
        backlog.push("a".into(), put("2"));
        backlog.push("b".into(), Change::Delete);
        assert_eq!(backlog.len(), 2);
        assert_eq!(
            drain(&mut backlog, 10),
            vec![pairs(&[("a", "2")]), Chunk::Delete("b".into())]
        );
    }

    #[test]
    fn a_key_put_then_deleted_leaves_only_its_delete() {
        let mut backlog = Backlog::default();
        backlog.push("k".into(), put("1"));
        backlog.push("k".into(), Change::Delete);
        assert_eq!(drain(&mut backlog, 10), vec![Chunk::Delete("k".into())]);
    }

    #[test]
    fn runs_of_puts_are_cut_at_the_batch_size() {
        let mut backlog = Backlog::default();
        for i in 0..5 {
            backlog.push(format!("k{i}"), put("v"));
        }
        let sizes: Vec<usize> = drain(&mut backlog, 2)
            .into_iter()
            .map(|chunk| match chunk {
                Chunk::Puts(p) => p.len(),
                Chunk::Delete(_) => 0,
            })
            .collect();
        assert_eq!(sizes, vec![2, 2, 1]);
        backlog.push("x".into(), put("v"));
        assert!(matches!(backlog.next_chunk(0), Some((Chunk::Puts(p), _)) if p.len() == 1));
    }

    #[test]
    fn a_change_queued_while_its_key_was_in_flight_survives_the_ack() {
        let mut backlog = Backlog::default();
        backlog.push("a".into(), put("1"));
        let Some((chunk, tickets)) = backlog.next_chunk(10) else {
            panic!("a chunk");
        };
        assert_eq!(chunk, pairs(&[("a", "1")]));
        backlog.push("a".into(), put("2"));
        backlog.ack(&tickets);
        assert_eq!(drain(&mut backlog, 10), vec![pairs(&[("a", "2")])]);
    }
}
