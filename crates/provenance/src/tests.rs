use super::*;

const NOW: u64 = 1_800_000_000;

fn claims(jti: &str) -> Claims {
    Claims {
        iss: "spiffe://public/ns/default/callee".into(),
        sub: "spiffe://public/ns/default/caller".into(),
        aud: "callee".into(),
        cap: vec!["managed-table:read".into()],
        htm: "GET".into(),
        htu: "/tables/t 1/rows".into(),
        iat: NOW,
        exp: NOW + LIFETIME_SECS,
        jti: jti.into(),
        dev: None,
    }
}

fn expected(production: bool) -> Expected<'static> {
    Expected { method: "GET", path: "/tables/t%201/rows?limit=3", audience: "callee", production }
}

fn jwks(key: &SigningKey) -> Jwks {
    Jwks { keys: vec![key.jwk().clone()] }
}

#[test]
fn a_real_token_verifies_and_says_who_called() {
    let key = SigningKey::generate().unwrap();
    let token = key.mint(&claims("a")).unwrap();
    let v = verify_at(Some(&token), &expected(true), &jwks(&key), NOW + 1, &ReplayCache::default()).unwrap();
    assert_eq!(v.caller, "spiffe://public/ns/default/caller");
    assert_eq!(v.capabilities, ["managed-table:read"]);
    assert!(!v.dev);
    // The path exactly as judged (decoded) is accepted too.
    let token = key.mint(&claims("b")).unwrap();
    let e = Expected { path: "/tables/t 1/rows", ..expected(true) };
    assert!(verify_at(Some(&token), &e, &jwks(&key), NOW, &ReplayCache::default()).is_ok());
}

