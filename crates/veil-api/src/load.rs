//! Loading multi-document YAML into typed resources with file:line positions. Each document
//! is parsed on its own (so a bad one does not hide errors in the others) and every error is
//! collected; unknown kinds, and kinds that load but that Veil does not act on (EnRoute's
//! `GatewayHost`), become warnings.

use crate::error::{ConfigError, LoadErrors, Warning};
use crate::index::LineIndex;
use crate::k8s::{RawSecret, SecretSpec};
use crate::kinds::{classify, unsupported_note, KindId};
use crate::meta::{ObjectMeta, Resource, Source};
use crate::snapshot::{AnyResource, Snapshot};
use crate::split::{absolute_positions, split_documents};
use crate::validate;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The file name of the local runtime's own configuration, never read as a resource.
pub const LOCAL_RUNTIME_FILE: &str = "veil.local.yaml";

/// Deepest directory nesting [`load_dir`] descends into.
const MAX_DEPTH: usize = 16;

/// Parses every document of one YAML text. `file` is only used in positions and messages.
/// Empty and comment-only documents are skipped; unknown kinds are dropped (use
/// [`snapshot_from_str`] to see their warnings).
///
/// Errors: every syntax, type and validation error of the text, including duplicates of the
/// same kind/namespace/name.
pub fn load_str(file: &Path, text: &str) -> Result<Vec<AnyResource>, LoadErrors> {
    let mut parsed = Parsed::default();
    parsed.add_text(file, text);
    parsed.finish().map(|(resources, _)| resources)
}

/// Like [`load_str`], but returns a [`Snapshot`] that also carries the warnings.
pub fn snapshot_from_str(file: &Path, text: &str) -> Result<Snapshot, LoadErrors> {
    let mut parsed = Parsed::default();
    parsed.add_text(file, text);
    parsed.finish().map(into_snapshot)
}

/// Reads every `*.yaml`/`*.yml` file under `dir`, recursively, in sorted path order, except
/// files named [`LOCAL_RUNTIME_FILE`]. Paths in positions are `dir` joined with the file's
/// relative path.
///
/// Errors: unreadable directories or files, and every error [`load_str`] reports, collected
/// across all files (duplicates are detected across files too).
pub fn load_dir(dir: &Path) -> Result<Snapshot, LoadErrors> {
    let mut files = Vec::new();
    let mut parsed = Parsed::default();
    collect_files(dir, 0, &mut files, &mut parsed.errors);
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => parsed.add_text(&file, &text),
            Err(e) => parsed
                .errors
                .push(file_error(&file, format!("cannot read file: {e}"))),
        }
    }
    parsed.finish().map(into_snapshot)
}

fn into_snapshot((resources, warnings): (Vec<AnyResource>, Vec<Warning>)) -> Snapshot {
    let mut snapshot = Snapshot {
        warnings,
        ..Snapshot::default()
    };
    for r in resources {
        snapshot.push(r);
    }
    snapshot
}

fn file_error(file: &Path, message: String) -> ConfigError {
    ConfigError {
        file: file.to_path_buf(),
        line: 0,
        field: String::new(),
        message,
    }
}

fn collect_files(dir: &Path, depth: usize, out: &mut Vec<PathBuf>, errors: &mut Vec<ConfigError>) {
    if depth > MAX_DEPTH {
        errors.push(file_error(
            dir,
            format!("directory nesting deeper than {MAX_DEPTH}; check for a symlink loop"),
        ));
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            errors.push(file_error(dir, format!("cannot read directory: {e}")));
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            collect_files(&path, depth + 1, out, errors);
            continue;
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let is_yaml = path.extension().is_some_and(|x| x == "yaml" || x == "yml");
        if is_yaml && name != LOCAL_RUNTIME_FILE {
            out.push(path);
        }
    }
}

#[derive(Default)]
struct Parsed {
    resources: Vec<AnyResource>,
    warnings: Vec<Warning>,
    errors: Vec<ConfigError>,
}

impl Parsed {
    fn add_text(&mut self, file: &Path, text: &str) {
        for (chunk, first_line) in split_documents(text) {
            self.add_document(file, chunk, first_line);
        }
    }

