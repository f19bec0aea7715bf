//! Every pod annotation Dapr's injector reads (DAPR-FACTS §12.7; `pkg/injector/patcher/sidecar.go`), each with
//! what ward does with it, and the small parsers that turn an annotation's text into a checked value.
//!
//! Owns: the annotation table ([`ANNOTATIONS`]) and value parsing (booleans, ports, integers, names, addresses).
//! Does not own what a value does to the pod: that is [`crate::sidecar`]. Nothing here does I/O.

use std::net::IpAddr;

use crate::Denial;

/// The prefix of every Dapr annotation; a key under it that is not in [`ANNOTATIONS`] is refused (a typo must not
/// pass as "no setting").
pub const PREFIX: &str = "dapr.io/";

pub const ENABLED: &str = "dapr.io/enabled";
pub const APP_ID: &str = "dapr.io/app-id";
pub const APP_PORT: &str = "dapr.io/app-port";
pub const CONFIG: &str = "dapr.io/config";
pub const APP_PROTOCOL: &str = "dapr.io/app-protocol";
pub const APP_SSL: &str = "dapr.io/app-ssl";
pub const ENABLE_PROFILING: &str = "dapr.io/enable-profiling";
pub const LOG_LEVEL: &str = "dapr.io/log-level";
pub const API_TOKEN_SECRET: &str = "dapr.io/api-token-secret";
pub const APP_TOKEN_SECRET: &str = "dapr.io/app-token-secret";
pub const LOG_AS_JSON: &str = "dapr.io/log-as-json";
pub const APP_MAX_CONCURRENCY: &str = "dapr.io/app-max-concurrency";
pub const ENABLE_METRICS: &str = "dapr.io/enable-metrics";
pub const METRICS_PORT: &str = "dapr.io/metrics-port";
pub const ENABLE_DEBUG: &str = "dapr.io/enable-debug";
pub const DEBUG_PORT: &str = "dapr.io/debug-port";
pub const ENV: &str = "dapr.io/env";
pub const ENV_FROM_SECRET: &str = "dapr.io/env-from-secret";
pub const GRPC_PORT: &str = "dapr.io/grpc-port";
pub const INTERNAL_GRPC_PORT: &str = "dapr.io/internal-grpc-port";
pub const CPU_REQUEST: &str = "dapr.io/sidecar-cpu-request";
pub const CPU_LIMIT: &str = "dapr.io/sidecar-cpu-limit";
pub const MEMORY_REQUEST: &str = "dapr.io/sidecar-memory-request";
pub const MEMORY_LIMIT: &str = "dapr.io/sidecar-memory-limit";
pub const LISTEN_ADDRESSES: &str = "dapr.io/sidecar-listen-addresses";
pub const LIVENESS_DELAY: &str = "dapr.io/sidecar-liveness-probe-delay-seconds";
pub const LIVENESS_TIMEOUT: &str = "dapr.io/sidecar-liveness-probe-timeout-seconds";
pub const LIVENESS_PERIOD: &str = "dapr.io/sidecar-liveness-probe-period-seconds";
pub const LIVENESS_THRESHOLD: &str = "dapr.io/sidecar-liveness-probe-threshold";
pub const READINESS_DELAY: &str = "dapr.io/sidecar-readiness-probe-delay-seconds";
pub const READINESS_TIMEOUT: &str = "dapr.io/sidecar-readiness-probe-timeout-seconds";
pub const READINESS_PERIOD: &str = "dapr.io/sidecar-readiness-probe-period-seconds";
pub const READINESS_THRESHOLD: &str = "dapr.io/sidecar-readiness-probe-threshold";
pub const SIDECAR_IMAGE: &str = "dapr.io/sidecar-image";
pub const SECCOMP_PROFILE_TYPE: &str = "dapr.io/sidecar-seccomp-profile-type";
pub const HTTP_MAX_REQUEST_SIZE: &str = "dapr.io/http-max-request-size";
pub const MAX_BODY_SIZE: &str = "dapr.io/max-body-size";
pub const HTTP_READ_BUFFER_SIZE: &str = "dapr.io/http-read-buffer-size";
pub const READ_BUFFER_SIZE: &str = "dapr.io/read-buffer-size";
pub const GRACEFUL_SHUTDOWN_SECONDS: &str = "dapr.io/graceful-shutdown-seconds";
pub const BLOCK_SHUTDOWN_DURATION: &str = "dapr.io/block-shutdown-duration";
pub const ENABLE_API_LOGGING: &str = "dapr.io/enable-api-logging";
pub const UNIX_DOMAIN_SOCKET_PATH: &str = "dapr.io/unix-domain-socket-path";
pub const VOLUME_MOUNTS: &str = "dapr.io/volume-mounts";
pub const VOLUME_MOUNTS_RW: &str = "dapr.io/volume-mounts-rw";
pub const DISABLE_BUILTIN_K8S_SECRET_STORE: &str = "dapr.io/disable-builtin-k8s-secret-store";
pub const ENABLE_APP_HEALTH_CHECK: &str = "dapr.io/enable-app-health-check";
pub const APP_HEALTH_CHECK_PATH: &str = "dapr.io/app-health-check-path";
pub const APP_HEALTH_PROBE_INTERVAL: &str = "dapr.io/app-health-probe-interval";
pub const APP_HEALTH_PROBE_TIMEOUT: &str = "dapr.io/app-health-probe-timeout";
pub const APP_HEALTH_THRESHOLD: &str = "dapr.io/app-health-threshold";
pub const PLACEMENT_HOST_ADDRESS: &str = "dapr.io/placement-host-address";
pub const SCHEDULER_HOST_ADDRESS: &str = "dapr.io/scheduler-host-address";
pub const PLUGGABLE_COMPONENTS: &str = "dapr.io/pluggable-components";
pub const PLUGGABLE_COMPONENTS_SOCKETS_FOLDER: &str = "dapr.io/pluggable-components-sockets-folder";
pub const COMPONENT_CONTAINER: &str = "dapr.io/component-container";
pub const INJECT_PLUGGABLE_COMPONENTS: &str = "dapr.io/inject-pluggable-components";
pub const APP_CHANNEL_ADDRESS: &str = "dapr.io/app-channel-address";
pub const SENTRY_REQUEST_JWT_AUDIENCES: &str = "dapr.io/sentry-request-jwt-audiences";
pub const SIDECAR_SVC_ANNOTATIONS: &str = "dapr.io/sidecar-svc-annotations";
pub const DISABLE_INIT_ENDPOINTS: &str = "dapr.io/disable-init-endpoints";
pub const ENABLE_NATIVE_SIDECAR: &str = "dapr.io/enable-native-sidecar";

