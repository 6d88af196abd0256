//! The gateway part of `ProxyConfig`: listeners, TLS servers, their
//! credentials and routes. Re-exported from `crate::config`.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

use crate::config::{HttpRouteRule, Protocol, ProxyConfig};

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
    /// HTTP routes in reduced form (host and URI only), for summaries and
    /// hand-written configs; the proxy routes with `http_rules` when it is
    /// not empty, else with these.
    #[serde(default)]
    pub http_routes: Vec<HttpRoute>,
    /// The full `VirtualService` HTTP rules bound to this port's plaintext
    /// servers, first match wins; no match: 404.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_rules: Vec<GatewayHttpRule>,
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

/// One `VirtualService` `http[]` rule bound to a gateway server: the same
/// [`HttpRouteRule`] sidecars apply, for requests whose `Host` (without
/// port) matches one of `hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayHttpRule {
    /// Host patterns (`*`, `*.example.com`, exact): the VirtualService's
    /// hosts that meet the server's.
    pub hosts: Vec<String>,
    /// `namespace/name` of the VirtualService.
    pub source: String,
    pub rule: HttpRouteRule,
}

impl From<&HttpRoute> for GatewayHttpRule {
    /// The rule a reduced route stands for: its URI match and one
    /// destination, Istio's default retries.
    fn from(route: &HttpRoute) -> Self {
        let uri = if route.exact {
            crate::config::StringMatch::Exact(route.uri_prefix.clone())
        } else {
            crate::config::StringMatch::Prefix(route.uri_prefix.clone())
        };
        let destination = crate::config::WeightedDestination {
            host: route.destination.host.clone(),
            port: route.destination.port,
            subset: None,
            weight: 1,
        };
        GatewayHttpRule {
            hosts: route.hosts.clone(),
            source: route.source.clone(),
            rule: HttpRouteRule {
                matches: vec![crate::config::HttpMatch { uri: Some(uri), ..Default::default() }],
                destinations: vec![destination],
                ..HttpRouteRule::default()
            },
        }
    }
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
            http_rules: Vec::new(),
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
    /// Do not terminate, and need no `VirtualService`: the SNI is Istio's
    /// cluster name `outbound_.<port>_.<subset>_.<hostname>` and names the
    /// Service port and subset whose endpoints get the client's TLS bytes
    /// (see `crate::auto_passthrough`).
    AutoPassthrough,
}

impl GatewayTlsMode {
    /// True for the modes that forward the client's TLS untouched
    /// (PASSTHROUGH, AUTO_PASSTHROUGH) and so present no certificate.
    pub fn passes_through(self) -> bool {
        matches!(self, GatewayTlsMode::Passthrough | GatewayTlsMode::AutoPassthrough)
    }
}

impl std::fmt::Display for GatewayTlsMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GatewayTlsMode::Simple => "SIMPLE",
            GatewayTlsMode::Mutual => "MUTUAL",
            GatewayTlsMode::OptionalMutual => "OPTIONAL_MUTUAL",
            GatewayTlsMode::IstioMutual => "ISTIO_MUTUAL",
            GatewayTlsMode::Passthrough => "PASSTHROUGH",
            GatewayTlsMode::AutoPassthrough => "AUTO_PASSTHROUGH",
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
/// for Istio (`GetSNIHostsForServer`, spec §1.5). An AUTO_PASSTHROUGH
/// server matches a cluster-name SNI whose hostname its hosts cover, and
/// ranks as an exact match (Istio gives it one filter chain per cluster
/// name). No match: the handshake is refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayTlsServer {
    /// `namespace/name` of the Gateway.
    pub gateway: String,
    /// SNI names: the server's `hosts` without their `ns/` part; empty for
    /// `*` (any SNI, or none). For AUTO_PASSTHROUGH they filter the
    /// hostname inside the cluster-name SNI instead (Istio:
    /// `service.Hostname.SubsetOf(host)`).
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
    /// HTTP routes after termination in reduced form (see
    /// [`GatewayListener::http_routes`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_routes: Vec<HttpRoute>,
    /// The full HTTP rules after termination, first match wins; no match: 404.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_rules: Vec<GatewayHttpRule>,
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
    /// and TLS-origination private key is replaced by `[redacted]`, as Istio's config dump
    /// redacts secrets. Certificates and file paths are kept.
    pub fn without_private_keys(&self) -> ProxyConfig {
        let mut copy = self.clone();
        let servers = copy.gateway.iter_mut().flat_map(|g| g.listeners.iter_mut()).flat_map(|l| l.tls_servers.iter_mut());
        for credential in servers.filter_map(|s| s.credential.as_mut()) {
            if let PemSource::Pem(key) = &mut credential.key {
                *key = "[redacted]".into();
            }
        }
        if let Some(outbound) = crate::config::outbound_without_private_keys(&copy.outbound) {
            copy.outbound = std::sync::Arc::new(outbound);
        }
        copy
    }
}
