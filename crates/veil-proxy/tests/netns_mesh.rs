//! End-to-end tests of the sidecar proxy in network namespaces with
//! Istio-style iptables interception (needs root).

mod common;

use common::*;
use rustls_pki_types::ServerName;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[tokio::test]
async fn mesh_mtls_between_proxies_with_matching_records() {
    let mesh = Mesh::start().await;
    let echoed = mesh
        .client_app
        .spawn(roundtrip((VIP_ECHO, 80).into(), b"hello through the mesh"))
        .await
        .unwrap()
        .expect("client app through both proxies");
    assert_eq!(echoed, b"hello through the mesh");

    let dst = mesh.b(ECHO_STRICT);
    let out = mesh
        .client
        .wait_record(|r| r.direction == "outbound" && r.dst == dst)
        .await
        .expect("outbound record");
    assert_eq!(out.security, "mesh-mtls");
    assert_eq!(out.alpn.as_deref(), Some("veil-streams/1"), "two Veil sidecars agree on streams");
    assert_eq!(out.destination_principal, Some(mesh.id_b.to_string()));
    assert_eq!(out.source_principal, Some(mesh.id_a.to_string()));
    assert_eq!(out.src.ip(), std::net::IpAddr::V4(mesh.net.ip_a));
    let inb = mesh
        .server
        .wait_record(|r| r.direction == "inbound" && r.src == out.src)
        .await
        .expect("inbound record with the same 4-tuple");
    assert_eq!(inb.dst, out.dst);
    assert_eq!(inb.security, "mesh-mtls");
    assert_eq!(inb.source_principal, Some(mesh.id_a.to_string()));
    assert_eq!(inb.destination_principal, Some(mesh.id_b.to_string()));
    assert_eq!(inb.pod, "server");
    assert_eq!(out.pod, "client");
}

#[tokio::test]
async fn strict_refuses_plaintext_and_logs_the_reason() {
    let mesh = Mesh::start().await;
    // Control: the mesh path to the same port works.
    let ok = mesh.client_app.spawn(roundtrip((VIP_ECHO, 80).into(), b"control")).await.unwrap();
    assert_eq!(ok.unwrap(), b"control");
    // The proxy runtime of `a` is uid 1337: not intercepted, plain bytes to b.
    let plain = mesh.client.rt.spawn(roundtrip(mesh.b(ECHO_STRICT), b"plaintext")).await.unwrap();
    assert!(plain.map(|b| b.is_empty()).unwrap_or(true), "STRICT port echoed plaintext");
    let line = wait_log(&["plaintext connection to STRICT port 8080 refused", &mesh.net.ip_a.to_string(), "STRICT"]).await;
    assert!(line.is_some(), "no refusal log line naming peer, port and mode");
}

async fn mesh_tls_echo(addr: std::net::SocketAddr, config: Arc<rustls::ClientConfig>) -> std::io::Result<Vec<u8>> {
    let work = async {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("outbound_.8080_._.server.shop.svc.cluster.local").unwrap();
        let mut tls = TlsConnector::from(config).connect(name, tcp).await?;
        tls.write_all(b"over tls").await?;
        tls.flush().await?;
        let mut buf = vec![0u8; 8];
        tls.read_exact(&mut buf).await?;
        Ok(buf)
    };
    tokio::time::timeout(Duration::from_secs(5), work).await.unwrap_or_else(|_| Err(std::io::Error::other("timed out")))
}

#[tokio::test]
async fn strict_refuses_a_client_certificate_from_another_ca() {
    let mesh = Mesh::start().await;
    let bundle = mesh.ca.trust_bundle();
    let good = veil_identity::mesh_client_config(&issue(&mesh.ca, &mesh.id_a), &bundle, std::slice::from_ref(&mesh.id_b)).unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let other_ca = veil_identity::CertificateAuthority::load_or_create(other_dir.path(), veil_identity::TrustDomain::default()).unwrap();
    let bad = veil_identity::mesh_client_config(&issue(&other_ca, &mesh.id_a), &bundle, std::slice::from_ref(&mesh.id_b)).unwrap();
    // Control: a mesh certificate is accepted on the same port.
    let addr = mesh.b(ECHO_STRICT);
    let ok = mesh.client.rt.spawn(mesh_tls_echo(addr, good)).await.unwrap();
    assert_eq!(ok.expect("mesh cert accepted"), b"over tls");
    let refused = mesh.client.rt.spawn(mesh_tls_echo(addr, bad)).await.unwrap();
    assert!(refused.is_err(), "client certificate from another CA was accepted");
    let line = wait_log(&["mesh mTLS handshake on port 8080 failed", &mesh.net.ip_a.to_string()]).await;
    assert!(line.is_some(), "no refusal log for a foreign client certificate");
}

