//! Turning file bytes into YAML documents and documents into typed raw structs.
//!
//! Parsing happens in two steps. serde-saphyr parses each `---` document into a generic tree (`serde_json::Value`),
//! which lets us read `apiVersion`/`kind` first and pick the type; the chosen raw struct is then deserialized from
//! that tree through `serde_path_to_error`, so a wrong value reports its path (`spec.mtls.enabled`). The detour also
//! mirrors Dapr, which converts YAML to JSON before decoding, so scalar values get the same string form
//! (`1.50` → `1.5`).
//!
//! Owns: the parser options (no snippets of the file in errors, duplicate keys refused, alias budget), redaction of
//! values from serde's messages, the scalar→string rule. Does not know any resource's schema.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{ConfigError, Location, ResourceId};

/// Resource files are small hand-written YAML; anything this big is a mistake (or an attack on memory).
pub(crate) const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;

/// One non-empty YAML document of a file.
#[derive(Debug)]
pub(crate) struct Document {
    /// 1-based position among the file's non-empty documents.
    pub index: usize,
    pub value: Value,
}

/// Parse all documents of `text`. Errors name `path` and, when the parser knows it, the line and column.
pub(crate) fn parse_documents(path: &Path, bytes: &[u8]) -> Result<Vec<Document>, ConfigError> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(yaml_error(path, None, format!("file is larger than {} bytes", MAX_FILE_BYTES)));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| yaml_error(path, None, format!("not valid UTF-8 after byte {}", e.valid_up_to())))?;
    let options = serde_saphyr::options! {
        // A snippet would copy lines of the file, possibly a password, into the error.
        with_snippet: false,
        // `a: 1` twice is ambiguous; Dapr (encoding/json) silently keeps the last, we refuse.
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        // Keep `0123` as the text the user wrote rather than guessing a number (a PIN or password may start with 0).
        leading_zero_numbers_as_strings: true,
    };
    let values: Vec<Value> = serde_saphyr::from_multiple_with_options(text, options).map_err(|e| {
        let location = e.location().filter(|l| l.line() > 0).map(|l| Location { line: l.line(), column: l.column() });
        yaml_error(path, location, parser_message(&e, location))
    })?;
    Ok(values.into_iter().enumerate().map(|(i, value)| Document { index: i + 1, value }).collect())
}

fn yaml_error(path: &Path, location: Option<Location>, message: String) -> ConfigError {
    ConfigError::Yaml { path: path.to_path_buf(), location, message }
}

/// The parser's message without its own " at line L, column C" tail (we print the location in front, once) and
/// cut to one short line.
fn parser_message(e: &serde_saphyr::Error, location: Option<Location>) -> String {
    let rendered = e.render_with_options(serde_saphyr::render_options! {
        snippets: serde_saphyr::SnippetMode::Off,
    });
    let mut message = rendered.lines().next().unwrap_or("syntax error").trim().to_string();
    if let Some(l) = location {
        let tail = format!(" at line {}, column {}", l.line, l.column);
        if let Some(stripped) = message.strip_suffix(&tail) {
            message = stripped.to_string();
        }
    }
    truncate(&message, 200)
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut cut: String = s.chars().take(max).collect();
        cut.push('…');
        cut
    }
}

/// Deserialize `value` as `T`, turning a failure into `<file>: <resource>: <path>: <message>`.
pub(crate) fn deserialize<T: DeserializeOwned>(
    value: Value,
    path: &Path,
    resource: &ResourceId,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        ConfigError::Invalid {
            path: path.to_path_buf(),
            resource: resource.clone(),
            field: if field == "." { "(document)".to_string() } else { field },
            message: redact_serde_message(&e.into_inner().to_string()),
        }
    })
}

/// serde's `invalid type`/`invalid value` messages quote the offending value (`string "hunter2"`); keep only its
/// kind (`string`), since a misplaced password would otherwise end up in a log line.
pub(crate) fn redact_serde_message(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: ", "unknown variant "] {
        let Some(rest) = message.strip_prefix(prefix) else {
            continue;
        };
        let (unexpected, expected) = match rest.rfind(", expected ") {
            Some(pos) => rest.split_at(pos),
            None => (rest, ""),
        };
        let kind = if prefix == "unknown variant " {
            "(redacted)"
        } else {
            // `string "…"`, `integer `5``, `floating point `1.5``: the kind is what precedes the quote.
            unexpected.split(['`', '"']).next().unwrap_or("value").trim_end()
        };
        // `expected struct RawSecretKeyRef` names our private type; the user wrote YAML.
        let expected = if expected.starts_with(", expected struct ") { ", expected a mapping" } else { expected };
        return truncate(&format!("{prefix}{kind}{expected}"), 300);
    }
    truncate(message, 300)
}