#[test]
fn refusals_table() {
    let key = SigningKey::generate().unwrap();
    let other = SigningKey::generate().unwrap();
    let good = key.mint(&claims("j")).unwrap();
    let mut dev = claims("d");
    dev.sub = "dev:caller".into();
    dev.dev = Some(true);
    let long = Claims { exp: NOW + MAX_LIFETIME_SECS + 1, ..claims("l") };
    // Same kid, someone else's signature.
    let forged = {
        let t = other.mint(&claims("f")).unwrap();
        let (_, rest) = t.split_once('.').unwrap();
        format!("{}{rest}", key.header_prefix)
    };
    // Claims changed after signing.
    let tampered = {
        let parts: Vec<&str> = good.split('.').collect();
        let mut c = claims("j");
        c.cap.push("secrets:internal".into());
        format!("{}.{}.{}", parts[0], B64.encode(serde_json::to_vec(&c).unwrap()), parts[2])
    };
    let none_alg = format!(
        "{}.{}.",
        B64.encode(br#"{"alg":"none","typ":"ward-provenance+jwt","kid":"x"}"#),
        B64.encode(serde_json::to_vec(&claims("n")).unwrap())
    );
    struct Case {
        name: &'static str,
        token: Option<String>,
        expected: Expected<'static>,
        now: u64,
        jwks: Jwks,
        want: fn(&ProvenanceError) -> bool,
    }
    let cases = vec![
        Case {
            name: "missing (straight to the app port)",
            token: None,
            expected: expected(false),
            now: NOW,
            jwks: jwks(&key),
            want: |e| matches!(e, ProvenanceError::Missing),
        },
        Case {
            name: "empty",
            token: Some(" ".into()),
            expected: expected(false),
            now: NOW,
            jwks: jwks(&key),
            want: |e| matches!(e, ProvenanceError::Missing),
        },
        Case {
            name: "garbage",
            token: Some("a.b".into()),
            expected: expected(false),
            now: NOW,
            jwks: jwks(&key),
            want: |e| matches!(e, ProvenanceError::Malformed { .. }),
        },
        Case {
            name: "alg none",
            token: Some(none_alg),
            expected: expected(false),
            now: NOW,
            jwks: jwks(&key),
            want: |e| matches!(e, ProvenanceError::UnsupportedAlgorithm { .. }),
        },
        Case {
            name: "forged signature",
            token: Some(forged),
            expected: expected(false),
            now: NOW,
            jwks: jwks(&key),
            want: |e| matches!(e, ProvenanceError::BadSignature),
        },
        Case {
            name: "tampered claims",
            token: Some(tampered),
            expected: expected(false),
            now: NOW,
            jwks: jwks(&key),
            want: |e| matches!(e, ProvenanceError::BadSignature),
        },
        Case {
            name: "another sidecar's key",
            token: Some(good.clone()),
            expected: expected(false),
            now: NOW,
            jwks: jwks(&other),
            want: |e| matches!(e, ProvenanceError::UnknownKey { .. }),
        },
        Case {
            name: "expired",
            token: Some(good.clone()),
            expected: expected(false),
            now: NOW + LIFETIME_SECS + LEEWAY_SECS,
            jwks: jwks(&key),
            want: |e| matches!(e, ProvenanceError::Expired { .. }),
        },
        Case {
            name: "issued in the future",
            token: Some(good.clone()),
            expected: expected(false),
            now: NOW - LEEWAY_SECS - 1,
            jwks: jwks(&key),
            want: |e| matches!(e, ProvenanceError::InvalidTimes { .. }),
        },
        Case {
            name: "lifetime too long",
            token: Some(key.mint(&long).unwrap()),
            expected: expected(false),
            now: NOW,
            jwks: jwks(&key),
            want: |e| matches!(e, ProvenanceError::InvalidTimes { .. }),
        },
        Case {
            name: "wrong audience",
            token: Some(good.clone()),
            expected: Expected { audience: "other", ..expected(false) },
            now: NOW,
            jwks: jwks(&key),
            want: |e| matches!(e, ProvenanceError::WrongAudience { .. }),
        },
        Case {
            name: "other method",
            token: Some(good.clone()),
            expected: Expected { method: "POST", ..expected(false) },
            now: NOW,
            jwks: jwks(&key),
            want: |e| matches!(e, ProvenanceError::MethodMismatch { .. }),
        },
        Case {
            name: "other path",
            token: Some(good.clone()),
            expected: Expected { path: "/tables/t2/rows", ..expected(false) },
            now: NOW,
            jwks: jwks(&key),
            want: |e| matches!(e, ProvenanceError::PathMismatch { .. }),
        },
        Case {
            name: "path prefix is not the path",
            token: Some(good.clone()),
            expected: Expected { path: "/tables/t%201/rows/x", ..expected(false) },
            now: NOW,
            jwks: jwks(&key),
            want: |e| matches!(e, ProvenanceError::PathMismatch { .. }),
        },
        Case {
            name: "dev token in production",
            token: Some(key.mint(&dev).unwrap()),
            expected: expected(true),
            now: NOW,
            jwks: jwks(&key),
            want: |e| matches!(e, ProvenanceError::DevTokenInProduction),
        },
    ];
    for c in cases {
        let err =
            verify_at(c.token.as_deref(), &c.expected, &c.jwks, c.now, &ReplayCache::default()).expect_err(c.name);
        assert!((c.want)(&err), "{}: {err:?}", c.name);
    }
    // A development token is fine for a development app.
    let v =
        verify_at(Some(&key.mint(&dev).unwrap()), &expected(false), &jwks(&key), NOW, &ReplayCache::default()).unwrap();
    assert!(v.dev);
    assert_eq!(v.caller, "dev:caller");
}

#[test]
fn a_token_is_accepted_once() {
    let key = SigningKey::generate().unwrap();
    let cache = ReplayCache::default();
    let token = key.mint(&claims("once")).unwrap();
    verify_at(Some(&token), &expected(true), &jwks(&key), NOW, &cache).unwrap();
    let err = verify_at(Some(&token), &expected(true), &jwks(&key), NOW + 1, &cache).unwrap_err();
    assert_eq!(err, ProvenanceError::Replayed { jti: "once".into() });
    // A refused token is not remembered: it does not burn the jti.
    let cache = ReplayCache::default();
    let token = key.mint(&claims("twice")).unwrap();
    assert!(verify_at(Some(&token), &Expected { audience: "x", ..expected(true) }, &jwks(&key), NOW, &cache).is_err());
    assert!(verify_at(Some(&token), &expected(true), &jwks(&key), NOW, &cache).is_ok());
}

#[test]
fn a_full_replay_cache_fails_closed_until_entries_expire() {
    let key = SigningKey::generate().unwrap();
    let cache = ReplayCache::with_capacity(2);
    for jti in ["1", "2"] {
        verify_at(Some(&key.mint(&claims(jti)).unwrap()), &expected(true), &jwks(&key), NOW, &cache).unwrap();
    }
    let third = key.mint(&claims("3")).unwrap();
    let err = verify_at(Some(&third), &expected(true), &jwks(&key), NOW, &cache).unwrap_err();
    assert_eq!(err, ProvenanceError::ReplayCacheFull { capacity: 2 });
    // Once the first two have expired they are dropped; a fresh token fits.
    let later = NOW + LIFETIME_SECS + LEEWAY_SECS + 1;
    let fresh = key.mint(&Claims { iat: later, exp: later + LIFETIME_SECS, ..claims("4") }).unwrap();
    assert!(verify_at(Some(&fresh), &expected(true), &jwks(&key), later, &cache).is_ok());
}

#[test]
fn jwks_round_trips_and_kid_is_the_thumbprint() {
    let key = SigningKey::generate().unwrap();
    let doc = serde_json::to_string(&jwks(&key)).unwrap();
    let back: Jwks = serde_json::from_str(&doc).unwrap();
    assert_eq!(back.keys[0], *key.jwk());
    assert!(doc.contains(r#""use":"sig""#), "{doc}");
    assert_eq!(key.kid(), thumbprint(&key.jwk().x, &key.jwk().y));
    assert_ne!(key.kid(), SigningKey::generate().unwrap().kid());
    assert_ne!(new_jti().unwrap(), new_jti().unwrap());
}

/// `jti`s never repeat within a process, from many threads at once, and stay 128 bits of base64url.
#[test]
fn jtis_are_unique_across_threads() {
    let threads: Vec<_> =
        (0..4).map(|_| std::thread::spawn(|| (0..20_000).map(|_| new_jti().unwrap()).collect::<Vec<_>>())).collect();
    let mut seen = std::collections::HashSet::new();
    for thread in threads {
        for jti in thread.join().unwrap() {
            assert_eq!(B64.decode(&jti).map(|b| b.len()).ok(), Some(16), "{jti}");
            assert!(seen.insert(jti), "a repeated jti");
        }
    }
}

/// Mint and verify cost, for the issue's closing note: `cargo test -p ward-provenance -- --ignored --nocapture`.
#[test]
#[ignore]
fn timing_mint_and_verify() {
    let key = SigningKey::generate().unwrap();
    let n = 2000u32;
    let started = std::time::Instant::now();
    let tokens: Vec<String> = (0..n).map(|i| key.mint(&claims(&i.to_string())).unwrap()).collect();
    let mint = started.elapsed() / n;
    let cache = ReplayCache::default();
    let started = std::time::Instant::now();
    for t in &tokens {
        verify_at(Some(t), &expected(true), &jwks(&key), NOW, &cache).unwrap();
    }
    let verify = started.elapsed() / n;
    let started = std::time::Instant::now();
    for _ in 0..n {
        SigningKey::generate().unwrap();
    }
    let generate = started.elapsed() / n;
    println!(
        "mint {mint:?}/token, verify {verify:?}/token, key generation {generate:?} (debug build unless --release)"
    );
}
