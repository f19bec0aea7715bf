//! The admission decision without a cluster: a review in, the answer out, the patch applied to the pod as the
//! API server would (RFC 6902), the result read back. Tables of cases; a property test for patch validity and
//! idempotence over generated pods.

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use serde_json::{Value, json};
use ward_injector::annotations::{self as a, ANNOTATIONS, Support};
use ward_injector::{InjectorConfig, admit};

fn request(namespace: &str, pod: Value) -> AdmissionRequest<Pod> {
    let name = pod.pointer("/metadata/name").cloned().unwrap_or(json!(""));
    let review: AdmissionReview<Pod> = serde_json::from_value(json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "0d3e6c1a-0000-4000-8000-000000000001",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": name, "namespace": namespace, "operation": "CREATE",
            "userInfo": {"username": "tester"}, "object": pod, "oldObject": null, "dryRun": false
        }
    }))
    .expect("review");
    review.try_into().expect("request")
}

fn pod(annotations: &[(&str, &str)]) -> Value {
    let annotations: serde_json::Map<String, Value> =
        annotations.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "orders-0", "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "app:1", "ports": [{"containerPort": 8080}]}]}
    })
}

fn enabled(extra: &[(&str, &str)]) -> Value {
    let mut all = vec![(a::ENABLED, "true"), (a::APP_ID, "orders")];
    all.extend_from_slice(extra);
    pod(&all)
}

fn answer(pod: Value) -> AdmissionResponse {
    admit(&InjectorConfig::default(), &request("shop", pod))
}

/// Applies the answer's patch to the pod as the API server does.
fn patched(pod: &Value, response: &AdmissionResponse) -> Value {
    assert!(response.allowed, "denied: {}", response.result.message);
    let mut doc = pod.clone();
    if let Some(bytes) = &response.patch {
        let patch: json_patch::Patch = serde_json::from_slice(bytes).expect("patch JSON");
        json_patch::patch(&mut doc, &patch).expect("patch applies");
    }
    doc
}

fn daprd(doc: &Value) -> Container {
    let pod: Pod = serde_json::from_value(doc.clone()).expect("patched pod is a Pod");
    let spec = pod.spec.expect("spec");
    let mut found = spec.containers.into_iter().filter(|c| c.name == "daprd");
    let container = found.next().expect("a daprd container");
    assert!(found.next().is_none(), "exactly one daprd");
    container
}

fn inject(extra: &[(&str, &str)]) -> (Value, Container) {
    let pod = enabled(extra);
    let doc = patched(&pod, &answer(pod.clone()));
    let container = daprd(&doc);
    (doc, container)
}

fn args(c: &Container) -> Vec<String> {
    c.args.clone().unwrap_or_default()
}

fn flag(c: &Container, name: &str) -> Option<String> {
    let args = args(c);
    if let Some(eq) = args.iter().find_map(|a| a.strip_prefix(&format!("{name}="))) {
        return Some(eq.to_owned());
    }
    args.iter().position(|a| a == name).map(|i| args.get(i + 1).cloned().unwrap_or_default())
}

fn env(c: &Container, name: &str) -> Option<Value> {
    c.env.iter().flatten().find(|e| e.name == name).map(|e| serde_json::to_value(e).unwrap())
}

fn denied_naming(pod: Value, annotation: &str) -> String {
    let response = answer(pod);
    assert!(!response.allowed, "expected a denial naming {annotation}");
    let message = response.result.message;
    assert!(message.contains(annotation), "{message:?} does not name {annotation}");
    message
}

#[test]
fn a_pod_without_the_annotation_is_left_alone() {
    for pod in [pod(&[]), pod(&[(a::ENABLED, "false")]), pod(&[(a::ENABLED, "false"), (a::APP_PORT, "nonsense")])] {
        let response = answer(pod);
        assert!(response.allowed);
        assert!(response.patch.is_none());
    }
}

