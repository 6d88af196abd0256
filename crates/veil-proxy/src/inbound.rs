//! Inbound (15006): connections to the workload, redirected by iptables.
//!
//! The original destination port selects `(MtlsMode, Protocol)` from the
//! config, and the mode decides, as Istio's inbound filter chains do
//! (`BuildInboundTLS`, spec §1.1):
//! - STRICT: only mesh mTLS; plaintext and non-mesh TLS are refused and logged.
//! - PERMISSIVE: mesh mTLS is terminated; other TLS passes through untouched;
//!   plaintext passes through. Server-first protocols are never stalled
//!   (spec §1.10): a declared opaque port connects the application at once and
//!   races the first bytes; an undeclared port waits at most
//!   `sniff_timeout_ms` for the client.
//! - DISABLE: bytes pass to the application as they are.

use crate::mesh_frames::Role;
use crate::mesh_tls::MeshServer;
use crate::proxy::Shared;
use crate::records;
use crate::sniff::{classify, FirstBytes};
use crate::upstream::{self, UpstreamError};
use futures::future::{FutureExt, OptionFuture};
use rustls_pki_types::CertificateDer;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::{TcpListener, TcpStream};
use veil_model::{MtlsMode, Protocol, ProxyConfig};

/// How long a declared server-first port waits, after the application spoke
/// first, for a mesh client's ClientHello already in flight (ms).
const SERVER_FIRST_GRACE_MS: u64 = 20;

/// Why an inbound connection was refused (security refusals, logged with
/// the peer address, port and mode) or could not be served.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    #[error("plaintext connection to STRICT port {port} refused: mesh mTLS required")]
    PlaintextToStrict { port: u16 },
    #[error("TLS connection without an istio ALPN (offered {alpn:?}) to STRICT port {port} refused: mesh mTLS required")]
    NonMeshTls { port: u16, alpn: Vec<String> },
    #[error("client sent nothing within {ms} ms on STRICT port {port} (a plaintext client of a server-first protocol such as MySQL waits for the server): refused, mesh mTLS required")]
    NoClientHello { port: u16, ms: u128 },
    #[error("mesh mTLS handshake on port {port} failed: {source}; the client must present a certificate issued by the mesh CA")]
    Handshake { port: u16, source: std::io::Error },
    #[error("mesh mTLS handshake on port {port} timed out after {ms} ms")]
    HandshakeTimeout { port: u16, ms: u128 },
    #[error("client certificate on port {port} carries no SPIFFE ID: refused")]
    NoPeerIdentity { port: u16 },
    #[error("mesh mTLS session on port {port}, resumed or kept for another stream, carries a client certificate that has expired since: refused; the client must renew its certificate and connect again")]
    ExpiredResumedCertificate { port: u16 },
    #[error("stream on a kept mesh connection to port {port}, now mTLS DISABLE: refused (the connection is closed; the client's next connection follows the port's mode)")]
    StreamToDisabled { port: u16 },
    #[error("connection addressed to the inbound capture port {port} itself (not redirected): refused")]
    CapturePort { port: u16 },
    #[error("cannot reach the application on port {port}: {source}; check that the application listens there")]
    App { port: u16, source: UpstreamError },
    #[error("{0}")]
    Config(#[from] crate::ProxyError),
}

impl InboundError {
    /// True for security refusals (as opposed to failures to reach the app).
    pub fn is_refusal(&self) -> bool {
        !matches!(self, InboundError::App { .. } | InboundError::Config(_))
    }
}

/// One accepted inbound connection and what was decided about it.
struct Conn<'a> {
    shared: &'a Shared,
    config: Arc<ProxyConfig>,
    peer: SocketAddr,
    dst: SocketAddr,
    start_ms: u64,
}

/// Accepts inbound connections until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = crate::proxy::accept(&listener).await;
        tokio::spawn(handle(shared.clone(), stream, peer));
    }
}

/// One connection. Deciding what it is, the handshake and connecting the
/// application run in a boxed future that is freed once the bytes can flow,
/// so that an idle connection's task holds only its [`Forward`] and the
/// copy's state (a 384-byte task instead of 1.6 KiB). Combinators, not an
/// `async fn`: an `async fn` keeps its arguments and moved-from locals in
/// the task for the connection's life.
fn handle(shared: Arc<Shared>, downstream: TcpStream, peer: SocketAddr) -> impl Future<Output = ()> {
    let admitted = Box::pin(async move {
        let forward = admit(&shared, downstream, peer).await;
        forward.map(|forward| (forward, shared))
    });
    admitted.then(|forward| OptionFuture::from(forward.map(|(forward, shared)| serve_streams(forward, shared)))).map(drop)
}

