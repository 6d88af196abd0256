//! AUTO_PASSTHROUGH at the proxy (needs root): the proxy of pod `a` is a gateway whose
//! port 15443 serves `tls.mode: AUTO_PASSTHROUGH` with hosts `*.local`. A client outside
//! the mesh with a mesh certificate (the test CA) connects with Istio's cluster-name SNI
//! and ALPN `istio`, and verifies that the server it completes mTLS with is pod `b`'s
//! identity, not the gateway's: the bytes went through untouched to `b`'s STRICT sidecar,
//! which records the client's identity. Each refusal is logged with the SNI.

mod common;

use common::*;
use rustls_pki_types::ServerName;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use veil_model::*;

const PORT: u16 = 15443;
const HOST: &str = "server.shop.svc.cluster.local";

/// Makes the proxy of `a` a gateway with one AUTO_PASSTHROUGH server, subsets `v1` (b's
/// endpoint) and `v9` (none) of the server Service, and a Service `naked` whose endpoint
/// has no sidecar.
fn configure(mesh: &Mesh) {
    let mut config = (**mesh.client.config.borrow()).clone();
    let outbound = Arc::make_mut(&mut config.outbound);
    if let Some(svc) = outbound.services.iter_mut().find(|s| s.hostname == HOST && s.port == 80) {
        svc.subsets.insert("v1".into(), svc.endpoints.clone());
        svc.subsets.insert("v9".into(), Vec::new());
    }
    let plain = Endpoint { ip: IpAddr::V4(mesh.net.ip_b), port: ECHO_DISABLE, pod: "naked".into(), tls: UpstreamTls::Disable };
    outbound.services.push(service("naked.shop.svc.cluster.local", Ipv4Addr::new(10, 96, 0, 31), 80, plain));
    let server = GatewayTlsServer {
        gateway: "istio-system/cross-network-gateway".into(),
        sni_hosts: vec!["*.local".into()],
        mode: GatewayTlsMode::AutoPassthrough,
        http: false,
        credential: None,
        http_routes: Vec::new(),
        http_rules: Vec::new(),
        tcp_route: None,
        tls_routes: Vec::new(),
        error: None,
    };
    let listener = GatewayListener { port: PORT, protocol: Protocol::Tls, tls_servers: vec![server], ..GatewayListener::default() };
    config.gateway = Some(GatewayConfig { listeners: vec![listener] });
    config.version += 1;
    mesh.client.config.send_replace(Arc::new(config));
}

async fn wait_bound(mesh: &Mesh) {
    for _ in 0..100 {
        let probe = mesh.client.rt.spawn(async { TcpStream::connect(("127.0.0.1", PORT)).await.is_ok() });
        if probe.await.unwrap() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("gateway listener {PORT} never bound");
}

/// TLS to the gateway with `sni`, sends `payload`, reads to EOF (at most 5 s):
/// (negotiated ALPN, bytes read).
async fn call(sni: String, config: Arc<rustls::ClientConfig>, payload: &'static [u8]) -> std::io::Result<(Option<Vec<u8>>, Vec<u8>)> {
    let work = async {
        let tcp = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], PORT))).await?;
        let name = ServerName::try_from(sni).map_err(std::io::Error::other)?;
        let mut tls = TlsConnector::from(config).connect(name, tcp).await?;
        tls.write_all(payload).await?;
        tls.shutdown().await?;
        let mut buf = Vec::new();
        tls.read_to_end(&mut buf).await?;
        Ok((tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec), buf))
    };
    tokio::time::timeout(Duration::from_secs(5), work).await.unwrap_or_else(|_| Err(std::io::Error::other("timed out")))
}

fn sni(subset: &str, host: &str) -> String {
    format!("outbound_.80_.{subset}_.{host}")
}

#[tokio::test]
async fn auto_passthrough_carries_the_clients_mtls_to_the_sidecar_its_sni_names() {
    let mesh = Mesh::start().await;
    configure(&mesh);
    wait_bound(&mesh).await;
    let bundle = mesh.ca.trust_bundle();
    let outsider = spiffe("outside", "east-west-client");
    // The client accepts only b's identity: the gateway (a) cannot be the TLS server.
    let client = veil_identity::mesh_client_config(&issue(&mesh.ca, &outsider), &bundle, std::slice::from_ref(&mesh.id_b)).unwrap();
    let run = |sni: String, config: Arc<rustls::ClientConfig>| mesh.client.rt.spawn(call(sni, config, b"through the gateway"));

    for subset in ["", "v1"] {
        let (alpn, echoed) = run(sni(subset, HOST), client.clone()).await.unwrap().expect("b answers");
        assert_eq!((alpn.as_deref(), echoed.as_slice()), (Some(&b"istio"[..]), &b"through the gateway"[..]), "subset {subset:?}");
    }
    let dst = mesh.b(ECHO_STRICT);
    let hop = mesh.client.wait_record(|r| r.dst == dst && r.security == "tls-passthrough").await;
    assert!(hop.is_some(), "the gateway records the hop as passthrough: {:?}", mesh.client.records());
    let id = outsider.to_string();
    let inbound = mesh.server.wait_record(|r| r.direction == "inbound" && r.source_principal.as_deref() == Some(id.as_str())).await;
    let inbound = inbound.unwrap_or_else(|| panic!("b's sidecar saw the client's own identity: {:?}", mesh.server.records()));
    assert_eq!(inbound.security, "mesh-mtls");

    // A certificate from another CA: the gateway forwards, b's STRICT sidecar refuses.
    let other_dir = tempfile::tempdir().unwrap();
    let other_ca = veil_identity::CertificateAuthority::load_or_create(other_dir.path(), veil_identity::TrustDomain::default()).unwrap();
    let foreign = veil_identity::mesh_client_config(&issue(&other_ca, &outsider), &bundle, std::slice::from_ref(&mesh.id_b)).unwrap();
    let refused = run(sni("", HOST), foreign).await.unwrap();
    assert!(refused.is_err() || refused.as_ref().is_ok_and(|(_, b)| b.is_empty()), "{refused:?}");
    assert!(wait_log(&["inbound connection from", "refused"]).await.is_some(), "b's sidecar refuses it");

    // Refusals at the gateway, each naming the SNI and the reason.
    let mut h2 = (*client).clone();
    h2.alpn_protocols = vec![b"h2".to_vec()];
    let cases: [(String, Arc<rustls::ClientConfig>, &str); 6] = [
        (sni("", "nope.shop.svc.cluster.local"), client.clone(), "no Service nope.shop.svc.cluster.local with port 80"),
        (sni("v2", HOST), client.clone(), "has no subset \"v2\""),
        (sni("v9", HOST), client.clone(), "no endpoint of server.shop.svc.cluster.local:80 subset v9 speaks mesh mTLS"),
        (sni("", "naked.shop.svc.cluster.local"), client.clone(), "no endpoint of naked.shop.svc.cluster.local:80 speaks mesh mTLS"),
        (sni("", HOST), Arc::new(h2), "none of Istio's mTLS ALPNs"),
        (sni("", "server.shop.svc.cluster.example"), client.clone(), "not among the server's hosts"),
    ];
    for (name, config, reason) in cases {
        let got = run(name.clone(), config).await.unwrap();
        assert!(got.is_err(), "{name}: {got:?}");
        assert!(wait_log(&[&format!("SNI {name}"), reason]).await.is_some(), "{name}: {reason}\n{:?}", log_lines("AUTO_PASSTHROUGH"));
    }
}
