//! Which component types this build of ward can load, decided before anything is built: a component is a state
//! store, a secret store, a building block Dapr defines and ward does not implement yet, or it is refused.
//!
//! Owns the verdict for a `(spec.type, spec.version)` pair ([`classify_component`]). An unknown type
//! (`state.nosuch`, `foo.bar`, `middleware.http.uppercase`) is an error naming `spec.type`, never a skip:
//! each is an explicit request for a backend or a control, and loading without it would run the app without what
//! its owner configured (ARCHITECTURE invariant 8). The caller must classify *before* building and must not let
//! `spec.ignoreErrors` turn this error into a skip: `ignoreErrors` is for a backend that fails to start, not for a
//! type that does not exist.
//!
//! Does not build components (the `state` and `secretstores` factories do), know which metadata a type needs, or
//! decide what happens to a [`ComponentSupport::NotImplemented`] component (the sidecar's settings rule: refused in
//! production, one warning in development).

use crate::metadata::ComponentError;
use crate::{check_version, normalize_type, pubsub, secretstores, state};

/// The HTTP middleware this build implements (`ward-middleware` builds them), with the versions each accepts.
pub const MIDDLEWARE_TYPES: &[(&str, &str)] =
    &[("middleware.http.bearer", "v1"), ("middleware.http.opa", "v1"), ("middleware.http.ratelimit", "v1")];

/// Building blocks Dapr defines (components-contrib categories) that ward does not implement yet.
pub const NOT_IMPLEMENTED_BUILDING_BLOCKS: &[&str] =
    &["bindings", "configuration", "lock", "crypto", "conversation", "workflow", "nameresolution"];

/// What ward can do with a component, by its `spec.type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentSupport {
    /// A state store this build implements (`state.in-memory`, `state.sqlite`, `state.redis`), at a supported
    /// version: build it with [`state::build_state_store`].
    State,
    /// A secret store this build implements: build it with [`secretstores::build_secret_store`].
    SecretStore,
    /// A pub/sub broker this build implements: build it with [`pubsub::build_pubsub`].
    PubSub,
    /// An HTTP middleware this build implements ([`MIDDLEWARE_TYPES`]), for `spec.httpPipeline` /
    /// `spec.appHttpPipeline`: built by `ward-middleware`.
    Middleware,
    /// A building block Dapr defines that ward does not implement yet (`bindings.http`, `lock.redis`, …). Not
    /// built; the caller applies the settings rule (refused in production, warned about in development).
    NotImplemented {
        /// The building block, lowercased (`bindings`).
        building_block: String,
    },
}

/// The capabilities `/v1.0/metadata` lists for a component, in Dapr's names, limited to what ward's implementation
/// of that type does: every state store ward has keeps ETags, transactions and TTLs (actors and the query API are
/// not implemented, so they are never claimed); a file secret store with `multiValued` holds several keys per secret.
pub fn component_capabilities(component_type: &str, multi_valued: bool) -> Vec<&'static str> {
    let ty = normalize_type(component_type);
    match ty.split_once('.').map_or(ty.as_str(), |(block, _)| block) {
        "state" => vec!["ETAG", "TRANSACTIONAL", "TTL"],
        "secretstores" if ty == "secretstores.local.file" && multi_valued => vec!["MULTIPLE_KEY_VALUES_PER_SECRET"],
        _ => Vec::new(),
    }
}

/// Classify a component by `spec.type` (matched case-insensitively, as Dapr) and `spec.version`.
///
/// Errors (each names `spec.type` or `spec.version`; the sidecar adds file and resource):
/// - a `middleware.*` type this build does not implement: a configured middleware is never skipped;
/// - a type of the state or secret store building blocks that this build does not have (`state.nosuch`), or a
///   version of it that is not supported;
/// - a building block Dapr does not define (`foo.bar`).
pub fn classify_component(component_type: &str, version: &str) -> Result<ComponentSupport, ComponentError> {
    let ty = normalize_type(component_type);
    let block = ty.split_once('.').map_or(ty.as_str(), |(block, _)| block);
    match block {
        "state" => {
            check_version(state::state_store_types(), &ty, version, "state store")?;
            Ok(ComponentSupport::State)
        }
        "secretstores" => {
            check_version(secretstores::secret_store_types(), &ty, version, "secret store")?;
            Ok(ComponentSupport::SecretStore)
        }
        "pubsub" => {
            check_version(pubsub::pubsub_types(), &ty, version, "pubsub")?;
            Ok(ComponentSupport::PubSub)
        }
        "middleware" => {
            check_version(MIDDLEWARE_TYPES, &ty, version, "middleware")?;
            Ok(ComponentSupport::Middleware)
        }
        block if NOT_IMPLEMENTED_BUILDING_BLOCKS.contains(&block) => {
            Ok(ComponentSupport::NotImplemented { building_block: block.to_string() })
        }
        _ => Err(ComponentError::new(
            "spec.type",
            format!(
                "unknown component type {ty:?}: {block:?} is not a Dapr building block (state, secretstores, {})",
                NOT_IMPLEMENTED_BUILDING_BLOCKS.join(", ")
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_types_classify() {
        let cases = [
            ("state.in-memory", "v1", ComponentSupport::State),
            ("state.sqlite", "v1", ComponentSupport::State),
            ("middleware.http.bearer", "v1", ComponentSupport::Middleware),
            ("Middleware.HTTP.OPA", "V1", ComponentSupport::Middleware),
            ("State.Redis", "V1", ComponentSupport::State),
            ("secretstores.local.file", "v1", ComponentSupport::SecretStore),
            ("secretstores.local.env", "v1", ComponentSupport::SecretStore),
            ("pubsub.in-memory", "v1", ComponentSupport::PubSub),
            ("bindings.http", "v1", ComponentSupport::NotImplemented { building_block: "bindings".into() }),
        ];
        for (ty, version, expected) in cases {
            assert_eq!(classify_component(ty, version).expect(ty), expected, "{ty}");
        }
    }

    #[test]
    fn unknown_and_middleware_types_are_refused_naming_the_field() {
        let cases = [
            ("state.nosuch", "v1", "spec.type", "unknown state store type \"state.nosuch\""),
            ("secretstores.vault", "v1", "spec.type", "unknown secret store type"),
            ("state.redis", "v2", "spec.version", "unsupported version \"v2\""),
            ("middleware.http.oauth2", "v1", "spec.type", "unknown middleware type \"middleware.http.oauth2\""),
            ("Middleware.HTTP.uppercase", "v1", "spec.type", "unknown middleware type"),
            ("middleware.http.bearer", "v2", "spec.version", "unsupported version"),
            ("foo.bar", "v1", "spec.type", "\"foo\" is not a Dapr building block"),
            ("state", "v1", "spec.type", "unknown state store type"),
        ];
        for (ty, version, field, text) in cases {
            let err = classify_component(ty, version).expect_err(ty);
            assert_eq!(err.path().as_deref(), Some(field), "{ty}: {err}");
            assert!(err.to_string().contains(text), "{ty}: {err}");
        }
    }
}
