//! `ward sentry --mode kubernetes` as a real process against a real API server: it generates its CA into Secret
//! `dapr-trust-bundle`, publishes the roots to `dapr-root-ca.crt` where annotated pods live, signs for a
//! pod-bound token (the identity in the pod's trust domain), refuses over gRPC with the reason, and a restarted
//! sentry signs with the same CA.

mod support;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::Api;
use kube::api::PostParams;
use rcgen::{CertificateParams, KeyPair};
use serde_json::json;
use support::k8s::{ca_client, ca_client_trusting, eventually_async, k8s_sentry, runtime};
use support::path_str;
use ward_identity::TrustDomain;
use ward_sentry::proto::SignCertificateRequest;
use ward_sentry::proto::sign_certificate_request::TokenValidator;

#[test]
fn kubernetes_sentry_keeps_its_ca_in_the_cluster_and_signs_for_pod_bound_tokens() {
    let Some(cluster) = ward_k8s_testenv::shared_or_skip("kubernetes_sentry_keeps_its_ca_in_the_cluster") else {
        return;
    };
    let rt = runtime();
    // The gRPC channel and the kube client are built inside the runtime.
    let _entered = rt.enter();
    let client = rt.block_on(cluster.client());
    rt.block_on(ward_k8s_testenv::install_configuration_crd(&client));
    let control_plane = rt.block_on(cluster.fresh_namespace(&client, "cp"));
    let ns = rt.block_on(cluster.fresh_namespace(&client, "shop"));
    let kubeconfig = path_str(cluster.kubeconfig_path()).to_owned();
    let dir = tempfile::tempdir().unwrap();
    let audit_log = dir.path().join("sentry-audit.log");
    let audit = ["--audit-log", path_str(&audit_log)];
    let sentry = k8s_sentry(&dir.path().join("credentials"), &kubeconfig, &control_plane, &audit);
    // The CA lives in the Secret; the files are its mirror.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &control_plane);
    let secret = rt.block_on(secrets.get("dapr-trust-bundle")).unwrap();
    let data = secret.data.unwrap();
    for key in ["ca.crt", "issuer.crt", "issuer.key"] {
        assert!(data.contains_key(key), "Secret lacks {key}");
    }
    assert_eq!(data["ca.crt"].0, sentry.roots_pem());

    // A pod asking for a sidecar: its namespace gets the roots.
    let pod = rt.block_on(ward_k8s_testenv::annotated_pod(
        &client,
        &ns,
        "orders-0",
        "orders",
        json!({"dapr.io/enabled": "true", "dapr.io/app-id": "orders"}),
    ));
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let roots = String::from_utf8(sentry.roots_pem()).unwrap();
    rt.block_on(eventually_async(Duration::from_secs(15), "dapr-root-ca.crt published", || async {
        let map = configmaps.get_opt("dapr-root-ca.crt").await.ok()??;
        (map.data?.get("ca.crt")? == &roots).then_some(())
    }));

    // The projected token a kubelet would mount, and a SignCertificate as daprd sends it.
    let sentry_id = format!("spiffe://cluster.local/ns/{control_plane}/dapr-sentry");
    let token = rt.block_on(ward_k8s_testenv::bound_token(&client, &ns, "orders", Some(&pod), &sentry_id));
    let ca = ca_client(&sentry, &control_plane);
    let sign = |app_id: &str| {
        let key = KeyPair::generate().unwrap();
        let csr = CertificateParams::default().serialize_request(&key).unwrap().pem().unwrap().into_bytes();
        let request = SignCertificateRequest {
            id: app_id.to_owned(),
            token: token.clone(),
            namespace: ns.clone(),
            certificate_signing_request: csr,
            token_validator: TokenValidator::Kubernetes as i32,
            ..Default::default()
        };
        rt.block_on(ca.grpc().sign_certificate(request)).map(|r| r.into_inner())
    };
    let issued = sign("orders").expect("a pod-bound token buys its pod's identity");
    let pem = String::from_utf8(issued.workload_certificate).unwrap();
    use rustls_pki_types::pem::PemObject;
    let leaf = rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()).next().unwrap().unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    let uri = cert.subject_alternative_name().unwrap().unwrap().value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(uri) => Some(uri.to_string()),
        _ => None,
    });
    assert_eq!(uri.as_deref(), Some(format!("spiffe://public/ns/{ns}/orders").as_str()));

    let refused = sign("billing").unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(refused.message().contains("app id is \"orders\""), "{}", refused.message());
    // Both decisions are audit lines of one verifiable chain.
    let log = std::fs::read_to_string(&audit_log).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(
        lines[0].contains("SENTRY_CERTIFICATE_ISSUED") && lines[0].contains(&format!("spiffe://public/ns/{ns}/orders")),
        "{log}"
    );
    assert!(
        lines[1].contains("SENTRY_CERTIFICATE_REFUSED")
            && lines[1].contains("kubernetes")
            && lines[1].contains("billing"),
        "{log}"
    );
    let (code, out, err) = support::ward_output(&["audit", "verify", path_str(&audit_log)], &[]);
    assert_eq!(code, 0, "{out}{err}");

    // Restarted with an empty credentials directory: the same CA, from the Secret.
    drop(sentry);
    let again = k8s_sentry(&dir.path().join("fresh"), &kubeconfig, &control_plane, &audit);
    assert_eq!(again.roots_pem(), roots.as_bytes());
}

