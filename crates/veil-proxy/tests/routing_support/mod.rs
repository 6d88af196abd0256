//! Fixture of the mesh routing tests: a client pod and a server pod in
//! their own network namespaces (the `common` netns helpers), the server
//! running small HTTP apps (hyper, HTTP/1.1 and h2c) that answer with their
//! name, the path, host and HTTP version they saw, echo the bytes of an
//! `Upgrade: echo` request after a 101, and count the TCP connections and
//! requests they get; and an HTTP client in the client pod whose
//! connections the client sidecar captures.
#![allow(dead_code)]

use crate::common::netns::{NetnsPair, NsRuntime};
use crate::common::*;
use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use veil_model::*;

pub const NS: &str = "shop";
pub const REVIEWS: &str = "reviews.shop.svc.cluster.local";
pub const VIP_REVIEWS: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);
pub const VIP_TCP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 23);
/// Workload ports of reviews v1, v2, v3, a flaky app and a slow app.
pub const V1: u16 = 9001;
pub const V2: u16 = 9002;
pub const V3: u16 = 9003;
pub const FLAKY: u16 = 9004;
pub const SLOW: u16 = 9005;
/// Server-first TCP apps behind the TCP Service (port 9000).
pub const TCP_V1: u16 = 9101;
pub const TCP_V2: u16 = 9102;
/// How long the slow app waits before answering, ms.
pub const SLOW_MS: u64 = 800;

/// What an app does with each request.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Ok,
    /// 500 for every even-numbered request (0, 2, …), 200 otherwise.
    FailEven,
    /// Answers after [`SLOW_MS`].
    Slow,
}

/// Counters of one app.
#[derive(Default)]
pub struct Counts {
    pub connections: AtomicUsize,
    pub requests: AtomicUsize,
}

