//! VEIL0401 / VEIL0402: a DestinationRule host, or a VirtualService destination host, that
//! matches no Service or ServiceEntry. A host in a namespace the snapshot describes nothing
//! of (no Service, workload, ServiceAccount or Namespace object) cannot be judged and is
//! skipped, as is an external name when the snapshot has no Service or ServiceEntry at all;
//! wildcard DestinationRule hosts are meant to match broadly and are not checked.

use std::collections::BTreeSet;
use veil_api::{Destination, Source};

use super::hosts::{
    all_namespaces, covers, described_namespaces, is_wildcard, resolve, service_fqdn, service_of,
};
use super::policies::ServerSide;
use super::{resource_name, Draft};

struct Registry<'a> {
    server: &'a ServerSide<'a>,
    described: BTreeSet<String>,
    all: BTreeSet<String>,
    se_hosts: Vec<String>,
}

impl Registry<'_> {
    /// `None` when `fqdn` exists or cannot be judged; else the hint.
    fn missing(&self, fqdn: &str, own_ns: &str) -> Option<String> {
        if self.se_hosts.iter().any(|h| covers(h, fqdn)) {
            return None;
        }
        let services = &self.server.snapshot.services;
        if let Some((name, ns)) = service_of(fqdn) {
            if services
                .iter()
                .any(|s| s.meta.name == name && s.namespace_or_default() == ns)
                || !self.described.contains(ns)
            {
                return None;
            }
            let same_name = services.iter().find(|s| s.meta.name == name);
            let close = services
                .iter()
                .filter(|s| s.namespace_or_default() == ns)
                .min_by_key(|s| strsim::levenshtein(&s.meta.name, name));
            let close = close.filter(|s| strsim::levenshtein(&s.meta.name, name) <= 2);
            let guess = same_name
                .or(close)
                .map(|s| service_fqdn(&s.meta.name, s.namespace_or_default()));
            let short = format!("a short name resolves in the resource's own namespace ({own_ns})");
            return Some(match guess {
                Some(other) => format!("Did you mean {other}? Fix the host; {short}"),
                None => format!("Fix the host or add the Service {ns}/{name}; {short}"),
            });
        }
        let has_registry = !services.is_empty() || !self.se_hosts.is_empty();
        has_registry.then(|| format!("Add a ServiceEntry with host {fqdn} (external hosts must be declared), or fix the host"))
    }
}

/// Adds VEIL0401 for DestinationRule hosts and VEIL0402 for VirtualService destinations.
pub fn check(server: &ServerSide<'_>, out: &mut Vec<Draft>) {
    let snapshot = server.snapshot;
    let all = all_namespaces(snapshot);
    let se_hosts = snapshot
        .service_entries
        .iter()
        .flat_map(|se| {
            se.spec
                .hosts
                .iter()
                .map(|h| resolve(h, se.namespace_or_default(), &all))
        })
        .collect();
    let reg = Registry {
        server,
        described: described_namespaces(snapshot),
        all,
        se_hosts,
    };
    for dr in &snapshot.destination_rules {
        let ns = dr.namespace_or_default();
        if is_wildcard(dr.spec.host.trim()) {
            continue;
        }
        let fqdn = resolve(&dr.spec.host, ns, &reg.all);
        if let Some(hint) = reg.missing(&fqdn, ns) {
            let res = resource_name(&dr.kind, &dr.meta);
            out.push(Draft::warning("VEIL0401", &dr.source, "spec.host", res.clone()).says(
                format!("{res} has host {}, which matches no Service or ServiceEntry: the rule applies to nothing", shown(&dr.spec.host, &fqdn)),
                hint,
            ));
        }
    }
    for vs in &snapshot.virtual_services {
        let ns = vs.namespace_or_default();
        let res = resource_name(&vs.kind, &vs.meta);
        let mut dests: Vec<(String, &Destination)> = Vec::new();
        for (i, r) in vs.spec.http.iter().enumerate() {
            dests.extend(r.route.iter().enumerate().map(|(j, d)| {
                (
                    format!("spec.http[{i}].route[{j}].destination.host"),
                    &d.destination,
                )
            }));
        }
        for (i, r) in vs.spec.tcp.iter().enumerate() {
            dests.extend(r.route.iter().enumerate().map(|(j, d)| {
                (
                    format!("spec.tcp[{i}].route[{j}].destination.host"),
                    &d.destination,
                )
            }));
        }
        for (i, r) in vs.spec.tls.iter().enumerate() {
            dests.extend(r.route.iter().enumerate().map(|(j, d)| {
                (
                    format!("spec.tls[{i}].route[{j}].destination.host"),
                    &d.destination,
                )
            }));
        }
        let mut seen = BTreeSet::new();
        for (field, d) in dests {
            let fqdn = resolve(&d.host, ns, &reg.all);
            if !seen.insert(fqdn.clone()) {
                continue;
            }
            if let Some(hint) = reg.missing(&fqdn, ns) {
                push(out, &vs.source, field, &res, &d.host, &fqdn, hint);
            }
        }
    }
}

fn push(
    out: &mut Vec<Draft>,
    source: &Source,
    field: String,
    res: &str,
    host: &str,
    fqdn: &str,
    hint: String,
) {
    out.push(Draft::warning("VEIL0402", source, field, res.to_string()).says(
        format!("{res} routes to {}, which matches no Service or ServiceEntry: requests on this route fail with 503", shown(host, fqdn)),
        hint,
    ));
}

/// `host`, followed by what it resolves to when that differs.
fn shown(host: &str, fqdn: &str) -> String {
    if host.trim() == fqdn {
        host.trim().to_string()
    } else {
        format!("{} ({fqdn})", host.trim())
    }
}
