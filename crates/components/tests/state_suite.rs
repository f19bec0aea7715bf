//! One behavioural suite for every state store: each case in `cases` runs against `state.in-memory`,
//! `state.sqlite` (a temp dir) and `state.redis` (a real `redis-server` this test starts on 127.0.0.1 and kills).
//! Stores are built through the public factory, as the sidecar builds them.
//!
//! Run: `cargo test -p ward-components --test state_suite` (needs `redis-server`; the Redis cases fail, not skip,
//! without it).

mod common;

use std::any::Any;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::RedisServer;
use ward_components::state::{
    Concurrency, DeleteRequest, KeyPrefix, SetRequest, StateError, StateStore, TransactionOp, build_state_store,
};
use ward_components::{BuildContext, ComponentMetadata};

/// A built store plus whatever must outlive it (temp dir, Redis process).
pub struct Fixture {
    pub store: Arc<dyn StateStore>,
    _guard: Box<dyn Any + Send>,
}

fn ctx(data_dir: PathBuf) -> BuildContext {
    BuildContext {
        base_dir: data_dir.clone(),
        working_dir: data_dir.clone(),
        data_dir,
        app_id: "app1".into(),
        namespace: String::new(),
    }
}

async fn build(ty: &str, md: ComponentMetadata, data_dir: PathBuf) -> Arc<dyn StateStore> {
    match build_state_store(ty, "v1", "statestore", &md, &ctx(data_dir)).await {
        Ok(s) => s,
        Err(e) => panic!("building {ty}: {e}"),
    }
}

async fn in_memory() -> Fixture {
    Fixture {
        store: build("state.in-memory", ComponentMetadata::new(), std::env::temp_dir()).await,
        _guard: Box::new(()),
    }
}

async fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let md: ComponentMetadata =
        [("connectionString", dir.path().join("state.db").to_string_lossy().into_owned())].into_iter().collect();
    Fixture { store: build("state.sqlite", md, dir.path().to_owned()).await, _guard: Box::new(dir) }
}

async fn redis() -> Fixture {
    let server = RedisServer::start().await;
    let md: ComponentMetadata = [("redisHost", server.addr())].into_iter().collect();
    Fixture { store: build("state.redis", md, std::env::temp_dir()).await, _guard: Box::new(server) }
}

macro_rules! case {
    ($make:ident, $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            crate::common::bounded(std::time::Duration::from_secs(60), async {
                let fx = crate::$make().await;
                crate::cases::$name(fx.store.clone()).await;
            })
            .await;
        }
    };
}

macro_rules! suite {
    ($make:ident) => {
        mod $make {
            case!($make, crud);
            case!($make, binary_values);
            case!($make, etags);
            case!($make, malformed_etags);
            case!($make, first_write_vs_last_write);
            case!($make, bulk_get);
            case!($make, ttl_expiry);
            case!($make, transaction_all_or_nothing);
            case!($make, transaction_sequential_semantics);
            case!($make, concurrent_counter);
            case!($make, key_prefix);
        }
    };
}

suite!(in_memory);
suite!(sqlite);
suite!(redis);

mod cases {
    use super::*;

    pub(crate) fn set(key: &str, value: &str) -> SetRequest {
        SetRequest::new(key, Bytes::copy_from_slice(value.as_bytes()))
    }

    async fn value_of(s: &dyn StateStore, key: &str) -> Option<String> {
        s.get(key).await.expect("get").map(|i| String::from_utf8(i.value.to_vec()).expect("utf8"))
    }

    async fn etag_of(s: &dyn StateStore, key: &str) -> String {
        s.get(key).await.expect("get").expect("present").etag
    }

    fn assert_mismatch(r: Result<(), StateError>, key: &str) {
        match r {
            Err(StateError::EtagMismatch { key: k }) => assert_eq!(k, key),
            other => panic!("expected EtagMismatch for {key}, got {other:?}"),
        }
    }

    fn assert_invalid(r: Result<(), StateError>, key: &str) {
        match r {
            Err(StateError::InvalidEtag { key: k }) => assert_eq!(k, key),
            other => panic!("expected InvalidEtag for {key}, got {other:?}"),
        }
    }

