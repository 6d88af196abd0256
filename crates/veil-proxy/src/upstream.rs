//! Connecting to an endpoint: endpoint choice (round robin per service),
//! TCP connect with a timeout, and TLS per [`UpstreamTls`]: mesh mTLS
//! (TLS 1.3, ALPN `istio`, the SNI the config names, the server's SPIFFE ID
//! checked against the allowed identities), or TLS origination for a
//! DestinationRule SIMPLE / MUTUAL (server verified against the rule's CA
//! and SANs, client certificate for MUTUAL; from files or from the Secret
//! of its `credentialName`). When a SIMPLE origination's
//! server asks for a client certificate, that is logged: a server that
//! requires one (nginx `ssl_verify_client on`) refuses the request next.

use crate::mesh_frames::Role;
use crate::mesh_tls::MeshClient;
use crate::stream_pool::{PoolKey, Reuse};
use crate::proxy::Shared;
use crate::tls::Origination;
use rustls_pki_types::ServerName;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use veil_model::{Endpoint, OutboundService, UpstreamTls};

/// Why no usable upstream connection was made (each message names the
/// address or service and what to check).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("service {host}:{port} has no endpoints; check that its workloads are running and registered")]
    NoEndpoint { host: String, port: u16 },
    #[error("no service {host}:{port} in this proxy's config; check the route's destination host and port")]
    UnknownService { host: String, port: u16 },
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("connect to {addr} timed out after {ms} ms")]
    ConnectTimeout { addr: SocketAddr, ms: u128 },
    #[error("{0}")]
    Config(#[from] crate::ProxyError),
    #[error("SNI {sni:?} is not a valid server name")]
    Sni { sni: String },
    #[error("mesh mTLS handshake with {addr} failed: {source}; the server must present a mesh certificate with one of the identities {allowed:?}")]
    Handshake { addr: SocketAddr, allowed: Vec<String>, source: io::Error },
    #[error("mesh mTLS handshake with {addr} timed out after {ms} ms")]
    HandshakeTimeout { addr: SocketAddr, ms: u128 },
    #[error("cannot originate TLS to {addr}: {reason}")]
    OriginationConfig { addr: SocketAddr, reason: String },
    #[error("TLS origination handshake with {addr} failed: {source}; check the DestinationRule's caCertificates, subjectAltNames or sni, and its client certificate for MUTUAL")]
    OriginationHandshake { addr: SocketAddr, source: io::Error },
}

/// Round-robin position per service, by a hash of its hostname and port (a
/// collision only shares a counter).
#[derive(Default)]
pub(crate) struct Balancer {
    next: Mutex<HashMap<u64, usize>>,
}

impl Balancer {
    /// The next endpoint of `service`, or `None` when it has none.
    pub(crate) fn pick<'s>(&self, service: &'s OutboundService) -> Option<&'s Endpoint> {
        let count = service.endpoints.len();
        if count <= 1 {
            return service.endpoints.first();
        }
        let mut hasher = DefaultHasher::new();
        (&service.hostname, service.port).hash(&mut hasher);
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = next.entry(hasher.finish()).or_insert(0);
        let index = *slot % count;
        *slot = index.wrapping_add(1);
        service.endpoints.get(index)
    }
}

/// A stream to an endpoint: plain TCP, mesh mTLS, or originated TLS.
pub(crate) enum UpstreamStream {
    Plain(TcpStream),
    Mesh(Box<MeshClient<TcpStream>>),
    Originated(Box<TlsStream<TcpStream>>),
}

/// A connected upstream and what the record needs to know about it.
pub(crate) struct Upstream {
    pub(crate) stream: UpstreamStream,
    /// The proxy's own socket address of the connection.
    pub(crate) local: SocketAddr,
    /// The endpoint address.
    pub(crate) peer: SocketAddr,
    /// Verified SPIFFE ID of the server (mesh mTLS only).
    pub(crate) principal: Option<String>,
    pub(crate) alpn: Option<String>,
}

impl Upstream {
    /// `mesh-mtls`, `tls` (originated) or `plaintext`.
    pub(crate) fn security(&self) -> &'static str {
        match self.stream {
            UpstreamStream::Plain(_) => "plaintext",
            UpstreamStream::Mesh(_) => "mesh-mtls",
            UpstreamStream::Originated(_) => "tls",
        }
    }
}

