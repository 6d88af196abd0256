//! TLS 1.3 session resumption between mesh configs, over real TCP on 127.0.0.1: a resumed
//! connection still carries the client's verified identity, and a client never resumes
//! with a config built for other allowed identities or after the server's config changed.

mod common;

use std::sync::Arc;

use common::{id, new_ca, valid_cert, STEP};
use rustls::{CipherSuite, HandshakeKind};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use veil_identity::{mesh_client_config, mesh_server_config, peer_spiffe_id, SpiffeId};

/// What one connection saw on each side.
#[derive(Debug)]
struct Seen {
    /// Server: handshake kind and the client's SPIFFE ID from `peer_certificates()`.
    server: Result<(HandshakeKind, SpiffeId), String>,
    /// Client: handshake kind, the server's SPIFFE ID, and the suite.
    client: Result<(HandshakeKind, SpiffeId, CipherSuite), String>,
}

/// One connection: handshake, the server sends "ok", the client reads it (which also
/// reads the session tickets sent after the handshake), both close.
async fn connect(server: Arc<rustls::ServerConfig>, client: Arc<rustls::ClientConfig>) -> Seen {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = tokio_rustls::TlsAcceptor::from(server).accept(tcp).await.map_err(|e| e.to_string())?;
        let (_, conn) = tls.get_ref();
        let kind = conn.handshake_kind().ok_or("no handshake kind")?;
        let peer = peer_spiffe_id(conn.peer_certificates().ok_or("no peer certificates")?).map_err(|e| e.to_string())?;
        tls.write_all(b"ok").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((kind, peer))
    });
    let client_side = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from("outbound_.9080_._.reviews.default.svc.cluster.local").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(client).connect(name, tcp).await.map_err(|e| e.to_string())?;
        let mut reply = Vec::new();
        tls.read_to_end(&mut reply).await.map_err(|e| e.to_string())?;
        if reply != b"ok" {
            return Err(format!("unexpected reply {reply:?}"));
        }
        let (_, conn) = tls.get_ref();
        let kind = conn.handshake_kind().ok_or("no handshake kind")?;
        let peer = peer_spiffe_id(conn.peer_certificates().ok_or("no peer certificates")?).map_err(|e| e.to_string())?;
        let suite = conn.negotiated_cipher_suite().ok_or("no suite")?.suite();
        Ok((kind, peer, suite))
    };
    let client = tokio::time::timeout(STEP, client_side).await.unwrap_or_else(|_| Err("client timed out".into()));
    let server = match tokio::time::timeout(STEP, server_task).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(join.to_string()),
        Err(_) => Err("server timed out".into()),
    };
    Seen { server, client }
}

#[tokio::test]
async fn a_resumed_connection_keeps_both_verified_identities() {
    let (_dir, ca) = new_ca();
    let bundle = ca.trust_bundle();
    let server = mesh_server_config(&valid_cert(&ca, "reviews"), &bundle).unwrap();
    let client = mesh_client_config(&valid_cert(&ca, "productpage"), &bundle, &[id("reviews")]).unwrap();

    let first = connect(server.clone(), client.clone()).await;
    let (kind, peer) = first.server.expect("first connection, server");
    assert_eq!(kind, HandshakeKind::Full, "control: the first connection has nothing to resume");
    assert_eq!(peer, id("productpage"));
    let (kind, server_id, suite) = first.client.expect("first connection, client");
    assert_eq!(kind, HandshakeKind::Full);
    assert_eq!(server_id, id("reviews"));
    assert_eq!(suite, CipherSuite::TLS13_AES_128_GCM_SHA256);

    for n in 0..3 {
        let again = connect(server.clone(), client.clone()).await;
        let (kind, peer) = again.server.expect("resumed connection, server");
        assert_eq!(kind, HandshakeKind::Resumed, "connection {n}");
        assert_eq!(peer, id("productpage"), "the client's identity survives resumption");
        let (kind, server_id, _) = again.client.expect("resumed connection, client");
        assert_eq!(kind, HandshakeKind::Resumed);
        assert_eq!(server_id, id("reviews"), "the server's identity survives resumption");
    }
}

#[tokio::test]
async fn a_config_for_other_identities_never_resumes() {
    let (_dir, ca) = new_ca();
    let bundle = ca.trust_bundle();
    let server = mesh_server_config(&valid_cert(&ca, "reviews"), &bundle).unwrap();
    let cert = valid_cert(&ca, "productpage");
    let allows_reviews = mesh_client_config(&cert, &bundle, &[id("reviews")]).unwrap();
    let first = connect(server.clone(), allows_reviews.clone()).await;
    assert!(first.client.is_ok(), "{:?}", first.client);

    // The same certificate, but a destination that must be `ratings`: the sessions of
    // the other config are not offered, so the full handshake refuses `reviews`.
    let allows_ratings = mesh_client_config(&cert, &bundle, &[id("ratings")]).unwrap();
    let refused = connect(server.clone(), allows_ratings).await;
    let err = refused.client.expect_err("reviews is not an allowed identity");
    assert!(err.contains("reviews"), "{err}");

    // A new config for the same identities starts with its own empty cache.
    let fresh = mesh_client_config(&cert, &bundle, &[id("reviews")]).unwrap();
    let (kind, _, _) = connect(server.clone(), fresh).await.client.expect("fresh config");
    assert_eq!(kind, HandshakeKind::Full);

    // Control: the first config still resumes.
    let (kind, _, _) = connect(server, allows_reviews).await.client.expect("control");
    assert_eq!(kind, HandshakeKind::Resumed);
}

#[tokio::test]
async fn a_rebuilt_server_config_does_not_accept_old_sessions() {
    let (_dir, ca) = new_ca();
    let bundle = ca.trust_bundle();
    let client = mesh_client_config(&valid_cert(&ca, "productpage"), &bundle, &[id("reviews")]).unwrap();
    let before = mesh_server_config(&valid_cert(&ca, "reviews"), &bundle).unwrap();
    assert!(connect(before.clone(), client.clone()).await.server.is_ok());

    // Rotation: a new certificate, a new server config. The client offers its ticket;
    // the server does not know it and verifies the client's chain again.
    let after = mesh_server_config(&valid_cert(&ca, "reviews"), &bundle).unwrap();
    let seen = connect(after.clone(), client.clone()).await;
    let (kind, peer) = seen.server.expect("server after rotation");
    assert_eq!(kind, HandshakeKind::Full);
    assert_eq!(peer, id("productpage"));
    // Control: the new config's own sessions resume.
    let (kind, _) = connect(after, client).await.server.expect("control");
    assert_eq!(kind, HandshakeKind::Resumed);
}
