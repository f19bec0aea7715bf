//! Token mint and verify cost, for the issue 15 closing note.
//!
//! Run: `cargo run --release -p ward-provenance --example mint_verify_bench -- 20000`
//! Prints the mean time per key generation, mint and verify (one thread; a debug build is ~10× slower).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ward_provenance::{Claims, Expected, Jwks, ReplayCache, SigningKey, verify_at};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u32 = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(20_000);
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let started = Instant::now();
    for _ in 0..100 {
        SigningKey::generate()?;
    }
    let generate = started.elapsed() / 100;
    let key = SigningKey::generate()?;
    let claims = |i: u32| Claims {
        iss: "spiffe://public/ns/default/orders".into(),
        sub: "spiffe://public/ns/default/checkout".into(),
        aud: "orders".into(),
        cap: vec!["orders:create".into()],
        htm: "POST".into(),
        htu: "/orders/1".into(),
        iat: now,
        exp: now + ward_provenance::LIFETIME_SECS,
        jti: format!("jti-{i}"),
        dev: None,
    };
    let all: Vec<Claims> = (0..n).map(claims).collect();
    let started = Instant::now();
    let mut tokens = Vec::with_capacity(all.len());
    for c in &all {
        tokens.push(key.mint(c)?);
    }
    let mint = started.elapsed() / n;
    let jwks = Jwks { keys: vec![key.jwk().clone()] };
    let cache = ReplayCache::default();
    let expected = Expected { method: "POST", path: "/orders/1", audience: "orders", production: true };
    let started = Instant::now();
    for t in &tokens {
        verify_at(Some(t), &expected, &jwks, now, &cache)?;
    }
    let verify = started.elapsed() / n;
    println!(
        "{n} tokens of {} bytes: key generation {generate:?}, mint {mint:?}, verify {verify:?} (mean)",
        tokens[0].len()
    );
    Ok(())
}
