//! What an annotated pod gets, and the RFC 6902 patch that gives it: the `daprd` container running
//! `ward sidecar --mode kubernetes`, the projected token and trust-anchor volumes, `DAPR_HTTP_PORT` /
//! `DAPR_GRPC_PORT` / `APP_PROTOCOL` in the app containers, and the `dapr.io/*` labels.
//!
//! Parse, don't validate: [`Settings::from_pod`] turns the annotations into checked values (or a [`Denial`]
//! naming the annotation), and [`patch`] builds from those only. Pure functions; no I/O.

use std::collections::{BTreeMap, BTreeSet};

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, KeyToPath, ObjectFieldSelector, Pod, Probe, ProjectedVolumeSource, ResourceRequirements,
    SeccompProfile, SecretKeySelector, SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount,
    VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::annotations::{self as a, Support, invalid, parse_bool, parse_int, parse_port, shown};
use crate::{CONTROL_PLANE_APP_IDS, Denial, InjectorConfig, SIDECAR_UID};

/// Dapr's name for the sidecar container, so `kubectl logs … -c daprd` works unchanged.
pub const CONTAINER_NAME: &str = "daprd";
/// The binary in ward's image.
pub const COMMAND: &str = "/ward";
pub const HTTP_PORT: u16 = 3500;
/// The port kubelet probes (`/v1.0/healthz`), Dapr's public port.
pub const PUBLIC_PORT: u16 = 3501;
pub const HEALTHZ_PATH: &str = "/v1.0/healthz";
pub const DEFAULT_GRPC_PORT: u16 = 50001;
pub const DEFAULT_INTERNAL_GRPC_PORT: u16 = 50002;
pub const DEFAULT_METRICS_PORT: u16 = 9090;
pub const DEFAULT_LISTEN_ADDRESSES: &str = "[::1],127.0.0.1";

pub const TOKEN_VOLUME: &str = "dapr-identity-token";
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/dapr.io/sentrytoken";
pub const TOKEN_EXPIRATION_SECONDS: i64 = 7200;
pub const TRUST_ANCHORS_VOLUME: &str = "dapr-trust-anchors";
pub const TRUST_ANCHORS_CONFIGMAP: &str = "dapr-root-ca.crt";
pub const TRUST_ANCHORS_MOUNT_PATH: &str = "/var/run/secrets/dapr.io/tls";
pub const TRUST_ANCHORS_FILE: &str = "/var/run/secrets/dapr.io/tls/ca.crt";
/// A writable directory for `$WARD_HOME`: the root filesystem is read-only.
pub const WARD_HOME_VOLUME: &str = "ward-home";
pub const WARD_HOME_PATH: &str = "/var/run/ward";
pub const UDS_VOLUME: &str = "dapr-unix-domain-socket";
/// Where daprd's sockets are inside the sidecar (Dapr's constant); the annotation chooses the app's side.
pub const UDS_DAPRD_PATH: &str = "/var/run/dapr-sockets";

pub const LABEL_INJECTED: &str = "dapr.io/sidecar-injected";
pub const LABEL_APP_ID: &str = "dapr.io/app-id";
pub const LABEL_METRICS_ENABLED: &str = "dapr.io/metrics-enabled";

/// Environment variables the injector sets in `daprd`; `dapr.io/env` and `dapr.io/env-from-secret` may not
/// override them (nor the ones ward reads for identity and tokens), so the injected settings are the ones that
/// apply.
pub const RESERVED_ENV: &[&str] = &[
    "NAMESPACE",
    "POD_NAME",
    "DAPR_CONTROLPLANE_NAMESPACE",
    "DAPR_CONTROLPLANE_TRUST_DOMAIN",
    "DAPR_TRUST_ANCHORS_FILE",
    "DAPR_TRUST_ANCHORS",
    "DAPR_SENTRY_TOKEN_FILE",
    "DAPR_API_TOKEN",
    "DAPR_API_TOKEN_FILE",
    "APP_API_TOKEN",
    "APP_API_TOKEN_FILE",
    "DAPR_CERT_CHAIN",
    "DAPR_CERT_KEY",
    "SENTRY_LOCAL_IDENTITY",
    "WARD_HOME",
];

/// Kubelet probe settings (seconds, and failures in a row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSettings {
    pub delay: i32,
    pub timeout: i32,
    pub period: i32,
    pub threshold: i32,
}

/// ward's app-health probing of the app (`--enable-app-health-check` and its settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppHealth {
    pub path: String,
    pub interval_seconds: i64,
    pub timeout_millis: i64,
    pub threshold: i64,
}

/// One environment variable for `daprd` from a Secret (`dapr.io/env-from-secret`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretEnv {
    pub name: String,
    pub secret: String,
    pub key: String,
}

/// A pod volume mounted into `daprd` (`dapr.io/volume-mounts[-rw]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraMount {
    pub volume: String,
    pub path: String,
    pub read_only: bool,
}

