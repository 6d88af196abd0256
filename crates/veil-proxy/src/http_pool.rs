//! Upstream HTTP connections kept for reuse: per (endpoint, TLS, HTTP
//! version) a few idle HTTP/1.1 keep-alive connections, or one multiplexed
//! HTTP/2 connection, so that consecutive requests to an endpoint do not
//! pay a TCP connect and a TLS handshake each. An HTTP/1.1 connection goes
//! back to the pool when its response body has been read to the end; one
//! whose response was abandoned is closed. Every new upstream connection
//! leaves one connection record (not one per request), so `veil audit`
//! joins its flow as before.
//!
//! Also the round-robin position per route destination.

use crate::proxy::Shared;
use crate::records;
use crate::upstream::{self, Upstream, UpstreamError};
use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use veil_model::{Endpoint, WeightedDestination};

/// Body of a request sent upstream.
pub(crate) type RequestBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// Idle HTTP/1.1 connections kept per key.
const MAX_IDLE_PER_KEY: usize = 16;
/// An idle connection older than this is closed instead of reused, in seconds.
const IDLE_SECS: u64 = 60;
/// Bound on waiting for a pooled connection to accept a request, in ms.
const READY_MS: u64 = 1000;
/// Pooled connections tried before a new one is made.
const MAX_STALE_TRIES: usize = 4;

/// Why a request got no response (the retry policy tells them apart).
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// No connection could be made (`connect-failure`).
    #[error("{0}")]
    Connect(#[from] UpstreamError),
    /// The connection was made but HTTP could not start on it.
    #[error("HTTP handshake with {addr} failed: {source}")]
    Handshake { addr: SocketAddr, source: hyper::Error },
    /// The upstream closed or reset before the response head (`reset`).
    #[error("request to {addr} failed: {source}")]
    Request { addr: SocketAddr, source: hyper::Error },
}

impl SendError {
    /// True when no connection reached the endpoint.
    pub(crate) fn is_connect_failure(&self) -> bool {
        matches!(self, SendError::Connect(_) | SendError::Handshake { .. })
    }
}

/// A route destination: Service FQDN, port, subset.
type DestinationKey = (String, u16, Option<String>);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    addr: SocketAddr,
    /// The endpoint's `UpstreamTls`, serialised.
    tls: String,
    h2: bool,
}