#[test]
fn an_annotated_pod_gets_the_sidecar_with_daprs_names_and_a_hardened_context() {
    let (doc, c) = inject(&[(a::APP_PORT, "8080")]);
    assert_eq!(c.image.as_deref(), Some(ward_injector::DEFAULT_SIDECAR_IMAGE));
    assert_eq!(c.command, Some(vec!["/ward".to_owned()]));
    assert_eq!(&args(&c)[..3], ["sidecar", "--mode", "kubernetes"]);
    assert_eq!(flag(&c, "--app-id").as_deref(), Some("orders"));
    assert_eq!(flag(&c, "--app-port").as_deref(), Some("8080"));
    assert_eq!(flag(&c, "--dapr-http-port").as_deref(), Some("3500"));
    assert_eq!(flag(&c, "--dapr-grpc-port").as_deref(), Some("50001"));
    assert_eq!(flag(&c, "--dapr-internal-grpc-port").as_deref(), Some("50002"));
    assert_eq!(flag(&c, "--dapr-public-port").as_deref(), Some("3501"));
    assert_eq!(flag(&c, "--dapr-listen-addresses").as_deref(), Some("[::1],127.0.0.1"));
    assert_eq!(flag(&c, "--sentry-address").as_deref(), Some("dapr-sentry.dapr-system.svc.cluster.local:443"));
    assert_eq!(flag(&c, "--control-plane-address").as_deref(), Some("dapr-api.dapr-system.svc.cluster.local:443"));
    assert!(args(&c).contains(&"--enable-mtls".to_owned()));
    assert_eq!(flag(&c, "--enable-metrics").as_deref(), Some("true"));
    assert_eq!(flag(&c, "--metrics-port").as_deref(), Some("9090"));

    assert_eq!(env(&c, "NAMESPACE").unwrap()["valueFrom"]["fieldRef"]["fieldPath"], "metadata.namespace");
    assert_eq!(env(&c, "POD_NAME").unwrap()["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
    assert_eq!(env(&c, "DAPR_CONTROLPLANE_NAMESPACE").unwrap()["value"], "dapr-system");
    assert_eq!(env(&c, "DAPR_CONTROLPLANE_TRUST_DOMAIN").unwrap()["value"], "cluster.local");
    assert_eq!(env(&c, "DAPR_TRUST_ANCHORS_FILE").unwrap()["value"], "/var/run/secrets/dapr.io/tls/ca.crt");
    assert!(env(&c, "DAPR_API_TOKEN").is_none() && env(&c, "APP_API_TOKEN").is_none());

    let sc = serde_json::to_value(c.security_context.as_ref().unwrap()).unwrap();
    assert_eq!(sc["runAsNonRoot"], true);
    assert_ne!(sc["runAsUser"], 0);
    assert!(sc["runAsUser"].as_i64().unwrap() > 0);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    for probe in [c.liveness_probe.as_ref().unwrap(), c.readiness_probe.as_ref().unwrap()] {
        let get = probe.http_get.as_ref().unwrap();
        assert_eq!(get.path.as_deref(), Some("/v1.0/healthz"));
        assert_eq!(serde_json::to_value(&get.port).unwrap(), json!(3501));
    }
    let live = c.liveness_probe.as_ref().unwrap();
    assert_eq!(
        (live.initial_delay_seconds, live.period_seconds, live.failure_threshold),
        (Some(180), Some(10), Some(5))
    );

    let mounts: Vec<(String, String, Option<bool>)> =
        c.volume_mounts.iter().flatten().map(|m| (m.name.clone(), m.mount_path.clone(), m.read_only)).collect();
    assert!(mounts.contains(&(
        "dapr-identity-token".into(),
        "/var/run/secrets/dapr.io/sentrytoken".into(),
        Some(true)
    )));
    assert!(mounts.contains(&("dapr-trust-anchors".into(), "/var/run/secrets/dapr.io/tls".into(), Some(true))));
    let volumes = &doc["spec"]["volumes"];
    let token = volumes.as_array().unwrap().iter().find(|v| v["name"] == "dapr-identity-token").unwrap();
    assert_eq!(
        token["projected"]["sources"][0]["serviceAccountToken"],
        json!({"audience": "spiffe://cluster.local/ns/dapr-system/dapr-sentry", "expirationSeconds": 7200, "path": "token"})
    );
    let anchors = volumes.as_array().unwrap().iter().find(|v| v["name"] == "dapr-trust-anchors").unwrap();
    assert_eq!(anchors["configMap"]["name"], "dapr-root-ca.crt");

    let labels = &doc["metadata"]["labels"];
    assert_eq!(labels["dapr.io/sidecar-injected"], "true");
    assert_eq!(labels["dapr.io/app-id"], "orders");
    assert_eq!(labels["dapr.io/metrics-enabled"], "true");
    let app = &doc["spec"]["containers"][0]["env"];
    assert_eq!(
        app,
        &json!([
            {"name": "DAPR_HTTP_PORT", "value": "3500"},
            {"name": "DAPR_GRPC_PORT", "value": "50001"},
            {"name": "APP_PROTOCOL", "value": "http"}
        ])
    );
}

#[test]
fn the_apps_own_env_values_are_kept() {
    let mut pod = enabled(&[]);
    pod["spec"]["containers"][0]["env"] =
        json!([{"name": "DAPR_HTTP_PORT", "value": "9999"}, {"name": "X", "value": "1"}]);
    let doc = patched(&pod, &answer(pod.clone()));
    let env = doc["spec"]["containers"][0]["env"].as_array().unwrap().clone();
    let names: Vec<&str> = env.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["DAPR_HTTP_PORT", "X", "DAPR_GRPC_PORT", "APP_PROTOCOL"]);
    assert_eq!(env[0]["value"], "9999");
}

type Check = fn(&Value, &Container);
/// A case name, the annotations beyond `enabled` and `app-id`, and what the stored pod must show.
type EffectCase = (&'static str, &'static [(&'static str, &'static str)], Check);

/// Each honoured annotation's effect.
#[test]
fn each_honoured_annotation_has_its_effect() {
    let cases: &[EffectCase] = &[
        ("app-port", &[(a::APP_PORT, "8080")], |_, c| assert_eq!(flag(c, "--app-port").as_deref(), Some("8080"))),
        ("config", &[(a::CONFIG, "appconfig")], |_, c| assert_eq!(flag(c, "--config").as_deref(), Some("appconfig"))),
        ("app-protocol grpc", &[(a::APP_PROTOCOL, "grpc")], |d, c| {
            assert_eq!(flag(c, "--app-protocol").as_deref(), Some("grpc"));
            assert_eq!(d["spec"]["containers"][0]["env"][2], json!({"name": "APP_PROTOCOL", "value": "grpc"}));
        }),
        ("log-level", &[(a::LOG_LEVEL, "debug")], |_, c| assert_eq!(flag(c, "--log-level").as_deref(), Some("debug"))),
        ("log-as-json", &[(a::LOG_AS_JSON, "true")], |_, c| assert!(args(c).contains(&"--log-as-json".into()))),
        ("api-token-secret", &[(a::API_TOKEN_SECRET, "api-token")], |_, c| {
            assert_eq!(
                env(c, "DAPR_API_TOKEN").unwrap()["valueFrom"]["secretKeyRef"],
                json!({"name": "api-token", "key": "token"})
            );
        }),
        ("app-token-secret", &[(a::APP_TOKEN_SECRET, "app-token")], |_, c| {
            assert_eq!(
                env(c, "APP_API_TOKEN").unwrap()["valueFrom"]["secretKeyRef"],
                json!({"name": "app-token", "key": "token"})
            );
        }),
        ("app-max-concurrency", &[(a::APP_MAX_CONCURRENCY, "10")], |_, c| {
            assert_eq!(flag(c, "--app-max-concurrency").as_deref(), Some("10"))
        }),
        ("enable-metrics false", &[(a::ENABLE_METRICS, "false")], |d, c| {
            assert_eq!(flag(c, "--enable-metrics").as_deref(), Some("false"));
            assert!(flag(c, "--metrics-port").is_none());
            assert_eq!(d["metadata"]["labels"]["dapr.io/metrics-enabled"], "false");
        }),
        ("metrics-port", &[(a::METRICS_PORT, "9191")], |_, c| {
            assert_eq!(flag(c, "--metrics-port").as_deref(), Some("9191"));
            assert!(c.ports.iter().flatten().any(|p| p.container_port == 9191));
        }),
        ("env", &[(a::ENV, "A=1,B=x,y,C=k=v")], |_, c| {
            assert_eq!(env(c, "A").unwrap()["value"], "1");
            // A comma not followed by NAME= belongs to the value (Dapr's rule); '=' in a value is kept.
            assert_eq!(env(c, "B").unwrap()["value"], "x,y");
            assert_eq!(env(c, "C").unwrap()["value"], "k=v");
        }),
        ("env-from-secret", &[(a::ENV_FROM_SECRET, "TOKEN=auth,PASS=db:password")], |_, c| {
            assert_eq!(env(c, "TOKEN").unwrap()["valueFrom"]["secretKeyRef"], json!({"name": "auth", "key": "auth"}));
            assert_eq!(env(c, "PASS").unwrap()["valueFrom"]["secretKeyRef"], json!({"name": "db", "key": "password"}));
        }),
        ("grpc-port", &[(a::GRPC_PORT, "50011")], |d, c| {
            assert_eq!(flag(c, "--dapr-grpc-port").as_deref(), Some("50011"));
            assert_eq!(d["spec"]["containers"][0]["env"][1], json!({"name": "DAPR_GRPC_PORT", "value": "50011"}));
        }),
        ("internal-grpc-port", &[(a::INTERNAL_GRPC_PORT, "50012")], |_, c| {
            assert_eq!(flag(c, "--dapr-internal-grpc-port").as_deref(), Some("50012"))
        }),
        (
            "resources",
            &[(a::CPU_REQUEST, "100m"), (a::CPU_LIMIT, "1"), (a::MEMORY_REQUEST, "64Mi"), (a::MEMORY_LIMIT, "256Mi")],
            |_, c| {
                let r = serde_json::to_value(c.resources.as_ref().unwrap()).unwrap();
                assert_eq!(
                    r,
                    json!({"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}})
                );
                assert_eq!(flag(c, "--worker-threads").as_deref(), Some("0"), "one worker per CPU of the limit");
            },
        ),
        ("no-cpu-limit", &[(a::MEMORY_LIMIT, "256Mi")], |_, c| {
            assert_eq!(flag(c, "--worker-threads"), None, "the sidecar's default: one worker");
        }),
        ("cpu-limit-and-explicit-workers", &[(a::CPU_LIMIT, "4"), (a::ENV, "WARD_WORKER_THREADS=2")], |_, c| {
            assert_eq!(flag(c, "--worker-threads"), None, "dapr.io/env decides");
        }),
        ("sidecar-listen-addresses", &[(a::LISTEN_ADDRESSES, "127.0.0.1")], |_, c| {
            assert_eq!(flag(c, "--dapr-listen-addresses").as_deref(), Some("127.0.0.1"))
        }),
        (
            "liveness",
            &[
                (a::LIVENESS_DELAY, "5"),
                (a::LIVENESS_TIMEOUT, "2"),
                (a::LIVENESS_PERIOD, "7"),
                (a::LIVENESS_THRESHOLD, "9"),
            ],
            |_, c| {
                let p = c.liveness_probe.as_ref().unwrap();
                assert_eq!(
                    (p.initial_delay_seconds, p.timeout_seconds, p.period_seconds, p.failure_threshold),
                    (Some(5), Some(2), Some(7), Some(9))
                );
            },
        ),
        (
            "readiness",
            &[
                (a::READINESS_DELAY, "0"),
                (a::READINESS_TIMEOUT, "4"),
                (a::READINESS_PERIOD, "3"),
                (a::READINESS_THRESHOLD, "2"),
            ],
            |_, c| {
                let p = c.readiness_probe.as_ref().unwrap();
                assert_eq!(
                    (p.initial_delay_seconds, p.timeout_seconds, p.period_seconds, p.failure_threshold),
                    (Some(0), Some(4), Some(3), Some(2))
                );
            },
        ),
        ("sidecar-image", &[(a::SIDECAR_IMAGE, "registry.local/ward:dev")], |_, c| {
            assert_eq!(c.image.as_deref(), Some("registry.local/ward:dev"))
        }),
        ("seccomp Unconfined", &[(a::SECCOMP_PROFILE_TYPE, "Unconfined")], |_, c| {
            let sc = c.security_context.as_ref().unwrap();
            assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "Unconfined");
        }),
        ("http-max-request-size", &[(a::HTTP_MAX_REQUEST_SIZE, "8")], |_, c| {
            assert_eq!(flag(c, "--dapr-http-max-request-size").as_deref(), Some("8"))
        }),
        ("max-body-size", &[(a::MAX_BODY_SIZE, "8Mi")], |_, c| {
            assert_eq!(flag(c, "--max-body-size").as_deref(), Some("8Mi"))
        }),
        ("graceful-shutdown-seconds", &[(a::GRACEFUL_SHUTDOWN_SECONDS, "15")], |_, c| {
            assert_eq!(flag(c, "--dapr-graceful-shutdown-seconds").as_deref(), Some("15"))
        }),
        ("graceful-shutdown-seconds -1 is the default", &[(a::GRACEFUL_SHUTDOWN_SECONDS, "-1")], |_, c| {
            assert!(flag(c, "--dapr-graceful-shutdown-seconds").is_none())
        }),
        ("enable-api-logging", &[(a::ENABLE_API_LOGGING, "false")], |_, c| {
            assert_eq!(flag(c, "--enable-api-logging").as_deref(), Some("false"))
        }),
        ("unix-domain-socket-path", &[(a::UNIX_DOMAIN_SOCKET_PATH, "/tmp/dapr")], |d, c| {
            assert_eq!(flag(c, "--unix-domain-socket").as_deref(), Some("/var/run/dapr-sockets"));
            assert_eq!(
                d["spec"]["containers"][0]["volumeMounts"],
                json!([{"name": "dapr-unix-domain-socket", "mountPath": "/tmp/dapr"}])
            );
        }),
        ("disable-builtin-k8s-secret-store true", &[(a::DISABLE_BUILTIN_K8S_SECRET_STORE, "true")], |_, c| {
            assert!(args(c).iter().any(|a| a == "--disable-builtin-k8s-secret-store"))
        }),
        ("disable-builtin-k8s-secret-store false", &[(a::DISABLE_BUILTIN_K8S_SECRET_STORE, "false")], |_, c| {
            assert!(!args(c).iter().any(|a| a.contains("secret-store")), "the built-in store stays")
        }),
        (
            "app health",
            &[
                (a::ENABLE_APP_HEALTH_CHECK, "true"),
                (a::APP_HEALTH_CHECK_PATH, "/ready"),
                (a::APP_HEALTH_PROBE_INTERVAL, "2"),
                (a::APP_HEALTH_PROBE_TIMEOUT, "300"),
                (a::APP_HEALTH_THRESHOLD, "4"),
            ],
            |_, c| {
                assert_eq!(flag(c, "--enable-app-health-check").as_deref(), Some("true"));
                assert_eq!(flag(c, "--app-health-check-path").as_deref(), Some("/ready"));
                assert_eq!(flag(c, "--app-health-probe-interval").as_deref(), Some("2"));
                assert_eq!(flag(c, "--app-health-probe-timeout").as_deref(), Some("300"));
                assert_eq!(flag(c, "--app-health-threshold").as_deref(), Some("4"));
            },
        ),
        ("placement off", &[(a::PLACEMENT_HOST_ADDRESS, "\"\"")], |_, c| {
            assert!(flag(c, "--placement-host-address").is_none())
        }),
        ("scheduler off", &[(a::SCHEDULER_HOST_ADDRESS, "")], |_, c| {
            assert!(flag(c, "--scheduler-host-address").is_none())
        }),
        ("app-channel-address", &[(a::APP_CHANNEL_ADDRESS, "127.0.0.1")], |_, c| {
            assert_eq!(flag(c, "--app-channel-address").as_deref(), Some("127.0.0.1"))
        }),
        (
            "only-off features switched off",
            &[
                (a::APP_SSL, "false"),
                (a::ENABLE_PROFILING, "false"),
                (a::ENABLE_DEBUG, "false"),
                (a::INJECT_PLUGGABLE_COMPONENTS, "false"),
                (a::ENABLE_NATIVE_SIDECAR, "false"),
            ],
            |_, c| assert!(!args(c).iter().any(|a| a.contains("profiling") || a.contains("ssl"))),
        ),
    ];
    for (name, annotations, check) in cases {
        let pod = enabled(annotations);
        let response = answer(pod.clone());
        assert!(response.allowed, "{name}: denied: {}", response.result.message);
        let doc = patched(&pod, &response);
        check(&doc, &daprd(&doc));
    }
}

#[test]
fn volume_mounts_name_pod_volumes() {
    let mut pod = enabled(&[(a::VOLUME_MOUNTS, "certs:/mnt/certs"), (a::VOLUME_MOUNTS_RW, "scratch:/mnt/scratch")]);
    pod["spec"]["volumes"] = json!([{"name": "certs", "emptyDir": {}}, {"name": "scratch", "emptyDir": {}}]);
    let doc = patched(&pod, &answer(pod.clone()));
    let c = daprd(&doc);
    let mount = |name: &str| c.volume_mounts.iter().flatten().find(|m| m.name == name).cloned().unwrap();
    assert_eq!((mount("certs").mount_path.as_str(), mount("certs").read_only), ("/mnt/certs", Some(true)));
    assert_eq!((mount("scratch").mount_path.as_str(), mount("scratch").read_only), ("/mnt/scratch", Some(false)));
    // The pod's own volumes stay, the injector's are added after them.
    assert_eq!(doc["spec"]["volumes"][0]["name"], "certs");
}

#[test]
fn invalid_values_are_denied_naming_the_annotation() {
    let cases: &[(&str, &str)] = &[
        (a::ENABLED, "ture"),
        (a::APP_ID, "Orders_Service!"),
        (a::APP_ID, &"a".repeat(60)),
        (a::APP_PORT, "0"),
        (a::APP_PORT, "http"),
        (a::APP_PORT, "70000"),
        (a::GRPC_PORT, "-5"),
        (a::INTERNAL_GRPC_PORT, "3500"),
        (a::METRICS_PORT, "abc"),
        (a::CONFIG, "My Config"),
        (a::APP_PROTOCOL, "tcp"),
        (a::LOG_LEVEL, "verbose"),
        (a::LOG_AS_JSON, "maybe"),
        (a::API_TOKEN_SECRET, "Not_A_Name"),
        (a::APP_TOKEN_SECRET, ""),
        (a::APP_MAX_CONCURRENCY, "-7"),
        (a::ENABLE_METRICS, "yes please"),
        (a::ENV, "=x"),
        (a::ENV, "NAMESPACE=other"),
        (a::ENV, "DAPR_TRUST_ANCHORS=x"),
        (a::ENV_FROM_SECRET, "TOKEN"),
        (a::ENV_FROM_SECRET, "1X=secret"),
        (a::ENV_FROM_SECRET, "DAPR_API_TOKEN=mine"),
        (a::CPU_REQUEST, "lots"),
        (a::CPU_LIMIT, "-1"),
        (a::MEMORY_REQUEST, "12MB"),
        (a::MEMORY_LIMIT, "1.2.3Gi"),
        (a::LISTEN_ADDRESSES, "localhost"),
        (a::LIVENESS_DELAY, "-1"),
        (a::LIVENESS_TIMEOUT, "0"),
        (a::LIVENESS_PERIOD, "x"),
        (a::LIVENESS_THRESHOLD, "100000"),
        (a::READINESS_DELAY, "soon"),
        (a::READINESS_TIMEOUT, "0"),
        (a::READINESS_PERIOD, "0"),
        (a::READINESS_THRESHOLD, "0"),
        (a::SIDECAR_IMAGE, "has space"),
        (a::SECCOMP_PROFILE_TYPE, "runtime-default"),
        (a::HTTP_MAX_REQUEST_SIZE, "0"),
        (a::MAX_BODY_SIZE, "4 megabytes"),
        (a::GRACEFUL_SHUTDOWN_SECONDS, "-2"),
        (a::GRACEFUL_SHUTDOWN_SECONDS, "5s"),
        (a::ENABLE_API_LOGGING, "sometimes"),
        (a::UNIX_DOMAIN_SOCKET_PATH, "relative/path"),
        (a::UNIX_DOMAIN_SOCKET_PATH, "/a/../b"),
        (a::VOLUME_MOUNTS, "missing:/mnt"),
        (a::VOLUME_MOUNTS_RW, "nocolon"),
        (a::DISABLE_BUILTIN_K8S_SECRET_STORE, "perhaps"),
        (a::ENABLE_APP_HEALTH_CHECK, "2"),
        (a::APP_CHANNEL_ADDRESS, "not a host"),
        (a::APP_SSL, "si"),
    ];
    for (annotation, value) in cases {
        let message = denied_naming(enabled(&[(annotation, value)]), annotation);
        assert!(message.starts_with("ward sidecar injector: "), "{message}");
    }
}

#[test]
fn combinations_that_cannot_work_are_denied_naming_the_annotation() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[(a::GRPC_PORT, "50002")], a::INTERNAL_GRPC_PORT),
        (&[(a::APP_PORT, "3500")], a::APP_PORT),
        (&[(a::METRICS_PORT, "50001")], a::METRICS_PORT),
        (&[(a::APP_PORT, "9090")], a::APP_PORT),
        (&[(a::CPU_REQUEST, "2"), (a::CPU_LIMIT, "500m")], a::CPU_REQUEST),
        (&[(a::MEMORY_REQUEST, "1Gi"), (a::MEMORY_LIMIT, "512Mi")], a::MEMORY_REQUEST),
        (&[(a::HTTP_MAX_REQUEST_SIZE, "4"), (a::MAX_BODY_SIZE, "4Mi")], a::HTTP_MAX_REQUEST_SIZE),
        (&[(a::APP_HEALTH_CHECK_PATH, "/ready")], a::APP_HEALTH_CHECK_PATH),
        (&[(a::ENABLE_APP_HEALTH_CHECK, "false"), (a::APP_HEALTH_THRESHOLD, "2")], a::APP_HEALTH_THRESHOLD),
        (&[(a::ENABLE_METRICS, "false"), (a::METRICS_PORT, "9191")], a::METRICS_PORT),
        (&[(a::ENV, "A=1,A=2")], a::ENV),
        (&[(a::ENV, "A=1"), (a::ENV_FROM_SECRET, "A=s")], a::ENV_FROM_SECRET),
        (&[(a::VOLUME_MOUNTS, "v:/var/run/secrets/dapr.io/x")], a::VOLUME_MOUNTS),
    ];
    for (annotations, named) in cases {
        let mut pod = enabled(annotations);
        pod["spec"]["volumes"] = json!([{"name": "v", "emptyDir": {}}]);
        denied_naming(pod, named);
    }
    // A sidecar port the app already declares.
    let mut pod = enabled(&[]);
    pod["spec"]["containers"][0]["ports"] = json!([{"containerPort": 50001}]);
    denied_naming(pod, a::GRPC_PORT);
    // A volume name the injector adds.
    let mut pod = enabled(&[]);
    pod["spec"]["volumes"] = json!([{"name": "dapr-trust-anchors", "emptyDir": {}}]);
    denied_naming(pod, "dapr-trust-anchors");
}

