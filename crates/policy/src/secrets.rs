//! Secret scopes: Dapr's `spec.secrets.scopes` (DAPR-FACTS §4.2).
//!
//! Owns: validating the scopes and answering "may this app read key K of store S" through the Secrets API, in
//! Dapr's order (`allowedSecrets`, then `deniedSecrets`, then `defaultAccess`).
//!
//! Does not own: whether the store exists or is in scope for the app (component scopes), what a denial looks like
//! on the wire, or component `secretKeyRef` resolution (Dapr does not apply these scopes there either).

use std::collections::{BTreeSet, HashMap};

use crate::spec::SecretsSpec;

/// Why a `spec.secrets` section was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretScopeError {
    /// Two scopes name the same store (Dapr's message).
    #[error("{store_name} storeName is repeated in secrets configuration")]
    DuplicateStore { store_name: String, first: usize, second: usize },
    /// `defaultAccess` other than `allow`/`deny` (any case) or empty (Dapr's message).
    #[error("defaultAccess {value} can be either allow or deny")]
    InvalidDefaultAccess { store_name: String, value: String },
}

/// Compiled secret scopes. A store without a scope entry allows every key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretScopes {
    stores: HashMap<String, Scope>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Scope {
    default_allow: bool,
    allowed: BTreeSet<String>,
    denied: BTreeSet<String>,
}

impl SecretScopes {
    /// No scopes: every key of every store is allowed.
    pub fn allow_all() -> Self {
        Self::default()
    }

    pub fn compile(spec: &SecretsSpec) -> Result<Self, SecretScopeError> {
        let mut stores = HashMap::with_capacity(spec.scopes.len());
        let mut first_seen: HashMap<&str, usize> = HashMap::new();
        for (index, scope) in spec.scopes.iter().enumerate() {
            if let Some(&first) = first_seen.get(scope.store_name.as_str()) {
                return Err(SecretScopeError::DuplicateStore {
                    store_name: scope.store_name.clone(),
                    first,
                    second: index,
                });
            }
            first_seen.insert(&scope.store_name, index);

            let default_allow = match scope.default_access.as_deref().unwrap_or_default() {
                "" => true,
                v if v.eq_ignore_ascii_case("allow") => true,
                v if v.eq_ignore_ascii_case("deny") => false,
                v => {
                    return Err(SecretScopeError::InvalidDefaultAccess {
                        store_name: scope.store_name.clone(),
                        value: v.to_owned(),
                    });
                }
            };
            stores.insert(
                scope.store_name.clone(),
                Scope {
                    default_allow,
                    allowed: scope.allowed_secrets.iter().cloned().collect(),
                    denied: scope.denied_secrets.iter().cloned().collect(),
                },
            );
        }
        Ok(Self { stores })
    }

    /// Whether `key` of `store` may be read. Matching is exact and case-sensitive.
    pub fn is_allowed(&self, store: &str, key: &str) -> bool {
        let Some(scope) = self.stores.get(store) else {
            return true;
        };
        // A non-empty allow list is the whole truth: it overrides both the deny list and the default.
        if !scope.allowed.is_empty() {
            return scope.allowed.contains(key);
        }
        if scope.denied.contains(key) {
            return false;
        }
        scope.default_allow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_yaml(yaml: &str) -> Result<SecretScopes, SecretScopeError> {
        let spec: SecretsSpec = serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("bad test YAML: {e}"));
        SecretScopes::compile(&spec)
    }

    const SPEC: &str = r#"
scopes:
- {storeName: open}
- {storeName: closed, defaultAccess: deny}
- {storeName: upper, defaultAccess: DENY}
- {storeName: listed, defaultAccess: deny, allowedSecrets: [s1, s2], deniedSecrets: [s1]}
- {storeName: listed-default-allow, defaultAccess: allow, allowedSecrets: [s1]}
- {storeName: denylist, deniedSecrets: [bad]}
- {storeName: denylist-closed, defaultAccess: deny, deniedSecrets: [bad]}
"#;

    #[test]
    fn decision_table() {
        let scopes = compile_yaml(SPEC).unwrap_or_else(|e| panic!("{e}"));
        let cases = [
            ("store without scope allows", "unscoped", "any", true),
            ("no defaultAccess means allow", "open", "any", true),
            ("defaultAccess deny", "closed", "any", false),
            ("defaultAccess is case-insensitive", "upper", "any", false),
            ("allowedSecrets admits a listed key", "listed", "s2", true),
            ("allowedSecrets overrides deniedSecrets", "listed", "s1", true),
            ("allowedSecrets refuses an unlisted key", "listed", "s3", false),
            ("allowedSecrets overrides defaultAccess allow", "listed-default-allow", "other", false),
            ("deniedSecrets refuses a listed key", "denylist", "bad", false),
            ("deniedSecrets falls back to the default", "denylist", "good", true),
            ("deniedSecrets with default deny", "denylist-closed", "good", false),
            ("keys are case-sensitive", "listed", "S2", false),
            ("store names are case-sensitive", "Closed", "any", true),
        ];
        for (name, store, key, expected) in cases {
            assert_eq!(scopes.is_allowed(store, key), expected, "case {name:?}");
        }
        assert!(SecretScopes::allow_all().is_allowed("any", "key"));
    }

    #[test]
    fn compile_errors() {
        let cases = [
            (
                "duplicate storeName",
                "{scopes: [{storeName: vault}, {storeName: x}, {storeName: vault}]}",
                SecretScopeError::DuplicateStore { store_name: "vault".into(), first: 0, second: 2 },
            ),
            (
                "bad defaultAccess",
                "{scopes: [{storeName: vault, defaultAccess: maybe}]}",
                SecretScopeError::InvalidDefaultAccess { store_name: "vault".into(), value: "maybe".into() },
            ),
        ];
        for (name, yaml, expected) in cases {
            assert_eq!(compile_yaml(yaml).err(), Some(expected), "case {name:?}");
        }
    }

    #[test]
    fn error_messages_match_dapr() {
        let dup = SecretScopeError::DuplicateStore { store_name: "vault".into(), first: 0, second: 1 };
        assert_eq!(dup.to_string(), "vault storeName is repeated in secrets configuration");
        let bad = SecretScopeError::InvalidDefaultAccess { store_name: "v".into(), value: "maybe".into() };
        assert_eq!(bad.to_string(), "defaultAccess maybe can be either allow or deny");
    }
}
