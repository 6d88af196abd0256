//! Gateway servers and `VirtualService` routes in the reduced form the
//! config builder needs, and how they bind to a gateway proxy.
//!
//! Follows istio.io/latest/docs/reference/config/networking/virtual-service
//! (`gateways`: short names resolve in the VirtualService's namespace; a
//! route's `match.port` selects the listener) and .../gateway (servers
//! select gateway pods by labels, in every namespace; a VirtualService binds
//! to a server only when one of its hosts meets one of the server's
//! `[ns/]host` entries; plaintext HTTP servers on one port merge; TLS
//! servers on one port are told apart by SNI; spec §1.5). An
//! `AUTO_PASSTHROUGH` server binds no route: its connections' SNI names
//! their destination (see `crate::auto_passthrough`).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use veil_api::ServerTlsSettings;

use crate::config::{GatewayListener, GatewayTlsMode, GatewayTlsServer, HttpRoute, Protocol, RouteDestination, TlsRoute};
use crate::gateway_rules::GatewayRules;
use crate::credentials::{gateway_mode, server_credential, CredentialSecret, Lookup};
use crate::registry::{selector_matches, Labels, Pod, Registry};

/// One `Gateway` server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayServer {
    /// `namespace/name` of the Gateway.
    pub gateway: String,
    pub selector: Labels,
    pub port: u16,
    pub protocol: Protocol,
    /// `[ns/]host` entries as written.
    pub hosts: Vec<String>,
    /// The bytes are HTTP once TLS (if any) is removed: protocol HTTP,
    /// HTTPS, HTTP2, GRPC or GRPC-WEB.
    #[serde(default)]
    pub http: bool,
    /// `tls` as written.
    #[serde(default)]
    pub tls: Option<ServerTlsSettings>,
    /// Directory of the Gateway's file (relative certificate paths).
    #[serde(default)]
    pub base_dir: Option<PathBuf>,
    /// The Secrets its `credentialName` may name, in every namespace
    /// (never serialised).
    #[serde(skip)]
    pub secrets: Vec<CredentialSecret>,
}

impl GatewayServer {
    /// The Gateway's namespace.
    pub fn namespace(&self) -> &str {
        self.gateway.split_once('/').map_or("", |(ns, _)| ns)
    }

    /// An HTTP server with `tls.httpsRedirect` (Istio `IsHTTPSRedirectServer`).
    fn redirects(&self) -> bool {
        self.http && self.protocol.is_http() && self.tls.as_ref().is_some_and(|t| t.https_redirect)
    }

    /// A server that speaks TLS to its clients (Istio `IsTLSServer`).
    fn is_tls(&self) -> bool {
        self.tls.is_some() && !self.redirects()
    }
}

/// One HTTP route of a `VirtualService`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VsHttpRoute {
    /// `namespace/name` of the VirtualService.
    pub source: String,
    pub namespace: String,
    pub hosts: Vec<String>,
    /// Gateways as `namespace/name` (already resolved), or `mesh`.
    pub gateways: Vec<String>,
    /// `None` matches every path; exact matches are expressed as a prefix
    /// plus `exact = true`.
    pub uri_prefix: Option<String>,
    pub exact: bool,
    pub port: Option<u16>,
    /// Destination host as written (short or FQDN).
    pub destination: String,
    pub destination_port: Option<u16>,
}

/// One TCP route of a `VirtualService`, or (with `sni_hosts`) one of its
/// `tls` routes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VsTcpRoute {
    pub source: String,
    pub namespace: String,
    pub gateways: Vec<String>,
    pub port: Option<u16>,
    pub destination: String,
    pub destination_port: Option<u16>,
    /// `tls[].match[].sniHosts` for a `tls` route; `None` for a `tcp` route.
    #[serde(default)]
    pub sni_hosts: Option<Vec<String>>,
}

/// Resolves a destination host as Istio does: a short name (no dot) is a
/// Service in the route's namespace; `name.ns` adds `svc.<domain>`.
pub fn resolve_host(host: &str, namespace: &str, domain: &str) -> String {
    match host.matches('.').count() {
        0 => format!("{host}.{namespace}.svc.{domain}"),
        1 => format!("{host}.svc.{domain}"),
        _ => host.to_string(),
    }
}

fn destination_port(registry: &Registry, host: &str, port: Option<u16>, domain: &str) -> Option<u16> {
    if port.is_some() {
        return port;
    }
    let svc = registry.services.iter().find(|s| s.hostname(domain) == host)?;
    match svc.ports.as_slice() {
        [only] => Some(only.port),
        _ => None,
    }
}

