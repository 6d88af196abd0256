//! Application TLS passthrough, gateway listeners and the admin endpoints,
//! in network namespaces with Istio-style interception (needs root).

mod common;

use common::*;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use veil_model::*;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A rustls echo server with ALPN h2 (an application that speaks TLS itself).
async fn tls_app(port: u16, config: Arc<rustls::ServerConfig>) {
    let listener = TcpListener::bind(("0.0.0.0", port)).await.unwrap();
    loop {
        let Ok((s, _)) = listener.accept().await else { return };
        let acceptor = TlsAcceptor::from(config.clone());
        tokio::spawn(async move {
            let Ok(mut tls) = acceptor.accept(s).await else { return };
            let mut buf = [0u8; 64];
            if let Ok(n) = tls.read(&mut buf).await {
                let _ = tls.write_all(&buf[..n]).await;
                let _ = tls.shutdown().await;
            }
        });
    }
}

async fn app_tls_client(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> std::io::Result<(Option<Vec<u8>>, Vec<u8>)> {
    let work = async {
        let tcp = TcpStream::connect(addr).await?;
        let mut tls = TlsConnector::from(config).connect(ServerName::try_from("app.example").unwrap(), tcp).await?;
        tls.write_all(b"app tls").await?;
        let mut buf = vec![0u8; 7];
        tls.read_exact(&mut buf).await?;
        Ok((tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec), buf))
    };
    tokio::time::timeout(Duration::from_secs(5), work).await.unwrap_or_else(|_| Err(std::io::Error::other("timed out")))
}

#[tokio::test]
async fn app_tls_passes_through_permissive_untouched() {
    let mesh = Mesh::start().await;
    let app_cert = rcgen::generate_simple_self_signed(vec!["app.example".to_string()]).unwrap();
    let cert_der: CertificateDer<'static> = app_cert.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(app_cert.signing_key.serialize_der()));
    let mut server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key)
        .unwrap();
    server.alpn_protocols = vec![b"h2".to_vec()];
    mesh.server_apps.spawn(tls_app(TLS_APP, Arc::new(server)));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der).unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"h2".to_vec()];
    let client = Arc::new(client);

    let mut passed = None;
    for _ in 0..50 {
        match mesh.client.rt.spawn(app_tls_client(mesh.b(TLS_APP), client.clone())).await.unwrap() {
            Ok(result) => {
                passed = Some(result);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let (alpn, echoed) = passed.expect("app TLS through a PERMISSIVE port");
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]), "the app's own ALPN must reach the client");
    assert_eq!(echoed, b"app tls");
    let dst = mesh.b(TLS_APP);
    assert!(mesh.server.wait_record(|r| r.dst == dst && r.security == "tls-passthrough").await.is_some());

    // Control: the same app-TLS client to a STRICT port is refused.
    let refused = mesh.client.rt.spawn(app_tls_client(mesh.b(ECHO_STRICT), client)).await.unwrap();
    assert!(refused.is_err());
    let line = wait_log(&["without an istio ALPN", "STRICT port 8080 refused", &mesh.net.ip_a.to_string()]).await;
    assert!(line.is_some(), "no refusal log for app TLS to STRICT");
}

async fn http_get(addr: SocketAddr, host: &str) -> std::io::Result<String> {
    let work = async {
        let mut s = TcpStream::connect(addr).await?;
        let request = format!("GET /orders HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
        s.write_all(request.as_bytes()).await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(5), work).await.unwrap_or_else(|_| Err(std::io::Error::other("timed out")))
}

/// GETs until the listener answers (at most 100 tries, 2 s).
async fn http_get_retry(mesh: &Mesh, addr: SocketAddr, host: &'static str) -> String {
    for _ in 0..100 {
        if let Ok(text) = mesh.client.rt.spawn(http_get(addr, host)).await.unwrap() {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("gateway listener {addr} never answered");
}

fn gateway(port: u16) -> GatewayConfig {
    GatewayConfig {
        listeners: vec![GatewayListener {
            port,
            protocol: Protocol::Http,
            http_routes: vec![HttpRoute {
                hosts: vec!["shop.example".into()],
                uri_prefix: "/orders".into(),
                exact: false,
                destination: RouteDestination { host: "web.shop.svc.cluster.local".into(), port: 80 },
                source: "shop/orders".into(),
            }],
            tcp_route: None,
            ..GatewayListener::default()
        }],
    }
}

#[tokio::test]
async fn gateway_routes_http_into_the_mesh_and_rebinds_on_change() {
    let mesh = Mesh::start().await;
    let mut config = (**mesh.client.config.borrow()).clone();
    config.gateway = Some(gateway(8000));
    config.version = 2;
    mesh.client.config.send_replace(Arc::new(config.clone()));

    let addr: SocketAddr = ([127, 0, 0, 1], 8000).into();
    let ok = http_get_retry(&mesh, addr, "shop.example:8000").await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.to_ascii_lowercase().contains("x-forwarded-for: 127.0.0.1"), "{ok}");
    let missing = http_get_retry(&mesh, addr, "other.example").await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    let dst = mesh.b(HTTP_STRICT);
    let inbound = mesh.server.wait_record(|r| r.dst == dst && r.security == "mesh-mtls").await;
    assert_eq!(inbound.and_then(|r| r.source_principal), Some(mesh.id_a.to_string()));

    // The listener moves with the config.
    config.gateway = Some(gateway(8001));
    config.version = 3;
    mesh.client.config.send_replace(Arc::new(config));
    let moved = http_get_retry(&mesh, ([127, 0, 0, 1], 8001).into(), "shop.example").await;
    assert!(moved.starts_with("HTTP/1.1 200"), "{moved}");
    let old = mesh.client.rt.spawn(http_get(addr, "shop.example")).await.unwrap();
    assert!(old.is_err(), "old gateway port still served");
}

async fn http_status(addr: SocketAddr, path: &str) -> String {
    let path = path.to_string();
    let work = async move {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes()).await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&out).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(5), work).await.ok().and_then(Result::ok).unwrap_or_default()
}

#[tokio::test]
async fn admin_serves_config_dump_and_readiness() {
    let mesh = Mesh::start().await;
    let dump = mesh.client.rt.spawn(http_status(([127, 0, 0, 1], 15000).into(), "/config_dump")).await.unwrap();
    assert!(dump.starts_with("HTTP/1.1 200"), "{dump}");
    assert!(dump.contains(&mesh.id_a.to_string()), "{dump}");
    assert!(dump.contains("not_after_unix"), "{dump}");
    let ready = mesh.client.rt.spawn(http_status(([127, 0, 0, 1], 15021).into(), "/healthz/ready")).await.unwrap();
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    // The readiness port serves readiness only.
    let hidden = mesh.client.rt.spawn(http_status(([127, 0, 0, 1], 15021).into(), "/config_dump")).await.unwrap();
    assert!(hidden.starts_with("HTTP/1.1 404"), "{hidden}");
}
