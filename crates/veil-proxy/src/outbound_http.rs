//! HTTP on outbound Service ports (protocol HTTP, HTTP2, GRPC) whose
//! requests must be routed one by one (`outbound::per_request` decides; the
//! other connections are forwarded as bytes): the workload's connection is
//! served with hyper (HTTP/1.1, or HTTP/2 with prior knowledge), and every
//! request is routed on its own by the Service's `VirtualService` rules
//! (`router`): first matching rule, then a weighted destination (Service,
//! port, subset), then an endpoint of it, reached over a pooled upstream
//! connection (`http_pool`) with the TLS the endpoint's `UpstreamTls` names.
//! With no rules the Service itself is the route; when the Service has rules
//! and none matches, the answer is 404 (Envoy's `NR`, as Istio builds a
//! VirtualService's virtual host with its routes only). As in Istio, the
//! upstream speaks HTTP/2 when the destination port's protocol is HTTP2 or
//! GRPC, else HTTP/1.1, whatever the client spoke. An HTTP/1.1 `Upgrade`
//! request (WebSocket) gets its own upstream connection, and after a `101`
//! the bytes are copied both ways.
//!
//! `timeout` bounds the whole request (504 when exceeded); `retries` tries
//! again on another endpoint pick after a short backoff for the listed
//! conditions, when the request body can be replayed (bodies up to
//! [`MAX_REPLAY_BYTES`]). No route destination or endpoint: 503.

use crate::http_pool::{PooledBody, RequestBody, SendError};
use crate::proxy::Shared;
use crate::router::{self, RouteError};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use veil_model::{Endpoint, HttpRouteRule, OutboundService, Protocol, RetryOn, RetryPolicy, WeightedDestination};

/// Largest request body kept so that the request can be retried, in bytes
/// (Envoy's default per-connection buffer limit).
pub const MAX_REPLAY_BYTES: u64 = 1024 * 1024;
/// First retry backoff, in ms (Envoy's base interval); doubles per retry.
const BACKOFF_BASE_MS: u64 = 25;
/// Largest retry backoff, in ms.
const BACKOFF_MAX_MS: u64 = 250;

