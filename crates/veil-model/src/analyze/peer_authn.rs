//! PeerAuthentication findings (spec §1.1): `portLevelMtls` without a selector or empty
//! (VEIL0101/0102, Istio's validation), keyed on a Service port instead of the workload port
//! (VEIL0103, Istio issue 49098), a selector in the root namespace (VEIL0104, ignored by
//! `ComposePeerAuthentication`), and several policies at one level (VEIL0105, oldest wins).

use std::collections::BTreeMap;
use veil_api::{PeerAuthenticationSpec, Resource, Workload};

use super::policies::{target_port, ServerSide};
use super::{resource_name, Draft, Level, ROOT_NAMESPACE};
use crate::config::MtlsMode;

type Pa = Resource<PeerAuthenticationSpec>;

/// Adds the PeerAuthentication findings of the snapshot.
pub fn check(server: &ServerSide<'_>, out: &mut Vec<Draft>) {
    for pa in &server.snapshot.peer_authentications {
        port_level(server, pa, out);
        if pa.namespace_or_default() == ROOT_NAMESPACE && !pa.spec.is_namespace_wide() {
            let res = resource_name(&pa.kind, &pa.meta);
            out.push(Draft::warning("VEIL0104", &pa.source, "spec.selector", res.clone()).says(
                format!("{res} has a selector but is in the root namespace {ROOT_NAMESPACE}, so Istio ignores it: a root-namespace policy applies only mesh-wide, without a selector"),
                "Move it to the namespace of the workloads it selects, or remove the selector to make it mesh-wide".to_string(),
            ));
        }
    }
    competing(server, out);
}

fn port_level(server: &ServerSide<'_>, pa: &Pa, out: &mut Vec<Draft>) {
    let Some(ports) = &pa.spec.port_level_mtls else {
        return;
    };
    let res = resource_name(&pa.kind, &pa.meta);
    let error = |code, message: String, hint: &str| {
        let mut d = Draft::warning(code, &pa.source, "spec.portLevelMtls", res.clone())
            .says(message, hint.to_string());
        d.level = Level::Error;
        d
    };
    if pa.spec.is_namespace_wide() {
        out.push(error(
            "VEIL0101",
            format!("{res} has portLevelMtls but no selector; Istio rejects it (\"mesh/namespace peer authentication cannot have port level mTLS\")"),
            "Add spec.selector.matchLabels for the workloads whose ports you override, or remove portLevelMtls",
        ));
    }
    if ports.is_empty() {
        out.push(error(
            "VEIL0102",
            format!("{res} has an empty portLevelMtls; Istio's CRD rejects an empty map"),
            "List at least one workload port with its mode, or remove portLevelMtls",
        ));
    }
    if pa.spec.is_namespace_wide() || pa.namespace_or_default() == ROOT_NAMESPACE {
        return;
    }
    let ns = pa.namespace_or_default();
    let selector = pa.spec.selector.as_ref().map(|s| &s.match_labels);
    let matched: Vec<&Workload> = server
        .workloads
        .iter()
        .map(|(w, _)| w)
        .filter(|w| {
            w.namespace == ns
                && selector.is_some_and(|s| s.iter().all(|(k, v)| w.pod_labels.get(k) == Some(v)))
        })
        .collect();
    for key in ports.keys() {
        let declared = matched.iter().any(|w| {
            w.containers
                .iter()
                .flat_map(|c| c.ports.iter())
                .any(|p| p.container_port == *key)
        });
        if !declared {
            service_port_trap(server, pa, &matched, *key, out);
        }
    }
}

