//! `SpiffeId` and `TrustDomain`: values that can only exist if they satisfy the SPIFFE ID specification
//! (<https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md>), plus Dapr's workload form
//! `spiffe://<trust-domain>/ns/<namespace>/<app-id>`.
//!
//! Parsing is strict on purpose: an identity that two parsers could read differently is a way around an
//! authorization rule, so anything the spec does not allow (upper case in the trust domain, percent-encoding,
//! empty or dot segments, ports, user info, queries, fragments) is refused with an error naming the problem.

use std::fmt;
use std::str::FromStr;

const SCHEME_PREFIX: &str = "spiffe://";
/// The spec limits a trust domain to 255 characters.
const MAX_TRUST_DOMAIN_LEN: usize = 255;
/// The spec limits the whole URI to 2048 bytes.
const MAX_SPIFFE_ID_LEN: usize = 2048;

/// Why a string is not a valid SPIFFE ID or trust domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    #[error("SPIFFE ID is empty")]
    Empty,
    #[error("SPIFFE ID must start with \"spiffe://\"")]
    WrongScheme,
    #[error("SPIFFE ID has no trust domain")]
    MissingTrustDomain,
    #[error("trust domain is longer than {MAX_TRUST_DOMAIN_LEN} characters ({len})")]
    TrustDomainTooLong { len: usize },
    #[error("SPIFFE ID is longer than {MAX_SPIFFE_ID_LEN} bytes ({len})")]
    TooLong { len: usize },
    #[error("trust domain must not contain a port")]
    Port,
    #[error("trust domain must not contain user info")]
    UserInfo,
    #[error("SPIFFE ID must not contain a query")]
    Query,
    #[error("SPIFFE ID must not contain a fragment")]
    Fragment,
    #[error("trust domain character {ch:?} at position {position} is not allowed (only a-z, 0-9, '.', '-', '_')")]
    BadTrustDomainChar { ch: char, position: usize },
    #[error("path character {ch:?} at position {position} is not allowed (only a-z, A-Z, 0-9, '.', '-', '_')")]
    BadPathChar { ch: char, position: usize },
    #[error("path must start with '/'")]
    NoLeadingSlash,
    #[error("path contains an empty segment")]
    EmptySegment,
    #[error("path contains a '.' or '..' segment")]
    DotSegment,
    #[error("path must not end with '/'")]
    TrailingSlash,
    #[error("not a Dapr identity: the path must be /ns/<namespace>/<app-id>")]
    NotDaprForm,
}

