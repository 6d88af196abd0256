//! Host names as DestinationRules, VirtualServices and ServiceEntries write them: short names
//! resolved in the resource's namespace (Istio resolves `reviews` in the rule's namespace),
//! Service FQDNs `name.namespace.svc.cluster.local`, and wildcard patterns (`*`, `*.local`,
//! `*.ns.svc.cluster.local`). Reference: spec §1.3 (`host`) and §1.6 (`hosts[]`).

use std::collections::BTreeSet;
use veil_api::Snapshot;

/// The DNS domain of Services (Istio's default `cluster.local`).
pub const DOMAIN: &str = "cluster.local";

/// `name.namespace.svc.cluster.local`.
pub fn service_fqdn(name: &str, namespace: &str) -> String {
    format!("{name}.{namespace}.svc.{DOMAIN}")
}

/// True for `*` and `*.suffix` patterns.
pub fn is_wildcard(host: &str) -> bool {
    host.starts_with('*')
}

/// Resolves `host` written in a resource of namespace `ns`: a short name becomes the Service
/// FQDN in `ns`; `name.svcns` (when `svcns` is in `namespaces`) and `name.svcns.svc` become
/// the FQDN in `svcns`; anything else (an FQDN, an external name, a wildcard) is kept.
pub fn resolve(host: &str, ns: &str, namespaces: &BTreeSet<String>) -> String {
    let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
    if is_wildcard(&host) {
        return host;
    }
    let labels: Vec<&str> = host.split('.').collect();
    match labels.as_slice() {
        [name] => service_fqdn(name, ns),
        [name, svc_ns] if namespaces.contains(*svc_ns) => service_fqdn(name, svc_ns),
        [name, svc_ns, "svc"] => service_fqdn(name, svc_ns),
        _ => host,
    }
}

/// `(name, namespace)` of a Service FQDN `name.namespace.svc.<domain>`.
pub fn service_of(fqdn: &str) -> Option<(&str, &str)> {
    let mut labels = fqdn.splitn(4, '.');
    let (name, ns, svc) = (labels.next()?, labels.next()?, labels.next()?);
    (svc == "svc" && labels.next().is_some_and(|d| !d.is_empty()) && !name.starts_with('*'))
        .then_some((name, ns))
}

/// True when the pattern `pattern` (exact, `*` or `*.suffix`) covers the concrete `host`.
/// `*.example.com` covers `a.example.com`, not `example.com` (Istio's wildcard rule).
pub fn covers(pattern: &str, host: &str) -> bool {
    if pattern == "*" || pattern == host {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        None => false,
    }
}

/// How specific a DestinationRule host is: exact hosts beat every wildcard, longer wildcards
/// beat shorter ones (`*.ns.svc.cluster.local` beats `*.local` beats `*`).
pub fn specificity(pattern: &str) -> usize {
    if is_wildcard(pattern) {
        pattern.len()
    } else {
        usize::MAX
    }
}

/// Namespaces the snapshot describes workloads or Services of (Services, pod-bearing kinds,
/// ServiceAccounts, Namespace objects). References into other namespaces cannot be judged.
pub fn described_namespaces(snapshot: &Snapshot) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = snapshot
        .namespaces
        .iter()
        .map(|n| n.meta.name.clone())
        .collect();
    out.extend(
        snapshot
            .services
            .iter()
            .map(|s| s.namespace_or_default().to_string()),
    );
    out.extend(
        snapshot
            .service_accounts
            .iter()
            .map(|s| s.namespace_or_default().to_string()),
    );
    out.extend(snapshot.workloads().into_iter().map(|w| w.namespace));
    out
}

/// Every namespace any resource of the snapshot is in, plus the namespace part of every
/// Service FQDN a DestinationRule names.
pub fn all_namespaces(snapshot: &Snapshot) -> BTreeSet<String> {
    let mut out = described_namespaces(snapshot);
    out.extend(
        snapshot
            .peer_authentications
            .iter()
            .map(|p| p.namespace_or_default().to_string()),
    );
    out.extend(
        snapshot
            .policies
            .iter()
            .map(|p| p.namespace_or_default().to_string()),
    );
    for dr in &snapshot.destination_rules {
        out.insert(dr.namespace_or_default().to_string());
        let host = resolve(&dr.spec.host, dr.namespace_or_default(), &BTreeSet::new());
        if let Some((_, ns)) = service_of(&host) {
            out.insert(ns.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_and_matches() {
        let known: BTreeSet<String> = ["shop".to_string()].into();
        assert_eq!(
            resolve("reviews", "default", &known),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(
            resolve("cart.shop", "default", &known),
            "cart.shop.svc.cluster.local"
        );
        assert_eq!(resolve("example.com", "default", &known), "example.com");
        assert_eq!(
            resolve("b.echo1.svc", "x", &known),
            "b.echo1.svc.cluster.local"
        );
        assert_eq!(
            service_of("b.echo1.svc.cluster.local"),
            Some(("b", "echo1"))
        );
        assert_eq!(service_of("www.googleapis.com"), None);
        assert!(covers("*.local", "b.echo1.svc.cluster.local"));
        assert!(covers("*", "x"));
        assert!(!covers("*.example.com", "example.com"));
        assert!(specificity("b.ns.svc.cluster.local") > specificity("*.ns.svc.cluster.local"));
        assert!(specificity("*.ns.svc.cluster.local") > specificity("*.local"));
    }
}
