//! Gateway servers and `VirtualService` routes in the reduced form the
//! config builder needs, and how they bind to a gateway proxy.
//!
//! Follows istio.io/latest/docs/reference/config/networking/virtual-service
//! (`gateways`: short names resolve in the VirtualService's namespace; a
//! route's `match.port` selects the listener) and .../gateway (servers
//! select gateway pods by labels, in every namespace).

use serde::{Deserialize, Serialize};

use crate::config::{GatewayListener, HttpRoute, Protocol, RouteDestination};
use crate::registry::{selector_matches, Labels, Pod, Registry};

/// One `Gateway` server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayServer {
    /// `namespace/name` of the Gateway.
    pub gateway: String,
    pub selector: Labels,
    pub port: u16,
    pub protocol: Protocol,
    pub hosts: Vec<String>,
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

/// One TCP route of a `VirtualService`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VsTcpRoute {
    pub source: String,
    pub namespace: String,
    pub gateways: Vec<String>,
    pub port: Option<u16>,
    pub destination: String,
    pub destination_port: Option<u16>,
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

/// The listeners of one gateway pod: every server of every Gateway whose
/// selector matches the pod, with the routes bound to that Gateway.
pub fn gateway_listeners(
    pod: &Pod,
    servers: &[GatewayServer],
    http: &[VsHttpRoute],
    tcp: &[VsTcpRoute],
    registry: &Registry,
    domain: &str,
) -> Vec<GatewayListener> {
    let mut listeners: Vec<GatewayListener> = Vec::new();
    for server in servers.iter().filter(|s| selector_matches(&s.selector, &pod.labels)) {
        let idx = match listeners.iter().position(|l| l.port == server.port) {
            Some(i) => i,
            None => {
                listeners.push(GatewayListener {
                    port: server.port,
                    protocol: server.protocol,
                    http_routes: Vec::new(),
                    tcp_route: None,
                });
                listeners.len() - 1
            }
        };
        let Some(listener) = listeners.get_mut(idx) else { continue };
        for r in http.iter().filter(|r| r.gateways.contains(&server.gateway)) {
            if r.port.is_some_and(|p| p != server.port) {
                continue;
            }
            let host = resolve_host(&r.destination, &r.namespace, domain);
            let Some(port) = destination_port(registry, &host, r.destination_port, domain) else { continue };
            let route = HttpRoute {
                hosts: r.hosts.clone(),
                uri_prefix: r.uri_prefix.clone().unwrap_or_else(|| "/".into()),
                destination: RouteDestination { host, port },
                source: r.source.clone(),
            };
            if !listener.http_routes.contains(&route) {
                listener.http_routes.push(route);
            }
        }
        if listener.tcp_route.is_none() {
            if let Some(r) = tcp
                .iter()
                .find(|r| r.gateways.contains(&server.gateway) && r.port.is_none_or(|p| p == server.port))
            {
                let host = resolve_host(&r.destination, &r.namespace, domain);
                if let Some(port) = destination_port(registry, &host, r.destination_port, domain) {
                    listener.tcp_route = Some(RouteDestination { host, port });
                }
            }
        }
    }
    listeners
}
