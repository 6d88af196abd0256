//! The loaded configuration: `AnyResource` (one document of a known kind), `Snapshot` (every
//! resource by kind, plus warnings) and the unified `Workload` view over pod-bearing kinds.

use crate::error::Warning;
use crate::istio::legacy::PolicySpec;
use crate::istio::networking::{
    DestinationRuleSpec, GatewaySpec, ServiceEntrySpec, WorkloadEntrySpec,
};
use crate::istio::security::{AuthorizationPolicySpec, PeerAuthenticationSpec};
use crate::istio::virtual_service::VirtualServiceSpec;
use crate::k8s::{
    ConfigMapSpec, Container, NamespaceSpec, PodSpec, SecretSpec, ServiceAccountSpec, ServiceSpec,
    WorkloadSpec,
};
use crate::meta::{ObjectMeta, Resource, Source};
use std::collections::BTreeMap;

/// One resource of a kind Veil knows.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyResource {
    /// `v1` Namespace.
    Namespace(Resource<NamespaceSpec>),
    /// `v1` Service.
    Service(Resource<ServiceSpec>),
    /// `apps/v1` Deployment.
    Deployment(Resource<WorkloadSpec>),
    /// `apps/v1` StatefulSet.
    StatefulSet(Resource<WorkloadSpec>),
    /// `apps/v1` DaemonSet.
    DaemonSet(Resource<WorkloadSpec>),
    /// `v1` Pod.
    Pod(Resource<PodSpec>),
    /// `v1` ServiceAccount.
    ServiceAccount(Resource<ServiceAccountSpec>),
    /// `v1` Secret.
    Secret(Resource<SecretSpec>),
    /// `v1` ConfigMap.
    ConfigMap(Resource<ConfigMapSpec>),
    /// `security.istio.io` PeerAuthentication.
    PeerAuthentication(Resource<PeerAuthenticationSpec>),
    /// `security.istio.io` AuthorizationPolicy.
    AuthorizationPolicy(Resource<AuthorizationPolicySpec>),
    /// `networking.istio.io` DestinationRule.
    DestinationRule(Resource<DestinationRuleSpec>),
    /// `networking.istio.io` Gateway.
    Gateway(Resource<GatewaySpec>),
    /// `networking.istio.io` VirtualService.
    VirtualService(Resource<VirtualServiceSpec>),
    /// `networking.istio.io` ServiceEntry.
    ServiceEntry(Resource<ServiceEntrySpec>),
    /// `networking.istio.io` WorkloadEntry.
    WorkloadEntry(Resource<WorkloadEntrySpec>),
    /// `networking.istio.io` Sidecar, kept opaque.
    Sidecar(Resource<serde_json::Value>),
    /// `authentication.istio.io/v1alpha1` Policy.
    Policy(Resource<PolicySpec>),
    /// `authentication.istio.io/v1alpha1` MeshPolicy.
    MeshPolicy(Resource<PolicySpec>),
    /// EnRoute `enroute.saaras.io` GatewayHost, kept opaque (Veil does not act on it).
    GatewayHost(Resource<serde_json::Value>),
}

macro_rules! each {
    ($self:ident, $r:ident => $e:expr) => {
        match $self {
            AnyResource::Namespace($r) => $e,
            AnyResource::Service($r) => $e,
            AnyResource::Deployment($r) => $e,
            AnyResource::StatefulSet($r) => $e,
            AnyResource::DaemonSet($r) => $e,
            AnyResource::Pod($r) => $e,
            AnyResource::ServiceAccount($r) => $e,
            AnyResource::Secret($r) => $e,
            AnyResource::ConfigMap($r) => $e,
            AnyResource::PeerAuthentication($r) => $e,
            AnyResource::AuthorizationPolicy($r) => $e,
            AnyResource::DestinationRule($r) => $e,
            AnyResource::Gateway($r) => $e,
            AnyResource::VirtualService($r) => $e,
            AnyResource::ServiceEntry($r) => $e,
            AnyResource::WorkloadEntry($r) => $e,
            AnyResource::Sidecar($r) => $e,
            AnyResource::Policy($r) => $e,
            AnyResource::MeshPolicy($r) => $e,
            AnyResource::GatewayHost($r) => $e,
        }
    };
}

impl AnyResource {
    /// `kind` as written.
    pub fn kind(&self) -> &str {
        each!(self, r => &r.kind)
    }
    /// `metadata`.
    pub fn meta(&self) -> &ObjectMeta {
        each!(self, r => &r.meta)
    }
    /// Where the document starts.
    pub fn source(&self) -> &Source {
        each!(self, r => &r.source)
    }
    /// `metadata.namespace`, or `default`.
    pub fn namespace_or_default(&self) -> &str {
        each!(self, r => r.namespace_or_default())
    }
}

