//! Kubernetes core and apps kinds Veil reads: Namespace, Service, ServiceAccount, Secret,
//! ConfigMap, and the pod-bearing kinds (Deployment, StatefulSet, DaemonSet, Pod).
//! Fields Veil ignores are tolerated and dropped.

use crate::enums::strict_enum;
use crate::meta::LabelSelector;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;

/// `Namespace` body (no fields are read; the `istio-injection` label lives in metadata).
/// Reference: <https://kubernetes.io/docs/reference/kubernetes-api/cluster-resources/namespace-v1/>
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NamespaceSpec {}

/// `ServiceAccount` body (no fields are read; the name is the identity).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceAccountSpec {}

strict_enum! {
    /// Kubernetes `Service.spec.type`.
    #[derive(Default)]
    pub enum ServiceType: "service type", case_insensitive = false {
        #[default]
        ClusterIp = "ClusterIP",
        NodePort = "NodePort",
        LoadBalancer = "LoadBalancer",
        ExternalName = "ExternalName",
    }
}

strict_enum! {
    /// Kubernetes L4 protocol of a Service or container port.
    #[derive(Default)]
    pub enum L4Protocol: "protocol", case_insensitive = false {
        #[default]
        Tcp = "TCP",
        Udp = "UDP",
        Sctp = "SCTP",
    }
}

/// `Service.spec`.
/// Reference: <https://kubernetes.io/docs/reference/kubernetes-api/service-resources/service-v1/>
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// `type`; ClusterIP when absent.
    #[serde(default, rename = "type")]
    pub service_type: ServiceType,
    /// `clusterIP`; `"None"` makes the Service headless.
    #[serde(default, rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    /// Pod labels the Service selects.
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// Declared ports.
    #[serde(default)]
    pub ports: Vec<ServicePort>,
}

impl ServiceSpec {
    /// True for `clusterIP: None` (a headless Service: clients connect to pod IPs).
    pub fn is_headless(&self) -> bool {
        self.cluster_ip.as_deref() == Some("None")
    }
}

/// One `Service.spec.ports[]` entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// Port name; its prefix (`http-`, `tcp-`, …) selects the protocol when `appProtocol` is absent.
    #[serde(default)]
    pub name: Option<String>,
    /// Service port (1..=65535; validation checks the range).
    pub port: u32,
    /// Target on the pod: a number or a container port name; absent means `port`.
    #[serde(default)]
    pub target_port: Option<TargetPort>,
    /// L4 protocol; TCP when absent.
    #[serde(default)]
    pub protocol: Option<L4Protocol>,
    /// `appProtocol` (e.g. `http`, `grpc`, `mysql`), preferred over the name prefix.
    #[serde(default)]
    pub app_protocol: Option<String>,
    /// `nodePort` for NodePort/LoadBalancer Services.
    #[serde(default)]
    pub node_port: Option<u32>,
}

impl ServicePort {
    /// The effective target: `targetPort`, or the Service port when absent.
    pub fn target(&self) -> TargetPort {
        self.target_port
            .clone()
            .unwrap_or(TargetPort::Number(self.port))
    }
}

/// A `targetPort`: an integer port or the name of a container port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum TargetPort {
    /// A port number on the pod.
    Number(u32),
    /// The `name` of a container port.
    Name(String),
}

