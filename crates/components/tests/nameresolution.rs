//! The SQLite name-resolution registry: register/resolve, load sharing between instances, deregistration (explicit
//! and on drop), refresh keeping a row alive past the freshness window, stale rows ignored and swept, two
//! registries (as two sidecar processes) on one file, and Dapr's configuration rules.
//!
//! Run: `cargo test -p ward-components --test nameresolution`. Uses the shortest intervals Dapr allows
//! (timeout 1s, updateInterval 2s), so a few tests take a few seconds.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::{bounded, eventually};
use ward_components::nameresolution::{RegistryOptions, SqliteRegistry};

fn fast_options(db: &Path) -> RegistryOptions {
    let mut o = RegistryOptions::new(db.to_string_lossy());
    o.timeout = Duration::from_secs(1);
    o.update_interval = Duration::from_secs(2);
    o
}

async fn open(db: &Path) -> SqliteRegistry {
    SqliteRegistry::open(fast_options(db)).await.expect("open registry")
}

#[tokio::test]
async fn register_resolve_deregister() {
    bounded(Duration::from_secs(30), async {
        let dir = tempfile::tempdir().unwrap();
        let reg = open(&dir.path().join("nr.db")).await;
        assert_eq!(reg.resolve("orders", "").await.unwrap(), None);
        let r = reg.register("orders", "", "127.0.0.1:50001").await.unwrap();
        assert_eq!(r.address(), "127.0.0.1:50001");
        assert_eq!(reg.resolve("orders", "").await.unwrap().as_deref(), Some("127.0.0.1:50001"));
        // Other app ids and other namespaces do not see it.
        assert_eq!(reg.resolve("payments", "").await.unwrap(), None);
        assert_eq!(reg.resolve("orders", "prod").await.unwrap(), None);
        r.deregister().await.unwrap();
        assert_eq!(reg.resolve("orders", "").await.unwrap(), None);
        // Refused inputs.
        assert!(reg.register("", "", "127.0.0.1:1").await.is_err());
        assert!(reg.register("orders", "", "").await.is_err());
    })
    .await;
}

#[tokio::test]
async fn instances_share_the_load() {
    bounded(Duration::from_secs(30), async {
        let dir = tempfile::tempdir().unwrap();
        let reg = open(&dir.path().join("nr.db")).await;
        let _a = reg.register("orders", "", "127.0.0.1:50001").await.unwrap();
        let _b = reg.register("orders", "", "127.0.0.1:50002").await.unwrap();
        let _other = reg.register("payments", "", "127.0.0.1:50003").await.unwrap();
        let mut seen = BTreeSet::new();
        for _ in 0..200 {
            seen.insert(reg.resolve("orders", "").await.unwrap().expect("an instance"));
        }
        let want: BTreeSet<String> = ["127.0.0.1:50001", "127.0.0.1:50002"].map(String::from).into();
        assert_eq!(seen, want, "both instances chosen, never another app's");
    })
    .await;
}