enum Sender {
    H1(http1::SendRequest<RequestBody>),
    H2(http2::SendRequest<RequestBody>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    async fn ready(&mut self) -> bool {
        let wait = async {
            match self {
                Sender::H1(s) => s.ready().await,
                Sender::H2(s) => s.ready().await,
            }
        };
        matches!(tokio::time::timeout(Duration::from_millis(READY_MS), wait).await, Ok(Ok(())))
    }
}

struct Idle {
    sender: Sender,
    since: Instant,
}

#[derive(Default)]
struct Idles {
    h1: HashMap<PoolKey, Vec<Idle>>,
    h2: HashMap<PoolKey, http2::SendRequest<RequestBody>>,
}

/// The pool of one proxy (see the module doc).
#[derive(Default)]
pub(crate) struct HttpPool {
    idle: Arc<Mutex<Idles>>,
    next: Mutex<HashMap<DestinationKey, usize>>,
}

impl HttpPool {
    /// The next endpoint of `destination` among `endpoints`, round robin.
    pub(crate) fn pick<'a>(&self, destination: &WeightedDestination, endpoints: &'a [Endpoint]) -> Option<&'a Endpoint> {
        if endpoints.is_empty() {
            return None;
        }
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (destination.host.clone(), destination.port, destination.subset.clone());
        let slot = next.entry(key).or_insert(0);
        let index = *slot % endpoints.len();
        *slot = index.wrapping_add(1);
        endpoints.get(index)
    }

    /// A live pooled connection for `key`, if any.
    fn checkout(&self, key: &PoolKey) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if key.h2 {
            let sender = idle.h2.get(key)?;
            if sender.is_closed() {
                idle.h2.remove(key);
                return None;
            }
            return Some(Sender::H2(sender.clone()));
        }
        let list = idle.h1.get_mut(key)?;
        let fresh = Duration::from_secs(IDLE_SECS);
        while let Some(entry) = list.pop() {
            if !entry.sender.is_closed() && entry.since.elapsed() < fresh {
                return Some(entry.sender);
            }
        }
        None
    }

    /// Sends `req` to `endpoint` over a pooled connection, else a new one
    /// (HTTP/2 when the request is HTTP/2, else HTTP/1.1); the response
    /// body returns the connection to the pool when read to the end.
    ///
    /// Errors: [`SendError`] when no response head arrived.
    pub(crate) async fn send(
        &self,
        shared: &Shared,
        endpoint: &Endpoint,
        mut req: Request<RequestBody>,
    ) -> Result<Response<PooledBody>, SendError> {
        let addr = SocketAddr::new(endpoint.ip, endpoint.port);
        let tls = serde_json::to_string(&endpoint.tls).unwrap_or_default();
        let key = PoolKey { addr, tls, h2: req.version() == Version::HTTP_2 };
        for _ in 0..MAX_STALE_TRIES {
            let Some(mut sender) = self.checkout(&key) else { break };
            if !sender.ready().await {
                continue;
            }
            let sent = match &mut sender {
                Sender::H1(s) => s.try_send_request(req).await,
                Sender::H2(s) => s.try_send_request(req).await,
            };
            match sent {
                Ok(response) => return Ok(self.wrap(response, key, sender)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(SendError::Request { addr, source: e.into_error() }),
                },
            }
        }
        let upstream = connect_recorded(shared, endpoint).await?;
        let io = TokioIo::new(upstream.stream);
        let mut sender = if key.h2 {
            let (sender, connection) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|source| SendError::Handshake { addr, source })?;
            tokio::spawn(connection);
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            idle.h2.insert(key.clone(), sender.clone());
            Sender::H2(sender)
        } else {
            let (sender, connection) =
                http1::handshake(io).await.map_err(|source| SendError::Handshake { addr, source })?;
            tokio::spawn(connection);
            Sender::H1(sender)
        };
        let response = match &mut sender {
            Sender::H1(s) => s.send_request(req).await,
            Sender::H2(s) => s.send_request(req).await,
        };
        let response = response.map_err(|source| SendError::Request { addr, source })?;
        Ok(self.wrap(response, key, sender))
    }

    fn wrap(&self, response: Response<Incoming>, key: PoolKey, sender: Sender) -> Response<PooledBody> {
        let back = match sender {
            Sender::H1(s) => Some((self.idle.clone(), key, s)),
            Sender::H2(_) => None,
        };
        response.map(|inner| PooledBody { inner, back })
    }
}

/// A connection waiting for its response body to end.
type Return = (Arc<Mutex<Idles>>, PoolKey, http1::SendRequest<RequestBody>);

/// An upstream response body; at its end the HTTP/1.1 connection it came
/// on goes back to the pool.
pub(crate) struct PooledBody {
    inner: Incoming,
    back: Option<Return>,
}

impl PooledBody {
    fn give_back(&mut self) {
        let Some((idle, key, sender)) = self.back.take() else { return };
        let mut idle = idle.lock().unwrap_or_else(PoisonError::into_inner);
        let list = idle.h1.entry(key).or_default();
        if list.len() < MAX_IDLE_PER_KEY {
            list.push(Idle { sender: Sender::H1(sender), since: Instant::now() });
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            None => self.give_back(),
            Some(Err(_)) => self.back = None,
            Some(Ok(_)) if self.inner.is_end_stream() => self.give_back(),
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.give_back();
        }
    }
}

/// Connects to `endpoint` per its `UpstreamTls` and leaves the connection's
/// record (direction `outbound`, security, ALPN, verified peer identity).
///
/// Errors: [`UpstreamError`] from the connect or handshake.
pub(crate) async fn connect_recorded(shared: &Shared, endpoint: &Endpoint) -> Result<Upstream, UpstreamError> {
    let start_ms = records::now_ms();
    let upstream = upstream::connect(shared, endpoint).await?;
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
