//! Outbound (15001): connections the workload makes, redirected by iptables.
//!
//! Original destination → `Outbound::lookup` → a Service port. HTTP
//! Service ports (dialled by ClusterIP) are served per request by
//! `outbound_http`. Other connections go to an endpoint (the dialled one;
//! else a weighted destination of the Service's `VirtualService` TCP route,
//! chosen per connection; else round robin over the Service) → mesh mTLS
//! or plain per the endpoint's `UpstreamTls`, bytes copied. A ServiceEntry
//! port with `resolution: NONE` and no route goes to the address the
//! workload dialled, with the entry's TLS (Envoy `ORIGINAL_DST`). A
//! destination the config does not know is passed through in plain to where
//! the workload dialled under `outboundTrafficPolicy` `ALLOW_ANY` (Istio's
//! `PassthroughCluster`), and refused with a log line naming it under
//! `REGISTRY_ONLY` (`BlackHoleCluster`).

use crate::proxy::Shared;
use crate::records;
use crate::upstream::{self, Upstream, UpstreamError, UpstreamStream};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use veil_model::{Endpoint, Outbound, OutboundService, OutboundTrafficPolicy};

/// Accepts outbound connections until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = crate::proxy::accept(&listener).await;
        let shared = shared.clone();
        tokio::spawn(handle(shared, stream, peer));
    }
}

async fn handle(shared: Arc<Shared>, mut downstream: TcpStream, peer: SocketAddr) {
    let start_ms = records::now_ms();
    let _ = downstream.set_nodelay(true);
    let Some(dst) = crate::orig_dst::original_dst(&downstream) else { return };
    if dst.port() == shared.local.outbound.port() {
        tracing::warn!(%peer, %dst, "outbound connection refused: it was addressed to the outbound capture port itself (not redirected); dial the service address instead");
        return;
    }
    let config = shared.config();
    let found = config.outbound.lookup(dst.ip(), dst.port());
    let original = match found {
        Some((service, None)) => original_destination(&config.outbound, service),
        _ => None,
    };
    let upstream = match (found, original) {
        (Some((service, _)), Some(tls)) => {
            let endpoint = Endpoint { ip: dst.ip(), port: dst.port(), pod: service.hostname.clone(), tls };
            upstream::connect(&shared, &endpoint).await.map_err(|e| (e, service.hostname.clone()))
        }
        (Some((service, None)), None) if service.protocol.is_http() => {
            crate::outbound_http::serve(shared.clone(), downstream, peer, dst).await;
            return;
        }
        (Some((service, endpoint)), None) => {
            let chosen = match endpoint {
                Some(e) => Ok(e.clone()),
                None if !service.routes.tcp.is_empty() => {
                    crate::router::tcp_endpoint(&shared, &config, service).map_err(|e| e.to_string())
                }
                None => shared.balancer.pick(service).ok_or_else(|| {
                    UpstreamError::NoEndpoint { host: service.hostname.clone(), port: service.port }.to_string()
                }),
            };
            let endpoint = match chosen {
                Ok(endpoint) => endpoint,
                Err(e) => {
                    let route = &service.routes.source;
                    tracing::warn!(%peer, %dst, %route, "outbound connection failed: {e}");
                    return;
                }
            };
            upstream::connect(&shared, &endpoint).await.map_err(|e| (e, service.hostname.clone()))
        }
        (None, _) if config.outbound.policy == OutboundTrafficPolicy::RegistryOnly => {
            tracing::warn!(%peer, %dst, "outbound connection to {dst} refused: no Service or ServiceEntry has this address and port, and outboundTrafficPolicy is REGISTRY_ONLY (BlackHoleCluster); add a ServiceEntry for the destination");
            return;
        }
        (None, _) => passthrough(&shared, dst).await.map_err(|e| (e, "PassthroughCluster".to_string())),
    };
    let mut upstream = match upstream {
        Ok(upstream) => upstream,
        Err((e, service)) => {
            tracing::warn!(%peer, %dst, %service, "outbound connection failed: {e}");
            return;
        }
    };
    let mut record = records::record("outbound", &config.node.pod, upstream.local, upstream.peer, start_ms);
    record.security = upstream.security().to_string();
    record.alpn = upstream.alpn.clone();
    record.destination_principal = upstream.principal.clone();
    if matches!(upstream.stream, UpstreamStream::Mesh(_)) {
        record.source_principal = Some(config.node.spiffe_id.clone());
    }
    shared.records.send(record);
    match crate::copy::bidirectional(&mut downstream, &mut upstream.stream).await {
        Ok(bytes) => tracing::debug!(%peer, %dst, sent = bytes.sent, received = bytes.received, "outbound connection closed"),
        Err(e) => tracing::debug!(%peer, %dst, error = %e, "outbound connection ended with an error"),
    }
}

/// The TLS to the dialled address when `service` is a ServiceEntry port with
/// `resolution: NONE` and no route of its own.
fn original_destination(outbound: &Outbound, service: &OutboundService) -> Option<veil_model::UpstreamTls> {
    if !service.routes.is_empty() {
        return None;
    }
    outbound.entry(&service.hostname, service.port)?.original_destination.clone()
}

/// Plain connection to the original destination.
async fn passthrough(shared: &Shared, dst: SocketAddr) -> Result<Upstream, UpstreamError> {
    let tcp = upstream::connect_tcp(shared, dst).await?;
    let local = tcp.local_addr().map_err(|source| UpstreamError::Connect { addr: dst, source })?;
    Ok(Upstream { stream: UpstreamStream::Plain(tcp), local, peer: dst, principal: None, alpn: None })
}
