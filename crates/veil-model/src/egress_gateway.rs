//! The egress gateway Istio installs beside its ingress gateway: the
//! Service `istio-system/istio-egressgateway` sidecars route to (seed 004,
//! case 22), and the certificate files its old-style Gateway servers name.
//!
//! Follows istio.io/latest/docs/tasks/traffic-management/egress/egress-gateway
//! and the `istio-egressgateway` Service of Istio's default profile
//! (selector `istio: egressgateway`).

use veil_api::Snapshot;

use crate::from_api::wants_gateway;
use crate::registry::{Service, ServicePort, TargetPort};

/// Labels of the egress gateway Istio installs (`istio: egressgateway`).
pub const EGRESS_GATEWAY_LABEL: (&str, &str) = ("istio", "egressgateway");
/// Name of the egress gateway's pod, Deployment and Service in `istio-system`.
pub const EGRESS_GATEWAY: &str = "istio-egressgateway";

/// The Service `istio-system/istio-egressgateway` Istio installs with its
/// egress gateway, when the snapshot has egress Gateways and no such
/// Service: selector `istio: egressgateway`, one port per Gateway server
/// port (named after the server's port, target port the same number, as
/// Veil's gateway listens on the server port itself).
pub fn egress_gateway_service(snapshot: &Snapshot) -> Option<Service> {
    let (k, v) = EGRESS_GATEWAY_LABEL;
    let exists = snapshot.services.iter().any(|s| s.meta.name == EGRESS_GATEWAY && s.namespace_or_default() == "istio-system");
    let labelled = snapshot.workloads().iter().any(|w| w.pod_labels.get(k).map(String::as_str) == Some(v));
    if exists || labelled || !wants_gateway(snapshot, (k, v)) {
        return None;
    }
    let mut ports: Vec<ServicePort> = Vec::new();
    let servers = snapshot.gateways.iter().filter(|g| g.spec.selector.get(k).map(String::as_str) == Some(v));
    for s in servers.flat_map(|g| g.spec.servers.iter()) {
        let Ok(port) = u16::try_from(s.port.number) else { continue };
        if !ports.iter().any(|p| p.port == port) {
            let name = s.port.name.clone().filter(|n| !n.is_empty());
            ports.push(ServicePort { name, port, target_port: TargetPort::Number(port), app_protocol: None });
        }
    }
    Some(Service {
        name: EGRESS_GATEWAY.into(),
        namespace: "istio-system".into(),
        selector: [(k.to_string(), v.to_string())].into(),
        cluster_ip: None,
        ports,
    })
}

/// Istio up to 1.5 mounted each proxy's own mesh certificate at
/// `/etc/certs` (`cert-chain.pem`, `key.pem`, `root-cert.pem`, from the
/// Secret `istio.<service account>`). A gateway server `MUTUAL` with exactly
/// these files presents the gateway's mesh certificate and takes mesh
/// clients: it is `ISTIO_MUTUAL` (seed 004's egress gateway).
pub(crate) fn istio_mounted_certs(mut tls: veil_api::ServerTlsSettings) -> veil_api::ServerTlsSettings {
    let is = |f: &Option<String>, name: &str| f.as_deref() == Some(format!("/etc/certs/{name}").as_str());
    let mounted = is(&tls.server_certificate, "cert-chain.pem")
        && is(&tls.private_key, "key.pem")
        && is(&tls.ca_certificates, "root-cert.pem")
        && tls.credential_name.is_none();
    if tls.mode == veil_api::ServerTlsMode::Mutual && mounted {
        tls.mode = veil_api::ServerTlsMode::IstioMutual;
        (tls.server_certificate, tls.private_key, tls.ca_certificates) = (None, None, None);
    }
    tls
}
