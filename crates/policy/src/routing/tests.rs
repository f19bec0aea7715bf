//! Table tests of the public routing decision: every spelling of the health paths, with and without
//! `dapr-app-id`, and the token exemption that follows from it (issue 12 rows 3 and 4).

use super::*;

use PublicRequest as P;

fn invoke<'a>(target: &'a str, raw_method: &'a str, form: InvokeForm) -> PublicRequest<'a> {
    P::Invoke { target: Cow::Borrowed(target), raw_method, form }
}

struct Case {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    app_id: Option<&'static str>,
    expected: PublicRequest<'static>,
    exempt: bool,
}

const fn case(
    name: &'static str,
    method: &'static str,
    path: &'static str,
    app_id: Option<&'static str>,
    expected: PublicRequest<'static>,
    exempt: bool,
) -> Case {
    Case { name, method, path, app_id, expected, exempt }
}

#[test]
fn healthz_spellings() {
    use InvokeForm::Header;
    const H: Option<&str> = Some("orders");
    let nf = || P::NotFound;
    let cases = [
        case("exact", "GET", "/v1.0/healthz", None, P::Healthz, true),
        case("exact with app id", "GET", "/v1.0/healthz", H, P::Healthz, true),
        case("outbound", "GET", "/v1.0/healthz/outbound", H, P::HealthzOutbound, true),
        case("HEAD is routed but needs the token", "HEAD", "/v1.0/healthz", H, P::Healthz, false),
        case("POST is not allowed", "POST", "/v1.0/healthz", H, P::MethodNotAllowed { api: PublicApi::Healthz }, false),
        case(
            "lower-case get is another method",
            "get",
            "/v1.0/healthz",
            H,
            P::MethodNotAllowed { api: PublicApi::Healthz },
            false,
        ),
        // The CVE-2023-37918 class: none of these is the route, none is exempt, none invokes.
        case("trailing slash", "GET", "/v1.0/healthz/", H, nf(), false),
        case("trailing slash, no header", "GET", "/v1.0/healthz/", None, nf(), false),
        case("leading double slash", "GET", "//v1.0/healthz", H, nf(), false),
        case("inner double slash", "GET", "/v1.0//healthz", H, nf(), false),
        case("both ends", "GET", "//v1.0/healthz//", H, nf(), false),
        case("encoded slash", "GET", "/v1.0%2Fhealthz", H, nf(), false),
        case("encoded trailing slash", "GET", "/v1.0/healthz%2F", H, nf(), false),
        case("encoded slash then dot-dot (found by the property test)", "GET", "/v1.0/healthz%2F..", H, nf(), false),
        case("dot-dot out of healthz", "GET", "/v1.0/healthz/../orders", H, nf(), false),
        case("dot segment", "GET", "/v1.0/./healthz", H, nf(), false),
        case("dotdot segment", "GET", "/x/../v1.0/healthz", H, nf(), false),
        case("encoded dot segment", "GET", "/v1.0/%2e/healthz", H, nf(), false),
        case("upper case", "GET", "/V1.0/HEALTHZ", H, nf(), false),
        case("mixed case", "GET", "/v1.0/Healthz", H, nf(), false),
        case("encoded letter", "GET", "/v1.0/health%7A", H, nf(), false),
        case("backslash", "GET", "/v1.0\\healthz", H, nf(), false),
        case("below healthz", "GET", "/v1.0/healthz/x", H, nf(), false),
        case("below outbound", "POST", "/v1.0/healthz/outbound/x", H, nf(), false),
        case("other version", "GET", "/v1/healthz", H, nf(), false),
        case("semicolon param", "GET", "/v1.0/healthz;x", H, nf(), false),
        case("semicolon param on the version", "GET", "/v1.0;a/healthz", H, nf(), false),
        case(
            "longer name is not healthz",
            "GET",
            "/v1.0/healthzz",
            H,
            invoke("orders", "v1.0/healthzz", Header),
            false,
        ),
        case(
            "healthz elsewhere in the path",
            "GET",
            "/orders/v1.0/healthz",
            H,
            invoke("orders", "orders/v1.0/healthz", Header),
            false,
        ),
    ];
    run(&cases);
}

