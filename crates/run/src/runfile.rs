//! Dapr's Multi-App Run file (`dapr.yaml`), parsed strictly: unknown keys are errors that name the file and line,
//! keys Dapr knows but ward does not implement yet are refused with "not supported yet", and Dapr's path rules are
//! applied (common paths relative to the file, `appDirPath` relative to the file, other per-app paths relative to
//! `appDirPath`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A run file that cannot be used: always names the file, and the line and column when the YAML parser knows
/// them. One line, never the file's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", file.display(), position.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
pub struct RunFileError {
    pub file: PathBuf,
    /// 1-based (line, column).
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl RunFileError {
    fn new(file: &Path, message: impl Into<String>) -> Self {
        Self { file: file.to_owned(), position: None, message: message.into() }
    }
}

/// Keys shared by `common` and each app.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Shared {
    resources_path: Option<String>,
    resources_paths: Option<Vec<String>>,
    config_file_path: Option<String>,
    app_protocol: Option<String>,
    api_listen_addresses: Option<String>,
    log_level: Option<String>,
    enable_api_logging: Option<bool>,
    max_body_size: Option<String>,
    app_channel_address: Option<String>,
    env: Option<BTreeMap<Scalar, Scalar>>,
    // Known to Dapr; refused below with "not supported yet".
    enable_profiling: Option<serde_json_value::Any>,
    app_max_concurrency: Option<serde_json_value::Any>,
    placement_host_address: Option<serde_json_value::Any>,
    scheduler_host_address: Option<serde_json_value::Any>,
    #[serde(rename = "appSSL")]
    app_ssl: Option<serde_json_value::Any>,
    read_buffer_size: Option<serde_json_value::Any>,
    enable_app_health_check: Option<serde_json_value::Any>,
    app_health_check_path: Option<serde_json_value::Any>,
    app_health_probe_interval: Option<serde_json_value::Any>,
    app_health_probe_timeout: Option<serde_json_value::Any>,
    app_health_threshold: Option<serde_json_value::Any>,
    runtime_path: Option<serde_json_value::Any>,
    daprd_log_destination: Option<serde_json_value::Any>,
    app_log_destination: Option<serde_json_value::Any>,
}

/// An env key or value: YAML scalars of any type (`PORT: 8080`, `DEBUG: true`) are taken as the text written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

fn env_map(env: &Option<BTreeMap<Scalar, Scalar>>) -> BTreeMap<String, String> {
    env.iter().flatten().map(|(k, v)| (k.0.clone(), v.0.clone())).collect()
}

