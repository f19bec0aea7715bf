//! Secret stores through the public factory: `secretstores.local.file` flattening (nested and multiValued) and
//! `secretstores.local.env` prefixes and the variables it must never expose (checked in a child process with a
//! real environment).
//!
//! Run: `cargo test -p ward-components --test secretstores`.

mod common;

use std::collections::BTreeMap;
use std::io::Read as _;
use std::sync::Arc;
use std::time::Duration;

use common::{ChildTest, bounded};
use ward_components::secretstores::{
    EnvSource, LocalEnvSecretStore, SecretStore, build_secret_store, secret_store_types,
};
use ward_components::{BuildContext, ComponentMetadata};

const SECRETS_JSON: &str = r#"{
  "redisPassword": "p@ss",
  "db": {"user": "admin", "pass": "s3", "replicas": ["a", "b"], "port": 5432, "tls": true, "none": null},
  "api": {"keys": {"primary": "k1"}}
}"#;

fn ctx(base: &std::path::Path) -> BuildContext {
    BuildContext {
        data_dir: base.to_owned(),
        base_dir: base.to_owned(),
        working_dir: base.to_owned(),
        app_id: "app1".into(),
        namespace: String::new(),
    }
}

fn no_md() -> BTreeMap<String, String> {
    BTreeMap::new()
}

fn secret(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

async fn file_store(extra: &[(&str, &str)]) -> (tempfile::TempDir, Arc<dyn SecretStore>) {
    let dir = tempfile::tempdir().unwrap();
    tokio::fs::write(dir.path().join("secrets.json"), SECRETS_JSON).await.unwrap();
    // A relative path: resolved against BuildContext::base_dir.
    let mut md: ComponentMetadata = [("secretsFile", "secrets.json")].into_iter().collect();
    for (k, v) in extra {
        md.insert(*k, *v);
    }
    let store =
        build_secret_store("secretstores.local.file", "v1", "files", &md, &ctx(dir.path())).await.expect("build");
    (dir, store)
}

#[tokio::test]
async fn local_file_flattens_nested_values() {
    bounded(Duration::from_secs(20), async {
        let (_dir, s) = file_store(&[]).await;
        let cases: &[(&str, Option<&str>)] = &[
            ("redisPassword", Some("p@ss")),
            ("db:user", Some("admin")),
            ("db:replicas:1", Some("b")),
            ("db:port", Some("5432")),
            ("db:tls", Some("true")),
            ("db:none", Some("")),
            ("api:keys:primary", Some("k1")),
            ("db", None),
            ("missing", None),
        ];
        for (name, want) in cases {
            let got = s.get_secret(name, &no_md()).await.unwrap();
            assert_eq!(got, want.map(|v| secret(&[(name, v)])), "{name}");
        }
        let all = s.bulk_get_secret(&no_md()).await.unwrap();
        assert_eq!(all.len(), 9);
        assert_eq!(all["db:replicas:0"], secret(&[("db:replicas:0", "a")]));
    })
    .await;
}

#[tokio::test]
async fn local_file_custom_separator_and_multi_valued() {
    bounded(Duration::from_secs(20), async {
        let (_dir, s) = file_store(&[("nestedSeparator", ".")]).await;
        assert_eq!(
            s.get_secret("api.keys.primary", &no_md()).await.unwrap(),
            Some(secret(&[("api.keys.primary", "k1")]))
        );

        let (_dir, s) = file_store(&[("multiValued", "true")]).await;
        assert_eq!(
            s.get_secret("db", &no_md()).await.unwrap(),
            Some(secret(&[
                ("user", "admin"),
                ("pass", "s3"),
                ("replicas:0", "a"),
                ("replicas:1", "b"),
                ("port", "5432"),
                ("tls", "true"),
                ("none", ""),
            ]))
        );
        assert_eq!(s.get_secret("api", &no_md()).await.unwrap(), Some(secret(&[("keys:primary", "k1")])));
        assert_eq!(s.get_secret("redisPassword", &no_md()).await.unwrap(), Some(secret(&[("redisPassword", "p@ss")])));
        assert_eq!(s.get_secret("db:user", &no_md()).await.unwrap(), None);
        let all = s.bulk_get_secret(&no_md()).await.unwrap();
        assert_eq!(all.keys().collect::<Vec<_>>(), ["api", "db", "redisPassword"]);
    })
    .await;
}

#[tokio::test]
async fn local_file_errors_name_the_field_and_hide_content() {
    bounded(Duration::from_secs(20), async {
        let dir = tempfile::tempdir().unwrap();
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("missing file", "{}", Some("nope.json")),
            ("not json", "{\"a\": \"TOPSECRET\" oops", None),
            ("not an object", "[\"TOPSECRET\"]", None),
            ("duplicate after flattening", "{\"a:b\": \"TOPSECRET\", \"a\": {\"b\": \"x\"}}", None),
        ];
        for (name, content, file) in cases {
            tokio::fs::write(dir.path().join("s.json"), content).await.unwrap();
            let md: ComponentMetadata = [("secretsFile", file.unwrap_or("s.json"))].into_iter().collect();
            let e = build_secret_store("secretstores.local.file", "v1", "f", &md, &ctx(dir.path()))
                .await
                .err()
                .unwrap_or_else(|| panic!("{name}: expected error"));
            assert_eq!(e.field.as_deref(), Some("secretsFile"), "{name}");
            assert!(!e.to_string().contains("TOPSECRET"), "{name}: {e}");
            assert!(!format!("{e:?}").contains("TOPSECRET"), "{name}");
        }
        let e = build_secret_store("secretstores.local.file", "v1", "f", &ComponentMetadata::new(), &ctx(dir.path()))
            .await
            .err()
            .unwrap();
        assert_eq!(e.field.as_deref(), Some("secretsFile"));
        let e = build_secret_store("secretstores.vault", "v1", "f", &ComponentMetadata::new(), &ctx(dir.path()))
            .await
            .err()
            .unwrap();
        assert_eq!(e.field.as_deref(), Some("spec.type"));
        assert_eq!(secret_store_types().len(), 3, "local.file, local.env, kubernetes");
    })
    .await;
}

