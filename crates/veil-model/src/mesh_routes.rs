//! `VirtualService` routing on sidecars: which VirtualService applies to a
//! client's Service port, and its rules reduced to [`ServiceRoutes`].
//!
//! Follows spec §1.6 and Istio's sidecar route generation
//! (pilot/pkg/networking/core/route/route.go, `BuildSidecarVirtualHostWrapper`):
//! - a VirtualService reaches sidecars when its `gateways` is empty or holds
//!   `mesh`, and its `exportTo` admits the client's namespace (empty: all);
//! - its hosts (a short name resolves in the VirtualService's namespace)
//!   must cover the Service FQDN; of several, the most specific host wins
//!   (exact, then the longest wildcard), then the oldest, then by name;
//! - a match entry with `gateways` applies only when they name `mesh`;
//!   `port`, `sourceLabels` and `sourceNamespace` are selectors decided
//!   here against the Service port and the client pod;
//! - rules after the first catch-all are unreachable and left out
//!   (`IsCatchAllRoute`); a VirtualService that leaves no rule for a client
//!   is discarded for it, and the Service is then its own route (Istio's
//!   default virtual host for services "missing" a VirtualService);
//! - a destination port defaults to the Service's only port, else the port
//!   the client called; a destination host that names no Service is left
//!   out (and listed in `skipped`).
//!
//! HTTP ports (HTTP, HTTP2, GRPC) get `http` rules; other ports get the
//! destinations of the first applicable `tcp` rule.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use veil_api::{HttpMatchRequest, HttpRoute, VirtualServiceSpec};

use crate::build::MeshInput;
use crate::config::*;
use crate::registry::{selector_matches, Pod};
use crate::routes::{host_covers, resolve_host};

/// A `VirtualService` as the model reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VirtualService {
    /// `metadata.namespace` (`default` when absent).
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// RFC 3339 `creationTimestamp`; absent sorts as oldest.
    #[serde(default)]
    pub created: Option<String>,
    /// `spec` as written.
    pub spec: VirtualServiceSpec,
}

impl VirtualService {
    /// `namespace/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// True when the VirtualService binds to sidecars (`gateways` empty or
    /// containing `mesh`).
    pub fn on_mesh(&self) -> bool {
        self.spec.gateways.is_empty() || self.spec.gateways.iter().any(|g| g == "mesh")
    }

    /// True when `exportTo` makes it visible to clients in `ns`.
    pub fn visible_to(&self, ns: &str) -> bool {
        let e = &self.spec.export_to;
        e.is_empty() || e.iter().any(|x| x == "*" || x == ns || (x == "." && self.namespace == ns))
    }
}

/// The mesh VirtualServices of one [`MeshInput`], indexed for lookups.
pub struct MeshRoutes<'a> {
    /// On-mesh VirtualServices, oldest first, with their resolved hosts.
    services: Vec<(&'a VirtualService, Vec<String>)>,
    /// Service FQDN → its ports.
    ports: BTreeMap<String, Vec<u16>>,
    domain: &'a str,
}

impl<'a> MeshRoutes<'a> {
    /// Indexes the VirtualServices of `input` that bind to sidecars.
    pub fn new(input: &'a MeshInput) -> Self {
        let domain = input.settings.domain.as_str();
        let mut services: Vec<(&VirtualService, Vec<String>)> = input
            .virtual_services
            .iter()
            .filter(|v| v.on_mesh())
            .map(|v| (v, v.spec.hosts.iter().map(|h| resolve_host(h, &v.namespace, domain)).collect()))
            .collect();
        services.sort_by(|(a, _), (b, _)| (&a.created, &a.namespace, &a.name).cmp(&(&b.created, &b.namespace, &b.name)));
        let mut ports: BTreeMap<String, Vec<u16>> = BTreeMap::new();
        for s in &input.registry.services {
            ports.entry(s.hostname(domain)).or_default().extend(s.ports.iter().map(|p| p.port));
        }
        for e in &input.service_entries {
            for h in &e.hosts {
                ports.entry(h.clone()).or_default().extend(e.ports.iter().map(|p| p.number));
            }
        }
        MeshRoutes { services, ports, domain }
    }

    /// True when no VirtualService binds to sidecars.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// What about `client` changes the routes besides its namespace: for
    /// every `sourceLabels` selector, whether the client's labels match.
    pub fn signature(&self, client: &Pod) -> Vec<bool> {
        let http = |r: &'a HttpRoute| r.matches.iter().map(|m| &m.source_labels);
        self.services
            .iter()
            .flat_map(|(v, _)| {
                let tcp = v.spec.tcp.iter().flat_map(|r| r.matches.iter().map(|m| &m.source_labels));
                v.spec.http.iter().flat_map(http).chain(tcp)
            })
            .filter(|sel| !sel.is_empty())
            .map(|sel| selector_matches(sel, &client.labels))
            .collect()
    }

