//! From Istio/Kubernetes resources (`veil_api::Snapshot`) to the model's
//! reduced inputs: planned pods (with the sidecar-injection decision),
//! Services, effective-policy inputs and gateway routes.
//!
//! Injection follows Istio's default webhook: namespace label
//! `istio-injection=enabled`, or the pod's `sidecar.istio.io/inject: "true"`
//! (annotation or label); `sidecar.istio.io/inject: "false"` and namespace
//! `istio-injection=disabled` win over both.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use veil_api::Snapshot;

use crate::authn::PeerAuthn;
use crate::dr::DestinationRule;
use crate::mesh_routes::VirtualService;
use crate::config::{MtlsMode, Protocol};
use crate::registry::{parse_protocol, ContainerPort, Labels, Service};
use crate::routes::{GatewayServer, VsHttpRoute, VsTcpRoute};

/// Labels of the ingress gateway Istio installs (`istio: ingressgateway`).
pub const INGRESS_GATEWAY_LABEL: (&str, &str) = ("istio", "ingressgateway");
/// Labels of the east-west gateway of Istio's multi-network install
/// (`samples/multicluster/gen-eastwest-gateway.sh`: `istio: eastwestgateway`,
/// pod `istio-system/istio-eastwestgateway`), which serves the
/// `AUTO_PASSTHROUGH` port 15443 of `samples/multicluster/expose-services.yaml`.
pub const EASTWEST_GATEWAY_LABEL: (&str, &str) = ("istio", "eastwestgateway");
/// The gateways Istio installs in `istio-system`: the label a Gateway's
/// selector names, and the name of the pod `veil up` runs for it when no
/// workload of the mesh carries that label.
pub const INSTALLED_GATEWAYS: [((&str, &str), &str); 3] = [
    (INGRESS_GATEWAY_LABEL, "istio-ingressgateway"),
    (EGRESS_GATEWAY_LABEL, EGRESS_GATEWAY),
    (EASTWEST_GATEWAY_LABEL, "istio-eastwestgateway"),
];
pub use crate::egress_gateway::{egress_gateway_service, EGRESS_GATEWAY, EGRESS_GATEWAY_LABEL};
pub use crate::mesh_config::outbound_traffic_policy;
pub use crate::service_entry::service_entries;

/// A pod to be started, before it has an address.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedPod {
    pub name: String,
    /// Deployment/StatefulSet/Pod it belongs to.
    pub workload: String,
    pub namespace: String,
    pub labels: Labels,
    pub service_account: String,
    pub sidecar: bool,
    pub gateway: bool,
    pub ports: Vec<ContainerPort>,
    /// Container env (`value` entries only), first container first.
    pub env: BTreeMap<String, String>,
}

fn inject_value(annotations: &Labels, labels: &Labels) -> Option<bool> {
    let v = annotations.get("sidecar.istio.io/inject").or_else(|| labels.get("sidecar.istio.io/inject"))?;
    Some(v == "true")
}

/// Whether a pod in `namespace` with these labels/annotations gets a sidecar.
pub fn injected(snapshot: &Snapshot, namespace: &str, labels: &Labels, annotations: &Labels) -> bool {
    let ns_label = snapshot
        .namespaces
        .iter()
        .find(|n| n.meta.name == namespace)
        .and_then(|n| n.meta.labels.get("istio-injection").cloned());
    if ns_label.as_deref() == Some("disabled") {
        return false;
    }
    match inject_value(annotations, labels) {
        Some(v) => v,
        None => ns_label.as_deref() == Some("enabled"),
    }
}