/// VEIL0103 for `key` when it is a Service port, and not a target port, of a Service that
/// selects one of `matched`.
fn service_port_trap(
    server: &ServerSide<'_>,
    pa: &Pa,
    matched: &[&Workload],
    key: u32,
    out: &mut Vec<Draft>,
) {
    let mut trap = None;
    for svc in &server.snapshot.services {
        for (w, _) in server
            .selected(svc)
            .into_iter()
            .filter(|(w, _)| matched.iter().any(|m| m.name == w.name && m.kind == w.kind))
        {
            for sp in &svc.spec.ports {
                let target = target_port(sp, w);
                if target == Some(key) {
                    return;
                }
                if sp.port == key && trap.is_none() {
                    trap = target.map(|t| (svc, w, t));
                }
            }
        }
    }
    let Some((svc, w, target)) = trap else { return };
    let res = resource_name(&pa.kind, &pa.meta);
    let mode = server
        .workload_mode(w, target)
        .map(|(m, _)| m)
        .unwrap_or(MtlsMode::Permissive);
    let svc_name = resource_name(&svc.kind, &svc.meta);
    out.push(Draft::warning("VEIL0103", &pa.source, format!("spec.portLevelMtls.{key}"), res.clone()).says(
        format!("{res} keys portLevelMtls on port {key}, which is a port of {svc_name} but not a port of workload {}: Istio matches portLevelMtls on workload (target) ports, so this entry does nothing and port {target} stays {mode}", w.name),
        format!("Key it on {target}, the targetPort of {svc_name} port {key}"),
    ));
}

/// VEIL0105: policies that compete for one level (mesh, one namespace, one selector, or
/// different selectors matching one workload); the oldest applies (crate::authn).
fn competing(server: &ServerSide<'_>, out: &mut Vec<Draft>) {
    let pas = &server.snapshot.peer_authentications;
    let age = |i: usize| {
        pas.get(i)
            .map(|p| (p.meta.creation_timestamp.clone(), p.meta.name.clone()))
    };
    let mut groups: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for (i, p) in pas.iter().enumerate() {
        let ns = p.namespace_or_default().to_string();
        let key = match (&p.spec.selector, p.spec.is_namespace_wide()) {
            _ if ns == ROOT_NAMESPACE && p.spec.is_namespace_wide() => {
                (ns, "mesh-wide".to_string())
            }
            (_, true) => (ns.clone(), format!("namespace-wide in {ns}")),
            _ if ns == ROOT_NAMESPACE => continue,
            (Some(s), false) => {
                let labels: Vec<String> = s
                    .match_labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                (
                    ns,
                    format!("to the workloads selected by {}", labels.join(",")),
                )
            }
            (None, false) => continue,
        };
        groups.entry(key).or_default().push(i);
    }
    let mut ignored: BTreeMap<usize, (usize, String)> = BTreeMap::new();
    for ((_, scope), mut members) in groups {
        members.sort_by_key(|i| age(*i));
        if let Some((first, rest)) = members.split_first() {
            for i in rest {
                ignored.entry(*i).or_insert((*first, scope.clone()));
            }
        }
    }
    for (w, _) in &server.workloads {
        let mut members: Vec<usize> = (0..pas.len())
            .filter(|i| {
                pas.get(*i).is_some_and(|p| {
                    p.namespace_or_default() == w.namespace
                        && w.namespace != ROOT_NAMESPACE
                        && !p.spec.is_namespace_wide()
                        && p.spec
                            .selector
                            .as_ref()
                            .is_some_and(|s| s.matches(&w.pod_labels))
                })
            })
            .collect();
        members.sort_by_key(|i| age(*i));
        if let Some((first, rest)) = members.split_first() {
            for i in rest {
                ignored
                    .entry(*i)
                    .or_insert((*first, format!("to workload {}", w.name)));
            }
        }
    }
    for (i, (winner, scope)) in ignored {
        let (Some(p), Some(win)) = (pas.get(i), pas.get(winner)) else {
            continue;
        };
        let res = resource_name(&p.kind, &p.meta);
        let win_res = resource_name(&win.kind, &win.meta);
        out.push(Draft::warning("VEIL0105", &p.source, "", res.clone()).says(
            format!("{res} and {win_res} ({}) both apply {scope}; Istio uses only the oldest (by creationTimestamp, then name), so {win_res} applies and {res} is ignored", win.source),
            "Merge them into one policy, or delete the one that should not apply".to_string(),
        ));
    }
}