/// An annotated pod's checked settings: every field comes from an annotation (or Dapr's default) that passed
/// its parser.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub app_id: String,
    pub app_port: Option<u16>,
    pub config: Option<String>,
    pub app_protocol: &'static str,
    pub log_level: &'static str,
    pub log_as_json: bool,
    pub api_token_secret: Option<String>,
    pub app_token_secret: Option<String>,
    pub app_max_concurrency: Option<i64>,
    pub enable_metrics: bool,
    pub metrics_port: u16,
    pub grpc_port: u16,
    pub internal_grpc_port: u16,
    pub env: Vec<(String, String)>,
    pub env_from_secret: Vec<SecretEnv>,
    pub requests: BTreeMap<String, String>,
    pub limits: BTreeMap<String, String>,
    pub listen_addresses: String,
    pub liveness: ProbeSettings,
    pub readiness: ProbeSettings,
    pub image: String,
    pub seccomp_profile: &'static str,
    pub http_max_request_size: Option<i64>,
    pub max_body_size: Option<String>,
    pub graceful_shutdown_seconds: Option<i64>,
    pub enable_api_logging: Option<bool>,
    /// `dapr.io/disable-builtin-k8s-secret-store: "true"`: no built-in `kubernetes` secret store.
    pub disable_builtin_secret_store: bool,
    pub unix_domain_socket_path: Option<String>,
    pub extra_mounts: Vec<ExtraMount>,
    pub app_health: Option<AppHealth>,
    pub app_channel_address: Option<String>,
    /// Told to whoever created the pod (admission warnings): honoured settings that weaken a default.
    pub warnings: Vec<String>,
}