#[tokio::test]
async fn permissive_accepts_plaintext_and_mesh_mtls() {
    let mesh = Mesh::start().await;
    let plain = mesh.client.rt.spawn(roundtrip(mesh.b(ECHO_PERMISSIVE), b"plain")).await.unwrap();
    assert_eq!(plain.expect("plaintext on PERMISSIVE"), b"plain");
    let mtls = mesh.client_app.spawn(roundtrip((VIP_PERMISSIVE, 80).into(), b"mtls")).await.unwrap();
    assert_eq!(mtls.expect("mesh mTLS on PERMISSIVE"), b"mtls");
    let dst = mesh.b(ECHO_PERMISSIVE);
    assert!(mesh.server.wait_record(|r| r.dst == dst && r.security == "plaintext").await.is_some());
    assert!(mesh
        .server
        .wait_record(|r| r.dst == dst && r.security == "mesh-mtls" && r.source_principal == Some(mesh.id_a.to_string()))
        .await
        .is_some());
}

async fn read_greeting(addr: std::net::SocketAddr) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let work = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut buf = vec![0u8; GREETING.len()];
        s.read_exact(&mut buf).await.map(|_| buf)
    };
    let greeting = tokio::time::timeout(Duration::from_secs(5), work).await.ok().and_then(Result::ok).unwrap_or_default();
    (greeting, start.elapsed())
}

#[tokio::test]
async fn server_first_greeting_arrives_at_once_under_permissive() {
    let mesh = Mesh::start().await;
    // Plaintext client to MySQL's well-known port (declared opaque): no waiting.
    let (greeting, took) = mesh.client.rt.spawn(read_greeting(mesh.b(MYSQL))).await.unwrap();
    assert_eq!(greeting, GREETING, "{:#?}", log_lines("3306"));
    assert!(took < Duration::from_secs(1), "greeting took {took:?}");
    // Undeclared port: at most the sniff timeout (200 ms).
    let (greeting, took) = mesh.client.rt.spawn(read_greeting(mesh.b(GREETING_UNDECLARED))).await.unwrap();
    assert_eq!(greeting, GREETING);
    assert!(took < Duration::from_secs(1), "greeting took {took:?}");
    // Through the mesh (mTLS client speaks first), the greeting also arrives.
    let (greeting, took) = mesh.client_app.spawn(read_greeting((VIP_MYSQL, MYSQL).into())).await.unwrap();
    assert_eq!(greeting, GREETING);
    assert!(took < Duration::from_secs(1), "greeting took {took:?}");
    let dst = mesh.b(MYSQL);
    assert!(mesh.server.wait_record(|r| r.dst == dst && r.security == "mesh-mtls").await.is_some());
    assert!(mesh.server.wait_record(|r| r.dst == dst && r.security == "plaintext").await.is_some());
}

#[tokio::test]
async fn disable_passes_plaintext() {
    let mesh = Mesh::start().await;
    let plain = mesh.client.rt.spawn(roundtrip(mesh.b(ECHO_DISABLE), b"plain to DISABLE")).await.unwrap();
    assert_eq!(plain.expect("plaintext on DISABLE"), b"plain to DISABLE");
    let dst = mesh.b(ECHO_DISABLE);
    assert!(mesh.server.wait_record(|r| r.dst == dst && r.security == "plaintext").await.is_some());
}

#[tokio::test]
async fn outbound_refuses_a_server_identity_not_allowed() {
    let mesh = Mesh::start().await;
    // Control: the allowed identity works.
    let ok = mesh.client_app.spawn(roundtrip((VIP_ECHO, 80).into(), b"control")).await.unwrap();
    assert_eq!(ok.unwrap(), b"control");
    let refused = mesh.client_app.spawn(roundtrip((VIP_WRONG_ID, 80).into(), b"secret")).await.unwrap();
    assert!(refused.map(|b| b.is_empty()).unwrap_or(true), "bytes reached a server with an identity not allowed");
    let line = wait_log(&["outbound connection failed", "wrong.shop.svc.cluster.local", "impostor"]).await;
    assert!(line.is_some(), "no log line for the refused server identity");
}
