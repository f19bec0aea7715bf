//! Property tests over the public API: path normalisation is idempotent, and no re-encoding of a method path
//! turns an ACL deny into an allow (CVE-2026-41491 and its kind).

use std::sync::LazyLock;

use proptest::prelude::*;
use ward_policy::spec::{AccessControlSpec, AppPolicySpec, OperationSpec};
use ward_policy::{
    AccessControl, AclRequest, AppProtocol, Caller, HttpVerb, MethodPath, PathError, normalize_grpc_method,
    normalize_http_method,
};

/// Denies `/admin/**` to the caller and allows everything else.
static ACL: LazyLock<AccessControl> = LazyLock::new(|| {
    let spec = AccessControlSpec {
        default_action: Some("deny".into()),
        trust_domain: None,
        policies: Some(vec![AppPolicySpec {
            app_id: "caller".into(),
            namespace: "default".into(),
            trust_domain: "public".into(),
            default_action: Some("allow".into()),
            operations: vec![OperationSpec {
                name: "/admin/**".into(),
                http_verb: vec!["*".into()],
                action: Some("deny".into()),
            }],
        }]),
    };
    AccessControl::compile(&spec).unwrap_or_else(|e| panic!("{e}"))
});

fn allowed(path: &MethodPath) -> bool {
    let req = AclRequest {
        caller: Some(Caller { trust_domain: "public", namespace: "default", app_id: "caller" }),
        operation: path.as_str(),
        verb: Some(HttpVerb::Get),
        app_protocol: AppProtocol::Http,
    };
    ACL.decide(&req).allowed
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "admin", "Admin", "ADMIN", "admin2", "adm", "public", "a", "b.c", "x y", "é", "~u", "..a"
        ])
        .prop_map(String::from),
        "[a-zA-Z0-9._~-]{1,6}".prop_filter("not a dot segment", |s| s != "." && s != ".."),
    ]
}

#[derive(Debug, Clone)]
enum CharEncoding {
    Literal,
    Upper,
    Lower,
}

#[derive(Debug, Clone)]
enum Separator {
    Slash,
    Double,
    Dot,
    EncodedDot,
    Detour(String),
}

fn separator() -> impl Strategy<Value = Separator> {
    prop_oneof![
        4 => Just(Separator::Slash),
        1 => Just(Separator::Double),
        1 => Just(Separator::Dot),
        1 => Just(Separator::EncodedDot),
        1 => segment().prop_map(Separator::Detour),
    ]
}

fn encode_char(c: char, how: &CharEncoding, out: &mut String) {
    let mut buf = [0u8; 4];
    let bytes = c.encode_utf8(&mut buf).as_bytes();
    // Characters that a URL path cannot carry literally are always encoded.
    let must_encode = !c.is_ascii_alphanumeric() && !"-._~".contains(c);
    match how {
        CharEncoding::Literal if !must_encode => out.push(c),
        CharEncoding::Lower => bytes.iter().for_each(|b| out.push_str(&format!("%{b:02x}"))),
        _ => bytes.iter().for_each(|b| out.push_str(&format!("%{b:02X}"))),
    }
}

/// A plain path and one harmless re-encoding of it.
fn encoded_path() -> impl Strategy<Value = (String, String)> {
    prop::collection::vec(
        (
            segment(),
            prop::collection::vec(
                prop_oneof![Just(CharEncoding::Literal), Just(CharEncoding::Upper), Just(CharEncoding::Lower)],
                8,
            ),
            separator(),
        ),
        1..5,
    )
    .prop_flat_map(|parts| (Just(parts), any::<bool>(), any::<bool>()))
    .prop_map(|(parts, leading, trailing)| {
        let plain = parts.iter().map(|(s, _, _)| s.as_str()).collect::<Vec<_>>().join("/");
        let mut raw = String::new();
        if leading {
            raw.push('/');
        }
        for (i, (seg, encodings, sep)) in parts.iter().enumerate() {
            if i > 0 {
                match sep {
                    Separator::Slash => raw.push('/'),
                    Separator::Double => raw.push_str("//"),
                    Separator::Dot => raw.push_str("/./"),
                    Separator::EncodedDot => raw.push_str("/%2E/"),
                    Separator::Detour(d) => {
                        raw.push('/');
                        d.chars().for_each(|c| encode_char(c, &CharEncoding::Literal, &mut raw));
                        raw.push_str("/../");
                    }
                }
            }
            for (j, c) in seg.chars().enumerate() {
                encode_char(c, encodings.get(j % encodings.len().max(1)).unwrap_or(&CharEncoding::Literal), &mut raw);
            }
        }
        if trailing {
            raw.push('/');
        }
        (plain, raw)
    })
}