/// An image reference as far as the injector can tell: non-empty, at most 512 bytes, no whitespace or controls.
pub fn is_image_reference(image: &str) -> bool {
    !image.is_empty() && image.len() <= 512 && !image.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Whether the pod already has its sidecar (a `daprd` container, or the injected label): then it is left as is.
pub fn already_injected(pod: &Pod) -> bool {
    let labelled = pod.metadata.labels.as_ref().is_some_and(|labels| labels.contains_key(LABEL_INJECTED));
    let has_container = pod.spec.as_ref().is_some_and(|spec| {
        spec.containers.iter().any(|c| c.name == CONTAINER_NAME)
            || spec.init_containers.iter().flatten().any(|c| c.name == CONTAINER_NAME)
    });
    labelled || has_container
}

/// Whether `dapr.io/enabled` asks for a sidecar.
pub fn enabled(pod: &Pod) -> Result<bool, Denial> {
    match pod.metadata.annotations.as_ref().and_then(|an| an.get(a::ENABLED)) {
        Some(value) => parse_bool(a::ENABLED, value),
        None => Ok(false),
    }
}

impl Settings {
    /// Reads the annotations of an enabled pod. `pod_name` is the name the pod will have (empty when the API
    /// server is still to generate it).
    pub fn from_pod(config: &InjectorConfig, pod_name: &str, pod: &Pod) -> Result<Settings, Denial> {
        let empty = BTreeMap::new();
        let an = pod.metadata.annotations.as_ref().unwrap_or(&empty);
        let get = |key: &str| an.get(key).map(String::as_str);

        // Unknown keys first: a misspelt annotation must not pass as "not set".
        for key in an.keys() {
            if key.starts_with(a::PREFIX) && a::support(key).is_none() {
                return Err(Denial::UnknownAnnotation { annotation: shown(key) });
            }
        }
        // Then every annotation naming a feature ward lacks, in the table's order.
        for (key, support) in a::ANNOTATIONS {
            let Some(value) = get(key) else { continue };
            match support {
                Support::Honoured => {}
                Support::Refused(reason) => {
                    return Err(Denial::Unsupported { annotation: key, value: shown(value), reason });
                }
                Support::OnlyOff(reason) => {
                    let off = if *key == a::PLACEMENT_HOST_ADDRESS || *key == a::SCHEDULER_HOST_ADDRESS {
                        // Dapr trims quotes and spaces: `""` is how its users switch the service off.
                        value.trim().trim_matches(['"', '\'']).trim().is_empty()
                    } else {
                        !parse_bool(key, value)?
                    };
                    if !off {
                        return Err(Denial::Unsupported { annotation: key, value: shown(value), reason });
                    }
                }
            }
        }
        let disable_builtin_secret_store = get(a::DISABLE_BUILTIN_K8S_SECRET_STORE)
            .map(|value| parse_bool(a::DISABLE_BUILTIN_K8S_SECRET_STORE, value))
            .transpose()?
            .unwrap_or(false);

        let app_id = app_id(get(a::APP_ID), pod_name)?;
        let port = |key: &'static str, default: u16| get(key).map_or(Ok(default), |v| parse_port(key, v));
        let app_port = get(a::APP_PORT).map(|v| parse_port(a::APP_PORT, v)).transpose()?;
        let grpc_port = port(a::GRPC_PORT, DEFAULT_GRPC_PORT)?;
        let internal_grpc_port = port(a::INTERNAL_GRPC_PORT, DEFAULT_INTERNAL_GRPC_PORT)?;
        let enable_metrics = get(a::ENABLE_METRICS).map_or(Ok(true), |v| parse_bool(a::ENABLE_METRICS, v))?;
        let metrics_port = port(a::METRICS_PORT, DEFAULT_METRICS_PORT)?;
        if !enable_metrics && get(a::METRICS_PORT).is_some() {
            return Err(Denial::Conflict {
                annotation: a::METRICS_PORT,
                problem: "has no effect with dapr.io/enable-metrics: \"false\"".into(),
            });
        }
        check_ports(pod, app_port, grpc_port, internal_grpc_port, enable_metrics.then_some(metrics_port))?;

        let config_name = get(a::CONFIG).map(|v| a::parse_object_name(a::CONFIG, v)).transpose()?;
        let app_protocol = match get(a::APP_PROTOCOL).map(|v| v.trim().to_ascii_lowercase()) {
            None => "http",
            Some(p) if p == "http" => "http",
            Some(p) if p == "grpc" => "grpc",
            Some(p) if matches!(p.as_str(), "https" | "grpcs" | "h2c") => {
                return Err(Denial::Unsupported {
                    annotation: a::APP_PROTOCOL,
                    value: p,
                    reason: "ward's app channel speaks http or grpc (no https, grpcs or h2c)",
                });
            }
            Some(_) => {
                let value = get(a::APP_PROTOCOL).unwrap_or_default();
                return Err(invalid(a::APP_PROTOCOL, value, "not an app protocol (http or grpc)"));
            }
        };
        let log_level = match get(a::LOG_LEVEL).map(|v| v.trim().to_ascii_lowercase()) {
            None => "info",
            Some(l) if l == "debug" => "debug",
            Some(l) if l == "info" => "info",
            Some(l) if l == "warn" => "warn",
            Some(l) if l == "error" => "error",
            Some(l) if l == "fatal" => {
                return Err(Denial::Unsupported {
                    annotation: a::LOG_LEVEL,
                    value: l,
                    reason: "ward's log levels are debug, info, warn and error",
                });
            }
            Some(_) => {
                let value = get(a::LOG_LEVEL).unwrap_or_default();
                return Err(invalid(a::LOG_LEVEL, value, "not a log level (debug, info, warn or error)"));
            }
        };
        let flag = |key: &'static str| get(key).map(|v| parse_bool(key, v)).transpose();
        let log_as_json = flag(a::LOG_AS_JSON)?.unwrap_or(false);
        let enable_api_logging = flag(a::ENABLE_API_LOGGING)?;
        let api_token_secret =
            get(a::API_TOKEN_SECRET).map(|v| a::parse_object_name(a::API_TOKEN_SECRET, v)).transpose()?;
        let app_token_secret =
            get(a::APP_TOKEN_SECRET).map(|v| a::parse_object_name(a::APP_TOKEN_SECRET, v)).transpose()?;
        let app_max_concurrency = get(a::APP_MAX_CONCURRENCY)
            .map(|v| parse_int(a::APP_MAX_CONCURRENCY, v, -1, i64::from(i32::MAX)))
            .transpose()?;

        let env = get(a::ENV).map(parse_env).transpose()?.unwrap_or_default();
        let env_from_secret = get(a::ENV_FROM_SECRET).map(parse_env_from_secret).transpose()?.unwrap_or_default();
        let mut names = BTreeSet::new();
        let env_names =
            env.iter().map(|(n, _)| (a::ENV, n)).chain(env_from_secret.iter().map(|s| (a::ENV_FROM_SECRET, &s.name)));
        for (annotation, name) in env_names {
            if !names.insert(name.clone()) {
                return Err(Denial::Conflict { annotation, problem: format!("variable {name} is set twice") });
            }
        }

        let mut requests = BTreeMap::new();
        let mut limits = BTreeMap::new();
        for (resource, request_key, limit_key) in
            [("cpu", a::CPU_REQUEST, a::CPU_LIMIT), ("memory", a::MEMORY_REQUEST, a::MEMORY_LIMIT)]
        {
            let quantity = |key: &'static str| {
                get(key)
                    .map(|v| {
                        crate::quantity::parse(v)
                            .map(|n| (v.trim().to_owned(), n))
                            .ok_or_else(|| invalid(key, v, "not a Kubernetes quantity (e.g. 100m, 0.5, 128Mi, 1Gi)"))
                    })
                    .transpose()
            };
            let request = quantity(request_key)?;
            let limit = quantity(limit_key)?;
            if let (Some((_, r)), Some((_, l))) = (&request, &limit)
                && r > l
            {
                return Err(Denial::Conflict {
                    annotation: request_key,
                    problem: format!("the request is above {limit_key}"),
                });
            }
            if let Some((text, _)) = request {
                requests.insert(resource.to_owned(), text);
            }
            if let Some((text, _)) = limit {
                limits.insert(resource.to_owned(), text);
            }
        }

        let mut warnings = Vec::new();
        let listen_addresses = match get(a::LISTEN_ADDRESSES) {
            None => DEFAULT_LISTEN_ADDRESSES.to_owned(),
            Some(value) => {
                let addrs = a::parse_listen_addresses(value)?;
                if addrs.iter().any(|ip| !ip.to_canonical().is_loopback()) && api_token_secret.is_none() {
                    warnings.push(format!(
                        "{}: the Dapr API listens beyond the pod's loopback without dapr.io/api-token-secret",
                        a::LISTEN_ADDRESSES
                    ));
                }
                value.trim().to_owned()
            }
        };
        let probe = |keys: [&'static str; 4], defaults: [i32; 4]| -> Result<ProbeSettings, Denial> {
            let mut out = defaults;
            for ((slot, key), min) in out.iter_mut().zip(keys).zip([0, 1, 1, 1]) {
                if let Some(value) = get(key) {
                    // Bounded by i32 (the API's type) and a day: larger values are mistakes, not settings.
                    *slot = parse_int(key, value, min, 86_400)? as i32;
                }
            }
            Ok(ProbeSettings { delay: out[0], timeout: out[1], period: out[2], threshold: out[3] })
        };
        let liveness = probe(
            [a::LIVENESS_DELAY, a::LIVENESS_TIMEOUT, a::LIVENESS_PERIOD, a::LIVENESS_THRESHOLD],
            [180, 3, 10, 5],
        )?;
        let readiness = probe(
            [a::READINESS_DELAY, a::READINESS_TIMEOUT, a::READINESS_PERIOD, a::READINESS_THRESHOLD],
            [1, 1, 1, 5],
        )?;
        let image = match get(a::SIDECAR_IMAGE) {
            None => config.sidecar_image.clone(),
            Some(value) if is_image_reference(value.trim()) => value.trim().to_owned(),
            Some(value) => return Err(invalid(a::SIDECAR_IMAGE, value, "not an image reference")),
        };
        let seccomp_profile = match get(a::SECCOMP_PROFILE_TYPE).map(str::trim) {
            None | Some("RuntimeDefault") => "RuntimeDefault",
            Some("Unconfined") => {
                warnings.push(format!("{}: the sidecar runs without a seccomp filter", a::SECCOMP_PROFILE_TYPE));
                "Unconfined"
            }
            Some("Localhost") => {
                return Err(Denial::Unsupported {
                    annotation: a::SECCOMP_PROFILE_TYPE,
                    value: "Localhost".into(),
                    reason: "a Localhost profile needs a profile path, which no Dapr annotation carries",
                });
            }
            Some(other) => {
                return Err(invalid(
                    a::SECCOMP_PROFILE_TYPE,
                    other,
                    "not a seccomp profile type (RuntimeDefault or Unconfined)",
                ));
            }
        };
        let http_max_request_size =
            get(a::HTTP_MAX_REQUEST_SIZE).map(|v| parse_int(a::HTTP_MAX_REQUEST_SIZE, v, 1, 1 << 20)).transpose()?;
        let max_body_size = match get(a::MAX_BODY_SIZE) {
            None => None,
            Some(value) => {
                // The sidecar's own parser, so what passes here is what `ward sidecar --max-body-size` accepts.
                ward_config::parse_byte_quantity(value).map_err(|problem| invalid(a::MAX_BODY_SIZE, value, problem))?;
                Some(value.trim().to_owned())
            }
        };
        if http_max_request_size.is_some() && max_body_size.is_some() {
            return Err(Denial::Conflict {
                annotation: a::HTTP_MAX_REQUEST_SIZE,
                problem: "set only one of dapr.io/http-max-request-size and dapr.io/max-body-size".into(),
            });
        }
        let graceful_shutdown_seconds =
            match get(a::GRACEFUL_SHUTDOWN_SECONDS).map(|v| parse_int(a::GRACEFUL_SHUTDOWN_SECONDS, v, -1, 86_400)) {
                None | Some(Ok(-1)) => None,
                Some(Ok(n)) => Some(n),
                Some(Err(denial)) => return Err(denial),
            };
        let unix_domain_socket_path = get(a::UNIX_DOMAIN_SOCKET_PATH)
            .map(|v| a::parse_container_path(a::UNIX_DOMAIN_SOCKET_PATH, v))
            .transpose()?;
        let mut extra_mounts = Vec::new();
        for (key, read_only) in [(a::VOLUME_MOUNTS, true), (a::VOLUME_MOUNTS_RW, false)] {
            if let Some(value) = get(key) {
                extra_mounts.extend(parse_volume_mounts(key, value, read_only, pod)?);
            }
        }
        for (i, mount) in extra_mounts.iter().enumerate() {
            if extra_mounts[..i].iter().any(|m| m.path == mount.path) {
                return Err(Denial::Conflict {
                    annotation: if mount.read_only { a::VOLUME_MOUNTS } else { a::VOLUME_MOUNTS_RW },
                    problem: format!("mount path {} is used twice", mount.path),
                });
            }
        }

        let app_health = match flag(a::ENABLE_APP_HEALTH_CHECK)? {
            Some(true) => {
                let path = get(a::APP_HEALTH_CHECK_PATH).unwrap_or("/healthz").trim().to_owned();
                if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(invalid(a::APP_HEALTH_CHECK_PATH, &path, "not an absolute URL path"));
                }
                let int = |key: &'static str, default: i64, max: i64| {
                    get(key).map_or(Ok(default), |v| parse_int(key, v, 1, max))
                };
                Some(AppHealth {
                    path,
                    interval_seconds: int(a::APP_HEALTH_PROBE_INTERVAL, 5, 3600)?,
                    timeout_millis: int(a::APP_HEALTH_PROBE_TIMEOUT, 500, 3_600_000)?,
                    threshold: int(a::APP_HEALTH_THRESHOLD, 3, 1000)?,
                })
            }
            _ => {
                // Settings of a probe that does not run would be silently ignored.
                for key in [
                    a::APP_HEALTH_CHECK_PATH,
                    a::APP_HEALTH_PROBE_INTERVAL,
                    a::APP_HEALTH_PROBE_TIMEOUT,
                    a::APP_HEALTH_THRESHOLD,
                ] {
                    if get(key).is_some() {
                        return Err(Denial::Conflict {
                            annotation: key,
                            problem: "has no effect without dapr.io/enable-app-health-check: \"true\"".into(),
                        });
                    }
                }
                None
            }
        };
        let app_channel_address =
            get(a::APP_CHANNEL_ADDRESS).map(|v| a::parse_host(a::APP_CHANNEL_ADDRESS, v)).transpose()?;

        Ok(Settings {
            app_id,
            app_port,
            config: config_name,
            app_protocol,
            log_level,
            log_as_json,
            api_token_secret,
            app_token_secret,
            app_max_concurrency,
            enable_metrics,
            metrics_port,
            grpc_port,
            internal_grpc_port,
            env,
            env_from_secret,
            requests,
            limits,
            listen_addresses,
            liveness,
            readiness,
            image,
            seccomp_profile,
            http_max_request_size,
            max_body_size,
            graceful_shutdown_seconds,
            enable_api_logging,
            disable_builtin_secret_store,
            unix_domain_socket_path,
            extra_mounts,
            app_health,
            app_channel_address,
            warnings,
        })
    }
}

