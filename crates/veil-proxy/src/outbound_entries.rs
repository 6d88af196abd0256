//! Outbound connections to ports that ServiceEntries without `addresses`
//! use (`veil_model::entry_names`; for `STATIC`/`DNS` entries, their HTTP
//! and TLS ports dialled at an address their endpoints do not list): no
//! address says which entry is meant, so the name does, as Istio's
//! `0.0.0.0:<port>` listeners do:
//! - a TLS ClientHello (first byte 0x16) is matched by its SNI to a TLS
//!   entry, and then forwarded like any connection to that entry;
//! - otherwise, when HTTP entries use the port, the connection is served
//!   as HTTP here, and each request is matched by its `Host` to an HTTP
//!   entry: its `VirtualService` rules, or the address the workload dialled
//!   (`resolution: NONE`) with the entry's TLS;
//!   an `Upgrade` request (WebSocket) switches protocols either way;
//! - an opaque TCP entry takes the whole port (Istio: port only).
//!
//! A name no entry lists is an unknown destination: under `REGISTRY_ONLY`
//! it is refused with a log line naming the host (connections closed; HTTP
//! requests answered 502, Envoy's `BlackHoleCluster`), under `ALLOW_ANY`
//! passed through in plain to the dialled address (`PassthroughCluster`).
//! A client that sends nothing within the handshake timeout is unknown too.

use crate::client_hello::{self, TLS_HANDSHAKE};
use crate::outbound_http::{self, ResponseBody};
use crate::proxy::Shared;
use crate::router;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use veil_model::entry_names::PortNames;
use veil_model::{
    Endpoint, HttpRouteRule, OutboundService, OutboundTrafficPolicy, Protocol, ProxyConfig, UpstreamTls, WeightedDestination,
};

/// What a captured connection is, before it is forwarded.
pub(crate) enum Resolved<'c> {
    /// The Service or ServiceEntry port it goes to (with the endpoint when
    /// the workload dialled one), or `None`: unknown, the outbound traffic
    /// policy applies.
    Found(Option<(&'c OutboundService, Option<&'c Endpoint>)>),
    /// HTTP to a port of HTTP entries without addresses: serve it with
    /// [`serve_http`].
    Http,
    /// Refused (and logged) here.
    Refused,
}

/// Which service a connection to `dst` is for: by address first
/// (`Outbound::lookup`), then by name on ports of ServiceEntries without
/// addresses (peeking at the client's first bytes, at most the handshake
/// timeout).
pub(crate) async fn resolve<'c>(shared: &Shared, config: &'c ProxyConfig, downstream: &TcpStream, peer: SocketAddr, dst: SocketAddr) -> Resolved<'c> {
    let outbound = &config.outbound;
    let by_address = outbound.lookup(dst.ip(), dst.port()).filter(|(s, e)| e.is_some() || !outbound.is_unaddressed(s));
    if by_address.is_some() {
        return Resolved::Found(by_address);
    }
    let (http, tls) = match outbound.names_on(dst.port()) {
        PortNames::None => return Resolved::Found(None),
        PortNames::Port(service) => return Resolved::Found(Some((service, None))),
        PortNames::Names { http, tls } => (http, tls),
    };
    let timeout = shared.settings.handshake_timeout;
    let first = client_hello::first_byte(downstream, timeout).await;
    if first == Some(TLS_HANDSHAKE) {
        let sni = client_hello::peek(downstream, timeout).await.ok().and_then(|hello| hello.sni);
        let found = if tls { sni.as_deref().and_then(|name| outbound.entry_by_sni(name, dst.port())) } else { None };
        if let Some(service) = found {
            tracing::debug!(%peer, %dst, sni = sni.as_deref(), entry = %service.hostname, "outbound: ServiceEntry by SNI");
            return Resolved::Found(Some((service, None)));
        }
        return unknown(config, peer, dst, &format!("SNI {}", sni.as_deref().unwrap_or("(none)")));
    }
    match first {
        Some(_) if http => Resolved::Http,
        Some(_) => unknown(config, peer, dst, "plaintext (no HTTP entry uses the port)"),
        None => unknown(config, peer, dst, &format!("a client that sent nothing within {} ms", timeout.as_millis())),
    }
}

