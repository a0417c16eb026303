//! The behavioural tests every [`StateStore`] must pass.
//!
//! The suite is ordinary library code (not `cfg(test)`) behind the cargo
//! feature `conformance`, so each store's own tests run it against a real
//! instance (`MemoryStore` in this crate, `EtcdStore` against a real etcd)
//! by enabling the feature in their dev-dependencies, while the crates that
//! only use a store do not build it.
//!
//! Every case works only on keys under the prefix it is given, so several cases
//! and tests may share one etcd. Before it starts, a case deletes whatever a
//! previous run left under its prefix. Revisions are store-wide, so the cases
//! assert relations between them ("greater than before", "equal for all keys of
//! one batch"), never absolute numbers. Every wait on a watch is bounded by
//! [`WATCH_TIMEOUT`], so a broken store fails a case instead of hanging it, and
//! every panic message starts with the case's name.
//!
//! [`run_all`] runs every case; [`too_large`] is separate because the limit
//! depends on the store's configuration.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use futures::future::join_all;
use tokio::sync::Barrier;

use crate::{
    Batch, EventKind, KeyValue, ListOptions, Page, Revision, StateStore, StoreError, WatchEvent,
    WatchStream, get_all,
};

/// How long a case waits for one watch event before it fails.
pub const WATCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs every case of the suite (except [`too_large`]) in sequence, each under
/// its own sub-prefix `"{prefix}/{case_name}/"`, printing the case's name
/// before it runs. Panics on the first failing case.
pub async fn run_all(store: &dyn StateStore, prefix: &str) {
    macro_rules! run {
        ($($case:ident),+ $(,)?) => {
            $(
                println!("state-store conformance: {}", stringify!($case));
                $case(store, &format!("{prefix}/{}/", stringify!($case))).await;
            )+
        };
    }
    run!(
        get_missing,
        put_get_roundtrip,
        revision_increases,
        batch_atomicity,
        guard_absent_creates,
        guard_success_updates,
        recreate_after_delete,
        batch_one_revision,
        same_key_merged,
        delete_in_batch,
        delete_returns_existed,
        noop_batch_writes_nothing,
        contradicting_guards_rejected,
        empty_key_rejected,
        binary_values,
        prefix_listing,
        paging,
        get_all_pages,
        watch_from_now,
        watch_replay,
        watch_replay_under_concurrent_writes,
        watch_prefix_isolation,
        concurrent_guarded_writers,
    );
}

/// What a case needs: the store, its name for messages, and its key prefix.
struct Ctx<'a> {
    store: &'a dyn StateStore,
    case: &'static str,
    prefix: String,
}