/// Every annotation the table says ward lacks is refused with its name and "no such feature", never ignored.
#[test]
fn every_unsupported_annotation_is_refused_by_name() {
    let mut refused = 0;
    for (key, support) in ANNOTATIONS {
        let value = match support {
            Support::Honoured => continue,
            Support::Refused(_) => "some-value",
            Support::OnlyOff(_) if *key == a::PLACEMENT_HOST_ADDRESS || *key == a::SCHEDULER_HOST_ADDRESS => {
                "placement.dapr-system.svc:50005"
            }
            Support::OnlyOff(_) => "true",
        };
        let message = denied_naming(enabled(&[(key, value)]), key);
        assert!(message.contains("ward has no such feature"), "{message}");
        refused += 1;
    }
    assert!(refused >= 15, "{refused}");
    for (annotation, value) in [
        (a::APP_PROTOCOL, "https"),
        (a::APP_PROTOCOL, "grpcs"),
        (a::APP_PROTOCOL, "h2c"),
        (a::LOG_LEVEL, "fatal"),
        (a::SECCOMP_PROFILE_TYPE, "Localhost"),
    ] {
        let message = denied_naming(enabled(&[(annotation, value)]), annotation);
        assert!(message.contains("ward has no such feature"), "{message}");
    }
    let message = denied_naming(enabled(&[("dapr.io/app-prot", "8080")]), "dapr.io/app-prot");
    assert!(message.contains("check its spelling"), "{message}");
}

