//! The legacy `authentication.istio.io/v1alpha1` API (Istio ≤ 1.5): `MeshPolicy`
//! and `Policy`, turned into the model's [`PeerAuthn`] (spec §1.2), and the
//! v1beta1 `PeerAuthentication` a user should write instead.
//!
//! - `MeshPolicy` named `default` → a root-namespace (mesh) policy; other
//!   names are ignored, as in 1.4.
//! - `Policy` without `targets` → a namespace policy.
//! - `Policy` with `targets` → one [`LegacyTarget`] per target: the pods of
//!   the named Service, the mode on the target ports of the named Service
//!   ports (by name or number; every port when the target lists none).
//!   See `crate::authn` for the precedence.
//!
//! Modes follow 1.4's `GetMutualTLSMode`: the first peer with `mtls`
//! decides (`mtls: {}` or null → STRICT, `mode: PERMISSIVE` or the
//! deprecated `allowTls` → PERMISSIVE); no such peer → DISABLE.

use std::collections::BTreeMap;
use veil_api::{LegacyMtlsMode, PolicySpec, Resource, ServiceSpec, Snapshot, TargetPort as ApiTargetPort};

use crate::authn::{LegacyTarget, PeerAuthn};
use crate::config::MtlsMode;
use crate::registry::{ServicePort, TargetPort};

/// The mTLS mode a legacy policy requires (1.4 `GetMutualTLSMode`).
pub fn legacy_mode(spec: &PolicySpec) -> MtlsMode {
    match spec.mtls_mode() {
        None => MtlsMode::Disable,
        Some(LegacyMtlsMode::Strict) => MtlsMode::Strict,
        Some(LegacyMtlsMode::Permissive) => MtlsMode::Permissive,
    }
}

/// The ports of a Kubernetes Service in the model's form (ports out of
/// range are dropped; validation reports them).
pub(crate) fn service_ports(svc: &ServiceSpec) -> Vec<ServicePort> {
    svc.ports
        .iter()
        .filter_map(|p| {
            Some(ServicePort {
                name: p.name.clone(),
                port: u16::try_from(p.port).ok()?,
                target_port: match p.target() {
                    ApiTargetPort::Number(n) => TargetPort::Number(u16::try_from(n).ok()?),
                    ApiTargetPort::Name(n) => TargetPort::Name(n),
                },
                app_protocol: p.app_protocol.clone(),
            })
        })
        .collect()
}

fn find_service<'a>(snapshot: &'a Snapshot, namespace: &str, name: &str) -> Option<&'a Resource<ServiceSpec>> {
    snapshot.services.iter().find(|s| s.namespace_or_default() == namespace && s.meta.name == name)
}

/// The targeted Service ports of one target, matched by number or name
/// (1.4 `Port.Match`); every port when `selectors` is empty.
fn targeted_ports(all: &[ServicePort], selectors: &[veil_api::LegacyPortSelector]) -> Vec<ServicePort> {
    if selectors.is_empty() {
        return all.to_vec();
    }
    all.iter()
        .filter(|sp| {
            selectors.iter().any(|sel| {
                sel.number.is_some_and(|n| n == u32::from(sp.port))
                    || sel.name.as_deref().is_some_and(|n| sp.name.as_deref() == Some(n))
            })
        })
        .cloned()
        .collect()
}

/// Every legacy policy of `snapshot` as [`PeerAuthn`]s; `root_ns` is the
/// mesh root namespace (`MeshPolicy` is cluster-scoped). A target naming a
/// Service that does not exist applies to nothing.
pub fn legacy_peer_authentications(snapshot: &Snapshot, root_ns: &str) -> Vec<PeerAuthn> {
    let mut out = Vec::new();
    for p in snapshot.mesh_policies.iter().filter(|p| p.meta.name == "default") {
        out.push(PeerAuthn {
            namespace: root_ns.to_string(),
            name: format!("meshpolicy-{}", p.meta.name),
            created: p.meta.creation_timestamp.clone(),
            selector: None,
            mode: Some(legacy_mode(&p.spec)),
            port_level: BTreeMap::new(),
            legacy_target: None,
        });
    }
    for p in &snapshot.policies {
        let ns = p.namespace_or_default().to_string();
        let mode = Some(legacy_mode(&p.spec));
        let base = PeerAuthn {
            namespace: ns.clone(),
            name: format!("policy-{}", p.meta.name),
            created: p.meta.creation_timestamp.clone(),
            selector: None,
            mode,
            port_level: BTreeMap::new(),
            legacy_target: None,
        };
        if p.spec.targets.is_empty() {
            out.push(base);
            continue;
        }
        for t in &p.spec.targets {
            let Some(svc) = find_service(snapshot, &ns, &t.name) else { continue };
            let all = service_ports(&svc.spec);
            out.push(PeerAuthn {
                legacy_target: Some(LegacyTarget {
                    service: t.name.clone(),
                    selector: svc.spec.selector.clone(),
                    ports: targeted_ports(&all, &t.ports),
                    port_match: !t.ports.is_empty(),
                }),
                ..base.clone()
            });
        }
    }
    out
}

