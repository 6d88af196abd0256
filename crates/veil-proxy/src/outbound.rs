//! Outbound (15001): connections the workload makes, redirected by iptables.
//!
//! Original destination → `Outbound::lookup` → a Service port. An HTTP
//! Service port (dialled by ClusterIP) is served per request by
//! `outbound_http` only when a request could be treated differently from
//! the one before (`per_request`), that is when:
//! - the port has `VirtualService` HTTP rules (matches, weights, subsets,
//!   rewrite, redirect, timeout, retries);
//! - the Service has no endpoint or more than one (Envoy balances every
//!   request; one endpoint leaves nothing to choose);
//! - the client's HTTP version is not the one the upstream speaks (an
//!   HTTP/1.1 client of an HTTP2/GRPC port, an h2c client of an HTTP port),
//!   told by peeking at the HTTP/2 preface;
//! - or the client sends nothing within the handshake timeout.
//!
//! Otherwise the connection is forwarded as bytes like a TCP port's: one
//! mesh mTLS connection per client connection, one connection record (what
//! ztunnel does for every connection). The choice holds for the
//! connection's life: a route or endpoint added later applies to the
//! client's next connections, as for TCP routes.
//!
//! Other connections go to an endpoint (the dialled one;
//! else a weighted destination of the Service's `VirtualService` TCP route,
//! chosen per connection; else round robin over the Service) → mesh mTLS
//! or plain per the endpoint's `UpstreamTls`, bytes copied. A ServiceEntry
//! port with `resolution: NONE` and no route goes to the address the
//! workload dialled, with the entry's TLS (Envoy `ORIGINAL_DST`). A
//! destination the config does not know is passed through in plain to where
//! the workload dialled under `outboundTrafficPolicy` `ALLOW_ANY` (Istio's
//! `PassthroughCluster`), and refused with a log line naming it under
//! `REGISTRY_ONLY` (`BlackHoleCluster`).

use crate::copy::Pipe;
use crate::early_close::AnswerOnEarlyClose;
use crate::proxy::Shared;
use crate::records;
use crate::stream_pool::Reuse;
use crate::upstream::{self, Upstream, UpstreamError, UpstreamStream};
use futures::future::{FutureExt, OptionFuture};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{ready, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use veil_model::{Endpoint, Outbound, OutboundService, OutboundTrafficPolicy, Protocol};

/// Accepts outbound connections until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = crate::proxy::accept(&listener).await;
        tokio::spawn(handle(shared.clone(), stream, peer));
    }
}

/// One connection. Everything before the copy (resolution, routing, the
/// upstream connection and its handshake, the per-request HTTP path) runs
/// in a boxed future that is freed once the upstream is connected, so that
/// an idle connection's task holds only its [`Forward`] and the copy's
/// state (a 384-byte task instead of 3.3 KiB). Combinators, not an
/// `async fn`: an `async fn` keeps its arguments and moved-from locals in
/// the task for the connection's life.
fn handle(shared: Arc<Shared>, downstream: TcpStream, peer: SocketAddr) -> impl Future<Output = ()> {
    Box::pin(connect(shared, downstream, peer)).then(|forward| OptionFuture::from(forward.map(Forward::copy))).map(drop)
}

/// A connection forwarded as bytes: what its copy phase needs.
struct Forward {
    downstream: TcpStream,
    upstream: ToUpstream,
    peer: SocketAddr,
    dst: SocketAddr,
    /// A mesh connection that carries streams goes back to the pool after.
    reuse: Option<Box<Reusable>>,
}

/// What a mesh connection needs to go back to the pool (`stream_pool`).
struct Reusable {
    shared: Arc<Shared>,
    reuse: Reuse,
    local: SocketAddr,
}

/// The upstream side of a forwarded connection.
enum ToUpstream {
    Bytes(UpstreamStream),
    /// HTTP/1: the client gets Envoy's 503 when the upstream closes before
    /// answering.
    Http(AnswerOnEarlyClose<UpstreamStream>),
}

