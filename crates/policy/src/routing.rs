//! The routing decision of the public HTTP API, as a pure function: which API a request reaches, from its method,
//! raw path and `dapr-app-id` header. The API-token exemption ([`is_token_exempt`]) and the `spec.api` allow/deny
//! decision ([`crate::api::ApiAllowList::allows_http`]) are both computed from this one classification, so the
//! three cannot drift apart (issue 12 rows 3 and 4, the class of CVE-2023-37918).
//!
//! Owns: the path grammar of the routes ward serves (`/v1.0/healthz`, `/v1.0/healthz/outbound`, `/v1.0/metadata`,
//! `/v1.0/state/…`, `/v1.0/secrets/…`, `/v1.0/invoke/{id}/method/{m}`, ward's `/v1.0-alpha1/ward/provenance/jwks`) and the `dapr-app-id` fallback (any other
//! path with that header is an invocation whose method is the whole path).
//!
//! Does not own: serving the routes, the token check itself (`ward-gate`), or normalising an invocation method
//! (the callee's sidecar does that once, [`crate::invocation`]).
//!
//! Matching follows the router (axum 0.8 / matchit) exactly: the raw path (still percent-encoded, no query) is
//! compared byte for byte, case-sensitively, with no slash trimming or merging and no dot-segment resolution, so
//! `/v1.0/healthz/`, `//v1.0/healthz`, `/v1.0/./healthz`, `/V1.0/HEALTHZ` and `/v1.0/healthz%2F` are not the
//! healthz route. A `GET` route also serves `HEAD`, as axum's does; another method on a routed path is
//! [`PublicRequest::MethodNotAllowed`], never the invocation fallback. A test in `ward-gate` runs a real axum router
//! over the same table of spellings to hold this.
//!
//! One deliberate difference from plain fallback routing: a path that *looks like* health after any
//! normalisation (percent-decoding, case folding, merged slashes, dot segments) is never an invocation, even with
//! `dapr-app-id`; it is [`PublicRequest::NotFound`].

use std::borrow::Cow;

/// The exact healthz paths.
pub const HEALTHZ_PATH: &str = "/v1.0/healthz";
/// The exact outbound healthz path.
pub const HEALTHZ_OUTBOUND_PATH: &str = "/v1.0/healthz/outbound";
/// Where an app fetches the keys that verify its provenance tokens (issue 15).
pub const PROVENANCE_JWKS_PATH: &str = "/v1.0-alpha1/ward/provenance/jwks";

/// The path prefix of invocations between sidecars: `/v1.0/internal/invoke/<raw method>`, the request's own HTTP
/// method being the verb. The caller's sidecar writes it, the callee's parses it (`prepare_invocation`).
pub const INTERNAL_INVOKE_PREFIX: &str = "/v1.0/internal/invoke/";
/// The path prefix of proxied gRPC calls between sidecars (followed by `pkg.Service/Method`).
pub const INTERNAL_GRPC_PREFIX: &str = "/v1.0/internal/grpc/";

const INVOKE_PREFIX: &str = "/v1.0/invoke/";
const STATE_PREFIX: &str = "/v1.0/state/";
const SECRETS_PREFIX: &str = "/v1.0/secrets/";

/// Which Dapr API a public request belongs to (for `spec.api` and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PublicApi {
    Healthz,
    Metadata,
    State,
    Secrets,
    /// Service invocation, in either form.
    Invoke,
    /// ward's provenance keys (the JWKS an app verifies its `ward-provenance` tokens with).
    Provenance,
}

impl PublicApi {
    /// The API name as written in `spec.api` rules.
    pub fn name(self) -> &'static str {
        match self {
            PublicApi::Healthz => "healthz",
            PublicApi::Metadata => "metadata",
            PublicApi::State => "state",
            PublicApi::Secrets => "secrets",
            PublicApi::Invoke => "invoke",
            PublicApi::Provenance => "provenance",
        }
    }
}

