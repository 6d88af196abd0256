//! The HTTP route engine shared by sidecars and gateways: which rule a
//! request matches (first match wins), which weighted destination it goes
//! to, how `rewrite` and `redirect` change it, and the per-hop header
//! changes every forwarded request and response gets.
//!
//! Matching follows Istio's `HTTPMatchRequest` as Envoy executes it (spec
//! §1.6): `uri` on the path without the query string (a `prefix` is a plain
//! string prefix, a `regex` must match the whole value, RE2 syntax),
//! `headers` on the values joined with `,`, `{}` for presence,
//! `withoutHeaders` negated, `queryParams` on the raw query string.

use crate::proxy::Shared;
use http::header::{HeaderName, HOST};
use http::{HeaderMap, HeaderValue, Request, Uri, Version};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use regex::Regex;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use veil_model::{
    Endpoint, GatewayHttpRule, HttpMatch, HttpRedirect, HttpRewrite, HttpRouteRule, OutboundService, ProxyConfig,
    StringMatch, WeightedDestination,
};

/// Most compiled patterns kept before the regex cache is emptied.
const MAX_REGEXES: usize = 1024;

/// Why a destination has no endpoint to send to (each message says what to
/// check).
#[derive(Debug, thiserror::Error)]
pub(crate) enum RouteError {
    #[error("route destination {host}:{port} is not a Service port in this proxy's config; check the VirtualService destination host and port")]
    UnknownService { host: String, port: u16 },
    #[error("subset {subset:?} of {host}:{port} is not defined: no DestinationRule for {host} names it; apply one (for example istio-cases 02)")]
    UnknownSubset { host: String, port: u16, subset: String },
    #[error("{host}:{port}{} has no endpoints; check that its workloads are running and carry the subset's labels", .subset.as_ref().map(|s| format!(" subset {s}")).unwrap_or_default())]
    NoEndpoint { host: String, port: u16, subset: Option<String> },
    #[error("the route has no destination with a weight above 0 (left out as unknown: {skipped:?})")]
    NoDestination { skipped: Vec<String> },
}

/// Istio gateway host matching: `*` matches all, `*.example.com` matches any
/// subdomain of `example.com`, anything else matches exactly (ignoring case).
pub fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => host.len() > suffix.len() && host.to_ascii_lowercase().ends_with(&suffix.to_ascii_lowercase()),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// The first gateway rule whose hosts include `host` (the request's host
/// without port) and that `req` matches, with the match entry that matched.
pub(crate) fn gateway_rule<'a, B>(
    rules: &'a [GatewayHttpRule],
    host: &str,
    req: &Request<B>,
    scheme: &str,
) -> Option<(&'a GatewayHttpRule, Option<&'a HttpMatch>)> {
    rules.iter().filter(|r| r.hosts.iter().any(|h| host_matches(h, host))).find_map(|r| {
        if r.rule.matches.is_empty() {
            return Some((r, None));
        }
        r.rule.matches.iter().find(|m| request_matches(m, req, scheme)).map(|m| (r, Some(m)))
    })
}

/// The request's `Host` header (else its URI authority), as sent.
pub(crate) fn authority<B>(req: &Request<B>) -> &str {
    req.headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or_default()
}

/// The request's host without port, lower case.
pub(crate) fn request_host<B>(req: &Request<B>) -> String {
    let raw = authority(req);
    let host = match raw.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => raw.split(':').next().unwrap_or_default(),
    };
    host.to_ascii_lowercase()
}

/// `regex` compiled to match a whole value, from a process-wide cache;
/// `None` (logged once) when it does not compile.
fn regex(pattern: &str) -> Option<Arc<Regex>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<Arc<Regex>>>>> = OnceLock::new();
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(compiled) = cache.get(pattern) {
        return compiled.clone();
    }
    let compiled = match Regex::new(&format!("^(?:{pattern})$")) {
        Ok(r) => Some(Arc::new(r)),
        Err(e) => {
            tracing::warn!("VirtualService regex {pattern:?} does not compile and never matches: {e}");
            None
        }
    };
    if cache.len() >= MAX_REGEXES {
        cache.clear();
    }
    cache.insert(pattern.to_string(), compiled.clone());
    compiled
}

/// Whether `value` meets `m`; `ignore_case` applies to exact and prefix.
pub(crate) fn string_matches(m: &StringMatch, value: &str, ignore_case: bool) -> bool {
    match m {
        StringMatch::Exact(v) if ignore_case => v.eq_ignore_ascii_case(value),
        StringMatch::Exact(v) => v == value,
        StringMatch::Prefix(p) if ignore_case => value.get(..p.len()).is_some_and(|head| head.eq_ignore_ascii_case(p)),
        StringMatch::Prefix(p) => value.starts_with(p.as_str()),
        StringMatch::Regex(r) => regex(r).is_some_and(|re| re.is_match(value)),
        StringMatch::Present => true,
    }
}

