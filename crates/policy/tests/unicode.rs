//! Issue 12 row 8 as a property: for any generated method, if the ACL allows it, then no folding an app might
//! apply (NFKC, then full Unicode lower- or upper-casing, or ASCII case folding) turns it into a method the same ACL
//! denies. The ACL folds ASCII only; normalisation refuses what else could fold onto ASCII.

use std::sync::LazyLock;

use proptest::prelude::*;
use unicode_normalization::UnicodeNormalization;
use ward_policy::spec::{AccessControlSpec, AppPolicySpec, OperationSpec};
use ward_policy::{AccessControl, AclRequest, AppProtocol, Caller, HttpVerb, PathError, normalize_http_method};

/// Allows everything except `/admin/**`, `/key` and `/password` (each a spelling a confusable can reach).
static ACL: LazyLock<AccessControl> = LazyLock::new(|| {
    let deny =
        |name: &str| OperationSpec { name: name.into(), http_verb: vec!["*".into()], action: Some("deny".into()) };
    let spec = AccessControlSpec {
        default_action: Some("deny".into()),
        trust_domain: None,
        policies: Some(vec![AppPolicySpec {
            app_id: "caller".into(),
            namespace: "default".into(),
            trust_domain: "public".into(),
            default_action: Some("allow".into()),
            operations: vec![deny("/admin/**"), deny("/key"), deny("/password")],
        }]),
    };
    AccessControl::compile(&spec).unwrap_or_else(|e| panic!("{e}"))
});

fn allowed(operation: &str) -> bool {
    ACL.decide(&AclRequest {
        caller: Some(Caller { trust_domain: "public", namespace: "default", app_id: "caller" }),
        operation,
        verb: Some(HttpVerb::Get),
        app_protocol: AppProtocol::Http,
    })
    .allowed
}

/// Pieces of a method: ASCII words near the denied names, characters that fold onto ASCII, and ordinary non-ASCII
/// characters (which must stay usable).
fn piece() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "admin",
        "ADMIN",
        "adm",
        "in",
        "n",
        "a",
        "d",
        "m",
        "i",
        "k",
        "ey",
        "pa",
        "word",
        "ss",
        "s",
        "/",
        "/",
        "x",
        // fold onto ASCII: dotless i, long s, Kelvin, Angstrom, fullwidth, ligatures, sharp s, dotted I, math bold
        "\u{131}",
        "\u{17f}",
        "\u{212a}",
        "\u{212b}",
        "\u{ff21}",
        "\u{ff41}",
        "\u{ff44}",
        "\u{ff4d}",
        "\u{ff49}",
        "\u{ff4e}",
        "\u{fb00}",
        "\u{fb01}",
        "\u{df}",
        "\u{1e9e}",
        "\u{130}",
        "\u{1d41a}",
        "\u{2170}",
        "\u{24d0}",
        // stay non-ASCII under every folding
        "\u{e9}",
        "\u{c4}",
        "\u{f6}",
        "\u{3a9}",
        "\u{4e2d}",
        "\u{301}",
        "\u{a0}",
    ])
    .prop_map(String::from)
}

fn encode(s: &str, percent: bool) -> String {
    if !percent {
        return s.to_owned();
    }
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b == b'/' { char::from(b).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// The foldings an app or framework might apply before routing.
fn app_views(method: &str) -> Vec<String> {
    let nfkc: String = method.nfkc().collect();
    let mut views = Vec::new();
    for base in [method.to_owned(), nfkc] {
        views.push(base.to_lowercase());
        views.push(base.to_uppercase());
        views.push(base.to_uppercase().to_lowercase());
        views.push(base.to_ascii_lowercase());
        views.push(base.nfkc().collect::<String>().to_lowercase());
        views.push(base);
    }
    views
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn allowed_methods_stay_allowed_under_app_folding(
        pieces in prop::collection::vec(piece(), 1..6),
        percent in any::<bool>(),
    ) {
        let plain: String = pieces.concat();
        let raw = encode(&plain, percent);
        let Ok(method) = normalize_http_method(&raw) else { return Ok(()) };
        if !allowed(method.as_str()) {
            return Ok(());
        }
        for view in app_views(method.as_str()) {
            // The app sees its own folding of the path; judge it the way the ACL judges a method.
            let view = view.split('/').filter(|s| !s.is_empty()).collect::<Vec<_>>().join("/");
            prop_assert!(allowed(&view), "{raw:?} was allowed as {:?}, but an app may read it as {view:?}", method.as_str());
        }
    }
}

#[test]
fn issue_12_row_8_spellings_are_refused() {
    for raw in ["adm%C4%B1n", "%EF%BC%A1dmin", "%E2%84%AAey", "pa%C3%9Fword", "pa%C5%BF%C5%BFword"] {
        assert!(
            matches!(normalize_http_method(raw), Err(PathError::AsciiConfusable { .. })),
            "{raw}: {:?}",
            normalize_http_method(raw)
        );
    }
}
