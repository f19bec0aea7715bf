//! Loading resource directories: good files, namespaces, scopes, skipped kinds, and every way a file can be wrong,
//! each asserting that the one-line error names the file, the resource and the field (and leaks no value).

use std::path::{Path, PathBuf};

use tempfile::TempDir;
use ward_config::{ConfigError, MetadataValue, ResourceSet, file_fingerprint, fingerprint};

fn dir_with(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    dir
}

fn load(dir: &TempDir, namespace: Option<&str>) -> Result<ResourceSet, ConfigError> {
    ResourceSet::load(&[dir.path().to_path_buf()], namespace)
}

const GOOD: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
spec:
  type: state.redis
  version: v1
  initTimeout: 1m30s
  ignoreErrors: true
  metadata:
  - name: redisHost
    value: localhost:6379
  - name: port
    value: 8080
  - name: enableTLS
    value: false
  - name: redisPassword
    secretKeyRef:
      name: redis-secret
      key: password
  - name: token
    secretKeyRef:
      name: api-token
  - name: fromEnv
    envRef: REDIS_USER
  - name: empty
auth:
  secretStore: vault
scopes:
- app1
- app2
---
# a comment-only document between resources
---
apiVersion: dapr.io/v1alpha1
kind: Subscription
metadata:
  name: orders-sub
spec:
  pubsubname: pubsub
  topic: orders
  route: /orders
  deadLetterTopic: dead
  metadata:
    rawPayload: true
scopes: [app1]
---
apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata:
  name: rules-sub
spec:
  pubsubname: pubsub
  topic: events
  routes:
    rules:
    - match: event.type == "widget"
      path: /widgets
    default: /events
---
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: myresiliency
spec: {}
---
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: appconfig
spec:
  features:
  - name: Actors
    enabled: true
"#;

#[test]
fn good_multi_document_file() {
    let dir = dir_with(&[("all.yaml", GOOD), ("ignored.txt", "not: [yaml"), ("second.yml", "")]);
    let set = load(&dir, None).expect("loads");
    assert_eq!(set.components.len(), 1);
    let c = &set.components[0];
    assert_eq!(c.name(), "statestore");
    assert_eq!(c.component_type(), "state.redis");
    assert_eq!(c.building_block(), "state");
    assert_eq!(c.version(), "v1");
    assert!(c.ignore_errors());
    assert_eq!(c.init_timeout(), Some(std::time::Duration::from_secs(90)));
    assert_eq!(c.secret_store(), Some("vault"));
    assert_eq!(c.source(), dir.path().join("all.yaml"));
    let values: Vec<(&str, &MetadataValue)> = c.metadata().iter().map(|m| (m.name.as_str(), &m.value)).collect();
    assert_eq!(values[0], ("redisHost", &MetadataValue::Value("localhost:6379".into())));
    assert_eq!(values[1], ("port", &MetadataValue::Value("8080".into())));
    assert_eq!(values[2], ("enableTLS", &MetadataValue::Value("false".into())));
    assert_eq!(
        values[3],
        ("redisPassword", &MetadataValue::SecretKeyRef { name: "redis-secret".into(), key: "password".into() })
    );
    // secretKeyRef.key defaults to secretKeyRef.name.
    assert_eq!(
        values[4],
        ("token", &MetadataValue::SecretKeyRef { name: "api-token".into(), key: "api-token".into() })
    );
    assert_eq!(values[5], ("fromEnv", &MetadataValue::EnvRef("REDIS_USER".into())));
    assert_eq!(values[6], ("empty", &MetadataValue::Value(String::new())));

    assert_eq!(set.subscriptions.len(), 2);
    let s = &set.subscriptions[0];
    assert_eq!((s.pubsub_name.as_str(), s.topic.as_str()), ("pubsub", "orders"));
    assert_eq!(s.default_route.as_deref(), Some("/orders"));
    assert_eq!(s.dead_letter_topic.as_deref(), Some("dead"));
    assert_eq!(s.metadata.get("rawPayload").map(String::as_str), Some("true"));
    assert!(s.in_scope("app1") && !s.in_scope("app2"));
    let r = &set.subscriptions[1];
    assert_eq!(r.api_version, "dapr.io/v2alpha1");
    assert_eq!(r.rules.len(), 1);
    assert_eq!(r.rules[0].path, "/widgets");
    assert_eq!(r.default_route.as_deref(), Some("/events"));
    assert!(r.in_scope("anyone"));

    assert_eq!(set.configurations.len(), 1);
    assert!(set.configurations[0].feature_enabled("Actors"));

    assert_eq!(set.warnings.len(), 1, "{:?}", set.warnings);
    assert!(set.warnings[0].contains("all.yaml"), "{}", set.warnings[0]);
    assert!(set.warnings[0].contains("Resiliency"), "{}", set.warnings[0]);
}

