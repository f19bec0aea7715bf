//! Header hygiene on both hops. Identity headers are never taken from a caller: they are removed on the way in and
//! set by the sidecar from the verified identity on the way out (invariant 2). Hop-by-hop headers are not
//! forwarded.

use http::HeaderMap;

pub const CALLER_APP_ID: &str = "dapr-caller-app-id";
pub const CALLER_NAMESPACE: &str = "dapr-caller-namespace";
pub const CALLEE_APP_ID: &str = "dapr-callee-app-id";
pub const APP_ID: &str = "dapr-app-id";
pub const API_TOKEN: &str = "dapr-api-token";
/// The provenance token the callee's sidecar sets for its app (issue 15); a caller's copy is never forwarded.
pub const PROVENANCE: &str = ward_provenance::HEADER;

/// The protobuf type (`google.protobuf.Any.type_url`) of a gRPC invocation's data, carried over the HTTP/2 hop
/// between sidecars so `InvokeService` callers and `OnInvoke` apps get it back (issue 19 row 7).
pub const ANY_TYPE_URL: &str = "ward-any-type-url";

/// The content type a gRPC app named for typed data, carried beside [`ANY_TYPE_URL`]: an HTTP caller gets
/// `application/x-protobuf` (what it can `unpack()`), an `InvokeService` caller the app's own content type, as daprd.
pub const ANY_CONTENT_TYPE: &str = "ward-any-content-type";

/// The content type daprd gives protobuf data that has no content type of its own.
pub const PROTOBUF_CONTENT_TYPE: &str = "application/x-protobuf";

/// The names a sidecar sets on every call, built at compile time: inserting by `&str` validates the name again on
/// every request.
pub(crate) mod name {
    use http::HeaderName;

    pub(crate) const CALLER_APP_ID: HeaderName = HeaderName::from_static(super::CALLER_APP_ID);
    pub(crate) const CALLER_NAMESPACE: HeaderName = HeaderName::from_static(super::CALLER_NAMESPACE);
    pub(crate) const CALLEE_APP_ID: HeaderName = HeaderName::from_static(super::CALLEE_APP_ID);
    pub(crate) const PROVENANCE: HeaderName = HeaderName::from_static(super::PROVENANCE);
}

/// Headers a caller may claim but only a sidecar may set.
const IDENTITY_HEADERS: &[&str] = &[CALLER_APP_ID, CALLER_NAMESPACE, CALLEE_APP_ID, API_TOKEN, PROVENANCE];

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// Removes identity claims, the API token and hop-by-hop headers (every copy of each), including every header the
/// `Connection` header names (RFC 9110 §7.6.1).
pub fn strip_untrusted(headers: &mut HeaderMap) {
    strip_hop_by_hop_and(headers, IDENTITY_HEADERS);
}

/// Removes hop-by-hop headers from a response being relayed, including every header `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip_hop_by_hop_and(headers, &[]);
}

fn strip_hop_by_hop_and(headers: &mut HeaderMap, also: &[&str]) {
    let found = {
        // Borrowed from the `Connection` values; allocates only when the message has one.
        let named: Vec<&str> = headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .collect();
        names_where(headers, |name| {
            HOP_BY_HOP.contains(&name) || also.contains(&name) || named.iter().any(|n| n.eq_ignore_ascii_case(name))
        })
    };
    remove_all(headers, found);
}

/// Removes every header whose name `doomed` picks.
pub(crate) fn remove_where(headers: &mut HeaderMap, doomed: impl Fn(&str) -> bool) {
    let found = names_where(headers, doomed);
    remove_all(headers, found);
}

/// The names present that `doomed` picks. One pass over the names a message carries (a handful) instead of one map
/// lookup per listed name, each of which parsed and hashed the name: on the request path of both sidecars.
fn names_where(headers: &HeaderMap, doomed: impl Fn(&str) -> bool) -> Vec<http::HeaderName> {
    headers.keys().filter(|name| doomed(name.as_str())).cloned().collect()
}

/// Removes every copy of each of `names`.
fn remove_all(headers: &mut HeaderMap, names: Vec<http::HeaderName>) {
    for name in names {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9110 §7.6.1: a header the `Connection` header names is hop-by-hop too, on requests and relayed answers.
    #[test]
    fn headers_named_by_connection_are_hop_by_hop() {
        let mut request = HeaderMap::new();
        request.append("connection", "keep-alive, X-Hop".parse().unwrap());
        request.append("connection", " x-other-hop ,".parse().unwrap());
        request.append("x-hop", "1".parse().unwrap());
        request.append("x-other-hop", "2".parse().unwrap());
        request.append("x-kept", "3".parse().unwrap());
        let mut response = request.clone();

        strip_untrusted(&mut request);
        assert_eq!(request.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
        strip_hop_by_hop(&mut response);
        assert_eq!(response.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }

    #[test]
    fn every_listed_header_goes_with_all_its_copies_and_nothing_else_does() {
        let mut request = HeaderMap::new();
        for name in IDENTITY_HEADERS.iter().chain(HOP_BY_HOP) {
            request.append(*name, "first".parse().unwrap());
            request.append(*name, "second".parse().unwrap());
        }
        request.append("x-kept", "1".parse().unwrap());
        request.append("x-kept", "2".parse().unwrap());
        let mut response = request.clone();

        strip_untrusted(&mut request);
        assert_eq!(request.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
        assert_eq!(request.get_all("x-kept").iter().count(), 2);

        strip_hop_by_hop(&mut response);
        let mut left: Vec<&str> = response.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        let mut expected: Vec<&str> = IDENTITY_HEADERS.iter().copied().chain(["x-kept"]).collect();
        expected.sort_unstable();
        assert_eq!(left, expected);
        assert!(response.get_all(CALLER_APP_ID).iter().count() == 2, "hop-by-hop stripping keeps other headers whole");
    }

    #[test]
    fn identity_claims_and_tokens_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(CALLER_APP_ID, "admin".parse().unwrap());
        headers.append("Dapr-Caller-App-Id", "admin2".parse().unwrap());
        headers.insert(CALLER_NAMESPACE, "kube-system".parse().unwrap());
        headers.insert(API_TOKEN, "stolen".parse().unwrap());
        headers.insert(PROVENANCE, "forged.token.here".parse().unwrap());
        headers.append("Ward-Provenance", "forged2".parse().unwrap());
        headers.insert("x-custom", "kept".parse().unwrap());
        headers.insert("connection", "close".parse().unwrap());
        strip_untrusted(&mut headers);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers["x-custom"], "kept");
    }
}