/// A header's values joined with `,`, `None` when absent.
fn header_value(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    Some(values.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect::<Vec<_>>().join(","))
}

fn query_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// Whether `req` (received over `scheme`) meets every condition of `m`.
pub(crate) fn request_matches<B>(m: &HttpMatch, req: &Request<B>, scheme: &str) -> bool {
    let uri = req.uri();
    let headers = req.headers();
    m.uri.as_ref().is_none_or(|u| string_matches(u, uri.path(), m.ignore_uri_case))
        && m.scheme.as_ref().is_none_or(|s| string_matches(s, scheme, false))
        && m.method.as_ref().is_none_or(|s| string_matches(s, req.method().as_str(), false))
        && m.authority.as_ref().is_none_or(|s| string_matches(s, authority(req), false))
        && m.headers.iter().all(|(name, s)| header_value(headers, name).is_some_and(|v| string_matches(s, &v, false)))
        && m.without_headers.iter().all(|(name, s)| !header_value(headers, name).is_some_and(|v| string_matches(s, &v, false)))
        && m.query_params.iter().all(|(name, s)| {
            query_value(uri.query().unwrap_or_default(), name).is_some_and(|v| string_matches(s, v, false))
        })
}

/// The first rule `req` matches, with the match entry that matched (`None`
/// for a rule without matches).
pub(crate) fn find_rule<'a, B>(
    rules: &'a [HttpRouteRule],
    req: &Request<B>,
    scheme: &str,
) -> Option<(&'a HttpRouteRule, Option<&'a HttpMatch>)> {
    rules.iter().find_map(|rule| {
        if rule.matches.is_empty() {
            return Some((rule, None));
        }
        rule.matches.iter().find(|m| request_matches(m, req, scheme)).map(|m| (rule, Some(m)))
    })
}

/// Logs, once per VirtualService and host, the destinations the model left
/// out of `rule` because they name no Service.
pub(crate) fn note_skipped(source: &str, rule: &HttpRouteRule) {
    static LOGGED: OnceLock<Mutex<std::collections::HashSet<String>>> = OnceLock::new();
    if rule.skipped.is_empty() {
        return;
    }
    let mut logged = LOGGED.get_or_init(Default::default).lock().unwrap_or_else(PoisonError::into_inner);
    for host in &rule.skipped {
        let key = format!("{source} {host}");
        if logged.len() < MAX_REGEXES && logged.insert(key) {
            tracing::warn!(route = %source, "VirtualService {source} routes to {host}, which is not a Service of the mesh; that destination is skipped and the others share its weight");
        }
    }
}

thread_local! {
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_rng(&mut rand::rng()));
}

/// One of `destinations`, each with probability `weight / sum(weights)`;
/// `None` when every weight is 0.
pub(crate) fn pick_weighted(destinations: &[WeightedDestination]) -> Option<&WeightedDestination> {
    let total: u64 = destinations.iter().map(|d| u64::from(d.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut roll = RNG.with(|rng| rng.borrow_mut().random_range(0..total));
    destinations.iter().find(|d| {
        let w = u64::from(d.weight);
        if roll < w {
            return true;
        }
        roll -= w;
        false
    })
}

/// The Service port and endpoints `destination` names in `config`.
///
/// Errors: [`RouteError`] for an unknown Service or subset, or no endpoints.
pub(crate) fn endpoints_of<'c>(
    config: &'c ProxyConfig,
    destination: &WeightedDestination,
) -> Result<(&'c OutboundService, &'c [Endpoint]), RouteError> {
    let (host, port) = (&destination.host, destination.port);
    let service = config
        .outbound
        .services
        .iter()
        .find(|s| s.hostname == *host && s.port == port)
        .ok_or_else(|| RouteError::UnknownService { host: host.clone(), port })?;
    let endpoints = match &destination.subset {
        None => service.endpoints.as_slice(),
        Some(subset) => service.subsets.get(subset).map(Vec::as_slice).ok_or_else(|| RouteError::UnknownSubset {
            host: host.clone(),
            port,
            subset: subset.clone(),
        })?,
    };
    if endpoints.is_empty() {
        return Err(RouteError::NoEndpoint { host: host.clone(), port, subset: destination.subset.clone() });
    }
    Ok((service, endpoints))
}

/// A weighted destination of `service`'s TCP route and one of its
/// endpoints (round robin per destination).
///
/// Errors: [`RouteError`] when the chosen destination cannot be reached.
pub(crate) fn tcp_endpoint<'c>(shared: &Shared, config: &'c ProxyConfig, service: &OutboundService) -> Result<&'c Endpoint, RouteError> {
    let destination =
        pick_weighted(&service.routes.tcp).ok_or(RouteError::NoDestination { skipped: Vec::new() })?;
    let (_, endpoints) = endpoints_of(config, destination)?;
    shared.http.pick(destination, endpoints).ok_or_else(|| RouteError::NoEndpoint {
        host: destination.host.clone(),
        port: destination.port,
        subset: destination.subset.clone(),
    })
}

