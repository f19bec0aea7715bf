//! The crate's error types: [`ConfigError`] for everything that can be wrong while loading resources, and
//! [`ResolveError`] for resolving a component's metadata (secrets, environment variables) later.
//!
//! Every `Display` is one line that starts with the file, then names the resource and the field, so the binary can
//! print it as is and exit. Owns the formatting of those lines; does not decide what is wrong (the parsing modules
//! do) and never holds a metadata value or a secret: only names, paths and fixed phrases.
//!
//! Owns the bounds too, for every crate that reports a load error: an echoed value goes through [`quote_value`]
//! (escaped, cut at [`MAX_ECHOED_CHARS`] characters with `…`), and every free-text part of a line (field path,
//! message, a parser's or a policy compiler's description) through [`bounded`], so a 70 KB scalar or key can never
//! make a 70 KB line.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::component::Component;
use crate::schema::UnsupportedField;

/// The three Dapr resource kinds this crate parses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKind {
    Component,
    Configuration,
    Subscription,
}

impl ResourceKind {
    /// The `kind:` string as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Component => "Component",
            ResourceKind::Configuration => "Configuration",
            ResourceKind::Subscription => "Subscription",
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which resource an error is about: its kind and, when it could be read, its `metadata.name`; otherwise the
/// 1-based index of its YAML document in the file (empty documents are not counted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceId {
    pub kind: ResourceKind,
    pub name: Option<String>,
    pub document: usize,
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{} {}", self.kind, quoted(name)),
            None => write!(f, "{} in document {}", self.kind, self.document),
        }
    }
}

/// A line/column position in a YAML file (1-based), as reported by the parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: u64,
    pub column: u64,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Anything wrong with a resource file or directory. `Display` is a single line:
/// `<file>: <Kind> "<name>": <field path>: <what is wrong>`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file or directory could not be read.
    #[error("{}: {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        /// What was being done, e.g. `cannot read file` or `cannot list directory`.
        action: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// The file is larger than the resource-file cap ([`crate::DEFAULT_MAX_FILE_BYTES`] unless raised with
    /// [`crate::MAX_FILE_BYTES_ENV`]).
    #[error(
        "{}: the file is {size} bytes, over the limit of {limit} bytes for a resource file; raise the limit with the \
         environment variable {} (e.g. {}=16Mi), or split the resources over several files",
        path.display(), crate::MAX_FILE_BYTES_ENV, crate::MAX_FILE_BYTES_ENV
    )]
    FileTooLarge { path: PathBuf, size: u64, limit: u64 },

    /// The file is within the size cap but over one of the parser's budgets (nodes, nesting, aliases, …), which
    /// protect against alias bombs: `limit` names the budget, `value` is what the file reached, `max` the budget.
    #[error("{}{}: invalid YAML: {limit} reached {value}, over the limit of {max}; {hint}", path.display(), LocationSuffix(location))]
    YamlBudget {
        path: PathBuf,
        location: Option<Location>,
        limit: &'static str,
        value: u64,
        max: u64,
        /// How to get under (or raise) the limit.
        hint: &'static str,
    },

    /// [`crate::MAX_FILE_BYTES_ENV`] is set to something that is not a size in range.
    #[error("{}: environment variable {variable}={}: {message}", path.display(), quote_value(value))]
    InvalidLimit { path: PathBuf, variable: &'static str, value: String, message: String },

    /// The file is not YAML (syntax error, bad UTF-8, alias budget exceeded, …).
    #[error("{}{}: invalid YAML: {}", path.display(), LocationSuffix(location), bounded(message))]
    Yaml {
        path: PathBuf,
        location: Option<Location>,
        /// The parser's description, without any snippet of the file.
        message: String,
    },

    /// A document whose kind could not be determined (no `kind`, or not a mapping).
    #[error("{}: document {document}: {}: {}", path.display(), bounded_field(field), bounded(message))]
    Document { path: PathBuf, document: usize, field: String, message: String },

    /// A field of a resource has a wrong type or value.
    #[error("{}: {resource}: {}: {}", path.display(), bounded_field(field), bounded(message))]
    Invalid {
        path: PathBuf,
        resource: ResourceId,
        /// Dotted path inside the document, e.g. `spec.metadata[2].secretKeyRef`.
        field: String,
        message: String,
    },

    /// Two resources of the same kind share a name (after namespace filtering).
    #[error(
        "{}: {resource}: metadata.name: duplicate definition; {} is already defined in {}",
        path.display(),
        quoted(&resource.name.clone().unwrap_or_default()),
        first.display()
    )]
    Duplicate {
        path: PathBuf,
        resource: ResourceId,
        /// The file that defined it first.
        first: PathBuf,
    },

    /// A Configuration asks for something ward does not do (an entry of `Configuration::unsupported`): the
    /// refusal in production, the warning text in development.
    #[error("{}: Configuration {}: {}", path.display(), quoted(name), bounded(&field.to_string()))]
    Unsupported {
        path: PathBuf,
        /// The Configuration's `metadata.name`.
        name: String,
        field: UnsupportedField,
    },

    /// A `--config` file holds no `kind: Configuration` document, or more than one.
    #[error("{}: expected exactly one `kind: Configuration` document, found {found}", path.display())]
    ConfigurationCount { path: PathBuf, found: usize },
}