/// `dapr.io/app-id`, else the pod's name (Dapr's rule), checked with Dapr's Kubernetes rule (`<id>-dapr` is a
/// DNS label) and refused when it is a control-plane id.
fn app_id(annotation: Option<&str>, pod_name: &str) -> Result<String, Denial> {
    let app_id = match annotation {
        Some(value) => {
            ward_identity::validate_kubernetes_app_id(value)
                .map_err(|err| invalid(a::APP_ID, value, err.to_string()))?;
            value.to_owned()
        }
        None => {
            ward_identity::validate_kubernetes_app_id(pod_name).map_err(|err| Denial::AppIdFromPodName {
                pod_name: shown(pod_name),
                problem: if pod_name.is_empty() {
                    "the pod has no name yet (generateName)".to_owned()
                } else {
                    err.to_string()
                },
            })?;
            pod_name.to_owned()
        }
    };
    if CONTROL_PLANE_APP_IDS.contains(&app_id.as_str()) {
        return Err(Denial::ControlPlaneAppId { app_id });
    }
    Ok(app_id)
}

/// The sidecar's ports must differ from each other, from the app port, and from ports the pod's containers
/// already declare (they share one network namespace). A clash is blamed on the annotation that can fix it.
fn check_ports(pod: &Pod, app_port: Option<u16>, grpc: u16, internal: u16, metrics: Option<u16>) -> Result<(), Denial> {
    // (port, what uses it, the annotation that moves it)
    let mut taken: Vec<(u16, &'static str, &'static str)> =
        vec![(HTTP_PORT, "the sidecar's HTTP API", a::ENABLED), (PUBLIC_PORT, "the sidecar's health port", a::ENABLED)];
    let mut claims = vec![
        (grpc, "the sidecar's gRPC API", a::GRPC_PORT),
        (internal, "the sidecar's mTLS port", a::INTERNAL_GRPC_PORT),
    ];
    if let Some(metrics) = metrics {
        claims.push((metrics, "the sidecar's metrics", a::METRICS_PORT));
    }
    if let Some(app_port) = app_port {
        claims.push((app_port, "the app port", a::APP_PORT));
    }
    for (port, what, annotation) in claims {
        if let Some((_, owner, _)) = taken.iter().find(|(p, _, _)| *p == port) {
            return Err(Denial::Conflict { annotation, problem: format!("port {port} is already used by {owner}") });
        }
        taken.push((port, what, annotation));
    }
    // The app's own ports may not be the sidecar's (the app port is meant to be one of them).
    let containers = pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
    for container in containers {
        for declared in container.ports.iter().flatten() {
            let port = declared.container_port;
            let clash = taken.iter().find(|(p, what, _)| i32::from(*p) == port && *what != "the app port");
            if let Some((_, what, annotation)) = clash {
                return Err(Denial::Conflict {
                    annotation,
                    problem: format!("port {port} is declared by container {:?} and is {what}", container.name),
                });
            }
        }
    }
    Ok(())
}