    pub async fn crud(s: Arc<dyn StateStore>) {
        s.ping().await.expect("ping");
        assert_eq!(value_of(&*s, "k").await, None);
        s.set(set("k", "v1")).await.expect("set");
        let first = s.get("k").await.unwrap().unwrap();
        assert_eq!(first.value, Bytes::from_static(b"v1"));
        assert!(!first.etag.is_empty());
        s.set(set("k", "v2")).await.expect("overwrite");
        let second = s.get("k").await.unwrap().unwrap();
        assert_eq!(second.value, Bytes::from_static(b"v2"));
        assert_ne!(first.etag, second.etag, "every write issues a new etag");
        s.delete(DeleteRequest::new("k")).await.expect("delete");
        assert_eq!(value_of(&*s, "k").await, None);
        // Deleting what is not there, without an etag, is fine.
        s.delete(DeleteRequest::new("k")).await.expect("delete absent");
        // Empty values and odd keys are values and keys like any other.
        s.set(set("weird key/ü|x", "")).await.expect("set empty");
        assert_eq!(value_of(&*s, "weird key/ü|x").await.as_deref(), Some(""));
    }

    pub async fn binary_values(s: Arc<dyn StateStore>) {
        let raw = Bytes::from_static(&[0, 159, 146, 150, 255, b'\n', 0]);
        s.set(SetRequest::new("bin", raw.clone())).await.unwrap();
        assert_eq!(s.get("bin").await.unwrap().unwrap().value, raw);
    }

    pub async fn etags(s: Arc<dyn StateStore>) {
        s.set(set("k", "v1")).await.unwrap();
        let old = etag_of(&*s, "k").await;
        // Matching etag: accepted, with either concurrency.
        s.set(set("k", "v2").with_etag(old.clone())).await.expect("matching etag");
        let current = etag_of(&*s, "k").await;
        assert_ne!(old, current);
        s.set(set("k", "v3").with_etag(current.clone()).with_concurrency(Concurrency::FirstWrite))
            .await
            .expect("matching etag, first-write");
        let current = etag_of(&*s, "k").await;
        // A stale etag: refused for set and delete, whatever the concurrency; value untouched.
        assert_mismatch(s.set(set("k", "x").with_etag(old.clone())).await, "k");
        assert_mismatch(
            s.set(set("k", "x").with_etag(old.clone()).with_concurrency(Concurrency::LastWrite)).await,
            "k",
        );
        assert_mismatch(s.delete(DeleteRequest::new("k").with_etag(old.clone())).await, "k");
        assert_eq!(value_of(&*s, "k").await.as_deref(), Some("v3"));
        // An empty etag is no etag (Dapr).
        s.set(set("k", "v4").with_etag("")).await.expect("empty etag");
        let current2 = etag_of(&*s, "k").await;
        assert_ne!(current, current2);
        s.delete(DeleteRequest::new("k").with_etag(current2)).await.expect("delete with etag");
        assert_eq!(value_of(&*s, "k").await, None);
        // An etag on a key that does not exist cannot match.
        assert_mismatch(s.set(set("k", "x").with_etag(old.clone())).await, "k");
        assert_mismatch(s.delete(DeleteRequest::new("k").with_etag(old)).await, "k");
        assert_eq!(value_of(&*s, "k").await, None);
    }

    /// Dapr's rule: a store whose ETags have a format it parses (Redis: a version number) reports an ETag it cannot
    /// parse as invalid (400); a store that compares ETags as strings (in-memory, SQLite: UUIDs) reports any other
    /// string as a mismatch (409), like a stale one.
    pub async fn malformed_etags(s: Arc<dyn StateStore>) {
        s.set(set("k", "v")).await.unwrap();
        let parsed_format = etag_of(&*s, "k").await.parse::<u64>().is_ok();
        let expect = |r: Result<(), StateError>, key: &str| {
            if parsed_format { assert_invalid(r, key) } else { assert_mismatch(r, key) }
        };
        // A well-formed ETag of no version: a mismatch everywhere (issue 19 row 8: Dapr answers 409).
        assert_mismatch(s.set(set("k", "x").with_etag("9999")).await, "k");
        expect(s.set(set("k", "x").with_etag("not-an-etag")).await, "k");
        expect(s.delete(DeleteRequest::new("k").with_etag("not-an-etag")).await, "k");
        expect(
            s.transact(vec![
                TransactionOp::Set(set("other", "x")),
                TransactionOp::Delete(DeleteRequest::new("k").with_etag("not-an-etag")),
            ])
            .await,
            "k",
        );
        assert_eq!(value_of(&*s, "k").await.as_deref(), Some("v"));
        assert_eq!(value_of(&*s, "other").await, None);
    }

