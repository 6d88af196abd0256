//! The server side as the analyzer sees it: workloads with their sidecar decision, the
//! Services that select them, and which PeerAuthentication (or legacy v1alpha1 Policy /
//! MeshPolicy) decides the mTLS mode of a workload port or of a namespace — resolved with
//! `crate::authn` (Istio's `ComposePeerAuthentication`, legacy policies as `crate::legacy`
//! converts them) and traced back to where it is written.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use veil_api::{
    LegacyPortSelector, Resource, ServicePort, ServiceSpec, Snapshot, Source, TargetPort, Workload,
};

use super::{resource_name, ROOT_NAMESPACE};
use crate::authn::{effective_authn, PeerAuthn};
use crate::config::MtlsMode;
use crate::registry::{ContainerPort, Pod};

/// A policy resource: `Kind namespace/name` and where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRef {
    pub resource: String,
    pub source: Source,
}

impl Ord for PolicyRef {
    fn cmp(&self, other: &Self) -> Ordering {
        let key = |p: &Self| (p.resource.clone(), p.source.file.clone(), p.source.line);
        key(self).cmp(&key(other))
    }
}

impl PartialOrd for PolicyRef {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PolicyRef {
    /// `Kind ns/name (file:line)`.
    pub fn cite(&self) -> String {
        format!("{} ({})", self.resource, self.source)
    }
}

/// A target of a legacy `Policy`: a Service (FQDN), optionally narrowed to Service ports.
#[derive(Debug, Clone)]
pub struct TargetedPolicy<'a> {
    pub policy: PolicyRef,
    pub service: String,
    pub ports: &'a [LegacyPortSelector],
    pub mode: MtlsMode,
}

/// Workloads, Services and policies of one snapshot.
pub struct ServerSide<'a> {
    pub snapshot: &'a Snapshot,
    /// Every workload with whether it has a sidecar.
    pub workloads: Vec<(Workload, bool)>,
    policies: Vec<PeerAuthn>,
    refs: HashMap<String, PolicyRef>,
}

/// Whether a workload gets a sidecar: the pod's `sidecar.istio.io/inject`, else the label
/// `istio-injection` of its Namespace object when the snapshot has one (Istio's webhook, as
/// in `crate::from_api::injected`). A namespace the snapshot does not declare is assumed to
/// be injected: a directory of policies rarely carries its Namespace objects.
pub fn has_sidecar(snapshot: &Snapshot, w: &Workload) -> bool {
    if snapshot
        .namespaces
        .iter()
        .any(|n| n.meta.name == w.namespace)
    {
        return crate::from_api::injected(
            snapshot,
            &w.namespace,
            &w.pod_labels,
            &w.pod_annotations,
        );
    }
    let key = "sidecar.istio.io/inject";
    let explicit = w.pod_annotations.get(key).or_else(|| w.pod_labels.get(key));
    explicit.is_none_or(|v| v == "true")
}

/// The pod port a Service port reaches on `w`; `None` for a named targetPort `w` lacks.
pub fn target_port(port: &ServicePort, w: &Workload) -> Option<u32> {
    match port.target() {
        TargetPort::Number(n) => Some(n),
        TargetPort::Name(name) => w
            .containers
            .iter()
            .flat_map(|c| c.ports.iter())
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port),
    }
}

fn to_pod(w: &Workload) -> Pod {
    let ports = w.containers.iter().flat_map(|c| c.ports.iter());
    Pod {
        name: w.name.clone(),
        namespace: w.namespace.clone(),
        labels: w.pod_labels.clone(),
        service_account: w.service_account.clone(),
        ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        sidecar: true,
        gateway: false,
        ports: ports
            .filter_map(|p| {
                let port = u16::try_from(p.container_port).ok()?;
                Some(ContainerPort {
                    port,
                    name: p.name.clone(),
                })
            })
            .collect(),
    }
}

fn key(p: &PeerAuthn) -> String {
    format!("{}/{}", p.namespace, p.name)
}

