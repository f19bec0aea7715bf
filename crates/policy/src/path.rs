//! Method-path normalisation at the edge of service invocation (CVE-2026-41491 and its kind).
//!
//! Owns: turning the still-encoded method part of an invoke URL (`/v1.0/invoke/{id}/method/<raw>`) or a gRPC
//! full method name into one canonical value. That single value is what the ACL judges *and* what is forwarded
//! to the app, so the two can never disagree. Every ambiguous form (encoded `/`, backslash, double encoding, `..`
//! above the method root, `#`, `?`, control characters) is refused with its own [`PathError`] variant instead of
//! being guessed at.
//!
//! Does not own: splitting the query string off (the URL parser does that), routing, or the ACL itself
//! ([`crate::acl`]). Nothing here allocates more than the output string.
//!
//! Deviations from Dapr's `pkg/messaging/method/normalize.go`, all deliberate:
//! - a `..` that would climb above the method root is refused ([`PathError::EscapesRoot`]); Dapr strips it;
//! - a trailing `/` is removed; Dapr keeps one;
//! - `%2F`, `%5C`, a literal `\` and any `%` left after decoding (`%25…`) are refused; Dapr decodes them;
//! - gRPC methods must be exactly `/service/method`; Dapr only rejects forbidden characters.

use std::fmt;

/// Why a method path was refused. Offsets are byte offsets into the raw input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A `%` not followed by two hex digits.
    #[error("invalid percent-encoding at byte {offset}")]
    InvalidPercentEncoding { offset: usize },
    /// `%2F`: an encoded separator would make one segment look like two (or vice versa) to different readers.
    #[error("encoded '/' at byte {offset}")]
    EncodedSlash { offset: usize },
    /// A literal `\` or `%5C`: some servers treat it as a separator.
    #[error("backslash at byte {offset}")]
    Backslash { offset: usize },
    /// A `%` that is still present after decoding once (`%252F`, `%2525`): a second decoder downstream would see
    /// a different path than the ACL did.
    #[error("double percent-encoding at byte {offset}")]
    DoubleEncoding { offset: usize },
    /// `#`, `?`, NUL or another control character (0x00–0x1F, 0x7F) after decoding.
    #[error("forbidden character {ch:?}")]
    ForbiddenCharacter { ch: char },
    /// The decoded bytes are not UTF-8.
    #[error("method is not valid UTF-8 after percent-decoding")]
    InvalidUtf8,
    /// A `..` segment would climb above the method root.
    #[error("'..' escapes the method root")]
    EscapesRoot,
    /// Nothing is left after normalisation.
    #[error("empty method")]
    Empty,
    /// A gRPC method name must start with `/`.
    #[error("gRPC method does not start with '/'")]
    MissingLeadingSlash,
    /// A gRPC method name must be exactly `/service/method`.
    #[error("gRPC method has {segments} segments, expected 2 (/service/method)")]
    WrongSegmentCount { segments: usize },
    /// A gRPC method name with an empty service or method.
    #[error("gRPC method has an empty segment")]
    EmptySegment,
    /// A gRPC method name whose service or method is `.` or `..`.
    #[error("gRPC method has a dot segment")]
    DotSegment,
    /// A non-ASCII character that Unicode case mapping or NFKC normalisation turns into (a string containing) an
    /// ASCII letter, digit or one of `/ . % \\ # ? ;`, e.g. `ı` (U+0131, upper-cases to `I`), `ſ` (U+017F,
    /// upper-cases to `S`), `K` (U+212A, lower-cases to `k`), fullwidth `Ａ` (U+FF21, NFKC `A`), `ß` (upper-cases
    /// to `SS`). An app that folds or normalises the path could route such a method to a rule the ACL never
    /// matched (issue 12 row 8), so it is refused like every other ambiguous spelling.
    #[error("character {ch:?} could be read as ASCII by case folding or NFKC")]
    AsciiConfusable { ch: char },
}

/// A normalised HTTP invocation method: no leading or trailing `/`, no empty, `.` or `..` segments, no `%`, `\`,
/// `#`, `?` or control characters. Example: `orders/1`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MethodPath(String);