/// A name no entry on the port lists: refused under REGISTRY_ONLY, else
/// left to the outbound traffic policy (passthrough).
fn unknown<'c>(config: &ProxyConfig, peer: SocketAddr, dst: SocketAddr, what: &str) -> Resolved<'c> {
    if config.outbound.policy == OutboundTrafficPolicy::RegistryOnly {
        let port = dst.port();
        tracing::warn!(%peer, %dst, "outbound connection to {dst} refused: {what} matches no host of the ServiceEntries on port {port} (they have no addresses, so Host or SNI decides), and outboundTrafficPolicy is REGISTRY_ONLY (BlackHoleCluster); add the host to a ServiceEntry's hosts");
        return Resolved::Refused;
    }
    Resolved::Found(None)
}

/// Serves one captured connection to a port of HTTP entries without
/// addresses until the client closes it; each request goes by its `Host`.
pub(crate) async fn serve_http(shared: Arc<Shared>, downstream: TcpStream, peer: SocketAddr, dst: SocketAddr) {
    let service = service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(&shared, peer, dst, req).await) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    if let Err(e) = builder.serve_connection_with_upgrades(TokioIo::new(downstream), service).await {
        tracing::debug!(%peer, %dst, error = %e, "outbound HTTP connection (ServiceEntry by Host) ended with an error");
    }
}

async fn handle(shared: &Shared, peer: SocketAddr, dst: SocketAddr, req: Request<Incoming>) -> Response<ResponseBody> {
    let config = shared.config();
    let host = router::request_host(&req);
    let port = dst.port();
    let Some(service) = config.outbound.entry_by_host(&host, port) else {
        if config.outbound.policy == OutboundTrafficPolicy::RegistryOnly {
            tracing::warn!(%peer, %dst, "outbound HTTP request for host {host} to {dst} refused: {host} matches no host of the ServiceEntries on port {port}, and outboundTrafficPolicy is REGISTRY_ONLY (BlackHoleCluster); add it to a ServiceEntry's hosts");
            return outbound_http::status(StatusCode::BAD_GATEWAY, format!("host {host} is not in the registry (REGISTRY_ONLY)\n"));
        }
        let endpoint = Endpoint { ip: dst.ip(), port, pod: "PassthroughCluster".into(), tls: UpstreamTls::Disable };
        return send_to(shared, peer, &endpoint, false, req).await;
    };
    let source = &service.routes.source;
    tracing::debug!(%peer, %dst, %host, entry = %service.hostname, "outbound HTTP: ServiceEntry by Host");
    if !service.routes.http.is_empty() {
        let Some((rule, matched)) = router::find_rule(&service.routes.http, &req, "http") else {
            tracing::debug!(%peer, %dst, route = %source, path = req.uri().path(), "outbound HTTP: no route matched");
            return outbound_http::status(StatusCode::NOT_FOUND, "no route matched\n".into());
        };
        return outbound_http::forward(shared, &config, peer, source, rule, matched, req).await;
    }
    if let Some(tls) = config.outbound.entry(&service.hostname, service.port).and_then(|e| e.original_destination.clone()) {
        let endpoint = Endpoint { ip: dst.ip(), port, pod: service.hostname.clone(), tls };
        let h2 = matches!(service.protocol, Protocol::Http2 | Protocol::Grpc);
        return send_to(shared, peer, &endpoint, h2, req).await;
    }
    let rule = HttpRouteRule {
        destinations: vec![WeightedDestination { host: service.hostname.clone(), port: service.port, subset: None, weight: 1 }],
        ..HttpRouteRule::default()
    };
    outbound_http::forward(shared, &config, peer, source, &rule, None, req).await
}

/// Sends `req` to `endpoint` (the dialled address) over the upstream pool;
/// an `Upgrade` request goes on a connection of its own.
async fn send_to(shared: &Shared, peer: SocketAddr, endpoint: &Endpoint, h2: bool, mut req: Request<Incoming>) -> Response<ResponseBody> {
    if outbound_http::is_upgrade(&req) {
        let label = format!("{}:{} ({})", endpoint.ip, endpoint.port, endpoint.pod);
        return outbound_http::upgrade_to(shared, peer, endpoint, &label, req).await;
    }
    router::prepare_upstream(&mut req, h2);
    match shared.http.send(shared, endpoint, req.map(|b| b.boxed_unsync())).await {
        Ok(response) => outbound_http::downstream_response(response),
        Err(e) => {
            tracing::warn!(%peer, "outbound HTTP request to {}:{} ({}) failed: {e}", endpoint.ip, endpoint.port, endpoint.pod);
            let body = format!("upstream connect error or disconnect/reset before headers: {e}\n");
            outbound_http::status(StatusCode::SERVICE_UNAVAILABLE, body)
        }
    }
}