/// The workload ports a Service port reaches on the pods the Service
/// selects (a named `targetPort` resolved through their container ports).
fn workload_ports(snapshot: &Snapshot, ns: &str, svc: &ServiceSpec, sp: &ServicePort) -> Vec<u16> {
    let name = match &sp.target_port {
        TargetPort::Number(n) => return vec![*n],
        TargetPort::Name(name) => name,
    };
    let mut ports: Vec<u16> = snapshot
        .workloads()
        .iter()
        .filter(|w| {
            w.namespace == ns
                && !svc.selector.is_empty()
                && svc.selector.iter().all(|(k, v)| w.pod_labels.get(k) == Some(v))
        })
        .flat_map(|w| w.containers.iter().flat_map(|c| c.ports.iter()).cloned().collect::<Vec<_>>())
        .filter(|p| p.name.as_deref() == Some(name.as_str()))
        .filter_map(|p| u16::try_from(p.container_port).ok())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

fn header(kind: &str, policy: &Resource<PolicySpec>) -> String {
    let ns = policy.meta.namespace.as_deref().map(|n| format!("{n}/")).unwrap_or_default();
    format!("# instead of {kind} {ns}{} (authentication.istio.io/v1alpha1, {})\n", policy.meta.name, policy.source)
}

fn peer_authentication(name: &str, ns: &str, selector: Option<&BTreeMap<String, String>>, body: &str) -> String {
    let mut y = format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: {}\n  namespace: {}\nspec:\n",
        quote(name),
        quote(ns)
    );
    if let Some(sel) = selector {
        y.push_str("  selector:\n    matchLabels:\n");
        for (k, v) in sel {
            y.push_str(&format!("      {}: {}\n", quote(k), quote(v)));
        }
    }
    y.push_str(body);
    y
}

/// The `PeerAuthentication` for the pods of Service `svc` with mode
/// `whole` (all ports) and `ports` (Service port → mode, as
/// `portLevelMtls` on its target ports), or comments saying why not.
fn service_doc(snapshot: &Snapshot, ns: &str, name: &str, svc: &Resource<ServiceSpec>, whole: Option<MtlsMode>, ports: &[(ServicePort, MtlsMode)]) -> String {
    if svc.spec.selector.is_empty() {
        return format!("# Service {ns}/{}: it has no selector, so a PeerAuthentication cannot select its pods\n", svc.meta.name);
    }
    let mut body = whole.map(|m| format!("  mtls:\n    mode: {m}\n")).unwrap_or_default();
    let mut notes = String::new();
    let mut levels = String::new();
    for (sp, mode) in ports {
        let targets = workload_ports(snapshot, ns, &svc.spec, sp);
        if targets.is_empty() {
            notes.push_str(&format!("# Service port {}: its targetPort is not declared by the selected pods\n", sp.port));
        }
        for p in targets {
            levels.push_str(&format!("    {p}:\n      mode: {mode}\n"));
        }
    }
    if !levels.is_empty() {
        body.push_str("  portLevelMtls:\n");
        body.push_str(&levels);
    }
    if body.is_empty() {
        return format!("{notes}# Service {ns}/{}: none of the named ports exist on it\n", svc.meta.name);
    }
    format!("{notes}{}", peer_authentication(name, ns, Some(&svc.spec.selector), &body))
}

