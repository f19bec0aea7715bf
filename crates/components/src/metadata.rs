//! Component metadata as the sidecar hands it over, and the one error type for building a component.
//!
//! Owns: [`ComponentMetadata`] (the already-resolved `spec.metadata` name/value pairs, with secret references
//! already replaced by their values), its typed accessors, and [`ComponentError`].
//!
//! Does not: parse YAML, resolve `secretKeyRef`/`envRef`, or know which file a component came from. The sidecar
//! adds the file and component name when it reports a [`ComponentError`].
//!
//! Metadata values may be passwords, so neither `Debug` output nor any error message built here contains a
//! value; errors name the key only.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

/// A boxed error cause, kept as a `#[source]` rather than flattened into a string.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// The metadata of one component: `spec.metadata` after secret resolution.
///
/// Key lookup is case-insensitive like Dapr's metadata decoder (an exact match wins over a case-insensitive one).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ComponentMetadata(BTreeMap<String, String>);

impl fmt::Debug for ComponentMetadata {
    // Keys only: values may be passwords or tokens.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ComponentMetadata").field("keys", &self.0.keys().collect::<Vec<_>>()).finish()
    }
}

impl From<BTreeMap<String, String>> for ComponentMetadata {
    fn from(map: BTreeMap<String, String>) -> Self {
        Self(map)
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for ComponentMetadata {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self(iter.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }
}

impl ComponentMetadata {
    /// An empty metadata set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces one entry (exact key).
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.insert(key.into(), value.into());
    }

    /// The keys present, as written in the resource.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there is no entry.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The underlying map (for components that pass metadata through, e.g. to a secret store request).
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// The value of `key`, looked up case-insensitively.
    pub fn get(&self, key: &str) -> Option<&str> {
        if let Some(v) = self.0.get(key) {
            return Some(v);
        }
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
    }

    /// The value of the first key of `keys` that is present and non-empty (a key and its Dapr aliases).
    pub fn get_any(&self, keys: &[&str]) -> Option<&str> {
        keys.iter().filter_map(|k| self.get(k)).find(|v| !v.trim().is_empty())
    }

    /// The value of `key`, or `default` when it is absent or empty.
    pub fn get_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        match self.get(key) {
            Some(v) if !v.trim().is_empty() => v,
            _ => default,
        }
    }

    /// The value of a required key; absent or empty is an error naming the key.
    pub fn require(&self, key: &str) -> Result<&str, ComponentError> {
        match self.get(key) {
            Some(v) if !v.trim().is_empty() => Ok(v),
            _ => Err(ComponentError::new(key, "required metadata is missing or empty")),
        }
    }

    /// A boolean: `true/false`, `1/0`, `yes/no`, `y/n`, `on/off`, `t/f` (any case). Absent or empty is `None`.
    ///
    /// Anything else is an error rather than `false`: a typo in a security switch must not silently turn it off.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, ComponentError> {
        let Some(raw) = self.get(key) else {
            return Ok(None);
        };
        match raw.trim().to_ascii_lowercase().as_str() {
            "" => Ok(None),
            "true" | "1" | "yes" | "y" | "on" | "t" => Ok(Some(true)),
            "false" | "0" | "no" | "n" | "off" | "f" => Ok(Some(false)),
            _ => Err(ComponentError::new(key, "expected a boolean (true/false, 1/0, yes/no, on/off)")),
        }
    }

    /// A duration: Go syntax (`500ms`, `5s`, `1m30s`, `1.5h`) or a plain number meaning seconds, like Dapr's
    /// metadata decoder. Absent or empty is `None`.
    pub fn get_duration(&self, key: &str) -> Result<Option<Duration>, ComponentError> {
        let Some(raw) = self.get(key) else {
            return Ok(None);
        };
        let raw = raw.trim();
        if raw.is_empty() {
            return Ok(None);
        }
        parse_duration(raw).map(Some).map_err(|e| ComponentError::new(key, e.to_string()))
    }

    /// An unsigned integer. Absent or empty is `None`.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>, ComponentError> {
        let Some(raw) = self.get(key) else {
            return Ok(None);
        };
        let raw = raw.trim();
        if raw.is_empty() {
            return Ok(None);
        }
        raw.parse::<u64>()
            .map(Some)
            .map_err(|e| ComponentError::new(key, "expected a non-negative integer").with_source(e))
    }
}

/// Why a duration string was refused. Carries no part of the input (it may be a metadata value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not a number followed by a unit, e.g. `5x` or `s`.
    #[error("invalid duration: expected a number of seconds or a Go duration such as 500ms, 5s, 1m30s")]
    Syntax,
    /// A negative duration where none is allowed.
    #[error("invalid duration: must not be negative")]
    Negative,
    /// More than `u64::MAX` nanoseconds-ish; nobody means that.
    #[error("invalid duration: out of range")]
    OutOfRange,
}