impl MethodPath {
    /// The decoded method, as the ACL judges it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path to put in the URL forwarded to the app, with a leading `/`. Each segment is percent-encoded so
    /// that an app decoding the path once receives exactly `/` + [`Self::as_str`].
    ///
    /// RFC 3986 `pchar` characters are kept except `;`, which is encoded because servlet-style servers strip
    /// `;params` from segments before routing and would otherwise route to a path the ACL never saw, and `+`,
    /// which some decoders turn into a space.
    pub fn to_uri_path(&self) -> String {
        let mut out = String::with_capacity(self.0.len() + 1);
        for segment in self.0.split('/') {
            out.push('/');
            for &b in segment.as_bytes() {
                if keeps_literal(b) {
                    out.push(char::from(b));
                } else {
                    out.push('%');
                    out.push(hex_upper(b >> 4));
                    out.push(hex_upper(b & 0x0f));
                }
            }
        }
        out
    }

    /// Consumes the value, returning the decoded method.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for MethodPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for MethodPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A checked gRPC full method name, `/package.Service/Method`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GrpcMethod(String);

impl GrpcMethod {
    /// The full method name, e.g. `/pkg.Service/Method`; this is what the ACL judges for gRPC apps.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The service part, e.g. `pkg.Service`.
    pub fn service(&self) -> &str {
        self.split().0
    }

    /// The method part, e.g. `Method`.
    pub fn method(&self) -> &str {
        self.split().1
    }

    fn split(&self) -> (&str, &str) {
        // The constructor guarantees exactly "/service/method"; the fallbacks are unreachable but keep this total.
        let rest = self.0.strip_prefix('/').unwrap_or(&self.0);
        rest.split_once('/').unwrap_or((rest, ""))
    }
}

impl fmt::Display for GrpcMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for GrpcMethod {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Normalises the still-percent-encoded method part of an HTTP invoke URL (the text after
/// `/v1.0/invoke/{id}/method/`, query already split off).
///
/// Steps: decode `%XX` exactly once (refusing encoded `/`, `\`, and any `%` that survives), refuse forbidden
/// characters and invalid UTF-8, then resolve segments: empty and `.` segments vanish, `..` removes the previous
/// segment and is refused if there is none.
pub fn normalize_http_method(raw: &str) -> Result<MethodPath, PathError> {
    let decoded = percent_decode_once(raw.as_bytes())?;
    if let Some(&b) = decoded.iter().find(|&&b| is_forbidden_byte(b)) {
        return Err(PathError::ForbiddenCharacter { ch: char::from(b) });
    }
    let decoded = String::from_utf8(decoded).map_err(|_| PathError::InvalidUtf8)?;
    refuse_ascii_confusables(&decoded)?;

    let mut kept: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                if kept.pop().is_none() {
                    return Err(PathError::EscapesRoot);
                }
            }
            other => kept.push(other),
        }
    }
    if kept.is_empty() {
        return Err(PathError::Empty);
    }
    Ok(MethodPath(kept.join("/")))
}

/// Checks a gRPC full method name (`/package.Service/Method`). `%` is an ordinary character here: gRPC method
/// names are never percent-decoded, so there is nothing to decode twice.
pub fn normalize_grpc_method(raw: &str) -> Result<GrpcMethod, PathError> {
    if let Some(&b) = raw.as_bytes().iter().find(|&&b| is_forbidden_byte(b)) {
        return Err(PathError::ForbiddenCharacter { ch: char::from(b) });
    }
    if let Some(offset) = raw.find('\\') {
        return Err(PathError::Backslash { offset });
    }
    refuse_ascii_confusables(raw)?;
    let rest = raw.strip_prefix('/').ok_or(PathError::MissingLeadingSlash)?;
    let segments = rest.split('/').count();
    if segments != 2 {
        return Err(PathError::WrongSegmentCount { segments });
    }
    for segment in rest.split('/') {
        match segment {
            "" => return Err(PathError::EmptySegment),
            "." | ".." => return Err(PathError::DotSegment),
            _ => {}
        }
    }
    Ok(GrpcMethod(raw.to_owned()))
}

/// Refuses the first non-ASCII character of `s` that could be read as ASCII (see [`PathError::AsciiConfusable`]).
fn refuse_ascii_confusables(s: &str) -> Result<(), PathError> {
    match ascii_confusable(s) {
        Some(ch) => Err(PathError::AsciiConfusable { ch }),
        None => Ok(()),
    }
}

/// The first character of `s` that normalisation refuses as [`PathError::AsciiConfusable`], if any. An ACL
/// operation name containing one can never match a method (`ward policy lint` warns about it).
pub fn ascii_confusable(s: &str) -> Option<char> {
    s.chars().find(|&c| maps_onto_ascii(c))
}

