//! Shared fixture for the proxy tests: two pods (`a` client, `b` server) in
//! their own network namespaces, each with a Veil proxy as uid 1337, a mesh CA
//! in a tempdir, and test applications in `b`.
#![allow(dead_code)]

pub mod netns;
pub mod tls_server;

use netns::{NetnsPair, NsRuntime};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use veil_identity::{CertificateAuthority, SpiffeId, TrustBundle, TrustDomain, WorkloadCertificate};
use veil_model::*;
use veil_proxy::{Proxy, ProxySettings};

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static LOG_INIT: OnceLock<()> = OnceLock::new();

struct LogWriter;
impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures every tracing event of the process.
pub fn init_logs() {
    LOG_INIT.get_or_init(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(|| LogWriter)
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

/// Waits (at most 3 s) for a log line containing every needle.
pub async fn wait_log(needles: &[&str]) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let text = String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned();
        if let Some(line) = text.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
            return Some(line.to_string());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Every captured log line containing `needle`.
pub fn log_lines(needle: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned();
    text.lines().filter(|l| l.contains(needle)).map(str::to_string).collect()
}

pub fn spiffe(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new(&TrustDomain::default(), ns, sa)
}

pub fn issue(ca: &CertificateAuthority, id: &SpiffeId) -> WorkloadCertificate {
    let now = SystemTime::now();
    ca.issue_for_test(id, now - Duration::from_secs(60), now + Duration::from_secs(3600)).unwrap()
}

pub fn node(pod: &str, ns: &str, sa: &str, ip: Ipv4Addr) -> Node {
    Node {
        kind: ProxyKind::Sidecar,
        pod: pod.into(),
        namespace: ns.into(),
        service_account: sa.into(),
        spiffe_id: spiffe(ns, sa).to_string(),
        ip: IpAddr::V4(ip),
    }
}

/// The config of the server pod's sidecar (`shop/server` at `ip`): inbound
/// `ports` under the workload-wide `mode`, no outbound services.
pub fn server_config(ip: Ipv4Addr, mode: MtlsMode, ports: Vec<InboundPort>) -> ProxyConfig {
    ProxyConfig {
        version: 1,
        node: node("server", "shop", "server", ip),
        inbound: Inbound { mode, ports, sniff_timeout_ms: 200 },
        outbound: Outbound::default().into(),
        gateway: None,
    }
}

pub fn mesh_endpoint(ip: Ipv4Addr, port: u16, identity: &str, host: &str) -> Endpoint {
    Endpoint {
        ip: IpAddr::V4(ip),
        port,
        pod: "server".into(),
        tls: UpstreamTls::IstioMutual {
            identities: vec![identity.to_string()],
            sni: format!("outbound_.{port}_._.{host}"),
        },
    }
}

pub fn service(host: &str, cluster_ip: Ipv4Addr, port: u16, endpoint: Endpoint) -> OutboundService {
    OutboundService {
        hostname: host.into(),
        cluster_ip: Some(IpAddr::V4(cluster_ip)),
        port,
        protocol: Protocol::Tcp,
        endpoints: vec![endpoint],
        subsets: Default::default(),
        routes: Default::default(),
    }
}

/// One proxy running in a namespace as fsuid 1337; the same runtime serves
/// as a client that bypasses interception.
pub struct Sidecar {
    pub rt: NsRuntime,
    pub records: PathBuf,
    pub config: watch::Sender<Arc<ProxyConfig>>,
    stop: Option<oneshot::Sender<()>>,
}

impl Sidecar {
    pub async fn start(ns: &str, dir: &std::path::Path, config: ProxyConfig, cert: WorkloadCertificate, bundle: TrustBundle) -> Sidecar {
        Sidecar::start_with(ns, dir, config, cert, bundle, true).await
    }

    /// [`Sidecar::start`]; `mesh_streams` false: one mesh connection per connection.
    pub async fn start_with(ns: &str, dir: &std::path::Path, config: ProxyConfig, cert: WorkloadCertificate, bundle: TrustBundle, mesh_streams: bool) -> Sidecar {
        let rt = NsRuntime::start(ns, Some(1337));
        let records = dir.join(format!("{}.jsonl", config.node.pod));
        let (config_tx, config_rx) = watch::channel(Arc::new(config));
        let (_cert_tx, cert_rx) = watch::channel(Arc::new(cert));
        let settings = ProxySettings { records_path: Some(records.clone()), mesh_streams, ..ProxySettings::default() };
        let (stop, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel();
        rt.spawn(async move {
            let _cert_tx = _cert_tx;
            match Proxy::bind(settings, config_rx, cert_rx, bundle).await {
                Ok(proxy) => {
                    let _ = ready_tx.send(Ok(()));
                    let _ = proxy.run(async move { let _ = stop_rx.await; }).await;
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                }
            }
        });
        ready_rx.await.unwrap().expect("proxy bind");
        Sidecar { rt, records, config: config_tx, stop: Some(stop) }
    }

    /// The connection records written so far.
    pub fn records(&self) -> Vec<ConnectionRecord> {
        std::fs::read_to_string(&self.records)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits (at most 3 s) for a record matching `f`.
    pub async fn wait_record(&self, f: impl Fn(&ConnectionRecord) -> bool) -> Option<ConnectionRecord> {
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Some(r) = self.records().into_iter().find(|r| f(r)) {
                return Some(r);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Echo: copies what it reads back until EOF.
pub async fn echo_server(port: u16, greeting: Option<&'static [u8]>) {
    let listener = TcpListener::bind(("0.0.0.0", port)).await.unwrap();
    loop {
        let Ok((mut s, _)) = listener.accept().await else { return };
        tokio::spawn(async move {
            if let Some(g) = greeting {
                let _ = s.write_all(g).await;
            }
            let (mut r, mut w) = s.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
        });
    }
}

/// Connects, sends `payload`, half-closes, reads to EOF (bounded by 5 s).
pub async fn roundtrip(addr: SocketAddr, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let work = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(payload).await?;
        s.shutdown().await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok(out)
    };
    tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("timed out")))
}

/// A minimal HTTP/1.1 app: answers every request with 200 and the request
/// head as body, then closes.
pub async fn http_server(port: u16) {
    let listener = TcpListener::bind(("0.0.0.0", port)).await.unwrap();
    loop {
        let Ok((mut s, _)) = listener.accept().await else { return };
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            for _ in 0..64 {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
                if head.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let reply = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", head.len());
            let _ = s.write_all(reply.as_bytes()).await;
            let _ = s.write_all(&head).await;
            let _ = s.shutdown().await;
        });
    }
}

pub const HTTP_STRICT: u16 = 8090;
pub const VIP_WEB: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 14);
pub const ECHO_STRICT: u16 = 8080;
pub const ECHO_PERMISSIVE: u16 = 8081;
pub const ECHO_DISABLE: u16 = 8082;
pub const GREETING_UNDECLARED: u16 = 8083;
pub const TLS_APP: u16 = 8443;
pub const MYSQL: u16 = 3306;
pub const GREETING: &[u8] = b"5.7.0-veil-greeting\n";

pub const VIP_ECHO: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
pub const VIP_WRONG_ID: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);
pub const VIP_MYSQL: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 12);
pub const VIP_PERMISSIVE: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 13);

