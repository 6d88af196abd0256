//! `veil.local.yaml`: which local command runs each workload under `veil up`.
//!
//! ```yaml
//! apiVersion: veil.dev/v1alpha1
//! kind: LocalRuntime
//! workloads:
//! - name: mysql-server          # the Deployment (or Pod) name
//!   namespace: pii-demo         # optional, default "default"
//!   command: ["bin/mariadb.sh"] # a relative path is relative to this file's directory
//!   user: root                  # optional, default root
//!   env: {}                     # optional
//!   ready: {tcpPort: 3306, timeoutSeconds: 60}   # optional
//!   outputCerts: istio-output-certs   # optional, pods without a sidecar: a certificate
//!                               # agent keeps the pod's mesh key.pem, cert-chain.pem,
//!                               # root-cert.pem current in VEIL_POD_DIR/<this>
//! - name: nginx                 # a server OUTSIDE the mesh (no Deployment needed):
//!   external: true              # its own network namespace on the bridge, no sidecar,
//!   address: 10.209.250.10      # at this fixed address (optional: 10.209.250.10 + index),
//!   hosts: [api.example.com]    # names every pod's hosts file resolves to it
//!   command: ["bin/nginx.sh"]
//! mounts:                       # optional: a directory seen at a path by one pod's
//! - pod: istio-system/istio-egressgateway   # processes (proxy and workload), as a
//!   mountPath: /etc/client-certs            # Kubernetes Secret volume would be
//!   source: certs/client        # relative to this file's directory
//! ```
//!
//! Validation runs while deserializing, so every error carries the file, line and field
//! path: `veil.local.yaml:7: workloads[1].command: must not be empty`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use std::fmt;

use serde::de::{self, Error as _, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::LocalError;

/// The only accepted `apiVersion`.
pub const API_VERSION: &str = "veil.dev/v1alpha1";
/// The only accepted `kind`.
pub const KIND: &str = "LocalRuntime";

/// A parsed `veil.local.yaml`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalRuntime {
    /// Always [`API_VERSION`].
    #[serde(deserialize_with = "api_version")]
    pub api_version: String,
    /// Always [`KIND`].
    #[serde(deserialize_with = "kind")]
    pub kind: String,
    /// One entry per workload, unique by (namespace, name).
    #[serde(default, deserialize_with = "workloads")]
    pub workloads: Vec<RuntimeWorkload>,
    /// Directories mounted into pods' processes.
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// Directory of the file; relative program paths were resolved against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// How one workload (Deployment or Pod) runs locally.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuntimeWorkload {
    /// Deployment or Pod name.
    #[serde(deserialize_with = "non_empty")]
    pub name: String,
    /// Kubernetes namespace.
    #[serde(default = "default_namespace", deserialize_with = "non_empty")]
    pub namespace: String,
    /// Program and arguments; after [`load`], a relative program path containing `/` is
    /// absolute (resolved against the file's directory); a bare name is looked up on PATH.
    #[serde(deserialize_with = "command")]
    pub command: Vec<String>,
    /// User name or numeric uid to run as.
    #[serde(default = "default_user", deserialize_with = "non_empty")]
    pub user: String,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Readiness check; none means "ready when started".
    #[serde(default)]
    pub ready: Option<Ready>,
    /// Runs outside the mesh: its own network namespace on the bridge, no
    /// sidecar, not in the registry, reached by `hosts`. Needs no Deployment.
    #[serde(default)]
    pub external: bool,
    /// Fixed address of an external workload, inside the bridge subnet.
    #[serde(default)]
    pub address: Option<Ipv4Addr>,
    /// DNS names of an external workload, written to every pod's hosts file.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Istio's `OUTPUT_CERTS`, for a pod without a sidecar whose own software
    /// speaks mesh mTLS (seed 000's third-party gateway): a directory, relative
    /// to the pod's directory (`VEIL_POD_DIR`), where a certificate agent beside
    /// the workload keeps `key.pem`, `cert-chain.pem` and `root-cert.pem` of the
    /// pod's service account, rewritten on every rotation. The workload starts
    /// once they exist and gets the directory's absolute path as `OUTPUT_CERTS`.
    /// `SECRET_TTL` (seconds) in `env` sets the certificate lifetime (default 24 h).
    #[serde(default, deserialize_with = "output_certs")]
    pub output_certs: Option<PathBuf>,
}