/// Whether some combination of NFKC normalisation, full lower-casing and full upper-casing (the mappings apps and
/// frameworks apply when they match routes case-insensitively or normalise Unicode) turns `c` into a string that
/// contains an ASCII character a route could depend on.
///
/// Why a closure over three steps rather than one table: case folding (CaseFolding.txt) is lower(upper(c)) for
/// every character that maps to ASCII, and NFKC may be applied before or after case mapping; three rounds cover
/// every order of these operations (they reach a fixed point after two for all of Unicode 16, which a test checks
/// by scanning every scalar value). Only non-ASCII characters get here, so the ASCII hot path never allocates.
fn maps_onto_ascii(c: char) -> bool {
    maps_onto_ascii_within(c, 3)
}

fn maps_onto_ascii_within(c: char, rounds: usize) -> bool {
    use unicode_normalization::UnicodeNormalization;

    if c.is_ascii() {
        return false;
    }
    let mut frontier = vec![c.to_string()];
    for _ in 0..rounds {
        let mut next = Vec::with_capacity(frontier.len() * 3);
        for s in &frontier {
            for mapped in [s.nfkc().collect::<String>(), s.to_lowercase(), s.to_uppercase()] {
                if mapped.chars().any(is_route_relevant_ascii) {
                    return true;
                }
                if mapped != *s && !next.contains(&mapped) {
                    next.push(mapped);
                }
            }
        }
        if next.is_empty() {
            return false;
        }
        frontier = next;
    }
    false
}

/// ASCII characters whose appearance after folding could change which route or rule a method hits.
fn is_route_relevant_ascii(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '%' | '\\' | '#' | '?' | ';')
}

fn is_forbidden_byte(b: u8) -> bool {
    b < 0x20 || b == 0x7f || b == b'#' || b == b'?'
}