    /// Sets `routes` on every Service port of `outbound` as `client` sees it.
    pub fn attach(&self, client: &Pod, outbound: &mut Outbound) {
        for service in &mut outbound.services {
            service.routes = self.service_routes(client, service);
        }
    }

    /// The VirtualService that applies to `host` for clients in `ns`.
    fn select(&self, ns: &str, host: &str) -> Option<&'a VirtualService> {
        let specificity = |p: &str| (!p.starts_with('*'), p.len());
        let mut best: Option<(&VirtualService, (bool, usize))> = None;
        for (vs, hosts) in self.services.iter().filter(|(v, _)| v.visible_to(ns)) {
            let Some(s) = hosts.iter().filter(|h| host_covers(h, host)).map(|h| specificity(h)).max() else { continue };
            if best.is_none_or(|(_, b)| s > b) {
                best = Some((vs, s));
            }
        }
        best.map(|(vs, _)| vs)
    }

    /// The routes of one Service port as `client` sees them.
    pub fn service_routes(&self, client: &Pod, service: &OutboundService) -> ServiceRoutes {
        let Some(vs) = self.select(&client.namespace, &service.hostname) else { return ServiceRoutes::default() };
        let mut out = ServiceRoutes { source: vs.id(), ..ServiceRoutes::default() };
        let selected = |port: Option<u32>, labels: &BTreeMap<String, String>, ns: &Option<String>, gws: &[String]| {
            port.is_none_or(|p| p == u32::from(service.port))
                && selector_matches(labels, &client.labels)
                && ns.as_ref().is_none_or(|n| *n == client.namespace)
                && (gws.is_empty() || gws.iter().any(|g| g == "mesh"))
        };
        if service.protocol.is_http() {
            for rule in &vs.spec.http {
                let mut matches = Vec::new();
                for m in &rule.matches {
                    if selected(m.port, &m.source_labels, &m.source_namespace, &m.gateways) {
                        matches.push(http_match(m));
                    }
                }
                if !rule.matches.is_empty() && matches.is_empty() {
                    continue;
                }
                let catch_all = matches.is_empty() || matches.iter().any(is_catch_all);
                if catch_all {
                    matches.clear();
                }
                out.http.push(self.http_rule(vs, rule, matches, service.port));
                if catch_all {
                    break;
                }
            }
        } else {
            let rule = vs.spec.tcp.iter().find(|r| {
                r.matches.is_empty()
                    || r.matches.iter().any(|m| selected(m.port, &m.source_labels, &m.source_namespace, &m.gateways))
            });
            if let Some(rule) = rule {
                let route: Vec<_> = rule.route.iter().map(|d| (&d.destination, d.weight)).collect();
                out.tcp = self.destinations(vs, &route, service.port).0;
            }
        }
        out
    }

    /// One `http[]` rule of `vs` with the match entries that apply;
    /// a destination without a port defaults to its Service's only port,
    /// else `called_port` (the Service port or gateway server port).
    pub(crate) fn http_rule(&self, vs: &VirtualService, rule: &HttpRoute, matches: Vec<HttpMatch>, called_port: u16) -> HttpRouteRule {
        let route: Vec<_> = rule.route.iter().map(|d| (&d.destination, d.weight)).collect();
        let (destinations, skipped) = self.destinations(vs, &route, called_port);
        let retries = match &rule.retries {
            None => RetryPolicy::default(),
            Some(r) if r.attempts == 0 => RetryPolicy::none(),
            Some(r) => RetryPolicy {
                attempts: r.attempts,
                per_try_timeout_ms: r.per_try_timeout.as_deref().and_then(duration_ms).filter(|ms| *ms > 0),
                retry_on: r.retry_on.as_deref().map(retry_on).unwrap_or_else(|| RetryPolicy::default().retry_on),
            },
        };
        HttpRouteRule {
            name: rule.name.clone(),
            matches,
            destinations,
            redirect: rule.redirect.as_ref().map(redirect),
            rewrite: rule
                .rewrite
                .as_ref()
                .map(|r| HttpRewrite { uri: r.uri.clone(), authority: r.authority.clone() })
                .filter(|r| r.uri.is_some() || r.authority.is_some()),
            timeout_ms: rule.timeout.as_deref().and_then(duration_ms).filter(|ms| *ms > 0),
            retries,
            skipped,
        }
    }

    /// Resolved weighted destinations, and the `host:port` of those that
    /// name no Service port of the registry.
    fn destinations(
        &self,
        vs: &VirtualService,
        route: &[(&veil_api::Destination, Option<u32>)],
        called_port: u16,
    ) -> (Vec<WeightedDestination>, Vec<String>) {
        let (mut out, mut skipped) = (Vec::new(), Vec::new());
        for (d, weight) in route {
            let host = resolve_host(&d.host, &vs.namespace, self.domain);
            let asked = d.port.map(|p| p.number).filter(|n| *n > 0);
            let ports = self.ports.get(&host).map(Vec::as_slice).unwrap_or_default();
            let port = match (asked, ports) {
                (Some(n), _) => ports.iter().copied().find(|p| u32::from(*p) == n),
                (None, [only]) => Some(*only),
                (None, _) => ports.iter().copied().find(|p| *p == called_port),
            };
            let Some(port) = port else {
                skipped.push(format!("{host}:{}", asked.map_or_else(|| called_port.to_string(), |n| n.to_string())));
                continue;
            };
            let weight = if route.len() == 1 { 100 } else { weight.unwrap_or(0) };
            out.push(WeightedDestination { host, port, subset: d.subset.clone(), weight });
        }
        if !out.is_empty() && out.iter().all(|d| d.weight == 0) {
            out.iter_mut().for_each(|d| d.weight = 1);
        }
        (out, skipped)
    }
}

