//! A live copy of the state keys under `/container/`, `/model/` and
//! `/package/`, kept by one etcd watch, that tells a waiter the instant a set
//! of keys reached the expected values (the watch event that made a node
//! report durable).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use etcd_client::{Client, EventType, WatchOptions};
use tokio::sync::{mpsc, oneshot};

use crate::kv;

/// The watched prefixes.
pub const PREFIXES: [&str; 3] = ["/container/", "/model/", "/package/"];

struct Pending {
    expected: HashMap<String, String>,
    mismatches: usize,
    reply: oneshot::Sender<Instant>,
}

enum Command {
    Expect {
        slot: usize,
        expected: Vec<(String, String)>,
        reply: oneshot::Sender<Instant>,
    },
    Snapshot(oneshot::Sender<HashMap<String, String>>),
}

/// Handle to the watch task; cheap to clone.
#[derive(Clone)]
pub struct Tracker {
    commands: mpsc::UnboundedSender<Command>,
}

impl Tracker {
    /// Reads the three prefixes at one revision and watches them from the next.
    pub async fn start(kv: &Client) -> Result<Tracker> {
        let revision = kv::revision(kv).await?;
        let mut map = HashMap::new();
        for prefix in PREFIXES {
            let options = etcd_client::GetOptions::new()
                .with_range(kv::prefix_end(prefix))
                .with_limit(kv::PAGE)
                .with_revision(revision);
            let mut from = prefix.as_bytes().to_vec();
            loop {
                let response = kv.clone().get(from.clone(), Some(options.clone())).await?;
                for pair in response.kvs() {
                    map.insert(
                        String::from_utf8_lossy(pair.key()).into_owned(),
                        String::from_utf8_lossy(pair.value()).into_owned(),
                    );
                }
                match response.kvs().last() {
                    Some(last) if response.more() => {
                        from = last.key().to_vec();
                        from.push(0);
                    }
                    _ => break,
                }
            }
        }
        let mut watch = kv
            .clone()
            .watch(
                PREFIXES[0],
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(revision + 1),
                ),
            )
            .await
            .context("starting the etcd watch")?;
        for prefix in &PREFIXES[1..] {
            watch
                .watch(
                    *prefix,
                    Some(
                        WatchOptions::new()
                            .with_prefix()
                            .with_start_revision(revision + 1),
                    ),
                )
                .await
                .context("adding an etcd watch")?;
        }
        let (commands, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut pending: HashMap<usize, Pending> = HashMap::new();
            let mut watchers: HashMap<String, usize> = HashMap::new();
            loop {
                tokio::select! {
                    biased;
                    command = rx.recv() => match command {
                        None => return,
                        Some(Command::Snapshot(reply)) => {
                            let _ = reply.send(map.clone());
                        }
                        Some(Command::Expect { slot, expected, reply }) => {
                            let mismatches = expected
                                .iter()
                                .filter(|(k, v)| map.get(k) != Some(v))
                                .count();
                            if mismatches == 0 {
                                let _ = reply.send(Instant::now());
                            } else {
                                for (k, _) in &expected {
                                    watchers.insert(k.clone(), slot);
                                }
                                let expected = expected.into_iter().collect();
                                pending.insert(slot, Pending { expected, mismatches, reply });
                            }
                        }
                    },
                    message = watch.message() => {
                        let now = Instant::now();
                        let Ok(Some(message)) = message else { return };
                        for event in message.events() {
                            let Some(pair) = event.kv() else { continue };
                            let key = String::from_utf8_lossy(pair.key()).into_owned();
                            let new = match event.event_type() {
                                EventType::Put => Some(String::from_utf8_lossy(pair.value()).into_owned()),
                                EventType::Delete => None,
                            };
                            if let Some(&slot) = watchers.get(&key)
                                && let Some(p) = pending.get_mut(&slot)
                                && let Some(want) = p.expected.get(&key)
                            {
                                let was_ok = map.get(&key) == Some(want);
                                let now_ok = new.as_ref() == Some(want);
                                match (was_ok, now_ok) {
                                    (true, false) => p.mismatches += 1,
                                    (false, true) => p.mismatches -= 1,
                                    _ => {}
                                }
                            }
                            match new {
                                Some(value) => map.insert(key, value),
                                None => map.remove(&key),
                            };
                        }
                        let done: Vec<usize> = pending
                            .iter()
                            .filter(|(_, p)| p.mismatches == 0)
                            .map(|(slot, _)| *slot)
                            .collect();
                        for slot in done {
                            if let Some(p) = pending.remove(&slot) {
                                for k in p.expected.keys() {
                                    watchers.remove(k);
                                }
                                let _ = p.reply.send(now);
                            }
                        }
                    }
                }
            }
        });
        Ok(Tracker { commands })
    }

    /// Registers `expected` for `slot` (one outstanding expectation per
    /// slot, on keys no other slot waits for); the receiver gets the instant
    /// they all held (at once when they already do).
    pub fn expect(
        &self,
        slot: usize,
        expected: Vec<(String, String)>,
    ) -> Result<oneshot::Receiver<Instant>> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Expect {
                slot,
                expected,
                reply,
            })
            .map_err(|_| anyhow!("the etcd watch ended"))?;
        Ok(rx)
    }

    /// A copy of the watched keys.
    pub async fn snapshot(&self) -> Result<HashMap<String, String>> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Snapshot(reply))
            .map_err(|_| anyhow!("the etcd watch ended"))?;
        rx.await.context("the etcd watch ended")
    }

    /// Which expected keys differ now (for error messages).
    pub async fn describe_mismatch(
        &self,
        expected: &[(String, String)],
        waited: Duration,
    ) -> String {
        let Ok(map) = self.snapshot().await else {
            return "the etcd watch ended".into();
        };
        let wrong: Vec<String> = expected
            .iter()
            .filter(|(k, v)| map.get(k) != Some(v))
            .map(|(k, v)| {
                format!(
                    "{k}={} (expected {v})",
                    map.get(k).map(String::as_str).unwrap_or("<absent>")
                )
            })
            .collect();
        format!(
            "{} of {} keys not as expected after {waited:?}, e.g. {}",
            wrong.len(),
            expected.len(),
            wrong[..wrong.len().min(5)].join(", ")
        )
    }
}
