//! `authn tls-check`: Istio 1.4's table (istioctl/cmd/authn.go,
//! pilot/pkg/proxy/envoy/v2/debug.go, spec §1.9): one row per
//! `host:port(|subset)` with the server's mode, the client's DestinationRule
//! TLS mode, and whether the two can talk.
//!
//! - SERVER: the effective inbound mode of the Service's endpoints on the
//!   target port (`MIXED` when they differ). A pod without a sidecar counts
//!   as `DISABLE`: it only ever receives plaintext. A Service without
//!   endpoints shows the mode a pod with the Service's selector labels would get.
//! - CLIENT: the DestinationRule `tls.mode` for that port and subset, looked
//!   up as a client in the given pod's namespace (with its labels) sees it
//!   (`veil_model::dr::lookup`); without a pod, as a client in the
//!   Service's own namespace.
//! - STATUS: `AUTO` when no DestinationRule tls applies and auto-mTLS is on;
//!   `CONFLICT` when the client cannot work against some endpoint (a STRICT
//!   server with anything but ISTIO_MUTUAL, a DISABLE server with
//!   ISTIO_MUTUAL; with auto-mTLS off and no tls, the client sends
//!   plaintext); `OK` otherwise.

use serde::{Deserialize, Serialize};
use veil_api::ClientTlsMode;
use veil_model::authn::effective_authn;
use veil_model::dr;
use veil_model::registry::{selector_matches, Labels, Service, ServicePort};
use veil_model::{MeshInput, MtlsMode, Pod};

/// The whole table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TlsCheck {
    /// `namespace/pod` the client view is for; `None`: each Service's own namespace.
    pub client: Option<String>,
    /// The mesh's `enableAutoMtls`.
    pub auto_mtls: bool,
    /// Sorted by host, then port, then subset.
    pub rows: Vec<TlsCheckRow>,
}

/// One `host:port(|subset)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TlsCheckRow {
    /// Service FQDN.
    pub host: String,
    /// Service port.
    pub port: u16,
    pub subset: Option<String>,
    pub status: TlsStatus,
    pub server: ServerMode,
    /// DestinationRule `tls.mode`; `None` when no rule tls applies.
    pub client: Option<ClientTlsMode>,
    /// `namespace/name` of the policies that applied to the endpoints.
    pub authn_policies: Vec<String>,
    /// `namespace/name` of the DestinationRule(s) that applied.
    pub destination_rules: Vec<String>,
}

impl TlsCheckRow {
    /// `host:port` or `host:port|subset`, Istio's first column.
    pub fn key(&self) -> String {
        match &self.subset {
            Some(s) => format!("{}:{}|{s}", self.host, self.port),
            None => format!("{}:{}", self.host, self.port),
        }
    }
}

/// Whether client and server agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TlsStatus {
    Ok,
    Conflict,
    Auto,
}

impl std::fmt::Display for TlsStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsStatus::Ok => "OK",
            TlsStatus::Conflict => "CONFLICT",
            TlsStatus::Auto => "AUTO",
        })
    }
}

/// The server side of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerMode {
    Disable,
    Permissive,
    Strict,
    /// The endpoints have different modes.
    Mixed,
}

impl std::fmt::Display for ServerMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ServerMode::Disable => "DISABLE",
            ServerMode::Permissive => "PERMISSIVE",
            ServerMode::Strict => "STRICT",
            ServerMode::Mixed => "MIXED",
        })
    }
}

impl From<MtlsMode> for ServerMode {
    fn from(m: MtlsMode) -> Self {
        match m {
            MtlsMode::Disable => ServerMode::Disable,
            MtlsMode::Permissive => ServerMode::Permissive,
            MtlsMode::Strict => ServerMode::Strict,
        }
    }
}

/// True when a client sending `client` (`None`: no DestinationRule tls)
/// cannot reach a server in mode `server`.
pub fn conflicts(server: MtlsMode, client: Option<ClientTlsMode>, auto_mtls: bool) -> bool {
    let client = match client {
        Some(c) => c,
        None if auto_mtls => return false,
        None => ClientTlsMode::Disable,
    };
    match server {
        MtlsMode::Strict => client != ClientTlsMode::IstioMutual,
        MtlsMode::Disable => client == ClientTlsMode::IstioMutual,
        MtlsMode::Permissive => false,
    }
}