/// Every honoured annotation appears in at least one case of `each_honoured_annotation_has_its_effect` or the
/// volume-mount test: the table and the tests cannot drift apart.
#[test]
fn the_effect_table_covers_every_honoured_annotation() {
    let source = include_str!("decisions.rs");
    let constant = |key: &str| {
        let name = key.trim_start_matches("dapr.io/").replace('-', "_").to_uppercase();
        match name.as_str() {
            "SIDECAR_CPU_REQUEST" => "CPU_REQUEST".to_owned(),
            "SIDECAR_CPU_LIMIT" => "CPU_LIMIT".to_owned(),
            "SIDECAR_MEMORY_REQUEST" => "MEMORY_REQUEST".to_owned(),
            "SIDECAR_MEMORY_LIMIT" => "MEMORY_LIMIT".to_owned(),
            "SIDECAR_LISTEN_ADDRESSES" => "LISTEN_ADDRESSES".to_owned(),
            "SIDECAR_SECCOMP_PROFILE_TYPE" => "SECCOMP_PROFILE_TYPE".to_owned(),
            other => other
                .replace("SIDECAR_LIVENESS_PROBE_DELAY_SECONDS", "LIVENESS_DELAY")
                .replace("SIDECAR_LIVENESS_PROBE_TIMEOUT_SECONDS", "LIVENESS_TIMEOUT")
                .replace("SIDECAR_LIVENESS_PROBE_PERIOD_SECONDS", "LIVENESS_PERIOD")
                .replace("SIDECAR_LIVENESS_PROBE_THRESHOLD", "LIVENESS_THRESHOLD")
                .replace("SIDECAR_READINESS_PROBE_DELAY_SECONDS", "READINESS_DELAY")
                .replace("SIDECAR_READINESS_PROBE_TIMEOUT_SECONDS", "READINESS_TIMEOUT")
                .replace("SIDECAR_READINESS_PROBE_PERIOD_SECONDS", "READINESS_PERIOD")
                .replace("SIDECAR_READINESS_PROBE_THRESHOLD", "READINESS_THRESHOLD"),
        }
    };
    for (key, support) in ANNOTATIONS {
        if *support != Support::Honoured {
            continue;
        }
        let needle = format!("(a::{}, \"", constant(key));
        assert!(source.contains(&needle), "no effect case for {key} ({needle})");
    }
}

