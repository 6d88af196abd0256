//! A synthetic mesh for the control-plane benchmark, as a user would write
//! it: Istio/Kubernetes YAML (Namespaces, Services, Deployments,
//! DestinationRules, PeerAuthentications) loaded by `veil-api`, then turned
//! into the model's input the way `veil up` does (pods with addresses,
//! Services with ClusterIPs, policies, routes).
//!
//! At scale 1.0: 50 namespaces × 20 Services = 1000 Services, each backed by
//! a Deployment of 2 replicas (2000 workloads, each with a sidecar), 200
//! DestinationRules, 100 PeerAuthentications (one mesh-wide, 49 namespace,
//! 50 workload with port-level modes).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use veil_api::Snapshot;
use veil_model::from_api;
use veil_model::{MeshInput, MeshSettings, Pod, Registry};

/// Sizes of the synthetic mesh.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub namespaces: u32,
    pub services_per_namespace: u32,
    pub replicas: u32,
    pub destination_rules: u32,
    pub peer_authentications: u32,
}

impl Scale {
    /// The size (1000 Services, 2000 workloads, 200 DR, 100 PA),
    /// multiplied by `factor` (at least one Service, DestinationRule, and
    /// two PeerAuthentications).
    pub fn times(factor: f64) -> Scale {
        let n = |base: f64, min: u32| ((base * factor).round() as u32).max(min);
        let services = n(1000.0, 1);
        let namespaces = services.min(50);
        Scale {
            namespaces,
            services_per_namespace: services.div_ceil(namespaces),
            replicas: 2,
            destination_rules: n(200.0, 1),
            peer_authentications: n(100.0, 2),
        }
    }
}

/// The mesh as YAML text (one multi-document file).
pub fn yaml(scale: &Scale) -> String {
    let mut y = String::new();
    for n in 0..scale.namespaces {
        let _ = write!(y, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns-{n}\n  labels:\n    istio-injection: enabled\n---\n");
        for s in 0..scale.services_per_namespace {
            let _ = write!(
                y,
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{s}\n  namespace: ns-{n}\nspec:\n  selector:\n    app: svc-{s}\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n  - name: tcp-db\n    port: 5432\n    targetPort: 5432\n---\n\
                 apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: svc-{s}\n  namespace: ns-{n}\nspec:\n  replicas: {r}\n  selector:\n    matchLabels:\n      app: svc-{s}\n  template:\n    metadata:\n      labels:\n        app: svc-{s}\n        version: v1\n    spec:\n      serviceAccountName: svc-{s}\n      containers:\n      - name: app\n        image: app\n        ports:\n        - name: http\n          containerPort: 8080\n        - name: tcp-db\n          containerPort: 5432\n---\n",
                r = scale.replicas
            );
        }
    }
    for d in 0..scale.destination_rules {
        let (n, s) = (d % scale.namespaces, (d / scale.namespaces) % scale.services_per_namespace);
        let mode = if d % 10 == 9 { "DISABLE" } else { "ISTIO_MUTUAL" };
        let _ = write!(
            y,
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: dr-{d}\n  namespace: ns-{n}\nspec:\n  host: svc-{s}.ns-{n}.svc.cluster.local\n  trafficPolicy:\n    tls:\n      mode: {mode}\n  subsets:\n  - name: v1\n    labels:\n      version: v1\n---\n"
        );
    }
    let _ = write!(y, "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: istio-system\nspec:\n  mtls:\n    mode: STRICT\n---\n");
    let rest = scale.peer_authentications.saturating_sub(1);
    let per_ns = (rest / 2).min(scale.namespaces);
    for n in 0..per_ns {
        let mode = if n % 2 == 0 { "PERMISSIVE" } else { "STRICT" };
        let _ = write!(y, "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: ns-{n}\nspec:\n  mtls:\n    mode: {mode}\n---\n");
    }
    for w in 0..rest.saturating_sub(per_ns) {
        let (n, s) = (w % scale.namespaces, (w / scale.namespaces) % scale.services_per_namespace);
        let _ = write!(
            y,
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: pa-{w}\n  namespace: ns-{n}\nspec:\n  selector:\n    matchLabels:\n      app: svc-{s}\n  mtls:\n    mode: STRICT\n  portLevelMtls:\n    5432:\n      mode: PERMISSIVE\n---\n"
        );
    }
    y
}

/// Loads the YAML into a snapshot.
///
/// # Errors
/// The loader's messages, joined, when the generated YAML is invalid.
pub fn snapshot(text: &str) -> Result<Snapshot, String> {
    veil_api::snapshot_from_str(Path::new("synthetic.yaml"), text)
        .map_err(|e| e.0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
}

fn v4(base: u32, i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(base.wrapping_add(i)))
}

/// The model input of a snapshot: pods from its workloads (10.0.0.0/8 in
/// order), ClusterIPs (10.96.0.0/12 in order), policies, DestinationRules
/// and routes.
pub fn mesh_input(snapshot: &Snapshot) -> MeshInput {
    let settings = MeshSettings::default();
    let pods: Vec<Pod> = from_api::planned_pods(snapshot)
        .into_iter()
        .zip(0u32..)
        .map(|(p, i)| Pod {
            name: p.name,
            namespace: p.namespace,
            labels: p.labels,
            service_account: p.service_account,
            ip: v4(0x0A01_0000, i),
            sidecar: p.sidecar,
            gateway: p.gateway,
            ports: p.ports,
        })
        .collect();
    let cluster_ips: BTreeMap<(String, String), IpAddr> = snapshot
        .services
        .iter()
        .zip(0u32..)
        .map(|(s, i)| ((s.namespace_or_default().to_string(), s.meta.name.clone()), v4(0x0A60_0000, i)))
        .collect();
    let lookup = |ns: &str, name: &str| cluster_ips.get(&(ns.to_string(), name.to_string())).copied();
    let services = from_api::services(snapshot, &lookup);
    let (gateway_servers, http_routes, tcp_routes) = from_api::routing(snapshot);
    MeshInput {
        registry: Registry { pods, services },
        peer_authentications: from_api::peer_authentications(snapshot, &settings.root_namespace),
        destination_rules: from_api::destination_rules(snapshot),
        gateway_servers,
        http_routes,
        tcp_routes,
        virtual_services: from_api::virtual_services(snapshot),
        settings,
        service_entries: Vec::new(),
    }
}