/// What ward does with an annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Applied to the injected sidecar or pod.
    Honoured,
    /// Accepted only where ward's behaviour already is what the value asks for (e.g. `"false"` for a feature
    /// ward lacks); any other value is refused with this reason.
    OnlyOff(&'static str),
    /// Always refused: ward has no such feature. The reason is part of the admission error.
    Refused(&'static str),
}

const NO_TLS_APP_CHANNEL: &str =
    "ward's app channel speaks plaintext http or grpc to the app over the pod's loopback (no https/grpcs/h2c)";
const NO_PROFILING: &str = "ward has no profiling endpoint";
const NO_DEBUG: &str = "ward has no debugger mode (daprd's dlv build)";
const NO_READ_BUFFER: &str = "ward's header limits are fixed (ward-net listener limits), not a read-buffer size";
const NO_BLOCK_SHUTDOWN: &str = "ward does not block shutdown waiting for the app";
const NO_PLACEMENT: &str = "ward has no actors or workflows, so no placement service";
const NO_SCHEDULER: &str = "ward has no jobs, actors or workflows, so no scheduler service";
const NO_PLUGGABLE: &str = "ward has no pluggable components";
const NO_JWT_SVID: &str = "ward's sentry issues X.509 SVIDs only, no JWT SVIDs";
const NO_SVC_ANNOTATIONS: &str = "ward does not create the <app-id>-dapr Service, so it has nothing to annotate";
const NO_INIT_ENDPOINTS: &str = "ward has no init-time endpoint switch";
const NO_NATIVE_SIDECAR: &str =
    "ward injects daprd as a regular container (native sidecars need Kubernetes 1.28+, and ward supports older)";

/// Every annotation of Dapr's injector, and what ward does with it.
pub const ANNOTATIONS: &[(&str, Support)] = &[
    (ENABLED, Support::Honoured),
    (APP_ID, Support::Honoured),
    (APP_PORT, Support::Honoured),
    (CONFIG, Support::Honoured),
    (APP_PROTOCOL, Support::Honoured),
    (APP_SSL, Support::OnlyOff(NO_TLS_APP_CHANNEL)),
    (ENABLE_PROFILING, Support::OnlyOff(NO_PROFILING)),
    (LOG_LEVEL, Support::Honoured),
    (API_TOKEN_SECRET, Support::Honoured),
    (APP_TOKEN_SECRET, Support::Honoured),
    (LOG_AS_JSON, Support::Honoured),
    (APP_MAX_CONCURRENCY, Support::Honoured),
    (ENABLE_METRICS, Support::Honoured),
    (METRICS_PORT, Support::Honoured),
    (ENABLE_DEBUG, Support::OnlyOff(NO_DEBUG)),
    (DEBUG_PORT, Support::Refused(NO_DEBUG)),
    (ENV, Support::Honoured),
    (ENV_FROM_SECRET, Support::Honoured),
    (GRPC_PORT, Support::Honoured),
    (INTERNAL_GRPC_PORT, Support::Honoured),
    (CPU_REQUEST, Support::Honoured),
    (CPU_LIMIT, Support::Honoured),
    (MEMORY_REQUEST, Support::Honoured),
    (MEMORY_LIMIT, Support::Honoured),
    (LISTEN_ADDRESSES, Support::Honoured),
    (LIVENESS_DELAY, Support::Honoured),
    (LIVENESS_TIMEOUT, Support::Honoured),
    (LIVENESS_PERIOD, Support::Honoured),
    (LIVENESS_THRESHOLD, Support::Honoured),
    (READINESS_DELAY, Support::Honoured),
    (READINESS_TIMEOUT, Support::Honoured),
    (READINESS_PERIOD, Support::Honoured),
    (READINESS_THRESHOLD, Support::Honoured),
    (SIDECAR_IMAGE, Support::Honoured),
    (SECCOMP_PROFILE_TYPE, Support::Honoured),
    (HTTP_MAX_REQUEST_SIZE, Support::Honoured),
    (MAX_BODY_SIZE, Support::Honoured),
    (HTTP_READ_BUFFER_SIZE, Support::Refused(NO_READ_BUFFER)),
    (READ_BUFFER_SIZE, Support::Refused(NO_READ_BUFFER)),
    (GRACEFUL_SHUTDOWN_SECONDS, Support::Honoured),
    (BLOCK_SHUTDOWN_DURATION, Support::Refused(NO_BLOCK_SHUTDOWN)),
    (ENABLE_API_LOGGING, Support::Honoured),
    (UNIX_DOMAIN_SOCKET_PATH, Support::Honoured),
    (VOLUME_MOUNTS, Support::Honoured),
    (VOLUME_MOUNTS_RW, Support::Honoured),
    // "true" asks for what ward always is (no built-in store); "false" asks for a store ward does not have.
    (DISABLE_BUILTIN_K8S_SECRET_STORE, Support::Honoured),
    (ENABLE_APP_HEALTH_CHECK, Support::Honoured),
    (APP_HEALTH_CHECK_PATH, Support::Honoured),
    (APP_HEALTH_PROBE_INTERVAL, Support::Honoured),
    (APP_HEALTH_PROBE_TIMEOUT, Support::Honoured),
    (APP_HEALTH_THRESHOLD, Support::Honoured),
    // An empty address is how Dapr users switch these services off, which is what ward always is.
    (PLACEMENT_HOST_ADDRESS, Support::OnlyOff(NO_PLACEMENT)),
    (SCHEDULER_HOST_ADDRESS, Support::OnlyOff(NO_SCHEDULER)),
    (PLUGGABLE_COMPONENTS, Support::Refused(NO_PLUGGABLE)),
    (PLUGGABLE_COMPONENTS_SOCKETS_FOLDER, Support::Refused(NO_PLUGGABLE)),
    (COMPONENT_CONTAINER, Support::Refused(NO_PLUGGABLE)),
    (INJECT_PLUGGABLE_COMPONENTS, Support::OnlyOff(NO_PLUGGABLE)),
    (APP_CHANNEL_ADDRESS, Support::Honoured),
    (SENTRY_REQUEST_JWT_AUDIENCES, Support::Refused(NO_JWT_SVID)),
    (SIDECAR_SVC_ANNOTATIONS, Support::Refused(NO_SVC_ANNOTATIONS)),
    (DISABLE_INIT_ENDPOINTS, Support::Refused(NO_INIT_ENDPOINTS)),
    (ENABLE_NATIVE_SIDECAR, Support::OnlyOff(NO_NATIVE_SIDECAR)),
];

/// How ward treats `key`, or `None` when Dapr's injector has no such annotation.
pub fn support(key: &str) -> Option<Support> {
    ANNOTATIONS.iter().find(|(k, _)| *k == key).map(|(_, s)| *s)
}

/// A value cut to a readable length for an error message (annotation values are not secrets, but may be long).
pub(crate) fn shown(value: &str) -> String {
    const MAX: usize = 64;
    match value.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &value[..cut]),
        None => value.to_owned(),
    }
}

