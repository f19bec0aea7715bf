//! The `ward` binary's Kubernetes commands end to end against a real API server of their own (with the controller
//! manager, so `uninstall --wait` sees the namespace go): `init -k`, `status -k`, `mtls -k`, `mtls expiry -k`,
//! `mtls export -k` against a Secret the test writes, `init -k --wait` timing out (no kubelet), `uninstall -k`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Api;
use kube::api::PostParams;
use ward_k8s_testenv::{Options, TestCluster};

const WARD: &str = env!("CARGO_BIN_EXE_ward");

/// Runs `ward args…`, killed after 90 s; returns (exit code, stdout, stderr).
fn ward(args: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = Command::new(WARD)
        .args(args)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ward {args:?} did not finish in 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let read = |p| std::fs::read_to_string(p).unwrap();
    (status.code().unwrap_or(-1), read(&out_path), read(&err_path))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_status_mtls_and_uninstall_through_the_cli() {
    let Some(assets) = ward_k8s_testenv::assets() else {
        ward_k8s_testenv::shared_or_skip("init_status_mtls_and_uninstall_through_the_cli");
        return;
    };
    let cluster = TestCluster::start(&assets, Options { controller_manager: true }).expect("test cluster");
    let kc = cluster.kubeconfig_path().to_str().unwrap().to_owned();
    let k = |extra: &[&str]| -> Vec<String> {
        extra
            .iter()
            .map(|s| (*s).to_owned())
            .chain(["--kubeconfig".into(), kc.clone(), "-n".into(), "cli-cp".into()])
            .collect()
    };
    let run = |extra: &[&str]| {
        let args = k(extra);
        ward(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };

    let (code, out, err) = run(&["init", "-k"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Success! ward has been installed to namespace cli-cp"), "{out}");

    let (code, out, err) = run(&["status", "-k"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("dapr-sentry") && out.contains("dapr-sidecar-injector"), "{out}");
    assert!(out.contains("No CA yet"), "{out}");

    let (code, out, _) = run(&["mtls", "-k"]);
    assert_eq!((code, out.trim()), (0, "Mutual TLS is enabled in your Kubernetes cluster"));

    let (code, _, err) = run(&["mtls", "expiry", "-k"]);
    assert_eq!(code, 1);
    assert!(err.contains("Secret dapr-trust-bundle not found in namespace cli-cp"), "{err}");

    // The CA the sentry would write, ten days from expiry: `expiry` warns (exit code 2, as for files).
    let td = ward_identity::TrustDomain::new("cluster.local").unwrap();
    let material = ward_sentry::material::generate(&td, Duration::from_secs(10 * 86_400)).unwrap();
    let secret: Secret = serde_json::from_value(serde_json::json!({"metadata": {"name": "dapr-trust-bundle"},
        "stringData": {"ca.crt": material.root_cert_pem, "issuer.crt": material.issuer_cert_pem,
            "issuer.key": material.issuer_key_pem}}))
    .unwrap();
    let client = cluster.client().await;
    Api::<Secret>::namespaced(client.clone(), "cli-cp").create(&PostParams::default(), &secret).await.unwrap();

    let (code, out, err) = run(&["mtls", "expiry", "-k"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.starts_with("root (CN=ward root CA (cluster.local), O=cluster.local): notAfter "), "{out}");
    assert!(out.contains("issuer (") && out.contains("WARNING: fewer than 30 days remain"), "{out}");
    let (code, out, _) = run(&["mtls", "expiry", "-k", "--warn-days", "5"]);
    assert_eq!(code, 0, "{out}");

    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("export");
    let (code, out, err) = run(&["mtls", "export", "-k", "-o", export.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(std::fs::read_to_string(export.join("ca.crt")).unwrap(), material.root_cert_pem);
    assert_eq!(std::fs::read_to_string(export.join("issuer.crt")).unwrap(), material.issuer_cert_pem);
    assert_eq!(std::fs::read_to_string(export.join("issuer.key")).unwrap(), material.issuer_key_pem);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(export.join("issuer.key")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let (_, out, _) = run(&["status", "-k"]);
    assert!(out.contains("Root certificate expires in "), "{out}");

    // No kubelet: the Deployments never become ready, so --wait times out and says what is pending.
    let (code, _, err) = run(&["init", "-k", "--wait", "--timeout", "2"]);
    assert_eq!(code, 1);
    assert!(err.contains("timed out after 2s waiting for Deployments to be ready in cli-cp"), "{err}");
    assert!(err.contains("dapr-sentry (0/1 ready)"), "{err}");

    // A rotation starts on the Secret (sentry, absent here, would drive it); a second one is refused while it runs.
    let (code, out, err) = run(&["mtls", "renew-certificate", "-k", "--valid-until", "30"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Root rotation started (distributing"), "{out}");
    let (code, _, err) = run(&["mtls", "renew-certificate", "-k"]);
    assert_eq!(code, 1);
    assert!(err.contains("already in progress"), "{err}");
    let (code, _, err) = run(&["mtls", "renew-certificate", "-k", "--keep-root-key"]);
    assert_eq!(code, 1);
    assert!(err.contains("--keep-root-key does not apply with -k"), "{err}");

    let (code, out, err) = run(&["uninstall", "-k", "--all", "--wait", "--timeout", "60"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ward has been removed successfully"), "{out}");
    assert!(Api::<Namespace>::all(client).get_opt("cli-cp").await.unwrap().is_none());

    let (code, _, err) = run(&["status", "-k"]);
    assert_eq!(code, 1);
    assert!(err.contains("no ward control plane in namespace cli-cp"), "{err}");
}