/// Other spellings of the same path that a second, sloppier decoder would read as the plain path.
#[derive(Debug, Clone)]
enum Attack {
    /// `%25XX` for one character: decodes to `%XX`, which another decoder would decode again.
    DoubleEncode,
    /// A separator spelled `%2F` / `%2f`.
    EncodedSlash,
    /// A separator spelled `\` or `%5C`.
    Backslash,
    /// A separator spelled as the overlong UTF-8 sequence `%C0%AF`.
    OverlongSlash,
}

fn attack() -> impl Strategy<Value = Attack> {
    prop_oneof![
        Just(Attack::DoubleEncode),
        Just(Attack::EncodedSlash),
        Just(Attack::Backslash),
        Just(Attack::OverlongSlash)
    ]
}

fn apply(attack: &Attack, raw: &str, at: prop::sample::Index, lower: bool) -> String {
    let slashes: Vec<usize> = raw.match_indices('/').map(|(i, _)| i).collect();
    let replace_slash = |with: &str| match slashes.get(at.index(slashes.len().max(1))) {
        Some(&i) => format!("{}{with}{}", &raw[..i], &raw[i + 1..]),
        None => raw.to_owned(),
    };
    match attack {
        Attack::DoubleEncode => {
            let chars: Vec<(usize, char)> = raw.char_indices().collect();
            let Some(&(i, c)) = chars.get(at.index(chars.len().max(1))) else { return raw.to_owned() };
            let mut encoded = String::new();
            if c == '%' {
                encoded.push_str("%25");
            } else {
                let mut buf = [0u8; 4];
                for (n, b) in c.encode_utf8(&mut buf).bytes().enumerate() {
                    encoded.push_str(&if n == 0 { format!("%25{b:02X}") } else { format!("%{b:02X}") });
                }
            }
            format!("{}{encoded}{}", &raw[..i], &raw[i + c.len_utf8()..])
        }
        Attack::EncodedSlash => replace_slash(if lower { "%2f" } else { "%2F" }),
        Attack::Backslash => replace_slash(if lower { "\\" } else { "%5C" }),
        Attack::OverlongSlash => replace_slash("%C0%AF"),
    }
}

