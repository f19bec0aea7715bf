//! Turning file bytes into YAML documents and documents into typed raw structs.
//!
//! Parsing happens in two steps. serde-saphyr parses each `---` document into a generic tree (`serde_json::Value`),
//! which lets us read `apiVersion`/`kind` first and pick the type; the chosen raw struct is then deserialized from
//! that tree through `serde_path_to_error`, so a wrong value reports its path (`spec.mtls.enabled`). The detour also
//! mirrors Dapr, which converts YAML to JSON before decoding, so scalar values get the same string form
//! (`1.50` → `1.5`).
//!
//! Owns: the parser options (no snippets of the file in errors, duplicate keys refused, alias budget), the size cap
//! on resource files and the parser budgets sized from each file's size, redaction of values from serde's messages,
//! the scalar→string rule. Does not know any resource's schema.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{ConfigError, Location, ResourceId};

/// The default cap on one resource file: 4 MiB holds a Configuration with 10,000 policies of 3 operations (3 MB)
/// and refuses what is a mistake or an attack on memory. Raised with [`MAX_FILE_BYTES_ENV`].
pub const DEFAULT_MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// The environment variable that raises (or lowers) the cap: a size such as `16Mi` or `20000000`.
pub const MAX_FILE_BYTES_ENV: &str = "WARD_MAX_CONFIG_FILE_BYTES";
/// The largest cap the variable may set: the parser's budgets grow with a file's size, so memory does too.
const MAX_FILE_BYTES_CEILING: u64 = 256 * 1024 * 1024;

/// The parser's node budget (sequences, mappings and scalars, aliases expanded) is at least serde-saphyr's default,
/// which every file that loaded before still gets, and otherwise one node per [`BYTES_PER_NODE`] bytes of the file:
/// the most a file of that size can hold without aliases (`[a,a,…]`). So aliases can at most double what a file of
/// the same size could hold anyway, and an alias bomb is refused as before.
const MIN_NODES: usize = 250_000;
const BYTES_PER_NODE: usize = 2;
/// Parser events likewise: at least serde-saphyr's default, else one per byte.
const MIN_EVENTS: usize = 1_000_000;

/// The cap on one resource file: [`DEFAULT_MAX_FILE_BYTES`], or [`MAX_FILE_BYTES_ENV`] when set. `path` labels the
/// error when the variable is invalid.
pub(crate) fn max_file_bytes(path: &Path) -> Result<u64, ConfigError> {
    let Some(raw) = std::env::var_os(MAX_FILE_BYTES_ENV) else {
        return Ok(DEFAULT_MAX_FILE_BYTES);
    };
    let invalid = |message: String| ConfigError::InvalidLimit {
        path: path.to_path_buf(),
        variable: MAX_FILE_BYTES_ENV,
        value: raw.to_string_lossy().into_owned(),
        message,
    };
    let text = raw.to_str().ok_or_else(|| invalid("not UTF-8".to_owned()))?;
    let bytes = crate::units::parse_byte_quantity(text).map_err(&invalid)?;
    if bytes == 0 || bytes > MAX_FILE_BYTES_CEILING {
        return Err(invalid(format!("must be between 1 byte and {MAX_FILE_BYTES_CEILING} bytes (256Mi)")));
    }
    Ok(bytes)
}

/// Reads a resource file, never more than the cap (plus one byte, to tell that it is over).
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, ConfigError> {
    use std::io::Read;
    let limit = max_file_bytes(path)?;
    let io = |source| ConfigError::Io { path: path.to_path_buf(), action: "cannot read file", source };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limit {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(bytes.len() as u64);
        return Err(ConfigError::FileTooLarge { path: path.to_path_buf(), size, limit });
    }
    Ok(bytes)
}

/// One non-empty YAML document of a file.
#[derive(Debug)]
pub(crate) struct Document {
    /// 1-based position among the file's non-empty documents.
    pub index: usize,
    pub value: Value,
}