impl<'de> Deserialize<'de> for TargetPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = TargetPort;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a port number or a container port name")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<TargetPort, E> {
                u32::try_from(v)
                    .map(TargetPort::Number)
                    .map_err(|_| E::custom(format!("port {v} is out of range 1..65535")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<TargetPort, E> {
                u32::try_from(v)
                    .map(TargetPort::Number)
                    .map_err(|_| E::custom(format!("port {v} is out of range 1..65535")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TargetPort, E> {
                Ok(match v.parse::<u32>() {
                    Ok(n) => TargetPort::Number(n),
                    Err(_) => TargetPort::Name(v.to_string()),
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// `spec` of Deployment, StatefulSet and DaemonSet.
/// Reference: <https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/deployment-v1/>
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSpec {
    /// `replicas`; absent means 1 (DaemonSets have none: one pod per node).
    #[serde(default)]
    pub replicas: Option<u32>,
    /// Pod selector.
    #[serde(default)]
    pub selector: Option<LabelSelector>,
    /// Pod template.
    #[serde(default)]
    pub template: PodTemplate,
}

/// `spec.template`: pod metadata and pod spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PodTemplate {
    /// `template.metadata` (labels and annotations matter).
    #[serde(default)]
    pub metadata: PodTemplateMeta,
    /// `template.spec`.
    #[serde(default)]
    pub spec: PodSpec,
}

/// `template.metadata`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PodTemplateMeta {
    /// Pod labels (matched by Service and policy selectors).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Pod annotations (e.g. `sidecar.istio.io/inject`).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// Kubernetes `PodSpec` (the fields Veil reads).
/// Reference: <https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/>
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    /// `serviceAccountName`.
    #[serde(default)]
    pub service_account_name: Option<String>,
    /// Deprecated `serviceAccount`, used when `serviceAccountName` is absent.
    #[serde(default)]
    pub service_account: Option<String>,
    /// Application containers.
    #[serde(default)]
    pub containers: Vec<Container>,
    /// Init containers.
    #[serde(default)]
    pub init_containers: Vec<Container>,
    /// `hostNetwork`: the pod shares the node's network (no sidecar interception).
    #[serde(default)]
    pub host_network: bool,
}

impl PodSpec {
    /// The pod's service account: `serviceAccountName`, else `serviceAccount`, else `default`.
    pub fn service_account(&self) -> &str {
        self.service_account_name
            .as_deref()
            .or(self.service_account.as_deref())
            .filter(|s| !s.is_empty())
            .unwrap_or("default")
    }
}

/// One container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// Container name.
    #[serde(default)]
    pub name: String,
    /// Image reference.
    #[serde(default)]
    pub image: Option<String>,
    /// Entrypoint override.
    #[serde(default)]
    pub command: Vec<String>,
    /// Arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Declared container ports.
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
    /// Environment variables.
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// Readiness probe, kept as written.
    #[serde(default)]
    pub readiness_probe: Option<serde_json::Value>,
    /// Liveness probe, kept as written.
    #[serde(default)]
    pub liveness_probe: Option<serde_json::Value>,
    /// Startup probe, kept as written.
    #[serde(default)]
    pub startup_probe: Option<serde_json::Value>,
}

/// A `containers[].ports[]` entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    /// The port the container listens on.
    pub container_port: u32,
    /// Name, referable from a Service `targetPort`.
    #[serde(default)]
    pub name: Option<String>,
    /// L4 protocol; TCP when absent.
    #[serde(default)]
    pub protocol: Option<L4Protocol>,
}

/// A `containers[].env[]` entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    /// Variable name.
    pub name: String,
    /// Literal value.
    #[serde(default)]
    pub value: Option<String>,
    /// `valueFrom` (secret/configmap/field refs), kept as written and not resolved.
    #[serde(default)]
    pub value_from: Option<serde_json::Value>,
}

/// `Secret` body (top-level `type`, `data`, `stringData`).
/// Reference: <https://kubernetes.io/docs/reference/kubernetes-api/config-and-storage-resources/secret-v1/>
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SecretSpec {
    /// `type`, e.g. `kubernetes.io/tls` or `Opaque`.
    pub secret_type: Option<String>,
    /// `data`, base64-decoded.
    pub data: BTreeMap<String, Vec<u8>>,
    /// `stringData`, as written.
    pub string_data: BTreeMap<String, String>,
}

impl SecretSpec {
    /// A key's bytes: `stringData` wins over `data`, as in the Kubernetes API server.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.string_data
            .get(key)
            .map(|s| s.as_bytes())
            .or_else(|| self.data.get(key).map(|v| v.as_slice()))
    }
}

/// The raw Secret document before base64 decoding.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawSecret {
    #[serde(default, rename = "type")]
    pub secret_type: Option<String>,
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    #[serde(default)]
    pub string_data: BTreeMap<String, String>,
}

/// `ConfigMap` body.
/// Reference: <https://kubernetes.io/docs/reference/kubernetes-api/config-and-storage-resources/config-map-v1/>
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapSpec {
    /// `data`.
    #[serde(default)]
    pub data: BTreeMap<String, String>,
}