/// `dapr.io/env`: `KEY=value,KEY2=value2`. As Dapr, a comma starts a new pair only when a `NAME=` follows it, so
/// values may contain commas; unlike Dapr, a value may contain `=` (Dapr silently drops such pairs).
fn parse_env(value: &str) -> Result<Vec<(String, String)>, Denial> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for segment in value.split(',') {
        let starts_pair = segment.split_once('=').is_some_and(|(name, _)| a::is_c_identifier(name.trim()));
        match (starts_pair, pairs.last_mut()) {
            (true, _) => {
                let (name, val) = segment.split_once('=').unwrap_or_default();
                pairs.push((name.trim().to_owned(), val.to_owned()));
            }
            (false, Some((_, previous))) => {
                previous.push(',');
                previous.push_str(segment);
            }
            (false, None) => {
                return Err(invalid(a::ENV, value, "expected NAME=value pairs separated by commas"));
            }
        }
    }
    for (name, _) in &pairs {
        reserved(a::ENV, name)?;
    }
    Ok(pairs.into_iter().map(|(n, v)| (n, v.trim().to_owned())).collect())
}

/// `dapr.io/env-from-secret`: `NAME=secret` (key = the secret's name, Dapr's rule) or `NAME=secret:key`.
fn parse_env_from_secret(value: &str) -> Result<Vec<SecretEnv>, Denial> {
    value
        .split(',')
        .map(|entry| {
            let (name, source) = entry.split_once('=').ok_or_else(|| {
                invalid(a::ENV_FROM_SECRET, value, format!("{:?} is not NAME=secret[:key]", shown(entry)))
            })?;
            let name = name.trim();
            if !a::is_c_identifier(name) {
                return Err(invalid(a::ENV_FROM_SECRET, value, format!("{:?} is not a variable name", shown(name))));
            }
            reserved(a::ENV_FROM_SECRET, name)?;
            let (secret, key) = source.trim().split_once(':').unwrap_or((source.trim(), source.trim()));
            a::parse_object_name(a::ENV_FROM_SECRET, secret)?;
            let key_ok = !key.is_empty()
                && key.len() <= 253
                && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !key_ok {
                return Err(invalid(a::ENV_FROM_SECRET, value, format!("{:?} is not a Secret key", shown(key))));
            }
            Ok(SecretEnv { name: name.to_owned(), secret: secret.to_owned(), key: key.to_owned() })
        })
        .collect()
}

