//! The routing part of `ProxyConfig`: the `VirtualService` rules one
//! client applies to one Service port, already reduced by the model to
//! what must be decided per request (HTTP) or per connection (TCP).
//! Re-exported from `crate::config`.
//!
//! Follows <https://istio.io/latest/docs/reference/config/networking/virtual-service/>
//! (spec §1.6). Selectors that Istio evaluates when it builds a sidecar's
//! configuration (`match.port`, `sourceLabels`, `sourceNamespace`,
//! `gateways`) are resolved by the model and do not appear here.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The routes of one Service port as one client sees them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ServiceRoutes {
    /// `namespace/name` of the `VirtualService` the rules come from.
    #[serde(default)]
    pub source: String,
    /// HTTP rules (HTTP, HTTP2, GRPC ports), first match wins. A request no
    /// rule matches gets 404, as Envoy answers when a VirtualService's
    /// virtual host has no matching route (`NR`); with no rules at all the
    /// Service itself is the route (Istio's default virtual host).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRouteRule>,
    /// Weighted destinations of the first `tcp` rule that applies (other
    /// ports), chosen once per connection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<WeightedDestination>,
}

impl ServiceRoutes {
    /// True when no rule applies (the Service is reached directly).
    pub fn is_empty(&self) -> bool {
        self.http.is_empty() && self.tcp.is_empty()
    }
}

/// One `http[]` rule of a `VirtualService`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HttpRouteRule {
    /// `http[].name`, for logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Match entries, OR-ed; empty matches every request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpMatch>,
    /// Weighted destinations (unknown hosts already left out). Empty with
    /// `redirect`; empty without it: the proxy answers 503.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<WeightedDestination>,
    /// Answer with a redirect instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<HttpRedirect>,
    /// Rewrite the path and/or authority before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<HttpRewrite>,
    /// Bound on the whole request including retries, in milliseconds;
    /// `None`: no bound (Istio's default). Exceeded: 504.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// When to try again.
    #[serde(default)]
    pub retries: RetryPolicy,
    /// Destination hosts of the rule that name no Service of the registry
    /// and were left out (`host:port`), for logs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

/// One `http[].match[]` entry: every condition must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HttpMatch {
    /// On the path without the query string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatch>,
    /// `ignoreUriCase`: `uri` exact and prefix compare case-insensitively.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_uri_case: bool,
    /// `http` or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StringMatch>,
    /// On the method (`GET`, `POST`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    /// On the `Host` header (or `:authority`), port included as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatch>,
    /// Header name (lower case) → condition on its value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, StringMatch>,
    /// Header name (lower case) → condition that must NOT hold.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub without_headers: BTreeMap<String, StringMatch>,
    /// Query parameter name → condition on its (undecoded) value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query_params: BTreeMap<String, StringMatch>,
}

/// Istio's `StringMatch`. `regex` is RE2 syntax and must match the whole
/// value (Envoy `safe_regex`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StringMatch {
    /// The whole value equals this.
    Exact(String),
    /// The value starts with this (a plain string prefix).
    Prefix(String),
    /// The whole value matches this RE2 regex.
    Regex(String),
    /// `{}`: the header (or parameter) is present, with any value.
    Present,
}

/// One destination of a route and its relative weight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightedDestination {
    /// Service FQDN, `name.namespace.svc.cluster.local`.
    pub host: String,
    /// Service port.
    pub port: u16,
    /// DestinationRule subset (`OutboundService::subsets`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// Share is `weight / sum(weights)` of the rule; 0 gets nothing.
    pub weight: u32,
}

/// `redirect`: the proxy answers `code` with a `Location` built from the
/// request with these parts replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRedirect {
    /// Replaces the path (the query string is kept unless this has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Replaces the host (and port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// Replaces the scheme (`http`, `https`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Replaces the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `redirectCode`, default 301.
    pub code: u16,
}

/// `rewrite`, applied before the request is forwarded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRewrite {
    /// Replaces the part of the path the `uri` prefix matched (the whole
    /// path for exact, regex or no `uri` match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Replaces the `Host` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
}

/// `retries`, or Istio's default policy when the rule has none
/// (2 retries on connect-failure, refused-stream, unavailable, cancelled
/// and 503; `DefaultRetryPolicy` in pilot/pkg/networking/core/route/retry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Retries after the first try; 0 disables retries.
    pub attempts: u32,
    /// Bound on each try, in milliseconds; `None`: only the route timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout_ms: Option<u64>,
    pub retry_on: Vec<RetryOn>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 2,
            per_try_timeout_ms: None,
            retry_on: vec![RetryOn::ConnectFailure, RetryOn::Reset, RetryOn::Status(503)],
        }
    }
}

impl RetryPolicy {
    /// No retries.
    pub fn none() -> Self {
        RetryPolicy { attempts: 0, per_try_timeout_ms: None, retry_on: Vec::new() }
    }
}

/// One `retryOn` condition (Envoy `x-envoy-retry-on` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetryOn {
    /// `5xx`: any 5xx answer, or no answer (connect failure, reset, per-try timeout).
    #[serde(rename = "5xx")]
    Status5xx,
    /// `gateway-error`: 502, 503, 504.
    GatewayError,
    /// `connect-failure` (also a per-try timeout before the connection).
    ConnectFailure,
    /// `reset`, `refused-stream`, `cancelled`, `unavailable`: the upstream
    /// closed or reset before answering.
    Reset,
    /// `retriable-4xx`: 409.
    Retriable4xx,
    /// A status code listed in `retryOn` (`retriable-status-codes`).
    Status(u16),
}