/// The PEM blocks of a bundle.
fn blocks(pem: &str) -> Vec<String> {
    pem.split_inclusive("-----END CERTIFICATE-----\n").map(str::to_owned).filter(|b| b.contains("BEGIN")).collect()
}

#[test]
fn a_root_rotation_appends_switches_and_retires_without_a_restart() {
    if ward_k8s_testenv::shared_or_skip("a_root_rotation_appends_switches_and_retires").is_none() {
        return;
    }
    // A cluster of its own: a sentry publishes roots cluster-wide and waits for every ConfigMap, so another
    // test's sentry in the same cluster would interfere (a cluster has one control plane).
    let assets = ward_k8s_testenv::assets().unwrap();
    let cluster = ward_k8s_testenv::TestCluster::start(&assets, Default::default()).unwrap();
    let rt = runtime();
    let _entered = rt.enter();
    let client = rt.block_on(cluster.client());
    rt.block_on(ward_k8s_testenv::install_configuration_crd(&client));
    let control_plane = rt.block_on(cluster.fresh_namespace(&client, "cp"));
    let ns = rt.block_on(cluster.fresh_namespace(&client, "shop"));
    let kubeconfig = path_str(cluster.kubeconfig_path()).to_owned();
    let dir = tempfile::tempdir().unwrap();
    // Short lifetimes so the whole rotation fits in a test: 4 s certificates, 1 s propagation.
    let sentry = k8s_sentry(
        &dir.path().join("credentials"),
        &kubeconfig,
        &control_plane,
        &["--workload-cert-ttl", "4s", "--allowed-clock-skew", "1s", "--root-rotation-propagation", "1s"],
    );
    let old_root = String::from_utf8(sentry.roots_pem()).unwrap();
    let pod = rt.block_on(ward_k8s_testenv::annotated_pod(
        &client,
        &ns,
        "orders-0",
        "orders",
        json!({"dapr.io/enabled": "true", "dapr.io/app-id": "orders"}),
    ));
    let sentry_id = format!("spiffe://cluster.local/ns/{control_plane}/dapr-sentry");
    let token = rt.block_on(ward_k8s_testenv::bound_token(&client, &ns, "orders", Some(&pod), &sentry_id));
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let published =
        || rt.block_on(configmaps.get_opt("dapr-root-ca.crt")).unwrap().and_then(|m| m.data?.get("ca.crt").cloned());
    // The issuer a new certificate chains to (the second PEM block of the returned chain), asked by a client
    // that trusts what is published to the pod's namespace — as a sidecar reading its mounted bundle does.
    let issuer_of_new_certificate = || {
        let ca = ca_client_trusting(&sentry, &control_plane, published().expect("roots published").as_bytes());
        let key = KeyPair::generate().unwrap();
        let csr = CertificateParams::default().serialize_request(&key).unwrap().pem().unwrap().into_bytes();
        let request = SignCertificateRequest {
            id: "orders".to_owned(),
            token: token.clone(),
            namespace: ns.clone(),
            certificate_signing_request: csr,
            token_validator: TokenValidator::Kubernetes as i32,
            ..Default::default()
        };
        let issued =
            rt.block_on(ca.grpc().sign_certificate(request)).expect("signs throughout the rotation").into_inner();
        blocks(&String::from_utf8(issued.workload_certificate).unwrap())[1].clone()
    };
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let published =
        || rt.block_on(configmaps.get_opt("dapr-root-ca.crt")).unwrap().and_then(|m| m.data?.get("ca.crt").cloned());
    support::eventually(Duration::from_secs(15), "roots published", || (published()? == old_root).then_some(()));
    let old_issuer = issuer_of_new_certificate();

    let phase = rt
        .block_on(ward_kube::rotation::start(
            &client,
            &control_plane,
            &TrustDomain::new("cluster.local").unwrap(),
            Duration::from_secs(3600),
        ))
        .unwrap();
    assert!(matches!(phase, ward_kube::rotation::Phase::Distributing { .. }));
    // 1. Both roots everywhere, the old issuer still signing.
    let both = support::eventually(Duration::from_secs(15), "both roots published", || {
        let roots = published()?;
        (blocks(&roots).len() == 2).then_some(roots)
    });
    assert!(both.starts_with(&old_root), "the new root is appended");
    // 2. The issuer switches once every ConfigMap carries the new root: new certificates chain to the new root.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &control_plane);
    support::eventually(Duration::from_secs(20), "issuer switched", || {
        let issuer = issuer_of_new_certificate();
        (issuer != old_issuer).then_some(())
    });
    let secret = rt.block_on(secrets.get("dapr-trust-bundle")).unwrap();
    assert!(matches!(ward_kube::rotation::phase_of(&secret), Ok(ward_kube::rotation::Phase::Retiring { .. })));
    // 3. The old root leaves only after the last certificate under it expired (4 s + 1 s skew after the switch).
    let new_root = blocks(&both)[1].clone();
    support::eventually(Duration::from_secs(30), "old root retired", || (published()? == new_root).then_some(()));
    assert_eq!(String::from_utf8(sentry.roots_pem()).unwrap(), new_root, "sentry serves the new root only");
    let secret = rt.block_on(secrets.get("dapr-trust-bundle")).unwrap();
    assert_eq!(ward_kube::rotation::phase_of(&secret), Ok(ward_kube::rotation::Phase::Idle));
    assert!(!secret.data.unwrap().contains_key("next-issuer.crt"));
}

