//! Shared helpers for the integration tests: a CA in a temp directory, loopback TLS
//! handshakes with tokio-rustls, and a loopback CA gRPC server.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use veil_identity::{
    peer_spiffe_id, BootstrapTokens, CaClientConfig, CaService, CertificateAuthority, SpiffeId,
    TrustDomain, WorkloadCertificate,
};

/// Upper bound for any single network step in a test.
pub const STEP: Duration = Duration::from_secs(10);
pub const SERVER_NAME: &str = "istiod.istio-system.svc";

pub fn new_ca() -> (tempfile::TempDir, CertificateAuthority) {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::load_or_create(dir.path(), TrustDomain::default()).unwrap();
    (dir, ca)
}

pub fn id(sa: &str) -> SpiffeId {
    SpiffeId::new(&TrustDomain::default(), "default", sa)
}

pub fn valid_cert(ca: &CertificateAuthority, sa: &str) -> WorkloadCertificate {
    let now = SystemTime::now();
    ca.issue_for_test(
        &id(sa),
        now - Duration::from_secs(60),
        now + Duration::from_secs(3600),
    )
    .unwrap()
}

pub fn expired_cert(ca: &CertificateAuthority, sa: &str) -> WorkloadCertificate {
    let now = SystemTime::now();
    ca.issue_for_test(
        &id(sa),
        now - Duration::from_secs(7200),
        now - Duration::from_secs(3600),
    )
    .unwrap()
}

/// What each side of a loopback handshake saw.
pub struct Outcome {
    /// Server: the client's SPIFFE ID and the negotiated ALPN, or the error text.
    pub server: Result<(SpiffeId, Vec<u8>), String>,
    /// Client: the negotiated ALPN once the server's reply arrived, or the error text.
    pub client: Result<Vec<u8>, String>,
}

/// One TLS handshake over real TCP on 127.0.0.1; the server answers "ok" after verifying.
pub async fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = tokio_rustls::TlsAcceptor::from(server)
            .accept(tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (_, conn) = tls.get_ref();
        let certs = conn
            .peer_certificates()
            .ok_or("no peer certificates")?
            .to_vec();
        let peer = peer_spiffe_id(&certs).map_err(|e| e.to_string())?;
        let alpn = conn.alpn_protocol().unwrap_or_default().to_vec();
        tls.write_all(b"ok").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((peer, alpn))
    });
    let client_result = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        // SNI is only a routing hint in the mesh; a name unrelated to the certificate on purpose.
        let name = ServerName::try_from("outbound.unrelated.example").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let alpn = tls.get_ref().1.alpn_protocol().unwrap_or_default().to_vec();
        let mut reply = [0u8; 2];
        tls.read_exact(&mut reply)
            .await
            .map_err(|e| e.to_string())?;
        if &reply != b"ok" {
            return Err(format!("unexpected reply {reply:?}"));
        }
        Ok(alpn)
    };
    let client = tokio::time::timeout(STEP, client_result)
        .await
        .unwrap_or_else(|_| Err("client timed out".into()));
    let server = match tokio::time::timeout(STEP, server_task).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(join.to_string()),
        Err(_) => Err("server timed out".into()),
    };
    Outcome { server, client }
}

/// A running CA gRPC server on 127.0.0.1.
pub struct CaServer {
    pub dir: tempfile::TempDir,
    pub ca: Arc<CertificateAuthority>,
    pub tokens: Arc<BootstrapTokens>,
    pub addr: SocketAddr,
    pub task: tokio::task::JoinHandle<()>,
}

impl CaServer {
    pub async fn start(max_ttl: Duration) -> Self {
        let (dir, ca) = new_ca();
        let ca = Arc::new(ca);
        let tokens = Arc::new(BootstrapTokens::default());
        let serving = ca
            .issue_server_certificate(&[SERVER_NAME.to_string()], Duration::from_secs(3600))
            .unwrap();
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(serving.chain_pem(), serving.key_pem()))
            .client_ca_root(Certificate::from_pem(ca.root_pem()))
            .client_auth_optional(true);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(CaService::new(ca.clone(), tokens.clone(), max_ttl).into_server());
        let task = tokio::spawn(async move {
            let _ = router
                .serve_with_incoming(TcpIncoming::from(listener))
                .await;
        });
        Self {
            dir,
            ca,
            tokens,
            addr,
            task,
        }
    }

    pub fn client_config(&self) -> CaClientConfig {
        CaClientConfig {
            address: format!("https://{}", self.addr),
            server_name: SERVER_NAME.to_string(),
            root_pem: self.ca.root_pem(),
        }
    }
}

impl Drop for CaServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