/// A SPIFFE trust domain, e.g. `public` or `cluster.local`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a bare trust domain name (not a `spiffe://` URI).
    pub fn new(name: &str) -> Result<Self, SpiffeIdError> {
        validate_trust_domain(name)?;
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The ID of the trust domain itself, `spiffe://<td>`.
    pub fn id_string(&self) -> String {
        format!("{SCHEME_PREFIX}{}", self.0)
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// A valid SPIFFE ID. The trust domain and path are kept together as the original (already canonical) string,
/// so `to_string()` round-trips exactly.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    uri: String,
    /// Byte offset in `uri` where the path starts (== `uri.len()` when there is no path).
    path_start: usize,
}

impl SpiffeId {
    pub fn parse(input: &str) -> Result<Self, SpiffeIdError> {
        if input.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        if input.len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong { len: input.len() });
        }
        let rest = input.strip_prefix(SCHEME_PREFIX).ok_or(SpiffeIdError::WrongScheme)?;
        // Query and fragment are checked first so their error is precise rather than "bad character".
        if rest.contains('#') {
            return Err(SpiffeIdError::Fragment);
        }
        if rest.contains('?') {
            return Err(SpiffeIdError::Query);
        }
        let (trust_domain, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, ""),
        };
        validate_trust_domain(trust_domain)?;
        validate_path(path)?;
        Ok(Self { uri: input.to_owned(), path_start: SCHEME_PREFIX.len() + trust_domain.len() })
    }

    /// Builds `spiffe://<td><path>` from parts, validating the path.
    pub fn from_parts(trust_domain: &TrustDomain, path: &str) -> Result<Self, SpiffeIdError> {
        validate_path(path)?;
        let uri = format!("{SCHEME_PREFIX}{}{path}", trust_domain.as_str());
        if uri.len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong { len: uri.len() });
        }
        Ok(Self { path_start: SCHEME_PREFIX.len() + trust_domain.as_str().len(), uri })
    }

    /// Dapr's workload identity `spiffe://<td>/ns/<namespace>/<app-id>`.
    pub fn dapr(trust_domain: &TrustDomain, namespace: &str, app_id: &str) -> Result<Self, SpiffeIdError> {
        Self::from_parts(trust_domain, &format!("/ns/{namespace}/{app_id}"))
    }

    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain(self.trust_domain_str().to_owned())
    }

    pub fn trust_domain_str(&self) -> &str {
        &self.uri[SCHEME_PREFIX.len()..self.path_start]
    }

    /// The path, with its leading `/`, or `""`.
    pub fn path(&self) -> &str {
        &self.uri[self.path_start..]
    }

    pub fn as_str(&self) -> &str {
        &self.uri
    }

    pub fn is_member_of(&self, trust_domain: &TrustDomain) -> bool {
        self.trust_domain_str() == trust_domain.as_str()
    }

    /// Reads the namespace and app-id out of a Dapr-form identity.
    pub fn dapr_identity(&self) -> Result<DaprIdentity<'_>, SpiffeIdError> {
        let mut segments = self.path().strip_prefix('/').unwrap_or_default().split('/');
        match (segments.next(), segments.next(), segments.next(), segments.next()) {
            (Some("ns"), Some(namespace), Some(app_id), None) => {
                Ok(DaprIdentity { trust_domain: self.trust_domain_str(), namespace, app_id })
            }
            _ => Err(SpiffeIdError::NotDaprForm),
        }
    }
}

/// The three parts of a Dapr workload identity, borrowed from a `SpiffeId`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaprIdentity<'a> {
    pub trust_domain: &'a str,
    pub namespace: &'a str,
    pub app_id: &'a str,
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn validate_trust_domain(td: &str) -> Result<(), SpiffeIdError> {
    if td.is_empty() {
        return Err(SpiffeIdError::MissingTrustDomain);
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong { len: td.len() });
    }
    if td.contains('@') {
        return Err(SpiffeIdError::UserInfo);
    }
    if td.contains(':') {
        return Err(SpiffeIdError::Port);
    }
    for (position, ch) in td.chars().enumerate() {
        if !matches!(ch, 'a'..='z' | '0'..='9' | '.' | '-' | '_') {
            return Err(SpiffeIdError::BadTrustDomainChar { ch, position });
        }
    }
    Ok(())
}

