//! The crate's error types: [`ConfigError`] for everything that can be wrong while loading resources, and
//! [`ResolveError`] for resolving a component's metadata (secrets, environment variables) later.
//!
//! Every `Display` is one line that starts with the file, then names the resource and the field, so the binary can
//! print it as is and exit. Owns the formatting of those lines; does not decide what is wrong (the parsing modules
//! do) and never holds a metadata value or a secret: only names, paths and fixed phrases.

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

    /// The file is not YAML (syntax error, bad UTF-8, too large, alias budget exceeded, …).
    #[error("{}{}: invalid YAML: {message}", path.display(), LocationSuffix(location))]
    Yaml {
        path: PathBuf,
        location: Option<Location>,
        /// The parser's description, without any snippet of the file.
        message: String,
    },

    /// A document whose kind could not be determined (no `kind`, or not a mapping).
    #[error("{}: document {document}: {field}: {message}", path.display())]
    Document { path: PathBuf, document: usize, field: String, message: String },

    /// A field of a resource has a wrong type or value.
    #[error("{}: {resource}: {field}: {message}", path.display())]
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
    #[error("{}: Configuration {}: {field}", path.display(), quoted(name))]
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

/// Quote a name for an error line: escaped like a Rust string (so control characters cannot forge log lines) and
/// cut to a sane length. Only for names and paths, never for values.
pub(crate) fn quoted(s: &str) -> String {
    const MAX: usize = 100;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut:?}…")
    }
}
