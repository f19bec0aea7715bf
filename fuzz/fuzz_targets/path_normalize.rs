//! Fuzzes method-path normalisation. Invariants: never panics; an accepted HTTP method is canonical (no `%`, `\`,
//! `#`, `?`, control characters, `//`, `.`/`..` segments, leading or trailing `/`); normalisation is idempotent
//! through `to_uri_path`; the decoded path and the forwarded URI path agree; an accepted gRPC method has exactly
//! two non-empty segments and is returned unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_policy::{normalize_grpc_method, normalize_http_method};

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };

    if let Ok(p) = normalize_http_method(raw) {
        let s = p.as_str();
        assert!(!s.is_empty());
        assert!(!s.starts_with('/') && !s.ends_with('/'), "{s:?}");
        assert!(!s.contains("//"), "{s:?}");
        assert!(!s.contains(['%', '\\', '#', '?']), "{s:?}");
        assert!(!s.chars().any(|c| c.is_ascii_control()), "{s:?}");
        assert!(s.split('/').all(|seg| seg != "." && seg != ".."), "{s:?}");

        // Two parse paths agree: re-normalising the forwarded URI or the decoded text gives the same value.
        let uri = p.to_uri_path();
        assert_eq!(normalize_http_method(&uri).as_ref(), Ok(&p), "{raw:?} -> {uri:?}");
        assert_eq!(normalize_http_method(s).as_ref(), Ok(&p), "{raw:?}");
        assert!(uri.starts_with('/') && !uri.contains(['\\', '#', '?', ';', '+']), "{uri:?}");
    }

    if let Ok(m) = normalize_grpc_method(raw) {
        assert_eq!(m.as_str(), raw);
        assert_eq!(format!("/{}/{}", m.service(), m.method()), raw);
        assert!(!m.service().is_empty() && !m.method().is_empty());
        assert!(!raw.chars().any(|c| c.is_ascii_control() || c == '#' || c == '?'));
    }
});
