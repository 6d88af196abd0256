//! `veil analyze`: findings about a snapshot of Istio/Kubernetes resources. Errors are what
//! Istio itself rejects; warnings are configurations Istio accepts but that break traffic (or
//! silently do nothing) in ways users keep reporting (spec §4: pain points 8, 10, 11, 12).
//!
//! Every finding names the file and line of the field at fault, the resource, what goes wrong
//! and what to write instead. Field lines come from a lookup the caller can replace
//! ([`analyze_with`]); the default ([`analyze`]) asks `veil_api::field_line`, which re-reads
//! the source file, and falls back to the document's first line.
//!
//! | code | level | finding |
//! |---|---|---|
//! | VEIL0001 | error | a load or validation error of `veil_api` |
//! | VEIL0002 | warning | a document `veil_api` ignored (e.g. unknown kind) |
//! | VEIL0101 | error | PeerAuthentication `portLevelMtls` without a selector |
//! | VEIL0102 | error | empty `portLevelMtls` |
//! | VEIL0103 | warning | `portLevelMtls` keyed on a Service port instead of its targetPort (Istio #49098) |
//! | VEIL0104 | warning | PeerAuthentication with a selector in the root namespace (ignored) |
//! | VEIL0105 | warning | several PeerAuthentications at one level (only the oldest applies) |
//! | VEIL0106 | warning | legacy `authentication.istio.io/v1alpha1` Policy / MeshPolicy |
//! | VEIL0201 | warning | DestinationRule `tls.mode: DISABLE` towards a STRICT workload (Istio #6279) |
//! | VEIL0202 | warning | DestinationRule `ISTIO_MUTUAL` towards a DISABLE workload |
//! | VEIL0203 | warning | DestinationRule SIMPLE/MUTUAL on a ServiceEntry HTTPS/TLS port that no Gateway `http` route feeds (Istio #17031) |
//! | VEIL0301 | warning | Gateway `credentialName` Secret only in the Gateway's namespace (Istio #27740) |
//! | VEIL0401 | warning | DestinationRule host that matches no Service or ServiceEntry |
//! | VEIL0402 | warning | VirtualService destination host that matches no Service or ServiceEntry |

mod destination_rules;
mod double_tls;
mod gateway;
mod hosts;
mod legacy;
mod peer_authn;
mod policies;
mod references;
mod tls_conflicts;

use serde::Serialize;
use std::fmt;
use std::path::PathBuf;
use veil_api::{ConfigError, ObjectMeta, Snapshot, Source};

/// Istio's default `rootNamespace` (meshConfig): policies here without a selector are mesh-wide.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Istio rejects the resource.
    Error,
    /// Istio accepts the resource, but traffic will not behave as the author expects.
    Warning,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Error => "error",
            Level::Warning => "warning",
        })
    }
}

/// One finding, displayed as `file:line: warning[CODE]: message. hint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Error or warning.
    pub level: Level,
    /// Stable code, e.g. `VEIL0103` (see the table in the module docs).
    pub code: &'static str,
    /// The file of the resource at fault, as the loader was given it.
    pub file: PathBuf,
    /// 1-based line of the field at fault (the document's first line when unknown; 0 for a
    /// whole file that could not be read).
    pub line: u32,
    /// `Kind namespace/name` of the resource at fault (empty for load errors).
    pub resource: String,
    /// What is wrong and what happens to traffic because of it.
    pub message: String,
    /// What to write instead (may span several lines, e.g. a YAML snippet).
    pub hint: String,
}

impl Finding {
    /// `file:line: [CODE] message. hint`: the finding without its level, for callers that
    /// print their own prefix (`veil up` prints every finding as `warning: …`).
    pub fn body(&self) -> String {
        format!("{}: [{}] {}", self.location(), self.code, self.text())
    }

    /// `file:line`, or just `file` for a finding about a whole file (line 0).
    fn location(&self) -> String {
        match self.line {
            0 => self.file.display().to_string(),
            line => format!("{}:{line}", self.file.display()),
        }
    }

    /// `message. hint`, or the message alone.
    fn text(&self) -> String {
        match self.hint.as_str() {
            "" => self.message.clone(),
            hint => format!("{}. {hint}", self.message),
        }
    }

