//! `SpiffeId` and `TrustDomain`: values that can only exist if they satisfy the SPIFFE ID specification
//! (<https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md>), plus Dapr's workload form
//! `spiffe://<trust-domain>/ns/<namespace>/<app-id>`.
//!
//! Parsing is strict on purpose: an identity that two parsers could read differently is a way around an
//! authorization rule, so anything the spec does not allow (upper case in the trust domain, percent-encoding,
//! empty or dot segments, ports, user info, queries, fragments) is refused with an error naming the problem.
//!
//! The Dapr form is valid by construction: [`SpiffeId::dapr`] and [`SpiffeId::dapr_identity`] accept a namespace
//! and an app id only if each is one name segment by [`validate_namespace`] / [`validate_app_id`] (self-hosted
//! rules, Dapr's); [`validate_kubernetes_namespace`] / [`validate_kubernetes_app_id`] are the stricter DNS-1123
//! rules for Kubernetes mode. This module does not decide which mode applies; callers do.

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
    #[error(transparent)]
    DaprName(#[from] DaprNameError),
}

/// The two names in a Dapr identity, spelled as the fields of Dapr's `SignCertificateRequest` so that an error
/// message tells the caller which request field to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DaprField {
    Namespace,
    AppId,
}

impl DaprField {
    pub fn as_str(self) -> &'static str {
        match self {
            DaprField::Namespace => "namespace",
            DaprField::AppId => "app_id",
        }
    }
}

