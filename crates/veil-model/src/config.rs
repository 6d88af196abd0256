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
    pub outbound: Outbound,
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
}

impl Outbound {
    /// The service an original destination belongs to: by ClusterIP and
    /// Service port, or by endpoint IP and target port.
    pub fn lookup(&self, ip: IpAddr, port: u16) -> Option<(&OutboundService, Option<&Endpoint>)> {
        if let Some(s) = self
            .services
            .iter()
            .find(|s| s.cluster_ip == Some(ip) && s.port == port)
        {
            return Some((s, None));
        }
        self.services.iter().find_map(|s| {
            s.endpoints
                .iter()
                .find(|e| e.ip == ip && e.port == port)
                .map(|e| (s, Some(e)))
        })
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
    /// The DestinationRule asks for TLS Veil cannot originate (for example
    /// `credentialName`); connections are refused and `reason` is logged,
    /// rather than sending plaintext the user did not ask for.
    Unsupported { reason: String },
}

/// The servers of a gateway proxy.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GatewayConfig {
    pub listeners: Vec<GatewayListener>,
}

/// One port a gateway listens on (the gateway Service's target port).
///
/// A port with `tls_servers` is a TLS port: the ClientHello's SNI picks one
/// server (see [`GatewayTlsServer`]). Otherwise it serves plaintext HTTP
/// (`http_routes`, `https_redirect_hosts`) or TCP (`tcp_route`) by `protocol`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayListener {
    pub port: u16,
    pub protocol: Protocol,
    /// HTTP routes, first match wins (for HTTP listeners).
    #[serde(default)]
    pub http_routes: Vec<HttpRoute>,
    /// Destination of TCP listeners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_route: Option<RouteDestination>,
    /// Host patterns of plaintext HTTP servers with `tls.httpsRedirect`:
    /// a request for one of them gets a 301 to `https://<host><path>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub https_redirect_hosts: Vec<String>,
    /// TLS servers on this port (HTTPS, TLS), told apart by SNI.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_servers: Vec<GatewayTlsServer>,
}

/// One `VirtualService` HTTP route bound to a gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpRoute {
    /// Host names the route serves (`*` for any); compared with the `Host`
    /// header without port.
    pub hosts: Vec<String>,
    /// URI prefix the request path must start with (`/` for all); with
    /// `exact`, the whole path must equal it.
    pub uri_prefix: String,
    /// `uri.exact` rather than `uri.prefix`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exact: bool,
    pub destination: RouteDestination,
    /// `namespace/name` of the VirtualService it came from.
    pub source: String,
}

/// Where a route sends traffic: a Service host name and port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteDestination {
    /// FQDN, `name.namespace.svc.cluster.local`.
    pub host: String,
    pub port: u16,
}

impl Default for GatewayListener {
    /// An empty plaintext HTTP listener on port 0.
    fn default() -> Self {
        GatewayListener {
            port: 0,
            protocol: Protocol::Http,
            http_routes: Vec::new(),
            tcp_route: None,
            https_redirect_hosts: Vec::new(),
            tls_servers: Vec::new(),
        }
    }
}

/// How a gateway TLS server treats the client's TLS (`servers[].tls.mode`).
///
/// Follows <https://istio.io/latest/docs/reference/config/networking/gateway/#ServerTLSSettings-TLSmode>.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum GatewayTlsMode {
    /// Terminate TLS; no client certificate asked for.
    Simple,
    /// Terminate TLS; a client certificate from the server's CA is required.
    Mutual,
    /// Terminate TLS; a client certificate is asked for and, when sent,
    /// must chain to the server's CA.
    OptionalMutual,
    /// Terminate mesh mTLS with the gateway's own workload certificate.
    IstioMutual,
    /// Do not terminate: forward the client's TLS bytes by SNI
    /// (`VirtualService` `tls` routes).
    Passthrough,
}

