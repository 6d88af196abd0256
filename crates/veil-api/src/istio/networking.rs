//! `networking.istio.io` kinds other than VirtualService: DestinationRule, Gateway,
//! ServiceEntry, WorkloadEntry and Sidecar.

use crate::enums::strict_enum;
use crate::meta::WorkloadSelector;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

strict_enum! {
    /// Port protocol of Gateway servers and ServiceEntry ports, accepted in any case
    /// (`tls` is as good as `TLS`). Reference: istio/istio `pkg/config/protocol/instance.go`.
    pub enum Protocol: "protocol", case_insensitive = true {
        Http = "HTTP",
        Https = "HTTPS",
        Grpc = "GRPC",
        GrpcWeb = "GRPC-WEB",
        Http2 = "HTTP2",
        HttpProxy = "HTTP_PROXY",
        Mongo = "MONGO",
        Mysql = "MYSQL",
        Redis = "REDIS",
        Tcp = "TCP",
        Tls = "TLS",
        Udp = "UDP",
    }
}

strict_enum! {
    /// DestinationRule `tls.mode` (client side).
    /// Reference: <https://istio.io/latest/docs/reference/config/networking/destination-rule/#ClientTLSSettings-TLSmode>
    #[derive(Default)]
    pub enum ClientTlsMode: "tls mode", case_insensitive = false {
        #[default]
        Disable = "DISABLE",
        Simple = "SIMPLE",
        Mutual = "MUTUAL",
        IstioMutual = "ISTIO_MUTUAL",
    }
}

strict_enum! {
    /// DestinationRule `loadBalancer.simple`.
    /// Reference: <https://istio.io/latest/docs/reference/config/networking/destination-rule/#LoadBalancerSettings-SimpleLB>
    #[derive(Default)]
    pub enum SimpleLb: "load balancer", case_insensitive = false {
        #[default]
        Unspecified = "UNSPECIFIED",
        LeastConn = "LEAST_CONN",
        Random = "RANDOM",
        Passthrough = "PASSTHROUGH",
        RoundRobin = "ROUND_ROBIN",
        LeastRequest = "LEAST_REQUEST",
    }
}

/// `DestinationRule.spec` (`networking.istio.io/v1`, `v1beta1`, `v1alpha3`).
/// Reference: <https://istio.io/latest/docs/reference/config/networking/destination-rule/>
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRuleSpec {
    /// Service host (short names resolve in the rule's namespace; wildcards allowed). Required.
    #[serde(default)]
    pub host: String,
    /// Destination-level policy.
    #[serde(default)]
    pub traffic_policy: Option<TrafficPolicy>,
    /// Named subsets.
    #[serde(default)]
    pub subsets: Vec<Subset>,
    /// Namespaces the rule is visible to (`.`, `*`, names); all when empty.
    #[serde(default)]
    pub export_to: Vec<String>,
    /// Client workloads the rule applies to; all when absent.
    #[serde(default)]
    pub workload_selector: Option<WorkloadSelector>,
}

/// `trafficPolicy`. Port-level settings replace destination-level ones wholesale.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficPolicy {
    /// Load balancing.
    #[serde(default)]
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection pool, kept as written.
    #[serde(default)]
    pub connection_pool: Option<serde_json::Value>,
    /// Outlier detection, kept as written.
    #[serde(default)]
    pub outlier_detection: Option<serde_json::Value>,
    /// Upstream TLS.
    #[serde(default)]
    pub tls: Option<ClientTlsSettings>,
    /// Per Service-port overrides.
    #[serde(default)]
    pub port_level_settings: Vec<PortTrafficPolicy>,
}