    fn add_document(&mut self, file: &Path, text: &str, first_line: u32) {
        let doc = Doc {
            file,
            text,
            first_line,
            index: LineIndex::build(text, first_line),
        };
        let value = match serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text) {
            Ok(serde_yaml_ng::Value::Null) => return,
            Ok(v) => v,
            Err(e) => return self.errors.push(doc.serde_error(&e)),
        };
        let Some(map) = value.as_mapping() else {
            let msg = "document is not a mapping; each document must be an object with apiVersion, kind and metadata";
            return self.errors.push(doc.error("", msg.to_string()));
        };
        let field = |name: &str| {
            map.get(name)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        let (api_version, kind) = (field("apiVersion"), field("kind"));
        for (name, val) in [("apiVersion", &api_version), ("kind", &kind)] {
            if val.is_empty() {
                let msg =
                    "missing or not a string; every document needs apiVersion and kind".to_string();
                self.errors.push(doc.error(name, msg));
            }
        }
        if api_version.is_empty() || kind.is_empty() {
            return;
        }
        let id = match classify(&api_version, &kind) {
            Ok(id) => id,
            Err(message) => {
                let line = doc.start_line();
                self.warnings.push(Warning {
                    file: file.to_path_buf(),
                    line,
                    message,
                });
                return;
            }
        };
        if let Some(message) = unsupported_note(id, &api_version, &kind) {
            self.warnings.push(Warning {
                file: file.to_path_buf(),
                line: doc.start_line(),
                message,
            });
        }
        match doc.typed(id, api_version, kind) {
            Ok(resource) => {
                self.errors
                    .extend(validate::document(&resource, &|f, m| doc.error(f, m)));
                self.resources.push(resource);
            }
            Err(e) => self.errors.push(e),
        }
    }

    fn finish(mut self) -> Result<(Vec<AnyResource>, Vec<Warning>), LoadErrors> {
        self.errors.extend(validate::duplicates(&self.resources));
        if self.errors.is_empty() {
            Ok((self.resources, self.warnings))
        } else {
            Err(LoadErrors(self.errors))
        }
    }
}

struct Doc<'a> {
    file: &'a Path,
    text: &'a str,
    first_line: u32,
    index: LineIndex,
}

#[derive(Deserialize)]
struct Envelope<T> {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: T,
}

#[derive(Deserialize)]
struct MetaOnly {
    #[serde(default)]
    metadata: ObjectMeta,
}