pub(crate) fn invalid(annotation: &'static str, value: &str, problem: impl Into<String>) -> Denial {
    // `dapr.io/env` values are often credentials: the message names the annotation and the problem only.
    let value = if annotation == ENV { "(not shown)".to_owned() } else { shown(value) };
    Denial::InvalidValue { annotation, value, problem: problem.into() }
}

/// Dapr's truthy/falsy words (`dapr/kit` `strings.IsTruthy`), case-insensitive. Anything else is refused rather
/// than read as false: `"ture"` must not silently mean "off".
pub fn parse_bool(annotation: &'static str, value: &str) -> Result<bool, Denial> {
    match value.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" | "true" | "t" | "on" | "1" => Ok(true),
        "n" | "no" | "false" | "f" | "off" | "0" => Ok(false),
        _ => Err(invalid(annotation, value, "not a boolean (true or false)")),
    }
}

/// A TCP port, 1-65535.
pub fn parse_port(annotation: &'static str, value: &str) -> Result<u16, Denial> {
    match value.trim().parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(invalid(annotation, value, "not a port number (1-65535)")),
    }
}

/// An integer within `min..=max`.
pub fn parse_int(annotation: &'static str, value: &str, min: i64, max: i64) -> Result<i64, Denial> {
    match value.trim().parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        Ok(_) => Err(invalid(annotation, value, format!("out of range ({min} to {max})"))),
        Err(_) => Err(invalid(annotation, value, "not an integer")),
    }
}

