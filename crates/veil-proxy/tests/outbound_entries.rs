//! ServiceEntries without addresses at the sidecar (needs root): pod `a`'s sidecar knows
//! `known.example` on a TLS port and on an HTTP port of pod `b`'s address, as
//! `resolution: NONE` entries without `addresses`, under `REGISTRY_ONLY`. The application
//! in `a` dials `b`'s address under different names: the SNI (TLS) or the `Host` (HTTP)
//! decides; an unknown name is refused with a log line naming it, and passes under
//! `ALLOW_ANY` (the control). `Upgrade` requests (WebSocket) switch protocols both to an
//! entry's dialled address and through the `PassthroughCluster`.

mod common;
mod routing_support;

use common::*;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use veil_model::*;

/// A plain HTTP app in `b` on a port its inbound treats as PERMISSIVE, undeclared.
const HTTP_APP: u16 = 8095;
/// An HTTP app in `b` that answers `Upgrade: echo` with 101 and echoes.
const UPGRADE_APP: u16 = 8096;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A TLS echo app for `known.example` and `other.example`; returns the client config
/// that trusts it.
fn tls_app(mesh: &Mesh) -> Arc<rustls::ClientConfig> {
    let app = rcgen::generate_simple_self_signed(vec!["known.example".to_string(), "other.example".to_string()]).unwrap();
    let cert: CertificateDer<'static> = app.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(app.signing_key.serialize_der()));
    let server = rustls::ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().unwrap();
    let server = Arc::new(server.with_no_client_auth().with_single_cert(vec![cert.clone()], key).unwrap());
    mesh.server_apps.spawn(async move {
        let listener = TcpListener::bind(("0.0.0.0", TLS_APP)).await.unwrap();
        loop {
            let Ok((s, _)) = listener.accept().await else { return };
            let acceptor = TlsAcceptor::from(server.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else { return };
                let mut buf = [0u8; 64];
                if let Ok(n) = tls.read(&mut buf).await {
                    let _ = tls.write_all(buf.get(..n).unwrap_or_default()).await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    mesh.server_apps.spawn(http_server(HTTP_APP));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().unwrap();
    Arc::new(client.with_root_certificates(roots).with_no_client_auth())
}

/// The entries `known.example` on `TLS_APP` (TLS), `HTTP_APP` and `UPGRADE_APP` (HTTP),
/// and `policy`.
fn configure(mesh: &Mesh, policy: OutboundTrafficPolicy) {
    let mut config = (**mesh.client.config.borrow()).clone();
    let outbound = Arc::make_mut(&mut config.outbound);
    outbound.services.retain(|s| s.hostname != "known.example");
    outbound.entries.clear();
    for (port, protocol) in [(TLS_APP, Protocol::Tls), (HTTP_APP, Protocol::Http), (UPGRADE_APP, Protocol::Http)] {
        outbound.services.push(OutboundService {
            hostname: "known.example".into(),
            cluster_ip: None,
            port,
            protocol,
            endpoints: Vec::new(),
            subsets: Default::default(),
            routes: Default::default(),
        });
        outbound.entries.push(EntryMatch {
            host: "known.example".into(),
            port,
            addresses: Vec::new(),
            by_name: true,
            original_destination: Some(UpstreamTls::Disable),
        });
    }
    outbound.policy = policy;
    config.version += 1;
    mesh.client.config.send_replace(Arc::new(config));
}

/// TLS from the application in `a` to `b`'s TLS app with `sni` (at most 5 s).
async fn tls_call(dst: SocketAddr, sni: &'static str, config: Arc<rustls::ClientConfig>) -> std::io::Result<Vec<u8>> {
    let work = async {
        let tcp = TcpStream::connect(dst).await?;
        let mut tls = TlsConnector::from(config).connect(ServerName::try_from(sni).unwrap(), tcp).await?;
        tls.write_all(b"by name").await?;
        let mut buf = Vec::new();
        tls.read_to_end(&mut buf).await?;
        Ok(buf)
    };
    tokio::time::timeout(Duration::from_secs(5), work).await.unwrap_or_else(|_| Err(std::io::Error::other("timed out")))
}

/// One HTTP/1.1 request with `Host: host` from the application in `a`; the response text.
async fn http_call(dst: SocketAddr, host: &'static str) -> String {
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let reply = roundtrip_to_close(dst, request.into_bytes()).await;
    String::from_utf8_lossy(&reply).into_owned()
}

async fn roundtrip_to_close(dst: SocketAddr, request: Vec<u8>) -> Vec<u8> {
    let work = async {
        let mut s = TcpStream::connect(dst).await?;
        s.write_all(&request).await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    tokio::time::timeout(Duration::from_secs(5), work).await.ok().and_then(Result::ok).unwrap_or_default()
}

#[tokio::test]
async fn entries_without_addresses_are_told_apart_by_sni_and_host() {
    let mesh = Mesh::start().await;
    let client = tls_app(&mesh);
    configure(&mesh, OutboundTrafficPolicy::RegistryOnly);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (tls_dst, http_dst) = (mesh.b(TLS_APP), mesh.b(HTTP_APP));
    let tls = |sni: &'static str| mesh.client_app.spawn(tls_call(tls_dst, sni, client.clone()));
    let http = |host: &'static str| mesh.client_app.spawn(http_call(http_dst, host));

    let known = tls("known.example").await.unwrap().expect("the entry's SNI passes");
    assert_eq!(known, b"by name");
    assert!(tls("other.example").await.unwrap().is_err(), "an unknown SNI is refused");
    let refusal = format!("outbound connection to {tls_dst} refused: SNI other.example matches no host");
    assert!(wait_log(&[&refusal, "REGISTRY_ONLY"]).await.is_some(), "{:?}", log_lines("refused"));

    let known = http("known.example").await.unwrap();
    assert!(known.starts_with("HTTP/1.1 200") && known.contains("known.example"), "{known}");
    let other = http("other.example").await.unwrap();
    assert!(other.starts_with("HTTP/1.1 502"), "{other}");
    let refusal = format!("outbound HTTP request for host other.example to {http_dst} refused");
    assert!(wait_log(&[&refusal, "REGISTRY_ONLY"]).await.is_some(), "{:?}", log_lines("refused"));

    // Control: under ALLOW_ANY the unknown names pass through to where the app dialled.
    configure(&mesh, OutboundTrafficPolicy::AllowAny);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(tls("other.example").await.unwrap().expect("passthrough"), b"by name");
    let other = http("other.example").await.unwrap();
    assert!(other.starts_with("HTTP/1.1 200") && other.contains("other.example"), "{other}");
}

/// An `Upgrade: echo` request with `Host: host` from the application in `a` to `b`'s
/// upgrade app, a port of `known.example` (no addresses, `resolution: NONE`), under
/// `ALLOW_ANY`: the response head and the bytes echoed after it.
async fn upgrade_by_host(host: &'static str) -> (String, Vec<u8>) {
    let mesh = Mesh::start().await;
    let counts = Arc::new(routing_support::Counts::default());
    mesh.server_apps.spawn(routing_support::http_app(UPGRADE_APP, "upgrade", routing_support::Behaviour::Ok, counts));
    configure(&mesh, OutboundTrafficPolicy::AllowAny);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let dst = mesh.b(UPGRADE_APP);
    mesh.client_app.spawn(routing_support::upgrade_echo_to(dst, host, b"ping over upgrade")).await.unwrap().unwrap()
}

#[tokio::test]
async fn upgrade_switches_protocols_to_the_dialled_address_of_an_entry() {
    let (head, echoed) = upgrade_by_host("known.example").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(echoed, b"ping over upgrade");
}

#[tokio::test]
async fn upgrade_switches_protocols_through_the_passthrough_cluster() {
    let (head, echoed) = upgrade_by_host("other.example").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(echoed, b"ping over upgrade");
}