/// TCP connect bounded by the proxy's connect timeout.
pub(crate) async fn connect_tcp(shared: &Shared, addr: SocketAddr) -> Result<TcpStream, UpstreamError> {
    let timeout = shared.settings.connect_timeout;
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => Err(UpstreamError::ConnectTimeout { addr, ms: timeout.as_millis() }),
        Ok(Err(source)) => Err(UpstreamError::Connect { addr, source }),
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
    }
}

/// The service named `host:port` and one of its endpoints.
pub(crate) fn resolve(shared: &Shared, host: &str, port: u16) -> Result<Endpoint, UpstreamError> {
    let config = shared.config();
    let service = config
        .outbound
        .services
        .iter()
        .find(|s| s.hostname == host && s.port == port)
        .ok_or_else(|| UpstreamError::UnknownService { host: host.to_string(), port })?;
    shared
        .balancer
        .pick(service)
        .cloned()
        .ok_or_else(|| UpstreamError::NoEndpoint { host: host.to_string(), port })
}

/// Connects to `endpoint` as its [`UpstreamTls`] says.
pub(crate) async fn connect(shared: &Shared, endpoint: &Endpoint) -> Result<Upstream, UpstreamError> {
    let addr = SocketAddr::new(endpoint.ip, endpoint.port);
    let (identities, sni) = match &endpoint.tls {
        UpstreamTls::IstioMutual { identities, sni } => (identities, sni),
        UpstreamTls::Unsupported { reason } => {
            return Err(UpstreamError::OriginationConfig { addr, reason: reason.clone() });
        }
        _ => return connect_other(shared, endpoint, addr).await,
    };
    let client = shared.tls.client(identities)?;
    mesh(shared, addr, client, identities, sni).await
}

/// [`connect`] for a connection forwarded as bytes: a mesh endpoint is
/// reached over a kept connection to it when there is one
/// (`stream_pool`), else over a new one that offers streams one after
/// another (`mesh_frames`); the [`Reuse`] is given when the connection
/// carries streams and may go back to the pool after this one.
pub(crate) async fn connect_reusing(shared: &Shared, endpoint: &Endpoint) -> Result<(Upstream, Option<Reuse>), UpstreamError> {
    let (UpstreamTls::IstioMutual { identities, sni }, true) = (&endpoint.tls, shared.settings.mesh_streams) else {
        return connect(shared, endpoint).await.map(|up| (up, None));
    };
    let addr = SocketAddr::new(endpoint.ip, endpoint.port);
    let client = shared.tls.client_streams(identities)?;
    if let Some((upstream, reuse)) = shared.streams.take(&PoolKey::of(addr, &client)) {
        tracing::debug!(%addr, "mesh connection reused for the next stream");
        return Ok((upstream, Some(reuse)));
    }
    let mut upstream = mesh(shared, addr, client.clone(), identities, sni).await?;
    let streams = match &mut upstream.stream {
        UpstreamStream::Mesh(tls) => tls.start_streams(Role::Client),
        _ => false,
    };
    Ok((upstream, streams.then(|| Reuse::new(addr, client))))
}

/// Plain TCP (`tls` DISABLE) or TLS origination to `endpoint`.
async fn connect_other(shared: &Shared, endpoint: &Endpoint, addr: SocketAddr) -> Result<Upstream, UpstreamError> {
    let tcp = connect_tcp(shared, addr).await?;
    let local = tcp.local_addr().map_err(|source| UpstreamError::Connect { addr, source })?;
    match &endpoint.tls {
        UpstreamTls::Disable => Ok(Upstream { stream: UpstreamStream::Plain(tcp), local, peer: addr, principal: None, alpn: None }),
        other => originate(shared, other, tcp, addr, local).await,
    }
}