/// A connection whose bytes are copied between the client and the application.
struct Forward {
    downstream: Downstream,
    app: TcpStream,
    peer: SocketAddr,
    dst: SocketAddr,
}

/// The client's side of a forwarded connection.
enum Downstream {
    /// Mesh mTLS, terminated here.
    Mesh(Box<MeshServer<TcpStream>>),
    /// Plaintext, or TLS passed through.
    Plain(TcpStream),
}

/// Decides what `downstream` is and prepares its forwarding by its port's
/// mode (module doc); `None` when it was refused (logged), failed, or
/// closed.
async fn admit(shared: &Shared, downstream: TcpStream, peer: SocketAddr) -> Option<Forward> {
    let _ = downstream.set_nodelay(true);
    let dst = crate::orig_dst::original_dst(&downstream)?;
    let port = dst.port();
    let config = shared.config();
    let (mode, protocol) = config.inbound.port(port);
    let conn = Conn { shared, config: config.clone(), peer, dst, start_ms: records::now_ms() };
    let result = if port == shared.local.inbound.port() {
        Err(InboundError::CapturePort { port })
    } else {
        match mode {
            MtlsMode::Strict => strict(&conn, downstream).await,
            MtlsMode::Permissive => permissive(&conn, downstream, protocol).await,
            MtlsMode::Disable => forward_plain(&conn, downstream, None, "plaintext").await,
        }
    };
    match result {
        Ok(accepted) => accepted,
        Err(e) if e.is_refusal() => {
            tracing::warn!(%peer, port, %mode, "inbound connection from {peer} refused: {e}");
            None
        }
        Err(e) => {
            tracing::warn!(%peer, port, %mode, "inbound connection from {peer} failed: {e}");
            None
        }
    }
}

async fn strict(conn: &Conn<'_>, downstream: TcpStream) -> Result<Option<Forward>, InboundError> {
    let port = conn.dst.port();
    // A mesh client sends its ClientHello as soon as TCP connects, so a
    // client silent for a second is a plaintext (server-first) client:
    // refuse it then, with the reason, instead of holding it open.
    let silent_after = Duration::from_millis(conn.config.inbound.sniff_timeout_ms.max(1000));
    let timeout = silent_after.min(conn.shared.settings.handshake_timeout);
    match classify(&downstream, timeout).await {
        FirstBytes::MeshTls { .. } => {}
        FirstBytes::Plaintext => return Err(InboundError::PlaintextToStrict { port }),
        FirstBytes::OtherTls { alpn } => return Err(InboundError::NonMeshTls { port, alpn }),
        FirstBytes::Silent => return Err(InboundError::NoClientHello { port, ms: timeout.as_millis() }),
        FirstBytes::Closed => return Ok(None),
    }
    let tls = terminate(conn, downstream).await?;
    forward_mesh(conn, tls, None).await
}

async fn permissive(conn: &Conn<'_>, downstream: TcpStream, protocol: Protocol) -> Result<Option<Forward>, InboundError> {
    if protocol.is_declared_opaque() {
        // Server-first safe: the app is connected before any client byte.
        let app = connect_app(conn).await?;
        let (mut client_byte, mut app_byte) = ([0u8; 1], [0u8; 1]);
        // `peek`, not `readable`: readiness may be spurious, a peeked byte (or EOF) is not.
        let client_first = tokio::select! {
            biased;
            _ = downstream.peek(&mut client_byte) => true,
            _ = app.peek(&mut app_byte) => false,
        };
        if !client_first {
            // The app spoke first. A mesh client's ClientHello may still be
            // in flight (it is sent as soon as TCP connects), so give it a
            // few milliseconds before calling the client plaintext; a
            // plaintext server-first client sees the greeting that much later.
            let grace = Duration::from_millis(conn.config.inbound.sniff_timeout_ms.min(SERVER_FIRST_GRACE_MS));
            if tokio::time::timeout(grace, downstream.peek(&mut client_byte)).await.is_err() {
                return forward_plain(conn, downstream, Some(app), "plaintext").await;
            }
        }
        return sniff_and_forward(conn, downstream, Some(app)).await;
    }
    let wait = if protocol == Protocol::Unknown {
        Duration::from_millis(conn.config.inbound.sniff_timeout_ms)
    } else {
        conn.shared.settings.handshake_timeout
    };
    let mut first = [0u8; 1];
    match tokio::time::timeout(wait, downstream.peek(&mut first)).await {
        // A silent client: plaintext, possibly server-first; pass through now.
        Err(_) => forward_plain(conn, downstream, None, "plaintext").await,
        Ok(_) => sniff_and_forward(conn, downstream, None).await,
    }
}

