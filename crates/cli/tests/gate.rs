//! The API gate on a real sidecar: DAPR_API_TOKEN checks (incl. CVE-2023-37918 forms), rotation through a
//! watched token file, the API allow list, API logging without secrets, and the default loopback bind.

mod support;

use std::time::Duration;

use support::eventually;
use support::mesh::{Http, Mesh, SidecarSpec};

const TOKEN: &str = "s3cr3t-api-token-value";

#[test]
fn api_token_table() {
    let mesh = Mesh::start(&[]);
    let mut spec = SidecarSpec::new("guarded", None);
    spec.env = vec![("DAPR_API_TOKEN".into(), TOKEN.into())];
    spec.extra = vec!["--enable-api-logging".into()];
    let sidecar = mesh.sidecar(spec);
    let http = Http::new();
    let token = [("dapr-api-token", TOKEN)];
    let wrong = [("dapr-api-token", "nope")];
    struct Case<'a> {
        name: &'a str,
        method: &'a str,
        path: &'a str,
        headers: &'a [(&'a str, &'a str)],
        status: u16,
    }
    let cases = [
        Case { name: "no token", method: "GET", path: "/v1.0/metadata", headers: &[], status: 401 },
        Case { name: "wrong token", method: "GET", path: "/v1.0/metadata", headers: &wrong, status: 401 },
        Case { name: "right token", method: "GET", path: "/v1.0/metadata", headers: &token, status: 200 },
        Case {
            name: "token in query only",
            method: "GET",
            path: "/v1.0/metadata?dapr-api-token=s3cr3t-api-token-value",
            headers: &[],
            status: 401,
        },
        Case { name: "?x=/healthz", method: "GET", path: "/v1.0/metadata?x=/healthz", headers: &[], status: 401 },
        Case { name: "POST healthz", method: "POST", path: "/v1.0/healthz", headers: &[], status: 401 },
        Case { name: "healthz/../", method: "GET", path: "/v1.0/healthz/../state/x", headers: &[], status: 401 },
        Case { name: "GET healthz", method: "GET", path: "/v1.0/healthz", headers: &[], status: 204 },
        Case { name: "GET healthz/outbound", method: "GET", path: "/v1.0/healthz/outbound", headers: &[], status: 204 },
    ];
    for case in cases {
        let reply = http.send(case.method, &sidecar.http, case.path, case.headers, Vec::new());
        assert_eq!(reply.status, case.status, "{}: {}", case.name, reply.text());
        if case.status == 401 {
            assert_eq!(
                reply.json(),
                serde_json::json!({"errorCode": "ERR_UNAUTHORIZED", "message": "invalid api token"})
            );
        }
    }
    // Refused calls are logged too, and the token never is.
    sidecar.process.wait_stderr("HTTP API Called", Duration::from_secs(5));
    let logs = sidecar.process.stderr_text();
    assert!(logs.contains("rejected"), "{logs}");
    assert!(!logs.contains(TOKEN), "the token leaked into the logs");
    // Default bind: loopback only.
    assert!(sidecar.http.starts_with("127.0.0.1:"), "{}", sidecar.http);
}

#[test]
fn token_file_rotation_without_restart() {
    let mesh = Mesh::start(&[]);
    let file = mesh.write("tokens", "old-token-0001\n");
    let mut spec = SidecarSpec::new("rotating", None);
    spec.extra = vec!["--dapr-api-token-file".into(), support::path_str(&file).into()];
    let sidecar = mesh.sidecar(spec);
    let http = Http::new();
    let status = |t: &str| http.send("GET", &sidecar.http, "/v1.0/metadata", &[("dapr-api-token", t)], vec![]).status;
    assert_eq!(status("old-token-0001"), 200);
    assert_eq!(status("new-token-0002"), 401);
    std::fs::write(&file, "new-token-0002\nold-token-0001\n").unwrap();
    eventually(Duration::from_secs(3), "new token accepted", || (status("new-token-0002") == 200).then_some(()));
    assert_eq!(status("old-token-0001"), 200, "old and new overlap");
    std::fs::write(&file, "new-token-0002\n").unwrap();
    eventually(Duration::from_secs(3), "old token refused", || (status("old-token-0001") == 401).then_some(()));
    // An empty file keeps the last good tokens (never fails open).
    std::fs::write(&file, "").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(status("new-token-0002"), 200);
    assert_eq!(status(""), 401);
    assert!(!sidecar.process.stderr_text().contains("new-token-0002"));
}

#[test]
fn api_allow_list_routes_only_allowed_apis() {
    let mesh = Mesh::start(&[]);
    let config = mesh.write(
        "config.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  api:\n    allowed:\n      - name: invoke\n        version: v1.0\n        protocol: http\n",
    );
    let mut spec = SidecarSpec::new("listed", None);
    spec.config = Some(&config);
    let sidecar = mesh.sidecar(spec);
    let http = Http::new();
    assert_eq!(http.get(&sidecar.http, "/v1.0/metadata").status, 404, "metadata is not allowed");
    assert_eq!(http.get(&sidecar.http, "/v1.0/healthz").status, 204, "healthz is always allowed");
    let reply = http.get(&sidecar.http, "/v1.0/invoke/nobody/method/x");
    assert_eq!(reply.status, 500, "invoke is allowed: {}", reply.text());
}

#[test]
fn jwt_api_tokens_on_a_real_sidecar() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let mesh = Mesh::start(&[]);
    let pair = rcgen::KeyPair::generate().unwrap();
    let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some("k1".into());
    let jwks = mesh.write("jwks.json", &serde_json::json!({ "keys": [jwk] }).to_string());
    let mut spec = SidecarSpec::new("jwt", None);
    spec.extra = vec![
        "--dapr-api-token-jwks".into(),
        support::path_str(&jwks).into(),
        "--dapr-api-token-issuer".into(),
        "https://idp.test".into(),
        "--dapr-api-token-audience".into(),
        "ward".into(),
    ];
    let sidecar = mesh.sidecar(spec);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let sign = |claims: serde_json::Value, signer: &EncodingKey| {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(&header, &claims, signer).unwrap()
    };
    let claims = |exp: i64, iss: &str, aud: &str| serde_json::json!({"exp": exp, "iss": iss, "aud": aud, "sub": "app"});
    let other = EncodingKey::from_ec_pem(rcgen::KeyPair::generate().unwrap().serialize_pem().as_bytes()).unwrap();
    let none = {
        use base64::Engine;
        let b64 = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.",
            b64(serde_json::json!({"alg": "none", "typ": "JWT"})),
            b64(claims(now + 300, "https://idp.test", "ward"))
        )
    };
    let http = Http::new();
    let status =
        |token: &str| http.send("GET", &sidecar.http, "/v1.0/metadata", &[("dapr-api-token", token)], vec![]).status;
    assert_eq!(status(&sign(claims(now + 300, "https://idp.test", "ward"), &key)), 200, "valid");
    assert_eq!(status(&sign(claims(now - 3600, "https://idp.test", "ward"), &key)), 401, "expired");
    assert_eq!(status(&sign(claims(now + 300, "https://idp.test", "other"), &key)), 401, "wrong aud");
    assert_eq!(status(&sign(claims(now + 300, "https://evil.test", "ward"), &key)), 401, "wrong iss");
    assert_eq!(status(&sign(claims(now + 300, "https://idp.test", "ward"), &other)), 401, "bad signature");
    assert_eq!(status(&none), 401, "alg none");
}