impl ConfigError {
    /// The same one-line shape for a problem with a component that is discovered after loading, e.g. by the
    /// component registry: `ConfigError::invalid_component(&c, "spec.version", "version v9 of state.redis is not
    /// supported")` displays as `<file>: Component "<name>": spec.version: version v9 …`.
    pub fn invalid_component(
        component: &Component,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: component.source().to_path_buf(),
            resource: component.resource_id(),
            field: field.into(),
            message: message.into(),
        }
    }

    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            ConfigError::Io { path, .. }
            | ConfigError::Yaml { path, .. }
            | ConfigError::FileTooLarge { path, .. }
            | ConfigError::YamlBudget { path, .. }
            | ConfigError::InvalidLimit { path, .. }
            | ConfigError::Document { path, .. }
            | ConfigError::Invalid { path, .. }
            | ConfigError::Duplicate { path, .. }
            | ConfigError::Unsupported { path, .. }
            | ConfigError::ConfigurationCount { path, .. } => path,
        }
    }

    /// The field path the error is about, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Document { field, .. } | ConfigError::Invalid { field, .. } => Some(field),
            ConfigError::Duplicate { .. } => Some("metadata.name"),
            ConfigError::Unsupported { field, .. } => Some(&field.field),
            _ => None,
        }
    }
}

struct LocationSuffix<'a>(&'a Option<Location>);

impl fmt::Display for LocationSuffix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(location) => write!(f, ":{location}"),
            None => Ok(()),
        }
    }
}

/// The error type a secret resolver may return; kept as the `#[source]` of [`ResolveError::SecretStore`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Which metadata item of which component a [`ResolveError`] is about. Displays as
/// `<file>: Component "<name>": spec.metadata "<item>"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataItemRef {
    pub path: PathBuf,
    pub component: String,
    pub item: String,
}

impl fmt::Display for MetadataItemRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: Component {}: spec.metadata {}",
            self.path.display(),
            quoted(&self.component),
            quoted(&self.item)
        )
    }
}

/// Resolving a component's metadata failed. Names the component, the metadata item and where the value was to come
/// from; never the value. (The item reference is boxed to keep `Result<_, ResolveError>` small.)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The secret store answered, but has no such secret or key.
    #[error("{at}: secret {} key {} not found in secret store {}", quoted(secret), quoted(key), quoted(store))]
    SecretNotFound { at: Box<MetadataItemRef>, store: String, secret: String, key: String },

    /// The secret store failed (unreachable, not loaded, denied, …).
    #[error("{at}: cannot read secret {} key {} from secret store {}", quoted(secret), quoted(key), quoted(store))]
    SecretStore {
        at: Box<MetadataItemRef>,
        store: String,
        secret: String,
        key: String,
        #[source]
        source: BoxError,
    },

    /// A `secretKeyRef` but no `auth.secretStore` (normally refused at load; checked again here so a hand-built
    /// component cannot slip through).
    #[error("{at}: secretKeyRef needs auth.secretStore")]
    NoSecretStore { at: Box<MetadataItemRef> },

    /// The environment variable named by `envRef` is not set.
    #[error("{at}: environment variable {} (envRef) is not set", quoted(variable))]
    EnvNotSet { at: Box<MetadataItemRef>, variable: String },

    /// `envRef` names a variable components may never read (DAPR-FACTS §2.2).
    #[error("{at}: envRef may not read {}", quoted(variable))]
    EnvDenied { at: Box<MetadataItemRef>, variable: String },
}

impl ResolveError {
    /// The component and metadata item the error is about.
    pub fn item(&self) -> &MetadataItemRef {
        match self {
            ResolveError::SecretNotFound { at, .. }
            | ResolveError::SecretStore { at, .. }
            | ResolveError::NoSecretStore { at }
            | ResolveError::EnvNotSet { at, .. }
            | ResolveError::EnvDenied { at, .. } => at,
        }
    }
}

impl ResourceId {
    /// The Configuration named `name` (a Configuration file holds exactly one, so no document index is needed).
    pub fn configuration(name: &str) -> ResourceId {
        ResourceId { kind: ResourceKind::Configuration, name: Some(name.to_owned()), document: 1 }
    }
}

/// How many characters of a value (or name) an error line echoes before cutting with `…`.
pub const MAX_ECHOED_CHARS: usize = 100;
/// How many characters of a free-text part (a message, a parser's description) an error line holds. Generous,
/// because ward's own messages list alternatives; an embedded value is cut much earlier, word by word.
pub const MAX_MESSAGE_CHARS: usize = 400;
/// How many characters of a field path an error line holds (real ones are far shorter; an unknown 70 KB key is not).
const MAX_FIELD_CHARS: usize = 120;

