//! What every Dapr resource document shares: `apiVersion`, `kind`, `metadata.{name,namespace}` and top-level
//! `scopes`, plus the naming rule for `metadata.name`.
//!
//! Owns reading the header of a document before its kind-specific struct is chosen. Does not know any `spec`.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{ConfigError, ResourceId, ResourceKind};
use crate::yaml::{Document, check_key_case, child, get_str};

/// `metadata` of a resource. Other Kubernetes fields (labels, annotations, …) are ignored, as Dapr does.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawObjectMeta {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
}

/// The kind-independent part of a document, read from the generic tree.
#[derive(Debug)]
pub(crate) struct Header {
    pub api_version: Option<String>,
    pub kind: String,
    /// `metadata.name` when it is a string (validated later).
    pub name: Option<String>,
    /// `metadata.namespace` when it is a non-empty string.
    pub namespace: Option<String>,
}

/// Read `apiVersion`, `kind` and the metadata of a document. A document that is not a mapping or has no usable
/// `kind` is an error naming the file and the document index.
pub(crate) fn read_header(path: &Path, doc: &Document) -> Result<Header, ConfigError> {
    let doc_error = |field: &str, message: String| ConfigError::Document {
        path: path.to_path_buf(),
        document: doc.index,
        field: field.to_string(),
        message,
    };
    let Value::Object(map) = &doc.value else {
        return Err(doc_error(
            "(document)",
            format!("expected a mapping with apiVersion and kind, found a {}", crate::yaml::type_name(&doc.value)),
        ));
    };
    check_key_case(Some(&doc.value), "", &["apiVersion", "kind", "metadata", "spec", "scopes", "auth"])
        .map_err(|(field, message)| doc_error(&field, message))?;
    let kind = get_str(map, "kind")
        .map_err(|m| doc_error("kind", m))?
        .filter(|k| !k.is_empty())
        .ok_or_else(|| doc_error("kind", "is required".to_string()))?;
    let api_version = get_str(map, "apiVersion").map_err(|m| doc_error("apiVersion", m))?;
    let metadata = child(Some(&doc.value), "metadata");
    // Wrong types here are reported by the typed pass, with the resource named; the header is best effort.
    // An empty name is reported by the typed pass; naming the resource `""` in that error would help nobody.
    let name = child(metadata, "name").and_then(Value::as_str).filter(|n| !n.is_empty());
    let namespace = child(metadata, "namespace").and_then(Value::as_str).filter(|ns| !ns.is_empty());
    Ok(Header {
        api_version: api_version.map(str::to_string),
        kind: kind.to_string(),
        name: name.map(str::to_string),
        namespace: namespace.map(str::to_string),
    })
}

impl Header {
    pub(crate) fn resource_id(&self, kind: ResourceKind, document: usize) -> ResourceId {
        ResourceId { kind, name: self.name.clone(), document }
    }

    /// daprd's namespace rule (DAPR-FACTS §4.1): with a namespace set, a resource with a different non-empty
    /// namespace is not for us; without one, namespaces are ignored.
    pub(crate) fn in_namespace(&self, namespace: Option<&str>) -> bool {
        match (namespace, self.namespace.as_deref()) {
            (Some(want), Some(have)) => want == have,
            _ => true,
        }
    }

    /// Refuse an `apiVersion` other than the supported ones.
    pub(crate) fn check_api_version(
        &self,
        path: &Path,
        resource: &ResourceId,
        supported: &[&str],
    ) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            resource: resource.clone(),
            field: "apiVersion".to_string(),
            message,
        };
        let expected = supported.iter().map(|v| format!("\"{v}\"")).collect::<Vec<_>>().join(" or ");
        match self.api_version.as_deref() {
            None | Some("") => Err(invalid(format!("is required (expected {expected})"))),
            Some(v) if supported.contains(&v) => Ok(()),
            Some(v) => {
                Err(invalid(format!("unsupported apiVersion {} (expected {expected})", crate::error::quoted(v))))
            }
        }
    }
}

/// Validate `metadata.name`: a lowercase RFC 1123 name, `[a-z0-9]([-a-z0-9.]*[a-z0-9])?`, at most 253 characters.
/// Returns the message for the `metadata.name` field when it is not.
pub(crate) fn check_resource_name(name: Option<&str>) -> Result<&str, String> {
    let name = match name {
        None | Some("") => return Err("is required".to_string()),
        Some(n) => n,
    };
    if name.len() > 253 {
        return Err(format!("is {} characters long; at most 253 are allowed", name.len()));
    }
    let bytes = name.as_bytes();
    let edge_ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let inner_ok = |b: u8| edge_ok(b) || b == b'-' || b == b'.';
    let first = bytes.first().copied().unwrap_or(b'-');
    let last = bytes.last().copied().unwrap_or(b'-');
    if !edge_ok(first) || !edge_ok(last) || !bytes.iter().all(|b| inner_ok(*b)) {
        return Err(format!(
            "{} is not a valid name: use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
            crate::error::quoted(name)
        ));
    }
    Ok(name)
}

/// Validate a Configuration's `metadata.name`. Self-hosted daprd accepts any name (`dapr init` writes
/// `daprConfig`); only Kubernetes enforces DNS-1123, and there the API server does it. Refused: an empty name, a
/// `/` (it would read as a path or a namespace separator), control characters (they could forge log lines), and
/// more than 253 characters (Kubernetes' limit; nothing longer is a name).
pub(crate) fn check_configuration_name(name: Option<&str>) -> Result<&str, String> {
    let name = match name {
        None | Some("") => return Err("is required".to_string()),
        Some(n) => n,
    };
    if name.trim().is_empty() {
        return Err("must not be blank".to_string());
    }
    if name.chars().count() > 253 {
        return Err(format!("is {} characters long; at most 253 are allowed", name.chars().count()));
    }
    if name.contains('/') || name.chars().any(char::is_control) {
        return Err(format!(
            "{} is not a valid name: it must not contain '/' or control characters",
            crate::error::quoted(name)
        ));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_names() {
        for ok in ["daprConfig", "appconfig", "My_Config", "a b", "é", &"a".repeat(253)] {
            assert_eq!(check_configuration_name(Some(ok)), Ok(ok), "{ok}");
        }
        for bad in ["", " ", "a/b", "/", "a\nb", "a\u{7}b", "x\u{85}", &"a".repeat(254)] {
            assert!(check_configuration_name(Some(bad)).is_err(), "{bad:?}");
        }
        assert_eq!(check_configuration_name(None), Err("is required".to_string()));
    }

    #[test]
    fn resource_names() {
        for ok in ["a", "statestore", "my-store.v2", "0abc9", &"a".repeat(253)] {
            assert!(check_resource_name(Some(ok)).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "my_store", "a b", "é", ".a", &"a".repeat(254)] {
            assert!(check_resource_name(Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(check_resource_name(None), Err("is required".to_string()));
    }
}