#[tokio::test]
async fn store_debug_output_hides_values() {
    bounded(Duration::from_secs(20), async {
        let (_dir, s) = file_store(&[]).await;
        assert!(s.get_secret("db:pass", &no_md()).await.unwrap().is_some());
        let env = LocalEnvSecretStore::new("").with_source(EnvSource::Fixed(secret(&[("K", "TOPSECRET")])));
        assert!(!format!("{env:?}").contains("TOPSECRET"));
        let file = ward_components::secretstores::LocalFileSecretStore::from_json(br#"{"k": "TOPSECRET"}"#, ":", false)
            .unwrap();
        assert!(!format!("{file:?}").contains("TOPSECRET"));
    })
    .await;
}

fn env_store(prefix: &str) -> LocalEnvSecretStore {
    LocalEnvSecretStore::new(prefix).with_source(EnvSource::Fixed(secret(&[
        ("MYAPP_DB_PASSWORD", "pw"),
        ("MYAPP_", "prefix only"),
        ("OTHER", "other"),
        ("DAPR_API_TOKEN", "dapr-token"),
        ("dapr_http_port", "3500"),
        ("APP_API_TOKEN", "app-token"),
        ("WARD_HOME", "/home/x/.ward"),
        ("MYAPP_DAPR_X", "fine: the full name does not start with DAPR_"),
    ])))
}

#[tokio::test]
async fn local_env_prefix_and_hidden_variables() {
    bounded(Duration::from_secs(20), async {
        let s = env_store("");
        let cases: &[(&str, Option<&str>)] = &[
            ("OTHER", Some("other")),
            ("MYAPP_DB_PASSWORD", Some("pw")),
            ("DAPR_API_TOKEN", None),
            ("dapr_http_port", None),
            ("APP_API_TOKEN", None),
            ("app_api_token", None),
            ("WARD_HOME", None),
            ("NOT_SET", None),
            ("", None),
            ("A=B", None),
            ("A\0B", None),
        ];
        for (name, want) in cases {
            assert_eq!(s.get_secret(name, &no_md()).await.unwrap(), want.map(|v| secret(&[(name, v)])), "{name:?}");
        }
        let all = s.bulk_get_secret(&no_md()).await.unwrap();
        assert_eq!(all.keys().collect::<Vec<_>>(), ["MYAPP_", "MYAPP_DAPR_X", "MYAPP_DB_PASSWORD", "OTHER"]);

        // With a prefix: names are relative to it, bulk returns only prefixed variables, prefix stripped.
        let s = env_store("MYAPP_");
        assert_eq!(s.get_secret("DB_PASSWORD", &no_md()).await.unwrap(), Some(secret(&[("DB_PASSWORD", "pw")])));
        assert_eq!(s.get_secret("OTHER", &no_md()).await.unwrap(), None);
        let all = s.bulk_get_secret(&no_md()).await.unwrap();
        assert_eq!(all.keys().collect::<Vec<_>>(), ["DAPR_X", "DB_PASSWORD"]);
        // A prefix cannot be used to reach a hidden variable.
        let s = env_store("DAPR_");
        assert_eq!(s.get_secret("API_TOKEN", &no_md()).await.unwrap(), None);
        assert!(s.bulk_get_secret(&no_md()).await.unwrap().is_empty());
    })
    .await;
}

const ENV_CHILD: &str = "WARD_TEST_ENV_CHILD";

/// Not a test on its own: the child half of `local_env_reads_the_real_environment`.
#[test]
fn env_child() {
    if std::env::var_os(ENV_CHILD).is_none() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let md: ComponentMetadata = ComponentMetadata::new();
        let ctx = ctx(&std::env::temp_dir());
        let s = build_secret_store("secretstores.local.env", "v1", "env", &md, &ctx).await.unwrap();
        let get = |n: &'static str| {
            let s = s.clone();
            async move { s.get_secret(n, &BTreeMap::new()).await.unwrap() }
        };
        assert_eq!(get("MY_SECRET").await, Some(secret(&[("MY_SECRET", "visible")])));
        assert_eq!(get("DAPR_API_TOKEN").await, None);
        assert_eq!(get("APP_API_TOKEN").await, None);
        assert_eq!(get("WARD_TEST_ENV_CHILD").await, None);
        let all = s.bulk_get_secret(&BTreeMap::new()).await.unwrap();
        assert!(all.contains_key("MY_SECRET"));
        for hidden in ["DAPR_API_TOKEN", "APP_API_TOKEN", "WARD_TEST_ENV_CHILD"] {
            assert!(!all.contains_key(hidden), "{hidden} exposed");
        }
        assert!(all.values().flat_map(|m| m.values()).all(|v| v != "dapr-secret-token"), "token value exposed");
        let prefixed: ComponentMetadata = [("prefix", "MY_")].into_iter().collect();
        let s = build_secret_store("secretstores.local.env", "v1", "env", &prefixed, &ctx).await.unwrap();
        assert_eq!(s.get_secret("SECRET", &BTreeMap::new()).await.unwrap(), Some(secret(&[("SECRET", "visible")])));
        println!("ENV-CHILD-OK");
    });
}

