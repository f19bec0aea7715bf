//! Resolving component metadata: values, secrets through the resolver callback, environment variables, and errors
//! that name the component, item, store and secret but never a value.

use std::collections::HashMap;
use std::error::Error as _;
use std::path::Path;

use ward_config::{Component, ConfigError, ResolveError, ResourceSet, SecretRef};

const COMPONENT: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
spec:
  type: state.redis
  version: v1
  metadata:
  - name: redisHost
    value: localhost:6379
  - name: redisPassword
    secretKeyRef:
      name: redis-secret
      key: password
  - name: redisUser
    envRef: REDIS_USER
auth:
  secretStore: vault
"#;

fn component() -> Component {
    let set = ResourceSet::from_yaml(Path::new("res/redis.yaml"), COMPONENT, None).expect("loads");
    set.components.into_iter().next().expect("one component")
}

/// A fake store: `vault` holds `redis-secret` with key `password`, and `other` with key `other`.
fn store() -> HashMap<(&'static str, &'static str, &'static str), &'static str> {
    HashMap::from([
        (("vault", "redis-secret", "password"), "s3cr3t-pw"),
        (("vault", "other", "other"), "other-secret-value"),
    ])
}

fn lookup(r: SecretRef<'_>) -> Result<Option<String>, std::io::Error> {
    Ok(store().get(&(r.store, r.name, r.key)).map(|v| v.to_string()))
}

fn env(var: &str) -> Option<String> {
    (var == "REDIS_USER").then(|| "ward".to_string())
}

#[test]
fn resolves_values_secrets_and_env() {
    let c = component();
    let mut asked = Vec::new();
    let resolved = c
        .resolve_metadata(
            |r: SecretRef<'_>| {
                asked.push((r.store.to_string(), r.name.to_string(), r.key.to_string()));
                lookup(r)
            },
            env,
        )
        .expect("resolves");
    assert_eq!(asked, [("vault".to_string(), "redis-secret".to_string(), "password".to_string())]);
    assert_eq!(resolved.get("redisHost"), Some("localhost:6379"));
    assert_eq!(resolved.get("redisPassword"), Some("s3cr3t-pw"));
    assert_eq!(resolved.get("redisUser"), Some("ward"));
    assert_eq!(resolved.len(), 3);

    // Debug shows the names, never the values.
    let shown = format!("{resolved:?}");
    assert!(shown.contains("redisPassword") && shown.contains("redisHost"), "{shown}");
    for value in ["s3cr3t-pw", "localhost:6379", "ward\""] {
        assert!(!shown.contains(value), "{shown}");
    }
}

#[test]
fn debug_of_a_component_hides_literal_values() {
    let set = ResourceSet::from_yaml(
        Path::new("x.yaml"),
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: c\nspec:\n  type: state.redis\n  version: v1\n  metadata:\n  - name: redisPassword\n    value: plain-text-pw\n",
        None,
    )
    .expect("loads");
    let shown = format!("{:?}", set.components[0]);
    assert!(shown.contains("redisPassword"), "{shown}");
    assert!(!shown.contains("plain-text-pw"), "{shown}");
}

#[test]
fn missing_secret_names_component_item_store_and_key_but_no_value() {
    let text = COMPONENT.replace("key: password", "key: nope");
    let set = ResourceSet::from_yaml(Path::new("res/redis.yaml"), &text, None).expect("loads");
    let err = set.components[0].resolve_metadata(lookup, env).expect_err("missing secret");
    assert!(matches!(err, ResolveError::SecretNotFound { .. }), "{err}");
    let line = err.to_string();
    assert_eq!(
        line,
        "res/redis.yaml: Component \"statestore\": spec.metadata \"redisPassword\": secret \"redis-secret\" key \"nope\" not found in secret store \"vault\""
    );
    for value in store().values() {
        assert!(!line.contains(value), "{line}");
    }
    assert!(!format!("{err:?}").contains("localhost:6379"));
}

#[test]
fn resolver_error_is_kept_as_source() {
    let c = component();
    let err = c
        .resolve_metadata(|_r: SecretRef<'_>| Err(std::io::Error::other("vault unreachable")), env)
        .expect_err("store fails");
    let line = err.to_string();
    assert!(
        line.contains("cannot read secret \"redis-secret\" key \"password\" from secret store \"vault\""),
        "{line}"
    );
    assert_eq!(err.source().map(|s| s.to_string()).as_deref(), Some("vault unreachable"));
}

#[test]
fn missing_env_var_names_it() {
    let c = component();
    let err = c.resolve_metadata(lookup, |_: &str| None).expect_err("no env");
    assert!(matches!(err, ResolveError::EnvNotSet { ref variable, .. } if variable == "REDIS_USER"), "{err}");
    assert_eq!(
        err.to_string(),
        "res/redis.yaml: Component \"statestore\": spec.metadata \"redisUser\": environment variable \"REDIS_USER\" (envRef) is not set"
    );
}

#[test]
fn invalid_component_helper_has_the_same_shape() {
    let c = component();
    let err = ConfigError::invalid_component(&c, "spec.version", "version v1 of state.redis is not supported");
    assert_eq!(
        err.to_string(),
        "res/redis.yaml: Component \"statestore\": spec.version: version v1 of state.redis is not supported"
    );
    assert_eq!(err.path(), Path::new("res/redis.yaml"));
    assert_eq!(err.field(), Some("spec.version"));
}
