//! Dapr's `keyPrefix` rule for state keys (dapr/dapr `pkg/components/state/state_config.go`).
//!
//! Owns: parsing the `keyPrefix` metadata, turning an app's key into the stored key and back, and the rule that
//! neither a key nor a prefix may contain the separator `||`.
//!
//! Does not: store anything. The sidecar applies the prefix before calling a [`super::StateStore`].

use crate::metadata::{ComponentError, ComponentMetadata};

/// Separator between prefix and key, as in Dapr.
pub const SEPARATOR: &str = "||";

/// How stored keys are prefixed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum KeyPrefix {
    /// `<app-id>||<key>` (Dapr's default); no prefix when the app id is empty.
    #[default]
    AppId,
    /// `<store-name>||<key>`: every app using this store shares keys.
    Name,
    /// `<namespace>.<app-id>||<key>`; like `AppId` when the namespace is empty.
    Namespace,
    /// The key as is.
    None,
    /// `<literal>||<key>`.
    Literal(String),
}

/// A key (or prefix) contains the reserved separator `||`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("input key/keyPrefix {key:?} can't contain '||'")]
pub struct IllegalKey {
    /// The offending key (keys are not secret; prefixes come from metadata and are not echoed, see below).
    pub key: String,
}

impl KeyPrefix {
    /// Parses metadata `keyPrefix` (case-insensitive key). Like Dapr, the value is lower-cased before use, so a
    /// literal prefix `MyApp` stores keys as `myapp||…`; keeping that quirk keeps data written by daprd readable.
    pub fn from_metadata(metadata: &ComponentMetadata) -> Result<Self, ComponentError> {
        let raw = metadata.get("keyPrefix").unwrap_or("");
        Self::parse(raw).map_err(|_| ComponentError::new("keyPrefix", "keyPrefix can't contain the separator '||'"))
    }

    /// Parses one `keyPrefix` value.
    pub fn parse(raw: &str) -> Result<Self, IllegalKey> {
        let strategy = raw.trim().to_lowercase();
        if strategy.contains(SEPARATOR) {
            return Err(IllegalKey { key: strategy });
        }
        Ok(match strategy.as_str() {
            "" | "appid" => KeyPrefix::AppId,
            "name" => KeyPrefix::Name,
            "namespace" => KeyPrefix::Namespace,
            "none" => KeyPrefix::None,
            _ => KeyPrefix::Literal(strategy),
        })
    }

    /// Refuses a key containing `||` (Dapr: `ERR_MALFORMED_REQUEST`, reason `DAPR_STATE_ILLEGAL_KEY`).
    pub fn check_key(key: &str) -> Result<(), IllegalKey> {
        if key.contains(SEPARATOR) { Err(IllegalKey { key: key.to_owned() }) } else { Ok(()) }
    }

    /// The stored key for an app's `key`. Call [`KeyPrefix::check_key`] first.
    pub fn apply(&self, app_id: &str, store_name: &str, namespace: &str, key: &str) -> String {
        match self {
            KeyPrefix::None => key.to_owned(),
            KeyPrefix::Name => format!("{store_name}{SEPARATOR}{key}"),
            KeyPrefix::AppId if app_id.is_empty() => key.to_owned(),
            KeyPrefix::AppId => format!("{app_id}{SEPARATOR}{key}"),
            KeyPrefix::Namespace if app_id.is_empty() => key.to_owned(),
            KeyPrefix::Namespace if namespace.is_empty() => format!("{app_id}{SEPARATOR}{key}"),
            KeyPrefix::Namespace => format!("{namespace}.{app_id}{SEPARATOR}{key}"),
            KeyPrefix::Literal(prefix) => format!("{prefix}{SEPARATOR}{key}"),
        }
    }

    /// The app's key for a stored key (for bulk results): Dapr's `GetOriginalStateKey`, i.e. the part between the
    /// first and the second `||`, or the whole key when it has no separator.
    pub fn strip<'a>(&self, stored_key: &'a str) -> &'a str {
        let mut parts = stored_key.splitn(3, SEPARATOR);
        let first = parts.next().unwrap_or(stored_key);
        parts.next().unwrap_or(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_cases() {
        let cases: &[(&str, KeyPrefix)] = &[
            ("", KeyPrefix::AppId),
            ("appid", KeyPrefix::AppId),
            ("AppID", KeyPrefix::AppId),
            ("name", KeyPrefix::Name),
            ("namespace", KeyPrefix::Namespace),
            ("none", KeyPrefix::None),
            ("MyPrefix", KeyPrefix::Literal("myprefix".into())),
        ];
        for (raw, want) in cases {
            assert_eq!(&KeyPrefix::parse(raw).unwrap(), want, "{raw}");
        }
        assert!(KeyPrefix::parse("a||b").is_err());
        let md: ComponentMetadata = [("KEYPREFIX", "x||secret")].into_iter().collect();
        let e = KeyPrefix::from_metadata(&md).unwrap_err();
        assert!(!e.to_string().contains("secret"));
    }

    #[test]
    fn apply_and_strip() {
        struct Case {
            prefix: KeyPrefix,
            app: &'static str,
            ns: &'static str,
            want: &'static str,
        }
        let cases = [
            Case { prefix: KeyPrefix::AppId, app: "app1", ns: "", want: "app1||k" },
            Case { prefix: KeyPrefix::AppId, app: "", ns: "", want: "k" },
            Case { prefix: KeyPrefix::Name, app: "app1", ns: "", want: "store||k" },
            Case { prefix: KeyPrefix::Namespace, app: "app1", ns: "prod", want: "prod.app1||k" },
            Case { prefix: KeyPrefix::Namespace, app: "app1", ns: "", want: "app1||k" },
            Case { prefix: KeyPrefix::None, app: "app1", ns: "prod", want: "k" },
            Case { prefix: KeyPrefix::Literal("shared".into()), app: "app1", ns: "", want: "shared||k" },
        ];
        for c in cases {
            let stored = c.prefix.apply(c.app, "store", c.ns, "k");
            assert_eq!(stored, c.want, "{:?}", c.prefix);
            assert_eq!(c.prefix.strip(&stored), "k");
        }
        assert_eq!(KeyPrefix::AppId.strip("a||b||c"), "b");
    }

    #[test]
    fn keys_with_separator_are_illegal() {
        assert!(KeyPrefix::check_key("a||b").is_err());
        assert!(KeyPrefix::check_key("a|b").is_ok());
    }
}
