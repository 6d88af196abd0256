//! VEIL0301: a Gateway `credentialName` whose Secret exists only in the Gateway resource's
//! namespace. Istio reads `credentialName` from the namespace of the gateway *pods*, not of
//! the Gateway resource (spec §1.5; Istio issues 27740 and 25018, pain point 8), so the
//! server's TLS handshake fails with "cannot find secret".

use std::collections::BTreeSet;

use super::policies::ServerSide;
use super::{resource_name, Draft, ROOT_NAMESPACE};

/// `istio:` label values of the gateways Istio installs in its root namespace.
const INSTALLED_GATEWAYS: [&str; 4] = [
    "ingressgateway",
    "egressgateway",
    "ingress",
    "eastwestgateway",
];

/// Adds VEIL0301 for every Gateway server whose credential Secret is in the wrong namespace.
pub fn check(server: &ServerSide<'_>, out: &mut Vec<Draft>) {
    let snapshot = server.snapshot;
    for gw in &snapshot.gateways {
        let gw_ns = gw.namespace_or_default();
        let sel = &gw.spec.selector;
        let mut pod_namespaces: BTreeSet<&str> = server
            .workloads
            .iter()
            .filter(|(w, _)| {
                !sel.is_empty() && sel.iter().all(|(k, v)| w.pod_labels.get(k) == Some(v))
            })
            .map(|(w, _)| w.namespace.as_str())
            .collect();
        if pod_namespaces.is_empty()
            && sel
                .get("istio")
                .is_some_and(|v| INSTALLED_GATEWAYS.contains(&v.as_str()))
        {
            pod_namespaces.insert(ROOT_NAMESPACE);
        }
        if pod_namespaces.is_empty() || pod_namespaces.contains(gw_ns) {
            continue;
        }
        for (i, srv) in gw.spec.servers.iter().enumerate() {
            let Some(cred) = srv.tls.as_ref().and_then(|t| t.credential_name.as_deref()) else {
                continue;
            };
            if cred.contains('/') {
                continue;
            }
            let exists_in = |ns: &str| {
                snapshot
                    .secrets
                    .iter()
                    .any(|s| s.meta.name == cred && s.namespace_or_default() == ns)
            };
            if !exists_in(gw_ns) || pod_namespaces.iter().any(|ns| exists_in(ns)) {
                continue;
            }
            let pods = pod_namespaces
                .iter()
                .copied()
                .collect::<Vec<_>>()
                .join(", ");
            let first = pod_namespaces
                .iter()
                .next()
                .copied()
                .unwrap_or(ROOT_NAMESPACE);
            let res = resource_name(&gw.kind, &gw.meta);
            out.push(Draft::warning("VEIL0301", &gw.source, format!("spec.servers[{i}].tls.credentialName"), res.clone()).says(
                format!("{res} names credentialName {cred}; Secret {gw_ns}/{cred} exists only in the Gateway's namespace, but Istio reads credentialName from the namespace of the gateway pods ({pods}), so the TLS handshake fails (\"cannot find secret\", Istio issue 27740)"),
                format!("Create the Secret in {first} (kubectl -n {first} create secret tls {cred} --cert=... --key=...), or run a gateway whose pods are in {gw_ns}"),
            ));
        }
    }
}