/// Two `ward sidecar --mode kubernetes` processes (pod-bound tokens, anchors from the file a kubelet would refresh
/// from `dapr-root-ca.crt`) call each other through a whole root rotation: not one call fails, both renew their
/// certificates under the new root, and the old root is gone from their anchors at the end.
#[test]
fn sidecars_keep_calling_each_other_through_a_root_rotation() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use support::mesh::{Http, TestApp};
    if ward_k8s_testenv::shared_or_skip("sidecars_keep_calling_each_other_through_a_root_rotation").is_none() {
        return;
    }
    let assets = ward_k8s_testenv::assets().unwrap();
    let cluster = ward_k8s_testenv::TestCluster::start(&assets, Default::default()).unwrap();
    let rt = runtime();
    let _entered = rt.enter();
    let client = rt.block_on(cluster.client());
    rt.block_on(ward_k8s_testenv::install_configuration_crd(&client));
    let control_plane = "dapr-system";
    rt.block_on(ward_k8s_testenv::create_namespace(&client, control_plane));
    let ns = "shop";
    rt.block_on(ward_k8s_testenv::create_namespace(&client, ns));
    let kubeconfig = path_str(cluster.kubeconfig_path()).to_owned();
    let dir = tempfile::tempdir().unwrap();
    let sentry = k8s_sentry(
        &dir.path().join("credentials"),
        &kubeconfig,
        control_plane,
        &[
            "--workload-cert-ttl",
            "6s",
            "--allowed-clock-skew",
            "1s",
            // Longer than the sidecars' 2 s anchor poll plus the "kubelet" copy (the real default, 2m, covers a
            // kubelet's ConfigMap refresh of about a minute).
            "--root-rotation-propagation",
            "5s",
        ],
    );
    let sentry_id = format!("spiffe://cluster.local/ns/{control_plane}/dapr-sentry");
    // Per app: a pod, its projected token in a file, and the anchors file the "kubelet" below keeps current.
    let mut files = Vec::new();
    for app in ["caller", "callee"] {
        let annotations = json!({"dapr.io/enabled": "true", "dapr.io/app-id": app});
        let pod = rt.block_on(ward_k8s_testenv::annotated_pod(&client, ns, &format!("{app}-0"), app, annotations));
        let token = rt.block_on(ward_k8s_testenv::bound_token(&client, ns, app, Some(&pod), &sentry_id));
        let token_file = dir.path().join(format!("{app}.token"));
        std::fs::write(&token_file, token).unwrap();
        files.push((token_file, dir.path().join(format!("{app}-ca.crt"))));
    }
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let published = {
        let configmaps = configmaps.clone();
        let handle = rt.handle().clone();
        move || {
            handle
                .block_on(configmaps.get_opt("dapr-root-ca.crt"))
                .ok()
                .flatten()
                .and_then(|m| m.data?.get("ca.crt").cloned())
        }
    };
    let first_roots = support::eventually(Duration::from_secs(15), "roots published", &published);
    for (_, anchors) in &files {
        std::fs::write(anchors, &first_roots).unwrap();
    }
    // The kubelet's part: the mounted ConfigMap follows the API object (atomically, like its symlink swap).
    let stop = Arc::new(AtomicBool::new(false));
    let kubelet = {
        let stop = stop.clone();
        let anchors: Vec<_> = files.iter().map(|(_, a)| a.clone()).collect();
        let published = published.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(roots) = published() {
                    for file in &anchors {
                        if std::fs::read_to_string(file).ok().as_deref() != Some(roots.as_str()) {
                            let tmp = file.with_extension("tmp");
                            std::fs::write(&tmp, &roots).unwrap();
                            std::fs::rename(&tmp, file).unwrap();
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };

    let app = TestApp::start();
    let config = dir.path().join("callee.yaml");
    std::fs::write(&config, format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {{name: callee}}\nspec:\n  accessControl:\n    \
         defaultAction: deny\n    trustDomain: public\n    policies:\n    - {{appId: caller, namespace: {ns}, trustDomain: public, \
         defaultAction: deny, operations: [{{name: /orders/**, httpVerb: ['GET'], action: allow}}]}}\n"
    ))
    .unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    // Each sidecar runs with the command line the injector gives a pod with these annotations.
    let injector = ward_injector::InjectorConfig {
        control_plane_namespace: control_plane.into(),
        control_plane_trust_domain: "cluster.local".into(),
        ..Default::default()
    };
    // Cluster DNS for the two "pods": the callee's Service name answers with its loopback port (the resolver's
    // documented test override; the file is written once the callee is up).
    let overrides = dir.path().join("cluster-dns");
    std::fs::write(&overrides, "").unwrap();
    let sidecar = |app_id: &str, (token, anchors): &(std::path::PathBuf, std::path::PathBuf), app_port: Option<u16>| {
        let mut annotations = json!({"dapr.io/enabled": "true", "dapr.io/app-id": app_id});
        if let Some(port) = app_port {
            annotations["dapr.io/app-port"] = json!(port.to_string());
        }
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("{app_id}-0"), "annotations": annotations},
            "spec": {"serviceAccountName": app_id, "containers": [{"name": "app", "image": "app:1"}]}
        }))
        .unwrap();
        let settings = ward_injector::sidecar::Settings::from_pod(&injector, &format!("{app_id}-0"), &pod).unwrap();
        let mut injected = ward_injector::sidecar::sidecar_args(&injector, &settings);
        // Two "pods" on one machine: every port chosen by the kernel, everything on loopback, this test's sentry
        // (a pod reaches it as dapr-sentry.<ns>.svc:443).
        for i in 1..injected.len() {
            let value = match injected[i - 1].as_str() {
                "--dapr-http-port"
                | "--dapr-grpc-port"
                | "--dapr-internal-grpc-port"
                | "--dapr-public-port"
                | "--metrics-port" => "0".to_owned(),
                "--dapr-internal-grpc-listen-address" | "--metrics-listen-address" | "--dapr-listen-addresses" => {
                    "127.0.0.1".to_owned()
                }
                "--sentry-address" => sentry.grpc.clone(),
                _ => continue,
            };
            injected[i] = value;
        }
        // No operator in this test: the Configuration comes from a file.
        let at = injected.iter().position(|a| a == "--control-plane-address").unwrap();
        injected.drain(at..at + 2);
        if app_port.is_some() {
            injected.extend(["--config".to_owned(), path_str(&config).to_owned()]);
        }
        let args: Vec<&str> = injected.iter().map(String::as_str).collect();
        let env = [
            ("NAMESPACE", ns),
            ("DAPR_CONTROLPLANE_NAMESPACE", control_plane),
            ("DAPR_CONTROLPLANE_TRUST_DOMAIN", "cluster.local"),
            ("DAPR_SENTRY_TOKEN_FILE", path_str(token)),
            ("DAPR_TRUST_ANCHORS_FILE", path_str(anchors)),
            ("WARD_HOME", path_str(&home)),
            // The built-in secret store's API client (in a pod: the service account).
            ("KUBECONFIG", kubeconfig.as_str()),
            // Tests run as root here; the check itself is covered below.
            ("DAPR_UNSAFE_SKIP_CONTAINER_UID_GID_CHECK", "true"),
            ("WARD_NAME_RESOLUTION_OVERRIDES", path_str(&overrides)),
        ];
        let mut process = support::Ward::spawn(app_id, &args, &env);
        let line = process.wait_stdout("ward sidecar ready:", Duration::from_secs(30));
        (process, support::field(&line, "http"), support::field(&line, "internal"))
    };
    let (_callee, _, callee_internal) = sidecar("callee", &files[1], Some(app.addr.port()));
    std::fs::write(&overrides, format!("callee-dapr.{ns}.svc.cluster.local {callee_internal}\n")).unwrap();
    let (_caller, caller_http, _) = sidecar("caller", &files[0], None);

    let calls = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let load = {
        let (stop, calls, failures) = (stop.clone(), calls.clone(), failures.clone());
        std::thread::spawn(move || {
            let http = Http::new();
            while !stop.load(Ordering::Relaxed) {
                let reply = http.get(&caller_http, "/v1.0/invoke/callee/method/orders/1");
                calls.fetch_add(1, Ordering::Relaxed);
                if reply.status != 200 {
                    failures.lock().unwrap().push(format!("{} {}", reply.status, reply.text()));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    rt.block_on(ward_kube::rotation::start(
        &client,
        control_plane,
        &TrustDomain::new("cluster.local").unwrap(),
        Duration::from_secs(3600),
    ))
    .unwrap();
    // The whole rotation: both roots out, issuer switched, old root retired after the last old certificate.
    let both = support::eventually(Duration::from_secs(20), "both roots published", || {
        published().filter(|r| blocks(r).len() == 2)
    });
    let new_root = blocks(&both)[1].clone();
    support::eventually(Duration::from_secs(60), "old root retired", || (published()? == new_root).then_some(()));
    // Both sidecars renew (every 3 s) under the new issuer and keep serving on the new root alone.
    std::thread::sleep(Duration::from_secs(8));
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    kubelet.join().unwrap();
    let failures = failures.lock().unwrap();
    let calls = calls.load(Ordering::Relaxed);
    assert!(calls > 200, "the load ran ({calls} calls)");
    assert!(
        failures.is_empty(),
        "{} of {calls} calls failed during the rotation: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    for (_, anchors) in &files {
        assert_eq!(
            std::fs::read_to_string(anchors).unwrap(),
            new_root,
            "the old root is gone from the sidecars' anchors"
        );
    }
}

#[test]
fn a_kubernetes_sidecar_refuses_to_run_as_root() {
    let (code, _, stderr) = support::ward_output(
        &["sidecar", "--mode", "kubernetes", "--app-id", "orders", "--sentry-address", "127.0.0.1:1"],
        &[("NAMESPACE", "shop")],
    );
    let uid = std::fs::read_to_string("/proc/self/status").unwrap();
    let root = uid.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap().split_whitespace().next() == Some("0");
    if root {
        assert_ne!(code, 0);
        assert!(stderr.contains("refuses to run as UID 0"), "{stderr}");
    } else {
        // Not root: the check passes and the start fails later (no sentry at 127.0.0.1:1), not for the UID.
        assert!(!stderr.contains("UID 0"), "{stderr}");
    }
}

/// The built-in `kubernetes` secret store of a `ward sidecar --mode kubernetes`: Secrets of its own namespace,
/// secret scopes applied (Dapr's 403 for a secret out of scope), a secret in another namespace answered exactly as a
/// missing one; `--disable-builtin-k8s-secret-store` removes the store.
#[test]
fn the_builtin_kubernetes_secret_store_serves_its_own_namespace_under_scopes() {
    use k8s_openapi::ByteString;
    let Some(cluster) = ward_k8s_testenv::shared_or_skip("the_builtin_kubernetes_secret_store") else { return };
    let rt = runtime();
    let _entered = rt.enter();
    let client = rt.block_on(cluster.client());
    rt.block_on(ward_k8s_testenv::install_configuration_crd(&client));
    let control_plane = rt.block_on(cluster.fresh_namespace(&client, "cp"));
    let ns = rt.block_on(cluster.fresh_namespace(&client, "vault"));
    let elsewhere = rt.block_on(cluster.fresh_namespace(&client, "elsewhere"));
    let secret = |namespace: &str, name: &str, key: &str, value: &str| {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let object = Secret {
            metadata: kube::api::ObjectMeta { name: Some(name.to_owned()), ..Default::default() },
            data: Some([(key.to_owned(), ByteString(value.as_bytes().to_vec()))].into()),
            ..Default::default()
        };
        rt.block_on(secrets.create(&PostParams::default(), &object)).unwrap();
    };
    secret(&ns, "db", "password", "s3cret");
    secret(&ns, "hidden", "key", "not-for-this-app");
    secret(&elsewhere, "other", "key", "other-namespace");

    let kubeconfig = path_str(cluster.kubeconfig_path()).to_owned();
    let dir = tempfile::tempdir().unwrap();
    let sentry = k8s_sentry(&dir.path().join("credentials"), &kubeconfig, &control_plane, &[]);
    let pod = rt.block_on(ward_k8s_testenv::annotated_pod(
        &client,
        &ns,
        "reader-0",
        "reader",
        json!({"dapr.io/enabled": "true", "dapr.io/app-id": "reader"}),
    ));
    let audience = format!("spiffe://cluster.local/ns/{control_plane}/dapr-sentry");
    let token = rt.block_on(ward_k8s_testenv::bound_token(&client, &ns, "reader", Some(&pod), &audience));
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, token).unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: reader}\nspec:\n  secrets:\n    scopes:\n    \
         - {storeName: kubernetes, defaultAccess: deny, allowedSecrets: [db, absent]}\n",
    )
    .unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let anchors = dir.path().join("credentials/ca.crt");
    let start = |extra: &[&str]| {
        let mut args = vec![
            "sidecar",
            "--mode",
            "kubernetes",
            "--app-id",
            "reader",
            "--dapr-http-port",
            "0",
            "--dapr-grpc-port",
            "0",
            "--dapr-internal-grpc-port",
            "0",
            "--metrics-port",
            "0",
            "--sentry-address",
            &sentry.grpc,
            "--control-plane-namespace",
            &control_plane,
            "--control-plane-trust-domain",
            "cluster.local",
            "--config",
            path_str(&config),
        ];
        args.extend_from_slice(extra);
        let env = [
            ("NAMESPACE", ns.as_str()),
            ("DAPR_SENTRY_TOKEN_FILE", path_str(&token_file)),
            ("DAPR_TRUST_ANCHORS_FILE", path_str(&anchors)),
            ("WARD_HOME", path_str(&home)),
            // The store's API client: the test cluster's (in a pod, the pod's service account).
            ("KUBECONFIG", kubeconfig.as_str()),
            ("DAPR_UNSAFE_SKIP_CONTAINER_UID_GID_CHECK", "true"),
        ];
        let mut process = support::Ward::spawn("reader", &args, &env);
        let line = process.wait_stdout("ward sidecar ready:", Duration::from_secs(30));
        (process, support::field(&line, "http"))
    };
    let (_reader, http_addr) = start(&[]);
    let http = support::mesh::Http::new();
    let db = http.get(&http_addr, "/v1.0/secrets/kubernetes/db");
    assert_eq!(db.status, 200, "{}", db.text());
    assert_eq!(db.json(), json!({"password": "s3cret"}));
    // Out of scope and in another namespace: both answered exactly as a missing secret (invariant 3).
    let hidden = http.get(&http_addr, "/v1.0/secrets/kubernetes/hidden");
    assert!(!hidden.text().contains("not-for-this-app"));
    let absent = http.get(&http_addr, "/v1.0/secrets/kubernetes/absent");
    assert_eq!(absent.status, hidden.status, "{} / {}", absent.text(), hidden.text());
    assert_eq!(absent.text().replace("absent", "X"), hidden.text().replace("hidden", "X"));
    let other = http.get(&http_addr, &format!("/v1.0/secrets/kubernetes/db?metadata.namespace={elsewhere}"));
    assert_eq!(absent.status, other.status, "{} / {}", absent.text(), other.text());
    assert_eq!(absent.text().replace("absent", "X"), other.text().replace("db", "X"));
    assert!(!other.text().contains("s3cret"));
    let bulk = http.get(&http_addr, "/v1.0/secrets/kubernetes/bulk");
    assert_eq!(bulk.status, 200, "{}", bulk.text());
    assert_eq!(bulk.json(), json!({"db": {"password": "s3cret"}}), "only what the scopes allow");

    let (_plain, http_addr) = start(&["--disable-builtin-k8s-secret-store"]);
    let gone = http.get(&http_addr, "/v1.0/secrets/kubernetes/db");
    // No store at all now: Dapr's answer for a sidecar without secret stores.
    assert!(gone.text().contains("ERR_SECRET_STORES_NOT_CONFIGURED"), "{} {}", gone.status, gone.text());
}

/// A second validator beside the Kubernetes one is refused, not ignored (Dapr runs only the built-in one there).
#[test]
fn kubernetes_mode_refuses_another_token_validator() {
    let (code, _, stderr) = support::ward_output(
        &["sentry", "--mode", "kubernetes", "--token-validator", "jwks", "--jwks", "x.json", "--port", "0"],
        &[],
    );
    assert_ne!(code, 0);
    assert!(stderr.contains("--mode kubernetes validates pod-bound service-account tokens"), "{stderr}");
}

/// A Kubernetes sidecar learns its trust domain from what sentry issues (sentry reads it from the pod's
/// `dapr.io/config` Configuration, which the sidecar can fetch from the operator only once it has an identity): the
/// bootstrap accepts the assigned trust domain and checks the chain under it, and the configured-trust-domain
/// request still refuses any other.
#[test]
fn the_kubernetes_bootstrap_takes_the_trust_domain_sentry_assigns() {
    let Some(cluster) = ward_k8s_testenv::shared_or_skip("the_kubernetes_bootstrap_takes_the_trust_domain") else {
        return;
    };
    let rt = runtime();
    let _entered = rt.enter();
    let client = rt.block_on(cluster.client());
    rt.block_on(ward_k8s_testenv::install_configuration_crd(&client));
    let control_plane = rt.block_on(cluster.fresh_namespace(&client, "cp"));
    let ns = rt.block_on(cluster.fresh_namespace(&client, "acme"));
    let configurations: Api<kube::core::DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &ward_kube::dapr::configuration());
    let configuration: kube::core::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "dapr.io/v1alpha1", "kind": "Configuration", "metadata": {"name": "acme-config"},
        "spec": {"accessControl": {"defaultAction": "deny", "trustDomain": "acme.example"}},
    }))
    .unwrap();
    rt.block_on(configurations.create(&PostParams::default(), &configuration)).unwrap();
    let pod = rt.block_on(ward_k8s_testenv::annotated_pod(
        &client,
        &ns,
        "billing-0",
        "billing",
        json!({"dapr.io/enabled": "true", "dapr.io/app-id": "billing", "dapr.io/config": "acme-config"}),
    ));
    let dir = tempfile::tempdir().unwrap();
    let sentry = k8s_sentry(&dir.path().join("credentials"), path_str(cluster.kubeconfig_path()), &control_plane, &[]);
    let sentry_id = format!("spiffe://cluster.local/ns/{control_plane}/dapr-sentry");
    let token = rt.block_on(ward_k8s_testenv::bound_token(&client, &ns, "billing", Some(&pod), &sentry_id));
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, token).unwrap();
    let roots = sentry.roots_pem();
    let bundle = |td: &str| {
        ward_identity::TrustBundleHandle::new(
            ward_identity::TrustBundle::from_pem(TrustDomain::new(td).unwrap(), &roots).unwrap(),
        )
    };
    // As the sidecar starts: the anchors under a placeholder trust domain, sentry under the control plane's.
    let client = ward_sentry::SentryClient::new(ward_sentry::SentryClientConfig {
        address: sentry.grpc.clone(),
        sentry_id: ward_identity::SpiffeId::parse(&sentry_id).unwrap(),
        bundle: bundle("public"),
        app_id: "billing".to_owned(),
        namespace: ns.clone(),
        trust_domain: TrustDomain::new("public").unwrap(),
        token_file: Some(token_file),
        skew: Duration::from_secs(60),
        kubernetes: true,
        sentry_trust: Some(bundle("cluster.local")),
    })
    .unwrap();
    let svid = rt.block_on(client.fetch_kubernetes_bootstrap()).unwrap();
    assert_eq!(svid.spiffe_id().to_string(), format!("spiffe://acme.example/ns/{ns}/billing"));
    let refused = rt.block_on(client.fetch()).map(|_| ()).unwrap_err();
    assert!(refused.to_string().contains("acme.example"), "{refused}");
}
