//! Gateway listeners (`ProxyConfig::gateway`): one listener per Gateway
//! server port. Plaintext HTTP is routed per request (Istio `VirtualService`
//! HTTP routes bound to the gateway: first route whose hosts and URI match;
//! none: 404), or answered with a 301 to `https://<host><path>` for hosts of
//! a server with `tls.httpsRedirect`. TCP goes to one destination. TLS ports
//! (`gateway_tls`) pick a server by SNI, terminate or pass the client's TLS
//! through, and then use the same HTTP routing or TCP forwarding. Every
//! destination is reached over mesh mTLS per its endpoint's `UpstreamTls`.
//! HTTP requests are routed by the full `VirtualService` rules (`router`:
//! header and URI matches, weights, subsets, rewrite, redirect, timeout,
//! retries; the same code as sidecars, `outbound_http::forward`) among the
//! rules whose hosts match the `Host` header, over pooled upstream
//! connections (`http_pool`).
//!
//! Listeners are re-bound when the config's set of (port, kind) changes.

use crate::proxy::Shared;
use crate::router;
use crate::upstream::{self, Upstream, UpstreamError};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use veil_model::{GatewayHttpRule, GatewayListener, GatewayTlsServer, HttpRoute, RouteDestination};

pub use crate::router::host_matches;

/// Pause before retrying listeners that failed to bind, in seconds.
const REBIND_RETRY_SECS: u64 = 5;

type Body = crate::outbound_http::ResponseBody;

/// What a gateway port serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Http,
    Tcp,
    Tls,
}

fn kind(listener: &GatewayListener) -> Kind {
    if !listener.tls_servers.is_empty() {
        Kind::Tls
    } else if listener.protocol.is_http() {
        Kind::Http
    } else {
        Kind::Tcp
    }
}

/// Logs each server that cannot serve, once per distinct error.
fn log_server_errors(listeners: &[GatewayListener], logged: &mut Vec<String>) {
    let errors: Vec<String> =
        listeners.iter().flat_map(|l| l.tls_servers.iter()).filter_map(|s| s.error.clone()).collect();
    for e in errors.iter().filter(|e| !logged.contains(e)) {
        tracing::error!("gateway server refuses every handshake: {e}");
    }
    *logged = errors;
}

/// Keeps one listener task per gateway port in line with the config, until aborted.
pub(crate) async fn supervise(shared: Arc<Shared>) {
    let mut config = shared.config.clone();
    let mut running: HashMap<u16, (Kind, JoinSet<()>)> = HashMap::new();
    let mut logged = Vec::new();
    loop {
        let listeners: Vec<GatewayListener> =
            config.borrow_and_update().gateway.iter().flat_map(|g| g.listeners.iter().cloned()).collect();
        log_server_errors(&listeners, &mut logged);
        let wanted: HashMap<u16, Kind> = listeners.iter().map(|l| (l.port, kind(l))).collect();
        let stale: Vec<u16> =
            running.iter().filter(|(port, (k, _))| wanted.get(*port) != Some(k)).map(|(port, _)| *port).collect();
        for port in stale {
            if let Some((_, mut task)) = running.remove(&port) {
                task.shutdown().await;
                tracing::info!(port, "gateway listener stopped");
            }
        }
        let mut failed = false;
        for (port, kind) in wanted {
            if running.contains_key(&port) {
                continue;
            }
            let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
            match TcpListener::bind(addr).await {
                Ok(listener) => {
                    let mut task = JoinSet::new();
                    match kind {
                        Kind::Http => task.spawn(serve_http(listener, shared.clone(), port)),
                        Kind::Tcp => task.spawn(serve_tcp(listener, shared.clone(), port)),
                        Kind::Tls => task.spawn(crate::gateway_tls::serve(listener, shared.clone(), port)),
                    };
                    tracing::info!(port, ?kind, "gateway listener bound");
                    running.insert(port, (kind, task));
                }
                Err(e) => {
                    failed = true;
                    tracing::error!(port, error = %e, "cannot bind gateway listener 0.0.0.0:{port}: {e}; another process uses the port; retrying in {REBIND_RETRY_SECS} s");
                }
            }
        }
        if failed {
            tokio::select! {
                changed = config.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(Duration::from_secs(REBIND_RETRY_SECS)) => {}
            }
        } else if config.changed().await.is_err() {
            return;
        }
    }
}

/// The current config of the listener on `port`.
pub(crate) fn listener_config(shared: &Shared, port: u16) -> Option<GatewayListener> {
    shared.config().gateway.as_ref()?.listeners.iter().find(|l| l.port == port).cloned()
}

/// Which routes serve the requests of one connection.
#[derive(Clone)]
pub(crate) enum Routes {
    /// The plaintext HTTP servers of a port, read from the config per request.
    Plain(u16),
    /// The TLS server the connection's SNI chose.
    Tls(u16, Arc<GatewayTlsServer>),
}