#[test]
fn scopes() {
    let set = ResourceSet::from_yaml(Path::new("x.yaml"), GOOD, None).expect("loads");
    let c = set.component("statestore").expect("component");
    assert!(c.in_scope("app1"));
    assert!(c.in_scope("app2"));
    assert!(!c.in_scope("app3"));
    assert!(!c.in_scope("APP1"), "app-ids match exactly");
    assert_eq!(set.components_for("app3").count(), 0);

    let unscoped = component("open", "", "");
    let set = ResourceSet::from_yaml(Path::new("x.yaml"), &unscoped, None).expect("loads");
    assert!(set.components[0].in_scope("anyone"));
    let empty = format!("{unscoped}scopes: []\n");
    let set = ResourceSet::from_yaml(Path::new("x.yaml"), &empty, None).expect("loads");
    assert!(set.components[0].in_scope("anyone"), "an empty list means every app");
}

fn component(name: &str, namespace: &str, extra_metadata: &str) -> String {
    let ns = if namespace.is_empty() { String::new() } else { format!("  namespace: {namespace}\n") };
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\n{ns}spec:\n  type: state.in-memory\n  version: v1\n  metadata:\n{extra_metadata}  - name: a\n    value: b\n"
    )
}

#[test]
fn namespace_filtering() {
    let text = [
        component("in-prod", "production", ""),
        component("in-dev", "dev", ""),
        component("no-ns", "", ""),
        // Same name as in-prod, other namespace: filtered out before the duplicate check.
        component("in-prod", "dev", ""),
    ]
    .join("---\n");
    let dir = dir_with(&[("c.yaml", &text)]);

    let names = |set: &ResourceSet| set.components.iter().map(|c| c.name().to_string()).collect::<Vec<_>>();
    let prod = load(&dir, Some("production")).expect("loads");
    assert_eq!(names(&prod), ["in-prod", "no-ns"]);
    assert_eq!(prod.components[0].namespace(), Some("production"));
    let dev = load(&dir, Some("dev")).expect("loads");
    assert_eq!(names(&dev), ["in-dev", "no-ns", "in-prod"]);
    // Without a namespace, namespaces are ignored: all four load, and the two in-prod collide.
    let err = load(&dir, None).expect_err("duplicate");
    assert!(matches!(err, ConfigError::Duplicate { .. }), "{err}");
}

#[test]
fn files_are_sorted_and_non_recursive() {
    let dir = dir_with(&[("b.yaml", &component("bee", "", "")), ("a.yml", &component("ay", "", ""))]);
    std::fs::create_dir(dir.path().join("sub.yaml")).expect("mkdir");
    std::fs::write(dir.path().join("sub.yaml").join("c.yaml"), component("sea", "", "")).expect("write");
    let set = load(&dir, None).expect("loads");
    let names: Vec<&str> = set.components.iter().map(|c| c.name()).collect();
    assert_eq!(names, ["ay", "bee"]);
}