impl Forward {
    /// Copies both ways until both directions ended; the future holds the
    /// streams and the copy's state, nothing else.
    fn copy(self) -> impl Future<Output = ()> {
        let mut pipe = Pipe::default();
        let mut forward = Some(self);
        std::future::poll_fn(move |cx| {
            let Some(this) = forward.as_mut() else { return Poll::Ready(()) };
            let copied = match &mut this.upstream {
                ToUpstream::Bytes(upstream) => ready!(pipe.poll_copy(cx, &mut this.downstream, upstream)),
                ToUpstream::Http(upstream) => ready!(pipe.poll_copy(cx, &mut this.downstream, upstream)),
            };
            let (peer, dst) = (this.peer, this.dst);
            match copied {
                Ok(bytes) => {
                    tracing::debug!(%peer, %dst, sent = bytes.sent, received = bytes.received, "outbound connection closed");
                    if let Some(this) = forward.take() {
                        this.release();
                    }
                }
                Err(e) => tracing::debug!(%peer, %dst, error = %e, "outbound connection ended with an error"),
            }
            Poll::Ready(())
        })
    }

    /// Puts the mesh connection back in the pool when its stream finished
    /// cleanly (`StreamPool::put` checks); drops it otherwise.
    fn release(self) {
        let Some(reusable) = self.reuse else { return };
        let stream = match self.upstream {
            ToUpstream::Bytes(stream) => stream,
            ToUpstream::Http(wrapped) => wrapped.into_inner(),
        };
        if let UpstreamStream::Mesh(tls) = stream {
            let Reusable { shared, reuse, local } = *reusable;
            shared.streams.put(tls, reuse, local);
        }
    }
}

/// Resolves and connects the upstream of `downstream` and sends the
/// connection's record; `None` when the connection was refused, failed, or
/// was served request by request here.
async fn connect(shared: Arc<Shared>, mut downstream: TcpStream, peer: SocketAddr) -> Option<Forward> {
    let start_ms = records::now_ms();
    let _ = downstream.set_nodelay(true);
    let dst = crate::orig_dst::original_dst(&downstream)?;
    if dst.port() == shared.local.outbound.port() {
        tracing::warn!(%peer, %dst, "outbound connection refused: it was addressed to the outbound capture port itself (not redirected); dial the service address instead");
        return None;
    }
    let config = shared.config();
    let found = match crate::outbound_entries::resolve(&shared, &config, &downstream, peer, dst).await {
        crate::outbound_entries::Resolved::Found(found) => found,
        crate::outbound_entries::Resolved::Http => {
            crate::outbound_entries::serve_http(shared.clone(), downstream, peer, dst).await;
            return None;
        }
        crate::outbound_entries::Resolved::Refused => return None,
    };
    let original = match found {
        Some((service, None)) => original_destination(&config.outbound, service),
        _ => None,
    };
    let per_request = match (found, &original) {
        (Some((service, None)), None) if service.protocol.is_http() => {
            let routed = per_request(service, &downstream, shared.settings.handshake_timeout).await;
            if !routed {
                tracing::debug!(%peer, %dst, service = %service.hostname, "outbound HTTP forwarded per connection (no routes, one endpoint)");
            }
            routed
        }
        _ => false,
    };
    let upstream = match (found, original) {
        (Some((service, _)), Some(tls)) => {
            let endpoint = Endpoint { ip: dst.ip(), port: dst.port(), pod: service.hostname.clone(), tls };
            upstream::connect_reusing(&shared, &endpoint).await.map_err(|e| (e, service.hostname.clone()))
        }
        (Some(_), None) if per_request => {
            crate::outbound_http::serve(shared.clone(), downstream, peer, dst).await;
            return None;
        }
        (Some((service, endpoint)), None) => {
            let chosen = match endpoint {
                Some(e) => Ok(e),
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
                    return None;
                }
            };
            upstream::connect_reusing(&shared, endpoint).await.map_err(|e| (e, service.hostname.clone()))
        }
        (None, _) if config.outbound.policy == OutboundTrafficPolicy::RegistryOnly => {
            tracing::warn!(%peer, %dst, "outbound connection to {dst} refused: no Service or ServiceEntry has this address and port, and outboundTrafficPolicy is REGISTRY_ONLY (BlackHoleCluster); add a ServiceEntry for the destination");
            return None;
        }
        (None, _) => passthrough(&shared, dst).await.map(|up| (up, None)).map_err(|e| (e, "PassthroughCluster".to_string())),
    };
    let http = found.is_some_and(|(s, _)| s.protocol == Protocol::Http);
    let (upstream, reuse) = match upstream {
        Ok(upstream) => upstream,
        Err((e, service)) => {
            tracing::warn!(%peer, %dst, %service, "outbound connection failed: {e}");
            if http {
                unavailable(&mut downstream, &e.to_string()).await;
            }
            return None;
        }
    };
    let security = upstream.security();
    let Upstream { stream, local, peer: endpoint, principal, alpn } = upstream;
    let mut record = records::record("outbound", &config.node.pod, local, endpoint, start_ms);
    record.security = security.to_string();
    record.alpn = alpn;
    record.destination_principal = principal;
    let reuse = reuse.map(|reuse| Box::new(Reusable { shared: shared.clone(), reuse, local }));
    if matches!(stream, UpstreamStream::Mesh(_)) {
        record.source_principal = Some(config.node.spiffe_id.clone());
    }
    shared.records.send(record);
    let upstream = if http { ToUpstream::Http(AnswerOnEarlyClose::new(stream)) } else { ToUpstream::Bytes(stream) };
    Some(Forward { downstream, upstream, peer, dst, reuse })
}