    pub async fn first_write_vs_last_write(s: Arc<dyn StateStore>) {
        let fw = |v| set("k", v).with_concurrency(Concurrency::FirstWrite);
        s.set(fw("v1")).await.expect("first-write on a new key");
        assert_mismatch(s.set(fw("v2")).await, "k");
        assert_eq!(value_of(&*s, "k").await.as_deref(), Some("v1"));
        s.set(set("k", "v3")).await.expect("last-write without etag overwrites");
        assert_eq!(value_of(&*s, "k").await.as_deref(), Some("v3"));
        s.delete(DeleteRequest::new("k")).await.unwrap();
        s.set(fw("v4")).await.expect("first-write after delete");
        assert_eq!(value_of(&*s, "k").await.as_deref(), Some("v4"));
    }

    pub async fn bulk_get(s: Arc<dyn StateStore>) {
        s.set(set("a", "1")).await.unwrap();
        s.set(set("b", "2")).await.unwrap();
        let keys: Vec<String> = ["a", "missing", "b", "a"].map(String::from).to_vec();
        let got = s.bulk_get(&keys).await.expect("bulk get");
        let shown: Vec<(String, Option<Bytes>)> = got.into_iter().map(|(k, i)| (k, i.map(|i| i.value))).collect();
        assert_eq!(
            shown,
            vec![
                ("a".into(), Some(Bytes::from_static(b"1"))),
                ("missing".into(), None),
                ("b".into(), Some(Bytes::from_static(b"2"))),
                ("a".into(), Some(Bytes::from_static(b"1"))),
            ]
        );
        assert!(s.bulk_get(&[]).await.unwrap().is_empty());
    }

    pub async fn ttl_expiry(s: Arc<dyn StateStore>) {
        let ttl = Duration::from_millis(1000);
        s.set(set("t", "v").with_ttl(ttl)).await.unwrap();
        s.set(set("kept", "v").with_ttl(ttl)).await.unwrap();
        // Setting again without a TTL clears the expiry.
        s.set(set("kept", "v2")).await.unwrap();
        s.set(set("zero", "v").with_ttl(Duration::ZERO)).await.unwrap();
        assert_eq!(value_of(&*s, "t").await.as_deref(), Some("v"));
        tokio::time::sleep(ttl + Duration::from_millis(400)).await;
        assert_eq!(value_of(&*s, "t").await, None, "expired item must be invisible");
        let bulk = s.bulk_get(&["t".to_string()]).await.unwrap();
        assert!(bulk[0].1.is_none());
        assert_eq!(value_of(&*s, "kept").await.as_deref(), Some("v2"));
        assert_eq!(value_of(&*s, "zero").await.as_deref(), Some("v"));
        // An expired key counts as absent for first-write and for etag checks.
        s.set(set("t", "again").with_concurrency(Concurrency::FirstWrite))
            .await
            .expect("first-write over an expired item");
        assert_eq!(value_of(&*s, "t").await.as_deref(), Some("again"));
    }

    pub async fn transaction_all_or_nothing(s: Arc<dyn StateStore>) {
        s.set(set("a", "a0")).await.unwrap();
        s.set(set("b", "b0")).await.unwrap();
        let a_before = s.get("a").await.unwrap().unwrap();
        let stale_b = etag_of(&*s, "b").await;
        s.set(set("b", "b1")).await.unwrap();
        // The 2nd op has a wrong etag: the 1st must not be applied.
        let r = s
            .transact(vec![
                TransactionOp::Set(set("a", "a1")),
                TransactionOp::Set(set("b", "b2").with_etag(stale_b.clone())),
                TransactionOp::Set(set("c", "c1")),
            ])
            .await;
        assert_mismatch(r, "b");
        assert_eq!(s.get("a").await.unwrap().unwrap(), a_before);
        assert_eq!(value_of(&*s, "b").await.as_deref(), Some("b1"));
        assert_eq!(value_of(&*s, "c").await, None);
        // First-write conflict in the middle: also nothing applied.
        let r = s
            .transact(vec![
                TransactionOp::Delete(DeleteRequest::new("a")),
                TransactionOp::Set(set("b", "b2").with_concurrency(Concurrency::FirstWrite)),
            ])
            .await;
        assert_mismatch(r, "b");
        assert_eq!(value_of(&*s, "a").await.as_deref(), Some("a0"));
        // All checks pass: everything applied.
        let b_now = etag_of(&*s, "b").await;
        s.transact(vec![
            TransactionOp::Set(set("a", "a1").with_etag(a_before.etag.clone())),
            TransactionOp::Delete(DeleteRequest::new("b").with_etag(b_now)),
            TransactionOp::Set(set("c", "c1").with_concurrency(Concurrency::FirstWrite)),
        ])
        .await
        .expect("transaction");
        assert_eq!(value_of(&*s, "a").await.as_deref(), Some("a1"));
        assert_eq!(value_of(&*s, "b").await, None);
        assert_eq!(value_of(&*s, "c").await.as_deref(), Some("c1"));
        s.transact(Vec::new()).await.expect("empty transaction");
    }