fn validate_path(path: &str) -> Result<(), SpiffeIdError> {
    if path.is_empty() {
        return Ok(());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(SpiffeIdError::NoLeadingSlash);
    };
    if rest.is_empty() || path.ends_with('/') {
        return Err(SpiffeIdError::TrailingSlash);
    }
    let mut position = 1;
    for segment in rest.split('/') {
        if segment.is_empty() {
            return Err(SpiffeIdError::EmptySegment);
        }
        if segment == "." || segment == ".." {
            return Err(SpiffeIdError::DotSegment);
        }
        for (offset, ch) in segment.char_indices() {
            if !matches!(ch, 'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_') {
                return Err(SpiffeIdError::BadPathChar { ch, position: position + offset });
            }
        }
        position += segment.len() + 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn valid_ids_round_trip() {
        for input in [
            "spiffe://public",
            "spiffe://public/ns/default/orders",
            "spiffe://cluster.local/ns/prod-1/my_app.v2",
            "spiffe://a-b_c.d/x/Y/z",
        ] {
            let id = SpiffeId::parse(input).unwrap();
            assert_eq!(id.to_string(), input);
            assert_eq!(SpiffeId::parse(&id.to_string()).unwrap(), id);
        }
    }

    #[test]
    fn parts_are_exposed() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/prod/orders").unwrap();
        assert_eq!(id.trust_domain_str(), "cluster.local");
        assert_eq!(id.path(), "/ns/prod/orders");
        let dapr = id.dapr_identity().unwrap();
        assert_eq!((dapr.trust_domain, dapr.namespace, dapr.app_id), ("cluster.local", "prod", "orders"));
        let built = SpiffeId::dapr(&TrustDomain::new("cluster.local").unwrap(), "prod", "orders").unwrap();
        assert_eq!(built, id);
    }

    #[test]
    fn invalid_ids_name_the_violation() {
        use SpiffeIdError::*;
        let long_td = format!("spiffe://{}", "a".repeat(256));
        let long_id = format!("spiffe://td/{}", "a".repeat(2048));
        let cases: &[(&str, SpiffeIdError)] = &[
            ("", Empty),
            ("http://public/ns/a/b", WrongScheme),
            ("SPIFFE://public/ns/a/b", WrongScheme),
            ("spiffe:/public", WrongScheme),
            ("spiffe://", MissingTrustDomain),
            ("spiffe:///ns/a/b", MissingTrustDomain),
            ("spiffe://Public/ns/a/b", BadTrustDomainChar { ch: 'P', position: 0 }),
            ("spiffe://pub lic", BadTrustDomainChar { ch: ' ', position: 3 }),
            ("spiffe://public:443/ns/a/b", Port),
            ("spiffe://user@public/ns/a/b", UserInfo),
            ("spiffe://public/ns/a/b?x=1", Query),
            ("spiffe://public/ns/a/b#frag", Fragment),
            ("spiffe://public/", TrailingSlash),
            ("spiffe://public/ns/a/b/", TrailingSlash),
            ("spiffe://public/ns//b", EmptySegment),
            ("spiffe://public/ns/./b", DotSegment),
            ("spiffe://public/ns/../b", DotSegment),
            ("spiffe://public/ns/a%2Fb/c", BadPathChar { ch: '%', position: 5 }),
            ("spiffe://public/ns/a b", BadPathChar { ch: ' ', position: 5 }),
            (&long_td, TrustDomainTooLong { len: 256 }),
            (&long_id, TooLong { len: long_id.len() }),
        ];
        for (input, expected) in cases {
            assert_eq!(SpiffeId::parse(input).as_ref(), Err(expected), "input {input:?}");
        }
    }

    #[test]
    fn trust_domain_rules() {
        assert!(TrustDomain::new("cluster.local").is_ok());
        assert_eq!(TrustDomain::new(""), Err(SpiffeIdError::MissingTrustDomain));
        assert_eq!(TrustDomain::new("a/b"), Err(SpiffeIdError::BadTrustDomainChar { ch: '/', position: 1 }));
        assert!(
            SpiffeId::dapr(&TrustDomain::new("public").unwrap(), "ns", "bad/app")
                .is_ok_and(|id| id.dapr_identity().is_err())
        );
        assert!(SpiffeId::dapr(&TrustDomain::new("public").unwrap(), "", "app").is_err());
    }

    #[test]
    fn non_dapr_paths_are_not_dapr_identities() {
        for input in ["spiffe://public", "spiffe://public/ns/a", "spiffe://public/x/a/b", "spiffe://public/ns/a/b/c"] {
            assert_eq!(SpiffeId::parse(input).unwrap().dapr_identity(), Err(SpiffeIdError::NotDaprForm));
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_accepted_ids_round_trip(input in "\\PC{0,80}") {
            if let Ok(id) = SpiffeId::parse(&input) {
                prop_assert_eq!(id.as_str(), input.as_str());
                prop_assert_eq!(SpiffeId::parse(id.as_str()).unwrap(), id);
            }
        }

        #[test]
        fn generated_valid_ids_parse(td in "[a-z0-9._-]{1,20}", segs in proptest::collection::vec("[a-zA-Z0-9_-][a-zA-Z0-9._-]{0,8}", 0..5)) {
            let path: String = segs.iter().map(|s| format!("/{s}")).collect();
            let input = format!("spiffe://{td}{path}");
            let id = SpiffeId::parse(&input).unwrap();
            prop_assert_eq!(id.trust_domain_str(), td.as_str());
            prop_assert_eq!(id.path(), path.as_str());
        }
    }
}
