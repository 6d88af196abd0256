//! `ProxyConfig`: everything one proxy needs to run, and nothing else.
//!
//! The control plane computes it (see `crate::build`), serialises it as JSON
//! and streams it to the proxy; the proxy never reads Istio resources itself.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

/// The effective mutual-TLS mode of an inbound port, after Istio's
/// `PeerAuthentication` resolution (never `UNSET` here).
///
/// Follows `security.istio.io/v1` `PeerAuthentication.MutualTLS.Mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Only plaintext is accepted.
    Disable,
    /// Mesh mTLS and plaintext are both accepted, told apart by the first bytes.
    Permissive,
    /// Only mesh mTLS (client certificate from the mesh CA, ALPN `istio*`).
    Strict,
}

impl std::fmt::Display for MtlsMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MtlsMode::Disable => "DISABLE",
            MtlsMode::Permissive => "PERMISSIVE",
            MtlsMode::Strict => "STRICT",
        })
    }
}

/// The application protocol of a port, from `appProtocol`, else the port
/// name prefix (`http-web`, `tcp-db`, `mysql`), else the well-known port.
///
/// Follows <https://istio.io/latest/docs/ops/configuration/traffic-management/protocol-selection/>.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Http2,
    Grpc,
    /// Opaque TCP, declared.
    Tcp,
    /// Application TLS, passed through.
    Tls,
    /// MySQL: server-first.
    Mysql,
    /// Nothing declared: sniff the first bytes (with a short timeout so that
    /// server-first clients are not stalled).
    Unknown,
}

impl Protocol {
    /// True when the inbound must connect the application without waiting
    /// for client bytes: every declared non-HTTP protocol.
    pub fn is_declared_opaque(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Tls | Protocol::Mysql)
    }
    /// True for HTTP-family protocols.
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Http2 | Protocol::Grpc)
    }
}

/// What kind of proxy this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyKind {
    Sidecar,
    Gateway,
}

/// The whole configuration of one proxy, versioned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyConfig {
    /// Increases with every change the control plane pushes.
    pub version: u64,
    pub node: Node,
    pub inbound: Inbound,
    /// Shared between the proxies that see the same outbound (same client
    /// namespace, DestinationRule and route selection), so a mesh of
    /// thousands of proxies holds a few copies, not one per proxy.
    pub outbound: std::sync::Arc<Outbound>,
    /// Present only for gateways.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayConfig>,
}

/// Who the proxy is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub kind: ProxyKind,
    /// Pod name.
    pub pod: String,
    pub namespace: String,
    pub service_account: String,
    /// `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
    pub spiffe_id: String,
    pub ip: IpAddr,
}

/// How inbound connections (captured on 15006) are treated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inbound {
    /// Mode for ports not listed in `ports`.
    pub mode: MtlsMode,
    /// Per workload (target) port settings.
    pub ports: Vec<InboundPort>,
    /// How long a PERMISSIVE port with an undeclared protocol waits for the
    /// client's first bytes before it treats the client as a plaintext
    /// server-first client, in milliseconds.
    pub sniff_timeout_ms: u64,
}

impl Inbound {
    /// The mode and protocol for a workload port.
    pub fn port(&self, port: u16) -> (MtlsMode, Protocol) {
        self.ports
            .iter()
            .find(|p| p.port == port)
            .map(|p| (p.mode, p.protocol))
            .unwrap_or((self.mode, well_known_protocol(port)))
    }
}

/// Ports Istio treats as TCP (server-first) without any declaration.
pub fn well_known_protocol(port: u16) -> Protocol {
    match port {
        3306 => Protocol::Mysql,
        25 | 53 | 27017 => Protocol::Tcp,
        _ => Protocol::Unknown,
    }
}

/// One workload port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundPort {
    /// Workload (container/target) port.
    pub port: u16,
    pub mode: MtlsMode,
    pub protocol: Protocol,
}

/// Where captured outbound connections (15001) go.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Outbound {
    pub services: Vec<OutboundService>,
    /// How ServiceEntry ports among `services` are found by the dialled
    /// address (see [`EntryMatch`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<EntryMatch>,
    /// MeshConfig `outboundTrafficPolicy.mode`: what happens to a
    /// destination that [`Outbound::lookup`] does not find.
    #[serde(default)]
    pub policy: OutboundTrafficPolicy,
}

