//! `describe pod`: the facts `istioctl x describe pod` prints
//! (istioctl/pkg/describe/describe.go, spec §1.9), computed from the
//! control plane's current `MeshInput`: the Services that select the pod
//! with their ports and target ports, the DestinationRule each Service gets
//! as seen from the pod's namespace (`veil_model::dr::lookup`), the
//! VirtualServices that route to it, and the effective `PeerAuthentication`
//! (`veil_model::authn::effective_authn`) with the policies that applied
//! and those that were ignored, with why.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use veil_api::ClientTlsMode;
use veil_model::authn::effective_authn;
use veil_model::dr::{self, AppliedRule};
use veil_model::registry::{selector_matches, ContainerPort, Labels, Service};
use veil_model::routes::resolve_host;
use veil_model::{MeshInput, MtlsMode, Pod, Protocol};

use super::ProxyStatus;

/// Everything `veil x describe pod` prints about one pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodDescription {
    pub pod: PodFacts,
    /// The pod's proxy as the control plane sees it (filled by the admin
    /// API; `None` when computed without a store).
    #[serde(default)]
    pub proxy: Option<ProxyStatus>,
    /// Services that select the pod, by namespace and name.
    pub services: Vec<ServiceDescription>,
    pub peer_authentication: PeerAuthnDescription,
}

/// Who the pod is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodFacts {
    pub name: String,
    pub namespace: String,
    pub ip: IpAddr,
    pub service_account: String,
    /// `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
    pub spiffe_id: String,
    /// Has a sidecar; without one the pod is not part of the mesh.
    pub sidecar: bool,
    pub gateway: bool,
    pub labels: Labels,
    /// Container ports.
    pub ports: Vec<ContainerPort>,
}

/// One Service that selects the pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceDescription {
    pub name: String,
    pub namespace: String,
    /// `name.namespace.svc.<domain>`.
    pub host: String,
    pub ports: Vec<ServicePortFacts>,
    /// The DestinationRule for `host` as the pod's own proxy looks it up.
    pub destination_rule: Option<RuleFacts>,
    /// Routes of VirtualServices whose destination is `host`.
    pub virtual_services: Vec<RouteFacts>,
}

/// One Service port and the workload port it reaches on this pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServicePortFacts {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
    /// `None` when a named `targetPort` is not a container port of the pod.
    pub target_port: Option<u16>,
    /// Effective inbound mode on the target port.
    pub server_mode: Option<MtlsMode>,
}

/// The merged DestinationRule that applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleFacts {
    /// `namespace/name` of the merged rules, oldest first.
    pub rules: Vec<String>,
    /// The rules' `host`, as an FQDN or wildcard.
    pub host: String,
    /// Subsets whose labels the pod has.
    pub matching_subsets: Vec<String>,
    /// Subsets whose labels the pod lacks.
    pub other_subsets: Vec<String>,
    /// `trafficPolicy.tls.mode`; `None` when the rule sets no top-level tls.
    pub tls_mode: Option<ClientTlsMode>,
    /// `trafficPolicy.portLevelSettings` (Service ports).
    pub port_level: Vec<PortTlsFacts>,
    /// `file:line` of the rule whose traffic policy won.
    pub source: String,
}

/// One `portLevelSettings` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortTlsFacts {
    /// Service port.
    pub port: u16,
    /// `tls.mode`; `None` when the entry has no tls (auto-mTLS decides).
    pub tls_mode: Option<ClientTlsMode>,
}

/// One VirtualService route to the Service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteFacts {
    /// `namespace/name` of the VirtualService.
    pub virtual_service: String,
    /// `http`, `tcp` or `tls`.
    pub kind: String,
    /// Gateways it is bound to (`mesh` for sidecars).
    pub gateways: Vec<String>,
    /// Destination port, when the route names one.
    pub port: Option<u16>,
    /// `match.uri.prefix` (or `exact`), for HTTP routes.
    pub uri: Option<String>,
    pub exact: bool,
}

/// The effective `PeerAuthentication` of the pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerAuthnDescription {
    /// Mode of every port without a port-level mode.
    pub workload_mode: MtlsMode,
    /// Port-level modes (workload ports).
    pub port_modes: BTreeMap<u16, MtlsMode>,
    /// `namespace/name` of the policies that applied, mesh first.
    pub applied: Vec<String>,
    pub ignored: Vec<IgnoredPolicy>,
}

/// A policy that would apply to the pod but does not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IgnoredPolicy {
    /// `namespace/name`.
    pub policy: String,
    pub reason: String,
}

/// Describes `pod` under `input`.
pub fn describe(input: &MeshInput, pod: &Pod) -> PodDescription {
    let domain = &input.settings.domain;
    let eff = effective_authn(&input.peer_authentications, pod, &input.settings.root_namespace);
    let inbound = input.inbound(pod);
    let services = input
        .registry
        .services
        .iter()
        .filter(|s| s.selects(pod))
        .map(|svc| ServiceDescription {
            name: svc.name.clone(),
            namespace: svc.namespace.clone(),
            host: svc.hostname(domain),
            ports: svc
                .ports
                .iter()
                .map(|sp| {
                    let target_port = sp.target_on(pod);
                    ServicePortFacts {
                        name: sp.name.clone(),
                        port: sp.port,
                        protocol: sp.protocol(),
                        target_port,
                        server_mode: target_port.map(|t| inbound.port(t).0),
                    }
                })
                .collect(),
            destination_rule: rule_for(input, pod, svc),
            virtual_services: routes_to(input, &svc.hostname(domain)),
        })
        .collect();
    PodDescription {
        pod: PodFacts {
            name: pod.name.clone(),
            namespace: pod.namespace.clone(),
            ip: pod.ip,
            service_account: pod.service_account.clone(),
            spiffe_id: input.spiffe_id(pod),
            sidecar: pod.sidecar,
            gateway: pod.gateway,
            labels: pod.labels.clone(),
            ports: pod.ports.clone(),
        },
        proxy: None,
        services,
        peer_authentication: PeerAuthnDescription {
            workload_mode: eff.mode,
            port_modes: eff.ports.clone(),
            ignored: ignored(input, pod, &eff.shadowed, &eff.applied),
            applied: eff.applied,
        },
    }
}

