//! `veil-api`: the serde types of every resource kind Veil reads (Kubernetes core/apps,
//! Istio security and networking, the legacy `authentication.istio.io/v1alpha1` API, EnRoute's
//! GatewayHost), multi-document YAML loading with file:line positions, validation errors,
//! and the Go-template filler for Istio's test templates. No I/O beyond reading text files.
#![forbid(unsafe_code)]

mod enums;
pub mod error;
mod index;
pub mod istio;
pub mod k8s;
mod kinds;
pub mod load;
pub mod meta;
pub mod snapshot;
mod split;
pub mod template;
mod validate;

pub use error::{ConfigError, LoadErrors, TemplateError, Warning};
pub use istio::legacy::{
    LegacyMtlsMode, LegacyMutualTls, LegacyPortSelector, PeerAuthenticationMethod, PolicySpec,
    TargetSelector,
};
pub use istio::networking::{
    ClientTlsMode, ClientTlsSettings, DestinationRuleSpec, GatewaySpec, LoadBalancerSettings,
    Location, PortSelector, PortTrafficPolicy, Protocol, Resolution, Server, ServerPort,
    ServerTlsMode, ServerTlsSettings, ServiceEntryPort, ServiceEntrySpec, SimpleLb, Subset,
    TrafficPolicy, WorkloadEntrySpec,
};
pub use istio::security::{
    AuthorizationAction, AuthorizationPolicySpec, Condition, MtlsMode, Operation,
    PeerAuthenticationSpec, PeerMtls, Rule, RuleFrom, RuleSource, RuleTo,
};
pub use istio::virtual_service::{
    Destination, DestinationPort, HttpMatchRequest, HttpRetry, HttpRewrite, HttpRoute,
    HttpRouteDestination, L4MatchAttributes, RouteDestination, StringMatch, TcpRoute,
    TlsMatchAttributes, TlsRoute, VirtualServiceSpec,
};
pub use k8s::{
    ConfigMapSpec, Container, ContainerPort, EnvVar, L4Protocol, NamespaceSpec, PodSpec,
    PodTemplate, PodTemplateMeta, SecretSpec, ServiceAccountSpec, ServicePort, ServiceSpec,
    ServiceType, TargetPort, WorkloadSpec,
};
pub use index::field_line;
pub use load::{load_dir, load_str, snapshot_from_str, LOCAL_RUNTIME_FILE};
pub use meta::{LabelSelector, ObjectMeta, Resource, Source, WorkloadSelector, DEFAULT_NAMESPACE};
pub use snapshot::{AnyResource, Snapshot, Workload, WorkloadKind};
pub use template::fill_template;