/// `portLevelSettings[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortTrafficPolicy {
    /// The Service port this applies to.
    #[serde(default)]
    pub port: Option<PortSelector>,
    /// Load balancing.
    #[serde(default)]
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection pool, kept as written.
    #[serde(default)]
    pub connection_pool: Option<serde_json::Value>,
    /// Outlier detection, kept as written.
    #[serde(default)]
    pub outlier_detection: Option<serde_json::Value>,
    /// Upstream TLS.
    #[serde(default)]
    pub tls: Option<ClientTlsSettings>,
}

/// `{number}` port selector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSelector {
    /// Port number.
    #[serde(default)]
    pub number: u32,
}

/// `loadBalancer`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerSettings {
    /// Simple policy; `PASSTHROUGH` forwards to the original destination.
    #[serde(default)]
    pub simple: Option<SimpleLb>,
    /// Consistent hashing, kept as written.
    #[serde(default)]
    pub consistent_hash: Option<serde_json::Value>,
    /// Locality settings, kept as written.
    #[serde(default)]
    pub locality_lb_setting: Option<serde_json::Value>,
}

/// `tls` of a traffic policy (`ClientTLSSettings`). Certificate fields are file paths.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientTlsSettings {
    /// Mode; DISABLE when absent.
    #[serde(default)]
    pub mode: ClientTlsMode,
    /// Client certificate file (MUTUAL).
    #[serde(default)]
    pub client_certificate: Option<String>,
    /// Client key file (MUTUAL).
    #[serde(default)]
    pub private_key: Option<String>,
    /// CA bundle file to verify the server.
    #[serde(default)]
    pub ca_certificates: Option<String>,
    /// Kubernetes secret holding the credentials, looked up in the proxy's namespace.
    #[serde(default)]
    pub credential_name: Option<String>,
    /// Accepted server SANs.
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    /// SNI to send.
    #[serde(default)]
    pub sni: Option<String>,
    /// Skip server certificate verification.
    #[serde(default)]
    pub insecure_skip_verify: Option<bool>,
}

/// `subsets[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subset {
    /// Subset name, referenced by routes.
    #[serde(default)]
    pub name: String,
    /// Endpoint labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Overrides, field by field, of the rule's policy.
    #[serde(default)]
    pub traffic_policy: Option<TrafficPolicy>,
}

strict_enum! {
    /// Gateway server `tls.mode`.
    /// Reference: <https://istio.io/latest/docs/reference/config/networking/gateway/#ServerTLSSettings-TLSmode>
    #[derive(Default)]
    pub enum ServerTlsMode: "tls mode", case_insensitive = false {
        #[default]
        Passthrough = "PASSTHROUGH",
        Simple = "SIMPLE",
        Mutual = "MUTUAL",
        AutoPassthrough = "AUTO_PASSTHROUGH",
        IstioMutual = "ISTIO_MUTUAL",
        OptionalMutual = "OPTIONAL_MUTUAL",
    }
}

/// `Gateway.spec`.
/// Reference: <https://istio.io/latest/docs/reference/config/networking/gateway/>
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GatewaySpec {
    /// Labels of the gateway pods this applies to (any namespace).
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// Servers.
    #[serde(default)]
    pub servers: Vec<Server>,
}

/// `servers[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Server {
    /// The port (gateway Service port, translated to its targetPort).
    pub port: ServerPort,
    /// `[ns/]host` entries.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// TLS settings.
    #[serde(default)]
    pub tls: Option<ServerTlsSettings>,
    /// Optional server name.
    #[serde(default)]
    pub name: Option<String>,
    /// Bind address.
    #[serde(default)]
    pub bind: Option<String>,
}

/// `servers[].port`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerPort {
    /// Port number (required).
    pub number: u32,
    /// Protocol (required).
    pub protocol: Protocol,
    /// Port name.
    #[serde(default)]
    pub name: Option<String>,
}

