//! `VirtualService` (`networking.istio.io`): ordered HTTP, TLS and TCP routes.
//! Reference: <https://istio.io/latest/docs/reference/config/networking/virtual-service/>

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `VirtualService.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceSpec {
    /// Hosts the routes apply to.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Gateways (`name`, `ns/name`, or `mesh`); absent means `["mesh"]` only.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// Visibility.
    #[serde(default)]
    pub export_to: Vec<String>,
    /// HTTP routes, first match wins.
    #[serde(default)]
    pub http: Vec<HttpRoute>,
    /// Unterminated TLS routes, first match wins.
    #[serde(default)]
    pub tls: Vec<TlsRoute>,
    /// TCP routes, first match wins.
    #[serde(default)]
    pub tcp: Vec<TcpRoute>,
}

/// `http[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    /// Route name.
    #[serde(default)]
    pub name: Option<String>,
    /// Match entries, OR-ed; none means match everything.
    #[serde(rename = "match", default)]
    pub matches: Vec<HttpMatchRequest>,
    /// Weighted destinations.
    #[serde(default)]
    pub route: Vec<HttpRouteDestination>,
    /// Redirect, kept as written.
    #[serde(default)]
    pub redirect: Option<serde_json::Value>,
    /// Rewrite.
    #[serde(default)]
    pub rewrite: Option<HttpRewrite>,
    /// Timeout as written (e.g. `5s`).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Retries.
    #[serde(default)]
    pub retries: Option<HttpRetry>,
    /// Fault injection, kept as written.
    #[serde(default)]
    pub fault: Option<serde_json::Value>,
    /// Mirror, kept as written.
    #[serde(default)]
    pub mirror: Option<serde_json::Value>,
    /// CORS, kept as written.
    #[serde(default)]
    pub cors_policy: Option<serde_json::Value>,
    /// Header manipulation, kept as written.
    #[serde(default)]
    pub headers: Option<serde_json::Value>,
}

/// `http[].match[]`: conditions inside one entry are AND-ed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpMatchRequest {
    /// Match name.
    #[serde(default)]
    pub name: Option<String>,
    /// Path.
    #[serde(default)]
    pub uri: Option<StringMatch>,
    /// Scheme.
    #[serde(default)]
    pub scheme: Option<StringMatch>,
    /// Method.
    #[serde(default)]
    pub method: Option<StringMatch>,
    /// Host/authority.
    #[serde(default)]
    pub authority: Option<StringMatch>,
    /// Required headers (lower-case keys; an empty match tests presence).
    #[serde(default)]
    pub headers: BTreeMap<String, StringMatch>,
    /// Headers that must not match.
    #[serde(default)]
    pub without_headers: BTreeMap<String, StringMatch>,
    /// Query parameters.
    #[serde(default)]
    pub query_params: BTreeMap<String, StringMatch>,
    /// Listener port.
    #[serde(default)]
    pub port: Option<u32>,
    /// Overrides the VirtualService `gateways` for this match.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// Client workload labels (a selector, applies with `mesh`).
    #[serde(default)]
    pub source_labels: BTreeMap<String, String>,
    /// Client namespace.
    #[serde(default)]
    pub source_namespace: Option<String>,
    /// Case-insensitive `exact`/`prefix` URI match.
    #[serde(default)]
    pub ignore_uri_case: bool,
}

/// `StringMatch`: one of `exact`, `prefix`, `regex` (RE2, whole-string); all absent
/// matches any value (header presence).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StringMatch {
    /// Exact value.
    #[serde(default)]
    pub exact: Option<String>,
    /// Prefix (plain string prefix).
    #[serde(default)]
    pub prefix: Option<String>,
    /// RE2 regex matching the entire value.
    #[serde(default)]
    pub regex: Option<String>,
}

/// `route[]` of an HTTP route.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpRouteDestination {
    /// Destination.
    pub destination: Destination,
    /// Relative weight; a single destination gets everything.
    #[serde(default)]
    pub weight: Option<u32>,
    /// Header manipulation, kept as written.
    #[serde(default)]
    pub headers: Option<serde_json::Value>,
}

/// `destination`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    /// Service host (short names resolve in the VirtualService's namespace).
    #[serde(default)]
    pub host: String,
    /// DestinationRule subset.
    #[serde(default)]
    pub subset: Option<String>,
    /// Service port; defaults to the listener port or the Service's only port.
    #[serde(default)]
    pub port: Option<DestinationPort>,
}

/// `destination.port`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationPort {
    /// Port number.
    #[serde(default)]
    pub number: u32,
}

/// `rewrite`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRewrite {
    /// Replacement for the matched path prefix (or whole path).
    #[serde(default)]
    pub uri: Option<String>,
    /// Replacement authority/Host.
    #[serde(default)]
    pub authority: Option<String>,
}

/// `retries`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRetry {
    /// Number of retries.
    #[serde(default)]
    pub attempts: u32,
    /// Per-try timeout as written (e.g. `2s`).
    #[serde(default)]
    pub per_try_timeout: Option<String>,
    /// Envoy retry conditions, comma-separated.
    #[serde(default)]
    pub retry_on: Option<String>,
}

/// `tcp[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TcpRoute {
    /// L4 match entries, OR-ed.
    #[serde(rename = "match", default)]
    pub matches: Vec<L4MatchAttributes>,
    /// Weighted destinations, chosen per connection.
    #[serde(default)]
    pub route: Vec<RouteDestination>,
}

/// `tls[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TlsRoute {
    /// TLS match entries, OR-ed.
    #[serde(rename = "match", default)]
    pub matches: Vec<TlsMatchAttributes>,
    /// Weighted destinations.
    #[serde(default)]
    pub route: Vec<RouteDestination>,
}

/// `tcp[].match[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct L4MatchAttributes {
    /// Destination CIDRs.
    #[serde(default)]
    pub destination_subnets: Vec<String>,
    /// Listener port.
    #[serde(default)]
    pub port: Option<u32>,
    /// Client workload labels.
    #[serde(default)]
    pub source_labels: BTreeMap<String, String>,
    /// Gateways this match applies to.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// Client namespace.
    #[serde(default)]
    pub source_namespace: Option<String>,
}

/// `tls[].match[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsMatchAttributes {
    /// SNI values (wildcards allowed); required by Istio.
    #[serde(default)]
    pub sni_hosts: Vec<String>,
    /// Destination CIDRs.
    #[serde(default)]
    pub destination_subnets: Vec<String>,
    /// Listener port.
    #[serde(default)]
    pub port: Option<u32>,
    /// Client workload labels.
    #[serde(default)]
    pub source_labels: BTreeMap<String, String>,
    /// Gateways this match applies to.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// Client namespace.
    #[serde(default)]
    pub source_namespace: Option<String>,
}

/// `route[]` of a TCP or TLS route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteDestination {
    /// Destination.
    pub destination: Destination,
    /// Relative weight.
    #[serde(default)]
    pub weight: Option<u32>,
}
