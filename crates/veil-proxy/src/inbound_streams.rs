//! The inbound side of streams one after another on a mesh connection
//! (`mesh_frames`): a connection's task copies its stream, then waits for
//! the client's next `OPEN` (at most [`STREAM_IDLE`]) and admits that
//! stream as a new connection would be: the port's mode now, the client's
//! certificate not expired since, the application connected, a record.

use super::{client_principal, forward_mesh, Conn, Downstream, Forward, InboundError};
use crate::copy::Pipe;
use crate::mesh_tls::MeshServer;
use crate::proxy::Shared;
use crate::records;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use veil_model::MtlsMode;

/// Copies `forward`, then, on a connection that carries streams, each next
/// stream the client opens on it. While a stream is copied the task holds
/// its [`Copying`] and `shared`; the wait for the next stream is boxed.
pub(super) fn serve_streams(forward: Forward, shared: Arc<Shared>) -> impl Future<Output = ()> {
    type Next = Pin<Box<dyn Future<Output = Option<Forward>> + Send>>;
    // The copy is the stage a connection spends its life in: kept inline.
    #[allow(clippy::large_enum_variant)]
    enum Stage {
        Copying(Copying),
        Next(Next),
    }
    let mut stage = Stage::Copying(forward.copying());
    std::future::poll_fn(move |cx| loop {
        stage = match &mut stage {
            Stage::Copying(copying) => match ready!(copying.poll(cx)) {
                Some((tls, peer, dst)) => {
                    let shared = shared.clone();
                    Stage::Next(Box::pin(async move { next_stream(&shared, tls, peer, dst).await }))
                }
                None => return Poll::Ready(()),
            },
            Stage::Next(next) => match ready!(next.as_mut().poll(cx)) {
                Some(forward) => Stage::Copying(forward.copying()),
                None => return Poll::Ready(()),
            },
        };
    })
}

/// How long a connection that carries streams waits for the client's next
/// one before it is closed: longer than a client keeps it
/// (`stream_pool::IDLE`), so that a client seldom picks one being closed.
pub(crate) const STREAM_IDLE: Duration = Duration::from_secs(60);

/// Waits for the next stream on `tls` (its last one finished) and admits
/// it as the port's mode says now; `None` when the client closed the
/// connection, it stayed idle for [`STREAM_IDLE`], or the stream was
/// refused (logged).
async fn next_stream(shared: &Shared, mut tls: Box<MeshServer<TcpStream>>, peer: SocketAddr, dst: SocketAddr) -> Option<Forward> {
    tls.next_stream();
    match tokio::time::timeout(STREAM_IDLE, std::future::poll_fn(|cx| tls.poll_open(cx))).await {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => return None,
        Err(_) => {
            tracing::debug!(%peer, %dst, "mesh connection idle for {} s between streams: closed", STREAM_IDLE.as_secs());
            return None;
        }
        Ok(Err(e)) => {
            tracing::warn!(%peer, %dst, "mesh connection from {peer} closed: {e}");
            return None;
        }
    }
    let config = shared.config();
    let port = dst.port();
    let (mode, _) = config.inbound.port(port);
    let conn = Conn { shared, config: config.clone(), peer, dst, start_ms: records::now_ms() };
    let result = match (mode, client_principal(tls.peer_certificates().unwrap_or_default(), port, true)) {
        (MtlsMode::Disable, _) => Err(InboundError::StreamToDisabled { port }),
        (_, Ok(principal)) => forward_mesh(&conn, (tls, principal), None).await,
        (_, Err(e)) => Err(e),
    };
    match result {
        Ok(forward) => forward,
        Err(e) => {
            tracing::warn!(%peer, port, %mode, "inbound stream from {peer} refused: {e}");
            None
        }
    }
}

impl Forward {
    /// Its copy, both ways until both directions ended.
    fn copying(self) -> Copying {
        Copying { pipe: Pipe::default(), forward: Some(self) }
    }
}

/// A mesh connection between streams, with the client's address and the
/// original destination.
type Kept = (Box<MeshServer<TcpStream>>, SocketAddr, SocketAddr);

/// A [`Forward`] being copied: the streams and the copy's state, nothing else.
struct Copying {
    pipe: Pipe,
    forward: Option<Forward>,
}

impl Copying {
    /// Ready when both directions ended; gives back the mesh connection
    /// (with the client's address and the original destination) when it
    /// carries streams and this one finished cleanly.
    fn poll(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Option<Kept>> {
        let Some(this) = self.forward.as_mut() else { return Poll::Ready(None) };
        let copied = match &mut this.downstream {
            Downstream::Mesh(tls) => ready!(self.pipe.poll_copy(cx, tls.as_mut(), &mut this.app)),
            Downstream::Plain(tcp) => ready!(self.pipe.poll_copy(cx, tcp, &mut this.app)),
        };
        let (peer, dst) = (this.peer, this.dst);
        let clean = match copied {
            Ok(bytes) => {
                tracing::debug!(%peer, %dst, sent = bytes.sent, received = bytes.received, "inbound connection closed");
                true
            }
            Err(e) => {
                tracing::debug!(%peer, %dst, error = %e, "inbound connection ended with an error");
                false
            }
        };
        let done = self.forward.take().filter(|_| clean);
        Poll::Ready(match done.map(|f| f.downstream) {
            Some(Downstream::Mesh(tls)) if tls.stream_finished() => Some((tls, peer, dst)),
            _ => None,
        })
    }
}