/// Every pod the snapshot's workloads ask for, plus one gateway pod per
/// [`INSTALLED_GATEWAYS`] entry a Gateway selects when no workload carries
/// its label: `istio-system/istio-ingressgateway` for `istio:
/// ingressgateway`, `istio-egressgateway` for `istio: egressgateway`,
/// `istio-eastwestgateway` for `istio: eastwestgateway`.
pub fn planned_pods(snapshot: &Snapshot) -> Vec<PlannedPod> {
    let mut pods = Vec::new();
    for w in snapshot.workloads() {
        let ports: Vec<ContainerPort> = w
            .containers
            .iter()
            .flat_map(|c| c.ports.iter())
            .filter_map(|p| Some(ContainerPort { port: u16::try_from(p.container_port).ok()?, name: p.name.clone() }))
            .collect();
        let env: BTreeMap<String, String> = w
            .containers
            .iter()
            .flat_map(|c| c.env.iter())
            .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
            .collect();
        let sidecar = injected(snapshot, &w.namespace, &w.pod_labels, &w.pod_annotations);
        let replicas = w.replicas.clamp(0, 16);
        for i in 0..replicas {
            let name = if replicas == 1 { w.name.clone() } else { format!("{}-{i}", w.name) };
            pods.push(PlannedPod {
                name,
                workload: w.name.clone(),
                namespace: w.namespace.clone(),
                labels: w.pod_labels.clone(),
                service_account: w.service_account.clone(),
                sidecar,
                gateway: false,
                ports: ports.clone(),
                env: env.clone(),
            });
        }
    }
    for ((k, v), name) in INSTALLED_GATEWAYS {
        let has = pods.iter().any(|p| p.labels.get(k).map(String::as_str) == Some(v));
        if wants_gateway(snapshot, (k, v)) && !has {
            pods.push(PlannedPod {
                name: name.into(),
                workload: name.into(),
                namespace: "istio-system".into(),
                labels: [(k.to_string(), v.to_string()), ("app".to_string(), name.to_string())].into(),
                service_account: format!("{name}-service-account"),
                sidecar: false,
                gateway: true,
                ports: Vec::new(),
                env: BTreeMap::new(),
            });
        }
    }
    pods
}

/// True when a Gateway selects pods labelled `label`.
pub(crate) fn wants_gateway(snapshot: &Snapshot, (k, v): (&str, &str)) -> bool {
    snapshot.gateways.iter().any(|g| g.spec.selector.get(k).map(String::as_str) == Some(v))
}

/// The Services of the snapshot, plus the egress gateway's
/// ([`egress_gateway_service`]); `cluster_ip` gives each non-headless
/// Service its virtual address (`namespace`, `name`) → IP.
pub fn services(snapshot: &Snapshot, cluster_ip: &dyn Fn(&str, &str) -> Option<IpAddr>) -> Vec<Service> {
    let implied = egress_gateway_service(snapshot).map(|mut s| {
        s.cluster_ip = cluster_ip(&s.namespace, &s.name);
        s
    });
    let declared = snapshot
        .services
        .iter()
        .map(|s| {
            let ns = s.namespace_or_default().to_string();
            let name = s.meta.name.clone();
            Service {
                cluster_ip: if s.spec.is_headless() { None } else { cluster_ip(&ns, &name) },
                selector: s.spec.selector.clone(),
                ports: crate::legacy::service_ports(&s.spec),
                name,
                namespace: ns,
            }
        });
    declared.chain(implied).collect()
}

fn mode(m: veil_api::MtlsMode) -> Option<MtlsMode> {
    match m {
        veil_api::MtlsMode::Unset => None,
        veil_api::MtlsMode::Disable => Some(MtlsMode::Disable),
        veil_api::MtlsMode::Permissive => Some(MtlsMode::Permissive),
        veil_api::MtlsMode::Strict => Some(MtlsMode::Strict),
    }
}

/// `PeerAuthentication`s, plus every legacy v1alpha1 `MeshPolicy default`
/// and `Policy` (see `crate::legacy`).
pub fn peer_authentications(snapshot: &Snapshot, root_ns: &str) -> Vec<PeerAuthn> {
    let mut out: Vec<PeerAuthn> = snapshot
        .peer_authentications
        .iter()
        .map(|p| PeerAuthn {
            namespace: p.namespace_or_default().to_string(),
            name: p.meta.name.clone(),
            created: p.meta.creation_timestamp.clone(),
            selector: p.spec.selector.as_ref().map(|s| s.match_labels.clone()),
            mode: mode(p.spec.mode()),
            port_level: p
                .spec
                .port_level_mtls
                .iter()
                .flatten()
                .filter_map(|(port, m)| Some((u16::try_from(*port).ok()?, mode(m.mode))))
                .collect(),
            legacy_target: None,
        })
        .collect();
    out.extend(crate::legacy::legacy_peer_authentications(snapshot, root_ns));
    out
}