/// Whether host pattern `a` covers every name pattern `b` covers: `*`
/// covers all; `*.x.com` covers `a.x.com` and `*.a.x.com`, not `x.com`.
pub fn host_covers(a: &str, b: &str) -> bool {
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    if a == "*" {
        return true;
    }
    match a.strip_prefix('*') {
        Some(suffix) => b.len() > suffix.len() && b.ends_with(suffix),
        None => a == b,
    }
}

/// The more specific of two overlapping host patterns, or `None`.
fn intersect(a: &str, b: &str) -> Option<String> {
    if host_covers(a, b) {
        Some(b.to_ascii_lowercase())
    } else if host_covers(b, a) {
        Some(a.to_ascii_lowercase())
    } else {
        None
    }
}

/// A server host entry `[ns/]host` as (namespace filter, host).
fn split_host(entry: &str) -> (&str, &str) {
    entry.split_once('/').unwrap_or(("*", entry))
}

/// The server's host names without their `ns/` part, de-duplicated.
fn server_names(server: &GatewayServer) -> Vec<String> {
    let mut names: Vec<String> = server.hosts.iter().map(|h| split_host(h).1.to_ascii_lowercase()).collect();
    names.dedup();
    names
}

/// The hosts of a VirtualService in `vs_ns` that a server serves: each VS
/// host meets each server host whose namespace part admits `vs_ns` (`*`
/// any, `.` the Gateway's namespace, else that namespace).
pub(crate) fn bound_hosts(server: &GatewayServer, vs_ns: &str, vs_hosts: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for entry in &server.hosts {
        let (ns, host) = split_host(entry);
        let admitted = match ns {
            "*" => true,
            "." => vs_ns == server.namespace(),
            other => other == vs_ns,
        };
        if !admitted {
            continue;
        }
        for h in vs_hosts.iter().filter_map(|v| intersect(host, v)) {
            if !out.contains(&h) {
                out.push(h);
            }
        }
    }
    out
}

/// Inputs every listener needs besides the server.
struct Binding<'a> {
    pod: &'a Pod,
    rules: &'a GatewayRules<'a>,
    http: &'a [VsHttpRoute],
    tcp: &'a [VsTcpRoute],
    registry: &'a Registry,
    domain: &'a str,
}