/// The state routes; `store` and `key` are raw path segments (the router decodes them for the handler).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateRoute<'a> {
    /// `POST /v1.0/state/{store}`
    Save { store: &'a str },
    /// `POST /v1.0/state/{store}/bulk`
    BulkGet { store: &'a str },
    /// `POST /v1.0/state/{store}/transaction`
    Transaction { store: &'a str },
    /// `GET|HEAD /v1.0/state/{store}/{key}`
    Get { store: &'a str, key: &'a str },
    /// `DELETE /v1.0/state/{store}/{key}`
    Delete { store: &'a str, key: &'a str },
}

/// The secrets routes; raw path segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretsRoute<'a> {
    /// `GET|HEAD /v1.0/secrets/{store}/bulk`
    Bulk { store: &'a str },
    /// `GET|HEAD /v1.0/secrets/{store}/{name}`
    Get { store: &'a str, name: &'a str },
}

/// How an invocation named its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvokeForm {
    /// `/v1.0/invoke/{id}/method/{m}`.
    Path,
    /// Any other path with a `dapr-app-id` header.
    Header,
}

/// The classification of one public HTTP API request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicRequest<'a> {
    /// `GET|HEAD /v1.0/healthz`.
    Healthz,
    /// `GET|HEAD /v1.0/healthz/outbound`.
    HealthzOutbound,
    /// `GET|HEAD /v1.0/metadata`.
    Metadata,
    /// `GET|HEAD /v1.0-alpha1/ward/provenance/jwks`.
    ProvenanceJwks,
    /// `PUT /v1.0/metadata/{key}` (an app's own extended metadata); `key` is the raw path segment.
    MetadataSet {
        key: &'a str,
    },
    State(StateRoute<'a>),
    Secrets(SecretsRoute<'a>),
    /// Service invocation. `target` is `app-id` or `app-id.namespace` (percent-decoded for the path form, as the
    /// header value for the header form); `raw_method` is still percent-encoded, without a leading `/` for the
    /// header form; it goes to the callee's sidecar unchanged.
    Invoke {
        target: Cow<'a, str>,
        raw_method: &'a str,
        form: InvokeForm,
    },
    /// `/v1.0/invoke…` without a target app (Dapr's `ERR_DIRECT_INVOKE`), or an empty `dapr-app-id`.
    InvokeMissingAppId,
    /// A routed path with a method its route does not serve (405).
    MethodNotAllowed {
        api: PublicApi,
    },
    /// Nothing (404).
    NotFound,
}

impl PublicRequest<'_> {
    /// The API this request belongs to; `None` for [`PublicRequest::NotFound`].
    pub fn api(&self) -> Option<PublicApi> {
        match self {
            PublicRequest::Healthz | PublicRequest::HealthzOutbound => Some(PublicApi::Healthz),
            PublicRequest::Metadata | PublicRequest::MetadataSet { .. } => Some(PublicApi::Metadata),
            PublicRequest::State(_) => Some(PublicApi::State),
            PublicRequest::ProvenanceJwks => Some(PublicApi::Provenance),
            PublicRequest::Secrets(_) => Some(PublicApi::Secrets),
            PublicRequest::Invoke { .. } | PublicRequest::InvokeMissingAppId => Some(PublicApi::Invoke),
            PublicRequest::MethodNotAllowed { api } => Some(*api),
            PublicRequest::NotFound => None,
        }
    }

    /// Whether this is an invocation that will reach another app.
    pub fn is_invocation(&self) -> bool {
        matches!(self, PublicRequest::Invoke { .. })
    }
}

/// Classifies a public HTTP API request. `method` is the request method as received (`http::Method::as_str`,
/// case-sensitive like the router), `raw_path` the URI path exactly as received (`http::Uri::path`: still
/// percent-encoded, no query), `app_id_header` the `dapr-app-id` header value if present and valid UTF-8.
pub fn classify_public<'a>(method: &str, raw_path: &'a str, app_id_header: Option<&'a str>) -> PublicRequest<'a> {
    if let Some(routed) = route(method, raw_path) {
        return routed;
    }
    if looks_like_healthz(raw_path) {
        // Never an invocation, whatever the header says (issue 12 row 3).
        return PublicRequest::NotFound;
    }
    if let Some(rest) = raw_path.strip_prefix(INVOKE_PREFIX) {
        return match rest.split_once("/method/") {
            Some((target, raw_method)) if !target.is_empty() => {
                PublicRequest::Invoke { target: percent_decode_lossy(target), raw_method, form: InvokeForm::Path }
            }
            _ => PublicRequest::InvokeMissingAppId,
        };
    }
    if let Some(target) = app_id_header {
        if target.is_empty() {
            return PublicRequest::InvokeMissingAppId;
        }
        return PublicRequest::Invoke {
            target: Cow::Borrowed(target),
            raw_method: raw_path.trim_start_matches('/'),
            form: InvokeForm::Header,
        };
    }
    if raw_path.starts_with("/v1.0/invoke") {
        return PublicRequest::InvokeMissingAppId;
    }
    PublicRequest::NotFound
}

/// Whether a request skips the API token: `GET` on exactly [`HEALTHZ_PATH`] or [`HEALTHZ_OUTBOUND_PATH`] as routed
/// (not `HEAD`, not any other spelling). Independent of every header, so a `dapr-app-id` cannot change it.
pub fn is_token_exempt(method: &str, raw_path: &str) -> bool {
    // The routing decision below gives `Healthz`/`HealthzOutbound` for exactly these two paths; compared directly
    // because every API request asks (the `public_routing` proptest holds the two equal).
    method == "GET" && (raw_path == HEALTHZ_PATH || raw_path == HEALTHZ_OUTBOUND_PATH)
}

/// The routes the router serves, matched as axum/matchit match them: a `{param}` matches one segment, which may be
/// empty except when it is the last one (matchit 0.8 behaviour, held by the router test in `ward-gate`).
fn route<'a>(method: &str, raw_path: &'a str) -> Option<PublicRequest<'a>> {
    let get = matches!(method, "GET" | "HEAD");
    let pick = |ok: bool, req: PublicRequest<'a>, api: PublicApi| {
        Some(if ok { req } else { PublicRequest::MethodNotAllowed { api } })
    };
    match raw_path {
        HEALTHZ_PATH => return pick(get, PublicRequest::Healthz, PublicApi::Healthz),
        HEALTHZ_OUTBOUND_PATH => return pick(get, PublicRequest::HealthzOutbound, PublicApi::Healthz),
        "/v1.0/metadata" => return pick(get, PublicRequest::Metadata, PublicApi::Metadata),
        PROVENANCE_JWKS_PATH => return pick(get, PublicRequest::ProvenanceJwks, PublicApi::Provenance),
        _ => {}
    }
    if let Some(key) = raw_path.strip_prefix("/v1.0/metadata/")
        && !key.is_empty()
        && !key.contains('/')
    {
        return pick(method == "PUT", PublicRequest::MetadataSet { key }, PublicApi::Metadata);
    }
    if let Some(rest) = raw_path.strip_prefix(STATE_PREFIX) {
        let post = method == "POST";
        let mut segments = rest.split('/');
        let parts = (segments.next(), segments.next(), segments.next());
        let api = PublicApi::State;
        return match parts {
            (Some(store), None, None) if !store.is_empty() => {
                pick(post, PublicRequest::State(StateRoute::Save { store }), api)
            }
            (Some(store), Some("bulk"), None) => pick(post, PublicRequest::State(StateRoute::BulkGet { store }), api),
            (Some(store), Some("transaction"), None) => {
                pick(post, PublicRequest::State(StateRoute::Transaction { store }), api)
            }
            (Some(store), Some(key), None) if !key.is_empty() => match method {
                "DELETE" => Some(PublicRequest::State(StateRoute::Delete { store, key })),
                _ => pick(get, PublicRequest::State(StateRoute::Get { store, key }), api),
            },
            _ => None,
        };
    }
    if let Some(rest) = raw_path.strip_prefix(SECRETS_PREFIX) {
        let mut segments = rest.split('/');
        let parts = (segments.next(), segments.next(), segments.next());
        let api = PublicApi::Secrets;
        return match parts {
            (Some(store), Some("bulk"), None) => pick(get, PublicRequest::Secrets(SecretsRoute::Bulk { store }), api),
            (Some(store), Some(name), None) if !name.is_empty() => {
                pick(get, PublicRequest::Secrets(SecretsRoute::Get { store, name }), api)
            }
            _ => None,
        };
    }
    None
}