fn reserved(annotation: &'static str, name: &str) -> Result<(), Denial> {
    if RESERVED_ENV.contains(&name) {
        return Err(Denial::Conflict {
            annotation,
            problem: format!("variable {name} is set by the injector and cannot be overridden"),
        });
    }
    Ok(())
}

/// `dapr.io/volume-mounts[-rw]`: `volume:/path,volume2:/path2`, each volume one of the pod's.
fn parse_volume_mounts(key: &'static str, value: &str, read_only: bool, pod: &Pod) -> Result<Vec<ExtraMount>, Denial> {
    let volumes: BTreeSet<&str> =
        pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()).map(|v| v.name.as_str()).collect();
    value
        .split(',')
        .map(|entry| {
            let (volume, path) = entry
                .trim()
                .split_once(':')
                .ok_or_else(|| invalid(key, value, format!("{:?} is not volume:/path", shown(entry))))?;
            if !volumes.contains(volume) {
                return Err(invalid(key, value, format!("the pod has no volume {:?}", shown(volume))));
            }
            let path = a::parse_container_path(key, path)?;
            let inside = |root: &str| path == root || path.starts_with(&format!("{root}/"));
            if ["/var/run/secrets/dapr.io", UDS_DAPRD_PATH, WARD_HOME_PATH].iter().any(|root| inside(root))
                || path == "/"
            {
                return Err(invalid(
                    key,
                    value,
                    format!("{path} is where the injector mounts the sidecar's own files"),
                ));
            }
            Ok(ExtraMount { volume: volume.to_owned(), path, read_only })
        })
        .collect()
}

fn env_value(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.to_owned(), value: Some(value.into()), value_from: None }
}

fn env_field(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: field_path.to_owned(), api_version: None }),
            ..Default::default()
        }),
    }
}

fn env_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector { name: secret.to_owned(), key: key.to_owned(), optional: None }),
            ..Default::default()
        }),
    }
}