/// A directory that one pod's processes see at `mount_path` (like a
/// Kubernetes Secret volume mounted into the pod).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mount {
    /// `namespace/name` of the pod (a gateway pod, e.g. `istio-system/istio-egressgateway`).
    #[serde(deserialize_with = "non_empty")]
    pub pod: String,
    /// Absolute path inside the pod.
    pub mount_path: PathBuf,
    /// Directory on the host; after [`load`], relative paths are resolved
    /// against the file's directory.
    pub source: PathBuf,
}

/// A TCP readiness check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ready {
    /// Port that must accept TCP connections (1..=65535).
    #[serde(deserialize_with = "port")]
    pub tcp_port: u16,
    /// How long to wait, in seconds (default 60).
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
}

fn default_namespace() -> String {
    "default".into()
}
fn default_user() -> String {
    "root".into()
}
fn default_timeout() -> u64 {
    60
}

// Validation happens inside visitors: serde_yaml_ng attaches the line and field path of
// the value being visited to errors raised there.

/// Visits a string and checks it with `.0`.
struct CheckedStr(fn(&str) -> Result<(), String>, &'static str);

impl<'de> Visitor<'de> for CheckedStr {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.1)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<String, E> {
        (self.0)(value).map_err(E::custom)?;
        Ok(value.to_string())
    }
}

fn api_version<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let check = |v: &str| {
        if v == API_VERSION {
            Ok(())
        } else {
            Err(format!("must be {API_VERSION}, not {v:?}"))
        }
    };
    d.deserialize_str(CheckedStr(check, "an apiVersion string"))
}

fn kind<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let check = |v: &str| {
        if v == KIND {
            Ok(())
        } else {
            Err(format!("must be {KIND}, not {v:?}"))
        }
    };
    d.deserialize_str(CheckedStr(check, "a kind string"))
}

fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let check = |v: &str| {
        if v.trim().is_empty() {
            Err("must not be empty".to_string())
        } else {
            Ok(())
        }
    };
    d.deserialize_str(CheckedStr(check, "a non-empty string"))
}

fn output_certs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let check = |v: &str| {
        let path = Path::new(v);
        let inside = path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if v.trim().is_empty() || !inside {
            Err(format!(
                "must be a relative path without `..` (a directory inside the pod's directory VEIL_POD_DIR), e.g. istio-output-certs, not {v:?}"
            ))
        } else {
            Ok(())
        }
    };
    d.deserialize_str(CheckedStr(check, "a relative directory path"))
        .map(|v| Some(PathBuf::from(v)))
}

/// Visits the command list: at least one item, the first (the program) not blank.
struct CommandVisitor;

impl<'de> Visitor<'de> for CommandVisitor {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of strings: program, then arguments")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<String>()? {
            items.push(item);
        }
        match items.first() {
            None => Err(A::Error::custom("must not be empty")),
            Some(program) if program.trim().is_empty() => Err(A::Error::custom(
                "the program (first item) must not be empty",
            )),
            Some(_) => Ok(items),
        }
    }
}

fn command<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    d.deserialize_seq(CommandVisitor)
}

/// Visits a TCP port number, 1..=65535.
struct PortVisitor;

impl<'de> Visitor<'de> for PortVisitor {
    type Value = u16;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a port number 1..=65535")
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<u16, E> {
        match u16::try_from(value) {
            Ok(port) if port != 0 => Ok(port),
            _ => Err(E::custom(format!("must be 1..=65535, not {value}"))),
        }
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<u16, E> {
        u64::try_from(value)
            .map_err(|_| E::custom(format!("must be 1..=65535, not {value}")))
            .and_then(|v| self.visit_u64(v))
    }
}

fn port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    d.deserialize_u16(PortVisitor)
}

/// Visits the workload list, refusing a repeated (namespace, name).
struct WorkloadsVisitor;

impl<'de> Visitor<'de> for WorkloadsVisitor {
    type Value = Vec<RuntimeWorkload>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of workloads")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<RuntimeWorkload>, A::Error> {
        let mut items: Vec<RuntimeWorkload> = Vec::new();
        let mut seen = BTreeSet::new();
        while let Some(item) = seq.next_element::<RuntimeWorkload>()? {
            if !seen.insert((item.namespace.clone(), item.name.clone())) {
                return Err(A::Error::custom(format!(
                    "workloads[{}] repeats {}/{}; list each workload once",
                    items.len(),
                    item.namespace,
                    item.name
                )));
            }
            items.push(item);
        }
        Ok(items)
    }
}

fn workloads<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<RuntimeWorkload>, D::Error> {
    d.deserialize_seq(WorkloadsVisitor)
}

/// Reads and validates `path`. Errors: [`LocalError::Io`] when unreadable,
/// [`LocalError::RuntimeFile`] (`file:line: field: problem`) when invalid.
pub fn load(path: &Path) -> Result<LocalRuntime, LocalError> {
    let text = std::fs::read_to_string(path).map_err(|e| LocalError::io("read", path, e))?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse(&text, &path.display().to_string(), &base_dir)
}