impl Binding<'_> {
    fn destination(&self, host: &str, ns: &str, port: Option<u16>) -> Option<RouteDestination> {
        let host = resolve_host(host, ns, self.domain);
        let port = destination_port(self.registry, &host, port, self.domain)?;
        Some(RouteDestination { host, port })
    }

    fn http_routes(&self, server: &GatewayServer) -> Vec<HttpRoute> {
        let mut out: Vec<HttpRoute> = Vec::new();
        for r in self.http.iter().filter(|r| r.gateways.contains(&server.gateway)) {
            if r.port.is_some_and(|p| p != server.port) {
                continue;
            }
            let hosts = bound_hosts(server, &r.namespace, &r.hosts);
            if hosts.is_empty() {
                continue;
            }
            let Some(destination) = self.destination(&r.destination, &r.namespace, r.destination_port) else { continue };
            let route = HttpRoute {
                hosts,
                uri_prefix: r.uri_prefix.clone().unwrap_or_else(|| "/".into()),
                exact: r.exact,
                destination,
                source: r.source.clone(),
            };
            if !out.contains(&route) {
                out.push(route);
            }
        }
        out
    }

    fn l4_routes<'b>(&'b self, server: &'b GatewayServer) -> impl Iterator<Item = &'b VsTcpRoute> + 'b {
        self.tcp
            .iter()
            .filter(move |r| r.gateways.contains(&server.gateway) && r.port.is_none_or(|p| p == server.port))
    }

    fn tcp_route(&self, server: &GatewayServer) -> Option<RouteDestination> {
        self.l4_routes(server)
            .filter(|r| r.sni_hosts.is_none())
            .find_map(|r| self.destination(&r.destination, &r.namespace, r.destination_port))
    }

    fn tls_routes(&self, server: &GatewayServer) -> Vec<TlsRoute> {
        let mut out = Vec::new();
        for r in self.l4_routes(server) {
            let Some(snis) = &r.sni_hosts else { continue };
            let sni_hosts = bound_hosts(server, &r.namespace, snis);
            if sni_hosts.is_empty() {
                continue;
            }
            if let Some(destination) = self.destination(&r.destination, &r.namespace, r.destination_port) {
                out.push(TlsRoute { sni_hosts, destination, source: r.source.clone() });
            }
        }
        out
    }

    fn tls_server(&self, server: &GatewayServer, taken: &[String]) -> GatewayTlsServer {
        let mut names: Vec<String> = server_names(server).into_iter().filter(|n| !taken.contains(n)).collect();
        if names.iter().any(|n| n == "*") {
            names.clear();
        }
        let mut out = GatewayTlsServer {
            gateway: server.gateway.clone(),
            sni_hosts: names,
            mode: GatewayTlsMode::Passthrough,
            http: server.http,
            credential: None,
            http_routes: Vec::new(),
            http_rules: Vec::new(),
            tcp_route: None,
            tls_routes: Vec::new(),
            error: None,
        };
        let tls = server.tls.clone().unwrap_or_default();
        let lookup = Lookup {
            proxy_namespace: &self.pod.namespace,
            gateway_namespace: server.namespace(),
            base_dir: server.base_dir.as_deref(),
            secrets: &server.secrets,
        };
        let resolved = gateway_mode(tls.mode).and_then(|mode| Ok((mode, server_credential(&tls, mode, lookup)?)));
        match resolved {
            Err(e) => out.error = Some(format!("Gateway {} server port {}: {e}", server.gateway, server.port)),
            Ok((GatewayTlsMode::Passthrough, _)) => out.tls_routes = self.tls_routes(server),
            Ok((GatewayTlsMode::AutoPassthrough, _)) => out.mode = GatewayTlsMode::AutoPassthrough,
            Ok((mode, credential)) => {
                out.mode = mode;
                out.credential = credential;
                if server.http {
                    out.http_routes = self.http_routes(server);
                    out.http_rules = self.rules.for_server(self.pod, server);
                } else {
                    out.tcp_route = self.tcp_route(server);
                }
            }
        }
        out
    }
}

/// The listeners of one gateway pod: every server of every Gateway whose
/// selector matches the pod, with the routes bound to that Gateway.
///
/// A TLS server whose certificate cannot be found still appears, with
/// `error` set and no credential, so that the proxy refuses its handshakes
/// and logs why while the other servers keep serving. Of two TLS servers on
/// one port with the same host, the first keeps it (Istio `CheckDuplicates`).
pub fn gateway_listeners(
    pod: &Pod,
    rules: &GatewayRules,
    servers: &[GatewayServer],
    http: &[VsHttpRoute],
    tcp: &[VsTcpRoute],
    registry: &Registry,
    domain: &str,
) -> Vec<GatewayListener> {
    let binding = Binding { pod, rules, http, tcp, registry, domain };
    let mut listeners: Vec<GatewayListener> = Vec::new();
    for server in servers.iter().filter(|s| selector_matches(&s.selector, &pod.labels)) {
        let idx = match listeners.iter().position(|l| l.port == server.port) {
            Some(i) => i,
            None => {
                listeners.push(GatewayListener { port: server.port, protocol: server.protocol, ..GatewayListener::default() });
                listeners.len() - 1
            }
        };
        let Some(listener) = listeners.get_mut(idx) else { continue };
        if server.is_tls() {
            let taken: Vec<String> = listener.tls_servers.iter().flat_map(|s| s.sni_hosts.iter().cloned()).collect();
            let tls = binding.tls_server(server, &taken);
            let duplicate = tls.sni_hosts.is_empty()
                && (server_names(server).iter().all(|n| taken.contains(n))
                    || listener.tls_servers.iter().any(|s| s.sni_hosts.is_empty()));
            if !duplicate {
                listener.tls_servers.push(tls);
            }
            continue;
        }
        if server.redirects() {
            for name in server_names(server) {
                if !listener.https_redirect_hosts.contains(&name) {
                    listener.https_redirect_hosts.push(name);
                }
            }
        }
        for route in binding.http_routes(server) {
            if !listener.http_routes.contains(&route) {
                listener.http_routes.push(route);
            }
        }
        if server.http {
            for rule in binding.rules.for_server(pod, server) {
                if !listener.http_rules.contains(&rule) {
                    listener.http_rules.push(rule);
                }
            }
        }
        if listener.tcp_route.is_none() {
            listener.tcp_route = binding.tcp_route(server);
        }
    }
    listeners
}