/// A Kubernetes object name (DNS-1123 subdomain: lower-case alphanumerics, `-` and `.`, alphanumeric at both
/// ends, at most 253 characters): Secret and Configuration names.
pub fn parse_object_name(annotation: &'static str, value: &str) -> Result<String, Denial> {
    if is_dns1123_subdomain(value) {
        Ok(value.to_owned())
    } else {
        Err(invalid(
            annotation,
            value,
            "not a Kubernetes object name (lower-case letters, digits, '-' and '.', at most 253 characters)",
        ))
    }
}

pub(crate) fn is_dns1123_subdomain(value: &str) -> bool {
    !value.is_empty() && value.len() <= 253 && value.split('.').all(is_dns1123_label)
}

fn is_dns1123_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-')
}

/// A C identifier (`[A-Za-z_][A-Za-z0-9_]*`), what Dapr requires of environment variable names.
pub(crate) fn is_c_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `dapr.io/sidecar-listen-addresses`: comma-separated IPs, IPv6 optionally in brackets (ward sidecar's own
/// rule, `ward_gate::parse_listen_addresses`). Returns the addresses and the text to pass on unchanged.
pub fn parse_listen_addresses(value: &str) -> Result<Vec<IpAddr>, Denial> {
    if value.trim().is_empty() {
        return Err(invalid(LISTEN_ADDRESSES, value, "empty (give at least one IP address)"));
    }
    value
        .split(',')
        .map(|entry| {
            let entry = entry.trim();
            let bare = entry.strip_prefix('[').and_then(|e| e.strip_suffix(']')).unwrap_or(entry);
            bare.parse::<IpAddr>()
                .map_err(|_| invalid(LISTEN_ADDRESSES, value, format!("{:?} is not an IP address", shown(entry))))
        })
        .collect()
}

/// A host the sidecar connects to: an IP address or a DNS name.
pub fn parse_host(annotation: &'static str, value: &str) -> Result<String, Denial> {
    let host = value.trim();
    let dns_name = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if host.parse::<IpAddr>().is_ok() || dns_name {
        Ok(host.to_owned())
    } else {
        Err(invalid(annotation, value, "not an IP address or DNS name"))
    }
}

/// An absolute path inside a container, without `..` segments, whitespace or control characters.
pub fn parse_container_path(annotation: &'static str, value: &str) -> Result<String, Denial> {
    let path = value.trim();
    if !path.starts_with('/') {
        return Err(invalid(annotation, value, "not an absolute path"));
    }
    if path.split('/').any(|segment| segment == "..") {
        return Err(invalid(annotation, value, "must not contain '..'"));
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control() || c == ':' || c == ',') {
        return Err(invalid(annotation, value, "must not contain whitespace, control characters, ':' or ','"));
    }
    Ok(path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_listed_once_and_under_the_prefix() {
        for (i, (key, _)) in ANNOTATIONS.iter().enumerate() {
            assert!(key.starts_with(PREFIX), "{key}");
            assert!(ANNOTATIONS[i + 1..].iter().all(|(other, _)| other != key), "{key} listed twice");
        }
        assert_eq!(support("dapr.io/app-prot"), None);
        assert_eq!(support(APP_ID), Some(Support::Honoured));
    }

    #[test]
    fn booleans_are_daprs_words_and_nothing_else() {
        for yes in ["true", "True", "1", "on", "yes", "y", "t"] {
            assert_eq!(parse_bool(ENABLED, yes), Ok(true), "{yes}");
        }
        for no in ["false", "0", "off", "no", "n", "f", "FALSE"] {
            assert_eq!(parse_bool(ENABLED, no), Ok(false), "{no}");
        }
        for bad in ["", "ture", "2", "enabled"] {
            assert!(matches!(parse_bool(ENABLED, bad), Err(Denial::InvalidValue { annotation: ENABLED, .. })));
        }
    }

    #[test]
    fn ports_names_hosts_paths() {
        assert_eq!(parse_port(APP_PORT, "8080"), Ok(8080));
        for bad in ["0", "65536", "-1", "80a", ""] {
            assert!(parse_port(APP_PORT, bad).is_err(), "{bad}");
        }
        assert!(parse_object_name(CONFIG, "app-config.v1").is_ok());
        for bad in ["App", "-x", "a..b", "a_b", ""] {
            assert!(parse_object_name(CONFIG, bad).is_err(), "{bad}");
        }
        assert!(parse_host(APP_CHANNEL_ADDRESS, "10.0.0.1").is_ok());
        assert!(parse_host(APP_CHANNEL_ADDRESS, "::1").is_ok());
        assert!(parse_host(APP_CHANNEL_ADDRESS, "app.local").is_ok());
        assert!(parse_host(APP_CHANNEL_ADDRESS, "app local").is_err());
        assert!(parse_container_path(UNIX_DOMAIN_SOCKET_PATH, "/tmp/x").is_ok());
        for bad in ["tmp", "/a/../b", "/a b", "/a:b"] {
            assert!(parse_container_path(UNIX_DOMAIN_SOCKET_PATH, bad).is_err(), "{bad}");
        }
        assert_eq!(parse_listen_addresses("[::1],127.0.0.1").map(|a| a.len()), Ok(2));
        assert!(parse_listen_addresses("localhost").is_err());
        assert!(parse_listen_addresses("").is_err());
    }

    #[test]
    fn env_values_are_never_echoed() {
        let denial = invalid(ENV, "=hunter2-secret", "expected NAME=value pairs");
        assert!(!denial.to_string().contains("hunter2"), "{denial}");
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let long = "x".repeat(500);
        let Denial::InvalidValue { value, .. } = invalid(APP_ID, &long, "too long") else { panic!() };
        assert!(value.chars().count() <= 65);
    }
}