/// The string form of a YAML scalar, as Dapr produces it (its YAML → JSON → string path): strings as written,
/// `true`/`false`, numbers in their shortest form, null as empty. A sequence or mapping becomes its compact JSON.
pub(crate) fn scalar_string(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::String(s) => s.clone(),
        Value::Number(n) => {
            if n.is_f64() {
                match n.as_f64() {
                    // Go prints an integral float64 without a fraction (`1e3` → `1000`).
                    Some(f) if f.fract() == 0.0 && f.abs() < 1e21 => format!("{f:.0}"),
                    Some(f) => f.to_string(),
                    None => n.to_string(),
                }
            } else {
                n.to_string()
            }
        }
        Value::Array(_) | Value::Object(_) => value.to_string(),
    }
}

/// Reads a string field of a mapping; `Err` carries a message when it is there but not a string.
pub(crate) fn get_str<'a>(map: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("invalid type: {}, expected a string", type_name(other))),
    }
}

pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "sequence",
        Value::Object(_) => "map",
    }
}

/// Dapr decodes resources with Go's `encoding/json`, which matches keys case-insensitively: Dapr honours
/// `spec.accesscontrol`, while serde would silently ignore it, and a security section would be dropped. We accept
/// only the exact spelling and refuse a key that differs from a known one only in case.
///
/// `known` lists the exact keys at `value` (a mapping, or anything else, which is then not checked).
/// Returns `(field path, message)` of the first offending key.
pub(crate) fn check_key_case(value: Option<&Value>, at: &str, known: &[&str]) -> Result<(), (String, String)> {
    let Some(Value::Object(map)) = value else {
        return Ok(());
    };
    for key in map.keys() {
        if known.contains(&key.as_str()) {
            continue;
        }
        if let Some(exact) = known.iter().find(|k| k.eq_ignore_ascii_case(key)) {
            let field = if at.is_empty() { key.clone() } else { format!("{at}.{key}") };
            return Err((
                field,
                format!(
                    "key differs from \"{exact}\" only in case; write \"{exact}\" (Dapr would accept it, ward requires the exact spelling)"
                ),
            ));
        }
    }
    Ok(())
}

/// `value[key]` when `value` is a mapping.
pub(crate) fn child<'a>(value: Option<&'a Value>, key: &str) -> Option<&'a Value> {
    value.and_then(|v| v.as_object()).and_then(|m| m.get(key))
}

/// The elements of `value` when it is a sequence, with their index.
pub(crate) fn elements(value: Option<&Value>) -> impl Iterator<Item = (usize, &Value)> {
    value.and_then(|v| v.as_array()).into_iter().flatten().enumerate()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_string_values() {
        let m = redact_serde_message("invalid type: string \"hunter2, expected x\", expected a sequence");
        assert_eq!(m, "invalid type: string, expected a sequence");
        let m = redact_serde_message("invalid value: integer `1234`, expected u8");
        assert_eq!(m, "invalid value: integer, expected u8");
        let m = redact_serde_message("unknown variant `s3cret`, expected one of `a`, `b`");
        assert!(!m.contains("s3cret"), "{m}");
        assert_eq!(redact_serde_message("missing field `name`"), "missing field `name`");
        assert_eq!(
            redact_serde_message("invalid type: string \"x\", expected struct RawAuth"),
            "invalid type: string, expected a mapping"
        );
    }

    #[test]
    fn scalar_forms() {
        let docs = parse_documents(
            Path::new("x.yaml"),
            b"a: 1.50\nb: 1e3\nc: 0123\nd: true\ne: ~\nf: \"q\"\ng: 8080\nh: [1, 2]\n",
        )
        .unwrap();
        let m = docs[0].value.as_object().unwrap();
        let s = |k: &str| scalar_string(&m[k]);
        assert_eq!(s("a"), "1.5");
        assert_eq!(s("b"), "1000");
        assert_eq!(s("c"), "0123");
        assert_eq!(s("d"), "true");
        assert_eq!(s("e"), "");
        assert_eq!(s("f"), "q");
        assert_eq!(s("g"), "8080");
        assert_eq!(s("h"), "[1,2]");
    }

    #[test]
    fn syntax_error_has_location_and_no_snippet() {
        let err = parse_documents(Path::new("bad.yaml"), b"a: 1\nb: [password123, 2\n").unwrap_err();
        let line = err.to_string();
        assert!(line.starts_with("bad.yaml:"), "{line}");
        assert!(!line.contains("password123"), "{line}");
        assert!(matches!(err, ConfigError::Yaml { location: Some(_), .. }), "{line}");
    }

    #[test]
    fn duplicate_keys_and_bad_utf8_are_errors() {
        assert!(parse_documents(Path::new("d.yaml"), b"a: 1\na: 2\n").is_err());
        assert!(parse_documents(Path::new("u.yaml"), b"a: \xff\n").is_err());
    }

    #[test]
    fn empty_documents_are_skipped() {
        let docs = parse_documents(Path::new("e.yaml"), b"---\n---\na: 1\n---\n").unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].index, 1);
    }
}
