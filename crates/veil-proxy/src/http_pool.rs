//! Upstream HTTP connections kept for reuse: per (endpoint, TLS, HTTP
//! version) the idle HTTP/1.1 keep-alive connections (up to
//! [`MAX_IDLE_PER_ENDPOINT`], so that as many clients as that can send at
//! once without new handshakes), or one multiplexed HTTP/2 connection, so
//! that consecutive requests to an endpoint do not pay a TCP connect and a
//! TLS handshake each. An HTTP/1.1 connection goes back to the pool when its
//! response body has been read to the end; one whose response was abandoned
//! is closed. The most recently used connection is reused first, so that
//! the ones a burst opened age out after [`IDLE_SECS`]. Every new upstream
//! connection leaves one connection record (not one per request), so `veil
//! audit` joins its flow as before.
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
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use veil_model::{Endpoint, UpstreamTls, WeightedDestination};

/// Body of a request sent upstream.
pub(crate) type RequestBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// Idle HTTP/1.1 connections kept per endpoint (and TLS): Envoy keeps every
/// connection a burst opened; this bounds the memory they hold (about
/// 30 KiB each, both sidecars together).
pub(crate) const MAX_IDLE_PER_ENDPOINT: usize = 256;
/// An idle connection older than this is closed instead of reused, in seconds.
pub(crate) const IDLE_SECS: u64 = 60;
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

/// Where pooled connections go: the endpoint address and its `UpstreamTls`
/// (compared, not hashed: connections to one address normally share it).
#[derive(Clone)]
struct PoolKey {
    addr: SocketAddr,
    tls: Arc<UpstreamTls>,
    h2: bool,
}

enum Sender {
    H1(http1::SendRequest<RequestBody>),
    H2(http2::SendRequest<RequestBody>),
}

impl Sender {
    async fn ready(&mut self) -> bool {
        let now = match self {
            Sender::H1(s) => s.is_ready(),
            Sender::H2(s) => s.is_ready(),
        };
        if now {
            return true;
        }
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
    tls: Arc<UpstreamTls>,
    sender: http1::SendRequest<RequestBody>,
    since: Instant,
}

impl Idle {
    fn usable(&self) -> bool {
        !self.sender.is_closed() && self.since.elapsed() < Duration::from_secs(IDLE_SECS)
    }
}

/// A shared HTTP/2 connection to an endpoint, with the upstream TLS it was made with.
type H2Connection = (Arc<UpstreamTls>, http2::SendRequest<RequestBody>);

#[derive(Default)]
struct Idles {
    /// Per endpoint address, oldest first.
    h1: HashMap<SocketAddr, VecDeque<Idle>>,
    h2: HashMap<SocketAddr, Vec<H2Connection>>,
}

/// The pool of one proxy (see the module doc).
#[derive(Default)]
pub(crate) struct HttpPool {
    idle: Arc<Mutex<Idles>>,
    /// Round-robin position per route destination, by a hash of its
    /// Service FQDN, port and subset (a collision only shares a counter).
    next: Mutex<HashMap<u64, usize>>,
}

impl HttpPool {
    /// The next endpoint of `destination` among `endpoints`, round robin.
    pub(crate) fn pick<'a>(&self, destination: &WeightedDestination, endpoints: &'a [Endpoint]) -> Option<&'a Endpoint> {
        if endpoints.len() <= 1 {
            return endpoints.first();
        }
        let mut hasher = DefaultHasher::new();
        (&destination.host, destination.port, &destination.subset).hash(&mut hasher);
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = next.entry(hasher.finish()).or_insert(0);
        let index = *slot % endpoints.len();
        *slot = index.wrapping_add(1);
        endpoints.get(index)
    }

    /// A live pooled connection to `addr` with TLS `tls`, if any; the most
    /// recently returned first.
    fn checkout(&self, addr: SocketAddr, tls: &UpstreamTls, h2: bool) -> Option<(Arc<UpstreamTls>, Sender)> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if h2 {
            let list = idle.h2.get_mut(&addr)?;
            list.retain(|(_, sender)| !sender.is_closed());
            let (tls, sender) = list.iter().find(|(t, _)| **t == *tls)?;
            return Some((tls.clone(), Sender::H2(sender.clone())));
        }
        let list = idle.h1.get_mut(&addr)?;
        // Each turn removes an entry: bounded by the list's length.
        while let Some(at) = list.iter().rposition(|entry| *entry.tls == *tls) {
            let entry = list.remove(at)?;
            if entry.usable() {
                return Some((entry.tls, Sender::H1(entry.sender)));
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
        let h2 = req.version() == Version::HTTP_2;
        for _ in 0..MAX_STALE_TRIES {
            let Some((tls, mut sender)) = self.checkout(addr, &endpoint.tls, h2) else { break };
            if !sender.ready().await {
                continue;
            }
            let sent = match &mut sender {
                Sender::H1(s) => s.try_send_request(req).await,
                Sender::H2(s) => s.try_send_request(req).await,
            };
            match sent {
                Ok(response) => return Ok(self.wrap(response, PoolKey { addr, tls, h2 }, sender)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(SendError::Request { addr, source: e.into_error() }),
                },
            }
        }
        let upstream = connect_recorded(shared, endpoint).await?;
        let io = TokioIo::new(upstream.stream);
        let key = PoolKey { addr, tls: Arc::new(endpoint.tls.clone()), h2 };
        let mut sender = if key.h2 {
            let (sender, connection) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|source| SendError::Handshake { addr, source })?;
            tokio::spawn(connection);
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            let list = idle.h2.entry(addr).or_default();
            list.retain(|(tls, _)| **tls != *key.tls);
            list.push((key.tls.clone(), sender.clone()));
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
        let list = idle.h1.entry(key.addr).or_default();
        while list.front().is_some_and(|oldest| !oldest.usable()) {
            list.pop_front();
        }
        if list.len() < MAX_IDLE_PER_ENDPOINT {
            list.push_back(Idle { tls: key.tls, sender, since: Instant::now() });
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