/// Quote a value or name for an error line: escaped like a Rust string (so control characters cannot forge log
/// lines) and cut after [`MAX_ECHOED_CHARS`] characters, marked with `…` after the closing quote. Never for a
/// secret.
pub fn quote_value(s: &str) -> String {
    match s.char_indices().nth(MAX_ECHOED_CHARS) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}…", &s[..cut]),
    }
}

pub(crate) fn quoted(s: &str) -> String {
    quote_value(s)
}

/// Bound a free-text part of an error line (a message that may embed a value its writer did not cut, e.g. from
/// serde or a policy compiler): any run without whitespace longer than [`MAX_ECHOED_CHARS`] is cut with `…` (that
/// is where an embedded value sits), the whole is cut after [`MAX_MESSAGE_CHARS`], and line breaks become spaces
/// so the line stays one line.
pub fn bounded(text: &str) -> std::borrow::Cow<'_, str> {
    bound(text, MAX_MESSAGE_CHARS)
}

fn bounded_field(field: &str) -> std::borrow::Cow<'_, str> {
    bound(field, MAX_FIELD_CHARS)
}

fn bound(text: &str, max_total: usize) -> std::borrow::Cow<'_, str> {
    let mut run = 0usize;
    let mut total = 0usize;
    let mut needs_rewrite = false;
    for ch in text.chars() {
        total += 1;
        run = if ch.is_whitespace() { 0 } else { run + 1 };
        if ch == '\n' || ch == '\r' || run > MAX_ECHOED_CHARS || total > max_total {
            needs_rewrite = true;
            break;
        }
    }
    if !needs_rewrite {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::new();
    let (mut run, mut total) = (0usize, 0usize);
    for ch in text.chars() {
        if total >= max_total {
            out.push('…');
            break;
        }
        let ch = if ch == '\n' || ch == '\r' { ' ' } else { ch };
        if ch.is_whitespace() {
            run = 0;
        } else {
            run += 1;
            if run == MAX_ECHOED_CHARS + 1 {
                out.push('…');
                total += 1;
                continue;
            }
            if run > MAX_ECHOED_CHARS {
                continue;
            }
        }
        out.push(ch);
        total += 1;
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted_and_cut_at_100_characters() {
        assert_eq!(quote_value("public"), "\"public\"");
        assert_eq!(quote_value(&"a".repeat(100)), format!("\"{}\"", "a".repeat(100)));
        assert_eq!(quote_value(&"a".repeat(70_000)), format!("\"{}\"…", "a".repeat(100)));
        // Characters, not bytes: a multi-byte value is cut on a character boundary.
        assert_eq!(quote_value(&"é".repeat(101)), format!("\"{}\"…", "é".repeat(100)));
        assert_eq!(quote_value("a\nb"), "\"a\\nb\"");
    }

    #[test]
    fn messages_are_bounded_and_one_line() {
        assert_eq!(bounded("short"), "short");
        assert_eq!(bounded("two\nlines"), "two lines");
        let long = bounded(&"x ".repeat(35_000)).into_owned();
        assert_eq!(long.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(long.ends_with('…'));
        // An embedded long value is cut word by word, the rest of the message kept.
        let message = format!("unknown variant `{}`, expected one of `allow`, `deny`", "v".repeat(70_000));
        let cut = bounded(&message).into_owned();
        assert_eq!(cut, format!("unknown variant `{}… expected one of `allow`, `deny`", "v".repeat(99)));
        // ward's own long messages (lists of alternatives) stay whole.
        let list = "known keys here: accessControl, secrets, api, components, mtls, httpPipeline, appHttpPipeline";
        assert_eq!(bounded(list), list);
    }

    #[test]
    fn every_variant_with_free_text_stays_short() {
        // One 70 KB value in any one place of a line (the resource name, the field path or the message).
        let huge = "v".repeat(70_000);
        let invalid = |name: &str, field: &str, message: &str| ConfigError::Invalid {
            path: "f.yaml".into(),
            resource: ResourceId { kind: ResourceKind::Component, name: Some(name.to_owned()), document: 1 },
            field: field.to_owned(),
            message: message.to_owned(),
        };
        let errors = [
            ConfigError::Yaml { path: "f.yaml".into(), location: None, message: huge.clone() },
            ConfigError::Document { path: "f.yaml".into(), document: 1, field: huge.clone(), message: "m".into() },
            ConfigError::Document { path: "f.yaml".into(), document: 1, field: "kind".into(), message: huge.clone() },
            invalid(&huge, "spec.type", "unknown"),
            invalid("c", &huge, "unknown"),
            invalid("c", "spec.type", &huge),
            invalid("c", "spec.type", &format!("invalid type: string {huge:?}, expected a map")),
        ];
        for err in errors {
            let line = err.to_string();
            assert!(line.chars().count() < 300, "{} chars: {line}", line.chars().count());
            assert!(!line.contains('\n'));
        }
    }
}
