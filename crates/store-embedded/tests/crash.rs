//! Crash safety: a child process applies guarded batches as fast as it can
//! and reports each one the store acknowledged; it is killed with SIGKILL at
//! a random moment, 20 times. After each kill the reopened store holds every
//! acknowledged batch in full and no batch in part.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rand::Rng;
use state_store::{Batch, StateStore};
use store_embedded::{EmbeddedConfig, EmbeddedStore};

/// Set for the child: the data directory it writes to.
const CHILD_DIR: &str = "STORE_EMBEDDED_CRASH_DIR";
const KILLS: usize = 20;
/// Keys each batch writes besides the counter, all with the batch's number.
const KEYS: usize = 8;
const COUNTER: &str = "/crash/counter";

fn key(j: usize) -> String {
    format!("/crash/k{j}")
}

/// The child: run by [`acknowledged_batches_survive_sigkill_whole`] only
/// (ignored in normal runs).
#[tokio::test]
#[ignore = "the child process of the crash test"]
async fn crash_writer() {
    let dir = std::env::var(CHILD_DIR).expect("the crash test sets the data dir");
    let store = EmbeddedStore::open(EmbeddedConfig::new(dir)).expect("open");
    let mut counter = store.get(COUNTER).await.expect("read the counter");
    loop {
        let (next, guard) = match &counter {
            Some(kv) => (number(&kv.value) + 1, kv.mod_revision),
            None => (1, 0),
        };
        let mut batch = Batch::new()
            .guard(COUNTER, guard)
            .put(COUNTER, next.to_string());
        for j in 0..KEYS {
            batch = batch.put(key(j), next.to_string());
        }
        store.apply(batch).await.expect("apply");
        println!("acked {next}");
        counter = store.get(COUNTER).await.expect("read the counter");
    }
}

fn number(value: &[u8]) -> u64 {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a batch number: {value:?}"))
}

#[tokio::test]
async fn acknowledged_batches_survive_sigkill_whole() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rng();
    let mut highest_acked = 0;
    let mut batches_seen = Vec::new();
    for round in 0..KILLS {
        let mut child = Command::new(&exe)
            .args(["crash_writer", "--exact", "--ignored", "--nocapture"])
            .env(CHILD_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the writer");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("acked ") {
                    let _ = tx.send(n.parse::<u64>().expect("a batch number"));
                }
            }
        });
        // Once it writes, let it run for a random while, then kill it. The
        // first acknowledgement counts too: the kill may follow it at once.
        let first = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("round {round}: the writer acknowledged nothing"));
        std::thread::sleep(Duration::from_millis(rng.random_range(0..150)));
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        reader.join().unwrap();
        let acked = rx.try_iter().fold(first, u64::max).max(highest_acked);

        let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path()))
            .unwrap_or_else(|e| panic!("round {round}: reopen after SIGKILL: {e}"));
        let counter = store.get(COUNTER).await.unwrap().expect("the counter");
        let found = number(&counter.value);
        assert!(
            found >= acked && found <= acked + 1,
            "round {round}: batch {found} found, {acked} acknowledged"
        );
        for j in 0..KEYS {
            let kv = store.get(&key(j)).await.unwrap().expect("every key");
            assert_eq!(
                (number(&kv.value), kv.mod_revision),
                (found, counter.mod_revision),
                "round {round}: key {j} is not from the counter's batch"
            );
        }
        assert_eq!(store.revision().await.unwrap(), counter.mod_revision);
        batches_seen.push(found - highest_acked);
        highest_acked = found;
    }
    assert!(
        batches_seen.iter().filter(|&&n| n > 0).count() >= KILLS / 2,
        "the writer made progress in most rounds: {batches_seen:?}"
    );
}