/// The `ward sidecar` arguments (after the command): Dapr's flags with ward's names, in Dapr's order where
/// Dapr has the flag. Only flags `ward sidecar` parses (a test in the `ward` crate parses them with its clap).
pub fn sidecar_args(config: &InjectorConfig, s: &Settings) -> Vec<String> {
    let mut args: Vec<String> = ["sidecar", "--mode", "kubernetes"].map(String::from).to_vec();
    let mut push = |flag: &str, value: String| {
        args.push(flag.to_owned());
        args.push(value);
    };
    push("--dapr-http-port", HTTP_PORT.to_string());
    push("--dapr-grpc-port", s.grpc_port.to_string());
    push("--dapr-internal-grpc-port", s.internal_grpc_port.to_string());
    // Other sidecars reach this one's mTLS port through the pod IP.
    push("--dapr-internal-grpc-listen-address", "0.0.0.0".into());
    push("--dapr-listen-addresses", s.listen_addresses.clone());
    push("--dapr-public-port", PUBLIC_PORT.to_string());
    push("--app-id", s.app_id.clone());
    push("--app-protocol", s.app_protocol.to_owned());
    push("--log-level", s.log_level.to_owned());
    push("--sentry-address", config.sentry_address());
    push("--control-plane-address", config.operator_address());
    if let Some(port) = s.app_port {
        push("--app-port", port.to_string());
    }
    if s.enable_metrics {
        push("--metrics-port", s.metrics_port.to_string());
        // Prometheus scrapes the pod IP.
        push("--metrics-listen-address", "0.0.0.0".into());
    }
    if let Some(name) = &s.config {
        push("--config", name.clone());
    }
    if let Some(address) = &s.app_channel_address {
        push("--app-channel-address", address.clone());
    }
    if let Some(health) = &s.app_health {
        push("--app-health-check-path", health.path.clone());
        push("--app-health-probe-interval", health.interval_seconds.to_string());
        push("--app-health-probe-timeout", health.timeout_millis.to_string());
        push("--app-health-threshold", health.threshold.to_string());
    }
    if let Some(size) = s.http_max_request_size {
        push("--dapr-http-max-request-size", size.to_string());
    }
    if let Some(size) = &s.max_body_size {
        push("--max-body-size", size.clone());
    }
    if let Some(seconds) = s.graceful_shutdown_seconds {
        push("--dapr-graceful-shutdown-seconds", seconds.to_string());
    }
    if s.unix_domain_socket_path.is_some() {
        push("--unix-domain-socket", UDS_DAPRD_PATH.into());
    }
    // Flags whose value may be `false` or negative are written `--flag=value`, so no parser reads the value as
    // a flag of its own.
    args.push("--enable-mtls".into());
    args.push(format!("--enable-metrics={}", s.enable_metrics));
    if let Some(on) = s.enable_api_logging {
        args.push(format!("--enable-api-logging={on}"));
    }
    if s.app_health.is_some() {
        args.push("--enable-app-health-check=true".into());
    }
    if s.disable_builtin_secret_store {
        args.push("--disable-builtin-k8s-secret-store".into());
    }
    if let Some(n) = s.app_max_concurrency {
        args.push(format!("--app-max-concurrency={n}"));
    }
    // A sidecar serves requests on one thread unless told otherwise; given a CPU limit, it uses one per CPU of the
    // limit (`0`: the runtime reads the cgroup quota), as daprd uses what its container may. `WARD_WORKER_THREADS`
    // in `dapr.io/env` still decides when set.
    if s.limits.contains_key("cpu") && !s.env.iter().any(|(name, _)| name == "WARD_WORKER_THREADS") {
        args.push("--worker-threads=0".into());
    }
    if s.log_as_json {
        args.push("--log-as-json".into());
    }
    if config.sidecar_production {
        args.push("--production".into());
    }
    args
}