/// Body of a response sent downstream.
pub(crate) type ResponseBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// Serves one captured connection to HTTP Service port `dst` until the
/// client closes it.
pub(crate) async fn serve(shared: Arc<Shared>, downstream: TcpStream, peer: SocketAddr, dst: SocketAddr) {
    let default_route = Arc::new(DefaultRoute::default());
    let service = service_fn(move |req| {
        let (shared, default_route) = (shared.clone(), default_route.clone());
        async move { Ok::<_, Infallible>(handle(&shared, &default_route, peer, dst, req).await) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    if let Err(e) = builder.serve_connection_with_upgrades(TokioIo::new(downstream), service).await {
        tracing::debug!(%peer, %dst, error = %e, "outbound HTTP connection ended with an error");
    }
}

/// A response with `code` and a one-line body.
pub(crate) fn status(code: StatusCode, body: String) -> Response<ResponseBody> {
    let mut response = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = code;
    response
}

/// An upstream response as it goes downstream (hop-by-hop headers removed).
pub(crate) fn downstream_response(response: Response<PooledBody>) -> Response<ResponseBody> {
    let mut response = response.map(|b| b.boxed_unsync());
    router::strip_hop_by_hop(response.headers_mut());
    response
}

/// The Service itself as a route (Istio's default virtual host, with the
/// default retry policy), built once per connection rather than per request.
#[derive(Default)]
struct DefaultRoute(Mutex<Option<Arc<HttpRouteRule>>>);

impl DefaultRoute {
    fn of(&self, service: &OutboundService) -> Arc<HttpRouteRule> {
        let mut cached = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let current = |rule: &&Arc<HttpRouteRule>| {
            rule.destinations.first().is_some_and(|d| d.host == service.hostname && d.port == service.port)
        };
        if let Some(rule) = cached.as_ref().filter(current) {
            return rule.clone();
        }
        let destination = WeightedDestination { host: service.hostname.clone(), port: service.port, subset: None, weight: 1 };
        let rule = Arc::new(HttpRouteRule { destinations: vec![destination], ..HttpRouteRule::default() });
        *cached = Some(rule.clone());
        rule
    }
}

async fn handle(
    shared: &Shared,
    default_route: &DefaultRoute,
    peer: SocketAddr,
    dst: SocketAddr,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    let config = shared.config();
    let Some((service, _)) = config.outbound.lookup(dst.ip(), dst.port()) else {
        tracing::warn!(%peer, %dst, "outbound HTTP request refused: {dst} is no longer a Service in this proxy's config");
        return status(StatusCode::SERVICE_UNAVAILABLE, "no such service\n".into());
    };
    let source = &service.routes.source;
    let default_rule;
    let (rule, matched) = match router::find_rule(&service.routes.http, &req, "http") {
        Some(found) => found,
        None if service.routes.http.is_empty() => {
            default_rule = default_route.of(service);
            (&*default_rule, None)
        }
        None => {
            tracing::debug!(%peer, %dst, route = %source, path = req.uri().path(), "outbound HTTP: no route matched");
            return status(StatusCode::NOT_FOUND, "no route matched\n".into());
        }
    };
    forward(shared, &config, peer, source, rule, matched, req).await
}

/// Sends `req` as `rule` (matched by `matched`) says: a redirect, or a
/// weighted destination with `rewrite`, `timeout` and `retries`, over the
/// pooled upstream. Used by sidecars and gateways; `source` names the
/// VirtualService in logs.
pub(crate) async fn forward(
    shared: &Shared,
    config: &veil_model::ProxyConfig,
    peer: SocketAddr,
    source: &str,
    rule: &HttpRouteRule,
    matched: Option<&veil_model::HttpMatch>,
    mut req: Request<Incoming>,
) -> Response<ResponseBody> {
    router::note_skipped(source, rule);
    if let Some(redirect) = &rule.redirect {
        let location = router::redirect_location(redirect, &req, "http");
        let dst = router::authority(&req);
        tracing::debug!(%peer, %dst, route = %source, %location, "outbound HTTP redirect");
        let mut response = status(StatusCode::from_u16(redirect.code).unwrap_or(StatusCode::MOVED_PERMANENTLY), String::new());
        if let Ok(value) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(http::header::LOCATION, value);
        }
        return response;
    }
    let Some(destination) = router::pick_weighted(&rule.destinations) else {
        let e = RouteError::NoDestination { skipped: rule.skipped.clone() };
        let dst = router::authority(&req);
        tracing::warn!(%peer, %dst, route = %source, "outbound HTTP request failed: {e}");
        return status(StatusCode::SERVICE_UNAVAILABLE, "no route destination\n".into());
    };
    let (upstream_service, endpoints) = match router::endpoints_of(config, destination) {
        Ok(found) => found,
        Err(e) => {
            let dst = router::authority(&req);
            tracing::warn!(%peer, %dst, route = %source, "outbound HTTP request failed: {e}");
            return status(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream\n".into());
        }
    };
    if let Some(rewrite) = &rule.rewrite {
        router::rewrite(&mut req, rewrite, matched);
    }
    if is_upgrade(&req) {
        return upgrade(shared, peer, destination, endpoints, req).await;
    }
    let h2 = matches!(upstream_service.protocol, Protocol::Http2 | Protocol::Grpc);
    router::prepare_upstream(&mut req, h2);
    let attempt = Attempt { shared, destination, endpoints, policy: &rule.retries, peer };
    let Some(ms) = rule.timeout_ms else { return attempt.run(req).await };
    let dst = router::authority(&req).to_string();
    match tokio::time::timeout(Duration::from_millis(ms), attempt.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::debug!(%peer, %dst, route = %source, ms, "outbound HTTP request timed out");
            status(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout\n".into())
        }
    }
}

/// A request body that can be sent more than once, or only once.
enum Replay {
    Bytes(Bytes),
    Once(Option<Incoming>),
}

impl Replay {
    /// Reads a small body into memory when retries may need it again.
    async fn of(body: Incoming, retries: bool) -> Result<Replay, hyper::Error> {
        let small = body.size_hint().exact().is_some_and(|n| n <= MAX_REPLAY_BYTES);
        if body.is_end_stream() {
            return Ok(Replay::Bytes(Bytes::new()));
        }
        if retries && small {
            return Ok(Replay::Bytes(body.collect().await?.to_bytes()));
        }
        Ok(Replay::Once(Some(body)))
    }

    fn body(&mut self) -> Option<RequestBody> {
        match self {
            Replay::Bytes(b) => Some(Full::new(b.clone()).map_err(|never| match never {}).boxed_unsync()),
            Replay::Once(body) => body.take().map(|b| b.boxed_unsync()),
        }
    }
}

/// One routed request to one weighted destination, with its retries.
struct Attempt<'a> {
    shared: &'a Shared,
    destination: &'a WeightedDestination,
    endpoints: &'a [Endpoint],
    policy: &'a RetryPolicy,
    peer: SocketAddr,
}

/// What one try ended with.
enum Outcome {
    Response(Response<PooledBody>),
    Failed(SendError),
    TimedOut,
}

impl Attempt<'_> {
    async fn run(&self, req: Request<Incoming>) -> Response<ResponseBody> {
        let (parts, body) = req.into_parts();
        let mut replay = match Replay::of(body, self.policy.attempts > 0).await {
            Ok(r) => r,
            Err(e) => return status(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}\n")),
        };
        let tries = if matches!(replay, Replay::Bytes(_)) { self.policy.attempts.saturating_add(1) } else { 1 };
        let d = self.destination;
        let mut last = Outcome::TimedOut;
        let mut head = Some(parts);
        for n in 0..tries {
            if n > 0 {
                let backoff = (BACKOFF_BASE_MS << n.min(8)).min(BACKOFF_MAX_MS);
                tokio::time::sleep(Duration::from_millis(backoff / 2 + rand::random_range(0..=backoff / 2))).await;
            }
            let Some(endpoint) = self.shared.http.pick(d, self.endpoints) else { break };
            let Some(body) = replay.body() else { break };
            // The last try takes the head itself; earlier ones a copy.
            let parts = match &head {
                Some(parts) if n + 1 < tries => parts.clone_head(),
                _ => match head.take() {
                    Some(mut parts) => {
                        parts.extensions.clear();
                        parts
                    }
                    None => break,
                },
            };
            let req = Request::from_parts(parts, body);
            let started = Instant::now();
            let send = self.shared.http.send(self.shared, endpoint, req);
            last = match self.policy.per_try_timeout_ms {
                Some(ms) => match tokio::time::timeout(Duration::from_millis(ms), send).await {
                    Ok(result) => result.map_or_else(Outcome::Failed, Outcome::Response),
                    Err(_) => Outcome::TimedOut,
                },
                None => send.await.map_or_else(Outcome::Failed, Outcome::Response),
            };
            let again = n + 1 < tries && retriable(self.policy, &last);
            match &last {
                Outcome::Response(r) if again => {
                    tracing::debug!(peer = %self.peer, host = %d.host, endpoint = %endpoint.pod, status = %r.status(), try_ = n + 1, "retrying");
                }
                Outcome::Response(_) => break,
                Outcome::Failed(e) => {
                    tracing::debug!(peer = %self.peer, host = %d.host, endpoint = %endpoint.pod, error = %e, try_ = n + 1, ms = started.elapsed().as_millis(), "upstream try failed")
                }
                Outcome::TimedOut => {
                    tracing::debug!(peer = %self.peer, host = %d.host, endpoint = %endpoint.pod, try_ = n + 1, "upstream try timed out")
                }
            }
            if !again {
                break;
            }
        }
        let subset = d.subset.as_deref().map(|s| format!(" subset {s}")).unwrap_or_default();
        match last {
            Outcome::Response(r) => downstream_response(r),
            Outcome::Failed(e) => {
                tracing::warn!(peer = %self.peer, "outbound HTTP request to {}:{}{subset} failed: {e}", d.host, d.port);
                status(StatusCode::SERVICE_UNAVAILABLE, format!("upstream connect error or disconnect/reset before headers: {e}\n"))
            }
            Outcome::TimedOut => {
                tracing::warn!(peer = %self.peer, "outbound HTTP request to {}:{}{subset} timed out per try", d.host, d.port);
                status(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout\n".into())
            }
        }
    }
}

/// Whether `policy` retries after `outcome` (Envoy `x-envoy-retry-on`).
fn retriable(policy: &RetryPolicy, outcome: &Outcome) -> bool {
    policy.retry_on.iter().any(|on| match (on, outcome) {
        (RetryOn::Status5xx, Outcome::Response(r)) => r.status().is_server_error(),
        (RetryOn::Status5xx, _) => true,
        (RetryOn::GatewayError, Outcome::Response(r)) => matches!(r.status().as_u16(), 502..=504),
        (RetryOn::GatewayError, _) => true,
        (RetryOn::ConnectFailure, Outcome::Failed(e)) => e.is_connect_failure(),
        (RetryOn::Reset, Outcome::Failed(e)) => !e.is_connect_failure(),
        (RetryOn::Retriable4xx, Outcome::Response(r)) => r.status() == StatusCode::CONFLICT,
        (RetryOn::Status(code), Outcome::Response(r)) => r.status().as_u16() == *code,
        _ => false,
    })
}

/// An HTTP/1.1 request asking to switch protocols (`Connection: upgrade`).
pub(crate) fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == http::Version::HTTP_11
        && req.headers().contains_key(http::header::UPGRADE)
        && req
            .headers()
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
}

/// Forwards an `Upgrade` request to one endpoint of `destination` (see
/// [`upgrade_to`]).
async fn upgrade(shared: &Shared, peer: SocketAddr, destination: &WeightedDestination, endpoints: &[Endpoint], req: Request<Incoming>) -> Response<ResponseBody> {
    let Some(endpoint) = shared.http.pick(destination, endpoints) else {
        return status(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream\n".into());
    };
    upgrade_to(shared, peer, endpoint, &format!("{}:{}", destination.host, destination.port), req).await
}

/// Forwards an `Upgrade` request to `endpoint` on a connection of its own
/// (with the endpoint's TLS); after a `101` both upgraded connections are
/// joined and copied until both ends close. `label` names the destination
/// in logs. A failed connect or request is answered `503` and logged.
pub(crate) async fn upgrade_to(shared: &Shared, peer: SocketAddr, endpoint: &Endpoint, label: &str, mut req: Request<Incoming>) -> Response<ResponseBody> {
    let downstream = hyper::upgrade::on(&mut req);
    let failed = |e: String| {
        tracing::warn!(%peer, "outbound HTTP upgrade to {label} failed: {e}");
        status(StatusCode::SERVICE_UNAVAILABLE, "upstream connect error\n".into())
    };
    let upstream = match crate::http_pool::connect_recorded(shared, endpoint).await {
        Ok(upstream) => upstream,
        Err(e) => return failed(e.to_string()),
    };
    let (mut sender, connection) = match hyper::client::conn::http1::handshake(TokioIo::new(upstream.stream)).await {
        Ok(pair) => pair,
        Err(e) => return failed(e.to_string()),
    };
    tokio::spawn(connection.with_upgrades());
    if let Some(origin) = req.uri().path_and_query().and_then(|p| p.as_str().parse().ok()) {
        *req.uri_mut() = origin;
    }
    let mut response = match sender.send_request(req.map(|b| b.boxed_unsync())).await {
        Ok(response) => response,
        Err(e) => return failed(e.to_string()),
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upstream = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            match tokio::try_join!(downstream, upstream) {
                Ok((d, u)) => {
                    let result = crate::copy::bidirectional(&mut TokioIo::new(d), &mut TokioIo::new(u)).await;
                    tracing::debug!(%peer, ?result, "upgraded connection closed");
                }
                Err(e) => tracing::debug!(%peer, error = %e, "upgrade not completed"),
            }
        });
    }
    response.map(|b| b.boxed_unsync())
}

/// A copy of a request head without its extensions.
trait CloneHead {
    fn clone_head(&self) -> http::request::Parts;
}

impl CloneHead for http::request::Parts {
    fn clone_head(&self) -> http::request::Parts {
        let mut builder = Request::builder().method(self.method.clone()).uri(self.uri.clone()).version(self.version);
        if let Some(headers) = builder.headers_mut() {
            *headers = self.headers.clone();
        }
        let (parts, ()) = builder.body(()).unwrap_or_default().into_parts();
        parts
    }
}