async fn sniff_and_forward(conn: &Conn<'_>, downstream: TcpStream, app: Option<TcpStream>) -> Result<Option<Forward>, InboundError> {
    match classify(&downstream, conn.shared.settings.handshake_timeout).await {
        FirstBytes::MeshTls { .. } => {
            let tls = terminate(conn, downstream).await?;
            forward_mesh(conn, tls, app).await
        }
        FirstBytes::OtherTls { .. } => forward_plain(conn, downstream, app, "tls-passthrough").await,
        FirstBytes::Plaintext | FirstBytes::Silent | FirstBytes::Closed => {
            forward_plain(conn, downstream, app, "plaintext").await
        }
    }
}

/// The mesh mTLS handshake; returns the stream and the client's SPIFFE ID.
/// The stream is a [`MeshServer`] (no buffer while idle, large reads in a
/// bulk upload); the sniffer only peeked, so the handshake reads the
/// ClientHello from the socket. The stream is boxed: a connection's task
/// keeps a pointer.
/// A resumed session reports the chain verified in its full handshake (the
/// session cache bounds its age, `veil_identity::SESSION_TTL`); its leaf
/// must not have expired since.
async fn terminate(conn: &Conn<'_>, downstream: TcpStream) -> Result<(Box<MeshServer<TcpStream>>, String), InboundError> {
    let port = conn.dst.port();
    let server = conn.shared.tls.server_streams()?;
    let timeout = conn.shared.settings.handshake_timeout;
    let tls = match tokio::time::timeout(timeout, MeshServer::accept(downstream, server)).await {
        Err(_) => return Err(InboundError::HandshakeTimeout { port, ms: timeout.as_millis() }),
        Ok(Err(source)) => return Err(InboundError::Handshake { port, source }),
        Ok(Ok(tls)) => tls,
    };
    let resumed = tls.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let principal = client_principal(tls.peer_certificates().unwrap_or_default(), port, resumed)?;
    let mut tls = Box::new(tls);
    let streams = tls.start_streams(Role::Server);
    tracing::debug!(peer = %conn.peer, port, resumed, streams, "mesh mTLS accepted");
    Ok((tls, principal))
}

/// The client's SPIFFE ID from its verified `certs` (leaf first). When the
/// chain was verified before this connection or stream (`verified_earlier`:
/// a resumed session, a kept connection's next stream), its leaf must not
/// have expired since.
///
/// Errors: [`InboundError::NoPeerIdentity`],
/// [`InboundError::ExpiredResumedCertificate`].
pub(crate) fn client_principal(certs: &[CertificateDer<'_>], port: u16, verified_earlier: bool) -> Result<String, InboundError> {
    let leaf = peer_leaf(certs);
    if verified_earlier && leaf.as_ref().is_none_or(|l| l.expired(SystemTime::now())) {
        return Err(InboundError::ExpiredResumedCertificate { port });
    }
    leaf.and_then(|l| l.spiffe_id.clone()).ok_or(InboundError::NoPeerIdentity { port })
}

/// What a peer's leaf certificate says, read once per distinct certificate:
/// every connection of a peer (resumed ones too) reports the same leaf.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PeerLeaf {
    /// Its one SPIFFE ID; `None` when it carries none, or several.
    pub(crate) spiffe_id: Option<String>,
    /// `notAfter`, Unix seconds; `None` when it cannot be parsed.
    pub(crate) not_after: Option<i64>,
}

impl PeerLeaf {
    /// True when it is past its `notAfter` at `now`, or cannot be read.
    pub(crate) fn expired(&self, now: SystemTime) -> bool {
        let now = now.duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)).unwrap_or(0);
        self.not_after.is_none_or(|not_after| not_after < now)
    }
}

/// Distinct leaves kept before the cache is emptied.
const MAX_PEER_LEAVES: usize = 1024;