/// The `daprd` container.
pub fn container(config: &InjectorConfig, s: &Settings) -> Container {
    let mut env = vec![
        env_field("NAMESPACE", "metadata.namespace"),
        env_field("POD_NAME", "metadata.name"),
        env_value("DAPR_CONTROLPLANE_NAMESPACE", &config.control_plane_namespace),
        env_value("DAPR_CONTROLPLANE_TRUST_DOMAIN", &config.control_plane_trust_domain),
        env_value("DAPR_TRUST_ANCHORS_FILE", TRUST_ANCHORS_FILE),
        env_value("DAPR_SENTRY_TOKEN_FILE", format!("{TOKEN_MOUNT_PATH}/token")),
        env_value("WARD_HOME", WARD_HOME_PATH),
    ];
    if let Some(secret) = &s.api_token_secret {
        env.push(env_secret("DAPR_API_TOKEN", secret, "token"));
    }
    if let Some(secret) = &s.app_token_secret {
        env.push(env_secret("APP_API_TOKEN", secret, "token"));
    }
    env.extend(s.env.iter().map(|(name, value)| env_value(name, value)));
    env.extend(s.env_from_secret.iter().map(|e| env_secret(&e.name, &e.secret, &e.key)));

    let mut mounts = vec![
        VolumeMount {
            name: TOKEN_VOLUME.into(),
            mount_path: TOKEN_MOUNT_PATH.into(),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount {
            name: TRUST_ANCHORS_VOLUME.into(),
            mount_path: TRUST_ANCHORS_MOUNT_PATH.into(),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount { name: WARD_HOME_VOLUME.into(), mount_path: WARD_HOME_PATH.into(), ..Default::default() },
    ];
    if s.unix_domain_socket_path.is_some() {
        mounts.push(VolumeMount { name: UDS_VOLUME.into(), mount_path: UDS_DAPRD_PATH.into(), ..Default::default() });
    }
    mounts.extend(s.extra_mounts.iter().map(|m| VolumeMount {
        name: m.volume.clone(),
        mount_path: m.path.clone(),
        read_only: Some(m.read_only),
        ..Default::default()
    }));

    let port = |name: &str, port: u16| ContainerPort {
        name: Some(name.to_owned()),
        container_port: i32::from(port),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    let mut ports =
        vec![port("dapr-http", HTTP_PORT), port("dapr-grpc", s.grpc_port), port("dapr-internal", s.internal_grpc_port)];
    if s.enable_metrics {
        ports.push(port("dapr-metrics", s.metrics_port));
    }
    let probe = |p: ProbeSettings| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(HEALTHZ_PATH.into()),
            port: IntOrString::Int(i32::from(PUBLIC_PORT)),
            ..Default::default()
        }),
        initial_delay_seconds: Some(p.delay),
        timeout_seconds: Some(p.timeout),
        period_seconds: Some(p.period),
        failure_threshold: Some(p.threshold),
        ..Default::default()
    };
    let quantities = |m: &BTreeMap<String, String>| {
        (!m.is_empty()).then(|| m.iter().map(|(k, v)| (k.clone(), Quantity(v.clone()))).collect())
    };
    let resources = (!s.requests.is_empty() || !s.limits.is_empty()).then(|| ResourceRequirements {
        requests: quantities(&s.requests),
        limits: quantities(&s.limits),
        ..Default::default()
    });
    Container {
        name: CONTAINER_NAME.into(),
        image: Some(s.image.clone()),
        command: Some(vec![COMMAND.into()]),
        args: Some(sidecar_args(config, s)),
        env: Some(env),
        ports: Some(ports),
        volume_mounts: Some(mounts),
        readiness_probe: Some(probe(s.readiness)),
        liveness_probe: Some(probe(s.liveness)),
        resources,
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(SIDECAR_UID),
            run_as_group: Some(SIDECAR_UID),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
            seccomp_profile: Some(SeccompProfile { type_: s.seccomp_profile.into(), localhost_profile: None }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The volumes the injector adds to the pod.
pub fn volumes(config: &InjectorConfig, s: &Settings) -> Vec<Volume> {
    let mut volumes = vec![
        Volume {
            name: TOKEN_VOLUME.into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(config.sentry_spiffe_id()),
                        expiration_seconds: Some(TOKEN_EXPIRATION_SECONDS),
                        path: "token".into(),
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: TRUST_ANCHORS_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: TRUST_ANCHORS_CONFIGMAP.into(),
                items: Some(vec![KeyToPath { key: "ca.crt".into(), path: "ca.crt".into(), mode: None }]),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: WARD_HOME_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource { size_limit: Some(Quantity("64Mi".into())), ..Default::default() }),
            ..Default::default()
        },
    ];
    if s.unix_domain_socket_path.is_some() {
        volumes.push(Volume {
            name: UDS_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        });
    }
    volumes
}

fn pointer(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
}

fn add(path: PointerBuf, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation { path, value })
}

fn to_value<T: serde::Serialize>(value: &T) -> Value {
    // k8s-openapi types serialize to JSON infallibly (maps with string keys, no non-finite floats).
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// The patch that injects the sidecar into `pod`. Names the injector adds must be free in the pod.
pub fn patch(config: &InjectorConfig, s: &Settings, pod: &Pod) -> Result<Patch, Denial> {
    let spec = pod.spec.clone().unwrap_or_default();
    let new_volumes = volumes(config, s);
    for volume in spec.volumes.iter().flatten() {
        if new_volumes.iter().any(|v| v.name == volume.name) {
            return Err(Denial::Conflict {
                annotation: a::ENABLED,
                problem: format!("the pod already has a volume named {:?}, which the injector adds", volume.name),
            });
        }
    }
    let mut ops = Vec::new();
    if spec.volumes.is_none() {
        ops.push(add(pointer(&["spec", "volumes"]), Value::Array(Vec::new())));
    }
    for volume in &new_volumes {
        ops.push(add(pointer(&["spec", "volumes", "-"]), to_value(volume)));
    }
    ops.push(add(pointer(&["spec", "containers", "-"]), to_value(&container(config, s))));

    let app_env = [
        env_value("DAPR_HTTP_PORT", HTTP_PORT.to_string()),
        env_value("DAPR_GRPC_PORT", s.grpc_port.to_string()),
        env_value("APP_PROTOCOL", s.app_protocol),
    ];
    let uds_mount = s.unix_domain_socket_path.as_ref().map(|path| VolumeMount {
        name: UDS_VOLUME.into(),
        mount_path: path.clone(),
        ..Default::default()
    });
    for (i, c) in spec.containers.iter().enumerate() {
        let index = i.to_string();
        // The app's own value wins (Dapr's rule): it knows what it set.
        let missing: Vec<&EnvVar> =
            app_env.iter().filter(|e| !c.env.iter().flatten().any(|have| have.name == e.name)).collect();
        match &c.env {
            None => ops.push(add(pointer(&["spec", "containers", &index, "env"]), to_value(&missing))),
            Some(_) => {
                for var in missing {
                    ops.push(add(pointer(&["spec", "containers", &index, "env", "-"]), to_value(var)));
                }
            }
        }
        if let Some(mount) = &uds_mount {
            if c.volume_mounts.iter().flatten().any(|m| m.mount_path == mount.mount_path) {
                return Err(Denial::Conflict {
                    annotation: a::UNIX_DOMAIN_SOCKET_PATH,
                    problem: format!("container {:?} already mounts something at {}", c.name, mount.mount_path),
                });
            }
            match &c.volume_mounts {
                None => ops.push(add(pointer(&["spec", "containers", &index, "volumeMounts"]), to_value(&[mount]))),
                Some(_) => {
                    ops.push(add(pointer(&["spec", "containers", &index, "volumeMounts", "-"]), to_value(mount)))
                }
            }
        }
    }

    if pod.metadata.labels.is_none() {
        ops.push(add(pointer(&["metadata", "labels"]), Value::Object(Default::default())));
    }
    for (label, value) in [
        (LABEL_INJECTED, "true".to_owned()),
        (LABEL_APP_ID, s.app_id.clone()),
        (LABEL_METRICS_ENABLED, s.enable_metrics.to_string()),
    ] {
        ops.push(add(pointer(&["metadata", "labels", label]), Value::String(value)));
    }
    Ok(Patch(ops))
}