#[tokio::test]
async fn drop_removes_the_row() {
    bounded(Duration::from_secs(30), async {
        let dir = tempfile::tempdir().unwrap();
        let reg = open(&dir.path().join("nr.db")).await;
        let r = reg.register("orders", "", "127.0.0.1:50001").await.unwrap();
        drop(r);
        eventually(Duration::from_secs(5), "row removed after drop", || {
            let reg = reg.clone();
            async move { reg.resolve("orders", "").await.unwrap().is_none().then_some(()) }
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_keeps_a_registration_alive_and_stale_rows_expire() {
    bounded(Duration::from_secs(30), async {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("nr.db");
        // No periodic sweep here: this test sweeps by hand and counts.
        let mut opts = fast_options(&db);
        opts.cleanup_interval = None;
        let reg = SqliteRegistry::open(opts).await.unwrap();
        let _live = reg.register("orders", "", "127.0.0.1:50001").await.unwrap();
        // A crashed instance: a row nobody refreshes any more (written as daprd would, 10s ago).
        insert_dead_row(&db, "127.0.0.1:59999").await;
        // Well past the 2s window: the live row is still fresh, the dead one is never chosen.
        tokio::time::sleep(Duration::from_millis(3500)).await;
        for _ in 0..50 {
            assert_eq!(reg.resolve("orders", "").await.unwrap().as_deref(), Some("127.0.0.1:50001"));
        }
        assert_eq!(reg.cleanup_stale().await.unwrap(), 1, "only the dead row is swept");
        assert_eq!(row_count(&db).await, 1);
    })
    .await;
}

async fn insert_dead_row(db: &Path, address: &'static str) {
    let db = db.to_owned();
    tokio::task::spawn_blocking(move || {
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.execute(
            "INSERT INTO hosts (registration_id, address, app_id, namespace, last_update)
             VALUES (?1, ?1, 'orders', '', unixepoch('now') - 10)",
            [address],
        )
        .unwrap();
    })
    .await
    .unwrap();
}

/// Resolution uses the (app_id, namespace) index, so its cost does not grow with the number of registered apps
/// (the scale issue: a full `SCAN hosts` per invocation). Existing registries get the index on open.
#[tokio::test]
async fn resolution_uses_the_app_index() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nr.db");
    let _reg = open(&db).await;
    let db2 = db.clone();
    let plan = tokio::task::spawn_blocking(move || {
        let conn = rusqlite::Connection::open(db2).unwrap();
        let mut statement = conn
            .prepare(
                "EXPLAIN QUERY PLAN SELECT address FROM hosts WHERE app_id = 'a' AND namespace = 'n'
                   AND unixepoch('now') - last_update < 5",
            )
            .unwrap();
        let rows = statement.query_map([], |r| r.get::<_, String>(3)).unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
    })
    .await
    .unwrap();
    assert!(plan.contains("USING INDEX hosts_app_id_namespace_idx"), "{plan}");
}

async fn row_count(db: &Path) -> i64 {
    let db = db.to_owned();
    tokio::task::spawn_blocking(move || {
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.query_row("SELECT COUNT(*) FROM hosts", [], |r| r.get::<_, i64>(0)).unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_sweep_deletes_stale_rows() {
    bounded(Duration::from_secs(30), async {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("nr.db");
        let mut quiet = fast_options(&db);
        quiet.cleanup_interval = None;
        let _a = SqliteRegistry::open(quiet).await.unwrap();
        insert_dead_row(&db, "127.0.0.1:59998").await;
        assert_eq!(row_count(&db).await, 1);
        let mut sweeping = fast_options(&db);
        sweeping.cleanup_interval = Some(Duration::from_secs(1));
        let _b = SqliteRegistry::open(sweeping).await.unwrap();
        eventually(Duration::from_secs(10), "stale row swept", || {
            let db = db.clone();
            async move { (row_count(&db).await == 0).then_some(()) }
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swept_registration_comes_back() {
    bounded(Duration::from_secs(30), async {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("nr.db");
        let reg = open(&db).await;
        let r = reg.register("orders", "", "127.0.0.1:50001").await.unwrap();
        let id = r.id().to_owned();
        // Someone deletes our row (e.g. a sweep while this process was suspended).
        tokio::task::spawn_blocking(move || {
            let conn = rusqlite::Connection::open(db).unwrap();
            conn.execute("DELETE FROM hosts WHERE registration_id = ?1", [id]).unwrap();
        })
        .await
        .unwrap();
        eventually(Duration::from_secs(5), "registration restored by refresh", || {
            let reg = reg.clone();
            async move { reg.resolve("orders", "").await.unwrap() }
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_registries_share_one_file() {
    bounded(Duration::from_secs(30), async {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("nr.db");
        let a = open(&db).await;
        let b = open(&db).await;
        let _ra = a.register("orders", "", "127.0.0.1:50001").await.unwrap();
        let _rb = b.register("orders", "", "127.0.0.1:50002").await.unwrap();
        let mut seen = BTreeSet::new();
        for i in 0..100 {
            let reg = if i % 2 == 0 { &a } else { &b };
            seen.insert(reg.resolve("orders", "").await.unwrap().unwrap());
        }
        assert_eq!(seen.len(), 2);
        // The same address registered again takes the row over (a restarted sidecar on the same port).
        let rc = b.register("checkout", "", "127.0.0.1:50001").await.unwrap();
        assert_eq!(a.resolve("checkout", "").await.unwrap().as_deref(), Some("127.0.0.1:50001"));
        assert_eq!(a.resolve("orders", "").await.unwrap().as_deref(), Some("127.0.0.1:50002"));
        rc.deregister().await.unwrap();
    })
    .await;
}

#[test]
fn configuration_rules() {
    let cfg = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let o = RegistryOptions::from_configuration(&cfg(&[("connectionString", "/tmp/nr.db")])).unwrap();
    assert_eq!(o, RegistryOptions::new("/tmp/nr.db"));
    assert_eq!(o.update_interval, Duration::from_secs(5));
    assert_eq!(o.timeout, Duration::from_secs(1));
    assert_eq!(o.busy_timeout, Duration::from_millis(800));
    assert_eq!(o.cleanup_interval, Some(Duration::from_secs(3600)));
    assert_eq!(o.table_name, "hosts");

    let o = RegistryOptions::from_configuration(&cfg(&[
        ("CONNECTIONSTRING", "/tmp/nr.db"),
        ("updateInterval", "10"),
        ("timeout", "2s"),
        ("tableName", "nr_hosts"),
        ("cleanupInterval", "0"),
        ("disableWAL", "true"),
    ]))
    .unwrap();
    assert_eq!(o.update_interval, Duration::from_secs(10));
    assert_eq!(o.timeout, Duration::from_secs(2));
    assert_eq!(o.cleanup_interval, None);
    assert!(o.disable_wal);

    struct Case {
        name: &'static str,
        cfg: &'static [(&'static str, &'static str)],
        field: &'static str,
    }
    let bad = [
        Case { name: "no connection string", cfg: &[], field: "connectionString" },
        Case { name: "timeout below 1s", cfg: &[("connectionString", "x"), ("timeout", "500ms")], field: "timeout" },
        Case {
            name: "update interval not > timeout + 1s",
            cfg: &[("connectionString", "x"), ("timeout", "2s"), ("updateInterval", "2s")],
            field: "updateInterval",
        },
        Case {
            name: "fractional update interval",
            cfg: &[("connectionString", "x"), ("updateInterval", "2500ms")],
            field: "updateInterval",
        },
        Case { name: "bad table", cfg: &[("connectionString", "x"), ("tableName", "a b")], field: "tableName" },
        Case { name: "bad duration", cfg: &[("connectionString", "x"), ("busyTimeout", "soon")], field: "busyTimeout" },
    ];
    for c in bad {
        let e = RegistryOptions::from_configuration(&cfg(c.cfg)).unwrap_err();
        assert_eq!(e.field.as_deref(), Some(c.field), "{}", c.name);
    }
}

#[tokio::test]
async fn open_refuses_invalid_options() {
    let mut o = RegistryOptions::new("/tmp/whatever.db");
    o.update_interval = Duration::from_secs(1);
    let r = bounded(Duration::from_secs(10), SqliteRegistry::open(o)).await;
    assert!(r.is_err());
}

/// Sidecars started together open one fresh registry file at the same moment: each must wait its turn (turning the
/// file to WAL and creating the tables need the write lock), never fail with "database is locked". Seen failing in
/// the side-by-side benchmark, where two sidecars start in the same millisecond. Separate processes, as sidecars
/// are: SQLite resolves locks between connections of one process differently.
#[test]
fn sidecars_opening_a_fresh_registry_together_all_succeed() {
    let exe = std::env::current_exe().unwrap();
    for round in 0..15 {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("nr.db");
        // Every child opens at this moment, as two sidecars started together do.
        let start_at = std::time::SystemTime::now() + Duration::from_millis(150);
        let start_at = start_at.duration_since(std::time::UNIX_EPOCH).unwrap().as_micros().to_string();
        let children: Vec<_> = (0..4)
            .map(|_| {
                std::process::Command::new(&exe)
                    .args(["--exact", "open_registry_child", "--include-ignored", "--nocapture"])
                    .env("WARD_NR_CHILD_DB", &db)
                    .env("WARD_NR_CHILD_START_AT", &start_at)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success() && text.contains("opened the registry"), "round {round}: {text}");
        }
    }
}

/// One sidecar's open, in a child process of the test above.
#[test]
#[ignore = "run by sidecars_opening_a_fresh_registry_together_all_succeed in a child process"]
fn open_registry_child() {
    let Some(db) = std::env::var_os("WARD_NR_CHILD_DB") else { return };
    let start_at: u128 = std::env::var("WARD_NR_CHILD_START_AT").unwrap().parse().unwrap();
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros();
    while now() < start_at {
        std::hint::spin_loop();
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        match SqliteRegistry::open(fast_options(Path::new(&db))).await {
            Ok(_) => println!("opened the registry"),
            Err(err) => panic!("open failed: {err:#}"),
        }
    });
}
