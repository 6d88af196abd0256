//! Metadata common to every resource: `ObjectMeta`, the typed `Resource<T>` envelope, where a
//! document came from (`Source`), and the label selectors Kubernetes and Istio use.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// The namespace a resource without `metadata.namespace` belongs to (`kubectl apply` default).
pub const DEFAULT_NAMESPACE: &str = "default";

/// Kubernetes `metadata` (the fields Veil reads; others are ignored).
/// Reference: <https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/object-meta/>
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// `metadata.name`; empty when absent (validation reports it).
    #[serde(default)]
    pub name: String,
    /// `metadata.namespace`; `None` means the caller's default, normally [`DEFAULT_NAMESPACE`].
    #[serde(default)]
    pub namespace: Option<String>,
    /// `metadata.labels`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// `metadata.creationTimestamp` as written (RFC 3339); Istio breaks ties between
    /// competing policies by it, oldest first.
    #[serde(default)]
    pub creation_timestamp: Option<String>,
}

/// Where a document starts: the file as it was given to the loader and the 1-based line of
/// the document's first key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Source {
    /// The file, as given to [`crate::load_str`] or found under [`crate::load_dir`]'s directory.
    pub file: PathBuf,
    /// 1-based line of the document's first key.
    pub line: u32,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One loaded resource of a known kind: envelope fields, metadata, the kind's typed body
/// (`spec`, or the top-level data for kinds such as `Secret` that have no `spec`), and its
/// position in the input.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resource<T> {
    /// `apiVersion`, e.g. `security.istio.io/v1`.
    pub api_version: String,
    /// `kind`, e.g. `PeerAuthentication`.
    pub kind: String,
    /// `metadata`.
    pub meta: ObjectMeta,
    /// The kind-specific body.
    pub spec: T,
    /// Where the document starts.
    pub source: Source,
}

impl<T> Resource<T> {
    /// `metadata.name`.
    pub fn name(&self) -> &str {
        &self.meta.name
    }

    /// `metadata.namespace`, or [`DEFAULT_NAMESPACE`] when absent or empty.
    pub fn namespace_or_default(&self) -> &str {
        match self.meta.namespace.as_deref() {
            Some(ns) if !ns.is_empty() => ns,
            _ => DEFAULT_NAMESPACE,
        }
    }
}

/// Kubernetes `LabelSelector` (`matchLabels`; `matchExpressions` kept opaque).
/// Reference: <https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/label-selector/>
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels a pod must all carry.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements, not interpreted by Veil.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_expressions: Option<serde_json::Value>,
}

/// Istio `WorkloadSelector`: `matchLabels` that select pods in the resource's namespace.
/// Reference: <https://istio.io/latest/docs/reference/config/type/workload-selector/>
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    /// Labels a workload must all carry (`selector ⊆ pod labels`).
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

impl WorkloadSelector {
    /// True when every selector label is present with the same value in `labels`.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    }
}