impl Outbound {
    /// The service an original destination belongs to, in this order: by
    /// ClusterIP and Service port; by a ServiceEntry's `addresses` (or its
    /// endpoints' addresses) and port; by endpoint IP and target port; by a
    /// ServiceEntry that takes every address on the port (`resolution: NONE`
    /// without `addresses`).
    pub fn lookup(&self, ip: IpAddr, port: u16) -> Option<(&OutboundService, Option<&Endpoint>)> {
        if let Some(s) = self
            .services
            .iter()
            .find(|s| s.cluster_ip == Some(ip) && s.port == port)
        {
            return Some((s, None));
        }
        if let Some(s) = self.entry_service(ip, port, false) {
            return Some((s, None));
        }
        let by_endpoint = self.services.iter().find_map(|s| {
            s.endpoints
                .iter()
                .find(|e| e.ip == ip && e.port == port)
                .map(|e| (s, Some(e)))
        });
        by_endpoint.or_else(|| self.entry_service(ip, port, true).map(|s| (s, None)))
    }

    /// The Service or ServiceEntry port `host:port`.
    pub fn service(&self, host: &str, port: u16) -> Option<&OutboundService> {
        self.services.iter().find(|s| s.hostname == host && s.port == port)
    }

    /// The ServiceEntry match of `host:port`, when it is a ServiceEntry port.
    pub fn entry(&self, host: &str, port: u16) -> Option<&EntryMatch> {
        self.entries.iter().find(|e| e.host == host && e.port == port)
    }

    /// The first ServiceEntry port on `port` whose addresses hold `ip`
    /// (`any_address` false), or that takes every address (`any_address` true).
    fn entry_service(&self, ip: IpAddr, port: u16, any_address: bool) -> Option<&OutboundService> {
        self.entries
            .iter()
            .filter(|e| e.port == port && e.addresses.is_empty() == any_address && e.matches(ip))
            .find_map(|e| self.service(&e.host, e.port))
    }
}

/// One Service port as seen by clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboundService {
    /// `name.namespace.svc.cluster.local`.
    pub hostname: String,
    pub cluster_ip: Option<IpAddr>,
    /// Service port.
    pub port: u16,
    pub protocol: Protocol,
    /// Every endpoint, with the TLS of the service's default (subset-less)
    /// traffic policy.
    pub endpoints: Vec<Endpoint>,
    /// DestinationRule subsets by name: the endpoints whose pod labels
    /// include the subset's labels, each with the TLS of that subset's
    /// merged traffic policy (`MergeSubsetTrafficPolicy`). Only a route that
    /// names the subset uses these. Empty when no DestinationRule applies.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub subsets: BTreeMap<String, Vec<Endpoint>>,
    /// The `VirtualService` routing this client applies to the port
    /// (see `crate::mesh_routes`); empty: every request or connection goes
    /// to the Service itself.
    #[serde(default, skip_serializing_if = "ServiceRoutes::is_empty")]
    pub routes: ServiceRoutes,
}

/// One backend of a Service port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub ip: IpAddr,
    /// Target (workload) port.
    pub port: u16,
    pub pod: String,
    pub tls: UpstreamTls,
}