impl Doc<'_> {
    fn start_line(&self) -> u32 {
        self.index.first_key.unwrap_or(self.first_line)
    }

    fn error(&self, field: &str, message: String) -> ConfigError {
        let line = self
            .index
            .line_of(field)
            .unwrap_or_else(|| self.start_line());
        ConfigError {
            file: self.file.to_path_buf(),
            line,
            field: field.to_string(),
            message,
        }
    }

    /// Converts a serde_yaml_ng error (`path: message at line L column C`, line relative to
    /// this document) into a [`ConfigError`] with the absolute line.
    fn serde_error(&self, e: &serde_yaml_ng::Error) -> ConfigError {
        let mut text = e.to_string();
        let mut line = None;
        if let Some(loc) = e.location() {
            let own = format!(" at line {} column {}", loc.line(), loc.column());
            text = absolute_positions(&text.replacen(&own, "", 1), self.first_line);
            let rel = u32::try_from(loc.line()).unwrap_or(1).max(1);
            line = Some(self.first_line.saturating_add(rel - 1));
        }
        let (mut field, mut message) = match text.split_once(": ") {
            Some((path, rest)) if !path.is_empty() && !path.contains(char::is_whitespace) => {
                (path.to_string(), rest.to_string())
            }
            _ => (String::new(), text.clone()),
        };
        if let Some(name) = message
            .strip_prefix("missing field `")
            .and_then(|r| r.strip_suffix('`'))
        {
            field = if field.is_empty() {
                name.to_string()
            } else {
                format!("{field}.{name}")
            };
            message = "required field is missing".to_string();
            line = None;
        }
        let mut err = self.error(&field, message);
        if let Some(line) = line {
            err.line = line;
        }
        err
    }

    fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        serde_yaml_ng::from_str(self.text).map_err(|e| self.serde_error(&e))
    }

    fn spec<T: DeserializeOwned + Default>(
        &self,
        api_version: String,
        kind: String,
    ) -> Result<Resource<T>, ConfigError> {
        let env: Envelope<T> = self.parse()?;
        Ok(self.resource(api_version, kind, env.metadata, env.spec))
    }

    fn body<T: DeserializeOwned>(
        &self,
        api_version: String,
        kind: String,
    ) -> Result<Resource<T>, ConfigError> {
        let meta: MetaOnly = self.parse()?;
        let body: T = self.parse()?;
        Ok(self.resource(api_version, kind, meta.metadata, body))
    }

    fn resource<T>(
        &self,
        api_version: String,
        kind: String,
        meta: ObjectMeta,
        spec: T,
    ) -> Resource<T> {
        let source = Source {
            file: self.file.to_path_buf(),
            line: self.start_line(),
        };
        Resource {
            api_version,
            kind,
            meta,
            spec,
            source,
        }
    }

    fn secret(
        &self,
        api_version: String,
        kind: String,
    ) -> Result<Resource<SecretSpec>, ConfigError> {
        let raw: Resource<RawSecret> = self.body(api_version, kind)?;
        let mut data = std::collections::BTreeMap::new();
        for (key, encoded) in &raw.spec.data {
            let compact: String = encoded.chars().filter(|c| !c.is_whitespace()).collect();
            match base64::engine::general_purpose::STANDARD.decode(compact) {
                Ok(bytes) => data.insert(key.clone(), bytes),
                Err(e) => {
                    let msg = format!("invalid base64 ({e}); encode the value with `base64 -w0` or move it to stringData");
                    return Err(self.error(&format!("data.{key}"), msg));
                }
            };
        }
        let spec = SecretSpec {
            secret_type: raw.spec.secret_type,
            data,
            string_data: raw.spec.string_data,
        };
        Ok(Resource {
            api_version: raw.api_version,
            kind: raw.kind,
            meta: raw.meta,
            spec,
            source: raw.source,
        })
    }

    fn typed(&self, id: KindId, v: String, k: String) -> Result<AnyResource, ConfigError> {
        use AnyResource as A;
        Ok(match id {
            KindId::Namespace => A::Namespace(self.body(v, k)?),
            KindId::Service => A::Service(self.spec(v, k)?),
            KindId::Deployment => A::Deployment(self.spec(v, k)?),
            KindId::StatefulSet => A::StatefulSet(self.spec(v, k)?),
            KindId::DaemonSet => A::DaemonSet(self.spec(v, k)?),
            KindId::Pod => A::Pod(self.spec(v, k)?),
            KindId::ServiceAccount => A::ServiceAccount(self.body(v, k)?),
            KindId::Secret => A::Secret(self.secret(v, k)?),
            KindId::ConfigMap => A::ConfigMap(self.body(v, k)?),
            KindId::PeerAuthentication => A::PeerAuthentication(self.spec(v, k)?),
            KindId::AuthorizationPolicy => A::AuthorizationPolicy(self.spec(v, k)?),
            KindId::DestinationRule => A::DestinationRule(self.spec(v, k)?),
            KindId::Gateway => A::Gateway(self.spec(v, k)?),
            KindId::VirtualService => A::VirtualService(self.spec(v, k)?),
            KindId::ServiceEntry => A::ServiceEntry(self.spec(v, k)?),
            KindId::WorkloadEntry => A::WorkloadEntry(self.spec(v, k)?),
            KindId::Sidecar => A::Sidecar(self.spec(v, k)?),
            KindId::Policy => A::Policy(self.spec(v, k)?),
            KindId::MeshPolicy => A::MeshPolicy(self.spec(v, k)?),
            KindId::GatewayHost => A::GatewayHost(self.spec(v, k)?),
        })
    }
}