#[test]
fn app_ids_control_plane_and_idempotence() {
    // Control-plane app ids.
    for id in ward_injector::CONTROL_PLANE_APP_IDS {
        denied_naming(pod(&[(a::ENABLED, "true"), (a::APP_ID, id)]), a::APP_ID);
    }
    // Pods in the control-plane namespace.
    let response = admit(&InjectorConfig::default(), &request("dapr-system", enabled(&[])));
    assert!(!response.allowed && response.result.message.contains("control-plane namespace"));
    // The app id defaults to the pod name (Dapr's rule): fine when valid, denied naming dapr.io/app-id when not.
    let (doc, _) = {
        let pod = pod(&[(a::ENABLED, "true")]);
        let doc = patched(&pod, &answer(pod.clone()));
        let c = daprd(&doc);
        (doc, c)
    };
    assert_eq!(doc["metadata"]["labels"]["dapr.io/app-id"], "orders-0");
    let mut bad_name = pod(&[(a::ENABLED, "true")]);
    bad_name["metadata"]["name"] = json!("Orders.0");
    let message = denied_naming(bad_name, a::APP_ID);
    assert!(message.contains("pod name"), "{message}");
    let mut generated = pod(&[(a::ENABLED, "true")]);
    generated["metadata"] = json!({"generateName": "orders-", "annotations": {a::ENABLED: "true"}});
    let message = denied_naming(generated, a::APP_ID);
    assert!(message.contains("generateName"), "{message}");

    // Idempotence: the injected pod, reviewed again, is left as it is; so is one with its own daprd.
    let pod = enabled(&[]);
    let doc = patched(&pod, &answer(pod.clone()));
    let again = answer(doc);
    assert!(again.allowed && again.patch.is_none());
    let mut own = enabled(&[]);
    own["spec"]["containers"] = json!([{"name": "app", "image": "app:1"}, {"name": "daprd", "image": "mine"}]);
    let response = answer(own);
    assert!(response.allowed && response.patch.is_none());
}