/// Whether `raw_path`, after any normalisation some component might apply (percent-decoding, ASCII case folding,
/// `\` as `/`, merged slashes, `.` and `..` segments, `;params` stripped from segments), starts with the segments
/// `v1*/healthz`.
fn looks_like_healthz(raw_path: &str) -> bool {
    let decoded = percent_decode_lossy(raw_path).to_ascii_lowercase();
    let mut kept: Vec<&str> = Vec::new();
    for segment in decoded.split(['/', '\\']) {
        let segment = segment.split(';').next().unwrap_or_default();
        match segment {
            "" | "." => {}
            ".." => {
                kept.pop();
            }
            other => kept.push(other),
        }
        // Passing through `/v1*/healthz` at any point counts (`/v1.0/healthz%2F..` walks back out of it, but a
        // server that resolves differently would not): nothing under healthz, in any spelling, is an invocation.
        if matches!(kept.as_slice(), [version, "healthz", ..] if version.starts_with("v1")) {
            return true;
        }
    }
    false
}

/// Percent-decodes, keeping an invalid `%` sequence as it is and replacing invalid UTF-8 (the router's own
/// decoding of path parameters is not stricter; a bad target app-id is refused later by its SPIFFE ID check).
fn percent_decode_lossy(raw: &str) -> Cow<'_, str> {
    if !raw.contains('%') {
        return Cow::Borrowed(raw);
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |at: usize| bytes.get(at).and_then(|&h| char::from(h).to_digit(16));
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                // Both digits are < 16, so the value fits a byte.
                out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'?'));
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests;