#[tokio::test]
async fn local_env_reads_the_real_environment() {
    let mut child = ChildTest::spawn(
        "env_child",
        &[
            (ENV_CHILD, "1"),
            ("MY_SECRET", "visible"),
            ("DAPR_API_TOKEN", "dapr-secret-token"),
            ("APP_API_TOKEN", "app-secret-token"),
        ],
    );
    let mut stdout = child.child.stdout.take().unwrap();
    let (status, out) = bounded(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || {
            let mut out = String::new();
            let _ = stdout.read_to_string(&mut out);
            (child.child.wait().unwrap(), out)
        }),
    )
    .await
    .unwrap();
    assert!(status.success(), "child failed:\n{out}");
    assert!(out.contains("ENV-CHILD-OK"), "child did not run its checks:\n{out}");
}

/// Issue 19 row 3: a relative `secretsFile` is opened from the working directory, as daprd does; the component's
/// folder is used only when the file exists there and not in the working directory.
#[test]
fn relative_secrets_file_is_taken_from_the_working_directory_first() {
    use ward_components::secretstores::LocalFileOptions;
    let cwd = tempfile::tempdir().unwrap();
    let components = tempfile::tempdir().unwrap();
    let mut md = ComponentMetadata::new();
    md.insert("secretsFile", "secrets.json");
    std::fs::write(components.path().join("secrets.json"), "{}").unwrap();
    let only_beside = LocalFileOptions::from_metadata(&md, cwd.path(), components.path()).unwrap();
    assert_eq!(only_beside.secrets_file, components.path().join("secrets.json"));
    std::fs::write(cwd.path().join("secrets.json"), "{}").unwrap();
    let both = LocalFileOptions::from_metadata(&md, cwd.path(), components.path()).unwrap();
    assert_eq!(both.secrets_file, cwd.path().join("secrets.json"), "daprd's rule wins");
    md.insert("secretsFile", "missing.json");
    let neither = LocalFileOptions::from_metadata(&md, cwd.path(), components.path()).unwrap();
    assert_eq!(neither.secrets_file, cwd.path().join("missing.json"), "the error names daprd's path");
}

/// `secretstores.kubernetes` settings ward does not honour are refused naming the field, before any API call:
/// another namespace than the sidecar's, and keys that are not the store's.
#[tokio::test]
async fn kubernetes_store_refuses_another_namespace_and_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut ctx = ctx(dir.path());
    ctx.namespace = "shop".to_owned();
    for (key, value, field, text) in [
        ("defaultNamespace", "kube-system", "spec.metadata[defaultNamespace]", "own namespace"),
        ("namespaceScope", "all", "spec.metadata[namespaceScope]", "not a secretstores.kubernetes setting"),
    ] {
        let md: ComponentMetadata = [(key, value)].into_iter().collect();
        let e = build_secret_store("secretstores.kubernetes", "v1", "kubernetes", &md, &ctx).await.err().unwrap();
        assert_eq!(e.field.as_deref(), Some(field), "{key}: {e}");
        assert!(e.to_string().contains(text), "{key}: {e}");
    }
}