/// How the client side talks to an endpoint.
///
/// Decided by the model (see `crate::client_tls`) in Istio's order: a
/// DestinationRule `tls` that applies wins; otherwise auto-mTLS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UpstreamTls {
    /// Plain bytes (endpoint has no sidecar, or DestinationRule `DISABLE`,
    /// or the server's mode is DISABLE under auto-mTLS).
    Disable,
    /// Mesh mTLS, ALPN `istio`; the server must present one of
    /// `identities` (SPIFFE IDs).
    IstioMutual {
        identities: Vec<String>,
        /// SNI to send, e.g. `outbound_.3306_._.mysql-server.pii-demo.svc.cluster.local`.
        sni: String,
    },
    /// DestinationRule `SIMPLE`: originate TLS (the app sent plaintext).
    Simple {
        /// SNI to send; `None` sends none (the endpoint address is then the
        /// name the certificate is checked against).
        #[serde(default)]
        sni: Option<String>,
        /// PEM CA bundle (`caCertificates`) the server chain must end in.
        /// Without it, and without `insecure_skip_verify`, the proxy refuses
        /// the connection (no system roots offline).
        #[serde(default)]
        ca_file: Option<PathBuf>,
        /// Accepted server SANs (DNS, IP or URI, exact); empty: the SNI.
        #[serde(default)]
        subject_alt_names: Vec<String>,
        /// Skip every check of the server certificate (`insecureSkipVerify`).
        #[serde(default)]
        insecure_skip_verify: bool,
    },
    /// DestinationRule `MUTUAL`: originate TLS with a client certificate.
    Mutual {
        #[serde(default)]
        sni: Option<String>,
        #[serde(default)]
        ca_file: Option<PathBuf>,
        #[serde(default)]
        subject_alt_names: Vec<String>,
        #[serde(default)]
        insecure_skip_verify: bool,
        /// PEM client certificate chain (`clientCertificate`).
        cert_file: PathBuf,
        /// PEM private key of `cert_file` (`privateKey`).
        key_file: PathBuf,
    },
    /// DestinationRule `SIMPLE` / `MUTUAL` with `credentialName`: originate
    /// TLS with the material of the Kubernetes Secret, carried in the config
    /// (a changed Secret reaches the proxy with the next config). Only a
    /// gateway, or a sidecar selected by the rule's `workloadSelector`, gets
    /// this (see `crate::client_tls`).
    Credential {
        /// SNI to send; `None` sends none.
        #[serde(default)]
        sni: Option<String>,
        /// Accepted server SANs (DNS, IP or URI, exact); empty: the SNI.
        #[serde(default)]
        subject_alt_names: Vec<String>,
        /// Skip every check of the server certificate (`insecureSkipVerify`).
        #[serde(default)]
        insecure_skip_verify: bool,
        /// Where the material came from, for logs and `auth check`:
        /// `Secret istio-system/client-credential`.
        source: String,
        /// PEM CA bundle the server chain must end in (`ca.crt` / `cacert`,
        /// from `<name>-cacert` else `<name>`); `None` only with
        /// `insecure_skip_verify`.
        #[serde(default)]
        ca: Option<PemSource>,
        /// The client certificate: present for `MUTUAL`, absent for `SIMPLE`.
        #[serde(default)]
        client: Option<ClientCertificate>,
    },
    /// The DestinationRule asks for TLS Veil cannot originate (MUTUAL without
    /// a client certificate, a `credentialName` whose Secret is missing or
    /// unusable); connections are refused and `reason` is logged, rather
    /// than sending plaintext the user did not ask for.
    Unsupported { reason: String },
}

/// A client certificate chain and its private key, as PEM text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClientCertificate {
    /// PEM certificate chain, leaf first (`tls.crt` / `cert`).
    pub cert: PemSource,
    /// PEM private key of the leaf (`tls.key` / `key`).
    pub key: PemSource,
}

/// Every [`UpstreamTls`] of `outbound` (endpoints, subsets, `NONE` entries)
/// with its PEM private key redacted; `None` when none carries one (the
/// shared section is then kept as is).
pub(crate) fn outbound_without_private_keys(outbound: &Outbound) -> Option<Outbound> {
    let carries = |t: &UpstreamTls| matches!(t, UpstreamTls::Credential { client: Some(c), .. } if matches!(c.key, PemSource::Pem(_)));
    let endpoints = outbound.services.iter().flat_map(|s| s.endpoints.iter().chain(s.subsets.values().flatten()));
    let entries = outbound.entries.iter().filter_map(|e| e.original_destination.as_ref());
    if !endpoints.map(|e| &e.tls).chain(entries).any(carries) {
        return None;
    }
    let mut copy = outbound.clone();
    for s in &mut copy.services {
        for e in s.endpoints.iter_mut().chain(s.subsets.values_mut().flatten()) {
            e.tls.redact_private_key();
        }
    }
    for t in copy.entries.iter_mut().filter_map(|e| e.original_destination.as_mut()) {
        t.redact_private_key();
    }
    Some(copy)
}

impl UpstreamTls {
    /// Replaces a private key carried as PEM text by `[redacted]` (for
    /// config dumps); file paths and certificates are kept.
    pub fn redact_private_key(&mut self) {
        if let UpstreamTls::Credential { client: Some(ClientCertificate { key: key @ PemSource::Pem(_), .. }), .. } = self {
            *key = PemSource::Pem("[redacted]".into());
        }
    }
}

pub use crate::config_entries::*;
pub use crate::config_gateway::*;
pub use crate::config_routes::*;
