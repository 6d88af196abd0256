//! The full `VirtualService` HTTP rules of one gateway server, built with
//! the sidecar's rule code (`crate::mesh_routes`).
//!
//! Follows Istio's gateway route generation
//! (pilot/pkg/networking/core/gateway.go, `buildGatewayVirtualHosts`): a
//! VirtualService applies when its `gateways` names the server's Gateway
//! (short names resolve in the VirtualService's namespace) and one of its
//! hosts meets one of the server's `[ns/]host` entries; VirtualServices are
//! taken oldest first. A match entry applies when its `port` is the
//! server's, its `gateways` (when set) name the Gateway, and its
//! `sourceLabels` / `sourceNamespace` fit the gateway pod. Rules after the
//! first catch-all are left out.

use crate::build::MeshInput;
use crate::config::{GatewayHttpRule, HttpMatch};
use crate::mesh_routes::{http_match, is_catch_all, MeshRoutes, VirtualService};
use crate::registry::{selector_matches, Pod};
use crate::routes::{bound_hosts, GatewayServer};

/// The VirtualServices of one [`MeshInput`] as gateways read them.
pub struct GatewayRules<'a> {
    /// Every VirtualService, oldest first.
    services: Vec<&'a VirtualService>,
    routes: MeshRoutes<'a>,
}

/// `name` as `namespace/name` (a short name is in `ns`); `mesh` as is.
fn qualify(name: &str, ns: &str) -> String {
    if name == "mesh" || name.contains('/') {
        name.to_string()
    } else {
        format!("{ns}/{name}")
    }
}

impl<'a> GatewayRules<'a> {
    /// Indexes the VirtualServices of `input`.
    pub fn new(input: &'a MeshInput) -> Self {
        let mut services: Vec<&VirtualService> = input.virtual_services.iter().collect();
        services.sort_by(|a, b| (&a.created, &a.namespace, &a.name).cmp(&(&b.created, &b.namespace, &b.name)));
        GatewayRules { services, routes: MeshRoutes::new(input) }
    }

    /// The rules `server` applies on gateway pod `pod`, first match wins.
    pub fn for_server(&self, pod: &Pod, server: &GatewayServer) -> Vec<GatewayHttpRule> {
        let mut out = Vec::new();
        for vs in &self.services {
            let names_gateway = |gws: &[String]| gws.iter().any(|g| qualify(g, &vs.namespace) == server.gateway);
            if !names_gateway(&vs.spec.gateways) {
                continue;
            }
            let hosts = bound_hosts(server, &vs.namespace, &vs.spec.hosts);
            if hosts.is_empty() {
                continue;
            }
            for rule in &vs.spec.http {
                let matches: Vec<HttpMatch> = rule
                    .matches
                    .iter()
                    .filter(|m| {
                        m.port.is_none_or(|p| p == u32::from(server.port))
                            && (m.gateways.is_empty() || names_gateway(&m.gateways))
                            && selector_matches(&m.source_labels, &pod.labels)
                            && m.source_namespace.as_ref().is_none_or(|n| *n == pod.namespace)
                    })
                    .map(http_match)
                    .collect();
                if !rule.matches.is_empty() && matches.is_empty() {
                    continue;
                }
                let catch_all = matches.is_empty() || matches.iter().any(is_catch_all);
                let matches = if catch_all { Vec::new() } else { matches };
                out.push(GatewayHttpRule {
                    hosts: hosts.clone(),
                    source: vs.id(),
                    rule: self.routes.http_rule(vs, rule, matches, server.port),
                });
                if catch_all {
                    break;
                }
            }
        }
        out
    }
}
