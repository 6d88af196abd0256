//! The registry: the Services and pods of the mesh, in the plain form the
//! policy and config code needs (no YAML, no positions).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::config::{well_known_protocol, Protocol};

/// Labels of a pod or a selector.
pub type Labels = BTreeMap<String, String>;

/// True when every `selector` label is on `labels` (`selector ⊆ labels`),
/// Kubernetes' `matchLabels` rule. An empty selector matches everything.
pub fn selector_matches(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// One running pod (a workload instance).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub labels: Labels,
    pub service_account: String,
    pub ip: IpAddr,
    /// Has a Veil sidecar (injected).
    pub sidecar: bool,
    /// True for gateway pods (their proxy runs in gateway mode).
    pub gateway: bool,
    /// Container ports (`containerPort`, with optional name).
    pub ports: Vec<ContainerPort>,
}

/// A container port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerPort {
    pub port: u16,
    pub name: Option<String>,
}

/// A Kubernetes Service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    pub selector: Labels,
    /// None for headless Services (`clusterIP: None`).
    pub cluster_ip: Option<IpAddr>,
    pub ports: Vec<ServicePort>,
}

impl Service {
    /// `name.namespace.svc.<domain>`.
    pub fn hostname(&self, domain: &str) -> String {
        format!("{}.{}.svc.{}", self.name, self.namespace, domain)
    }

    /// Pods selected by this Service (same namespace, selector ⊆ labels).
    /// A Service without a selector selects nothing.
    pub fn selects(&self, pod: &Pod) -> bool {
        !self.selector.is_empty() && pod.namespace == self.namespace && selector_matches(&self.selector, &pod.labels)
    }
}

/// `targetPort`: a number, or the name of a container port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

/// One port of a Service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: u16,
    pub target_port: TargetPort,
    pub app_protocol: Option<String>,
}

impl ServicePort {
    /// The workload port this Service port reaches on `pod`; `None` when a
    /// named target port is not declared by the pod.
    pub fn target_on(&self, pod: &Pod) -> Option<u16> {
        match &self.target_port {
            TargetPort::Number(n) => Some(*n),
            TargetPort::Name(name) => pod
                .ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.port),
        }
    }

    /// Istio's protocol selection: `appProtocol`, else the port name
    /// (`<proto>[-suffix]`), else the well-known ports (3306, 25, 53, 27017).
    ///
    /// Follows <https://istio.io/latest/docs/ops/configuration/traffic-management/protocol-selection/>.
    pub fn protocol(&self) -> Protocol {
        if let Some(p) = self.app_protocol.as_deref().and_then(parse_protocol) {
            return p;
        }
        if let Some(name) = &self.name {
            let prefix = name.split('-').next().unwrap_or(name);
            if let Some(p) = parse_protocol(prefix) {
                return p;
            }
        }
        well_known_protocol(self.port)
    }
}

/// Maps an Istio protocol name (case-insensitive) to a [`Protocol`].
pub fn parse_protocol(name: &str) -> Option<Protocol> {
    Some(match name.to_ascii_lowercase().as_str() {
        "http" | "http1" | "http/1.1" => Protocol::Http,
        "http2" | "h2c" | "kubernetes.io/h2c" => Protocol::Http2,
        "grpc" | "grpc-web" => Protocol::Grpc,
        "tcp" | "mongo" | "redis" | "mongodb" => Protocol::Tcp,
        "tls" | "https" => Protocol::Tls,
        "mysql" => Protocol::Mysql,
        _ => return None,
    })
}

/// The mesh as the registry sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Registry {
    pub pods: Vec<Pod>,
    pub services: Vec<Service>,
}