#[test]
fn routes_and_invocation() {
    use InvokeForm::{Header, Path};
    const H: Option<&str> = Some("orders");
    let cases = [
        case("metadata", "GET", "/v1.0/metadata", H, P::Metadata, false),
        case("metadata PUT", "PUT", "/v1.0/metadata", H, P::MethodNotAllowed { api: PublicApi::Metadata }, false),
        case("state save", "POST", "/v1.0/state/s", H, P::State(StateRoute::Save { store: "s" }), false),
        case("state get", "GET", "/v1.0/state/s/k", H, P::State(StateRoute::Get { store: "s", key: "k" }), false),
        case(
            "state delete",
            "DELETE",
            "/v1.0/state/s/k",
            None,
            P::State(StateRoute::Delete { store: "s", key: "k" }),
            false,
        ),
        case("state bulk", "POST", "/v1.0/state/s/bulk", None, P::State(StateRoute::BulkGet { store: "s" }), false),
        case(
            "state GET bulk is the bulk route",
            "GET",
            "/v1.0/state/s/bulk",
            H,
            P::MethodNotAllowed { api: PublicApi::State },
            false,
        ),
        case(
            "state transaction",
            "POST",
            "/v1.0/state/s/transaction",
            None,
            P::State(StateRoute::Transaction { store: "s" }),
            false,
        ),
        case("state GET store", "GET", "/v1.0/state/s", H, P::MethodNotAllowed { api: PublicApi::State }, false),
        case(
            "state too deep invokes",
            "GET",
            "/v1.0/state/s/k/x",
            H,
            invoke("orders", "v1.0/state/s/k/x", Header),
            false,
        ),
        case("state trailing slash", "GET", "/v1.0/state/s/", None, P::NotFound, false),
        case("state empty store", "POST", "/v1.0/state/", None, P::NotFound, false),
        case(
            "state empty store inside",
            "GET",
            "/v1.0/state//k",
            None,
            P::State(StateRoute::Get { store: "", key: "k" }),
            false,
        ),
        case(
            "secrets empty store inside",
            "GET",
            "/v1.0/secrets//bulk",
            None,
            P::Secrets(SecretsRoute::Bulk { store: "" }),
            false,
        ),
        case(
            "secret",
            "GET",
            "/v1.0/secrets/v/n",
            None,
            P::Secrets(SecretsRoute::Get { store: "v", name: "n" }),
            false,
        ),
        case("secret bulk", "GET", "/v1.0/secrets/v/bulk", None, P::Secrets(SecretsRoute::Bulk { store: "v" }), false),
        case("secret POST", "POST", "/v1.0/secrets/v/n", H, P::MethodNotAllowed { api: PublicApi::Secrets }, false),
        case("invoke path", "POST", "/v1.0/invoke/orders/method/a/b", None, invoke("orders", "a/b", Path), false),
        case(
            "invoke path wins over header",
            "GET",
            "/v1.0/invoke/orders/method/x",
            Some("other"),
            invoke("orders", "x", Path),
            false,
        ),
        case(
            "invoke path, encoded target",
            "GET",
            "/v1.0/invoke/ord%65rs.ns/method/x",
            None,
            invoke("orders.ns", "x", Path),
            false,
        ),
        case(
            "invoke path keeps the method raw",
            "GET",
            "/v1.0/invoke/o/method/a%2Fb/../c",
            None,
            invoke("o", "a%2Fb/../c", Path),
            false,
        ),
        case(
            "invoke path with healthz method",
            "GET",
            "/v1.0/invoke/o/method/v1.0/healthz",
            None,
            invoke("o", "v1.0/healthz", Path),
            false,
        ),
        case("invoke without method", "GET", "/v1.0/invoke/orders", H, P::InvokeMissingAppId, false),
        case("invoke empty target", "GET", "/v1.0/invoke//method/x", None, P::InvokeMissingAppId, false),
        case("invoke root", "GET", "/v1.0/invoke", None, P::InvokeMissingAppId, false),
        // Found by the fuzz target: the header form applies to an unrouted /v1.0/invoke… path too.
        case(
            "invoke look-alike with header",
            "GET",
            "/v1.0/invokeGET",
            H,
            invoke("orders", "v1.0/invokeGET", Header),
            false,
        ),
        case("invoke look-alike without header", "GET", "/v1.0/invokeGET", None, P::InvokeMissingAppId, false),
        case("header form", "POST", "/orders/1", H, invoke("orders", "orders/1", Header), false),
        case("header form, any verb", "FOO", "/admin", H, invoke("orders", "admin", Header), false),
        case(
            "header form, look-alike API",
            "GET",
            "/v1.0/stateful/x",
            H,
            invoke("orders", "v1.0/stateful/x", Header),
            false,
        ),
        case("header form, leading slashes trimmed", "GET", "///a", H, invoke("orders", "a", Header), false),
        case("empty header", "GET", "/a", Some(""), P::InvokeMissingAppId, false),
        case("no header", "GET", "/a", None, P::NotFound, false),
        case("root", "GET", "/", None, P::NotFound, false),
    ];
    run(&cases);
}

fn run(cases: &[Case]) {
    for c in cases {
        let got = classify_public(c.method, c.path, c.app_id);
        assert_eq!(got, c.expected, "case {:?}", c.name);
        assert_eq!(is_token_exempt(c.method, c.path), c.exempt, "case {:?}: exemption", c.name);
        if got.is_invocation() {
            assert!(!is_token_exempt(c.method, c.path), "case {:?}: an invocation is never exempt", c.name);
        }
    }
}

#[test]
fn api_of_each_request() {
    assert_eq!(classify_public("GET", "/v1.0/healthz", None).api(), Some(PublicApi::Healthz));
    assert_eq!(classify_public("GET", "/x", Some("a")).api(), Some(PublicApi::Invoke));
    assert_eq!(classify_public("GET", "/v1.0/invoke", None).api(), Some(PublicApi::Invoke));
    assert_eq!(classify_public("GET", "/x", None).api(), None);
    let names: Vec<&str> = [
        PublicApi::Healthz,
        PublicApi::Metadata,
        PublicApi::State,
        PublicApi::Secrets,
        PublicApi::Invoke,
        PublicApi::Provenance,
    ]
    .iter()
    .map(|a| a.name())
    .collect();
    assert_eq!(names, ["healthz", "metadata", "state", "secrets", "invoke", "provenance"]);
    assert_eq!(classify_public("GET", "/v1.0-alpha1/ward/provenance/jwks", Some("a")), PublicRequest::ProvenanceJwks);
    assert_eq!(
        classify_public("POST", "/v1.0-alpha1/ward/provenance/jwks", None),
        PublicRequest::MethodNotAllowed { api: PublicApi::Provenance }
    );
}

#[test]
fn lossy_decoding() {
    assert_eq!(percent_decode_lossy("a%41%zz%4"), "aA%zz%4");
    assert_eq!(percent_decode_lossy("%FF"), "\u{fffd}");
    assert_eq!(percent_decode_lossy("plain"), "plain");
}