    /// A load or validation error of `veil_api` as a finding. The two PeerAuthentication
    /// rules Istio's validation enforces keep their own codes (VEIL0101, VEIL0102), so that
    /// `veil analyze` reports them the same way whether or not the loader caught them.
    pub fn from_load_error(e: &ConfigError) -> Finding {
        let code = match (e.field.as_str(), e.message.as_str()) {
            ("spec.portLevelMtls", m) if m.starts_with("mesh/namespace peer authentication") => {
                "VEIL0101"
            }
            ("spec.portLevelMtls", m) if m.starts_with("port level mTLS must not be empty") => {
                "VEIL0102"
            }
            _ => "VEIL0001",
        };
        let message = if e.field.is_empty() {
            e.message.clone()
        } else {
            format!("{}: {}", e.field, e.message)
        };
        Finding {
            level: Level::Error,
            code,
            file: e.file.clone(),
            line: e.line,
            resource: String::new(),
            message,
            hint: String::new(),
        }
    }

    /// A document `veil_api` ignored (unknown kind, …) as a warning finding (VEIL0002).
    pub fn from_load_warning(w: &veil_api::Warning) -> Finding {
        Finding {
            level: Level::Warning,
            code: "VEIL0002",
            file: w.file.clone(),
            line: w.line,
            resource: String::new(),
            message: w.message.clone(),
            hint: String::new(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (location, level, code) = (self.location(), self.level, self.code);
        write!(f, "{location}: {level}[{code}]: {}", self.text())
    }
}

/// Looks up the line of a field path (`spec.portLevelMtls.8000`) in the document at `Source`.
pub type LineLookup<'a> = &'a dyn Fn(&Source, &str) -> Option<u32>;

/// Every finding about `snapshot`, sorted by file, line and code. Field lines are read back
/// from the source files (`veil_api::field_line`); see [`analyze_with`] to avoid that.
pub fn analyze(snapshot: &Snapshot) -> Vec<Finding> {
    analyze_with(snapshot, &veil_api::field_line)
}

/// [`analyze`] with a caller-supplied field-line lookup; a lookup that returns `None` (e.g.
/// `&|_, _| None`) places every finding on its document's first line and reads no file.
pub fn analyze_with(snapshot: &Snapshot, lines: LineLookup<'_>) -> Vec<Finding> {
    let server = policies::ServerSide::new(snapshot);
    let mut drafts = Vec::new();
    peer_authn::check(&server, &mut drafts);
    legacy::check(&server, &mut drafts);
    tls_conflicts::check(&server, &mut drafts);
    double_tls::check(&server, &mut drafts);
    gateway::check(&server, &mut drafts);
    references::check(&server, &mut drafts);
    let mut findings: Vec<Finding> = drafts
        .into_iter()
        .map(|d| Finding {
            line: lines(&d.source, &d.field).unwrap_or(d.source.line),
            level: d.level,
            code: d.code,
            file: d.source.file,
            resource: d.resource,
            message: d.message,
            hint: d.hint,
        })
        .collect();
    findings.sort_by(|a, b| (&a.file, a.line, a.code).cmp(&(&b.file, b.line, b.code)));
    findings.dedup();
    findings
}

/// A finding before its line is looked up: the document and the field path at fault.
#[derive(Debug, Clone)]
pub(crate) struct Draft {
    pub level: Level,
    pub code: &'static str,
    pub source: Source,
    pub field: String,
    pub resource: String,
    pub message: String,
    pub hint: String,
}

impl Draft {
    /// A warning about `field` of the document at `source`.
    pub fn warning(
        code: &'static str,
        source: &Source,
        field: impl Into<String>,
        resource: String,
    ) -> Draft {
        Draft {
            level: Level::Warning,
            code,
            source: source.clone(),
            field: field.into(),
            resource,
            message: String::new(),
            hint: String::new(),
        }
    }

    /// Sets the message and the hint.
    pub fn says(mut self, message: String, hint: String) -> Draft {
        self.message = message;
        self.hint = hint;
        self
    }
}

/// `Kind namespace/name` (cluster-scoped kinds such as MeshPolicy: `Kind name`).
pub(crate) fn resource_name(kind: &str, meta: &ObjectMeta) -> String {
    match meta.namespace.as_deref() {
        _ if kind == "MeshPolicy" || kind == "Namespace" => format!("{kind} {}", meta.name),
        Some(ns) if !ns.is_empty() => format!("{kind} {ns}/{}", meta.name),
        _ => format!("{kind} {}/{}", veil_api::DEFAULT_NAMESPACE, meta.name),
    }
}
