//! VEIL0203: a DestinationRule that originates TLS (`SIMPLE` or `MUTUAL`) on a ServiceEntry
//! port already declared `HTTPS` or `TLS`. The application's own TLS then travels inside a
//! second TLS session (Istio issue 17031, pain point 10; the 1.x egress TLS-origination
//! sample did exactly this and broke every HTTPS call on port 443).
//!
//! Not a finding: the egress-gateway pattern (seed 004, case 40, Istio's "egress gateway TLS
//! origination" task), where a VirtualService `http` route bound to a Gateway sends requests
//! to that port. The gateway has terminated the sidecar's mesh mTLS and routes plain HTTP
//! requests, so the DestinationRule's TLS is the only TLS on the wire. An `http` route on
//! sidecars alone (`mesh`, e.g. case 07's port 80 → 443 rewrite) does not clear the port:
//! there the sidecars that originate also carry the applications' own TLS to it.

use std::collections::BTreeSet;
use veil_api::{ClientTlsMode, Protocol, Resource, ServiceEntrySpec, Snapshot};

use super::destination_rules::tls_settings;
use super::hosts::{all_namespaces, covers, resolve};
use super::policies::ServerSide;
use super::{resource_name, Draft};

/// `ns/name` of a VirtualService `gateways` entry (`mesh` kept).
fn qualify(gateway: &str, vs_ns: &str) -> String {
    if gateway == "mesh" || gateway.contains('/') {
        gateway.to_string()
    } else {
        format!("{vs_ns}/{gateway}")
    }
}

/// `(host, port)` of every destination of a VirtualService `http` route that applies on an
/// existing Gateway (the route's own `match.gateways`, else the VirtualService's), hosts
/// resolved in the VirtualService's namespace. A destination without a port keeps the
/// match's `port` (the gateway listener), else `None`.
fn gateway_http_destinations(snapshot: &Snapshot, namespaces: &BTreeSet<String>) -> Vec<(String, Option<u32>)> {
    let gateways: BTreeSet<String> = snapshot
        .gateways
        .iter()
        .map(|g| format!("{}/{}", g.namespace_or_default(), g.meta.name))
        .collect();
    let mut out = Vec::new();
    for vs in &snapshot.virtual_services {
        let ns = vs.namespace_or_default();
        let bound: Vec<String> = match vs.spec.gateways.as_slice() {
            [] => vec!["mesh".to_string()],
            list => list.iter().map(|g| qualify(g, ns)).collect(),
        };
        let at_gateway = |list: &[String]| list.iter().any(|g| gateways.contains(g));
        for route in &vs.spec.http {
            let ports: Vec<Option<u32>> = if route.matches.is_empty() {
                if at_gateway(&bound) { vec![None] } else { Vec::new() }
            } else {
                route
                    .matches
                    .iter()
                    .filter(|m| {
                        let own: Vec<String> = m.gateways.iter().map(|g| qualify(g, ns)).collect();
                        at_gateway(if own.is_empty() { &bound } else { &own })
                    })
                    .map(|m| m.port)
                    .collect()
            };
            for listener in ports {
                for d in &route.route {
                    let host = resolve(&d.destination.host, ns, namespaces);
                    out.push((host, d.destination.port.map(|p| p.number).or(listener)));
                }
            }
        }
    }
    out
}

/// True when a gateway `http` route sends requests to port `port` of `se_host` (an omitted
/// destination port counts when the entry has that port only).
fn fed_by_gateway(routes: &[(String, Option<u32>)], se: &Resource<ServiceEntrySpec>, se_host: &str, port: u32) -> bool {
    let only_port = se.spec.ports.len() == 1;
    routes
        .iter()
        .any(|(host, p)| covers(se_host, host) && (*p == Some(port) || (p.is_none() && only_port)))
}

/// Adds VEIL0203 for every DestinationRule tls block that applies to an HTTPS/TLS
/// ServiceEntry port of its host.
pub fn check(server: &ServerSide<'_>, out: &mut Vec<Draft>) {
    let snapshot = server.snapshot;
    let namespaces = all_namespaces(snapshot);
    let gateway_routes = gateway_http_destinations(snapshot, &namespaces);
    for dr in &snapshot.destination_rules {
        let host = resolve(&dr.spec.host, dr.namespace_or_default(), &namespaces);
        let res = resource_name(&dr.kind, &dr.meta);
        let mut seen = BTreeSet::new();
        for se in &snapshot.service_entries {
            let se_hosts = se
                .spec
                .hosts
                .iter()
                .map(|h| resolve(h, se.namespace_or_default(), &namespaces));
            let Some(se_host) = se_hosts
                .into_iter()
                .find(|h| covers(&host, h) || covers(h, &host))
            else {
                continue;
            };
            let tls_ports = se
                .spec
                .ports
                .iter()
                .filter(|p| matches!(p.protocol, Some(Protocol::Https | Protocol::Tls)))
                .filter(|p| !fed_by_gateway(&gateway_routes, se, &se_host, p.number));
            for port in tls_ports {
                let originating = tls_settings(dr).into_iter().filter(|s| {
                    matches!(s.tls.mode, ClientTlsMode::Simple | ClientTlsMode::Mutual)
                        && s.applies_to_port(port.number)
                });
                for s in originating {
                    if !seen.insert((s.field.clone(), port.number)) {
                        continue;
                    }
                    let protocol = port.protocol.map(|p| p.as_str()).unwrap_or("TLS");
                    let se_res = resource_name(&se.kind, &se.meta);
                    out.push(Draft::warning("VEIL0203", &dr.source, s.field.clone(), res.clone()).says(
                        format!("{res} originates TLS (tls.mode {}) on port {} of {se_host}, which {se_res} ({}) already declares {protocol}: an application that speaks TLS itself gets it wrapped in a second TLS session (double TLS, Istio issue 17031) and the server cannot read it", s.tls.mode, port.number, se.source),
                        format!("If the application sends plain HTTP, declare an HTTP port on the ServiceEntry (e.g. number: 80, protocol: HTTP, targetPort: {}) and originate TLS in the DestinationRule on that port, or route it through an egress gateway whose VirtualService http route sends to port {} (the gateway then originates); if it already speaks TLS, drop the DestinationRule tls for port {}", port.number, port.number, port.number),
                    ));
                }
            }
        }
    }
}
