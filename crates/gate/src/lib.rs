//! The gate between an app and its own sidecar: who may call the sidecar's API, what the sidecar presents to its
//! app, and the record of every API call.
//!
//! The core is protocol-neutral: [`ApiTokens::check`] judges one presented token (static tokens compared in
//! constant time, or a JWT verified against a JWKS). Thin adapters put that one check in front of the HTTP API
//! ([`http::ApiTokenLayer`]) and the gRPC API ([`grpc::GrpcApiTokenLayer`], or
//! [`ApiTokens::check_grpc_metadata`] from a tonic interceptor), so the two front ends cannot drift apart.
//!
//! This crate does not route requests, does not know building blocks, and does not decide service-invocation
//! ACLs (`ward-policy` does). It never logs, returns or prints a token value.

pub mod apilog;
pub mod grpc;
pub mod http;
pub mod jwks;
pub mod jwt;
pub mod listen;
pub mod tokens;
mod watch;

use std::path::PathBuf;

pub use self::http::{ApiToken, ApiTokenLayer};
pub use apilog::{ApiLog, ApiLogHandle, ApiLogLayer, ApiLogOptions};
pub use grpc::{GrpcApiToken, GrpcApiTokenLayer};
pub use jwt::{JwtConfig, JwtReason, JwtVerifier};
pub use listen::{ListenError, exposure_check, parse_listen_addresses};
pub use tokens::{ApiTokens, AppToken, TokenRejection, strip_token};

/// The header (HTTP) and metadata key (gRPC) that carries a token, in both directions (Dapr's name).
pub const API_TOKEN_HEADER: &str = "dapr-api-token";

/// Environment variable holding the static token the app must present (app → sidecar).
pub const DAPR_API_TOKEN_ENV: &str = "DAPR_API_TOKEN";
/// Environment variable holding the static token the sidecar presents to its app (sidecar → app).
pub const APP_API_TOKEN_ENV: &str = "APP_API_TOKEN";
/// Environment variable naming a token file for `DAPR_API_TOKEN` (same as `--dapr-api-token-file`).
pub const DAPR_API_TOKEN_FILE_ENV: &str = "DAPR_API_TOKEN_FILE";
/// Environment variable naming a token file for `APP_API_TOKEN` (same as `--app-api-token-file`).
pub const APP_API_TOKEN_FILE_ENV: &str = "APP_API_TOKEN_FILE";

/// Why a token source or JWKS could not be set up. These are start-up errors: the sidecar refuses to start rather
/// than run without the protection it was asked for (fail closed). No variant carries a token value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GateError {
    /// The file could not be read.
    #[error("cannot read {what} file {path}")]
    FileRead {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than any sane token file or JWKS.
    #[error("{what} file {path} is larger than {limit} bytes")]
    FileTooLarge { what: &'static str, path: PathBuf, limit: u64 },
    /// The token file holds no token (only blank lines).
    #[error("token file {path} holds no token")]
    TokenFileEmpty { path: PathBuf },
    /// A token holds bytes that cannot travel in an HTTP header (control characters, or not UTF-8 safe ASCII).
    /// `line` is 1-based; 0 means the value came from an environment variable.
    #[error("token in {origin} (line {line}) holds characters that cannot be sent in a header")]
    TokenInvalid { origin: String, line: usize },
    /// A file-backed source needs a tokio runtime to watch the file.
    #[error("watching {path} needs a running tokio runtime")]
    NoRuntime { path: PathBuf },
    /// The JWKS is not valid JSON of the JWKS shape.
    #[error("JWKS file {path} is not a valid JWK set")]
    JwksParse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The JWKS holds no key that may verify a token (HMAC `oct` keys, unknown curves and weak RSA are ignored).
    #[error("JWKS file {path} holds no usable public key (RSA >= 2048 bits, EC P-256/P-384, OKP Ed25519)")]
    JwksNoUsableKey { path: PathBuf },
    /// A JWKS URL given to the synchronous constructor, which only reads files.
    #[error("JWKS URL {url} must be loaded with JwtVerifier::from_config")]
    JwksUrlUnsupported { url: String },
    /// The JWKS URL could not be fetched at start.
    #[error("fetching the JWKS")]
    JwksFetch(#[source] ward_fetch::FetchError),
    /// A JWT setting is missing or empty.
    #[error("JWT API token mode needs a non-empty {field}")]
    JwtConfigMissing { field: &'static str },
}