/// Applies `rewrite` to `req`: the matched `uri` prefix (the whole path for
/// other matches) is replaced, the query kept; the authority replaces `Host`.
pub(crate) fn rewrite<B>(req: &mut Request<B>, rewrite: &HttpRewrite, matched: Option<&HttpMatch>) {
    if let Some(new) = &rewrite.uri {
        let path = req.uri().path();
        let rest = match matched.and_then(|m| m.uri.as_ref()) {
            Some(StringMatch::Prefix(p)) => path.get(p.len()..).unwrap_or_default(),
            _ => "",
        };
        let query = req.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
        let mut parts = req.uri().clone().into_parts();
        parts.path_and_query = format!("{new}{rest}{query}").parse().ok().or(parts.path_and_query);
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    if let Some(authority) = rewrite.authority.as_deref().and_then(|a| HeaderValue::from_str(a).ok()) {
        req.headers_mut().insert(HOST, authority);
    }
}

/// The `Location` of `redirect` for `req` received over `scheme`.
pub(crate) fn redirect_location<B>(redirect: &HttpRedirect, req: &Request<B>, scheme: &str) -> String {
    let scheme = redirect.scheme.as_deref().unwrap_or(scheme);
    let mut authority = redirect.authority.clone().unwrap_or_else(|| authority(req).to_string());
    if let Some(port) = redirect.port {
        let host = match authority.find(']') {
            Some(end) if authority.starts_with('[') => authority.get(..=end).unwrap_or_default(),
            _ => authority.split(':').next().unwrap_or_default(),
        };
        authority = format!("{host}:{port}");
    }
    let path = match &redirect.uri {
        Some(uri) if uri.contains('?') => uri.clone(),
        Some(uri) => format!("{uri}{}", req.uri().query().map(|q| format!("?{q}")).unwrap_or_default()),
        None => req.uri().path_and_query().map_or("/", |p| p.as_str()).to_string(),
    };
    format!("{scheme}://{authority}{path}")
}

/// Removes the hop-by-hop headers (RFC 9110 §7.6.1): those `Connection`
/// names and the standard ones; `te: trailers` is kept (gRPC needs it).
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"] {
        headers.remove(name);
    }
    if headers.get(http::header::TE).is_some_and(|v| v != "trailers") {
        headers.remove(http::header::TE);
    }
}

/// Makes `req` fit the upstream: HTTP/1.1 with an origin-form URI and a
/// `Host` header, or HTTP/2 (`h2`) with an absolute URI whose authority is
/// the `Host` header's, without hop-by-hop headers.
pub(crate) fn prepare_upstream<B>(req: &mut Request<B>, h2: bool) {
    strip_hop_by_hop(req.headers_mut());
    if h2 {
        let authority = authority(req).to_string();
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let scheme = req.uri().scheme_str().unwrap_or("http");
        if let Ok(uri) = format!("{scheme}://{authority}{path}").parse::<Uri>() {
            *req.uri_mut() = uri;
            req.headers_mut().remove(HOST);
        }
        *req.version_mut() = Version::HTTP_2;
        return;
    }
    if !req.headers().contains_key(HOST) {
        if let Some(value) = req.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
            req.headers_mut().insert(HOST, value);
        }
    }
    // Already origin-form (what HTTP/1.1 clients send) unless it names a host.
    if req.uri().authority().is_some() || req.uri().scheme().is_some() {
        let origin = req.uri().path_and_query().map_or("/", |p| p.as_str());
        if let Ok(uri) = origin.parse::<Uri>() {
            *req.uri_mut() = uri;
        }
    }
    *req.version_mut() = Version::HTTP_11;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        assert!(host_matches("*", "anything.example"));
        assert!(host_matches("*.example.com", "www.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(!host_matches("*.example.com", "www.example.org"));
        assert!(host_matches("Bookinfo.Example", "bookinfo.example"));
        assert!(!host_matches("bookinfo.example", "other.example"));
    }

    #[test]
    fn string_match_kinds() {
        assert!(string_matches(&StringMatch::Prefix("/api".into()), "/api/v1", false));
        assert!(!string_matches(&StringMatch::Prefix("/API".into()), "/api/v1", false));
        assert!(string_matches(&StringMatch::Prefix("/API".into()), "/api/v1", true));
        assert!(string_matches(&StringMatch::Regex("b.*".into()), "bar", false));
        assert!(!string_matches(&StringMatch::Regex("b.*".into()), "abar", false), "regex matches the whole value");
        assert!(!string_matches(&StringMatch::Regex("(".into()), "(", false), "a bad regex never matches");
    }
}