/// The [`PeerLeaf`] of the first of `certs` (as rustls reports them, leaf
/// first, after verifying the chain); `None` for no certificate. Parsed
/// once per distinct leaf (a process-wide cache keyed by its DER bytes).
pub(crate) fn peer_leaf(certs: &[CertificateDer<'_>]) -> Option<Arc<PeerLeaf>> {
    static CACHE: OnceLock<Mutex<HashMap<Vec<u8>, Arc<PeerLeaf>>>> = OnceLock::new();
    let der = certs.first()?.as_ref();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(found) = cache.lock().unwrap_or_else(PoisonError::into_inner).get(der) {
        return Some(found.clone());
    }
    let leaf = Arc::new(PeerLeaf {
        spiffe_id: veil_identity::peer_spiffe_id(certs).ok().map(|id| id.to_string()),
        not_after: x509_parser::parse_x509_certificate(der).ok().map(|(_, cert)| cert.validity().not_after.timestamp()),
    });
    let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
    if cache.len() >= MAX_PEER_LEAVES {
        cache.clear();
    }
    cache.insert(der.to_vec(), leaf.clone());
    Some(leaf)
}

/// True when the first certificate of `certs` is past its `notAfter` at
/// `now`, or cannot be read.
#[cfg(test)]
fn leaf_expired(certs: &[CertificateDer<'_>], now: SystemTime) -> bool {
    peer_leaf(certs).is_none_or(|leaf| leaf.expired(now))
}

async fn connect_app(conn: &Conn<'_>) -> Result<TcpStream, InboundError> {
    let port = conn.dst.port();
    let addr = SocketAddr::new(conn.shared.settings.app_host, port);
    upstream::connect_tcp(conn.shared, addr).await.map_err(|source| InboundError::App { port, source })
}

async fn forward_mesh(
    conn: &Conn<'_>,
    (mut tls, principal): (Box<MeshServer<TcpStream>>, String),
    app: Option<TcpStream>,
) -> Result<Option<Forward>, InboundError> {
    if tls.carries_streams() {
        // The application is connected for a stream, once the client opened it.
        let port = conn.dst.port();
        let timeout = conn.shared.settings.handshake_timeout;
        match tokio::time::timeout(timeout, std::future::poll_fn(|cx| tls.poll_open(cx))).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return Ok(None),
            Ok(Err(source)) => return Err(InboundError::Handshake { port, source }),
            Err(_) => return Err(InboundError::HandshakeTimeout { port, ms: timeout.as_millis() }),
        }
    }
    let app = match app {
        Some(app) => app,
        None => connect_app(conn).await?,
    };
    let mut record = records::record("inbound", &conn.config.node.pod, conn.peer, conn.dst, conn.start_ms);
    record.security = "mesh-mtls".to_string();
    record.alpn = tls.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned());
    record.source_principal = Some(principal);
    record.destination_principal = Some(conn.config.node.spiffe_id.clone());
    conn.shared.records.send(record);
    Ok(Some(Forward { downstream: Downstream::Mesh(tls), app, peer: conn.peer, dst: conn.dst }))
}

async fn forward_plain(
    conn: &Conn<'_>,
    downstream: TcpStream,
    app: Option<TcpStream>,
    security: &str,
) -> Result<Option<Forward>, InboundError> {
    let app = match app {
        Some(app) => app,
        None => connect_app(conn).await?,
    };
    let mut record = records::record("inbound", &conn.config.node.pod, conn.peer, conn.dst, conn.start_ms);
    record.security = security.to_string();
    conn.shared.records.send(record);
    Ok(Some(Forward { downstream: Downstream::Plain(downstream), app, peer: conn.peer, dst: conn.dst }))
}

#[path = "inbound_streams.rs"]
mod streams;
use streams::serve_streams;

#[cfg(test)]
mod tests {
    use super::*;
    use veil_identity::{CertificateAuthority, SpiffeId, TrustDomain};

    #[test]
    fn an_expired_leaf_is_told_from_a_valid_one() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path(), TrustDomain::default()).unwrap();
        let id = SpiffeId::new(&TrustDomain::default(), "default", "productpage");
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        let valid = ca.issue_for_test(&id, now - hour, now + hour).unwrap();
        assert!(!leaf_expired(&valid.chain, now), "control: a valid leaf");
        assert!(leaf_expired(&valid.chain, now + 2 * hour), "the same leaf two hours later");
        let expired = ca.issue_for_test(&id, now - 2 * hour, now - hour).unwrap();
        assert!(leaf_expired(&expired.chain, now));
        assert!(leaf_expired(&[], now), "no certificate");
    }

    #[test]
    fn an_idle_connection_task_holds_its_streams_and_copy_state_only() {
        use crate::test_support::{assert_task_fits, future_size};
        assert_task_fits(future_size(handle), future_size::<&'static Shared, _, _, _>(admit), "the admission");
    }

    #[test]
    fn a_peer_leaf_is_read_once_per_distinct_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path(), TrustDomain::default()).unwrap();
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        let (a, b) = (SpiffeId::new(&TrustDomain::default(), "shop", "a"), SpiffeId::new(&TrustDomain::default(), "shop", "b"));
        let (cert_a, cert_b) = (ca.issue_for_test(&a, now - hour, now + hour).unwrap(), ca.issue_for_test(&b, now - hour, now + hour).unwrap());
        let first = peer_leaf(&cert_a.chain).unwrap();
        assert_eq!(first.spiffe_id, Some(a.to_string()));
        assert!(Arc::ptr_eq(&first, &peer_leaf(&cert_a.chain).unwrap()), "the second read comes from the cache");
        let other = peer_leaf(&cert_b.chain).unwrap();
        assert_eq!(other.spiffe_id, Some(b.to_string()), "control: another certificate is read on its own");
        assert!(peer_leaf(&[]).is_none());
    }
}