/// Parses a Go-style duration (`300ms`, `1.5h`, `2h45m`, units ns/us/µs/ms/s/m/h) or a plain number of seconds.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    if s.starts_with('-') {
        return Err(DurationError::Negative);
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.is_empty() {
        return Err(DurationError::Syntax);
    }
    // A plain number is seconds (Dapr: "ints = seconds"); accept a fraction too.
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs: f64 = s.parse().map_err(|_| DurationError::Syntax)?;
        return Duration::try_from_secs_f64(secs).map_err(|_| DurationError::OutOfRange);
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or(DurationError::Syntax)?;
        if num_len == 0 {
            return Err(DurationError::Syntax);
        }
        let (num, after) = rest.split_at(num_len);
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let value: f64 = num.parse().map_err(|_| DurationError::Syntax)?;
        let nanos_per_unit: f64 = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(DurationError::Syntax),
        };
        let part = Duration::try_from_secs_f64(value * nanos_per_unit / 1e9).map_err(|_| DurationError::OutOfRange)?;
        total = total.checked_add(part).ok_or(DurationError::OutOfRange)?;
        rest = next;
    }
    Ok(total)
}

/// A component could not be built from its metadata.
///
/// `field` names what was wrong: a metadata key (`redisHost`), or a resource path starting with `spec.`
/// (`spec.type`, `spec.version`). [`ComponentError::path`] renders it the way the sidecar reports it:
/// `<file>: Component "<name>": <path>: <message>`. The message never contains a metadata value.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.render())]
pub struct ComponentError {
    /// The metadata key or `spec.`-path at fault, if one is.
    pub field: Option<String>,
    /// What is wrong, without any metadata value.
    pub message: String,
    /// The underlying cause, when there is one (an I/O error opening a file, a connection error…).
    #[source]
    pub source: Option<BoxError>,
}

impl ComponentError {
    /// An error about one metadata key (or `spec.`-path).
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: Some(field.into()), message: message.into(), source: None }
    }

    /// An error about the component as a whole.
    pub fn general(message: impl Into<String>) -> Self {
        Self { field: None, message: message.into(), source: None }
    }

    /// Attaches the cause.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The field as a resource path: `spec.metadata[<key>]` for a metadata key, the `spec.` path as is.
    pub fn path(&self) -> Option<String> {
        self.field.as_ref().map(|f| if f.starts_with("spec.") { f.clone() } else { format!("spec.metadata[{f}]") })
    }

    fn render(&self) -> String {
        match self.path() {
            Some(p) => format!("{p}: {}", self.message),
            None => self.message.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(pairs: &[(&str, &str)]) -> ComponentMetadata {
        pairs.iter().copied().collect()
    }

    #[test]
    fn lookup_is_case_insensitive_and_exact_wins() {
        let m = md(&[("RedisHost", "a:1"), ("redishost", "b:2")]);
        assert_eq!(m.get("redishost"), Some("b:2"));
        assert_eq!(m.get("REDISHOST"), Some("a:1"));
        assert_eq!(m.get("missing"), None);
    }

    #[test]
    fn debug_prints_keys_only() {
        let m = md(&[("redisPassword", "hunter2")]);
        let s = format!("{m:?}");
        assert!(s.contains("redisPassword"));
        assert!(!s.contains("hunter2"));
    }

    #[test]
    fn require_names_the_key_and_never_the_value() {
        let m = md(&[("empty", "  ")]);
        let e = m.require("empty").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("empty"));
        assert_eq!(e.to_string(), "spec.metadata[empty]: required metadata is missing or empty");
        assert!(m.require("absent").is_err());
        let m = md(&[("k", "v")]);
        assert_eq!(m.require("K").unwrap(), "v");
        assert_eq!(m.get_or("nope", "dflt"), "dflt");
    }

    #[test]
    fn booleans() {
        let m = md(&[("a", "TRUE"), ("b", "0"), ("c", "maybe-secret"), ("d", "")]);
        assert_eq!(m.get_bool("a").unwrap(), Some(true));
        assert_eq!(m.get_bool("b").unwrap(), Some(false));
        assert_eq!(m.get_bool("d").unwrap(), None);
        assert_eq!(m.get_bool("zz").unwrap(), None);
        let e = m.get_bool("c").unwrap_err();
        assert!(!e.to_string().contains("maybe-secret"));
    }

    #[test]
    fn durations() {
        let cases: &[(&str, Option<Duration>)] = &[
            ("5s", Some(Duration::from_secs(5))),
            ("1m", Some(Duration::from_secs(60))),
            ("1m30s", Some(Duration::from_secs(90))),
            ("1.5h", Some(Duration::from_secs(5400))),
            ("800ms", Some(Duration::from_millis(800))),
            ("10", Some(Duration::from_secs(10))),
            ("0", Some(Duration::ZERO)),
            ("0.5", Some(Duration::from_millis(500))),
            ("250us", Some(Duration::from_micros(250))),
            ("7ns", Some(Duration::from_nanos(7))),
            ("5x", None),
            ("s", None),
            ("-5s", None),
            ("1..2s", None),
            ("5 s", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_duration(input).ok(), *want, "input {input:?}");
        }
        let m = md(&[("t", "bogus-secret")]);
        let e = m.get_duration("t").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("t"));
        assert!(!e.to_string().contains("bogus-secret"));
    }

    #[test]
    fn integers() {
        let m = md(&[("n", "42"), ("bad", "-1"), ("e", "")]);
        assert_eq!(m.get_u64("n").unwrap(), Some(42));
        assert_eq!(m.get_u64("e").unwrap(), None);
        assert!(m.get_u64("bad").is_err());
    }

    #[test]
    fn spec_paths_are_not_wrapped() {
        let e = ComponentError::new("spec.type", "unknown");
        assert_eq!(e.path().as_deref(), Some("spec.type"));
        assert_eq!(ComponentError::general("boom").to_string(), "boom");
    }
}
