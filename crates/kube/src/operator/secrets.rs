//! `secretKeyRef` resolution for the Kubernetes secret store, as Dapr's operator does it (`processComponentSecrets`
//! and the HTTPEndpoint equivalent): for a resource whose `auth.secretStore` is empty or `kubernetes`, every item
//! with a `secretKeyRef` gets `value` = the base64 of the Secret's data at `key` (default: the Secret's name), as a
//! JSON string; the `secretKeyRef` stays.
//!
//! Owns: which items are resolved, reading the Secrets — from the RESOURCE's namespace only, whatever it names —
//! and the errors. Stricter than Dapr: a missing key is an error too (Dapr silently leaves the value empty, so a
//! component would start with no password). Does not decide whether the caller may see the resource (the server
//! checks scopes first, so an out-of-scope resource's Secrets are never read for that caller).

use std::collections::HashMap;

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use serde_json::Value;

use super::store::{Kind, Resource};

/// Dapr's name for the built-in Kubernetes secret store.
pub const KUBERNETES_SECRET_STORE: &str = "kubernetes";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{kind} {namespace}/{resource}: Secret {namespace}/{secret} not found")]
    NotFound { kind: Kind, namespace: String, resource: String, secret: String },
    #[error("{kind} {namespace}/{resource}: Secret {namespace}/{secret} has no key {key:?}")]
    NoKey { kind: Kind, namespace: String, resource: String, secret: String, key: String },
    #[error("{kind} {namespace}/{resource}: reading Secret {namespace}/{secret}: {source}")]
    Read {
        kind: Kind,
        namespace: String,
        resource: String,
        secret: String,
        #[source]
        source: kube::Error,
    },
}

/// The places in an object where a `secretKeyRef` is resolved, as JSON pointers to objects holding one.
fn ref_holders(resource: &Resource) -> Vec<String> {
    let object = &resource.object;
    let mut holders = Vec::new();
    let list = |pointer: &str, out: &mut Vec<String>| {
        if let Some(items) = object.pointer(pointer).and_then(Value::as_array) {
            out.extend((0..items.len()).map(|i| format!("{pointer}/{i}")));
        }
    };
    match resource.kind {
        Kind::Component => list("/spec/metadata", &mut holders),
        Kind::HttpEndpoint => {
            list("/spec/headers", &mut holders);
            for part in ["rootCA", "certificate", "privateKey"] {
                holders.push(format!("/spec/clientTLS/{part}"));
            }
        }
        _ => {}
    }
    holders
}

/// Whether a resource has references the operator resolves (its secret store is Kubernetes').
pub fn needs_resolution(resource: &Resource) -> bool {
    let store = resource.object.pointer("/auth/secretStore").and_then(Value::as_str).unwrap_or_default();
    if !(store.is_empty() || store == KUBERNETES_SECRET_STORE) {
        return false;
    }
    ref_holders(resource).iter().any(|p| secret_name(&resource.object, p).is_some())
}

fn secret_name<'a>(object: &'a Value, holder: &str) -> Option<&'a str> {
    object.pointer(&format!("{holder}/secretKeyRef/name")).and_then(Value::as_str).filter(|n| !n.is_empty())
}

/// The object to send, with references resolved from Secrets in the resource's own namespace.
pub async fn resolve(client: &kube::Client, resource: &Resource) -> Result<Value, SecretError> {
    let mut object = resource.object.clone();
    if !needs_resolution(resource) {
        return Ok(object);
    }
    // The resource's namespace, never one it names: a Component cannot reach another namespace's Secrets.
    let secrets: kube::Api<Secret> = kube::Api::namespaced(client.clone(), &resource.namespace);
    let mut cache: HashMap<String, Secret> = HashMap::new();
    for holder in ref_holders(resource) {
        let Some(name) = secret_name(&resource.object, &holder) else { continue };
        let key = resource
            .object
            .pointer(&format!("{holder}/secretKeyRef/key"))
            .and_then(Value::as_str)
            .filter(|k| !k.is_empty())
            .unwrap_or(name)
            .to_owned();
        if !cache.contains_key(name) {
            let found = secrets.get_opt(name).await.map_err(|source| SecretError::Read {
                kind: resource.kind,
                namespace: resource.namespace.clone(),
                resource: resource.name.clone(),
                secret: name.to_owned(),
                source,
            })?;
            let secret = found.ok_or_else(|| SecretError::NotFound {
                kind: resource.kind,
                namespace: resource.namespace.clone(),
                resource: resource.name.clone(),
                secret: name.to_owned(),
            })?;
            cache.insert(name.to_owned(), secret);
        }
        let bytes = cache.get(name).and_then(|s| s.data.as_ref()).and_then(|d| d.get(&key)).ok_or_else(|| {
            SecretError::NoKey {
                kind: resource.kind,
                namespace: resource.namespace.clone(),
                resource: resource.name.clone(),
                secret: name.to_owned(),
                key: key.clone(),
            }
        })?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes.0);
        if let Some(Value::Object(item)) = object.pointer_mut(&holder) {
            item.insert("value".to_owned(), Value::String(encoded));
        }
    }
    Ok(object)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn resource(kind: Kind, object: Value) -> Resource {
        Resource {
            kind,
            namespace: "shop".into(),
            name: "r".into(),
            uid: None,
            resource_version: None,
            scopes: vec![],
            object,
        }
    }

    #[test]
    fn only_the_kubernetes_store_is_resolved_here() {
        let item = json!([{"name": "password", "secretKeyRef": {"name": "redis", "key": "pw"}}]);
        let cases = [
            (json!({"spec": {"metadata": item}}), true),
            (json!({"spec": {"metadata": item}, "auth": {"secretStore": "kubernetes"}}), true),
            (json!({"spec": {"metadata": item}, "auth": {"secretStore": "vault"}}), false),
            (json!({"spec": {"metadata": [{"name": "password", "value": "x"}]}}), false),
            (json!({"spec": {"metadata": [{"name": "p", "secretKeyRef": {"name": ""}}]}}), false),
        ];
        for (object, expected) in cases {
            assert_eq!(needs_resolution(&resource(Kind::Component, object.clone())), expected, "{object}");
        }
        let endpoint = json!({"spec": {"headers": [{"name": "h", "secretKeyRef": {"name": "s"}}]}});
        assert!(needs_resolution(&resource(Kind::HttpEndpoint, endpoint)));
        let tls = json!({"spec": {"clientTLS": {"rootCA": {"secretKeyRef": {"name": "s", "key": "ca"}}}}});
        assert!(needs_resolution(&resource(Kind::HttpEndpoint, tls)));
        assert!(!needs_resolution(&resource(Kind::Configuration, json!({"spec": {"metadata": item}}))));
    }
}