/// Parses the text of a runtime file; `file` is used in error messages only, relative
/// programs are resolved against `base_dir`.
pub fn parse(text: &str, file: &str, base_dir: &Path) -> Result<LocalRuntime, LocalError> {
    let mut runtime: LocalRuntime = serde_yaml_ng::from_str(text).map_err(|e| {
        let line = e.location().map_or(0, |l| l.line());
        let mut message = e.to_string();
        if let Some(at) = message.rfind(" at line ") {
            message.truncate(at);
        }
        LocalError::RuntimeFile {
            file: file.to_string(),
            line,
            message,
        }
    })?;
    for workload in &mut runtime.workloads {
        if let Some(program) = workload.command.first_mut() {
            let as_path = Path::new(program.as_str());
            if program.contains('/') && as_path.is_relative() {
                *program = base_dir.join(as_path).display().to_string();
            }
        }
    }
    for mount in &mut runtime.mounts {
        if mount.source.is_relative() {
            mount.source = base_dir.join(&mount.source);
        }
    }
    runtime.base_dir = base_dir.to_path_buf();
    Ok(runtime)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "apiVersion: veil.dev/v1alpha1
kind: LocalRuntime
workloads:
- name: mysql-server
  namespace: pii-demo
  command: [\"bin/mariadb.sh\", \"--port\", \"3306\"]
  ready: {tcpPort: 3306}
- name: web
  command: [python3, -m, http.server]
  user: nobody
  env: {A: b}
";

    fn err(text: &str) -> String {
        parse(text, "veil.local.yaml", Path::new("/d"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn parses_defaults_and_resolves_relative_programs() {
        let rt = parse(GOOD, "veil.local.yaml", Path::new("/demo")).unwrap();
        let [db, web] = rt.workloads.as_slice() else {
            panic!("two workloads")
        };
        assert_eq!(db.command, vec!["/demo/bin/mariadb.sh", "--port", "3306"]);
        assert_eq!(
            (db.user.as_str(), db.ready),
            (
                "root",
                Some(Ready {
                    tcp_port: 3306,
                    timeout_seconds: 60
                })
            )
        );
        assert_eq!(
            (
                web.namespace.as_str(),
                web.command[0].as_str(),
                web.user.as_str()
            ),
            ("default", "python3", "nobody")
        );
        assert_eq!(web.env.get("A").map(String::as_str), Some("b"));
    }

    #[test]
    fn output_certs_is_a_directory_inside_the_pod_directory() {
        let with = |dir: &str| {
            GOOD.replace(
                "  user: nobody",
                &format!("  user: nobody\n  outputCerts: {dir}"),
            )
        };
        let rt = parse(
            &with("istio-output-certs"),
            "veil.local.yaml",
            Path::new("/demo"),
        )
        .unwrap();
        let outputs: Vec<_> = rt
            .workloads
            .iter()
            .map(|w| w.output_certs.clone())
            .collect();
        assert_eq!(
            outputs,
            vec![None, Some(PathBuf::from("istio-output-certs"))]
        );
        for bad in ["/etc/istio-output-certs", "../certs", "\"\""] {
            let e = err(&with(bad));
            assert!(
                e.starts_with(
                    "veil.local.yaml:11: workloads[1].outputCerts: must be a relative path"
                ),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let empty = GOOD.replace("[python3, -m, http.server]", "[]");
        assert_eq!(
            err(&empty),
            "veil.local.yaml:9: workloads[1].command: must not be empty"
        );
        let kind = GOOD.replace("kind: LocalRuntime", "kind: Pod");
        assert!(
            err(&kind).starts_with("veil.local.yaml:2: kind: must be LocalRuntime"),
            "{}",
            err(&kind)
        );
        let port = GOOD.replace("tcpPort: 3306", "tcpPort: 0");
        assert!(
            err(&port).starts_with("veil.local.yaml:7: workloads[0].ready.tcpPort: must be"),
            "{}",
            err(&port)
        );
        let unknown = GOOD.replace("  user: nobody", "  usr: nobody");
        assert!(
            err(&unknown).contains(":10: workloads[1]: unknown field `usr`"),
            "{}",
            err(&unknown)
        );
        let dup = GOOD.replace("- name: web", "- name: mysql-server\n  namespace: pii-demo");
        assert!(
            err(&dup).contains("repeats pii-demo/mysql-server"),
            "{}",
            err(&dup)
        );
    }
}
