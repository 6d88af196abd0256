//! `watch_config` against a real tonic server over TLS on loopback.

mod common;

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};
use veil_identity::{CertificateAuthority, TrustDomain};
use veil_model::*;
use veil_proto::config::proxy_config_service_server::{ProxyConfigService, ProxyConfigServiceServer};
use veil_proto::config::{ProxyConfigUpdate, WatchRequest};
use veil_proxy::{watch_config, ConfigStreamSettings};

type Updates = Pin<Box<dyn futures::Stream<Item = Result<ProxyConfigUpdate, Status>> + Send>>;

/// Hands each Watch call the next queued update channel.
struct Control {
    streams: Mutex<Vec<mpsc::Receiver<Result<ProxyConfigUpdate, Status>>>>,
}

#[tonic::async_trait]
impl ProxyConfigService for Control {
    type WatchStream = Updates;
    async fn watch(&self, _req: Request<WatchRequest>) -> Result<Response<Updates>, Status> {
        let rx = self.streams.lock().unwrap().pop().ok_or_else(|| Status::unavailable("no stream"))?;
        let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
        Ok(Response::new(Box::pin(stream)))
    }
}

fn config(version: u64) -> ProxyConfig {
    ProxyConfig {
        version,
        node: common::node("client", "shop", "client", std::net::Ipv4Addr::LOCALHOST),
        inbound: Inbound { mode: MtlsMode::Strict, ports: vec![], sniff_timeout_ms: 100 },
        outbound: Outbound::default().into(),
        gateway: None,
    }
}

fn update(version: u64, json: String) -> Result<ProxyConfigUpdate, Status> {
    Ok(ProxyConfigUpdate { version, config_json: json })
}

#[tokio::test]
async fn keeps_last_good_config_and_skips_bad_updates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::load_or_create(dir.path(), TrustDomain::default()).unwrap();
    let server_cert = ca.issue_server_certificate(&["localhost".to_string()], Duration::from_secs(3600)).unwrap();
    let (tx, rx) = mpsc::channel(8);
    let control = Control { streams: Mutex::new(vec![rx]) };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = ServerTlsConfig::new().identity(Identity::from_pem(server_cert.chain_pem(), server_cert.key_pem()));
    let server = tokio::spawn(
        Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(ProxyConfigServiceServer::new(control))
            .serve_with_incoming(tokio_stream_from(listener)),
    );

    tx.send(update(1, serde_json::to_string(&config(1)).unwrap())).await.unwrap();
    let workload = ca.issue_for_test(&common::spiffe("shop", "client"), std::time::SystemTime::now() - Duration::from_secs(60), std::time::SystemTime::now() + Duration::from_secs(3600)).unwrap();
    let (_cert_tx, cert_rx) = watch::channel(Arc::new(workload));
    let settings = ConfigStreamSettings {
        address: format!("https://localhost:{}", addr.port()),
        server_name: "localhost".into(),
        root_pem: ca.root_pem(),
        pod: "client".into(),
        namespace: "shop".into(),
    };
    let mut configs = tokio::time::timeout(Duration::from_secs(10), watch_config(settings, cert_rx)).await.unwrap().unwrap();
    assert_eq!(configs.borrow_and_update().version, 1);

    // A bad update is skipped; the next good one applies.
    tx.send(update(2, "{not json".into())).await.unwrap();
    tx.send(update(3, serde_json::to_string(&config(3)).unwrap())).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), configs.changed()).await.unwrap().unwrap();
    assert_eq!(configs.borrow_and_update().version, 3);

    // The control plane goes away: the last good config stays.
    drop(tx);
    server.abort();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(configs.borrow().version, 3);
}

fn tokio_stream_from(listener: tokio::net::TcpListener) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |l| async move {
        let accepted = l.accept().await.map(|(s, _)| s);
        Some((accepted, l))
    })
}
