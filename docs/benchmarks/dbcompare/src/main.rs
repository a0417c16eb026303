//! redb against fjall on the StateManager store's workload: durable
//! commits of small batches with a revision-log entry, then a reopen and a
//! full scan. Prints the figures of docs/architecture.md. A measurement
//! tool: it panics on any database error.
use std::time::Instant;

const COMMITS: usize = 2000;
const KEYS: usize = 20_000;

fn batch(i: usize) -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for k in 0..5 {
        v.push((
            format!("/container/c{}-{k}/state", i % 500),
            format!("Running-{i}").into_bytes(),
        ));
    }
    v.push((
        format!("/statemanager/history/package/p{}/{i:020}", i % 50),
        vec![b'x'; 120],
    ));
    v
}

fn redb_run(dir: &std::path::Path) {
    use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
    const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
    const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
    let path = dir.join("redb");
    let db = Database::create(&path).unwrap();
    let t = Instant::now();
    for i in 0..COMMITS {
        let tx = db.begin_write().unwrap();
        {
            let mut kv = tx.open_table(KV).unwrap();
            let mut log = tx.open_table(LOG).unwrap();
            let mut all = Vec::new();
            for (k, v) in batch(i) {
                kv.insert(k.as_str(), v.as_slice()).unwrap();
                all.extend_from_slice(&v);
            }
            log.insert(i as u64, all.as_slice()).unwrap();
            if i >= 1000 {
                log.remove((i - 1000) as u64).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    let el = t.elapsed();
    println!(
        "redb  durable commits: {:.0}/s ({:?} per commit)",
        COMMITS as f64 / el.as_secs_f64(),
        el / COMMITS as u32
    );
    // bulk load KEYS keys
    let tx = db.begin_write().unwrap();
    {
        let mut kv = tx.open_table(KV).unwrap();
        for i in 0..KEYS {
            kv.insert(format!("/model/m{i}/state").as_str(), b"Running".as_slice())
                .unwrap();
        }
    }
    tx.commit().unwrap();
    drop(db);
    let t = Instant::now();
    let db = Database::create(&path).unwrap();
    let rtx = db.begin_read().unwrap();
    let kv = rtx.open_table(KV).unwrap();
    let n = kv.iter().unwrap().count();
    println!("redb  reopen + scan {n} keys: {:?}", t.elapsed());
    println!(
        "redb  size: {} KiB",
        std::fs::metadata(&path).unwrap().len() / 1024
    );
}

fn fjall_run(dir: &std::path::Path) {
    use fjall::{Database, KeyspaceCreateOptions, PersistMode};
    let path = dir.join("fjall");
    let db = Database::builder(&path).open().unwrap();
    let kv = db.keyspace("kv", KeyspaceCreateOptions::default).unwrap();
    let log = db.keyspace("log", KeyspaceCreateOptions::default).unwrap();
    let t = Instant::now();
    for i in 0..COMMITS {
        let mut b = db.batch().durability(Some(PersistMode::SyncAll));
        let mut all = Vec::new();
        for (k, v) in batch(i) {
            all.extend_from_slice(&v);
            b.insert(&kv, k, v);
        }
        b.insert(&log, (i as u64).to_be_bytes(), all);
        if i >= 1000 {
            b.remove(&log, ((i - 1000) as u64).to_be_bytes());
        }
        b.commit().unwrap();
    }
    let el = t.elapsed();
    println!(
        "fjall durable commits: {:.0}/s ({:?} per commit)",
        COMMITS as f64 / el.as_secs_f64(),
        el / COMMITS as u32
    );
    let mut b = db.batch();
    for i in 0..KEYS {
        b.insert(&kv, format!("/model/m{i}/state"), "Running");
    }
    b.commit().unwrap();
    db.persist(PersistMode::SyncAll).unwrap();
    drop(kv);
    drop(log);
    drop(db);
    let t = Instant::now();
    let db = Database::builder(&path).open().unwrap();
    let kv = db.keyspace("kv", KeyspaceCreateOptions::default).unwrap();
    let n = kv.iter().count();
    println!("fjall reopen + scan {n} keys: {:?}", t.elapsed());
    let size: u64 = walk(&path);
    println!("fjall size: {} KiB", size / 1024);
}

fn walk(p: &std::path::Path) -> u64 {
    let mut s = 0;
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        s += if m.is_dir() { walk(&e.path()) } else { m.len() };
    }
    s
}

fn main() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    for _ in 0..2 {
        redb_run(&tempfile::tempdir_in(dir.path()).unwrap().keep());
        fjall_run(&tempfile::tempdir_in(dir.path()).unwrap().keep());
    }
}