fn rule_for(input: &MeshInput, pod: &Pod, svc: &Service) -> Option<RuleFacts> {
    let domain = &input.settings.domain;
    let host = svc.hostname(domain);
    let client = dr::Client { namespace: &pod.namespace, labels: Some(&pod.labels) };
    let target = dr::Target { host: &host, namespace: &svc.namespace };
    let rule: AppliedRule = dr::lookup(&input.destination_rules, client, target, &input.settings.root_namespace, domain)?;
    let rule_host = rule
        .rules
        .first()
        .and_then(|id| input.destination_rules.iter().find(|r| &r.id() == id))
        .map(|r| r.fqdn_host(domain))
        .unwrap_or_default();
    let (matching, other): (Vec<_>, Vec<_>) =
        rule.subsets.iter().partition(|s| selector_matches(&s.labels, &pod.labels));
    let tp = rule.traffic_policy.as_ref();
    Some(RuleFacts {
        host: rule_host,
        matching_subsets: matching.iter().map(|s| s.name.clone()).collect(),
        other_subsets: other.iter().map(|s| s.name.clone()).collect(),
        tls_mode: tp.and_then(|t| t.tls.as_ref()).map(|t| t.mode),
        port_level: tp
            .map(|t| {
                t.port_level_settings
                    .iter()
                    .filter_map(|p| {
                        let port = u16::try_from(p.port.as_ref()?.number).ok()?;
                        Some(PortTlsFacts { port, tls_mode: p.tls.as_ref().map(|t| t.mode) })
                    })
                    .collect()
            })
            .unwrap_or_default(),
        source: rule.source,
        rules: rule.rules,
    })
}

fn routes_to(input: &MeshInput, host: &str) -> Vec<RouteFacts> {
    let domain = &input.settings.domain;
    let http = input.http_routes.iter().filter(|r| resolve_host(&r.destination, &r.namespace, domain) == host).map(|r| {
        RouteFacts {
            virtual_service: r.source.clone(),
            kind: "http".into(),
            gateways: r.gateways.clone(),
            port: r.destination_port,
            uri: r.uri_prefix.clone(),
            exact: r.exact,
        }
    });
    let tcp = input.tcp_routes.iter().filter(|r| resolve_host(&r.destination, &r.namespace, domain) == host).map(|r| {
        RouteFacts {
            virtual_service: r.source.clone(),
            kind: if r.sni_hosts.is_some() { "tls".into() } else { "tcp".into() },
            gateways: r.gateways.clone(),
            port: r.destination_port,
            uri: None,
            exact: false,
        }
    });
    http.chain(tcp).collect()
}

/// Why each policy that could apply to `pod` does not.
fn ignored(input: &MeshInput, pod: &Pod, shadowed: &[String], applied: &[String]) -> Vec<IgnoredPolicy> {
    let root = &input.settings.root_namespace;
    let policies = &input.peer_authentications;
    let workload_applied = policies.iter().any(|p| {
        p.legacy_target.is_none() && p.selector.as_ref().is_some_and(|s| !s.is_empty()) && applied.contains(&id(p))
    });
    let mut out: Vec<IgnoredPolicy> = shadowed
        .iter()
        .map(|name| {
            let legacy = policies.iter().any(|p| &id(p) == name && p.legacy_target.is_some());
            let reason = if legacy && workload_applied {
                "a PeerAuthentication with a selector selects this pod; it wins over legacy targeted Policies".to_string()
            } else {
                "another policy at the same level (mesh, namespace or workload) is older (creationTimestamp, then name) and wins; merge them into one".to_string()
            };
            IgnoredPolicy { policy: name.clone(), reason }
        })
        .collect();
    if pod.namespace != *root {
        for p in policies.iter().filter(|p| p.namespace == *root && p.legacy_target.is_none()) {
            if p.selector.as_ref().is_some_and(|s| !s.is_empty() && selector_matches(s, &pod.labels)) {
                out.push(IgnoredPolicy {
                    policy: id(p),
                    reason: format!(
                        "it is in the root namespace {root} and has a selector, which Istio ignores; move it to namespace {} or drop the selector to make it mesh-wide",
                        pod.namespace
                    ),
                });
            }
        }
    }
    if !pod.sidecar && !pod.gateway && !applied.is_empty() {
        for name in applied {
            out.push(IgnoredPolicy {
                policy: name.clone(),
                reason: "the pod has no sidecar, so nothing enforces it: the app receives plaintext directly".into(),
            });
        }
    }
    out
}

fn id(p: &veil_model::authn::PeerAuthn) -> String {
    format!("{}/{}", p.namespace, p.name)
}