impl fmt::Display for DaprField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a namespace or app id cannot be part of a Dapr identity. Never holds the value itself (it may be
/// attacker-sized); only the field, the rule and the first offending character.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DaprNameError {
    #[error("{field} is empty")]
    Empty { field: DaprField },
    #[error("{field} is longer than {max} bytes ({len})")]
    TooLong { field: DaprField, len: usize, max: usize },
    #[error("{field} must not be \".\" or \"..\"")]
    DotSegment { field: DaprField },
    #[error("{field} must not contain '/' (position {position}): it must be one path segment")]
    Slash { field: DaprField, position: usize },
    #[error("{field} must not contain percent-encoding ('%' at position {position})")]
    Percent { field: DaprField, position: usize },
    #[error("{field} character {ch:?} at position {position} is not allowed (only {allowed})")]
    BadChar { field: DaprField, ch: char, position: usize, allowed: &'static str },
}

impl DaprNameError {
    /// Which field the error is about.
    pub fn field(&self) -> DaprField {
        match self {
            DaprNameError::Empty { field }
            | DaprNameError::TooLong { field, .. }
            | DaprNameError::DotSegment { field }
            | DaprNameError::Slash { field, .. }
            | DaprNameError::Percent { field, .. }
            | DaprNameError::BadChar { field, .. } => *field,
        }
    }
}

/// Dapr's sentry refuses app ids over 64 characters (`pkg/sentry/server/validator/internal/common.go`); ward uses
/// the same limit for namespaces so both names of an identity follow one rule.
pub const MAX_DAPR_NAME_LEN: usize = 64;
/// A DNS-1123 label (Kubernetes namespace) is at most 63 characters.
const DNS1123_LABEL_MAX: usize = 63;
/// Dapr's Kubernetes rule checks `<app-id>-dapr` (the app's Service name) as a DNS-1123 label.
const KUBERNETES_APP_ID_SUFFIX: &str = "-dapr";

const SELF_HOSTED_APP_ID_CHARS: &str = "A-Z, a-z, 0-9, '-', '_'";
const SELF_HOSTED_NAMESPACE_CHARS: &str = "A-Z, a-z, 0-9, '-', '_', '.'";
const DNS1123_CHARS: &str = "a-z, 0-9, '-'; starting and ending with a-z or 0-9";

/// Self-hosted rule for an app id, Dapr's: non-empty, no `.` (`pkg/validation` `ValidateSelfHostedAppID`), at most
/// 64 bytes (sentry), and only characters a SPIFFE path segment may hold (go-spiffe's `FromSegments`, which Dapr's
/// sentry uses to build the ID): so `A-Z a-z 0-9 - _`. Upper case and ids like `-` are accepted, as in Dapr.
pub fn validate_app_id(app_id: &str) -> Result<(), DaprNameError> {
    validate_segment(
        DaprField::AppId,
        app_id,
        |ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_'),
        SELF_HOSTED_APP_ID_CHARS,
    )
}

/// Self-hosted rule for a namespace: one SPIFFE path segment (`A-Z a-z 0-9 - _ .`, not `.` or `..`, as go-spiffe's
/// `FromSegments` in Dapr's sentry), non-empty (Dapr's sentry requires it), at most 64 bytes.
pub fn validate_namespace(namespace: &str) -> Result<(), DaprNameError> {
    validate_segment(
        DaprField::Namespace,
        namespace,
        |ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'),
        SELF_HOSTED_NAMESPACE_CHARS,
    )
}

/// Kubernetes rule for an app id (Dapr's `ValidateKubernetesAppID`): `<app-id>-dapr` must be a DNS-1123 label, so
/// lower-case alphanumerics and `-`, starting with an alphanumeric, at most 58 characters. For the Kubernetes
/// mode to come; self-hosted mode uses [`validate_app_id`].
pub fn validate_kubernetes_app_id(app_id: &str) -> Result<(), DaprNameError> {
    validate_app_id(app_id)?;
    validate_dns1123_label(DaprField::AppId, &format!("{app_id}{KUBERNETES_APP_ID_SUFFIX}")).map_err(|err| match err {
        // Report the limit on the app id itself, not on the derived Service name.
        DaprNameError::TooLong { field, .. } => {
            DaprNameError::TooLong { field, len: app_id.len(), max: DNS1123_LABEL_MAX - KUBERNETES_APP_ID_SUFFIX.len() }
        }
        other => other,
    })
}

/// Kubernetes rule for a namespace: a DNS-1123 label (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters).
pub fn validate_kubernetes_namespace(namespace: &str) -> Result<(), DaprNameError> {
    validate_dns1123_label(DaprField::Namespace, namespace)
}

fn validate_dns1123_label(field: DaprField, value: &str) -> Result<(), DaprNameError> {
    if value.is_empty() {
        return Err(DaprNameError::Empty { field });
    }
    if value.len() > DNS1123_LABEL_MAX {
        return Err(DaprNameError::TooLong { field, len: value.len(), max: DNS1123_LABEL_MAX });
    }
    let last = value.chars().count() - 1;
    for (position, ch) in value.chars().enumerate() {
        let edge = position == 0 || position == last;
        let ok = ch.is_ascii_lowercase() || ch.is_ascii_digit() || (ch == '-' && !edge);
        if !ok {
            return Err(slash_percent_or_bad(field, ch, position, DNS1123_CHARS));
        }
    }
    Ok(())
}

fn validate_segment(
    field: DaprField,
    value: &str,
    allowed: impl Fn(char) -> bool,
    allowed_text: &'static str,
) -> Result<(), DaprNameError> {
    if value.is_empty() {
        return Err(DaprNameError::Empty { field });
    }
    // Length first: the character scan below must not walk an attacker-sized value to report something else.
    if value.len() > MAX_DAPR_NAME_LEN {
        return Err(DaprNameError::TooLong { field, len: value.len(), max: MAX_DAPR_NAME_LEN });
    }
    if value == "." || value == ".." {
        return Err(DaprNameError::DotSegment { field });
    }
    for (position, ch) in value.chars().enumerate() {
        if !allowed(ch) {
            return Err(slash_percent_or_bad(field, ch, position, allowed_text));
        }
    }
    Ok(())
}

/// The precise error for a refused character: `/` and `%` get their own variants because they are the ways to
/// forge another path, and callers (and tests) should see that named.
fn slash_percent_or_bad(field: DaprField, ch: char, position: usize, allowed: &'static str) -> DaprNameError {
    match ch {
        '/' => DaprNameError::Slash { field, position },
        '%' => DaprNameError::Percent { field, position },
        _ => DaprNameError::BadChar { field, ch, position, allowed },
    }
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
        Self::from_path_pieces(trust_domain, &[path])
    }

    /// `spiffe://<td>` followed by `pieces` concatenated, the path validated. Built into one buffer: the caller's
    /// sidecar names its callee this way on every invocation.
    fn from_path_pieces(trust_domain: &TrustDomain, pieces: &[&str]) -> Result<Self, SpiffeIdError> {
        let path_start = SCHEME_PREFIX.len() + trust_domain.as_str().len();
        let mut uri = String::with_capacity(path_start + pieces.iter().map(|p| p.len()).sum::<usize>());
        uri.push_str(SCHEME_PREFIX);
        uri.push_str(trust_domain.as_str());
        for piece in pieces {
            uri.push_str(piece);
        }
        validate_path(&uri[path_start..])?;
        if uri.len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong { len: uri.len() });
        }
        Ok(Self { path_start, uri })
    }

    /// Dapr's workload identity `spiffe://<td>/ns/<namespace>/<app-id>`. The namespace and the app id must each
    /// be one name segment ([`validate_namespace`], [`validate_app_id`]): formatting is only safe once neither can
    /// add a segment of its own (`x/ns/prod/admin`) or be read differently by another parser.
    pub fn dapr(trust_domain: &TrustDomain, namespace: &str, app_id: &str) -> Result<Self, SpiffeIdError> {
        validate_namespace(namespace)?;
        validate_app_id(app_id)?;
        Self::from_path_pieces(trust_domain, &["/ns/", namespace, "/", app_id])
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

    /// Reads the namespace and app-id out of a Dapr-form identity. Both must pass the same rules
    /// [`SpiffeId::dapr`] applies, so a `DaprIdentity` is one [`SpiffeId::dapr`] could have built (a certificate
    /// from another CA that does not follow them is not a Dapr identity).
    pub fn dapr_identity(&self) -> Result<DaprIdentity<'_>, SpiffeIdError> {
        let mut segments = self.path().strip_prefix('/').unwrap_or_default().split('/');
        match (segments.next(), segments.next(), segments.next(), segments.next()) {
            (Some("ns"), Some(namespace), Some(app_id), None) => {
                validate_namespace(namespace)?;
                validate_app_id(app_id)?;
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
        assert!(SpiffeId::dapr(&TrustDomain::new("public").unwrap(), "", "app").is_err());
    }

    /// Issue 26 defect 1: the Dapr constructor cannot format an ID whose path reads like another namespace.
    #[test]
    fn dapr_ids_are_valid_by_construction() {
        use DaprField::*;
        use DaprNameError::*;
        let td = TrustDomain::new("public").unwrap();
        let cases: &[(&str, &str, DaprNameError)] = &[
            ("default", "x/ns/prod/admin", Slash { field: AppId, position: 1 }),
            ("a/b", "allowed-app", Slash { field: Namespace, position: 1 }),
            ("", "app", Empty { field: Namespace }),
            ("default", "", Empty { field: AppId }),
            (".", "app", DotSegment { field: Namespace }),
            ("..", "app", DotSegment { field: Namespace }),
            ("default", ".", DotSegment { field: AppId }),
            ("default", "..", DotSegment { field: AppId }),
            ("default", "a.b", BadChar { field: AppId, ch: '.', position: 1, allowed: SELF_HOSTED_APP_ID_CHARS }),
            ("default", "a%2Fb", Percent { field: AppId, position: 1 }),
            ("a%2e", "app", Percent { field: Namespace, position: 1 }),
            ("default", "a b", BadChar { field: AppId, ch: ' ', position: 1, allowed: SELF_HOSTED_APP_ID_CHARS }),
            (
                "default",
                "caf\u{e9}",
                BadChar { field: AppId, ch: '\u{e9}', position: 3, allowed: SELF_HOSTED_APP_ID_CHARS },
            ),
            ("ns\n", "app", BadChar { field: Namespace, ch: '\n', position: 2, allowed: SELF_HOSTED_NAMESPACE_CHARS }),
            (&"n".repeat(65), "app", TooLong { field: Namespace, len: 65, max: 64 }),
            ("default", &"a".repeat(65), TooLong { field: AppId, len: 65, max: 64 }),
        ];
        for (namespace, app_id, expected) in cases {
            let got = SpiffeId::dapr(&td, namespace, app_id);
            assert_eq!(got, Err(SpiffeIdError::DaprName(expected.clone())), "{namespace:?} / {app_id:?}");
            assert_eq!(expected.field(), if expected.to_string().starts_with("app_id") { AppId } else { Namespace });
        }
        // Self-hosted accepts what Dapr's self-hosted mode accepts, upper case and lone '-' included.
        for (namespace, app_id) in [
            ("default", "orders"),
            ("DEFAULT", "Orders_V2"),
            ("-", "-"),
            ("prod.eu", "a"),
            (&"n".repeat(64)[..], &"a".repeat(64)[..]),
        ] {
            let id = SpiffeId::dapr(&td, namespace, app_id).unwrap();
            let d = id.dapr_identity().unwrap();
            assert_eq!((d.namespace, d.app_id), (namespace, app_id));
        }
    }

    #[test]
    fn parsed_ids_with_invalid_dapr_names_are_not_dapr_identities() {
        for input in ["spiffe://public/ns/default/a.b", "spiffe://public/ns/../app", "spiffe://public/ns/default/.."] {
            let parsed = SpiffeId::parse(input);
            assert!(
                parsed.as_ref().is_err()
                    || matches!(parsed.as_ref().map(|id| id.dapr_identity()), Ok(Err(SpiffeIdError::DaprName(_)))),
                "{input}"
            );
        }
        let id = SpiffeId::parse("spiffe://public/ns/default/a.b").unwrap();
        assert!(matches!(id.dapr_identity(), Err(SpiffeIdError::DaprName(DaprNameError::BadChar { .. }))));
    }

    /// The stricter rule for Kubernetes mode (DNS-1123, Dapr's `ValidateKubernetesAppID`), as a table.
    #[test]
    fn kubernetes_names_are_dns1123_labels() {
        let app_ids: &[(&str, bool)] = &[
            ("orders", true),
            ("orders-v2", true),
            ("a", true),
            ("a-", true), // "a--dapr" is a valid label, as in Dapr
            ("0abc", true),
            (&"a".repeat(58), true),
            (&"a".repeat(59), false),
            ("", false),
            ("-", false),
            ("-orders", false),
            ("DEFAULT", false),
            ("Orders", false),
            ("my_app", false),
            ("a.b", false),
            ("a/b", false),
            ("a%2f", false),
        ];
        for (app_id, ok) in app_ids {
            assert_eq!(validate_kubernetes_app_id(app_id).is_ok(), *ok, "app id {app_id:?}");
            if let Err(err) = validate_kubernetes_app_id(app_id) {
                assert_eq!(err.field(), DaprField::AppId);
            }
        }
        let namespaces: &[(&str, bool)] = &[
            ("default", true),
            ("dapr-system", true),
            ("a", true),
            ("1", true),
            (&"n".repeat(63), true),
            (&"n".repeat(64), false),
            ("", false),
            ("-", false),
            ("ns-", false),
            ("-ns", false),
            ("DEFAULT", false),
            ("prod.eu", false),
            ("a_b", false),
            ("a/b", false),
            ("..", false),
        ];
        for (namespace, ok) in namespaces {
            assert_eq!(validate_kubernetes_namespace(namespace).is_ok(), *ok, "namespace {namespace:?}");
        }
        assert_eq!(
            validate_kubernetes_app_id(&"a".repeat(59)),
            Err(DaprNameError::TooLong { field: DaprField::AppId, len: 59, max: 58 })
        );
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

        /// Whatever two strings are given, `dapr` either refuses them or builds an ID that reads back as exactly
        /// those two names: no input can add or remove a segment.
        #[test]
        fn dapr_builds_exactly_the_requested_names_or_nothing(namespace in "[a-zA-Z0-9./%_ -]{0,10}|\\PC{0,70}", app_id in "[a-zA-Z0-9./%_ -]{0,10}|\\PC{0,70}") {
            let td = TrustDomain::new("public").unwrap();
            if let Ok(id) = SpiffeId::dapr(&td, &namespace, &app_id) {
                let d = id.dapr_identity().unwrap();
                prop_assert_eq!(d.namespace, namespace.as_str());
                prop_assert_eq!(d.app_id, app_id.as_str());
            }
        }
    }
}