fn percent_decode_once(raw: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        match b {
            b'\\' => return Err(PathError::Backslash { offset: i }),
            b'%' => {
                let hi = raw.get(i + 1).copied().and_then(hex_value);
                let lo = raw.get(i + 2).copied().and_then(hex_value);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathError::InvalidPercentEncoding { offset: i });
                };
                match (hi << 4) | lo {
                    b'/' => return Err(PathError::EncodedSlash { offset: i }),
                    b'\\' => return Err(PathError::Backslash { offset: i }),
                    b'%' => return Err(PathError::DoubleEncoding { offset: i }),
                    decoded => out.push(decoded),
                }
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn hex_upper(nibble: u8) -> char {
    char::from(b"0123456789ABCDEF".get(usize::from(nibble & 0x0f)).copied().unwrap_or(b'0'))
}

fn keeps_literal(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'_' | b'~' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b',' | b'=' | b':' | b'@'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Case {
        name: &'static str,
        raw: &'static str,
        expected: Result<&'static str, PathError>,
    }

    #[test]
    fn http_method_table() {
        use PathError::*;
        let cases = [
            Case { name: "plain", raw: "orders/1", expected: Ok("orders/1") },
            Case { name: "leading slash dropped", raw: "/orders", expected: Ok("orders") },
            Case { name: "decodes once", raw: "path%72", expected: Ok("pathr") },
            Case { name: "lower-case hex", raw: "a%7ab", expected: Ok("azb") },
            Case { name: "utf-8 decoded", raw: "caf%C3%A9", expected: Ok("café") },
            Case { name: "double slash collapses", raw: "a//b", expected: Ok("a/b") },
            Case { name: "leading slashes collapse", raw: "///path", expected: Ok("path") },
            Case { name: "dot segment removed", raw: "a/./b", expected: Ok("a/b") },
            Case { name: "encoded dot segment removed", raw: "a/%2E/b", expected: Ok("a/b") },
            Case { name: "dotdot resolves", raw: "a/b/../c", expected: Ok("a/c") },
            Case { name: "encoded dotdot resolves", raw: "a/b/%2e%2E/c", expected: Ok("a/c") },
            Case { name: "trailing slash removed", raw: "a/b/", expected: Ok("a/b") },
            Case { name: "dots inside a segment are literal", raw: "a/..b/c..", expected: Ok("a/..b/c..") },
            Case { name: "space is allowed", raw: "a%20b", expected: Ok("a b") },
            Case { name: "lone percent", raw: "a%", expected: Err(InvalidPercentEncoding { offset: 1 }) },
            Case { name: "percent one digit", raw: "a%4", expected: Err(InvalidPercentEncoding { offset: 1 }) },
            Case { name: "percent non-hex", raw: "%zz", expected: Err(InvalidPercentEncoding { offset: 0 }) },
            Case { name: "encoded slash upper", raw: "admin%2F..%2Fpublic", expected: Err(EncodedSlash { offset: 5 }) },
            Case { name: "encoded slash lower", raw: "a%2fb", expected: Err(EncodedSlash { offset: 1 }) },
            Case { name: "literal backslash", raw: "a\\b", expected: Err(Backslash { offset: 1 }) },
            Case { name: "encoded backslash", raw: "a%5Cb", expected: Err(Backslash { offset: 1 }) },
            Case { name: "double encoded slash", raw: "a%252Fb", expected: Err(DoubleEncoding { offset: 1 }) },
            Case { name: "double encoded percent", raw: "a%2525", expected: Err(DoubleEncoding { offset: 1 }) },
            Case { name: "encoded hash", raw: "a%23b", expected: Err(ForbiddenCharacter { ch: '#' }) },
            Case { name: "encoded question mark", raw: "a%3Fb", expected: Err(ForbiddenCharacter { ch: '?' }) },
            Case { name: "literal hash", raw: "a#b", expected: Err(ForbiddenCharacter { ch: '#' }) },
            Case { name: "encoded nul", raw: "a%00", expected: Err(ForbiddenCharacter { ch: '\0' }) },
            Case { name: "literal nul", raw: "a\0", expected: Err(ForbiddenCharacter { ch: '\0' }) },
            Case { name: "encoded newline", raw: "a%0Ab", expected: Err(ForbiddenCharacter { ch: '\n' }) },
            Case { name: "encoded del", raw: "a%7F", expected: Err(ForbiddenCharacter { ch: '\u{7f}' }) },
            Case { name: "invalid utf-8", raw: "a%FF", expected: Err(InvalidUtf8) },
            Case { name: "overlong utf-8 slash", raw: "a%C0%AFb", expected: Err(InvalidUtf8) },
            Case { name: "dotdot at root", raw: "../admin", expected: Err(EscapesRoot) },
            Case { name: "dotdot climbs out later", raw: "a/../../admin", expected: Err(EscapesRoot) },
            Case { name: "encoded dotdot at root", raw: "%2e%2e/admin", expected: Err(EscapesRoot) },
            Case { name: "empty", raw: "", expected: Err(Empty) },
            Case { name: "only slashes", raw: "//", expected: Err(Empty) },
            Case { name: "only dot", raw: ".", expected: Err(Empty) },
            Case { name: "resolves to nothing", raw: "a/..", expected: Err(Empty) },
            // Issue 12 row 8: characters that Unicode case mapping or NFKC turns into ASCII.
            Case { name: "dotless i", raw: "adm%C4%B1n", expected: Err(AsciiConfusable { ch: '\u{131}' }) },
            Case { name: "long s", raw: "%C5%BFecret", expected: Err(AsciiConfusable { ch: '\u{17f}' }) },
            Case { name: "kelvin sign", raw: "%E2%84%AAey", expected: Err(AsciiConfusable { ch: '\u{212a}' }) },
            Case { name: "fullwidth A", raw: "%EF%BC%A1dmin", expected: Err(AsciiConfusable { ch: '\u{ff21}' }) },
            Case { name: "fullwidth solidus", raw: "a%EF%BC%8Fb", expected: Err(AsciiConfusable { ch: '\u{ff0f}' }) },
            Case {
                name: "literal fullwidth a",
                raw: "\u{ff41}dmin",
                expected: Err(AsciiConfusable { ch: '\u{ff41}' }),
            },
            Case { name: "ligature ff", raw: "%EF%AC%80", expected: Err(AsciiConfusable { ch: '\u{fb00}' }) },
            Case { name: "sharp s folds to ss", raw: "pa%C3%9Fword", expected: Err(AsciiConfusable { ch: '\u{df}' }) },
            Case { name: "dotted capital I", raw: "%C4%B0d", expected: Err(AsciiConfusable { ch: '\u{130}' }) },
            Case { name: "superscript two", raw: "v%C2%B2", expected: Err(AsciiConfusable { ch: '\u{b2}' }) },
            Case {
                name: "mathematical bold a",
                raw: "%F0%9D%90%9Admin",
                expected: Err(AsciiConfusable { ch: '\u{1d41a}' }),
            },
            Case {
                name: "one dot leader",
                raw: "a/%E2%80%A4%E2%80%A4/b",
                expected: Err(AsciiConfusable { ch: '\u{2024}' }),
            },
            Case { name: "accented letters stay", raw: "caf%C3%A9/%C3%84%C3%96", expected: Ok("café/ÄÖ") },
            Case { name: "cjk stays", raw: "%E4%B8%AD", expected: Ok("中") },
            Case { name: "greek stays", raw: "%CE%A9", expected: Ok("Ω") },
        ];
        for case in cases {
            let got = normalize_http_method(case.raw);
            let got = got.as_ref().map(MethodPath::as_str).map_err(Clone::clone);
            assert_eq!(got, case.expected, "case {:?}", case.name);
        }
    }

    /// The closure in [`maps_onto_ascii`] is deep enough: more rounds refuse nothing more, over every scalar value.
    /// Also pins the size of the refused set so a Unicode-table update that changes it is noticed.
    #[test]
    fn confusable_closure_is_complete() {
        let mut refused = 0usize;
        for c in (0x80..=0x10FFFF_u32).filter_map(char::from_u32) {
            let shallow = maps_onto_ascii(c);
            assert_eq!(shallow, maps_onto_ascii_within(c, 6), "{c:?} (U+{:04X})", u32::from(c));
            refused += usize::from(shallow);
        }
        assert!((1000..5000).contains(&refused), "{refused} characters refused");
        assert_eq!(ascii_confusable("/ſecret/x"), Some('ſ'));
        assert_eq!(ascii_confusable("/café/x"), None);
        for c in ['é', 'Ä', 'ö', 'ñ', 'Ω', 'ж', '中', 'ア', '\u{301}', '\u{a0}', '€'] {
            assert!(!maps_onto_ascii(c), "{c:?} must stay usable");
        }
    }

    #[test]
    fn uri_path_round_trips_through_one_decode() {
        let raws = ["orders/1", "caf%C3%A9/x", "a%20b", "semi%3Bcolon", "a%41b", "~user/(x)", "q%22uote/%3C%3E"];
        for raw in raws {
            let path = normalize_http_method(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            let uri = path.to_uri_path();
            let once = decode_for_test(&uri);
            assert_eq!(once, format!("/{}", path.as_str()), "{raw} -> {uri}");
            assert_eq!(normalize_http_method(&uri).as_ref(), Ok(&path), "{raw} -> {uri}");
        }
    }

    #[test]
    fn uri_path_encodes_what_it_must() {
        let path = normalize_http_method("a%20b/c;d/%C3%A9/x%3Dy+z").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(path.to_uri_path(), "/a%20b/c%3Bd/%C3%A9/x=y%2Bz");
        assert_eq!(path.to_string(), path.as_str());
        assert_eq!(path.into_string(), "a b/c;d/é/x=y+z");
    }

    fn decode_for_test(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn grpc_method_table() {
        use PathError::*;
        let cases: [(&str, &str, Result<&str, PathError>); 14] = [
            ("plain", "/pkg.Service/Method", Ok("/pkg.Service/Method")),
            ("percent is literal", "/pkg.Service/Me%2Fthod", Ok("/pkg.Service/Me%2Fthod")),
            ("case kept", "/Pkg.SVC/DoIt", Ok("/Pkg.SVC/DoIt")),
            ("no leading slash", "pkg.Service/Method", Err(MissingLeadingSlash)),
            ("one segment", "/pkg.Service", Err(WrongSegmentCount { segments: 1 })),
            ("three segments", "/a/b/c", Err(WrongSegmentCount { segments: 3 })),
            ("trailing slash", "/a/b/", Err(WrongSegmentCount { segments: 3 })),
            ("empty service", "//Method", Err(EmptySegment)),
            ("empty method", "/svc/", Err(EmptySegment)),
            ("dot segment", "/./Method", Err(DotSegment)),
            ("dotdot segment", "/svc/..", Err(DotSegment)),
            ("hash", "/svc/M#x", Err(ForbiddenCharacter { ch: '#' })),
            ("nul", "/svc/M\0", Err(ForbiddenCharacter { ch: '\0' })),
            ("backslash", "/svc\\x/M", Err(Backslash { offset: 4 })),
        ];
        for (name, raw, expected) in cases {
            let got = normalize_grpc_method(raw);
            let got = got.as_ref().map(GrpcMethod::as_str).map_err(Clone::clone);
            assert_eq!(got, expected, "case {name:?}");
        }
        assert!(matches!(normalize_grpc_method("/svc/M?x"), Err(ForbiddenCharacter { ch: '?' })));
        assert!(matches!(normalize_grpc_method(""), Err(MissingLeadingSlash)));
        let m = normalize_grpc_method("/pkg.Service/Method").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((m.service(), m.method()), ("pkg.Service", "Method"));
    }
}