impl<'a> Ctx<'a> {
    /// Prepares a case: makes the prefix end with `/` and deletes whatever a
    /// previous run left under it.
    async fn new(store: &'a dyn StateStore, case: &'static str, prefix: &str) -> Self {
        let mut prefix = prefix.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        let ctx = Ctx {
            store,
            case,
            prefix,
        };
        let (leftovers, _) = ctx.ok("listing leftovers", get_all(store, &ctx.prefix, 0).await);
        for kv in leftovers {
            ctx.ok("deleting a leftover key", store.delete(&kv.key).await);
        }
        ctx
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn ok<T>(&self, what: &str, result: Result<T, StoreError>) -> T {
        match result {
            Ok(value) => value,
            Err(error) => panic!("{}: {what} failed: {error}", self.case),
        }
    }

    async fn revision(&self) -> Revision {
        self.ok("revision()", self.store.revision().await)
    }

    async fn get(&self, key: &str) -> Option<KeyValue> {
        self.ok(&format!("get('{key}')"), self.store.get(key).await)
    }

    async fn must_get(&self, key: &str) -> KeyValue {
        match self.get(key).await {
            Some(kv) => kv,
            None => panic!("{}: expected key '{key}' to exist, it is absent", self.case),
        }
    }

    async fn assert_absent(&self, key: &str, why: &str) {
        if let Some(kv) = self.get(key).await {
            panic!(
                "{}: expected key '{key}' to be absent ({why}), found {kv:?}",
                self.case
            );
        }
    }

    async fn apply(&self, what: &str, batch: Batch) -> Revision {
        self.ok(what, self.store.apply(batch).await).revision
    }

    async fn put(&self, key: &str, value: impl Into<Vec<u8>>) -> Revision {
        self.apply(&format!("put('{key}')"), Batch::new().put(key, value))
            .await
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Page {
        let options = ListOptions {
            start_after: start_after.map(str::to_owned),
            limit,
        };
        self.ok(
            &format!("get_prefix('{prefix}', {options:?})"),
            self.store.get_prefix(prefix, options.clone()).await,
        )
    }

    async fn watch(&self, prefix: &str, from_revision: Revision) -> WatchStream {
        self.ok(
            &format!("watch('{prefix}', {from_revision})"),
            self.store.watch(prefix, from_revision).await,
        )
    }

    /// Expects `result` to be a guard failure on `key` with the given
    /// revisions.
    fn assert_guard_failed<T: std::fmt::Debug>(
        &self,
        result: Result<T, StoreError>,
        key: &str,
        expected: Revision,
        actual: Revision,
    ) {
        let wanted = StoreError::GuardFailed {
            key: key.to_owned(),
            expected,
            actual,
        };
        match result {
            Err(error) if error == wanted => {}
            other => panic!("{}: expected Err({wanted:?}), got {other:?}", self.case),
        }
    }

    fn assert_invalid_request<T: std::fmt::Debug>(
        &self,
        result: Result<T, StoreError>,
        what: &str,
    ) {
        match result {
            Err(StoreError::InvalidRequest { .. }) => {}
            other => panic!(
                "{}: expected InvalidRequest for {what}, got {other:?}",
                self.case
            ),
        }
    }

    /// The next event of `stream`, failing the case after [`WATCH_TIMEOUT`],
    /// on an error, or when the stream ends.
    async fn next_event(&self, stream: &mut WatchStream, expecting: &str) -> WatchEvent {
        match tokio::time::timeout(WATCH_TIMEOUT, stream.next()).await {
            Err(_) => panic!(
                "{}: no watch event within {WATCH_TIMEOUT:?}, expected {expecting}",
                self.case
            ),
            Ok(None) => panic!("{}: the watch ended, expected {expecting}", self.case),
            Ok(Some(Err(error))) => panic!(
                "{}: the watch failed with '{error}', expected {expecting}",
                self.case
            ),
            Ok(Some(Ok(event))) => event,
        }
    }

    /// Expects the next event to be a put of `key` with `value` at `revision`.
    async fn expect_put(
        &self,
        stream: &mut WatchStream,
        key: &str,
        value: &[u8],
        revision: Revision,
    ) {
        let expecting = format!(
            "Put of '{key}' = {:?} at revision {revision}",
            String::from_utf8_lossy(value)
        );
        let event = self.next_event(stream, &expecting).await;
        let ok = event.kind == EventKind::Put
            && event.kv.key == key
            && event.kv.value == value
            && event.kv.mod_revision == revision;
        assert!(ok, "{}: expected {expecting}, got {event:?}", self.case);
    }

    /// Expects the next event to be a delete of `key` at `revision`.
    async fn expect_delete(&self, stream: &mut WatchStream, key: &str, revision: Revision) {
        let expecting = format!("Delete of '{key}' at revision {revision}");
        let event = self.next_event(stream, &expecting).await;
        let ok = event.kind == EventKind::Delete
            && event.kv.key == key
            && event.kv.value.is_empty()
            && event.kv.mod_revision == revision;
        assert!(ok, "{}: expected {expecting}, got {event:?}", self.case);
    }

    /// Writes a sentinel key under `prefix` and expects it to be the next
    /// event: proof that nothing unexpected (a duplicate, a spurious event)
    /// sits before it.
    async fn expect_only_sentinel(&self, stream: &mut WatchStream, prefix: &str, after: &str) {
        let key = format!("{prefix}zz-sentinel");
        let revision = self.put(&key, "end").await;
        let expecting = format!("the sentinel put of '{key}' right after {after}");
        let event = self.next_event(stream, &expecting).await;
        let ok = event.kind == EventKind::Put
            && event.kv.key == key
            && event.kv.mod_revision == revision;
        assert!(
            ok,
            "{}: expected {expecting} (revision {revision}), got {event:?}",
            self.case
        );
    }
}

fn keys(kvs: &[KeyValue]) -> Vec<&str> {
    kvs.iter().map(|kv| kv.key.as_str()).collect()
}

/// A missing key reads as `Ok(None)`.
pub async fn get_missing(store: &dyn StateStore, prefix: &str) {
    let c = Ctx::new(store, "get_missing", prefix).await;
    c.assert_absent(&c.key("missing"), "it was never written")
        .await;
}

/// A put is read back with its value; `create_revision` stays, `mod_revision`
/// follows each write, and rewriting an unchanged value is still a write.
pub async fn put_get_roundtrip(store: &dyn StateStore, prefix: &str) {
    let c = Ctx::new(store, "put_get_roundtrip", prefix).await;
    let key = c.key("k");
    let before = c.revision().await;

    let r1 = c.put(&key, "v1").await;
    assert!(
        r1 > before,
        "{}: first put revision {r1} must exceed the revision before it, {before}",
        c.case
    );
    let kv = c.must_get(&key).await;
    let expected = KeyValue {
        key: key.clone(),
        value: b"v1".to_vec(),
        create_revision: r1,
        mod_revision: r1,
    };
    assert_eq!(kv, expected, "{}: read after the first put", c.case);

    let r2 = c.put(&key, "v2").await;
    assert!(
        r2 > r1,
        "{}: second put revision {r2} must exceed the first, {r1}",
        c.case
    );
    let kv = c.must_get(&key).await;
    let expected = KeyValue {
        key: key.clone(),
        value: b"v2".to_vec(),
        create_revision: r1,
        mod_revision: r2,
    };
    assert_eq!(
        kv, expected,
        "{}: read after the second put (create_revision kept)",
        c.case
    );

    let r3 = c.put(&key, "v2").await;
    assert!(
        r3 > r2,
        "{}: rewriting an unchanged value must still bump the revision ({r3} vs {r2})",
        c.case
    );
    assert_eq!(
        c.must_get(&key).await.mod_revision,
        r3,
        "{}: mod_revision after rewriting an unchanged value",
        c.case
    );
}

/// `revision()` is positive and increases with a write.
pub async fn revision_increases(store: &dyn StateStore, prefix: &str) {
    let c = Ctx::new(store, "revision_increases", prefix).await;
    let before = c.revision().await;
    assert!(
        before >= 1,
        "{}: revision() must be at least 1, got {before}",
        c.case
    );
    let written = c.put(&c.key("k"), "v").await;
    let after = c.revision().await;
    assert!(
        before < written && written <= after,
        "{}: expected revision before ({before}) < write revision ({written}) <= revision after ({after})",
        c.case
    );
}

/// A batch with a failing guard writes nothing (not even an event) and names
/// the first failing guard with its expected and actual revisions.
pub async fn batch_atomicity(store: &dyn StateStore, prefix: &str) {
    let c = Ctx::new(store, "batch_atomicity", prefix).await;
    let (a, b, d, e) = (c.key("a"), c.key("b"), c.key("d"), c.key("e"));
    let ra = c.put(&a, "1").await;
    let rd = c.put(&d, "keep").await;
    let mut watch = c.watch(&c.prefix, 0).await;

    // The guard on `a` holds, the one on `b` fails (absent), the one on `d`
    // fails too; `b` is first, so it is reported.
    let result = store
        .apply(
            Batch::new()
                .guard(&a, ra)
                .guard(&b, ra)
                .guard(&d, 0)
                .put(&a, "2")
                .put(&e, "new")
                .delete(&d),
        )
        .await;
    c.assert_guard_failed(result, &b, ra, 0);

    // A guard expecting an existing key to be absent.
    let result = store.apply(Batch::new().guard(&a, 0).put(&e, "new")).await;
    c.assert_guard_failed(result, &a, 0, ra);

    let kv = c.must_get(&a).await;
    assert!(
        kv.value == b"1" && kv.mod_revision == ra,
        "{}: '{a}' must be untouched by the failed batches (value 1 at {ra}), got {kv:?}",
        c.case
    );
    assert_eq!(
        c.must_get(&d).await.mod_revision,
        rd,
        "{}: '{d}' must not be deleted by a failed batch",
        c.case
    );
    c.assert_absent(&e, "only failed batches wrote it").await;
    c.expect_only_sentinel(
        &mut watch,
        &c.prefix,
        "two failed batches (they must emit no event)",
    )
    .await;
}

/// A guard with revision 0 creates a key only when it is absent.
pub async fn guard_absent_creates(store: &dyn StateStore, prefix: &str) {
    let c = Ctx::new(store, "guard_absent_creates", prefix).await;
    let key = c.key("k");
    let r1 = c
        .apply(
            "create-if-absent",
            Batch::new().guard(&key, 0).put(&key, "first"),
        )
        .await;
    let kv = c.must_get(&key).await;
    assert!(
        kv.value == b"first" && kv.create_revision == r1 && kv.mod_revision == r1,
        "{}: expected 'first' created at {r1}, got {kv:?}",
        c.case
    );
    let result = store
        .apply(Batch::new().guard(&key, 0).put(&key, "second"))
        .await;
    c.assert_guard_failed(result, &key, 0, r1);
    assert_eq!(
        c.must_get(&key).await.value,
        b"first",
        "{}: a second create-if-absent must not overwrite",
        c.case
    );
}

/// A guard on the current `mod_revision` lets the write through; a stale one
/// fails.
pub async fn guard_success_updates(store: &dyn StateStore, prefix: &str) {
    let c = Ctx::new(store, "guard_success_updates", prefix).await;
    let key = c.key("k");
    let r1 = c.put(&key, "1").await;
    let r2 = c
        .apply(
            "guarded update",
            Batch::new().guard(&key, r1).put(&key, "2"),
        )
        .await;
    assert!(
        r2 > r1,
        "{}: guarded update revision {r2} must exceed {r1}",
        c.case
    );
    let kv = c.must_get(&key).await;
    assert!(
        kv.value == b"2" && kv.mod_revision == r2 && kv.create_revision == r1,
        "{}: expected value 2 modified at {r2}, created at {r1}, got {kv:?}",
        c.case
    );

    let result = store
        .apply(Batch::new().guard(&key, r1).put(&key, "stale"))
        .await;
    c.assert_guard_failed(result, &key, r1, r2);
    assert_eq!(
        c.must_get(&key).await.value,
        b"2",
        "{}: a stale guard must not write",
        c.case
    );

    c.apply("guarded delete", Batch::new().guard(&key, r2).delete(&key))
        .await;
    c.assert_absent(&key, "a guarded delete removed it").await;
}

/// A deleted key counts as absent (revision 0) for guards, and a re-created
/// key gets a new `create_revision`.
pub async fn recreate_after_delete(store: &dyn StateStore, prefix: &str) {
    let c = Ctx::new(store, "recreate_after_delete", prefix).await;
    let key = c.key("k");
    let r1 = c.put(&key, "old").await;
    assert!(
        c.ok("delete()", store.delete(&key).await),
        "{}: delete() of an existing key must return true",
        c.case
    );
    let r2 = c
        .apply(
            "re-create with an absent guard",
            Batch::new().guard(&key, 0).put(&key, "new"),
        )
        .await;
    let kv = c.must_get(&key).await;
    assert!(
        r2 > r1 && kv.create_revision == r2 && kv.mod_revision == r2 && kv.value == b"new",
        "{}: expected 'new' created and modified at {r2} (> {r1}), got {kv:?}",
        c.case
    );
}

/// Every key a batch writes gets the batch's one revision.
pub async fn batch_one_revision(store: &dyn StateStore, prefix: &str) {
    let c = Ctx::new(store, "batch_one_revision", prefix).await;
    let (a, b, x, y) = (c.key("a"), c.key("b"), c.key("x"), c.key("y"));
    c.put(&a, "old").await;
    c.put(&x, "doomed").await;
    let mut watch = c.watch(&c.prefix, 0).await;
    let revision = c
        .apply(
            "a batch of three writes",
            Batch::new()
                .put(&a, "1")
                .put(&b, "2")
                .delete(&x)
                .put(&y, "3"),
        )
        .await;
    for key in [&a, &b, &y] {
        assert_eq!(
            c.must_get(key).await.mod_revision,
            revision,
            "{}: '{key}' must carry the batch revision",
            c.case
        );
    }
    c.assert_absent(&x, "the batch deleted it").await;
    c.expect_put(&mut watch, &a, b"1", revision).await;
    c.expect_put(&mut watch, &b, b"2", revision).await;
    c.expect_delete(&mut watch, &x, revision).await;
    c.expect_put(&mut watch, &y, b"3", revision).await;
    c.expect_only_sentinel(&mut watch, &c.prefix, "the batch's four events")
        .await;
}

/// A batch naming one key several times is merged: the last op wins.
pub async fn same_key_merged(store: &dyn StateStore, prefix: &str) {
    let c = Ctx::new(store, "same_key_merged", prefix).await;
    let (k, x, z) = (c.key("k"), c.key("x"), c.key("z"));
    let r = c
        .apply(
            "put, put",
            Batch::new().put(&k, "1").put(&z, "z").put(&k, "2"),
        )
        .await;
    let kv = c.must_get(&k).await;
    assert!(
        kv.value == b"2" && kv.mod_revision == r,
        "{}: put then put must leave the second value at {r}, got {kv:?}",
        c.case
    );

    c.apply(
        "put, delete",
        Batch::new().put(&x, "1").put(&z, "z2").delete(&x),
    )
    .await;
    c.assert_absent(&x, "put then delete in one batch").await;

    c.apply("delete, put", Batch::new().delete(&k).put(&k, "3"))
        .await;
    assert_eq!(
        c.must_get(&k).await.value,
        b"3",
        "{}: delete then put in one batch must leave the put",
        c.case
    );

    // Two equal guards on one key are merged, not rejected.
    let r = c
        .apply(
            "guard twice with the same revision",
            Batch::new().guard(&x, 0).guard(&x, 0).put(&x, "4"),
        )
        .await;
    assert_eq!(
        c.must_get(&x).await.mod_revision,
        r,
        "{}: a batch with two equal guards must be applied",
        c.case
    );
}

/// A batch can delete keys next to its puts.
pub async fn delete_in_batch(store: &dyn StateStore, prefix: &str) {
    let c = Ctx::new(store, "delete_in_batch", prefix).await;
    let (a, b, n) = (c.key("a"), c.key("b"), c.key("new"));
    c.put(&a, "1").await;
    let rb = c.put(&b, "2").await;
    let r = c
        .apply("delete and put", Batch::new().delete(&a).put(&n, "3"))
        .await;
    c.assert_absent(&a, "the batch deleted it").await;
    assert_eq!(
        c.must_get(&b).await.mod_revision,
        rb,
        "{}: '{b}' was not in the batch and must be untouched",
        c.case
    );
    assert_eq!(
        c.must_get(&n).await.mod_revision,
        r,
        "{}: '{n}' must carry the batch revision",
        c.case
    );
}

/// `delete()` reports whether the key existed.
pub async fn delete_returns_existed(store: &dyn StateStore, prefix: &str) {
    let c = Ctx::new(store, "delete_returns_existed", prefix).await;
    let key = c.key("k");
    assert!(
        !c.ok("delete() of an absent key", store.delete(&key).await),
        "{}: delete() of an absent key must return false",
        c.case
    );
    c.put(&key, "v").await;
    assert!(
        c.ok("delete() of an existing key", store.delete(&key).await),
        "{}: delete() of an existing key must return true",
        c.case
    );
    c.assert_absent(&key, "delete() removed it").await;
    assert!(
        !c.ok("second delete()", store.delete(&key).await),
        "{}: a second delete() must return false",
        c.case
    );
}

/// Batches that change nothing (empty, guards only, deletes of absent keys) and
/// `delete()` of an absent key succeed and emit no event.
pub async fn noop_batch_writes_nothing(store: &dyn StateStore, prefix: &str) {
    let c = Ctx::new(store, "noop_batch_writes_nothing", prefix).await;
    let mut watch = c.watch(&c.prefix, 0).await;
    let before = c.revision().await;
    let mut applied = Vec::new();
    applied.push(c.apply("an empty batch", Batch::new()).await);
    applied.push(
        c.apply(
            "a batch of guards only",
            Batch::new().guard(c.key("absent"), 0),
        )
        .await,
    );
    applied.push(
        c.apply(
            "a batch deleting absent keys",
            Batch::new()
                .delete(c.key("absent1"))
                .delete(c.key("absent2")),
        )
        .await,
    );
    assert!(
        !c.ok(
            "delete() of an absent key",
            store.delete(&c.key("absent3")).await
        ),
        "{}: delete() of an absent key must return false",
        c.case
    );
    let after = c.revision().await;
    for revision in applied {
        assert!(
            before <= revision && revision <= after,
            "{}: a batch that changes nothing reports the current revision; expected {before} <= {revision} <= {after}",
            c.case
        );
    }
    c.expect_only_sentinel(
        &mut watch,
        &c.prefix,
        "batches that change nothing (they must emit no event)",
    )
    .await;
}

/// Two guards on one key with different revisions can never both hold: the
/// batch is rejected as invalid, naming the key, and writes nothing.
pub async fn contradicting_guards_rejected(store: &dyn StateStore, prefix: &str) {
    let c = Ctx::new(store, "contradicting_guards_rejected", prefix).await;
    let (k, other) = (c.key("k"), c.key("other"));
    let result = store
        .apply(Batch::new().guard(&k, 0).guard(&k, 5).put(&other, "x"))
        .await;
    match result {
        Err(StoreError::InvalidRequest { message, .. }) if message.contains(&k) => {}
        other => panic!(
            "{}: expected InvalidRequest naming '{k}' for contradicting guards, got {other:?}",
            c.case
        ),
    }
    c.assert_absent(&other, "the rejected batch wrote it").await;
}

/// An empty key is an invalid request everywhere it can appear.
pub async fn empty_key_rejected(store: &dyn StateStore, prefix: &str) {
    let c = Ctx::new(store, "empty_key_rejected", prefix).await;
    let other = c.key("other");
    c.assert_invalid_request(store.get("").await, "get('')");
    c.assert_invalid_request(store.delete("").await, "delete('')");
    c.assert_invalid_request(
        store
            .apply(Batch::new().put("", "x").put(&other, "x"))
            .await,
        "a batch putting ''",
    );
    c.assert_invalid_request(
        store.apply(Batch::new().delete("").put(&other, "x")).await,
        "a batch deleting ''",
    );
    c.assert_invalid_request(
        store
            .apply(Batch::new().guard("", 0).put(&other, "x"))
            .await,
        "a batch guarding ''",
    );
    c.assert_absent(&other, "only rejected batches wrote it")
        .await;
}

/// Values are bytes: non-UTF-8 and empty values read back unchanged.
pub async fn binary_values(store: &dyn StateStore, prefix: &str) {
    let c = Ctx::new(store, "binary_values", prefix).await;
    let (bin, empty) = (c.key("binary"), c.key("empty"));
    let bytes: Vec<u8> = vec![0x00, 0xff, 0xfe, 0x80, b'a', 0x00, 0xc3, 0x28];
    c.apply(
        "binary and empty values",
        Batch::new()
            .put(&bin, bytes.clone())
            .put(&empty, Vec::new()),
    )
    .await;
    let kv = c.must_get(&bin).await;
    assert_eq!(
        kv.value, bytes,
        "{}: non-UTF-8 value must round-trip byte for byte",
        c.case
    );
    assert_eq!(
        kv.value_str(),
        None,
        "{}: value_str() of a non-UTF-8 value must be None",
        c.case
    );
    let kv = c.must_get(&empty).await;
    assert_eq!(
        kv.value_str(),
        Some(""),
        "{}: an empty value must exist and read as ''",
        c.case
    );
    let page = c.list(&c.prefix, None, 0).await;
    assert_eq!(
        page.kvs.first().map(|kv| kv.value.clone()),
        Some(bytes),
        "{}: get_prefix must return the binary value unchanged",
        c.case
    );
}

/// Prefixes are plain string prefixes and listings are in ascending byte
/// order.
pub async fn prefix_listing(store: &dyn StateStore, prefix: &str) {
    let c = Ctx::new(store, "prefix_listing", prefix).await;
    let names = ["dir2/x", "dir/b/c", "dia", "dir", "dir-x", "dir/a"];
    let mut batch = Batch::new();
    for name in names {
        batch = batch.put(c.key(name), name);
    }
    let written = c.apply("six keys", batch).await;

    let page = c.list(&c.key("dir/"), None, 100).await;
    assert_eq!(
        keys(&page.kvs),
        vec![c.key("dir/a"), c.key("dir/b/c")],
        "{}: listing 'dir/' must hold only keys under 'dir/', ascending",
        c.case
    );
    assert!(
        !page.more,
        "{}: a complete listing must have more = false",
        c.case
    );
    assert!(
        page.revision >= written,
        "{}: the page revision {} must be at least the write revision {written}",
        c.case,
        page.revision
    );

    let page = c.list(&c.key("dir"), None, 100).await;
    let expected: Vec<String> = ["dir", "dir-x", "dir/a", "dir/b/c", "dir2/x"]
        .iter()
        .map(|n| c.key(n))
        .collect();
    assert_eq!(
        keys(&page.kvs),
        expected,
        "{}: listing 'dir' is a plain string prefix in byte order",
        c.case
    );

    let page = c.list(&c.prefix, None, 100).await;
    let mut all: Vec<String> = names.iter().map(|n| c.key(n)).collect();
    all.sort();
    assert_eq!(
        keys(&page.kvs),
        all,
        "{}: listing the case prefix must return all six keys ascending and nothing else",
        c.case
    );
    for kv in &page.kvs {
        assert_eq!(
            Some(kv.value.as_slice()),
            kv.key.strip_prefix(c.prefix.as_str()).map(str::as_bytes),
            "{}: each listed key carries its own value",
            c.case
        );
    }

    let page = c.list(&c.key("nothing/"), None, 0).await;
    assert!(
        page.kvs.is_empty() && !page.more,
        "{}: an empty prefix listing must be empty with more = false, got {page:?}",
        c.case
    );
}

/// Paging across 25 keys with `start_after`, `limit` and `more`.
pub async fn paging(store: &dyn StateStore, prefix: &str) {
    let c = Ctx::new(store, "paging", prefix).await;
    let dir = c.key("page/");
    let all: Vec<String> = (0..25).map(|i| format!("{dir}key-{i:02}")).collect();
    // Written in reverse so that order comes from the store, plus two
    // siblings that share the textual prefix without the slash.
    let mut batch = Batch::new()
        .put(c.key("page-sibling"), "x")
        .put(c.key("pagez"), "x");
    for key in all.iter().rev() {
        batch = batch.put(key, key.as_str());
    }
    let written = c.apply("25 keys", batch).await;

    let first = c.list(&dir, None, 10).await;
    assert_eq!(
        keys(&first.kvs),
        all[..10].to_vec(),
        "{}: first page of 10",
        c.case
    );
    assert!(
        first.more,
        "{}: the first page of 10 out of 25 must have more = true",
        c.case
    );
    assert!(
        first.revision >= written,
        "{}: page revision {} must be at least the write revision {written}",
        c.case,
        first.revision
    );

    let second = c.list(&dir, Some(&all[9]), 10).await;
    assert_eq!(
        keys(&second.kvs),
        all[10..20].to_vec(),
        "{}: second page after '{}'",
        c.case,
        all[9]
    );
    assert!(
        second.more,
        "{}: the second page must have more = true",
        c.case
    );

    let third = c.list(&dir, Some(&all[19]), 10).await;
    assert_eq!(
        keys(&third.kvs),
        all[20..].to_vec(),
        "{}: last page of 5",
        c.case
    );
    assert!(
        !third.more,
        "{}: the last page must have more = false",
        c.case
    );

    let exact = c.list(&dir, Some(&all[14]), 10).await;
    assert_eq!(
        keys(&exact.kvs),
        all[15..].to_vec(),
        "{}: a page holding exactly the remaining 10",
        c.case
    );
    assert!(
        !exact.more,
        "{}: a page holding exactly the remaining keys must have more = false",
        c.case
    );

    let between = format!("{dir}key-095");
    let page = c.list(&dir, Some(&between), 3).await;
    assert_eq!(
        keys(&page.kvs),
        all[10..13].to_vec(),
        "{}: start_after a key that does not exist ('{between}')",
        c.case
    );

    let page = c.list(&dir, Some(&c.prefix), 2).await;
    assert_eq!(
        keys(&page.kvs),
        all[..2].to_vec(),
        "{}: start_after a key before the prefix starts at the prefix",
        c.case
    );

    let page = c.list(&dir, Some(&format!("{dir}zzz")), 10).await;
    assert!(
        page.kvs.is_empty() && !page.more,
        "{}: start_after past the end must give an empty page with more = false, got {page:?}",
        c.case
    );

    let default = c.list(&dir, None, 0).await;
    let n = default.kvs.len();
    assert!(
        n > 0 && n <= 25 && keys(&default.kvs) == all[..n].to_vec() && default.more == (n < 25),
        "{}: limit 0 must return a first page of the store's default size in order with a matching more flag, got {} keys, more = {}",
        c.case,
        n,
        default.more
    );
}

/// [`get_all`] collects every key under a prefix across pages.
pub async fn get_all_pages(store: &dyn StateStore, prefix: &str) {
    let c = Ctx::new(store, "get_all_pages", prefix).await;
    let dir = c.key("list/");
    let all: Vec<String> = (0..25).map(|i| format!("{dir}{i:02}")).collect();
    let mut batch = Batch::new()
        .put(c.key("list-sibling"), "x")
        .put(c.key("listing"), "x");
    for key in &all {
        batch = batch.put(key, "v");
    }
    let written = c.apply("25 keys", batch).await;
    for page_size in [7, 25, 0] {
        let (kvs, revision) = c.ok("get_all", get_all(store, &dir, page_size).await);
        assert_eq!(
            keys(&kvs),
            all,
            "{}: get_all with page size {page_size} must return the 25 keys in order",
            c.case
        );
        assert!(
            revision >= written,
            "{}: get_all revision {revision} must be at least the write revision {written}",
            c.case
        );
    }
}

/// A watch from now (revision 0) sees puts and deletes in order, with their
/// kinds and revisions, and nothing else.
pub async fn watch_from_now(store: &dyn StateStore, prefix: &str) {
    let c = Ctx::new(store, "watch_from_now", prefix).await;
    let (a, b, d) = (c.key("a"), c.key("b"), c.key("d"));
    let mut watch = c.watch(&c.prefix, 0).await;
    let r1 = c.put(&a, "1").await;
    let r2 = c.put(&b, "2").await;
    let r3 = c.apply("delete a", Batch::new().delete(&a)).await;
    let r4 = c
        .apply("put d, delete b", Batch::new().put(&d, "3").delete(&b))
        .await;
    assert!(
        c.ok("delete()", store.delete(&d).await),
        "{}: delete() of '{d}' must return true",
        c.case
    );

    c.expect_put(&mut watch, &a, b"1", r1).await;
    c.expect_put(&mut watch, &b, b"2", r2).await;
    c.expect_delete(&mut watch, &a, r3).await;
    c.expect_put(&mut watch, &d, b"3", r4).await;
    c.expect_delete(&mut watch, &b, r4).await;
    let event = c
        .next_event(&mut watch, &format!("Delete of '{d}' by delete()"))
        .await;
    assert!(
        event.kind == EventKind::Delete && event.kv.key == d && event.kv.mod_revision > r4,
        "{}: expected Delete of '{d}' after revision {r4}, got {event:?}",
        c.case
    );
    c.expect_only_sentinel(&mut watch, &c.prefix, "the delete() of d")
        .await;
}

/// A watch from an older revision replays exactly the events from that
/// revision on (inclusive), then continues live.
pub async fn watch_replay(store: &dyn StateStore, prefix: &str) {
    let c = Ctx::new(store, "watch_replay", prefix).await;
    let (a, b, d, e) = (c.key("a"), c.key("b"), c.key("d"), c.key("e"));
    let r1 = c.put(&a, "1").await;
    let r2 = c.put(&b, "2").await;
    let r3 = c.apply("delete a", Batch::new().delete(&a)).await;
    let r4 = c
        .apply("put d, put a", Batch::new().put(&d, "3").put(&a, "4"))
        .await;

    let mut after_r1 = c.watch(&c.prefix, r1 + 1).await;
    let mut from_r1 = c.watch(&c.prefix, r1).await;
    c.expect_put(&mut from_r1, &a, b"1", r1).await;
    for watch in [&mut after_r1, &mut from_r1] {
        c.expect_put(watch, &b, b"2", r2).await;
        c.expect_delete(watch, &a, r3).await;
        c.expect_put(watch, &d, b"3", r4).await;
        c.expect_put(watch, &a, b"4", r4).await;
    }
    let r5 = c.put(&e, "5").await;
    for watch in [&mut after_r1, &mut from_r1] {
        c.expect_put(watch, &e, b"5", r5).await;
    }
    c.expect_only_sentinel(&mut after_r1, &c.prefix, "the live put of e")
        .await;
    let event = c.next_event(&mut from_r1, "the sentinel").await;
    assert!(
        event.kv.key.ends_with("zz-sentinel"),
        "{}: expected the sentinel on the second watch, got {event:?}",
        c.case
    );
}

/// A watch opened from an old revision while a writer keeps writing sees every
/// write exactly once, in order: nothing falls between replay and live
/// delivery.
pub async fn watch_replay_under_concurrent_writes(store: &dyn StateStore, prefix: &str) {
    const WRITES: u32 = 60;
    let c = Ctx::new(store, "watch_replay_under_concurrent_writes", prefix).await;
    let key = c.key("k");
    let start = c.put(&key, "0").await;

    let writer = async {
        for i in 1..=WRITES {
            c.put(&key, i.to_string()).await;
            tokio::task::yield_now().await;
        }
    };
    let watcher = async {
        // Let the writer get ahead, so part of what follows is replayed and
        // part is delivered live.
        for _ in 0..WRITES / 3 {
            tokio::task::yield_now().await;
        }
        let mut watch = c.watch(&key, start).await;
        let mut last_revision = 0;
        for i in 0..=WRITES {
            let expecting = format!("Put of '{key}' = {i}");
            let event = c.next_event(&mut watch, &expecting).await;
            assert!(
                event.kind == EventKind::Put
                    && event.kv.value == i.to_string().as_bytes()
                    && event.kv.mod_revision > last_revision,
                "{}: expected {expecting} after revision {last_revision}, got {event:?} (a lost, duplicated or reordered event)",
                c.case
            );
            last_revision = event.kv.mod_revision;
        }
        watch
    };
    let ((), mut watch) = tokio::join!(writer, watcher);
    c.expect_only_sentinel(&mut watch, &key, "the last write")
        .await;
}

/// A watch sees only keys under its own prefix, even keys that share the
/// prefix's text without its trailing slash.
pub async fn watch_prefix_isolation(store: &dyn StateStore, prefix: &str) {
    let c = Ctx::new(store, "watch_prefix_isolation", prefix).await;
    let dir = c.key("a/");
    let mut watch = c.watch(&dir, 0).await;
    c.put(&c.key("a"), "x").await;
    c.put(&c.key("ab"), "x").await;
    c.put(&c.key("b/x"), "x").await;
    let r1 = c.put(&c.key("a/x"), "in").await;
    c.expect_put(&mut watch, &c.key("a/x"), b"in", r1).await;
    assert!(
        c.ok("delete()", store.delete(&c.key("ab")).await),
        "{}: delete() of 'ab' must return true",
        c.case
    );
    c.apply(
        "a batch touching both prefixes",
        Batch::new()
            .put(c.key("b/y"), "x")
            .put(c.key("a/y"), "in")
            .put(c.key("c"), "x"),
    )
    .await;
    let event = c.next_event(&mut watch, "the put of 'a/y'").await;
    assert!(
        event.kv.key == c.key("a/y"),
        "{}: expected only the put of 'a/y' from a batch touching other prefixes too, got {event:?}",
        c.case
    );
    c.expect_only_sentinel(&mut watch, &dir, "the put of 'a/y'")
        .await;
}

/// Concurrent read-modify-write with guards: exactly one writer wins per
/// revision and no increment is lost.
pub async fn concurrent_guarded_writers(store: &dyn StateStore, prefix: &str) {
    const WORKERS: usize = 8;
    const INCREMENTS: usize = 5;
    let c = Ctx::new(store, "concurrent_guarded_writers", prefix).await;
    let key = c.key("counter");
    let barrier = Barrier::new(WORKERS);

    let worker = |_: usize| async {
        let mut written = Vec::new();
        let mut won_first_attempt = false;
        for round in 0..INCREMENTS {
            let mut first_attempt = round == 0;
            loop {
                let (value, mod_revision) = match c.get(&key).await {
                    Some(kv) => {
                        let text = kv.value_str().unwrap_or_default().to_owned();
                        match text.parse::<usize>() {
                            Ok(value) => (value, kv.mod_revision),
                            Err(_) => {
                                panic!("{}: the counter holds '{text}', not a number", c.case)
                            }
                        }
                    }
                    None => (0, 0),
                };
                if first_attempt {
                    // Every worker has read the same revision before anyone
                    // writes: exactly one of these first writes may succeed.
                    barrier.wait().await;
                } else {
                    tokio::task::yield_now().await;
                }
                let batch = Batch::new()
                    .guard(&key, mod_revision)
                    .put(&key, (value + 1).to_string());
                match store.apply(batch).await {
                    Ok(applied) => {
                        written.push((applied.revision, value + 1));
                        won_first_attempt |= first_attempt;
                        break;
                    }
                    Err(StoreError::GuardFailed {
                        key: failed,
                        expected,
                        actual,
                    }) => {
                        assert!(
                            failed == key && expected == mod_revision && actual != expected,
                            "{}: expected a guard failure on '{key}' expecting {mod_revision}, got one on '{failed}' expecting {expected}, actual {actual}",
                            c.case
                        );
                    }
                    Err(error) => panic!(
                        "{}: a guarded increment failed with '{error}', expected success or GuardFailed",
                        c.case
                    ),
                }
                first_attempt = false;
            }
        }
        (written, won_first_attempt)
    };
    let results = join_all((0..WORKERS).map(worker)).await;

    let winners = results.iter().filter(|(_, won)| *won).count();
    assert_eq!(
        winners, 1,
        "{}: all {WORKERS} workers guarded on the same revision at first; exactly one must have won",
        c.case
    );
    let writes: Vec<(Revision, usize)> = results.into_iter().flat_map(|(w, _)| w).collect();
    let total = WORKERS * INCREMENTS;
    assert_eq!(
        writes.len(),
        total,
        "{}: every worker must finish its {INCREMENTS} increments",
        c.case
    );
    let revisions: BTreeSet<Revision> = writes.iter().map(|(r, _)| *r).collect();
    assert_eq!(
        revisions.len(),
        total,
        "{}: each successful write must have its own revision",
        c.case
    );
    let values: BTreeSet<usize> = writes.iter().map(|(_, v)| *v).collect();
    assert_eq!(
        values,
        (1..=total).collect(),
        "{}: each value 1..={total} must be written exactly once (no lost update)",
        c.case
    );
    let kv = c.must_get(&key).await;
    assert_eq!(
        kv.value_str(),
        Some(total.to_string().as_str()),
        "{}: final counter",
        c.case
    );
    assert_eq!(
        Some(&kv.mod_revision),
        revisions.last(),
        "{}: the counter's mod_revision must be the last successful write's",
        c.case
    );
}

/// A batch with more than `limit` ops, or more than `limit` guards, gives
/// [`StoreError::TooLarge`] and writes nothing; exactly `limit` ops are fine.
/// `limit` is the store's transaction limit (etcd's `--max-txn-ops`, 128 by
/// default), so this case is not part of [`run_all`].
pub async fn too_large(store: &dyn StateStore, prefix: &str, limit: usize) {
    let c = Ctx::new(store, "too_large", prefix).await;
    let puts = |n: usize| {
        (0..n).fold(Batch::new(), |batch, i| {
            batch.put(c.key(&format!("k{i:05}")), "v")
        })
    };

    match store.apply(puts(limit + 1)).await {
        Err(StoreError::TooLarge { .. }) => {}
        other => panic!(
            "{}: expected TooLarge for {} ops (limit {limit}), got {other:?}",
            c.case,
            limit + 1
        ),
    }
    let guards = (0..=limit).fold(Batch::new().put(c.key("guarded"), "v"), |batch, i| {
        batch.guard(c.key(&format!("g{i:05}")), 0)
    });
    match store.apply(guards).await {
        Err(StoreError::TooLarge { .. }) => {}
        other => panic!(
            "{}: expected TooLarge for {} guards (limit {limit}), got {other:?}",
            c.case,
            limit + 1
        ),
    }
    let page = c.list(&c.prefix, None, 0).await;
    assert!(
        page.kvs.is_empty(),
        "{}: rejected batches must write nothing, found {:?}",
        c.case,
        keys(&page.kvs)
    );

    let revision = c
        .apply(&format!("a batch of exactly {limit} ops"), puts(limit))
        .await;
    let (kvs, _) = c.ok("get_all", get_all(store, &c.prefix, 0).await);
    assert_eq!(
        kvs.len(),
        limit,
        "{}: a batch of exactly {limit} ops must write every key",
        c.case
    );
    assert!(
        kvs.iter().all(|kv| kv.mod_revision == revision),
        "{}: every key of the batch must carry its revision {revision}",
        c.case
    );
}