/// Mesh mTLS to `addr` with `client` (whose verifier holds `identities`), SNI `sni`.
async fn mesh(shared: &Shared, addr: SocketAddr, client: Arc<rustls::ClientConfig>, identities: &[String], sni: &str) -> Result<Upstream, UpstreamError> {
    let tcp = connect_tcp(shared, addr).await?;
    let local = tcp.local_addr().map_err(|source| UpstreamError::Connect { addr, source })?;
    let name = ServerName::try_from(sni.to_string()).map_err(|_| UpstreamError::Sni { sni: sni.to_string() })?;
    let timeout = shared.settings.handshake_timeout;
    let tls = match tokio::time::timeout(timeout, MeshClient::connect(tcp, client, name)).await {
        Err(_) => return Err(UpstreamError::HandshakeTimeout { addr, ms: timeout.as_millis() }),
        Ok(Err(source)) => return Err(UpstreamError::Handshake { addr, allowed: identities.to_vec(), source }),
        Ok(Ok(tls)) => tls,
    };
    let resumed = tls.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    tracing::debug!(%local, %addr, resumed, "mesh mTLS connected");
    Ok(mesh_upstream(Box::new(tls), local, addr))
}

/// A mesh connection as an [`Upstream`]: the server's SPIFFE ID and the
/// ALPN as its handshake settled them (the peer's leaf is parsed once, see
/// `inbound::peer_leaf`).
pub(crate) fn mesh_upstream(tls: Box<MeshClient<TcpStream>>, local: SocketAddr, peer: SocketAddr) -> Upstream {
    let principal = crate::inbound::peer_leaf(tls.peer_certificates().unwrap_or_default()).and_then(|leaf| leaf.spiffe_id.clone());
    let alpn = tls.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned());
    Upstream { stream: UpstreamStream::Mesh(tls), local, peer, principal, alpn }
}

/// TLS origination (DestinationRule SIMPLE / MUTUAL) over `tcp`.
async fn originate(
    shared: &Shared,
    tls: &UpstreamTls,
    tcp: TcpStream,
    addr: SocketAddr,
    local: SocketAddr,
) -> Result<Upstream, UpstreamError> {
    let Some((origination, sni)) = Origination::of(tls) else {
        return Err(UpstreamError::OriginationConfig { addr, reason: "not a TLS origination setting".into() });
    };
    let client = shared.tls.origination(&origination).map_err(|reason| UpstreamError::OriginationConfig { addr, reason })?;
    let asked = Arc::new(AtomicBool::new(false));
    let client = match origination.client {
        Some(_) => client,
        None => {
            let mut config = (*client).clone();
            let inner = config.client_auth_cert_resolver.clone();
            config.client_auth_cert_resolver = Arc::new(CertificateRequested { inner, asked: asked.clone() });
            Arc::new(config)
        }
    };
    let name = match sni {
        Some(sni) => ServerName::try_from(sni.clone()).map_err(|_| UpstreamError::Sni { sni })?,
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let timeout = shared.settings.handshake_timeout;
    let tls = match tokio::time::timeout(timeout, TlsConnector::from(client).connect(name, tcp)).await {
        Err(_) => return Err(UpstreamError::HandshakeTimeout { addr, ms: timeout.as_millis() }),
        Ok(Err(source)) => return Err(UpstreamError::OriginationHandshake { addr, source }),
        Ok(Ok(tls)) => tls,
    };
    if asked.load(Ordering::Relaxed) {
        tracing::warn!(%addr, "TLS origination to {addr}: the server asked for a client certificate and the DestinationRule (tls mode SIMPLE) gives none; a server that requires one refuses the request (nginx answers 400); use tls mode MUTUAL with clientCertificate and privateKey (or a credentialName Secret with tls.crt and tls.key)");
    }
    let alpn = tls.get_ref().1.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned());
    Ok(Upstream { stream: UpstreamStream::Originated(Box::new(tls)), local, peer: addr, principal: None, alpn })
}

/// Answers a server's certificate request as `inner` does, and notes that
/// the request came.
#[derive(Debug)]
struct CertificateRequested {
    inner: Arc<dyn rustls::client::ResolvesClientCert>,
    asked: Arc<AtomicBool>,
}

impl rustls::client::ResolvesClientCert for CertificateRequested {
    fn resolve(&self, hints: &[&[u8]], schemes: &[rustls::SignatureScheme]) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.asked.store(true, Ordering::Relaxed);
        self.inner.resolve(hints, schemes)
    }

    fn has_certs(&self) -> bool {
        self.inner.has_certs()
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Mesh(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            UpstreamStream::Originated(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Mesh(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            UpstreamStream::Originated(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Mesh(s) => Pin::new(s.as_mut()).poll_flush(cx),
            UpstreamStream::Originated(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Mesh(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            UpstreamStream::Originated(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