/// `servers[].tls` (`ServerTLSSettings`). Certificate fields are file paths.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerTlsSettings {
    /// Redirect HTTP to HTTPS with a 301.
    #[serde(default)]
    pub https_redirect: bool,
    /// Mode; PASSTHROUGH when absent.
    #[serde(default)]
    pub mode: ServerTlsMode,
    /// Server certificate file.
    #[serde(default)]
    pub server_certificate: Option<String>,
    /// Server key file.
    #[serde(default)]
    pub private_key: Option<String>,
    /// CA bundle for client certificates.
    #[serde(default)]
    pub ca_certificates: Option<String>,
    /// Kubernetes secret (in the gateway pod's namespace) holding the credentials.
    #[serde(default)]
    pub credential_name: Option<String>,
    /// Accepted client SANs.
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    /// Minimum TLS version (`TLS_AUTO`, `TLSV1_0` … `TLSV1_3`).
    #[serde(default)]
    pub min_protocol_version: Option<String>,
    /// Maximum TLS version.
    #[serde(default)]
    pub max_protocol_version: Option<String>,
    /// Cipher suites.
    #[serde(default)]
    pub cipher_suites: Vec<String>,
}

strict_enum! {
    /// ServiceEntry `location`.
    /// Reference: <https://istio.io/latest/docs/reference/config/networking/service-entry/#ServiceEntry-Location>
    #[derive(Default)]
    pub enum Location: "location", case_insensitive = false {
        #[default]
        MeshExternal = "MESH_EXTERNAL",
        MeshInternal = "MESH_INTERNAL",
    }
}

strict_enum! {
    /// ServiceEntry `resolution`.
    /// Reference: <https://istio.io/latest/docs/reference/config/networking/service-entry/#ServiceEntry-Resolution>
    #[derive(Default)]
    pub enum Resolution: "resolution", case_insensitive = false {
        #[default]
        None = "NONE",
        Static = "STATIC",
        Dns = "DNS",
        DnsRoundRobin = "DNS_ROUND_ROBIN",
        DynamicDns = "DYNAMIC_DNS",
    }
}

/// `ServiceEntry.spec`.
/// Reference: <https://istio.io/latest/docs/reference/config/networking/service-entry/>
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEntrySpec {
    /// Hosts.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// VIPs or CIDRs.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Ports.
    #[serde(default)]
    pub ports: Vec<ServiceEntryPort>,
    /// MESH_EXTERNAL when absent.
    #[serde(default)]
    pub location: Location,
    /// NONE when absent.
    #[serde(default)]
    pub resolution: Resolution,
    /// Endpoints.
    #[serde(default)]
    pub endpoints: Vec<WorkloadEntrySpec>,
    /// Visibility.
    #[serde(default)]
    pub export_to: Vec<String>,
    /// Accepted server SANs.
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    /// Selects pods/WorkloadEntries as endpoints (MESH_INTERNAL only).
    #[serde(default)]
    pub workload_selector: Option<WorkloadSelector>,
}

/// ServiceEntry `ports[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEntryPort {
    /// Port number.
    pub number: u32,
    /// Protocol.
    #[serde(default)]
    pub protocol: Option<Protocol>,
    /// Port name.
    #[serde(default)]
    pub name: Option<String>,
    /// Endpoint port, when different.
    #[serde(default)]
    pub target_port: Option<u32>,
}

/// `WorkloadEntry.spec`, also a ServiceEntry endpoint.
/// Reference: <https://istio.io/latest/docs/reference/config/networking/workload-entry/>
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadEntrySpec {
    /// IP, DNS name or `unix://` path.
    #[serde(default)]
    pub address: Option<String>,
    /// Port name → endpoint port.
    #[serde(default)]
    pub ports: BTreeMap<String, u32>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Network name.
    #[serde(default)]
    pub network: Option<String>,
    /// Locality `region/zone/subzone`.
    #[serde(default)]
    pub locality: Option<String>,
    /// Load-balancing weight.
    #[serde(default)]
    pub weight: Option<u32>,
    /// Service account of the workload (its identity).
    #[serde(default)]
    pub service_account: Option<String>,
}