/// Parse all documents of `text`. Errors name `path` and, when the parser knows it, the line and column.
pub(crate) fn parse_documents(path: &Path, bytes: &[u8]) -> Result<Vec<Document>, ConfigError> {
    let limit = max_file_bytes(path)?;
    if bytes.len() as u64 > limit {
        return Err(ConfigError::FileTooLarge { path: path.to_path_buf(), size: bytes.len() as u64, limit });
    }
    let budget = budget_for(bytes.len());
    let text = std::str::from_utf8(bytes)
        .map_err(|e| yaml_error(path, None, format!("not valid UTF-8 after byte {}", e.valid_up_to())))?;
    let options = serde_saphyr::options! {
        // A snippet would copy lines of the file, possibly a password, into the error.
        with_snippet: false,
        // `a: 1` twice is ambiguous; Dapr (encoding/json) silently keeps the last, we refuse.
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        // Keep `0123` as the text the user wrote rather than guessing a number (a PIN or password may start with 0).
        leading_zero_numbers_as_strings: true,
        budget: Some(budget.clone()),
    };
    let values: Vec<Value> = serde_saphyr::from_multiple_with_options(text, options).map_err(|e| {
        let location = e.location().filter(|l| l.line() > 0).map(|l| Location { line: l.line(), column: l.column() });
        budget_error(path, location, &e, &budget)
            .unwrap_or_else(|| yaml_error(path, location, parser_message(&e, location)))
    })?;
    Ok(values.into_iter().enumerate().map(|(i, value)| Document { index: i + 1, value }).collect())
}

/// serde-saphyr's budget with the node and event budgets sized to this file (see [`MIN_NODES`]); the alias, anchor,
/// depth and document budgets stay at their defaults.
fn budget_for(file_bytes: usize) -> serde_saphyr::Budget {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = MIN_NODES.max(file_bytes / BYTES_PER_NODE + 1);
    budget.max_events = MIN_EVENTS.max(file_bytes.saturating_add(1));
    budget
}

/// A budget breach as one sentence naming the budget, the value reached, the limit and what to do.
fn budget_error(
    path: &Path,
    location: Option<Location>,
    e: &serde_saphyr::Error,
    budget: &serde_saphyr::Budget,
) -> Option<ConfigError> {
    use serde_saphyr::budget::BudgetBreach as B;
    // A breach while expanding an alias arrives wrapped with the alias's locations.
    let mut inner = e;
    while let serde_saphyr::Error::AliasError { error, .. } | serde_saphyr::Error::WithSnippet { error, .. } = inner {
        inner = error;
    }
    let serde_saphyr::Error::Budget { breach, .. } = inner else { return None };
    let sized = "the limit is one per 2 bytes of the file (at least the parser default), so only aliases (*name) expanding to much more than the file holds go over it: expand fewer or smaller ones";
    let aliases =
        "a protection against alias bombs, not a setting: write the repeated parts out instead of aliasing them";
    let (limit, value, max, hint): (&'static str, usize, usize, &'static str) = match *breach {
        B::Nodes { nodes } => ("YAML nodes (aliases expanded)", nodes, budget.max_nodes, sized),
        B::Events { events } => ("parser events (aliases expanded)", events, budget.max_events, sized),
        B::Aliases { aliases: n } => ("aliases", n, budget.max_aliases, aliases),
        B::Anchors { anchors } => ("anchors", anchors, budget.max_anchors, aliases),
        B::Depth { depth } => ("nesting depth", depth, budget.max_depth, "flatten the structure"),
        B::Documents { documents } => {
            ("documents", documents, budget.max_documents, "split the documents over several files")
        }
        B::MergeKeys { merge_keys } => ("merge keys (<<)", merge_keys, budget.max_merge_keys, aliases),
        _ => {
            return Some(yaml_error(
                path,
                location,
                format!("over a parser limit against alias bombs ({breach:?}); {aliases}"),
            ));
        }
    };
    Some(ConfigError::YamlBudget {
        path: path.to_path_buf(),
        location,
        limit,
        value: value as u64,
        max: max as u64,
        hint,
    })
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
///
/// From a borrowed tree, so every string is copied into a new allocation made while the tree is still alive: the
/// result then lies in fresh heap pages of its own instead of being scattered through the tree's, and the pages
/// the tree frees afterwards are whole and can go back to the system (`ward_memory::release_freed`; issue 25: a
/// 3 MB Configuration's tree is ~40 MB, and moved strings pinned most of it).
pub(crate) fn deserialize<T: DeserializeOwned>(
    value: Value,
    path: &Path,
    resource: &ResourceId,
) -> Result<T, ConfigError> {
    let result = serde_path_to_error::deserialize(&value);
    drop(value);
    result.map_err(|e| {
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