/// The whole two-pod mesh.
pub struct Mesh {
    pub client: Sidecar,
    pub server: Sidecar,
    /// Root-owned runtime in `a` (its connections are intercepted).
    pub client_app: NsRuntime,
    /// Root-owned runtime in `b` running the applications.
    pub server_apps: NsRuntime,
    pub ca: CertificateAuthority,
    pub id_a: SpiffeId,
    pub id_b: SpiffeId,
    pub net: NetnsPair,
    pub dir: tempfile::TempDir,
}

impl Mesh {
    pub async fn start() -> Mesh {
        Mesh::start_with(true).await
    }

    /// [`Mesh::start`]; `mesh_streams` false: the client sidecar makes one
    /// mesh connection per connection (`ProxySettings::mesh_streams`).
    pub async fn start_with(mesh_streams: bool) -> Mesh {
        init_logs();
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let ca = CertificateAuthority::load_or_create(&dir.path().join("ca"), TrustDomain::default()).unwrap();
        let net = NetnsPair::create();
        let (id_a, id_b) = (spiffe("shop", "client"), spiffe("shop", "server"));
        let host = "server.shop.svc.cluster.local";
        let b = id_b.to_string();
        let client_config = ProxyConfig {
            version: 1,
            node: node("client", "shop", "client", net.ip_a),
            inbound: Inbound { mode: MtlsMode::Permissive, ports: vec![], sniff_timeout_ms: 200 },
            outbound: Outbound {
                services: vec![
                    service(host, VIP_ECHO, 80, mesh_endpoint(net.ip_b, ECHO_STRICT, &b, host)),
                    service("wrong.shop.svc.cluster.local", VIP_WRONG_ID, 80,
                        mesh_endpoint(net.ip_b, ECHO_STRICT, &spiffe("shop", "impostor").to_string(), host)),
                    service("mysql.shop.svc.cluster.local", VIP_MYSQL, MYSQL, mesh_endpoint(net.ip_b, MYSQL, &b, host)),
                    service("permissive.shop.svc.cluster.local", VIP_PERMISSIVE, 80,
                        mesh_endpoint(net.ip_b, ECHO_PERMISSIVE, &b, host)),
                    service("web.shop.svc.cluster.local", VIP_WEB, 80, mesh_endpoint(net.ip_b, HTTP_STRICT, &b, host)),
                ],
                ..Outbound::default()
            }
            .into(),
            gateway: None,
        };
        let port = |port, mode, protocol| InboundPort { port, mode, protocol };
        let server_config = server_config(
            net.ip_b,
            MtlsMode::Permissive,
            vec![
                port(ECHO_STRICT, MtlsMode::Strict, Protocol::Tcp),
                port(ECHO_PERMISSIVE, MtlsMode::Permissive, Protocol::Unknown),
                port(ECHO_DISABLE, MtlsMode::Disable, Protocol::Tcp),
                port(HTTP_STRICT, MtlsMode::Strict, Protocol::Http),
            ],
        );
        let client = Sidecar::start_with(&net.a, dir.path(), client_config, issue(&ca, &id_a), ca.trust_bundle(), mesh_streams).await;
        let server = Sidecar::start(&net.b, dir.path(), server_config, issue(&ca, &id_b), ca.trust_bundle()).await;
        let server_apps = NsRuntime::start(&net.b, None);
        for (port, greeting) in [
            (ECHO_STRICT, None),
            (ECHO_PERMISSIVE, None),
            (ECHO_DISABLE, None),
            (MYSQL, Some(GREETING)),
            (GREETING_UNDECLARED, Some(GREETING)),
        ] {
            server_apps.spawn(echo_server(port, greeting));
        }
        server_apps.spawn(http_server(HTTP_STRICT));
        let client_app = NsRuntime::start(&net.a, None);
        // Applications are listening once a direct connect from b succeeds.
        let probe = server_apps.spawn(async {
            for _ in 0..100 {
                if TcpStream::connect(("127.0.0.1", GREETING_UNDECLARED)).await.is_ok() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            false
        });
        assert!(probe.await.unwrap(), "test applications did not start");
        Mesh { client, server, client_app, server_apps, ca, id_a, id_b, net, dir }
    }

    pub fn b(&self, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.net.ip_b), port)
    }
}