fn assert_canonical(p: &MethodPath) {
    let s = p.as_str();
    assert!(!s.is_empty());
    assert!(!s.starts_with('/') && !s.ends_with('/'), "{s:?}");
    assert!(!s.contains("//"), "{s:?}");
    assert!(!s.contains(['%', '\\', '#', '?']), "{s:?}");
    assert!(!s.chars().any(|c| c.is_ascii_control()), "{s:?}");
    assert!(s.split('/').all(|seg| seg != "." && seg != ".."), "{s:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Harmless re-encodings all normalise to the plain path, so the ACL decides them alike.
    #[test]
    fn reencoding_keeps_the_path((plain, raw) in encoded_path()) {
        let expected = normalize_http_method(&plain);
        prop_assert!(expected.is_ok(), "plain {plain:?}: {expected:?}");
        let got = normalize_http_method(&raw);
        prop_assert_eq!(&got, &expected, "raw {:?}", raw);
        if let (Ok(got), Ok(expected)) = (got, expected) {
            prop_assert_eq!(allowed(&got), allowed(&expected));
            let first = plain.split('/').next().unwrap_or_default().to_lowercase();
            if first == "admin" {
                prop_assert!(!allowed(&got), "admin path allowed: {raw:?}");
            }
        }
    }

    /// Ambiguous spellings are refused or land on the same path, so they get the same ACL decision.
    #[test]
    fn no_encoding_turns_deny_into_allow(
        (plain, raw) in encoded_path(),
        attack in attack(),
        at in any::<prop::sample::Index>(),
        lower in any::<bool>(),
    ) {
        let hostile = apply(&attack, &raw, at, lower);
        let expected = normalize_http_method(&plain);
        match normalize_http_method(&hostile) {
            Err(_) => {}
            Ok(p) => {
                assert_canonical(&p);
                prop_assert_eq!(Ok(&p), expected.as_ref(), "hostile {:?}", hostile);
                if let Ok(expected) = &expected {
                    prop_assert_eq!(allowed(&p), allowed(expected));
                }
            }
        }
        if hostile != raw {
            prop_assert!(normalize_http_method(&hostile).is_err(), "accepted {hostile:?}");
        }
    }

    /// normalize(to_uri_path(normalize(x))) == normalize(x), and the output is canonical.
    #[test]
    fn normalisation_is_idempotent(raw in prop_oneof![any::<String>(), "[a-zA-Z0-9%./\\\\#?é~ -]{0,24}"]) {
        if let Ok(p) = normalize_http_method(&raw) {
            assert_canonical(&p);
            prop_assert_eq!(normalize_http_method(&p.to_uri_path()), Ok(p.clone()));
            prop_assert_eq!(normalize_http_method(p.as_str()), Ok(p.clone()));
        }
    }

    /// HTTP operations are judged case-insensitively; gRPC methods case-sensitively and never decoded.
    #[test]
    fn acl_decide_total_and_case_insensitive_for_http(op in "[a-zA-Z/*._-]{0,16}") {
        let caller = Some(Caller { trust_domain: "public", namespace: "default", app_id: "caller" });
        let lower = op.to_ascii_lowercase();
        let upper = op.to_ascii_uppercase();
        let decide = |operation: &str| {
            ACL.decide(&AclRequest { caller, operation, verb: Some(HttpVerb::Get), app_protocol: AppProtocol::Http })
        };
        prop_assert_eq!(decide(&lower), decide(&upper));
    }

    #[test]
    fn grpc_method_shape(raw in "[a-z/.%#?\\\\]{0,12}") {
        if let Ok(m) = normalize_grpc_method(&raw) {
            prop_assert_eq!(m.as_str(), raw.as_str());
            prop_assert_eq!(format!("/{}/{}", m.service(), m.method()), raw.clone());
            prop_assert!(!m.service().is_empty() && !m.method().is_empty());
            prop_assert!(!raw.contains(['#', '?', '\\']));
        }
    }
}

#[test]
fn cve_2026_41491_shapes_are_refused() {
    let cases: [(&str, PathError); 5] = [
        ("admin%2F..%2Fpublic", PathError::EncodedSlash { offset: 5 }),
        ("public%23/../admin", PathError::ForbiddenCharacter { ch: '#' }),
        ("public%3F/../admin", PathError::ForbiddenCharacter { ch: '?' }),
        ("%", PathError::InvalidPercentEncoding { offset: 0 }),
        ("admin%00", PathError::ForbiddenCharacter { ch: '\0' }),
    ];
    for (raw, expected) in cases {
        assert_eq!(normalize_http_method(raw), Err(expected), "{raw}");
    }
    // What the ACL judges is what the app gets: admin/../public is public, not admin.
    let p = normalize_http_method("admin/../public").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((p.as_str(), p.to_uri_path().as_str()), ("public", "/public"));
    assert!(allowed(&p));
    let p = normalize_http_method("public/../ADMIN/x").unwrap_or_else(|e| panic!("{e}"));
    assert!(!allowed(&p));
}