    pub async fn transaction_sequential_semantics(s: Arc<dyn StateStore>) {
        // Later operations see earlier ones of the same transaction.
        s.transact(vec![
            TransactionOp::Set(set("x", "1").with_concurrency(Concurrency::FirstWrite)),
            TransactionOp::Set(set("x", "2")),
            TransactionOp::Delete(DeleteRequest::new("x")),
            TransactionOp::Set(set("x", "3").with_concurrency(Concurrency::FirstWrite)),
        ])
        .await
        .expect("sequential transaction");
        assert_eq!(value_of(&*s, "x").await.as_deref(), Some("3"));
        let r = s
            .transact(vec![
                TransactionOp::Set(set("y", "1")),
                TransactionOp::Set(set("y", "2").with_concurrency(Concurrency::FirstWrite)),
            ])
            .await;
        assert_mismatch(r, "y");
        assert_eq!(value_of(&*s, "y").await, None);
    }

    pub async fn concurrent_counter(s: Arc<dyn StateStore>) {
        const TASKS: usize = 16;
        const INCREMENTS: usize = 25;
        s.set(set("counter", "0")).await.unwrap();
        let mut handles = Vec::new();
        for _ in 0..TASKS {
            let s = s.clone();
            handles.push(tokio::spawn(async move {
                let mut conflicts = 0usize;
                for _ in 0..INCREMENTS {
                    loop {
                        let item = s.get("counter").await.expect("get").expect("present");
                        let n: u64 = std::str::from_utf8(&item.value).unwrap().parse().unwrap();
                        let next = (n + 1).to_string();
                        match s.set(set("counter", &next).with_etag(item.etag)).await {
                            Ok(()) => break,
                            Err(StateError::EtagMismatch { .. }) => {
                                conflicts += 1;
                                assert!(conflicts < 100_000, "livelock");
                                tokio::task::yield_now().await;
                            }
                            Err(e) => panic!("unexpected error: {e}"),
                        }
                    }
                }
                conflicts
            }));
        }
        for h in handles {
            h.await.expect("task");
        }
        assert_eq!(
            value_of(&*s, "counter").await.as_deref(),
            Some((TASKS * INCREMENTS).to_string().as_str()),
            "every increment applied exactly once"
        );
    }

    pub async fn key_prefix(s: Arc<dyn StateStore>) {
        let appid = KeyPrefix::parse("appid").unwrap();
        let k1 = appid.apply("app1", "statestore", "", "order");
        let k2 = appid.apply("app2", "statestore", "", "order");
        assert_ne!(k1, k2);
        s.set(set(&k1, "one")).await.unwrap();
        s.set(set(&k2, "two")).await.unwrap();
        assert_eq!(value_of(&*s, &k1).await.as_deref(), Some("one"));
        assert_eq!(value_of(&*s, &k2).await.as_deref(), Some("two"));
        let got = s.bulk_get(&[k1.clone(), k2.clone()]).await.unwrap();
        let apps: Vec<&str> = got.iter().map(|(k, _)| appid.strip(k)).collect();
        assert_eq!(apps, ["order", "order"]);
        // `name` shares one key space across apps.
        let shared = KeyPrefix::parse("name").unwrap();
        s.set(set(&shared.apply("app1", "statestore", "", "cfg"), "v")).await.unwrap();
        assert_eq!(value_of(&*s, &shared.apply("app2", "statestore", "", "cfg")).await.as_deref(), Some("v"));
        // A literal prefix and `none`.
        let lit = KeyPrefix::parse("Tenant-A").unwrap();
        assert_eq!(lit.apply("app1", "statestore", "", "k"), "tenant-a||k");
        assert_eq!(KeyPrefix::None.apply("app1", "statestore", "ns", "k"), "k");
    }
}