impl Routes {
    fn port(&self) -> u16 {
        match self {
            Routes::Plain(port) | Routes::Tls(port, _) => *port,
        }
    }
}

async fn serve_http(listener: TcpListener, shared: Arc<Shared>, port: u16) {
    loop {
        let (stream, peer) = crate::proxy::accept(&listener).await;
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_http_connection(stream, shared.clone(), peer, Routes::Plain(port), false));
    }
}

/// Serves HTTP/1.1 (or HTTP/2 when `h2`, as ALPN chose) on `io` until the
/// client closes.
pub(crate) async fn serve_http_connection<I>(io: I, shared: Arc<Shared>, peer: SocketAddr, routes: Routes, h2: bool)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let shared = shared.clone();
        let routes = routes.clone();
        async move { Ok::<_, Infallible>(route_request(&shared, &routes, peer, req).await) }
    });
    let result = if h2 {
        hyper::server::conn::http2::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(io), service).await
    } else {
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), service).await
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "gateway HTTP connection ended with an error");
    }
}

fn status(code: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())).map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = code;
    response
}

/// A 301 to `https://<host><path?query>` (Envoy `https_redirect`).
fn https_redirect(host: &str, req: &Request<Incoming>) -> Response<Body> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut response = status(StatusCode::MOVED_PERMANENTLY, "");
    if let Ok(location) = HeaderValue::from_str(&format!("https://{host}{path}")) {
        response.headers_mut().insert(http::header::LOCATION, location);
    }
    response
}

/// Adds the client address to `x-forwarded-for`.
fn forwarded_for<B>(req: &mut Request<B>, peer: SocketAddr) {
    let forwarded = match req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(existing) => format!("{existing}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded) {
        req.headers_mut().insert("x-forwarded-for", value);
    }
}

/// The rules that serve a request: the full rules when the model sent
/// them, else the reduced routes as rules.
fn rules_of(rules: &[GatewayHttpRule], routes: &[HttpRoute]) -> Vec<GatewayHttpRule> {
    if rules.is_empty() {
        routes.iter().map(GatewayHttpRule::from).collect()
    } else {
        rules.to_vec()
    }
}

async fn route_request(shared: &Shared, routes: &Routes, peer: SocketAddr, mut req: Request<Incoming>) -> Response<Body> {
    let host = router::request_host(&req);
    let path = req.uri().path().to_string();
    let port = routes.port();
    let (rules, scheme) = match routes {
        Routes::Plain(port) => {
            let listener = listener_config(shared, *port);
            if listener.as_ref().is_some_and(|l| l.https_redirect_hosts.iter().any(|h| host_matches(h, &host))) {
                tracing::debug!(%peer, port, %host, %path, "gateway: httpsRedirect");
                return https_redirect(&host, &req);
            }
            (listener.map(|l| rules_of(&l.http_rules, &l.http_routes)).unwrap_or_default(), "http")
        }
        Routes::Tls(_, server) => (rules_of(&server.http_rules, &server.http_routes), "https"),
    };
    let found = router::gateway_rule(&rules, &host, &req, scheme);
    let Some((route, matched)) = found else {
        tracing::debug!(%peer, port, %host, %path, "gateway: no route");
        return status(StatusCode::NOT_FOUND, "no route\n");
    };
    forwarded_for(&mut req, peer);
    let config = shared.config();
    crate::outbound_http::forward(shared, &config, peer, &route.source, &route.rule, matched, req).await
}

/// Connects to a service by name and records the connection.
pub(crate) async fn connect(shared: &Shared, host: &str, port: u16) -> Result<Upstream, UpstreamError> {
    let endpoint = upstream::resolve(shared, host, port)?;
    crate::http_pool::connect_recorded(shared, &endpoint).await
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>, port: u16) {
    loop {
        let (stream, peer) = crate::proxy::accept(&listener).await;
        let shared = shared.clone();
        tokio::spawn(async move {
            let destination = listener_config(&shared, port).and_then(|l| l.tcp_route);
            forward_tcp(&shared, port, stream, peer, destination).await
        });
    }
}

/// Copies `downstream` to `destination` over the mesh until both sides end.
pub(crate) async fn forward_tcp<S>(shared: &Shared, port: u16, mut downstream: S, peer: SocketAddr, destination: Option<RouteDestination>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(destination) = destination else {
        tracing::warn!(%peer, port, "gateway TCP listener has no destination; closing");
        return;
    };
    let mut upstream = match connect(shared, &destination.host, destination.port).await {
        Ok(upstream) => upstream,
        Err(e) => {
            tracing::warn!(%peer, port, "gateway upstream {}:{} unavailable: {e}", destination.host, destination.port);
            return;
        }
    };
    if let Err(e) = crate::copy::bidirectional(&mut downstream, &mut upstream.stream).await {
        tracing::debug!(%peer, port, error = %e, "gateway TCP connection ended with an error");
    }
}