/// Serves HTTP/1.1 and h2c on `port`; answers `"<name> <path> <host>"`.
pub async fn http_app(port: u16, name: &'static str, behaviour: Behaviour, counts: Arc<Counts>) {
    let listener = TcpListener::bind(("0.0.0.0", port)).await.unwrap();
    loop {
        let Ok((stream, _)) = listener.accept().await else { return };
        counts.connections.fetch_add(1, Ordering::SeqCst);
        let counts = counts.clone();
        tokio::spawn(async move {
            let service = service_fn(move |mut req: Request<hyper::body::Incoming>| {
                let n = counts.requests.fetch_add(1, Ordering::SeqCst);
                async move {
                    if req.headers().get(http::header::UPGRADE).is_some_and(|v| v == "echo") {
                        let upgrade = hyper::upgrade::on(&mut req);
                        tokio::spawn(async move {
                            if let Ok(up) = upgrade.await {
                                let mut io = TokioIo::new(up);
                                let mut buf = [0u8; 64];
                                if let Ok(n) = tokio::io::AsyncReadExt::read(&mut io, &mut buf).await {
                                    let _ = io.write_all(&buf[..n]).await;
                                }
                            }
                        });
                        let response = http::Response::builder()
                            .status(101)
                            .header("connection", "upgrade")
                            .header("upgrade", "echo")
                            .body(http_body_util::Full::new(Bytes::new()));
                        return Ok(response.unwrap());
                    }
                    if behaviour == Behaviour::Slow {
                        tokio::time::sleep(Duration::from_millis(SLOW_MS)).await;
                    }
                    let host = req
                        .headers()
                        .get(http::header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .or_else(|| req.uri().authority().map(|a| a.as_str()))
                        .unwrap_or("-")
                        .to_string();
                    let code = if behaviour == Behaviour::FailEven && n.is_multiple_of(2) { 500 } else { 200 };
                    let body = format!("{name} {} {host} {:?}", req.uri().path(), req.version());
                    let response = http::Response::builder().status(code).body(http_body_util::Full::new(Bytes::from(body)));
                    Ok::<_, std::convert::Infallible>(response.unwrap())
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await;
        });
    }
}

/// Server-first TCP app: writes `name\n` on accept, then closes.
pub async fn greeter(port: u16, name: &'static str) {
    let listener = TcpListener::bind(("0.0.0.0", port)).await.unwrap();
    loop {
        let Ok((mut s, _)) = listener.accept().await else { return };
        tokio::spawn(async move {
            let _ = s.write_all(format!("{name}\n").as_bytes()).await;
            let _ = s.shutdown().await;
        });
    }
}

fn endpoint(ip: Ipv4Addr, port: u16, pod: &str, identity: &str) -> Endpoint {
    Endpoint { pod: pod.into(), ..mesh_endpoint(ip, port, identity, REVIEWS) }
}

/// The routing mesh: client `client` (namespace shop) and server `server`
/// whose apps stand for the pods of reviews v1/v2/v3 and friends.
pub struct Routing {
    pub client: Sidecar,
    pub server: Sidecar,
    pub client_app: NsRuntime,
    pub server_apps: NsRuntime,
    pub counts: BTreeMap<u16, Arc<Counts>>,
    pub base: ProxyConfig,
    pub net: NetnsPair,
    pub ca: veil_identity::CertificateAuthority,
    pub dir: tempfile::TempDir,
}

impl Routing {
    pub async fn start() -> Routing {
        init_logs();
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let ca = veil_identity::CertificateAuthority::load_or_create(&dir.path().join("ca"), veil_identity::TrustDomain::default()).unwrap();
        let net = NetnsPair::create();
        let (id_a, id_b) = (spiffe(NS, "client"), spiffe(NS, "server"));
        let b = id_b.to_string();
        let ep = |port, pod: &str| endpoint(net.ip_b, port, pod, &b);
        let mut reviews = service(REVIEWS, VIP_REVIEWS, 80, ep(V1, "reviews-v1"));
        reviews.protocol = Protocol::Http;
        reviews.endpoints = vec![ep(V1, "reviews-v1"), ep(V2, "reviews-v2"), ep(V3, "reviews-v3")];
        for (subset, port) in [("v1", V1), ("v2", V2), ("v3", V3)] {
            reviews.subsets.insert(subset.into(), vec![ep(port, &format!("reviews-{subset}"))]);
        }
        let mut others = Vec::new();
        for (name, port, vip) in [("flaky", FLAKY, 21), ("slow", SLOW, 22)] {
            let mut s = service(&format!("{name}.{NS}.svc.cluster.local"), Ipv4Addr::new(10, 96, 0, vip), 80, ep(port, name));
            s.protocol = Protocol::Http;
            others.push(s);
        }
        let mut tcp = service(&format!("tcp.{NS}.svc.cluster.local"), VIP_TCP, 9000, ep(TCP_V1, "tcp-v1"));
        tcp.endpoints.push(ep(TCP_V2, "tcp-v2"));
        tcp.subsets.insert("v1".into(), vec![ep(TCP_V1, "tcp-v1")]);
        tcp.subsets.insert("v2".into(), vec![ep(TCP_V2, "tcp-v2")]);
        let mut services = vec![reviews, tcp];
        services.extend(others);
        let base = ProxyConfig {
            version: 1,
            node: node("client", NS, "client", net.ip_a),
            inbound: Inbound { mode: MtlsMode::Permissive, ports: vec![], sniff_timeout_ms: 200 },
            outbound: Outbound { services, ..Outbound::default() }.into(),
            gateway: None,
        };
        let strict = |port| InboundPort { port, mode: MtlsMode::Strict, protocol: Protocol::Http };
        let server_config = ProxyConfig {
            version: 1,
            node: node("server", NS, "server", net.ip_b),
            inbound: Inbound {
                mode: MtlsMode::Strict,
                ports: [V1, V2, V3, FLAKY, SLOW].into_iter().map(strict).collect(),
                sniff_timeout_ms: 200,
            },
            outbound: Outbound::default().into(),
            gateway: None,
        };
        let client = Sidecar::start(&net.a, dir.path(), base.clone(), issue(&ca, &id_a), ca.trust_bundle()).await;
        let server = Sidecar::start(&net.b, dir.path(), server_config, issue(&ca, &id_b), ca.trust_bundle()).await;
        let server_apps = NsRuntime::start(&net.b, None);
        let mut counts = BTreeMap::new();
        let apps = [
            (V1, "reviews-v1", Behaviour::Ok),
            (V2, "reviews-v2", Behaviour::Ok),
            (V3, "reviews-v3", Behaviour::Ok),
            (FLAKY, "flaky", Behaviour::FailEven),
            (SLOW, "slow", Behaviour::Slow),
        ];
        for (port, name, behaviour) in apps {
            let c = Arc::new(Counts::default());
            counts.insert(port, c.clone());
            server_apps.spawn(http_app(port, name, behaviour, c));
        }
        server_apps.spawn(greeter(TCP_V1, "tcp-v1"));
        server_apps.spawn(greeter(TCP_V2, "tcp-v2"));
        let probe = server_apps.spawn(async {
            for _ in 0..100 {
                if TcpStream::connect(("127.0.0.1", TCP_V2)).await.is_ok() && TcpStream::connect(("127.0.0.1", SLOW)).await.is_ok() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            false
        });
        assert!(probe.await.unwrap(), "test applications did not start");
        let client_app = NsRuntime::start(&net.a, None);
        Routing { client, server, client_app, server_apps, counts, base, net, ca, dir }
    }

    /// Pushes a client config whose Service `host:port` has `routes`.
    pub fn set_routes(&self, host: &str, port: u16, routes: ServiceRoutes) {
        self.update(host, port, |s| s.routes = routes.clone());
    }

    /// Pushes a client config with `f` applied to Service `host:port`.
    pub fn update(&self, host: &str, port: u16, f: impl Fn(&mut OutboundService)) {
        let mut config = self.base.clone();
        config.version += 1;
        std::sync::Arc::make_mut(&mut config.outbound).services.iter_mut().filter(|s| s.hostname == host && s.port == port).for_each(f);
        self.client.config.send(Arc::new(config)).unwrap();
    }

    pub fn count(&self, port: u16) -> (usize, usize) {
        let c = &self.counts[&port];
        (c.connections.load(Ordering::SeqCst), c.requests.load(Ordering::SeqCst))
    }
}

/// One HTTP answer: status, body and `Location`.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub body: String,
    pub location: Option<String>,
}

/// Sends `count` requests for `path` with `headers`, one after the other on
/// one client connection to `vip:80` (HTTP/1.1, or h2c when `h2`), each
/// bounded by 5 s; stops at the first failure.
pub async fn requests(vip: Ipv4Addr, path: &str, headers: &[(&str, &str)], count: usize, h2: bool) -> Result<Vec<Answer>, String> {
    let addr = SocketAddr::new(IpAddr::V4(vip), 80);
    let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    let io = TokioIo::new(tcp);
    let mut answers = Vec::new();
    let build = |_: usize| {
        let mut b = Request::get(format!("http://{vip}{path}")).header(http::header::HOST, "reviews");
        if h2 {
            b = b.version(Version::HTTP_2);
        } else {
            b = b.uri(path);
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Empty::<Bytes>::new()).unwrap()
    };
    macro_rules! drive {
        ($sender:expr) => {
            for i in 0..count {
                let call = async {
                    let response = $sender.send_request(build(i)).await.map_err(|e| e.to_string())?;
                    let status = response.status();
                    let location = response.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_string);
                    let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
                    Ok::<_, String>(Answer { status, body: String::from_utf8_lossy(&body).into_owned(), location })
                };
                let answer = tokio::time::timeout(Duration::from_secs(5), call).await.map_err(|_| "request timed out".to_string())??;
                answers.push(answer);
            }
        };
    }
    if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        drive!(sender);
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        drive!(sender);
    }
    Ok(answers)
}

/// Sends an `Upgrade: echo` request to `vip:80`, then `payload` over the
/// upgraded connection; returns the response head and the bytes echoed.
pub async fn upgrade_echo(vip: Ipv4Addr, payload: &[u8]) -> Result<(String, Vec<u8>), String> {
    upgrade_echo_to(SocketAddr::from((vip, 80)), "reviews", payload).await
}

/// [`upgrade_echo`] to `dst` with `Host: host`.
pub async fn upgrade_echo_to(dst: SocketAddr, host: &str, payload: &[u8]) -> Result<(String, Vec<u8>), String> {
    use tokio::io::AsyncReadExt;
    let request = format!("GET /ws HTTP/1.1\r\nhost: {host}\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n");
    let work = async {
        let mut s = TcpStream::connect(dst).await.map_err(|e| e.to_string())?;
        s.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 {
            if s.read(&mut byte).await.map_err(|e| e.to_string())? == 0 {
                break;
            }
            head.push(byte[0]);
        }
        s.write_all(payload).await.map_err(|e| e.to_string())?;
        let mut echoed = vec![0u8; payload.len()];
        s.read_exact(&mut echoed).await.map_err(|e| e.to_string())?;
        Ok((String::from_utf8_lossy(&head).into_owned(), echoed))
    };
    tokio::time::timeout(Duration::from_secs(5), work).await.map_err(|_| "timed out".to_string())?
}

/// How many answers came from each app (first word of the body).
pub fn tally(answers: &[Answer]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for a in answers {
        *out.entry(a.body.split(' ').next().unwrap_or_default().to_string()).or_insert(0) += 1;
    }
    out
}
