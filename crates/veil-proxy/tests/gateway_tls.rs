//! Gateway TLS servers end to end (needs root): curl in the gateway's
//! network namespace against SIMPLE, MUTUAL, OPTIONAL_MUTUAL and ISTIO_MUTUAL
//! servers told apart by SNI, certificate rotation without restart,
//! PASSTHROUGH of the client's own TLS to a TLS app, and httpsRedirect. The
//! gateway is the proxy of pod `a`; its routes reach pod `b` over mesh mTLS.

mod common;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use veil_model::*;

struct Ca(CertifiedIssuer<'static, KeyPair>);

impl Ca {
    fn new(cn: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        Ca(CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap())
    }
    /// (certificate PEM, key PEM) for `names`.
    fn leaf(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = CertificateParams::new(names).unwrap().signed_by(&key, &self.0).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes `text` to `dir/name` (0644, readable by the proxy's uid 1337) by
/// renaming a temporary file over it.
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let (tmp, path) = (dir.join(format!("{name}.tmp")), dir.join(name));
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

fn pem_credential((cert, key): (String, String), ca: Option<&Ca>) -> ServerCredential {
    ServerCredential {
        source: "test".into(),
        cert: PemSource::Pem(cert),
        key: PemSource::Pem(key),
        ca: ca.map(|c| PemSource::Pem(c.0.pem())),
    }
}

fn web_route(host: &str, prefix: &str) -> HttpRoute {
    HttpRoute {
        hosts: vec![host.into()],
        uri_prefix: prefix.into(),
        exact: false,
        destination: RouteDestination { host: "web.shop.svc.cluster.local".into(), port: 80 },
        source: "shop/web".into(),
    }
}

fn tls_server(host: &str, mode: GatewayTlsMode, credential: Option<ServerCredential>) -> GatewayTlsServer {
    GatewayTlsServer {
        gateway: format!("shop/{host}"),
        sni_hosts: vec![host.into()],
        mode,
        http: true,
        credential,
        http_routes: vec![web_route(host, "/orders")],
        http_rules: Vec::new(),
        tcp_route: None,
        tls_routes: Vec::new(),
        error: None,
    }
}

/// Replaces the gateway section of the proxy in `a`.
fn set_gateway(mesh: &Mesh, listeners: Vec<GatewayListener>) {
    let mut config = (**mesh.client.config.borrow()).clone();
    config.gateway = Some(GatewayConfig { listeners });
    config.version += 1;
    mesh.client.config.send_replace(Arc::new(config));
}

fn tls_listener(port: u16, servers: Vec<GatewayTlsServer>) -> GatewayListener {
    GatewayListener { port, protocol: Protocol::Tls, tls_servers: servers, ..GatewayListener::default() }
}

/// Runs curl in namespace `ns` (at most 5 s); returns (exit code, stdout).
async fn curl(ns: &str, args: &[&str]) -> (i32, String) {
    let out = tokio::process::Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-sS", "--max-time", "5"])
        .args(args)
        .output()
        .await
        .expect("run curl");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// curl `https://<host>:<port><path>` resolved to 127.0.0.1, with `extra`
/// arguments; the last line of stdout is `<status> <http version>`.
async fn https(mesh: &Mesh, ca: &Path, host: &str, port: u16, path: &str, extra: &[&str]) -> (i32, String) {
    let resolve = format!("{host}:{port}:127.0.0.1");
    let url = format!("https://{host}:{port}{path}");
    let ca = ca.to_string_lossy().into_owned();
    let mut args = vec!["--cacert", &ca, "--resolve", &resolve, "-w", "\n%{http_code} %{http_version}"];
    args.extend_from_slice(extra);
    args.push(&url);
    curl(&mesh.net.a, &args).await
}

/// Waits (at most 100 tries, 5 s) until the listener on `port` accepts.
async fn wait_bound(mesh: &Mesh, port: u16) {
    for _ in 0..100 {
        let probe = mesh.client.rt.spawn(async move { TcpStream::connect(("127.0.0.1", port)).await.is_ok() });
        if probe.await.unwrap() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("gateway listener {port} never bound");
}

#[tokio::test]
async fn simple_https_servers_chosen_by_sni_route_by_host() {
    let mesh = Mesh::start().await;
    let ca = Ca::new("gateway ca");
    let ca_file = write(mesh.dir.path(), "ca.pem", &ca.0.pem());
    let shop = tls_server("shop.example", GatewayTlsMode::Simple, Some(pem_credential(ca.leaf(&["shop.example"]), None)));
    let mut api = tls_server("api.example", GatewayTlsMode::Simple, Some(pem_credential(ca.leaf(&["api.example"]), None)));
    api.http_routes = vec![web_route("api.example", "/")];
    let mut broken = tls_server("broken.example", GatewayTlsMode::Simple, None);
    broken.error = Some("credentialName broken: no Secret broken in namespace istio-system".into());
    let (cert, _) = ca.leaf(&["mismatch.example"]);
    let (_, other_key) = ca.leaf(&["mismatch.example"]);
    let mismatch = tls_server("mismatch.example", GatewayTlsMode::Simple, Some(pem_credential((cert, other_key), None)));
    set_gateway(&mesh, vec![tls_listener(9443, vec![shop, api, broken, mismatch])]);
    wait_bound(&mesh, 9443).await;

    let (code, out) = https(&mesh, &ca_file, "shop.example", 9443, "/orders", &[]).await;
    assert_eq!((code, out.lines().last()), (0, Some("200 2")), "{out}");
    assert!(out.contains("GET /orders HTTP/1.1") && out.contains("host: shop.example:9443"), "{out}");
    assert!(out.contains("x-forwarded-for: 127.0.0.1"), "{out}");
    let (_, out) = https(&mesh, &ca_file, "shop.example", 9443, "/orders", &["--http1.1"]).await;
    assert_eq!(out.lines().last(), Some("200 1.1"), "{out}");
    // The second server's certificate names only api.example: SNI chose it.
    let (_, out) = https(&mesh, &ca_file, "api.example", 9443, "/anything", &[]).await;
    assert_eq!(out.lines().last(), Some("200 2"), "{out}");
    let dst = mesh.b(HTTP_STRICT);
    assert!(mesh.client.wait_record(|r| r.dst == dst && r.security == "mesh-mtls").await.is_some());

    // Right SNI, other Host or path: no route.
    let (_, out) = https(&mesh, &ca_file, "shop.example", 9443, "/orders", &["--http1.1", "-H", "Host: other.example"]).await;
    assert_eq!(out.lines().last(), Some("404 1.1"), "{out}");
    let (_, out) = https(&mesh, &ca_file, "shop.example", 9443, "/nope", &[]).await;
    assert_eq!(out.lines().last(), Some("404 2"), "{out}");
    // An SNI no server names: the handshake is refused and logged.
    let (code, _) = https(&mesh, &ca_file, "other.example", 9443, "/orders", &[]).await;
    assert_ne!(code, 0);
    assert!(wait_log(&["port 9443 from 127.0.0.1", "no server for SNI other.example"]).await.is_some());
    // A server without its certificate refuses with the reason; the others serve.
    let (code, _) = https(&mesh, &ca_file, "broken.example", 9443, "/orders", &[]).await;
    assert_ne!(code, 0);
    assert!(wait_log(&["port 9443 from 127.0.0.1", "no Secret broken in namespace istio-system"]).await.is_some());
    let (code, _) = https(&mesh, &ca_file, "mismatch.example", 9443, "/orders", &[]).await;
    assert_ne!(code, 0);
    assert!(wait_log(&["port 9443 from 127.0.0.1", "(SNI mismatch.example)", "cannot be used together"]).await.is_some());
    let (_, out) = https(&mesh, &ca_file, "shop.example", 9443, "/orders", &[]).await;
    assert_eq!(out.lines().last(), Some("200 2"), "{out}");
    // The admin config dump shows the certificates but not the keys.
    let (_, dump) = curl(&mesh.net.a, &["http://127.0.0.1:15000/config_dump"]).await;
    assert!(dump.contains("BEGIN CERTIFICATE") && dump.contains("[redacted]"), "{dump}");
    assert!(!dump.contains("PRIVATE KEY"), "the config dump shows a private key");
}

#[tokio::test]
async fn mutual_requires_and_optional_mutual_checks_client_certificates() {
    let mesh = Mesh::start().await;
    let dir = mesh.dir.path();
    let (server_ca, client_ca, other_ca) = (Ca::new("server ca"), Ca::new("client ca"), Ca::new("other ca"));
    let ca_file = write(dir, "ca.pem", &server_ca.0.pem());
    let (good, good_key) = client_ca.leaf(&["client.example"]);
    let (bad, bad_key) = other_ca.leaf(&["client.example"]);
    let good = [write(dir, "good.pem", &good), write(dir, "good.key", &good_key)];
    let bad = [write(dir, "bad.pem", &bad), write(dir, "bad.key", &bad_key)];
    let with = |files: &[PathBuf; 2]| -> Vec<String> {
        vec!["--cert".into(), files[0].display().to_string(), "--key".into(), files[1].display().to_string()]
    };
    let (good, bad) = (with(&good), with(&bad));
    let mutual = tls_server("m.example", GatewayTlsMode::Mutual, Some(pem_credential(server_ca.leaf(&["m.example"]), Some(&client_ca))));
    let optional =
        tls_server("o.example", GatewayTlsMode::OptionalMutual, Some(pem_credential(server_ca.leaf(&["o.example"]), Some(&client_ca))));
    set_gateway(&mesh, vec![tls_listener(9444, vec![mutual, optional])]);
    wait_bound(&mesh, 9444).await;
    let call = |host: &'static str, cert: Vec<String>| {
        let ca_file = ca_file.clone();
        let mesh = &mesh;
        async move {
            let extra: Vec<&str> = cert.iter().map(String::as_str).collect();
            https(mesh, &ca_file, host, 9444, "/orders", &extra).await
        }
    };

    let (code, out) = call("m.example", good.clone()).await;
    assert_eq!((code, out.lines().last()), (0, Some("200 2")), "MUTUAL with a client cert from its CA: {out}");
    let (code, out) = call("m.example", Vec::new()).await;
    assert!(code != 0 && !out.contains("200"), "MUTUAL served a client without a certificate: {out}");
    assert!(wait_log(&["port 9444 from 127.0.0.1:", "failed (SNI m.example, tls.mode MUTUAL"]).await.is_some());
    let (code, out) = call("m.example", bad.clone()).await;
    assert!(code != 0 && !out.contains("200"), "MUTUAL served a certificate from another CA: {out}");

    let (code, out) = call("o.example", Vec::new()).await;
    assert_eq!((code, out.lines().last()), (0, Some("200 2")), "OPTIONAL_MUTUAL without a cert: {out}");
    let (code, out) = call("o.example", good).await;
    assert_eq!((code, out.lines().last()), (0, Some("200 2")), "OPTIONAL_MUTUAL with a good cert: {out}");
    let (code, out) = call("o.example", bad).await;
    assert!(code != 0 && !out.contains("200"), "OPTIONAL_MUTUAL accepted a certificate from another CA: {out}");
    assert!(wait_log(&["port 9444 from 127.0.0.1:", "failed (SNI o.example, tls.mode OPTIONAL_MUTUAL"]).await.is_some());
}

#[tokio::test]
async fn rotated_certificate_files_and_secrets_are_served_without_restart() {
    let mesh = Mesh::start().await;
    let dir = mesh.dir.path();
    let (old_ca, new_ca) = (Ca::new("old ca"), Ca::new("new ca"));
    let (old_ca_file, new_ca_file) = (write(dir, "old-ca.pem", &old_ca.0.pem()), write(dir, "new-ca.pem", &new_ca.0.pem()));
    let (cert, key) = old_ca.leaf(&["shop.example"]);
    let files = ServerCredential {
        source: "files".into(),
        cert: PemSource::File(write(dir, "server.pem", &cert)),
        key: PemSource::File(write(dir, "server.key", &key)),
        ca: None,
    };
    set_gateway(&mesh, vec![tls_listener(9446, vec![tls_server("shop.example", GatewayTlsMode::Simple, Some(files))])]);
    wait_bound(&mesh, 9446).await;
    let ok = |out: &str| out.lines().last() == Some("200 2");
    let (_, out) = https(&mesh, &old_ca_file, "shop.example", 9446, "/orders", &[]).await;
    assert!(ok(&out), "{out}");
    let (_, out) = https(&mesh, &new_ca_file, "shop.example", 9446, "/orders", &[]).await;
    assert!(!ok(&out), "control: the new CA must not verify the old certificate");

    let (cert, key) = new_ca.leaf(&["shop.example"]);
    write(dir, "server.key", &key);
    write(dir, "server.pem", &cert);
    let start = Instant::now();
    let mut rotated = false;
    while start.elapsed() < Duration::from_secs(10) {
        if ok(&https(&mesh, &new_ca_file, "shop.example", 9446, "/orders", &[]).await.1) {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(rotated, "the rotated file was not served within 10 s");
    let (_, out) = https(&mesh, &old_ca_file, "shop.example", 9446, "/orders", &[]).await;
    assert!(!ok(&out), "the old certificate is still served");

    // A changed Secret arrives as a new config: the next connection uses it.
    let secret = pem_credential(old_ca.leaf(&["shop.example"]), None);
    set_gateway(&mesh, vec![tls_listener(9446, vec![tls_server("shop.example", GatewayTlsMode::Simple, Some(secret))])]);
    let mut served = false;
    for _ in 0..25 {
        if ok(&https(&mesh, &old_ca_file, "shop.example", 9446, "/orders", &[]).await.1) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "the certificate of the new config was not served");
}

#[tokio::test]
async fn https_redirect_answers_301_and_other_hosts_are_routed() {
    let mesh = Mesh::start().await;
    let listener = GatewayListener {
        port: 9080,
        protocol: Protocol::Http,
        http_routes: vec![web_route("shop.example", "/")],
        https_redirect_hosts: vec!["uk.bookinfo.com".into()],
        ..GatewayListener::default()
    };
    set_gateway(&mesh, vec![listener]);
    wait_bound(&mesh, 9080).await;
    let url = "http://127.0.0.1:9080/some/path?x=1";
    let (_, out) = curl(&mesh.net.a, &["-H", "Host: uk.bookinfo.com:9080", "-w", "%{http_code} %{redirect_url}", "-o", "/dev/null", url]).await;
    assert_eq!(out, "301 https://uk.bookinfo.com/some/path?x=1");
    let (_, out) = curl(&mesh.net.a, &["-H", "Host: shop.example", "-w", "\n%{http_code}", url]).await;
    assert!(out.ends_with("\n200") && out.contains("GET /some/path?x=1 HTTP/1.1"), "control: {out}");
}

/// A rustls echo server (an application that speaks TLS itself).
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

async fn tls_echo(addr: SocketAddr, sni: &'static str, config: Arc<rustls::ClientConfig>, payload: &'static [u8]) -> std::io::Result<(Option<Vec<u8>>, Vec<u8>)> {
    let work = async {
        let tcp = TcpStream::connect(addr).await?;
        let mut tls = TlsConnector::from(config).connect(ServerName::try_from(sni).unwrap(), tcp).await?;
        tls.write_all(payload).await?;
        let mut buf = Vec::new();
        tls.read_to_end(&mut buf).await?;
        Ok((tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec), buf))
    };
    tokio::time::timeout(Duration::from_secs(5), work).await.unwrap_or_else(|_| Err(std::io::Error::other("timed out")))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

#[tokio::test]
async fn passthrough_carries_the_clients_own_tls_to_the_app() {
    let mesh = Mesh::start().await;
    let app = rcgen::generate_simple_self_signed(vec!["app.example".to_string()]).unwrap();
    let cert: CertificateDer<'static> = app.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(app.signing_key.serialize_der()));
    let server = rustls::ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().unwrap();
    let mut server = server.with_no_client_auth().with_single_cert(vec![cert.clone()], key).unwrap();
    server.alpn_protocols = vec![b"h2".to_vec()];
    mesh.server_apps.spawn(tls_app(TLS_APP, Arc::new(server)));

    let host = "tlsapp.shop.svc.cluster.local";
    let mut config = (**mesh.client.config.borrow()).clone();
    let endpoint = mesh_endpoint(mesh.net.ip_b, TLS_APP, &mesh.id_b.to_string(), host);
    std::sync::Arc::make_mut(&mut config.outbound).services.push(service(host, Ipv4Addr::new(10, 96, 0, 30), TLS_APP, endpoint));
    mesh.client.config.send_replace(Arc::new(config));
    let mut pass = tls_server("*", GatewayTlsMode::Passthrough, None);
    pass.sni_hosts.clear();
    pass.tls_routes = vec![TlsRoute {
        sni_hosts: vec!["app.example".into()],
        destination: RouteDestination { host: host.into(), port: TLS_APP },
        source: "shop/app".into(),
    }];
    set_gateway(&mesh, vec![tls_listener(9447, vec![pass])]);
    wait_bound(&mesh, 9447).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().unwrap();
    let mut client = client.with_root_certificates(roots).with_no_client_auth();
    client.alpn_protocols = vec![b"h2".to_vec()];
    let client = Arc::new(client);
    let addr: SocketAddr = ([127, 0, 0, 1], 9447).into();
    let (alpn, echoed) = mesh.client.rt.spawn(tls_echo(addr, "app.example", client.clone(), b"end to end")).await.unwrap().expect("passthrough");
    assert_eq!((alpn.as_deref(), echoed.as_slice()), (Some(&b"h2"[..]), &b"end to end"[..]), "the app's TLS reached the client");
    let dst = mesh.b(TLS_APP);
    assert!(mesh.client.wait_record(|r| r.dst == dst && r.security == "mesh-mtls").await.is_some(), "gateway → app not mesh mTLS");
    // No tls route for the SNI: refused and logged.
    let refused = mesh.client.rt.spawn(tls_echo(addr, "nope.example", client, b"x")).await.unwrap();
    assert!(refused.is_err());
    assert!(wait_log(&["PASSTHROUGH on port 9447 from 127.0.0.1", "SNI nope.example"]).await.is_some());
}

#[tokio::test]
async fn istio_mutual_server_takes_mesh_clients_only() {
    let mesh = Mesh::start().await;
    set_gateway(&mesh, vec![tls_listener(9448, vec![tls_server("shop.example", GatewayTlsMode::IstioMutual, None)])]);
    wait_bound(&mesh, 9448).await;
    let bundle = mesh.ca.trust_bundle();
    let caller = spiffe("shop", "caller");
    let mesh_client = veil_identity::mesh_client_config(&issue(&mesh.ca, &caller), &bundle, std::slice::from_ref(&mesh.id_a)).unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], 9448).into();
    let request = b"GET /orders HTTP/1.1\r\nhost: shop.example\r\nconnection: close\r\n\r\n";
    let (_, reply) = mesh.client.rt.spawn(tls_echo(addr, "shop.example", mesh_client, request)).await.unwrap().expect("mesh client");
    assert!(reply.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&reply));
    // Control: a TLS client without a mesh certificate is refused.
    let other = Ca::new("outside");
    let ca_file = write(mesh.dir.path(), "outside.pem", &other.0.pem());
    let (code, _) = https(&mesh, &ca_file, "shop.example", 9448, "/orders", &["-k"]).await;
    assert_ne!(code, 0);
    assert!(wait_log(&["port 9448 from 127.0.0.1:", "tls.mode ISTIO_MUTUAL"]).await.is_some());
}