impl std::fmt::Display for GatewayTlsMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GatewayTlsMode::Simple => "SIMPLE",
            GatewayTlsMode::Mutual => "MUTUAL",
            GatewayTlsMode::OptionalMutual => "OPTIONAL_MUTUAL",
            GatewayTlsMode::IstioMutual => "ISTIO_MUTUAL",
            GatewayTlsMode::Passthrough => "PASSTHROUGH",
        })
    }
}

/// PEM material: carried in the config (from a Kubernetes Secret), or a
/// file the proxy reads (and re-reads when its modification time changes).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PemSource {
    /// PEM text.
    Pem(String),
    /// Path of a PEM file on the proxy's host.
    File(PathBuf),
}

impl std::fmt::Debug for PemSource {
    /// Never prints PEM text (it may be a private key).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PemSource::Pem(text) => write!(f, "Pem(<{} bytes>)", text.len()),
            PemSource::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// The certificate a terminating gateway server presents, and the CA its
/// clients' certificates must chain to (MUTUAL, OPTIONAL_MUTUAL).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServerCredential {
    /// Where the material came from, for logs: `Secret istio-system/name`
    /// or `files`.
    pub source: String,
    /// PEM certificate chain, leaf first (`tls.crt`/`cert`, `serverCertificate`).
    pub cert: PemSource,
    /// PEM private key of the leaf (`tls.key`/`key`, `privateKey`).
    pub key: PemSource,
    /// PEM CA bundle for client certificates (`ca.crt`/`cacert`, the
    /// `<name>-cacert` Secret, `caCertificates`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PemSource>,
}

/// One TLS server (`Gateway` server with protocol HTTPS or TLS) on a
/// gateway port.
///
/// The server for a connection is the one whose `sni_hosts` match the
/// ClientHello's SNI most specifically (exact, then the longest wildcard
/// suffix, then a server with no `sni_hosts`), as Envoy picks filter chains
/// for Istio (`GetSNIHostsForServer`, spec §1.5). No match: the handshake
/// is refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayTlsServer {
    /// `namespace/name` of the Gateway.
    pub gateway: String,
    /// SNI names: the server's `hosts` without their `ns/` part; empty for
    /// `*` (any SNI, or none).
    #[serde(default)]
    pub sni_hosts: Vec<String>,
    pub mode: GatewayTlsMode,
    /// After termination the bytes are HTTP (server protocol HTTPS, HTTP2,
    /// GRPC; ALPN `h2`, `http/1.1`) routed by `http_routes`; otherwise they
    /// go to `tcp_route`.
    #[serde(default)]
    pub http: bool,
    /// What the server presents (terminating modes other than ISTIO_MUTUAL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<ServerCredential>,
    /// HTTP routes after termination, first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_routes: Vec<HttpRoute>,
    /// Destination of terminated non-HTTP TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_route: Option<RouteDestination>,
    /// PASSTHROUGH routes by SNI, first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_routes: Vec<TlsRoute>,
    /// Why this server cannot serve (for example its `credentialName`
    /// Secret is missing); its handshakes are refused and this is logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One `VirtualService` `tls` route bound to a PASSTHROUGH server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TlsRoute {
    /// SNI patterns (`match.sniHosts`: `*`, `*.example.com`, exact).
    pub sni_hosts: Vec<String>,
    pub destination: RouteDestination,
    /// `namespace/name` of the VirtualService it came from.
    pub source: String,
}

impl ProxyConfig {
    /// A copy for display (admin `/config_dump`): the PEM of every gateway
    /// private key is replaced by `[redacted]`, as Istio's config dump
    /// redacts secrets. Certificates and file paths are kept.
    pub fn without_private_keys(&self) -> ProxyConfig {
        let mut copy = self.clone();
        let servers = copy.gateway.iter_mut().flat_map(|g| g.listeners.iter_mut()).flat_map(|l| l.tls_servers.iter_mut());
        for credential in servers.filter_map(|s| s.credential.as_mut()) {
            if let PemSource::Pem(key) = &mut credential.key {
                *key = "[redacted]".into();
            }
        }
        copy
    }
}