/// A placeholder that accepts any YAML value (for keys we only need to detect).
mod serde_json_value {
    #[derive(Debug, Clone, Default)]
    pub struct Any;
    impl<'de> serde::Deserialize<'de> for Any {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            serde::de::IgnoredAny::deserialize(d).map(|_| Any)
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawApp {
    app_dir_path: String,
    #[serde(rename = "appID")]
    app_id: Option<String>,
    app_port: Option<u16>,
    command: Option<Vec<String>>,
    #[serde(rename = "daprHTTPPort")]
    dapr_http_port: Option<u16>,
    #[serde(rename = "daprGRPCPort")]
    dapr_grpc_port: Option<u16>,
    #[serde(rename = "daprInternalGRPCPort")]
    dapr_internal_grpc_port: Option<u16>,
    metrics_port: Option<u16>,
    // Known to Dapr; refused below.
    profile_port: Option<serde_json_value::Any>,
    unix_domain_socket: Option<serde_json_value::Any>,
    container_image: Option<serde_json_value::Any>,
    container_image_pull_policy: Option<serde_json_value::Any>,
    create_service: Option<serde_json_value::Any>,
    #[serde(flatten)]
    shared: Shared,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRunFile {
    version: u32,
    name: Option<String>,
    #[serde(default)]
    common: Shared,
    apps: Vec<RawApp>,
}

/// One app of a run, with every path resolved.
#[derive(Debug, Clone)]
pub struct AppSpec {
    pub app_id: String,
    pub app_dir: PathBuf,
    pub app_port: Option<u16>,
    pub command: Vec<String>,
    pub dapr_http_port: Option<u16>,
    pub dapr_grpc_port: Option<u16>,
    pub dapr_internal_grpc_port: Option<u16>,
    pub metrics_port: Option<u16>,
    pub resources_paths: Vec<PathBuf>,
    pub config: Option<PathBuf>,
    pub app_protocol: Option<String>,
    pub api_listen_addresses: Option<String>,
    pub log_level: Option<String>,
    pub enable_api_logging: Option<bool>,
    pub max_body_size: Option<String>,
    pub app_channel_address: Option<String>,
    /// Environment for the app (common merged with per-app; per-app wins).
    pub env: BTreeMap<String, String>,
}

impl AppSpec {
    /// An app with nothing but its id and directory set (the `ward run --app-id` case; the caller fills in the
    /// flags it was given).
    pub fn new(app_id: impl Into<String>, app_dir: PathBuf) -> Self {
        Self {
            app_id: app_id.into(),
            app_dir,
            app_port: None,
            command: Vec::new(),
            dapr_http_port: None,
            dapr_grpc_port: None,
            dapr_internal_grpc_port: None,
            metrics_port: None,
            resources_paths: Vec::new(),
            config: None,
            app_protocol: None,
            api_listen_addresses: None,
            log_level: None,
            enable_api_logging: None,
            max_body_size: None,
            app_channel_address: None,
            env: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunFile {
    pub name: Option<String>,
    pub apps: Vec<AppSpec>,
}

/// `-f FILE|DIR`: a directory means `dapr.yaml` in it, else `ward.yaml`.
pub fn locate(path: &Path) -> Result<PathBuf, RunFileError> {
    if path.is_dir() {
        for name in ["dapr.yaml", "ward.yaml"] {
            let candidate = path.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
        return Err(RunFileError::new(path, "no dapr.yaml or ward.yaml in this directory"));
    }
    Ok(path.to_owned())
}

/// `-f FILE|DIR`: locates, reads and parses the run file; returns its path too.
pub fn load(path: &Path) -> Result<(PathBuf, RunFile), RunFileError> {
    let file = locate(path)?;
    let text = std::fs::read_to_string(&file).map_err(|err| RunFileError::new(&file, err.to_string()))?;
    let run = parse(&file, &text)?;
    Ok((file, run))
}

fn unsupported(file: &Path, what: &str, key: &str, present: bool) -> Result<(), RunFileError> {
    if present {
        return Err(RunFileError::new(file, format!("{what}: {key} is not supported yet by ward run")));
    }
    Ok(())
}

fn check_shared(file: &Path, what: &str, shared: &Shared) -> Result<(), RunFileError> {
    let keys: [(&str, bool); 14] = [
        ("enableProfiling", shared.enable_profiling.is_some()),
        ("appMaxConcurrency", shared.app_max_concurrency.is_some()),
        ("placementHostAddress", shared.placement_host_address.is_some()),
        ("schedulerHostAddress", shared.scheduler_host_address.is_some()),
        ("appSSL", shared.app_ssl.is_some()),
        ("readBufferSize", shared.read_buffer_size.is_some()),
        ("enableAppHealthCheck", shared.enable_app_health_check.is_some()),
        ("appHealthCheckPath", shared.app_health_check_path.is_some()),
        ("appHealthProbeInterval", shared.app_health_probe_interval.is_some()),
        ("appHealthProbeTimeout", shared.app_health_probe_timeout.is_some()),
        ("appHealthThreshold", shared.app_health_threshold.is_some()),
        ("runtimePath", shared.runtime_path.is_some()),
        ("daprdLogDestination", shared.daprd_log_destination.is_some()),
        ("appLogDestination", shared.app_log_destination.is_some()),
    ];
    for (key, present) in keys {
        unsupported(file, what, key, present)?;
    }
    Ok(())
}

fn resolve(base: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() { path.to_owned() } else { base.join(path) }
}

fn resources_of(shared: &Shared) -> Option<Vec<String>> {
    match (&shared.resources_paths, &shared.resources_path) {
        (Some(paths), _) => Some(paths.clone()),
        (None, Some(path)) => Some(vec![path.clone()]),
        (None, None) => None,
    }
}

/// serde reports an unknown field at the start of its mapping; point at the key itself, which is what a person
/// needs to find (the first line at or after the mapping that starts with `<key>:`).
fn unknown_key_position(text: &str, message: &str, from_line: usize) -> Option<(usize, usize)> {
    let key = message.split("unknown field `").nth(1)?.split('`').next()?;
    text.lines().enumerate().skip(from_line.saturating_sub(1)).find_map(|(index, line)| {
        let trimmed = line.trim_start();
        let item = trimmed.strip_prefix("- ").unwrap_or(trimmed).trim_start();
        let column = line.len() - item.len() + 1;
        item.strip_prefix(key).filter(|rest| rest.trim_start().starts_with(':')).map(|_| (index + 1, column))
    })
}

pub fn parse(file: &Path, text: &str) -> Result<RunFile, RunFileError> {
    let options = serde_saphyr::options! {
        with_snippet: false,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        // YAML 1.2 booleans only (`true`/`false`), as Dapr's Go parser: `Y: on` is text, not `true: true`.
        strict_booleans: true,
    };
    let raw: RawRunFile = serde_saphyr::from_str_with_options(text, options).map_err(|err| {
        let message = err
            .render_with_options(serde_saphyr::render_options! { snippets: serde_saphyr::SnippetMode::Off })
            .lines()
            .next()
            .unwrap_or("invalid run file")
            .to_owned();
        match err.location().filter(|l| l.line() > 0) {
            Some(l) => {
                let tail = format!(" at line {}, column {}", l.line(), l.column());
                let message = message.strip_suffix(&tail).unwrap_or(&message).to_owned();
                let (line, column) = unknown_key_position(text, &message, l.line() as usize)
                    .unwrap_or((l.line() as usize, l.column() as usize));
                RunFileError { file: file.to_owned(), position: Some((line, column)), message }
            }
            None => RunFileError::new(file, message),
        }
    })?;
    if raw.version != 1 {
        return Err(RunFileError::new(file, format!("version: {} is not supported (expected 1)", raw.version)));
    }
    if raw.apps.is_empty() {
        return Err(RunFileError::new(file, "apps: at least one app is required"));
    }
    check_shared(file, "common", &raw.common)?;
    let file_dir = file.parent().map(Path::to_owned).unwrap_or_else(|| PathBuf::from("."));
    let common = &raw.common;
    let mut apps = Vec::new();
    for (index, app) in raw.apps.into_iter().enumerate() {
        let what = format!("apps[{index}]");
        check_shared(file, &what, &app.shared)?;
        for (key, present) in [
            ("profilePort", app.profile_port.is_some()),
            ("unixDomainSocket", app.unix_domain_socket.is_some()),
            ("containerImage", app.container_image.is_some()),
            ("containerImagePullPolicy", app.container_image_pull_policy.is_some()),
            ("createService", app.create_service.is_some()),
        ] {
            unsupported(file, &what, key, present)?;
        }
        let app_dir = resolve(&file_dir, &app.app_dir_path);
        if !app_dir.is_dir() {
            return Err(RunFileError::new(
                file,
                format!("{what}.appDirPath: {} is not a directory", app_dir.display()),
            ));
        }
        let app_id = match app.app_id {
            Some(id) => id,
            None => app_dir
                .canonicalize()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .ok_or_else(|| RunFileError::new(file, format!("{what}: cannot derive appID from appDirPath")))?,
        };
        let resources_paths = match resources_of(&app.shared) {
            Some(paths) => paths.iter().map(|p| resolve(&app_dir, p)).collect(),
            None => resources_of(common).unwrap_or_default().iter().map(|p| resolve(&file_dir, p)).collect(),
        };
        let config = match (&app.shared.config_file_path, &common.config_file_path) {
            (Some(path), _) => Some(resolve(&app_dir, path)),
            (None, Some(path)) => Some(resolve(&file_dir, path)),
            (None, None) => None,
        };
        let mut env = env_map(&common.env);
        env.extend(env_map(&app.shared.env));
        let pick = |own: &Option<String>, shared: &Option<String>| own.clone().or_else(|| shared.clone());
        apps.push(AppSpec {
            app_id,
            app_dir,
            app_port: app.app_port,
            command: app.command.unwrap_or_default(),
            dapr_http_port: app.dapr_http_port,
            dapr_grpc_port: app.dapr_grpc_port,
            dapr_internal_grpc_port: app.dapr_internal_grpc_port,
            metrics_port: app.metrics_port,
            resources_paths,
            config,
            app_protocol: pick(&app.shared.app_protocol, &common.app_protocol),
            api_listen_addresses: pick(&app.shared.api_listen_addresses, &common.api_listen_addresses),
            log_level: pick(&app.shared.log_level, &common.log_level),
            enable_api_logging: app.shared.enable_api_logging.or(common.enable_api_logging),
            max_body_size: pick(&app.shared.max_body_size, &common.max_body_size),
            app_channel_address: pick(&app.shared.app_channel_address, &common.app_channel_address),
            env,
        });
    }
    let mut seen = std::collections::BTreeSet::new();
    for app in &apps {
        if !seen.insert(app.app_id.clone()) {
            return Err(RunFileError::new(file, format!("apps: appID {:?} appears twice", app.app_id)));
        }
    }
    Ok(RunFile { name: raw.name, apps })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(apps: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for app in apps {
            std::fs::create_dir_all(dir.path().join(app)).unwrap();
        }
        dir
    }

    #[test]
    fn paths_follow_dapr_rules() {
        let dir = dir_with(&["a", "b"]);
        let file = dir.path().join("dapr.yaml");
        let run = parse(
            &file,
            "version: 1\ncommon:\n  resourcesPath: ./res\n  env:\n    X: common\n    Y: 1\n    Z: true\napps:\n  - appDirPath: ./a\n    appID: alpha\n    appPort: 8080\n    command: [\"python3\", \"app.py\"]\n    env:\n      Y: own\n  - appDirPath: ./b\n    resourcesPaths: [./own-res]\n    configFilePath: ./config.yaml\n",
        )
        .unwrap();
        let a = &run.apps[0];
        assert_eq!(a.app_id, "alpha");
        assert_eq!(a.resources_paths, vec![dir.path().join("./res")]);
        assert_eq!(a.env["X"], "common");
        assert_eq!(a.env["Y"], "own");
        assert_eq!(a.env["Z"], "true");
        let b = &run.apps[1];
        assert_eq!(b.app_id, "b", "derived from appDirPath");
        assert_eq!(b.resources_paths, vec![dir.path().join("./b").join("./own-res")]);
        assert_eq!(b.config, Some(dir.path().join("./b").join("./config.yaml")));
    }

    #[test]
    fn unknown_keys_name_file_and_line() {
        let dir = dir_with(&["a"]);
        let file = dir.path().join("dapr.yaml");
        let err = parse(&file, "version: 1\napps:\n  - appDirPath: ./a\n    appPortt: 3000\n").unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}:4:", file.display())), "{err}");
        assert!(err.contains("appPortt"), "{err}");
        assert_eq!(err.lines().count(), 1);
    }

    #[test]
    fn known_but_unsupported_keys_say_so() {
        let dir = dir_with(&["a"]);
        let file = dir.path().join("dapr.yaml");
        let err = parse(&file, "version: 1\napps:\n  - appDirPath: ./a\n    appSSL: true\n").unwrap_err().to_string();
        assert!(err.contains("apps[0]: appSSL is not supported yet"), "{err}");
        let err = parse(&file, "version: 1\napps:\n  - appDirPath: ./missing\n").unwrap_err().to_string();
        assert!(err.contains("appDirPath"), "{err}");
        let err =
            parse(&file, "version: 1\napps:\n  - appDirPath: ./a\n  - appDirPath: ./a\n").unwrap_err().to_string();
        assert!(err.contains("appears twice"), "{err}");
    }
}