/// Every resource of a configuration, one list per kind in input order, plus warnings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Namespaces.
    pub namespaces: Vec<Resource<NamespaceSpec>>,
    /// Services.
    pub services: Vec<Resource<ServiceSpec>>,
    /// Deployments.
    pub deployments: Vec<Resource<WorkloadSpec>>,
    /// StatefulSets.
    pub stateful_sets: Vec<Resource<WorkloadSpec>>,
    /// DaemonSets.
    pub daemon_sets: Vec<Resource<WorkloadSpec>>,
    /// Bare pods.
    pub pods: Vec<Resource<PodSpec>>,
    /// ServiceAccounts.
    pub service_accounts: Vec<Resource<ServiceAccountSpec>>,
    /// Secrets.
    pub secrets: Vec<Resource<SecretSpec>>,
    /// ConfigMaps.
    pub config_maps: Vec<Resource<ConfigMapSpec>>,
    /// PeerAuthentications.
    pub peer_authentications: Vec<Resource<PeerAuthenticationSpec>>,
    /// AuthorizationPolicies.
    pub authorization_policies: Vec<Resource<AuthorizationPolicySpec>>,
    /// DestinationRules.
    pub destination_rules: Vec<Resource<DestinationRuleSpec>>,
    /// Gateways.
    pub gateways: Vec<Resource<GatewaySpec>>,
    /// VirtualServices.
    pub virtual_services: Vec<Resource<VirtualServiceSpec>>,
    /// ServiceEntries.
    pub service_entries: Vec<Resource<ServiceEntrySpec>>,
    /// WorkloadEntries.
    pub workload_entries: Vec<Resource<WorkloadEntrySpec>>,
    /// Sidecars (opaque).
    pub sidecars: Vec<Resource<serde_json::Value>>,
    /// Legacy v1alpha1 Policies.
    pub policies: Vec<Resource<PolicySpec>>,
    /// Legacy v1alpha1 MeshPolicies.
    pub mesh_policies: Vec<Resource<PolicySpec>>,
    /// EnRoute GatewayHosts (opaque).
    pub gateway_hosts: Vec<Resource<serde_json::Value>>,
    /// Non-fatal findings, such as documents of unknown kinds.
    pub warnings: Vec<Warning>,
}

impl Snapshot {
    /// Adds one resource to the list of its kind.
    pub fn push(&mut self, resource: AnyResource) {
        match resource {
            AnyResource::Namespace(r) => self.namespaces.push(r),
            AnyResource::Service(r) => self.services.push(r),
            AnyResource::Deployment(r) => self.deployments.push(r),
            AnyResource::StatefulSet(r) => self.stateful_sets.push(r),
            AnyResource::DaemonSet(r) => self.daemon_sets.push(r),
            AnyResource::Pod(r) => self.pods.push(r),
            AnyResource::ServiceAccount(r) => self.service_accounts.push(r),
            AnyResource::Secret(r) => self.secrets.push(r),
            AnyResource::ConfigMap(r) => self.config_maps.push(r),
            AnyResource::PeerAuthentication(r) => self.peer_authentications.push(r),
            AnyResource::AuthorizationPolicy(r) => self.authorization_policies.push(r),
            AnyResource::DestinationRule(r) => self.destination_rules.push(r),
            AnyResource::Gateway(r) => self.gateways.push(r),
            AnyResource::VirtualService(r) => self.virtual_services.push(r),
            AnyResource::ServiceEntry(r) => self.service_entries.push(r),
            AnyResource::WorkloadEntry(r) => self.workload_entries.push(r),
            AnyResource::Sidecar(r) => self.sidecars.push(r),
            AnyResource::Policy(r) => self.policies.push(r),
            AnyResource::MeshPolicy(r) => self.mesh_policies.push(r),
            AnyResource::GatewayHost(r) => self.gateway_hosts.push(r),
        }
    }

    /// Every Deployment, StatefulSet, DaemonSet and bare Pod as a [`Workload`], in that order.
    pub fn workloads(&self) -> Vec<Workload> {
        let sets = [
            (WorkloadKind::Deployment, &self.deployments),
            (WorkloadKind::StatefulSet, &self.stateful_sets),
            (WorkloadKind::DaemonSet, &self.daemon_sets),
        ];
        let mut out: Vec<Workload> = sets
            .into_iter()
            .flat_map(|(kind, list)| list.iter().map(move |r| Workload::from_set(kind, r)))
            .collect();
        out.extend(self.pods.iter().map(Workload::from_pod));
        out
    }
}

/// Which kind a [`Workload`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkloadKind {
    /// `apps/v1` Deployment.
    Deployment,
    /// `apps/v1` StatefulSet.
    StatefulSet,
    /// `apps/v1` DaemonSet.
    DaemonSet,
    /// `v1` Pod.
    Pod,
}

/// The pod-level facts of a Deployment, StatefulSet, DaemonSet or bare Pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// The source kind.
    pub kind: WorkloadKind,
    /// `metadata.name` of the resource.
    pub name: String,
    /// Namespace (`default` when absent).
    pub namespace: String,
    /// Pod count: `replicas`, default 1 (a DaemonSet and a Pod count as 1).
    pub replicas: u32,
    /// Pod labels.
    pub pod_labels: BTreeMap<String, String>,
    /// Pod annotations.
    pub pod_annotations: BTreeMap<String, String>,
    /// Service account (`serviceAccountName`, else `serviceAccount`, else `default`).
    pub service_account: String,
    /// Application containers.
    pub containers: Vec<Container>,
    /// Where the resource was defined.
    pub source: Source,
}

impl Workload {
    fn from_set(kind: WorkloadKind, r: &Resource<WorkloadSpec>) -> Self {
        let replicas = match kind {
            WorkloadKind::DaemonSet => 1,
            _ => r.spec.replicas.unwrap_or(1),
        };
        let pod = &r.spec.template;
        Workload {
            kind,
            name: r.meta.name.clone(),
            namespace: r.namespace_or_default().to_string(),
            replicas,
            pod_labels: pod.metadata.labels.clone(),
            pod_annotations: pod.metadata.annotations.clone(),
            service_account: pod.spec.service_account().to_string(),
            containers: pod.spec.containers.clone(),
            source: r.source.clone(),
        }
    }

    fn from_pod(r: &Resource<PodSpec>) -> Self {
        Workload {
            kind: WorkloadKind::Pod,
            name: r.meta.name.clone(),
            namespace: r.namespace_or_default().to_string(),
            replicas: 1,
            pod_labels: r.meta.labels.clone(),
            pod_annotations: r.meta.annotations.clone(),
            service_account: r.spec.service_account().to_string(),
            containers: r.spec.containers.clone(),
            source: r.source.clone(),
        }
    }
}
