//! Dapr resources — `Component`, `Configuration`, `Subscription` — read from YAML, checked, and turned into typed
//! values, with errors that name the file, the resource and the field in one line:
//!
//! ```text
//! resources/acl.yaml: Configuration "appconfig": spec.accessControl.policies[0].operations[1].httpVerb: invalid type: string, expected a sequence
//! ```
//!
//! # Nothing configured is silently ignored
//!
//! Every key of a Configuration is judged against one table of Dapr's schema (`schema.rs`): inside the security
//! sections (`accessControl`, `secrets`, `api`, `components`, `mtls`, `httpPipeline`, `appHttpPipeline`, `ward`)
//! an unknown or misspelt key is a load error; anything else ward does not do (an unknown key elsewhere, a Dapr
//! section or feature ward does not implement) is listed in [`Configuration::unsupported`] for the runtime to refuse
//! in production or warn about in development. A test enumerates Dapr's fields and checks each one lands in a typed
//! field, in that list, or in an error.
//!
//! What this crate does **not** do: compile or evaluate policies (`ward-policy` does; the raw
//! [`ward_policy::spec`] sections are embedded as they are), know which component types exist (the components crate
//! reports that with [`ConfigError::invalid_component`]), talk to secret stores ([`Component::resolve_metadata`]
//! takes a resolver callback), watch files (the runtime polls [`fingerprint`]), or anything async.
//!
//! # YAML parser
//!
//! `serde_yaml` is deprecated and unmaintained, and its forks (`serde_yml`) are not trustworthy. We use
//! **serde-saphyr**: maintained, pure Rust with `#![forbid(unsafe_code)]`, built on a YAML 1.2 parser (saphyr /
//! granit), with budgets against alias bombs and oversized input, refusal of duplicate keys, multi-document
//! support, and errors that carry a line and column while letting us switch off source snippets (a snippet could
//! copy a password from the file into a log). Each document is parsed into a generic tree first, then
//! deserialized through `serde_path_to_error` so that a wrong value reports its path.
//!
//! # Secrets in errors
//!
//! No error message contains a metadata value, a resolved secret or a snippet of a file: serde's "invalid type"
//! messages are stripped of the offending value, and `Debug` of [`MetadataValue`] and [`ResolvedMetadata`] hides
//! values.

mod component;
mod configuration;
mod error;
mod meta;
mod resources;
mod schema;
#[cfg(test)]
mod schema_fields;
mod subscription;
mod units;
mod yaml;

pub use component::{
    COMPONENT_API_VERSION, Component, DEFAULT_COMPONENT_VERSION, MetadataItem, MetadataValue, ResolvedMetadata,
    SecretRef,
};
pub use configuration::{
    ApiLogging, AppIdBinding, AuditFsync, CONFIGURATION_API_VERSION, ComponentDenyList, Configuration, Feature,
    HandlerSpec, IMPLEMENTED_FEATURES, MtlsSpec, NameResolution, OtelSpec, OtlpProtocol, SecurityControls, TracingSpec,
    WardSpec,
};
pub use error::{
    BoxError, ConfigError, Location, MAX_ECHOED_CHARS, MAX_MESSAGE_CHARS, MetadataItemRef, ResolveError, ResourceId,
    ResourceKind, bounded, quote_value,
};
pub use resources::{ResourceSet, configuration_from_yaml, file_fingerprint, fingerprint, load_configuration};
pub use schema::{UnsupportedField, UnsupportedKind};
pub use subscription::{RouteRule, SUBSCRIPTION_API_VERSIONS, Subscription};
pub use units::{parse_byte_quantity, parse_go_duration};
/// The raw policy sections a [`Configuration`] carries, re-exported for convenience.
pub use ward_policy::spec::{AccessControlSpec, ApiSpec, SecretsSpec};
pub use yaml::{DEFAULT_MAX_FILE_BYTES, MAX_FILE_BYTES_ENV};