#[test]
fn bodies_that_are_not_reviews_are_errors_and_other_kinds_are_denied() {
    let config = InjectorConfig::default();
    assert!(ward_injector::review(&config, b"{").is_err());
    assert!(
        ward_injector::review(&config, b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}")
            .is_err()
    );
    let mut review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "u1", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "namespace": "shop", "operation": "CREATE", "userInfo": {}, "object": {"metadata": {"name": "x"}}
        }
    });
    let answer: Value =
        serde_json::from_slice(&ward_injector::review(&config, review.to_string().as_bytes()).unwrap()).unwrap();
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(answer["response"]["uid"], "u1");
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    // A malformed body's error does not quote the body (a pod's env values may be credentials).
    let mut leaky = review.clone();
    leaky["request"]["userInfo"] = json!("hunter2-in-the-wrong-place");
    let err = ward_injector::review(&config, leaky.to_string().as_bytes()).unwrap_err().to_string();
    assert!(err.contains("not an AdmissionReview") && !err.contains("hunter2"), "{err}");
    review["apiVersion"] = json!("admission.k8s.io/v1beta1");
    assert!(ward_injector::review(&config, review.to_string().as_bytes()).is_err());
}

mod generated {
    use proptest::prelude::*;

    use super::*;

    fn container(i: usize, with_env: bool, with_mounts: bool) -> Value {
        let mut c = json!({"name": format!("c{i}"), "image": "app:1"});
        if with_env {
            c["env"] = json!([{"name": "OWN", "value": "x"}]);
        }
        if with_mounts {
            c["volumeMounts"] = json!([{"name": "data", "mountPath": "/data"}]);
        }
        c
    }