/// The DestinationRules of the snapshot (see `crate::dr`).
pub fn destination_rules(snapshot: &Snapshot) -> Vec<DestinationRule> {
    snapshot
        .destination_rules
        .iter()
        .map(|r| DestinationRule {
            namespace: r.namespace_or_default().to_string(),
            name: r.meta.name.clone(),
            created: r.meta.creation_timestamp.clone(),
            host: r.spec.host.clone(),
            export_to: r.spec.export_to.clone(),
            workload_selector: r.spec.workload_selector.as_ref().map(|w| w.match_labels.clone()),
            traffic_policy: r.spec.traffic_policy.clone(),
            subsets: r.spec.subsets.clone(),
            base_dir: r.source.file.parent().map(Path::to_path_buf),
            source: r.source.to_string(),
            secrets: credential_secrets(snapshot, &r.spec),
        })
        .collect()
}

/// The Secrets every `tls.credentialName` of a DestinationRule may name.
fn credential_secrets(snapshot: &Snapshot, spec: &veil_api::DestinationRuleSpec) -> Vec<crate::credentials::CredentialSecret> {
    let policies = spec.traffic_policy.iter().chain(spec.subsets.iter().filter_map(|s| s.traffic_policy.as_ref()));
    let blocks = policies.flat_map(|tp| tp.tls.iter().chain(tp.port_level_settings.iter().filter_map(|p| p.tls.as_ref())));
    let mut out: Vec<crate::credentials::CredentialSecret> = Vec::new();
    for name in blocks.filter_map(|t| t.credential_name.as_deref()).filter(|n| !n.is_empty()) {
        for s in crate::credentials::secrets_for(snapshot, name) {
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    out
}

/// Every VirtualService of the snapshot, for the routes sidecars apply
/// (see `crate::mesh_routes`).
pub fn virtual_services(snapshot: &Snapshot) -> Vec<VirtualService> {
    snapshot
        .virtual_services
        .iter()
        .map(|v| VirtualService {
            namespace: v.namespace_or_default().to_string(),
            name: v.meta.name.clone(),
            created: v.meta.creation_timestamp.clone(),
            spec: v.spec.clone(),
        })
        .collect()
}

fn server_protocol(p: veil_api::Protocol) -> Protocol {
    parse_protocol(p.as_str()).unwrap_or(Protocol::Tcp)
}

/// One HTTP match entry as gateways use it: URI prefix (or exact path),
/// whether it is exact, `port`, and the gateways it binds to.
type GatewayMatch = (Option<String>, bool, Option<u16>, Vec<String>);

fn qualify_gateway(name: &str, vs_ns: &str) -> String {
    if name == "mesh" || name.contains('/') {
        name.to_string()
    } else {
        format!("{vs_ns}/{name}")
    }
}

/// Gateway servers (with their TLS settings and the Secrets their
/// `credentialName` may name) and the HTTP, TCP and TLS routes of every
/// VirtualService (`tls` routes are [`VsTcpRoute`]s with `sni_hosts`).
pub fn routing(snapshot: &Snapshot) -> (Vec<GatewayServer>, Vec<VsHttpRoute>, Vec<VsTcpRoute>) {
    use veil_api::Protocol as P;
    let mut servers = Vec::new();
    for g in &snapshot.gateways {
        let gw = format!("{}/{}", g.namespace_or_default(), g.meta.name);
        for s in &g.spec.servers {
            let Ok(port) = u16::try_from(s.port.number) else { continue };
            let credential = s.tls.as_ref().and_then(|t| t.credential_name.as_deref());
            servers.push(GatewayServer {
                gateway: gw.clone(),
                selector: g.spec.selector.clone(),
                port,
                protocol: server_protocol(s.port.protocol),
                hosts: s.hosts.clone(),
                http: matches!(s.port.protocol, P::Http | P::Https | P::Http2 | P::Grpc | P::GrpcWeb),
                tls: s.tls.clone().map(crate::egress_gateway::istio_mounted_certs),
                base_dir: g.source.file.parent().map(Path::to_path_buf),
                secrets: credential.map(|c| crate::credentials::secrets_for(snapshot, c)).unwrap_or_default(),
            });
        }
    }
    let mut http = Vec::new();
    let mut tcp = Vec::new();
    for vs in &snapshot.virtual_services {
        let ns = vs.namespace_or_default().to_string();
        let source = format!("{ns}/{}", vs.meta.name);
        let gateways: Vec<String> = if vs.spec.gateways.is_empty() {
            vec!["mesh".into()]
        } else {
            vs.spec.gateways.iter().map(|g| qualify_gateway(g, &ns)).collect()
        };
        for r in &vs.spec.http {
            let Some(dest) = r.route.first() else { continue };
            let dest_port = dest.destination.port.and_then(|p| u16::try_from(p.number).ok());
            // A match's own `gateways` narrows the VirtualService's (Istio
            // indexes a VirtualService by its top-level gateways only).
            let matches: Vec<GatewayMatch> = if r.matches.is_empty() {
                vec![(None, false, None, gateways.clone())]
            } else {
                r.matches
                    .iter()
                    .map(|m| {
                        let uri = m.uri.as_ref();
                        let (prefix, exact) = match uri {
                            Some(u) if u.exact.is_some() => (u.exact.clone(), true),
                            Some(u) => (u.prefix.clone(), false),
                            None => (None, false),
                        };
                        let gws = if m.gateways.is_empty() {
                            gateways.clone()
                        } else {
                            let own = m.gateways.iter().map(|g| qualify_gateway(g, &ns));
                            own.filter(|g| gateways.contains(g)).collect()
                        };
                        (prefix, exact, m.port.and_then(|p| u16::try_from(p).ok()), gws)
                    })
                    .collect()
            };
            for (uri_prefix, exact, port, gateways) in matches {
                http.push(VsHttpRoute {
                    source: source.clone(),
                    namespace: ns.clone(),
                    hosts: vs.spec.hosts.clone(),
                    gateways,
                    uri_prefix,
                    exact,
                    port,
                    destination: dest.destination.host.clone(),
                    destination_port: dest_port,
                });
            }
        }
        for r in &vs.spec.tcp {
            let Some(dest) = r.route.first() else { continue };
            let dest_port = dest.destination.port.and_then(|p| u16::try_from(p.number).ok());
            let ports: Vec<Option<u16>> = if r.matches.is_empty() {
                vec![None]
            } else {
                r.matches.iter().map(|m| m.port.and_then(|p| u16::try_from(p).ok())).collect()
            };
            for port in ports {
                tcp.push(VsTcpRoute {
                    source: source.clone(),
                    namespace: ns.clone(),
                    gateways: gateways.clone(),
                    port,
                    destination: dest.destination.host.clone(),
                    destination_port: dest_port,
                    sni_hosts: None,
                });
            }
        }
        for r in &vs.spec.tls {
            let Some(dest) = r.route.first() else { continue };
            let dest_port = dest.destination.port.and_then(|p| u16::try_from(p.number).ok());
            for m in &r.matches {
                tcp.push(VsTcpRoute {
                    source: source.clone(),
                    namespace: ns.clone(),
                    gateways: gateways.clone(),
                    port: m.port.and_then(|p| u16::try_from(p).ok()),
                    destination: dest.destination.host.clone(),
                    destination_port: dest_port,
                    sni_hosts: Some(m.sni_hosts.clone()),
                });
            }
        }
    }
    (servers, http, tcp)
}
