//! `MeshState`: what a running `veil up` tells the other commands
//! (`status`, `audit`, `down`): its pid, the bridge, and every pod with its
//! address, namespace and identity. Written to `<state>/mesh.json`.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::LocalError;

/// File name of the state, inside the state directory.
pub const MESH_FILE: &str = "mesh.json";

/// One pod of the running mesh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodState {
    pub name: String,
    pub namespace: String,
    pub ip: IpAddr,
    /// Network namespace (`ip netns exec <netns> …`).
    pub netns: String,
    pub sidecar: bool,
    pub gateway: bool,
    pub service_account: String,
    /// SPIFFE ID of the pod's proxy, when it has one.
    pub spiffe_id: Option<String>,
    pub workload_pid: Option<u32>,
    pub proxy_pid: Option<u32>,
}

/// A server outside the mesh (`external: true` in `veil.local.yaml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExternalState {
    pub name: String,
    /// Its fixed address on the bridge.
    pub ip: IpAddr,
    pub netns: String,
    /// Names every pod's hosts file resolves to `ip`.
    pub hosts: Vec<String>,
    pub pid: Option<u32>,
}

/// A gateway port published on the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Published {
    /// `namespace/pod` of the gateway.
    pub gateway: String,
    /// Gateway server port.
    pub port: u16,
    pub protocol: String,
    /// Where it is reachable on the host (`127.0.0.1:<port>`).
    pub host: SocketAddr,
}

/// The running mesh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeshState {
    /// Pid of the `veil up` process.
    pub pid: u32,
    /// The directory `veil up` was given.
    pub dir: PathBuf,
    /// Bridge the pods are on (where `veil audit` captures).
    pub bridge: String,
    /// Control plane address (CA + config stream, TLS gRPC).
    pub control_plane: SocketAddr,
    pub pods: Vec<PodState>,
    pub published: Vec<Published>,
    /// Milliseconds from start to every pod ready.
    pub ready_after_ms: u64,
    /// The control plane's admin API (`127.0.0.1:15014` or the next free
    /// port), read by `veil x describe`, `veil authn tls-check`, `veil x auth check`.
    #[serde(default)]
    pub admin: Option<SocketAddr>,
    /// Servers outside the mesh, on the bridge.
    #[serde(default)]
    pub externals: Vec<ExternalState>,
}

impl MeshState {
    /// Reads `<state_dir>/mesh.json`.
    ///
    /// # Errors
    /// [`LocalError::NoMesh`] when there is no running mesh (no file);
    /// [`LocalError::Io`] when it is unreadable.
    pub fn load(state_dir: &Path) -> Result<MeshState, LocalError> {
        let path = state_dir.join(MESH_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => LocalError::NoMesh { path: path.clone() },
            _ => LocalError::io("read", &path, e),
        })?;
        serde_json::from_str(&text).map_err(|e| {
            LocalError::io("parse", &path, std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        })
    }

    /// Writes `<state_dir>/mesh.json` atomically.
    ///
    /// # Errors
    /// [`LocalError::Io`] when the state directory is not writable.
    pub fn save(&self, state_dir: &Path) -> Result<(), LocalError> {
        let path = state_dir.join(MESH_FILE);
        let tmp = state_dir.join(format!("{MESH_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self).map_err(|e| {
            LocalError::io("encode", &path, std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        })?;
        std::fs::write(&tmp, text).map_err(|e| LocalError::io("write", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| LocalError::io("rename", &path, e))
    }

    /// Removes `<state_dir>/mesh.json` (ignores a missing file).
    pub fn remove(state_dir: &Path) {
        let _ = std::fs::remove_file(state_dir.join(MESH_FILE));
    }

    /// Where the proxies write their connection records.
    pub fn records_dir(&self, state_dir: &Path) -> PathBuf {
        records_dir(state_dir)
    }

    /// The pod with this address.
    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<&PodState> {
        self.pods.iter().find(|p| p.ip == ip)
    }

    /// A human-readable table (like `kubectl get pods -o wide`).
    pub fn table(&self) -> String {
        let mut rows = vec![[
            "NAMESPACE".to_string(),
            "POD".into(),
            "IP".into(),
            "PROXY".into(),
            "STATUS".into(),
            "IDENTITY".into(),
        ]];
        for p in &self.pods {
            let proxy = if p.gateway { "gateway" } else if p.sidecar { "sidecar" } else { "none" };
            let alive = |pid: Option<u32>| pid.is_some_and(|pid| crate::process::is_running(pid as i32));
            let running = (p.workload_pid.is_none() || alive(p.workload_pid))
                && (p.proxy_pid.is_none() || alive(p.proxy_pid));
            rows.push([
                p.namespace.clone(),
                p.name.clone(),
                p.ip.to_string(),
                proxy.into(),
                if running { "Running".into() } else { "Stopped".into() },
                p.spiffe_id.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        let mut widths = [0usize; 6];
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r.iter()) {
                *w = (*w).max(c.len());
            }
        }
        let mut out = String::new();
        for r in &rows {
            let line: Vec<String> = r.iter().zip(widths.iter()).map(|(c, w)| format!("{c:<w$}")).collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        for e in &self.externals {
            out.push_str(&format!("external {} {} (outside the mesh) hosts {}\n", e.name, e.ip, e.hosts.join(", ")));
        }
        for p in &self.published {
            out.push_str(&format!("gateway {} port {} ({}) published at {}\n", p.gateway, p.port, p.protocol, p.host));
        }
        out
    }
}

/// `<state_dir>/records`.
pub fn records_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("records")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_mesh_file_says_no_mesh_runs_and_an_unreadable_one_says_why() {
        let dir = std::env::temp_dir().join(format!("veil-state-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let missing = MeshState::load(&dir).expect_err("no mesh.json");
        assert!(matches!(missing, LocalError::NoMesh { .. }), "{missing:?}");
        assert!(missing.to_string().contains("veil up DIR"), "{missing}");
        // Control: a mesh.json that exists but is not a mesh is an I/O (parse) error.
        std::fs::write(dir.join(MESH_FILE), "not json").expect("write");
        let garbled = MeshState::load(&dir).expect_err("garbled mesh.json");
        assert!(matches!(garbled, LocalError::Io { action: "parse", .. }), "{garbled:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
