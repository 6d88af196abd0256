//! Gateway listeners (`ProxyConfig::gateway`): one listener per Gateway
//! server port, HTTP routed per request (Istio `VirtualService` HTTP routes
//! bound to the gateway: first route whose hosts and URI prefix match), TCP
//! forwarded to one destination; both into the mesh over mTLS per the
//! destination endpoint's `UpstreamTls`.
//!
//! Listeners are re-bound when the config's set of (port, protocol) changes.

use crate::proxy::Shared;
use crate::records;
use crate::upstream::{self, Upstream, UpstreamError};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use veil_model::{GatewayListener, Protocol};

/// Pause before retrying listeners that failed to bind, in seconds.
const REBIND_RETRY_SECS: u64 = 5;

type Body = BoxBody<Bytes, hyper::Error>;

/// Keeps one listener task per gateway port in line with the config, until aborted.
pub(crate) async fn supervise(shared: Arc<Shared>) {
    let mut config = shared.config.clone();
    let mut running: HashMap<u16, (Protocol, JoinSet<()>)> = HashMap::new();
    loop {
        let wanted: HashMap<u16, Protocol> = config
            .borrow_and_update()
            .gateway
            .iter()
            .flat_map(|g| g.listeners.iter())
            .map(|l| (l.port, l.protocol))
            .collect();
        let stale: Vec<u16> = running
            .iter()
            .filter(|(port, (protocol, _))| wanted.get(*port) != Some(protocol))
            .map(|(port, _)| *port)
            .collect();
        for port in stale {
            if let Some((_, mut task)) = running.remove(&port) {
                task.shutdown().await;
                tracing::info!(port, "gateway listener stopped");
            }
        }
        let mut failed = false;
        for (port, protocol) in wanted {
            if running.contains_key(&port) {
                continue;
            }
            let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
            match TcpListener::bind(addr).await {
                Ok(listener) => {
                    let mut task = JoinSet::new();
                    if protocol.is_http() {
                        task.spawn(serve_http(listener, shared.clone(), port));
                    } else {
                        task.spawn(serve_tcp(listener, shared.clone(), port));
                    }
                    tracing::info!(port, ?protocol, "gateway listener bound");
                    running.insert(port, (protocol, task));
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

fn listener_config(shared: &Shared, port: u16) -> Option<GatewayListener> {
    shared.config().gateway.as_ref()?.listeners.iter().find(|l| l.port == port).cloned()
}

async fn serve_http(listener: TcpListener, shared: Arc<Shared>, port: u16) {
    loop {
        let (stream, peer) = crate::proxy::accept(&listener).await;
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route_request(&shared, port, peer, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn status(code: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())).map_err(|never| match never {}).boxed());
    *response.status_mut() = code;
    response
}

/// The request's host without port, lower case.
fn request_host(req: &Request<Incoming>) -> String {
    let raw = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or_default();
    let host = match raw.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => raw.split(':').next().unwrap_or_default(),
    };
    host.to_ascii_lowercase()
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

async fn route_request(shared: &Shared, port: u16, peer: SocketAddr, mut req: Request<Incoming>) -> Response<Body> {
    let host = request_host(&req);
    let path = req.uri().path().to_string();
    let route = listener_config(shared, port).and_then(|l| {
        l.http_routes
            .into_iter()
            .find(|r| r.hosts.iter().any(|h| host_matches(h, &host)) && path.starts_with(&r.uri_prefix))
    });
    let Some(route) = route else {
        tracing::debug!(%peer, port, %host, %path, "gateway: no route");
        return status(StatusCode::NOT_FOUND, "no route\n");
    };
    let destination = &route.destination;
    let upstream = match connect(shared, &destination.host, destination.port).await {
        Ok(upstream) => upstream,
        Err(e) => {
            tracing::warn!(%peer, port, route = %route.source, "gateway upstream {}:{} unavailable: {e}", destination.host, destination.port);
            return status(StatusCode::SERVICE_UNAVAILABLE, "upstream unavailable\n");
        }
    };
    let forwarded = match req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(existing) => format!("{existing}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded) {
        req.headers_mut().insert("x-forwarded-for", value);
    }
    let (mut sender, connection) = match hyper::client::conn::http1::handshake(TokioIo::new(upstream.stream)).await {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(%peer, port, "gateway upstream {}:{} HTTP handshake failed: {e}", destination.host, destination.port);
            return status(StatusCode::SERVICE_UNAVAILABLE, "upstream unavailable\n");
        }
    };
    tokio::spawn(connection);
    match sender.send_request(req).await {
        Ok(response) => response.map(|b| b.boxed()),
        Err(e) => {
            tracing::warn!(%peer, port, "gateway upstream {}:{} request failed: {e}", destination.host, destination.port);
            status(StatusCode::SERVICE_UNAVAILABLE, "upstream unavailable\n")
        }
    }
}

/// Connects to a service by name and records the connection.
async fn connect(shared: &Shared, host: &str, port: u16) -> Result<Upstream, UpstreamError> {
    let start_ms = records::now_ms();
    let endpoint = upstream::resolve(shared, host, port)?;
    let upstream = upstream::connect(shared, &endpoint).await?;
    let config = shared.config();
    let mut record = records::record("outbound", &config.node.pod, upstream.local, upstream.peer, start_ms);
    record.security = upstream.security().to_string();
    record.alpn = upstream.alpn.clone();
    record.destination_principal = upstream.principal.clone();
    if upstream.principal.is_some() {
        record.source_principal = Some(config.node.spiffe_id.clone());
    }
    shared.records.send(record);
    Ok(upstream)
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>, port: u16) {
    loop {
        let (stream, peer) = crate::proxy::accept(&listener).await;
        let shared = shared.clone();
        tokio::spawn(async move { forward_tcp(&shared, port, stream, peer).await });
    }
}

async fn forward_tcp(shared: &Shared, port: u16, mut downstream: TcpStream, peer: SocketAddr) {
    let Some(destination) = listener_config(shared, port).and_then(|l| l.tcp_route) else {
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

#[cfg(test)]
mod tests {
    use super::host_matches;

    #[test]
    fn host_patterns() {
        assert!(host_matches("*", "anything.example"));
        assert!(host_matches("*.example.com", "www.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(!host_matches("*.example.com", "www.example.org"));
        assert!(host_matches("Bookinfo.Example", "bookinfo.example"));
        assert!(!host_matches("bookinfo.example", "other.example"));
    }
}
