//! `state.sqlite` beyond the shared suite: durability across a process kill, reopening, sharing one file between
//! two stores (as two sidecars would), Dapr's table layout, and the expiry sweep.
//!
//! Run: `cargo test -p ward-components --test sqlite_store`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{ChildTest, bounded};
use ward_components::state::{SetRequest, SqliteStateOptions, SqliteStateStore, StateStore, build_state_store};
use ward_components::{BuildContext, ComponentMetadata};

const CHILD_DB_ENV: &str = "WARD_TEST_SQLITE_CHILD_DB";
const WRITTEN: &str = "WARD-CHILD-WRITTEN";
const KEYS: usize = 50;

async fn open(path: &Path) -> SqliteStateStore {
    SqliteStateStore::open(SqliteStateOptions::new(path.to_string_lossy())).await.expect("open sqlite store")
}

/// Not a test on its own: the child half of `acknowledged_writes_survive_kill`. Without the env var it returns.
#[test]
fn child_writer() {
    let Ok(path) = std::env::var(CHILD_DB_ENV) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let store = open(Path::new(&path)).await;
        for i in 0..KEYS {
            store.set(SetRequest::new(format!("k{i}"), format!("v{i}"))).await.expect("set");
        }
        // Every write above returned Ok; tell the parent, then wait to be killed.
        println!("{WRITTEN}");
        tokio::time::sleep(Duration::from_secs(120)).await;
    });
}

#[tokio::test]
async fn acknowledged_writes_survive_kill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let db_str = db.to_string_lossy().into_owned();
    let mut child = ChildTest::spawn("child_writer", &[(CHILD_DB_ENV, &db_str)]);
    let stdout = child.child.stdout.take().expect("stdout");
    // Reading the pipe blocks; do it on the blocking pool, bounded.
    let saw = bounded(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || {
            BufReader::new(stdout).lines().map_while(Result::ok).any(|l| l.ends_with(WRITTEN))
        }),
    )
    .await
    .unwrap();
    assert!(saw, "child never reported its writes");
    // SIGKILL: no destructor, no checkpoint, no close.
    child.child.kill().unwrap();
    child.child.wait().unwrap();
    bounded(Duration::from_secs(30), async {
        let store = open(&db).await;
        for i in 0..KEYS {
            let item = store.get(&format!("k{i}")).await.unwrap();
            assert_eq!(item.map(|i| i.value), Some(Bytes::from(format!("v{i}"))), "k{i} lost");
        }
    })
    .await;
}

#[tokio::test]
async fn data_survives_drop_and_reopen() {
    bounded(Duration::from_secs(30), async {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let store = open(&db).await;
        store.set(SetRequest::new("k", "v")).await.unwrap();
        let etag = store.get("k").await.unwrap().unwrap().etag;
        drop(store);
        let store = open(&db).await;
        let item = store.get("k").await.unwrap().unwrap();
        assert_eq!(item.value, Bytes::from_static(b"v"));
        assert_eq!(item.etag, etag, "etags survive a restart");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_share_one_file() {
    bounded(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("shared.db");
        let a: Arc<dyn StateStore> = Arc::new(open(&db).await);
        let b: Arc<dyn StateStore> = Arc::new(open(&db).await);
        a.set(SetRequest::new("counter", "0")).await.unwrap();
        let mut tasks = Vec::new();
        for s in [a.clone(), b.clone(), a.clone(), b.clone()] {
            tasks.push(tokio::spawn(async move {
                for _ in 0..20 {
                    loop {
                        let item = s.get("counter").await.unwrap().unwrap();
                        let n: u64 = std::str::from_utf8(&item.value).unwrap().parse().unwrap();
                        if s.set(SetRequest::new("counter", (n + 1).to_string()).with_etag(item.etag)).await.is_ok() {
                            break;
                        }
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let v = b.get("counter").await.unwrap().unwrap().value;
        assert_eq!(v, Bytes::from_static(b"80"));
    })
    .await;
}

#[tokio::test]
async fn table_layout_is_daprs() {
    bounded(Duration::from_secs(30), async {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let store = open(&db).await;
        store.set(SetRequest::new("text", "{\"a\":1}")).await.unwrap();
        store.set(SetRequest::new("bin", Bytes::from_static(&[0xff, 0x00]))).await.unwrap();
        let etag = store.get("text").await.unwrap().unwrap().etag;
        assert!(uuid::Uuid::try_parse(&etag).is_ok(), "etags are UUIDs, as in Dapr");
        drop(store);
        let rows = tokio::task::spawn_blocking(move || {
            let conn = rusqlite::Connection::open(&db).unwrap();
            let cols: Vec<String> = conn
                .prepare("SELECT name FROM pragma_table_info('state') ORDER BY cid")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(cols, ["key", "value", "is_binary", "etag", "expiration_time", "update_time"]);
            let migrations: String =
                conn.query_row("SELECT value FROM metadata WHERE key = 'migrations'", [], |r| r.get(0)).unwrap();
            assert_eq!(migrations, "1");
            let mut stmt = conn.prepare("SELECT key, value, is_binary FROM state ORDER BY key").unwrap();
            stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, bool>(2)?)))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap()
        })
        .await
        .unwrap();
        assert_eq!(
            rows,
            vec![("bin".to_owned(), "/wA=".to_owned(), true), ("text".to_owned(), "{\"a\":1}".to_owned(), false),]
        );
    })
    .await;
}

#[tokio::test]
async fn sweep_deletes_expired_rows() {
    bounded(Duration::from_secs(30), async {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let store = open(&db).await;
        store.set(SetRequest::new("short", "v").with_ttl(Duration::from_millis(200))).await.unwrap();
        store.set(SetRequest::new("long", "v")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(store.cleanup_expired().await.unwrap(), 1);
        assert!(store.get("long").await.unwrap().is_some());
    })
    .await;
}

#[tokio::test]
async fn factory_defaults_to_a_private_file_under_ward_home() {
    bounded(Duration::from_secs(30), async {
        let home = tempfile::tempdir().unwrap();
        let ctx = BuildContext {
            data_dir: home.path().to_owned(),
            base_dir: home.path().to_owned(),
            working_dir: home.path().to_owned(),
            app_id: "app1".into(),
            namespace: String::new(),
        };
        let store =
            build_state_store("state.sqlite", "v1", "mystore", &ComponentMetadata::new(), &ctx).await.expect("build");
        store.set(SetRequest::new("k", "v")).await.unwrap();
        let file = home.path().join("state").join("mystore.db");
        assert!(file.exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(home.path().join("state")).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "state dir must not be group/world accessible");
        }
        // A bad connection string is reported on connectionString, without echoing it.
        let md: ComponentMetadata =
            [("connectionString", "file:x.db?_pragma=journal_mode(DELETE)")].into_iter().collect();
        let e = build_state_store("state.sqlite", "v1", "s", &md, &ctx).await.err().unwrap();
        assert_eq!(e.field.as_deref(), Some("connectionString"));
        let md: ComponentMetadata =
            [("connectionString", home.path().join("no/such/dir/x.db").to_string_lossy().into_owned())]
                .into_iter()
                .collect();
        let e = build_state_store("state.sqlite", "v1", "s", &md, &ctx).await.err().unwrap();
        assert_eq!(e.field.as_deref(), Some("connectionString"));
        assert!(!e.to_string().contains("no/such/dir"));
    })
    .await;
}
