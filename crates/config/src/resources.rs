//! Loading resource directories (`--resources-path`) into a [`ResourceSet`], loading the `--config` file with
//! [`load_configuration`], and the cheap [`fingerprint`] the runtime polls to notice changes.
//!
//! Owns: which files are read (every `*.yaml`/`*.yml` directly in each directory, sorted by name), the dispatch on
//! `kind`, namespace filtering, and the checks that span files (duplicate component names). Does not watch files,
//! keep an old set on failure (the caller swaps sets only on success), or decide whether a component type exists.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use crate::component::Component;
use crate::configuration::Configuration;
use crate::error::ConfigError;
use crate::meta::read_header;
use crate::subscription::Subscription;
use crate::yaml::{Document, parse_documents};

/// Kinds Dapr defines that ward does not (yet) act on; documents of these kinds are skipped with a warning.
const OTHER_DAPR_KINDS: [&str; 3] = ["Resiliency", "HTTPEndpoint", "MCPServer"];

/// Everything loaded from the resource directories.
#[derive(Debug, Clone, Default)]
pub struct ResourceSet {
    /// Components in load order (directory order, then file name, then document order).
    pub components: Vec<Component>,
    pub subscriptions: Vec<Subscription>,
    pub configurations: Vec<Configuration>,
    /// One line per skipped document (`<file>: document N: …; skipped`).
    pub warnings: Vec<String>,
}

impl ResourceSet {
    /// Load every `*.yaml`/`*.yml` file directly inside each of `dirs` (not recursive; files sorted by name,
    /// directories in the order given). With `namespace: Some(ns)`, resources whose non-empty `metadata.namespace`
    /// differs from `ns` are skipped; with `None`, namespaces are ignored (daprd's rule, DAPR-FACTS §4.1).
    ///
    /// The first problem found is returned; a set is only returned whole.
    pub fn load(dirs: &[PathBuf], namespace: Option<&str>) -> Result<ResourceSet, ConfigError> {
        let mut set = ResourceSet::default();
        for file in resource_files(dirs)? {
            let bytes = crate::yaml::read_file(&file)?;
            set.add_file(&file, &bytes, namespace)?;
        }
        set.check_duplicates()?;
        Ok(set)
    }

    /// Parse resources from YAML text as if read from `path` (which only labels errors). For tests and for
    /// callers that get resources from elsewhere.
    pub fn from_yaml(path: &Path, yaml: &str, namespace: Option<&str>) -> Result<ResourceSet, ConfigError> {
        let mut set = ResourceSet::default();
        set.add_file(path, yaml.as_bytes(), namespace)?;
        set.check_duplicates()?;
        Ok(set)
    }

    /// The component named `name`, if loaded.
    pub fn component(&self, name: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.name() == name)
    }

    /// The components the app `app_id` may use (its scopes allow it).
    pub fn components_for<'a>(&'a self, app_id: &'a str) -> impl Iterator<Item = &'a Component> + 'a {
        self.components.iter().filter(move |c| c.in_scope(app_id))
    }

    /// The subscriptions delivered to the app `app_id`.
    pub fn subscriptions_for<'a>(&'a self, app_id: &'a str) -> impl Iterator<Item = &'a Subscription> + 'a {
        self.subscriptions.iter().filter(move |s| s.in_scope(app_id))
    }

    fn add_file(&mut self, path: &Path, bytes: &[u8], namespace: Option<&str>) -> Result<(), ConfigError> {
        for doc in parse_documents(path, bytes)? {
            let header = read_header(path, &doc)?;
            if !header.in_namespace(namespace) {
                continue;
            }
            match header.kind.as_str() {
                "Component" => {
                    self.components.push(Component::from_document(path, doc, &header)?);
                }
                "Subscription" => {
                    self.subscriptions.push(Subscription::from_document(path, doc, &header)?);
                }
                "Configuration" => {
                    self.configurations.push(Configuration::from_document(path, doc, &header)?);
                }
                other => {
                    let what = match &header.name {
                        Some(name) => format!("{other} {}", crate::error::quoted(name)),
                        None => other.to_string(),
                    };
                    let why = if OTHER_DAPR_KINDS.contains(&other) {
                        "is not supported by ward"
                    } else {
                        "is not a Dapr resource kind ward knows"
                    };
                    self.warnings.push(format!(
                        "{}: document {}: kind {what} {why}; skipped",
                        path.display(),
                        doc.index
                    ));
                }
            }
        }
        Ok(())
    }

    /// Two components with one name is a load error in Dapr (`duplicate definition of …`); name both files.
    fn check_duplicates(&self) -> Result<(), ConfigError> {
        let mut seen: HashMap<&str, &Component> = HashMap::new();
        for c in &self.components {
            if let Some(first) = seen.insert(c.name(), c) {
                return Err(ConfigError::Duplicate {
                    path: c.source().to_path_buf(),
                    resource: c.resource_id(),
                    first: first.source().to_path_buf(),
                });
            }
        }
        Ok(())
    }
}

