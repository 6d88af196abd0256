//! VEIL0203: a DestinationRule that originates TLS (`SIMPLE` or `MUTUAL`) on a ServiceEntry
//! port already declared `HTTPS` or `TLS`. The application's own TLS then travels inside a
//! second TLS session (Istio issue 17031, pain point 10; the 1.x egress TLS-origination
//! sample did exactly this and broke every HTTPS call on port 443).

use std::collections::BTreeSet;
use veil_api::{ClientTlsMode, Protocol};

use super::destination_rules::tls_settings;
use super::hosts::{all_namespaces, covers, resolve};
use super::policies::ServerSide;
use super::{resource_name, Draft};

/// Adds VEIL0203 for every DestinationRule tls block that applies to an HTTPS/TLS
/// ServiceEntry port of its host.
pub fn check(server: &ServerSide<'_>, out: &mut Vec<Draft>) {
    let snapshot = server.snapshot;
    let namespaces = all_namespaces(snapshot);
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
                .filter(|p| matches!(p.protocol, Some(Protocol::Https | Protocol::Tls)));
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
                        format!("If the application sends plain HTTP, declare an HTTP port on the ServiceEntry (e.g. number: 80, protocol: HTTP, targetPort: {}) and originate TLS in the DestinationRule on that port; if it already speaks TLS, drop the DestinationRule tls for port {}", port.number, port.number),
                    ));
                }
            }
        }
    }
}