/// The table for every Service port of the mesh, as `client` (or each
/// Service's own namespace) sees it.
pub fn tls_check(input: &MeshInput, client: Option<&Pod>) -> TlsCheck {
    let mut rows = Vec::new();
    for svc in &input.registry.services {
        let host = svc.hostname(&input.settings.domain);
        let namespace = client.map_or(svc.namespace.as_str(), |c| c.namespace.as_str());
        let view = dr::Client { namespace, labels: client.map(|c| &c.labels) };
        let target = dr::Target { host: &host, namespace: &svc.namespace };
        let rule =
            dr::lookup(&input.destination_rules, view, target, &input.settings.root_namespace, &input.settings.domain);
        let subsets: Vec<Option<(&str, &Labels)>> = std::iter::once(None)
            .chain(rule.iter().flat_map(|r| r.subsets.iter()).map(|s| Some((s.name.as_str(), &s.labels))))
            .collect();
        for sp in &svc.ports {
            for subset in &subsets {
                let tls = rule.as_ref().and_then(|r| r.effective(sp.port, subset.map(|s| s.0)).tls);
                let rules = rule.as_ref().map(|r| r.rules.clone()).unwrap_or_default();
                let client_mode = tls.map(|t| t.mode);
                let (server, modes, policies) = server_side(input, svc, sp, subset.map(|s| s.1));
                let status = if modes.iter().any(|m| conflicts(*m, client_mode, input.settings.auto_mtls)) {
                    TlsStatus::Conflict
                } else if client_mode.is_none() && input.settings.auto_mtls {
                    TlsStatus::Auto
                } else {
                    TlsStatus::Ok
                };
                rows.push(TlsCheckRow {
                    host: host.clone(),
                    port: sp.port,
                    subset: subset.map(|s| s.0.to_string()),
                    status,
                    server,
                    client: client_mode,
                    authn_policies: policies,
                    destination_rules: rules,
                });
            }
        }
    }
    rows.sort_by(|a, b| (&a.host, a.port, &a.subset).cmp(&(&b.host, b.port, &b.subset)));
    TlsCheck {
        client: client.map(|c| format!("{}/{}", c.namespace, c.name)),
        auto_mtls: input.settings.auto_mtls,
        rows,
    }
}

/// The server mode of Service port `sp` over its endpoints (those with
/// `subset` labels), every endpoint's mode, and the policies that applied.
fn server_side(
    input: &MeshInput,
    svc: &Service,
    sp: &ServicePort,
    subset: Option<&Labels>,
) -> (ServerMode, Vec<MtlsMode>, Vec<String>) {
    let root = &input.settings.root_namespace;
    let mut pods: Vec<Pod> = input
        .registry
        .pods
        .iter()
        .filter(|p| svc.selects(p) && subset.is_none_or(|l| selector_matches(l, &p.labels)))
        .cloned()
        .collect();
    if pods.is_empty() {
        let mut labels = svc.selector.clone();
        labels.extend(subset.cloned().unwrap_or_default());
        pods.push(Pod {
            name: String::new(),
            namespace: svc.namespace.clone(),
            labels,
            service_account: String::new(),
            ip: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            sidecar: true,
            gateway: false,
            ports: Vec::new(),
        });
    }
    let mut modes = Vec::new();
    let mut policies: Vec<String> = Vec::new();
    for p in &pods {
        if !p.sidecar && !p.gateway {
            modes.push(MtlsMode::Disable);
            continue;
        }
        let eff = effective_authn(&input.peer_authentications, p, root);
        let mode = sp.target_on(p).and_then(|t| eff.ports.get(&t).copied()).unwrap_or(eff.mode);
        modes.push(mode);
        for a in eff.applied {
            if !policies.contains(&a) {
                policies.push(a);
            }
        }
    }
    let server = match modes.first() {
        Some(first) if modes.iter().all(|m| m == first) => ServerMode::from(*first),
        _ => ServerMode::Mixed,
    };
    (server, modes, policies)
}