impl<'a> ServerSide<'a> {
    /// Indexes the snapshot; policies are those `crate::from_api::peer_authentications`
    /// resolves with (legacy ones named `meshpolicy-<name>` / `policy-<name>` there).
    pub fn new(snapshot: &'a Snapshot) -> Self {
        let mut refs = HashMap::new();
        let mut add = |key: String, kind: &str, meta: &veil_api::ObjectMeta, source: &Source| {
            let r = PolicyRef {
                resource: resource_name(kind, meta),
                source: source.clone(),
            };
            refs.insert(key, r);
        };
        for p in &snapshot.peer_authentications {
            add(
                format!("{}/{}", p.namespace_or_default(), p.meta.name),
                &p.kind,
                &p.meta,
                &p.source,
            );
        }
        for p in &snapshot.mesh_policies {
            add(
                format!("{ROOT_NAMESPACE}/meshpolicy-{}", p.meta.name),
                &p.kind,
                &p.meta,
                &p.source,
            );
        }
        for p in &snapshot.policies {
            let k = format!("{}/policy-{}", p.namespace_or_default(), p.meta.name);
            add(k, &p.kind, &p.meta, &p.source);
        }
        let workloads = snapshot.workloads().into_iter().map(|w| {
            let sidecar = has_sidecar(snapshot, &w);
            (w, sidecar)
        });
        ServerSide {
            snapshot,
            workloads: workloads.collect(),
            policies: crate::from_api::peer_authentications(snapshot, ROOT_NAMESPACE),
            refs,
        }
    }

    /// Workloads a Service selects (same namespace, non-empty selector ⊆ pod labels).
    pub fn selected(&self, svc: &Resource<ServiceSpec>) -> Vec<&(Workload, bool)> {
        let ns = svc.namespace_or_default();
        let sel = &svc.spec.selector;
        let selects = |w: &Workload| {
            !sel.is_empty()
                && w.namespace == ns
                && sel.iter().all(|(k, v)| w.pod_labels.get(k) == Some(v))
        };
        self.workloads.iter().filter(|(w, _)| selects(w)).collect()
    }

    /// The effective mode of `w` on pod port `port` and the policy that decides it; `None`
    /// when no policy sets it (Istio's PERMISSIVE default).
    pub fn workload_mode(&self, w: &Workload, port: u32) -> Option<(MtlsMode, &PolicyRef)> {
        let pod = to_pod(w);
        let eff = effective_authn(&self.policies, &pod, ROOT_NAMESPACE);
        let port16 = u16::try_from(port).ok();
        let overridden = port16.and_then(|p| eff.ports.get(&p)).copied();
        let mode = overridden.unwrap_or(eff.mode);
        let applied: Vec<&PeerAuthn> = eff
            .applied
            .iter()
            .rev()
            .filter_map(|k| self.policies.iter().find(|p| key(p) == *k))
            .collect();
        let sets_port = |p: &&&PeerAuthn| match (&p.legacy_target, port16) {
            (Some(t), Some(n)) => {
                p.mode == Some(mode) && t.ports.iter().any(|sp| sp.target_on(&pod) == Some(n))
            }
            (None, Some(n)) => p.port_level.get(&n).copied().flatten() == Some(mode),
            _ => false,
        };
        let decider = applied
            .iter()
            .find(|p| overridden.is_some() && sets_port(p))
            .or_else(|| {
                applied
                    .iter()
                    .find(|p| p.legacy_target.is_none() && p.mode == Some(mode))
            })?;
        Some((mode, self.refs.get(&key(decider))?))
    }

    /// The namespace-wide mode of `namespace` (mesh, then namespace policy) and the policy
    /// that decides it. A namespace no resource is in stands for "a namespace without a
    /// policy of its own" (only the mesh policy applies).
    pub fn namespace_mode(&self, namespace: &str) -> Option<(MtlsMode, &PolicyRef)> {
        let probe = Workload {
            kind: veil_api::WorkloadKind::Pod,
            name: String::new(),
            namespace: namespace.to_string(),
            replicas: 1,
            pod_labels: Default::default(),
            pod_annotations: Default::default(),
            service_account: String::new(),
            containers: Vec::new(),
            source: Source::default(),
        };
        self.workload_mode(&probe, 0)
    }

    /// Every target of every legacy `Policy` with `targets`, whether or not the Service it
    /// names is in the snapshot.
    pub fn legacy_targets(&self) -> Vec<TargetedPolicy<'a>> {
        let mut out = Vec::new();
        for p in self.snapshot.policies.iter() {
            let ns = p.namespace_or_default();
            for t in &p.spec.targets {
                out.push(TargetedPolicy {
                    policy: PolicyRef {
                        resource: resource_name(&p.kind, &p.meta),
                        source: p.source.clone(),
                    },
                    service: super::hosts::service_fqdn(&t.name, ns),
                    ports: &t.ports,
                    mode: crate::legacy::legacy_mode(&p.spec),
                });
            }
        }
        out
    }
}