/// The v1beta1 `PeerAuthentication` YAML that does what the legacy
/// `MeshPolicy` or `Policy` `policy` (its `kind` says which) does, for a
/// printed migration hint. `root_ns` is where a `MeshPolicy` becomes a
/// mesh-wide policy. A targeted `Policy` becomes one policy per target
/// whose selector is the Service's selector; named Service ports become
/// `portLevelMtls` keyed on their target (workload) ports. Targets that
/// cannot be translated (unknown Service, port not found, Service without
/// selector) are explained in YAML comments, and so is another legacy
/// Policy targeting the same Service (only one workload-level
/// PeerAuthentication applies to a pod: use
/// [`equivalent_peer_authentications`] to merge them). Follows the mapping
/// of spec §1.2 ("Suggested mapping to v1beta1").
pub fn equivalent_peer_authentication(snapshot: &Snapshot, policy: &Resource<PolicySpec>, root_ns: &str) -> String {
    let mode = legacy_mode(&policy.spec);
    let whole = format!("  mtls:\n    mode: {mode}\n");
    if policy.kind == "MeshPolicy" {
        let mut y = header("MeshPolicy", policy);
        if policy.meta.name != "default" {
            y.push_str("# Istio used only the MeshPolicy named default; this one had no effect\n");
        }
        y.push_str(&peer_authentication("default", root_ns, None, &whole));
        return y;
    }
    let ns = policy.namespace_or_default();
    let mut y = header("Policy", policy);
    if policy.spec.targets.is_empty() {
        y.push_str(&peer_authentication("default", ns, None, &whole));
        return y;
    }
    let mut docs = Vec::new();
    for t in &policy.spec.targets {
        let Some(svc) = find_service(snapshot, ns, &t.name) else {
            docs.push(format!("# target {}: no Service {ns}/{} in the configuration; nothing to translate\n", t.name, t.name));
            continue;
        };
        let others: Vec<&str> = snapshot
            .policies
            .iter()
            .filter(|o| o.meta.name != policy.meta.name && o.namespace_or_default() == ns)
            .filter(|o| o.spec.targets.iter().any(|ot| ot.name == t.name))
            .map(|o| o.meta.name.as_str())
            .collect();
        let mut doc = String::new();
        if !others.is_empty() {
            doc.push_str(&format!("# Policies {others:?} also target Service {}: merge them into one PeerAuthentication\n", t.name));
        }
        let name = format!("{}-{}", policy.meta.name, t.name);
        let (whole, ports) = if t.ports.is_empty() {
            (Some(mode), Vec::new())
        } else {
            (None, targeted_ports(&service_ports(&svc.spec), &t.ports).into_iter().map(|sp| (sp, mode)).collect())
        };
        doc.push_str(&service_doc(snapshot, ns, &name, svc, whole, &ports));
        docs.push(doc);
    }
    y.push_str(&docs.join("---\n"));
    y
}

/// One Service's merged legacy policies: Service-wide mode, per-port
/// modes, names of the policies.
type Merged = (Option<MtlsMode>, Vec<(ServicePort, MtlsMode)>, Vec<String>);

/// The v1beta1 YAML for every legacy resource of `snapshot` together: the
/// `MeshPolicy default` and no-target Policies one by one, and one
/// `PeerAuthentication` per targeted Service that merges its policies with
/// 1.4's precedence (the oldest policy for the whole Service gives `mtls`,
/// the oldest policy naming a port gives that port's `portLevelMtls`). The
/// Service-wide mode then covers every port of its pods, not only the
/// Service's ports. Empty when there are no legacy resources.
pub fn equivalent_peer_authentications(snapshot: &Snapshot, root_ns: &str) -> String {
    let mut docs: Vec<String> = snapshot
        .mesh_policies
        .iter()
        .chain(snapshot.policies.iter().filter(|p| p.spec.targets.is_empty()))
        .map(|p| equivalent_peer_authentication(snapshot, p, root_ns))
        .collect();
    let mut targeted: Vec<&Resource<PolicySpec>> = snapshot.policies.iter().filter(|p| !p.spec.targets.is_empty()).collect();
    targeted.sort_by(|a, b| (&a.meta.creation_timestamp, &a.meta.name).cmp(&(&b.meta.creation_timestamp, &b.meta.name)));
    let mut services: BTreeMap<(String, String), Merged> = BTreeMap::new();
    for p in &targeted {
        let ns = p.namespace_or_default().to_string();
        for t in &p.spec.targets {
            let Some(svc) = find_service(snapshot, &ns, &t.name) else { continue };
            let entry = services.entry((ns.clone(), t.name.clone())).or_default();
            entry.2.push(p.meta.name.clone());
            let mode = legacy_mode(&p.spec);
            if t.ports.is_empty() {
                entry.0.get_or_insert(mode);
            }
            for sp in targeted_ports(&service_ports(&svc.spec), &t.ports) {
                if !t.ports.is_empty() && !entry.1.iter().any(|(x, _)| x.port == sp.port) {
                    entry.1.push((sp, mode));
                }
            }
        }
    }
    for ((ns, name), (whole, ports, from)) in services {
        let Some(svc) = find_service(snapshot, &ns, &name) else { continue };
        let head = format!("# instead of Policies {from:?} in {ns} targeting Service {name}\n");
        docs.push(format!("{head}{}", service_doc(snapshot, &ns, &name, svc, whole, &ports)));
    }
    docs.join("---\n")
}