fn string_match(m: &veil_api::StringMatch) -> StringMatch {
    match (&m.exact, &m.prefix, &m.regex) {
        (Some(v), _, _) => StringMatch::Exact(v.clone()),
        (_, Some(v), _) => StringMatch::Prefix(v.clone()),
        (_, _, Some(v)) => StringMatch::Regex(v.clone()),
        _ => StringMatch::Present,
    }
}

fn string_matches(map: &BTreeMap<String, veil_api::StringMatch>, lower: bool) -> BTreeMap<String, StringMatch> {
    map.iter().map(|(k, v)| (if lower { k.to_ascii_lowercase() } else { k.clone() }, string_match(v))).collect()
}

pub(crate) fn http_match(m: &HttpMatchRequest) -> HttpMatch {
    HttpMatch {
        uri: m.uri.as_ref().map(string_match),
        ignore_uri_case: m.ignore_uri_case,
        scheme: m.scheme.as_ref().map(string_match),
        method: m.method.as_ref().map(string_match),
        authority: m.authority.as_ref().map(string_match),
        headers: string_matches(&m.headers, true),
        without_headers: string_matches(&m.without_headers, true),
        query_params: string_matches(&m.query_params, false),
    }
}

/// Istio `IsCatchAllRoute` for one match entry: nothing but a `uri` of
/// prefix `/` or regex `*` / `.*`.
pub(crate) fn is_catch_all(m: &HttpMatch) -> bool {
    let uri = match &m.uri {
        None => true,
        Some(StringMatch::Prefix(p)) => p == "/",
        Some(StringMatch::Regex(r)) => r == "*" || r == ".*",
        Some(_) => false,
    };
    uri && m.scheme.is_none()
        && m.method.is_none()
        && m.authority.is_none()
        && m.headers.is_empty()
        && m.without_headers.is_empty()
        && m.query_params.is_empty()
}

/// `redirect` as written (`uri`, `authority`, `scheme`, `port`, `redirectCode`).
fn redirect(v: &serde_json::Value) -> HttpRedirect {
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let number = |k: &str| v.get(k).and_then(|x| x.as_u64()).and_then(|n| u16::try_from(n).ok());
    HttpRedirect {
        uri: text("uri"),
        authority: text("authority"),
        scheme: text("scheme"),
        port: number("port"),
        code: number("redirectCode").filter(|c| (300..400).contains(c)).unwrap_or(301),
    }
}

/// `retryOn` (comma-separated Envoy names or status codes); unknown names
/// are ignored.
pub fn retry_on(text: &str) -> Vec<RetryOn> {
    let mut out = Vec::new();
    for word in text.split(',').map(str::trim) {
        let cond = match word {
            "5xx" => RetryOn::Status5xx,
            "gateway-error" => RetryOn::GatewayError,
            "connect-failure" => RetryOn::ConnectFailure,
            "reset" | "refused-stream" | "cancelled" | "unavailable" => RetryOn::Reset,
            "retriable-4xx" => RetryOn::Retriable4xx,
            "retriable-status-codes" => RetryOn::Status(503),
            other => match other.parse::<u16>() {
                Ok(code) => RetryOn::Status(code),
                Err(_) => continue,
            },
        };
        if !out.contains(&cond) {
            out.push(cond);
        }
    }
    out
}

/// A duration as Istio accepts it (`5s`, `0.5s`, `250ms`, `1m30s`, `1h`;
/// units `h`, `m`, `s`, `ms`, `us`, `ns`), in milliseconds (rounded up).
/// `None` when it cannot be read.
pub fn duration_ms(text: &str) -> Option<u64> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut nanos: f64 = 0.0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number: f64 = rest.get(..digits)?.parse().ok()?;
        rest = rest.get(digits..)?;
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match rest.get(..unit_len)? {
            "h" => 3.6e12,
            "m" => 6e10,
            "s" => 1e9,
            "ms" => 1e6,
            "us" | "µs" => 1e3,
            "ns" => 1.0,
            _ => return None,
        };
        nanos += number * scale;
        rest = rest.get(unit_len..)?;
    }
    let ms = (nanos / 1e6).ceil();
    (ms.is_finite() && (0.0..1e15).contains(&ms)).then_some(ms as u64)
}