#[test]
fn missing_directory_names_it() {
    let err = ResourceSet::load(&[PathBuf::from("/nonexistent/ward-resources")], None).expect_err("missing");
    assert!(err.to_string().starts_with("/nonexistent/ward-resources: cannot list directory"), "{err}");
}

struct Case {
    name: &'static str,
    files: Vec<(&'static str, String)>,
    /// Substrings the error line must contain (file, resource, field, …).
    contains: Vec<&'static str>,
    /// Substrings it must not contain (values that might be secrets).
    not_contains: Vec<&'static str>,
}

fn comp(body: &str) -> String {
    format!("apiVersion: dapr.io/v1alpha1\nkind: Component\n{body}")
}

fn conf(spec: &str) -> String {
    format!("apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: appconfig\nspec:\n{spec}")
}

const META: &str = "metadata:\n  name: mystore\nspec:\n  type: state.redis\n  version: v1\n";

#[test]
fn every_bad_file_names_file_resource_and_field() {
    let cases = vec![
        Case {
            name: "syntax error",
            files: vec![("bad.yaml", "kind: Component\nmetadata: [name: x, hunter2\n".into())],
            contains: vec!["bad.yaml:2:", "invalid YAML"],
            not_contains: vec!["hunter2"],
        },
        Case {
            name: "missing kind",
            files: vec![("nokind.yaml", format!("{}---\napiVersion: dapr.io/v1alpha1\nmetadata:\n  name: x\n", comp(META)))],
            contains: vec!["nokind.yaml: document 2: kind: is required"],
            not_contains: vec![],
        },
        Case {
            name: "unknown apiVersion",
            files: vec![("api.yaml", META.replace("metadata:", "apiVersion: dapr.io/v2\nkind: Component\nmetadata:"))],
            contains: vec!["api.yaml: Component \"mystore\": apiVersion: unsupported apiVersion \"dapr.io/v2\""],
            not_contains: vec![],
        },
        Case {
            name: "missing name",
            files: vec![("noname.yaml", comp("metadata: {}\nspec:\n  type: state.redis\n  version: v1\n"))],
            contains: vec!["noname.yaml: Component in document 1: metadata.name: is required"],
            not_contains: vec![],
        },
        Case {
            name: "bad name",
            files: vec![("badname.yaml", comp(&META.replace("mystore", "My_Store")))],
            contains: vec!["badname.yaml: Component \"My_Store\": metadata.name: \"My_Store\" is not a valid name"],
            not_contains: vec![],
        },
        Case {
            name: "missing type",
            files: vec![("notype.yaml", comp("metadata:\n  name: mystore\nspec:\n  version: v1\n"))],
            contains: vec!["notype.yaml: Component \"mystore\": spec.type: is required"],
            not_contains: vec![],
        },
        Case {
            name: "type without building block",
            files: vec![("badtype.yaml", comp(&META.replace("state.redis", "redis")))],
            contains: vec!["badtype.yaml: Component \"mystore\": spec.type:"],
            not_contains: vec![],
        },
        Case {
            name: "bad version",
            files: vec![("badversion.yaml", comp(&META.replace("version: v1", "version: v1/beta")))],
            contains: vec!["badversion.yaml: Component \"mystore\": spec.version: \"v1/beta\" is not a valid version"],
            not_contains: vec![],
        },
        Case {
            name: "configuration name with a slash",
            files: vec![("slash.yaml", conf("  mtls:\n    enabled: true\n").replace("name: appconfig", "name: a/b"))],
            contains: vec!["slash.yaml: Configuration \"a/b\": metadata.name: \"a/b\" is not a valid name"],
            not_contains: vec![],
        },
        Case {
            name: "configuration without a name",
            files: vec![("unnamed.yaml", conf("  mtls:\n    enabled: true\n").replace("name: appconfig", "name: \"\""))],
            contains: vec!["unnamed.yaml: Configuration in document 1: metadata.name: is required"],
            not_contains: vec![],
        },
        Case {
            name: "duplicate component across two files",
            files: vec![("one.yaml", comp(META)), ("two.yaml", comp(META))],
            contains: vec!["two.yaml: Component \"mystore\": metadata.name: duplicate definition", "one.yaml"],
            not_contains: vec![],
        },
        Case {
            name: "duplicate metadata item (case-insensitive)",
            files: vec![(
                "dupitem.yaml",
                comp(&format!("{META}  metadata:\n  - name: redisHost\n    value: a\n  - name: redishost\n    value: b\n")),
            )],
            contains: vec!["dupitem.yaml: Component \"mystore\": spec.metadata[1].name: duplicate metadata item \"redishost\""],
            not_contains: vec![],
        },
        Case {
            name: "value and secretKeyRef",
            files: vec![(
                "both.yaml",
                comp(&format!(
                    "{META}  metadata:\n  - name: redisPassword\n    value: hunter2\n    secretKeyRef:\n      name: s\nauth:\n  secretStore: vault\n"
                )),
            )],
            contains: vec!["both.yaml: Component \"mystore\": spec.metadata[0]: item \"redisPassword\" sets more than one"],
            not_contains: vec!["hunter2"],
        },
        Case {
            name: "secretKeyRef without auth.secretStore",
            files: vec![(
                "nostore.yaml",
                comp(&format!("{META}  metadata:\n  - name: redisPassword\n    secretKeyRef:\n      name: redis\n      key: pw\n")),
            )],
            contains: vec![
                "nostore.yaml: Component \"mystore\": spec.metadata[0].secretKeyRef: item \"redisPassword\"",
                "auth.secretStore",
            ],
            not_contains: vec![],
        },
        Case {
            name: "envRef DAPR_API_TOKEN",
            files: vec![("env1.yaml", comp(&format!("{META}  metadata:\n  - name: token\n    envRef: DAPR_API_TOKEN\n")))],
            contains: vec!["env1.yaml: Component \"mystore\": spec.metadata[0].envRef:", "DAPR_API_TOKEN"],
            not_contains: vec![],
        },
        Case {
            name: "envRef APP_API_TOKEN",
            files: vec![("env2.yaml", comp(&format!("{META}  metadata:\n  - name: token\n    envRef: APP_API_TOKEN\n")))],
            contains: vec!["env2.yaml: Component \"mystore\": spec.metadata[0].envRef:", "APP_API_TOKEN"],
            not_contains: vec![],
        },
        Case {
            name: "secret-looking value of the wrong type is not echoed",
            files: vec![("wrongtype.yaml", comp(&format!("{META}  metadata:\n  - name: pw\n    secretKeyRef: hunter2\n")))],
            contains: vec![
                "wrongtype.yaml: Component \"mystore\": spec.metadata[0].secretKeyRef: invalid type: string, expected a mapping",
            ],
            not_contains: vec!["hunter2", "Raw"],
        },
        Case {
            name: "bad duration in spec.mtls",
            files: vec![("mtls.yaml", conf("  mtls:\n    enabled: true\n    workloadCertTTL: 24hours\n"))],
            contains: vec!["mtls.yaml: Configuration \"appconfig\": spec.mtls.workloadCertTTL: invalid duration"],
            not_contains: vec![],
        },
        Case {
            name: "unknown field under spec.ward",
            files: vec![("ward.yaml", conf("  ward:\n    productionMode: true\n    prodMode: true\n"))],
            contains: vec!["ward.yaml: Configuration \"appconfig\": spec.ward.prodMode: unknown field"],
            not_contains: vec![],
        },
        Case {
            name: "bad spec.ward.audit.fsync",
            files: vec![("fsync.yaml", conf("  ward:\n    audit:\n      fsync: sometimes\n"))],
            contains: vec![
                "fsync.yaml: Configuration \"appconfig\": spec.ward.audit.fsync: \"sometimes\" is not one of never, interval, always",
            ],
            not_contains: vec![],
        },
        Case {
            name: "unknown field under spec.ward.audit",
            files: vec![("audit.yaml", conf("  ward:\n    audit:\n      fsynk: always\n"))],
            contains: vec!["audit.yaml: Configuration \"appconfig\": spec.ward.audit.fsynk: unknown field"],
            not_contains: vec![],
        },
        Case {
            name: "bad httpVerb type in accessControl",
            files: vec![(
                "acl.yaml",
                conf(
                    "  accessControl:\n    defaultAction: deny\n    policies:\n    - appId: app1\n      operations:\n      - name: /a\n        httpVerb: [GET]\n      - name: /b\n        httpVerb: PSOT\n",
                ),
            )],
            contains: vec![
                "acl.yaml: Configuration \"appconfig\": spec.accessControl.policies[0].operations[1].httpVerb: invalid type: string, expected a sequence",
            ],
            not_contains: vec!["PSOT"],
        },
        Case {
            name: "key differing only in case from a security section",
            files: vec![("case.yaml", conf("  accesscontrol:\n    defaultAction: deny\n"))],
            contains: vec!["case.yaml: Configuration \"appconfig\": spec.accesscontrol: key differs from \"accessControl\" only in case"],
            not_contains: vec![],
        },
        Case {
            name: "subscription without route",
            files: vec![(
                "sub.yaml",
                "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: s\nspec:\n  pubsubname: p\n  topic: t\n".into(),
            )],
            contains: vec!["sub.yaml: Subscription \"s\": spec.routes: a subscription needs a route"],
            not_contains: vec![],
        },
        Case {
            name: "subscription with unknown apiVersion",
            files: vec![(
                "subv.yaml",
                "apiVersion: dapr.io/v3\nkind: Subscription\nmetadata:\n  name: s\nspec:\n  pubsubname: p\n  topic: t\n  route: /r\n".into(),
            )],
            contains: vec!["subv.yaml: Subscription \"s\": apiVersion: unsupported apiVersion"],
            not_contains: vec![],
        },
        Case {
            name: "document that is not a mapping",
            files: vec![("list.yaml", "- a\n- b\n".into())],
            contains: vec!["list.yaml: document 1: (document): expected a mapping"],
            not_contains: vec![],
        },
        Case {
            name: "bad initTimeout",
            files: vec![("init.yaml", comp(&format!("{META}  initTimeout: soon\n")))],
            contains: vec!["init.yaml: Component \"mystore\": spec.initTimeout: invalid duration"],
            not_contains: vec![],
        },
    ];

    for case in cases {
        let files: Vec<(&str, &str)> = case.files.iter().map(|(n, t)| (*n, t.as_str())).collect();
        let dir = dir_with(&files);
        let err = match load(&dir, None) {
            Ok(set) => panic!("{}: expected an error, loaded {set:?}", case.name),
            Err(e) => e,
        };
        let line = err.to_string();
        // Shown with --nocapture, to review the wording of every message at once.
        eprintln!("{:<45} {line}", case.name);
        assert!(!line.contains('\n'), "{}: one line: {line}", case.name);
        assert!(line.starts_with(&dir.path().display().to_string()), "{}: starts with the path: {line}", case.name);
        for want in &case.contains {
            assert!(line.contains(want), "{}: {line:?} should contain {want:?}", case.name);
        }
        for unwanted in &case.not_contains {
            assert!(!line.contains(unwanted), "{}: {line:?} must not contain {unwanted:?}", case.name);
        }
    }
}

/// Issue 19 row 2: Dapr loads a component without `spec.version` (or with an empty one) as `v1`.
#[test]
fn component_without_version_is_v1() {
    let absent = "metadata:\n  name: a\nspec:\n  type: state.in-memory\n";
    let empty = "metadata:\n  name: b\nspec:\n  type: state.in-memory\n  version: \"\"\n";
    let spaces = "metadata:\n  name: c\nspec:\n  type: state.in-memory\n  version: \"  \"\n";
    let dir = dir_with(&[("a.yaml", &comp(absent)), ("b.yaml", &comp(empty)), ("c.yaml", &comp(spaces))]);
    let set = load(&dir, None).expect("loads");
    let versions: Vec<(&str, &str)> = set.components.iter().map(|c| (c.name(), c.version())).collect();
    assert_eq!(versions, [("a", "v1"), ("b", "v1"), ("c", "v1")]);
}

/// Issue 19 row 1: self-hosted daprd accepts any Configuration name; `dapr init` writes `daprConfig`.
#[test]
fn configuration_may_have_any_self_hosted_name() {
    for name in ["daprConfig", "My_Config", "appconfig"] {
        let text = conf("  mtls:\n    enabled: false\n").replace("name: appconfig", &format!("name: {name}"));
        let dir = dir_with(&[("config.yaml", &text)]);
        let set = load(&dir, None).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(set.configurations[0].name, name);
        let c = ward_config::load_configuration(&dir.path().join("config.yaml")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.name, name);
    }
    // Components keep the DNS-1123 rule (their names become store names in URLs and file names).
    let dir = dir_with(&[("c.yaml", &comp(&META.replace("mystore", "daprStore")))]);
    assert!(load(&dir, None).is_err());
}

#[test]
fn fingerprint_changes_with_content() {
    let dir = dir_with(&[("a.yaml", &component("a", "", ""))]);
    let dirs = [dir.path().to_path_buf()];
    let first = fingerprint(&dirs).expect("fingerprint");
    assert_eq!(first, fingerprint(&dirs).expect("fingerprint"), "stable");
    // Same length, different content: a size+mtime hash could miss this within one clock tick.
    std::fs::write(dir.path().join("a.yaml"), component("b", "", "")).expect("write");
    let second = fingerprint(&dirs).expect("fingerprint");
    assert_ne!(first, second);
    std::fs::write(dir.path().join("notes.txt"), "ignored").expect("write");
    assert_eq!(second, fingerprint(&dirs).expect("fingerprint"), "non-YAML files do not count");
    std::fs::write(dir.path().join("b.yml"), "").expect("write");
    assert_ne!(second, fingerprint(&dirs).expect("fingerprint"), "a new file counts");
    assert!(fingerprint(&[PathBuf::from("/nonexistent/ward")]).is_err());
}

#[test]
fn file_fingerprint_sees_every_byte_of_a_large_file() {
    let dir = TempDir::new().expect("tempdir");
    let path = dir.path().join("config.yaml");
    // Larger than the read buffer, so a change late in the file is only seen if every chunk is hashed.
    let mut contents = "# padding\n".repeat(10_000).into_bytes();
    std::fs::write(&path, &contents).expect("write");
    let first = file_fingerprint(&path).expect("fingerprint");
    assert_eq!(Some(first), file_fingerprint(&path), "stable");
    let last = contents.len() - 2;
    contents[last] = b'X';
    std::fs::write(&path, &contents).expect("write");
    let edited = file_fingerprint(&path).expect("fingerprint");
    assert_ne!(first, edited, "same length, one byte changed near the end");
    contents.truncate(contents.len() - 1);
    std::fs::write(&path, &contents).expect("write");
    assert_ne!(edited, file_fingerprint(&path).expect("fingerprint"), "truncated");
    assert_eq!(file_fingerprint(&dir.path().join("missing.yaml")), None);
}

#[test]
fn no_panic_on_any_prefix_of_a_good_file() {
    // Cheap stand-in for a fuzz target: every truncation of a valid file either loads or returns an error whose
    // line names the file; none panics.
    for (end, _) in GOOD.char_indices() {
        match ResourceSet::from_yaml(Path::new("cut.yaml"), &GOOD[..end], Some("ns")) {
            Ok(_) => {}
            Err(e) => assert!(e.to_string().starts_with("cut.yaml"), "{e}"),
        }
    }
}