/// Load the sidecar's `--config` file: the one `kind: Configuration` document in it (other kinds are ignored; none
/// or several is an error naming the file). Namespaces are not filtered: the file was named explicitly.
pub fn load_configuration(path: &Path) -> Result<Configuration, ConfigError> {
    let bytes = crate::yaml::read_file(path)?;
    configuration_from_yaml(path, &bytes)
}

/// [`load_configuration`] on bytes already read; `path` labels errors.
pub fn configuration_from_yaml(path: &Path, bytes: &[u8]) -> Result<Configuration, ConfigError> {
    let docs = parse_documents(path, bytes)?;
    let mut chosen: Option<(Document, crate::meta::Header)> = None;
    let mut count = 0;
    for doc in docs {
        let header = read_header(path, &doc)?;
        if header.kind == "Configuration" {
            count += 1;
            chosen.get_or_insert((doc, header));
        }
    }
    match chosen {
        Some((doc, header)) if count == 1 => Configuration::from_document(path, doc, &header),
        _ => Err(ConfigError::ConfigurationCount { path: path.to_path_buf(), found: count }),
    }
}

/// The resource files of `dirs`, in load order.
fn resource_files(dirs: &[PathBuf]) -> Result<Vec<PathBuf>, ConfigError> {
    let mut all = Vec::new();
    for dir in dirs {
        let entries = std::fs::read_dir(dir).map_err(|source| ConfigError::Io {
            path: dir.clone(),
            action: "cannot list directory",
            source,
        })?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| ConfigError::Io {
                path: dir.clone(),
                action: "cannot list directory",
                source,
            })?;
            let path = entry.path();
            // Same rule as Dapr's disk loader: by extension, case-sensitive.
            let is_yaml = matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
            if !is_yaml {
                continue;
            }
            // `metadata` follows symlinks, so a linked file counts and a linked directory does not.
            let meta = std::fs::metadata(&path).map_err(|source| ConfigError::Io {
                path: path.clone(),
                action: "cannot read file",
                source,
            })?;
            if meta.is_file() {
                files.push(path);
            }
        }
        files.sort();
        all.extend(files);
    }
    Ok(all)
}

/// A hash of the resource files of `dirs` (names and contents), for polling: when it changes, reload. Reading a few
/// small files each second is cheap and, unlike mtimes, cannot miss an edit made within the clock's resolution.
pub fn fingerprint(dirs: &[PathBuf]) -> std::io::Result<u64> {
    let files = resource_files(dirs).map_err(|e| match e {
        ConfigError::Io { source, .. } => source,
        other => std::io::Error::other(other.to_string()),
    })?;
    let mut hasher = DefaultHasher::new();
    files.len().hash(&mut hasher);
    for file in files {
        file.hash(&mut hasher);
        match hash_contents(&file, &mut hasher) {
            Ok(()) => {}
            // A file removed between listing and reading is a change the next poll will see settled.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0u8.hash(&mut hasher),
            Err(e) => return Err(e),
        }
    }
    Ok(hasher.finish())
}

/// A hash of one file's contents (the `--config` file), for the same polling. `None` when it cannot be read.
pub fn file_fingerprint(path: &Path) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    hash_contents(path, &mut hasher).ok()?;
    Some(hasher.finish())
}

/// Feeds a file to `hasher` through a small buffer. A poll that kept or read whole files would hold a large
/// Configuration (10,000 policies are 3 MB of YAML) in memory twice over for the sidecar's whole life (issue 25).
fn hash_contents(path: &Path, hasher: &mut DefaultHasher) -> std::io::Result<()> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut buffer = [0u8; 16 * 1024];
    let mut length = 0usize;
    loop {
        let read = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.write(buffer.get(..read).unwrap_or_default());
        length += read;
    }
    // The length closes the contents, so two files' bytes cannot run together into the same stream.
    length.hash(hasher);
    Ok(())
}