    prop_compose! {
        fn pods()(
            containers in proptest::collection::vec((any::<bool>(), any::<bool>()), 1..4),
            labels in any::<bool>(),
            volumes in any::<bool>(),
            uds in any::<bool>(),
            metrics in any::<bool>(),
            grpc in 40000u16..41000,
            token in any::<bool>(),
        ) -> Value {
            let mut annotations = json!({a::ENABLED: "true", a::APP_ID: "gen-app", a::ENABLE_METRICS: metrics.to_string(), a::GRPC_PORT: grpc.to_string()});
            if uds { annotations[a::UNIX_DOMAIN_SOCKET_PATH] = json!("/tmp/dapr-sockets"); }
            if token { annotations[a::API_TOKEN_SECRET] = json!("api-token"); }
            let mut pod = json!({
                "metadata": {"name": "gen-0", "annotations": annotations},
                "spec": {"containers": containers.iter().enumerate().map(|(i, (e, m))| container(i, *e, *m)).collect::<Vec<_>>()}
            });
            if labels { pod["metadata"]["labels"] = json!({"app": "gen"}); }
            if volumes || containers.iter().any(|(_, m)| *m) { pod["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]); }
            pod
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// The patch applies to any such pod, adds exactly one daprd, keeps the app containers first and whole,
        /// gives each of them the Dapr env once, and a second review changes nothing.
        #[test]
        fn patch_applies_and_reinjection_is_a_no_op(pod in pods()) {
            let response = answer(pod.clone());
            prop_assert!(response.allowed, "{}", response.result.message);
            let doc = patched(&pod, &response);
            let _ = daprd(&doc);
            let before = pod["spec"]["containers"].as_array().unwrap();
            let after = doc["spec"]["containers"].as_array().unwrap();
            prop_assert_eq!(after.len(), before.len() + 1);
            for (old, new) in before.iter().zip(after) {
                prop_assert_eq!(&old["name"], &new["name"]);
                let names: Vec<&str> = new["env"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
                for var in ["DAPR_HTTP_PORT", "DAPR_GRPC_PORT", "APP_PROTOCOL"] {
                    prop_assert_eq!(names.iter().filter(|n| **n == var).count(), 1);
                }
                if let Some(own) = old["env"].as_array() {
                    prop_assert_eq!(&new["env"].as_array().unwrap()[..own.len()], own.as_slice());
                }
            }
            let again = answer(doc);
            prop_assert!(again.allowed && again.patch.is_none());
        }
    }
}

mod arbitrary_values {
    use proptest::prelude::*;

    use super::*;

    /// Values that are near what users write (numbers, words, quantities, lists) and plain noise.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "(true|false|yes|no|1|0|on|off|ture)",
            "-?[0-9]{1,6}",
            "[0-9]{1,4}(m|Mi|Gi|k|e3)?",
            "[a-z][a-z0-9-]{0,12}",
            "/[a-z/]{0,12}",
            "[A-Z_]{1,5}=[a-z,=]{0,8}(,[A-Z_]{1,5}=[a-z]{0,4})?",
            "[a-z]{1,6}:/[a-z]{1,6}",
            "\\PC{0,24}",
        ]
    }

    fn key() -> impl Strategy<Value = &'static str> {
        prop::sample::select(ANNOTATIONS.iter().map(|(k, _)| *k).collect::<Vec<_>>())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Whatever the annotations say: no panic; either an injection whose patch applies and whose re-review
        /// changes nothing, or a denial whose message names one of the pod's `dapr.io/` annotations.
        #[test]
        fn any_annotations_are_injected_cleanly_or_denied_by_name(
            extra in proptest::collection::vec((key(), value()), 0..6)
        ) {
            let mut annotations = vec![(a::ENABLED, "true".to_owned()), (a::APP_ID, "orders".to_owned())];
            for (k, v) in extra {
                annotations.retain(|(have, _)| *have != k);
                annotations.push((k, v));
            }
            let pairs: Vec<(&str, &str)> = annotations.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let mut pod = pod(&pairs);
            pod["spec"]["volumes"] = json!([{"name": "v", "emptyDir": {}}]);
            let response = answer(pod.clone());
            if response.allowed {
                let doc = patched(&pod, &response);
                if response.patch.is_some() {
                    let _ = daprd(&doc);
                    let again = answer(doc);
                    prop_assert!(again.allowed && again.patch.is_none());
                }
            } else {
                let message = &response.result.message;
                prop_assert!(
                    annotations.iter().any(|(k, _)| message.contains(k)),
                    "denial names none of the annotations: {message}"
                );
            }
        }
    }
}
