//! Mesh connections kept between streams (`mesh_frames`): per endpoint and
//! client config, the connections whose last stream ended cleanly, for the
//! next outbound connection to the same endpoint to use instead of a new
//! TCP connection and TLS handshake.
//!
//! A connection is kept for [`IDLE`] at most (a server waits
//! `inbound_streams::STREAM_IDLE`, longer, before it closes one, so that a client
//! rarely picks one the server is closing), for [`MAX_AGE`] after its
//! handshake (the peer's identity was proved then; certificates rotate
//! long after), and only while its client config is current (a rotated
//! certificate or new trust builds a new config, hence a new key). The most
//! recently used is taken first; at most [`MAX_PER_KEY`] are kept per key.
//! One that the peer closed or wrote to while idle is dropped when found.

use crate::mesh_tls::MeshClient;
use crate::upstream::{mesh_upstream, Upstream};
use rustls::ClientConfig;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Longest a connection waits in the pool.
pub(crate) const IDLE: Duration = Duration::from_secs(10);
/// Longest a connection is reused after its handshake.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(300);
/// Connections kept per endpoint and client config.
pub(crate) const MAX_PER_KEY: usize = 16;
/// How often the whole pool is swept of expired connections, at most.
const SWEEP: Duration = Duration::from_secs(5);

/// Which connections may carry a stream: same endpoint, same client config.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    addr: SocketAddr,
    /// The config's address; the entry holds the config, so it is not reused.
    config: usize,
}

/// What a stream's connection needs to go back to the pool.
pub(crate) struct Reuse {
    key: PoolKey,
    /// Held so that the address in `key` stays this config's.
    _config: Arc<ClientConfig>,
    born: Instant,
}

impl Reuse {
    /// A connection to `addr` just made with `config`.
    pub(crate) fn new(addr: SocketAddr, config: Arc<ClientConfig>) -> Self {
        Reuse { key: PoolKey::of(addr, &config), _config: config, born: Instant::now() }
    }
}

impl PoolKey {
    pub(crate) fn of(addr: SocketAddr, config: &Arc<ClientConfig>) -> Self {
        PoolKey { addr, config: Arc::as_ptr(config) as usize }
    }
}

/// A connection waiting for its next stream.
struct Idle {
    tls: Box<MeshClient<TcpStream>>,
    reuse: Reuse,
    /// The proxy's own address of the connection (the records name it).
    local: SocketAddr,
    since: Instant,
}

impl Idle {
    fn usable(&self, now: Instant) -> bool {
        now.duration_since(self.since) < IDLE && now.duration_since(self.reuse.born) < MAX_AGE
    }
}

/// The pool (module doc).
#[derive(Default)]
pub(crate) struct StreamPool {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    idle: HashMap<PoolKey, Vec<Idle>>,
    swept: Option<Instant>,
}

impl StreamPool {
    /// A kept connection for `key`, its next stream begun, as an upstream;
    /// `None` when there is none usable.
    pub(crate) fn take(&self, key: &PoolKey) -> Option<(Upstream, Reuse)> {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let list = inner.idle.get_mut(key)?;
        while let Some(idle) = list.pop() {
            if idle.usable(now) && open_and_quiet(idle.tls.transport()) {
                let peer = idle.reuse.key.addr;
                return Some((mesh_upstream(idle.tls, idle.local, peer), idle.reuse));
            }
        }
        None
    }

    /// Keeps `tls`, whose stream finished, for the next stream to
    /// `reuse`'s endpoint (dropped when the key holds [`MAX_PER_KEY`]).
    pub(crate) fn put(&self, mut tls: Box<MeshClient<TcpStream>>, reuse: Reuse, local: SocketAddr) {
        if !tls.stream_finished() {
            return;
        }
        tls.next_stream();
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.swept.is_none_or(|at| now.duration_since(at) >= SWEEP) {
            inner.idle.retain(|_, list| {
                list.retain(|idle| idle.usable(now));
                !list.is_empty()
            });
            inner.swept = Some(now);
        }
        let list = inner.idle.entry(reuse.key.clone()).or_default();
        if list.len() < MAX_PER_KEY {
            list.push(Idle { tls, reuse, local, since: now });
        }
    }

    /// Connections kept now, all keys.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).idle.values().map(Vec::len).sum()
    }
}

/// True when nothing arrived on an idle connection's socket: the peer
/// neither closed it nor sent anything (a server sends nothing between
/// streams until it closes). Asks the socket itself (`MSG_PEEK`, not
/// waiting), not the runtime's last readiness, which may predate the
/// peer's close.
fn open_and_quiet(tcp: &TcpStream) -> bool {
    use nix::sys::socket::{recv, MsgFlags};
    use std::os::fd::AsRawFd;
    let mut byte = [0u8; 1];
    matches!(recv(tcp.as_raw_fd(), &mut byte, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT), Err(nix::errno::Errno::EAGAIN))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh_frames::Role;
    use crate::mesh_tls::tests::{bounded, mesh_pair};
    use crate::mesh_tls::MeshServer;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A client connection whose first stream ran to its end both ways, and its server.
    async fn finished() -> (Box<MeshClient<TcpStream>>, MeshServer<TcpStream>, Reuse) {
        let (server, client) = crate::mesh_tls::streams_tests::streams_configs();
        let (mut c, mut s) = mesh_pair(&server, &client).await;
        assert!(c.start_streams(Role::Client) && s.start_streams(Role::Server));
        bounded("a stream", async {
            c.write_all(b"q").await.unwrap();
            c.shutdown().await.unwrap();
            assert!(std::future::poll_fn(|cx| s.poll_open(cx)).await.unwrap());
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            s.shutdown().await.unwrap();
            c.read_to_end(&mut got).await.unwrap();
        })
        .await;
        let addr = c.transport().peer_addr().unwrap();
        (Box::new(c), s, Reuse::new(addr, client))
    }

    fn local() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 1))
    }

    #[tokio::test]
    async fn a_finished_connection_is_kept_and_taken_once() {
        let pool = StreamPool::default();
        let (c, _s, reuse) = finished().await;
        let key = reuse.key.clone();
        pool.put(c, reuse, local());
        assert_eq!(pool.len(), 1);
        let (up, _) = pool.take(&key).expect("kept");
        assert_eq!(up.principal.as_deref(), Some("spiffe://cluster.local/ns/default/sa/server"), "read from the connection's peer");
        assert_eq!((up.alpn.as_deref(), up.local), (Some("veil-streams/1"), local()));
        assert!(pool.take(&key).is_none() && pool.len() == 0, "taken once");
    }

    #[tokio::test]
    async fn an_unfinished_or_closed_connection_is_not_reused() {
        let pool = StreamPool::default();
        // A stream still open: not kept.
        let (server, client) = crate::mesh_tls::streams_tests::streams_configs();
        let (mut c, _s) = mesh_pair(&server, &client).await;
        assert!(c.start_streams(Role::Client));
        let addr = c.transport().peer_addr().unwrap();
        pool.put(Box::new(c), Reuse::new(addr, client), local());
        assert_eq!(pool.len(), 0, "a stream not finished is dropped");
        // A kept connection the server closed: found out and dropped.
        let (c, s, reuse) = finished().await;
        let key = reuse.key.clone();
        pool.put(c, reuse, local());
        drop(s);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(pool.take(&key).is_none(), "the server closed it");
        // Control: one the server keeps open is taken.
        let (c, _s, reuse) = finished().await;
        let key = reuse.key.clone();
        pool.put(c, reuse, local());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(pool.take(&key).is_some());
    }
}