/// Answers an HTTP/1.x client whose connection is forwarded as bytes with
/// Envoy's 503 when no upstream connection could be made, so the app sees
/// the same status as on the per-request path instead of a closed socket.
async fn unavailable(downstream: &mut TcpStream, reason: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = downstream.write_all(crate::early_close::unavailable_response(reason).as_bytes()).await;
    let _ = downstream.shutdown().await;
    // Closing with the request still unread would send a reset that can
    // destroy the answer in flight: read until the client closes (bounded).
    let drain = async {
        let mut sink = [0u8; 1024];
        while matches!(downstream.read(&mut sink).await, Ok(n) if n > 0) {}
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

/// The HTTP/2 connection preface (RFC 9113 §3.4); no HTTP/1.1 request
/// starts with it.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Peeks at most while the preface arrives in pieces.
const MAX_PREFACE_PEEKS: u32 = 100;
/// Pause between peeks that saw a part of the preface, in ms.
const PREFACE_PAUSE_MS: u64 = 1;

/// Whether the connection `downstream` to HTTP `service` must be served
/// request by request (module doc); false: forward it as bytes to
/// the Service's one endpoint. Peeks (without consuming) at the client's
/// first bytes for at most `wait`.
async fn per_request(service: &OutboundService, downstream: &TcpStream, wait: Duration) -> bool {
    if !service.routes.http.is_empty() || service.endpoints.len() != 1 {
        return true;
    }
    let upstream_h2 = matches!(service.protocol, Protocol::Http2 | Protocol::Grpc);
    match opens_with_h2_preface(downstream, wait).await {
        Some(client_h2) => client_h2 != upstream_h2,
        None => true,
    }
}

/// Whether the client's first bytes are the HTTP/2 preface (h2c with prior
/// knowledge, as hyper tells them apart); `None` when it sends nothing
/// within `wait` or closes.
async fn opens_with_h2_preface(downstream: &TcpStream, wait: Duration) -> Option<bool> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = [0u8; H2_PREFACE.len()];
    for _ in 0..MAX_PREFACE_PEEKS {
        let n = tokio::time::timeout_at(deadline, downstream.peek(&mut buf)).await.ok()?.ok()?;
        if n == 0 {
            return None;
        }
        let seen = buf.get(..n)?;
        if !H2_PREFACE.starts_with(seen) {
            return Some(false);
        }
        if n == H2_PREFACE.len() {
            return Some(true);
        }
        let pause = tokio::time::sleep(Duration::from_millis(PREFACE_PAUSE_MS));
        tokio::time::timeout_at(deadline, pause).await.ok()?;
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_connection_task_holds_its_streams_and_copy_state_only() {
        use crate::test_support::{assert_task_fits, future_size};
        assert_task_fits(future_size(handle), future_size(connect), "connecting");
    }
}
