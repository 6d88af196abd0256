//! TLS origination end to end (needs root): an app in namespace `a` sends
//! plaintext, its sidecar originates TLS (DestinationRule SIMPLE) or mTLS
//! (MUTUAL) to real rustls servers in namespace `b` (no sidecar there), with
//! certificates made here. Negatives: wrong CA, SAN mismatch, no CA, and a
//! MUTUAL server reached without a client certificate are refused and logged.

mod common;

use common::netns::{NetnsPair, NsRuntime};
use common::tls_server::{self, tls_echo};
use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use veil_identity::{CertificateAuthority, TrustDomain};
use veil_model::*;

const SIMPLE_PORT: u16 = 8443;
const MUTUAL_PORT: u16 = 8444;
const SERVER_NAME: &str = "server.test";

/// CAs, server and client certificates as PEM files readable by uid 1337.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn create(dir: &Path) -> Pki {
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        };
        let ca = |cn: &str| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            p.distinguished_name.push(rcgen::DnType::CommonName, cn);
            CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
        };
        let (server_ca, other_ca, client_ca) = (ca("server ca"), ca("other ca"), ca("client ca"));
        write("ca.pem", server_ca.pem());
        write("other-ca.pem", other_ca.pem());
        write("client-ca.pem", client_ca.pem());
        for (name, sans, issuer) in [("server", vec![SERVER_NAME.to_string()], &server_ca), ("client", vec!["client.test".to_string()], &client_ca)] {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(sans).unwrap().signed_by(&key, issuer).unwrap();
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}.key"), key.serialize_pem());
        }
        Pki { dir: dir.to_path_buf() }
    }

    /// A server config presenting `server.pem`; with `client_ca`, client
    /// certificates signed by it are required.
    fn server_config(&self, client_ca: Option<&str>) -> Arc<rustls::ServerConfig> {
        let read = |name: &str| std::fs::read(self.file(name)).unwrap();
        let ca = client_ca.map(read);
        tls_server::server_config(&read("server.pem"), &read("server.key"), ca.as_deref())
    }
}

/// One client namespace with a sidecar whose outbound config has one
/// service per `(VIP, endpoint port, UpstreamTls)`, and TLS servers in `b`.
struct Setup {
    client: Sidecar,
    app: NsRuntime,
    _servers: NsRuntime,
    pair: NetnsPair,
    _dir: tempfile::TempDir,
}

fn vip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 96, 9, n)
}

impl Setup {
    async fn start(services: impl Fn(&Pki, Ipv4Addr) -> Vec<(u8, u16, UpstreamTls)>) -> Setup {
        init_logs();
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let pki = Pki::create(dir.path());
        let pair = NetnsPair::create_client_only();
        let servers = NsRuntime::start(&pair.b, None);
        servers.spawn(tls_echo(SIMPLE_PORT, pki.server_config(None)));
        servers.spawn(tls_echo(MUTUAL_PORT, pki.server_config(Some("client-ca.pem"))));
        let probe = servers.spawn(async {
            for _ in 0..100 {
                if TcpStream::connect(("127.0.0.1", MUTUAL_PORT)).await.is_ok() && TcpStream::connect(("127.0.0.1", SIMPLE_PORT)).await.is_ok() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            false
        });
        assert!(probe.await.unwrap(), "TLS servers did not start");
        let ca = CertificateAuthority::load_or_create(&dir.path().join("mesh-ca"), TrustDomain::default()).unwrap();
        let id = spiffe("shop", "client");
        let outbound = Outbound {
            services: services(&pki, pair.ip_b)
                .into_iter()
                .map(|(n, port, tls)| {
                    let ep = Endpoint { ip: IpAddr::V4(pair.ip_b), port, pod: "external".into(), tls };
                    common::service(&format!("ext{n}.shop.svc.cluster.local"), vip(n), 80, ep)
                })
                .collect(),
            ..Outbound::default()
        };
        let config = ProxyConfig {
            version: 1,
            node: node("client", "shop", "client", pair.ip_a),
            inbound: Inbound { mode: MtlsMode::Permissive, ports: vec![], sniff_timeout_ms: 200 },
            outbound: outbound.into(),
            gateway: None,
        };
        let client = Sidecar::start(&pair.a, dir.path(), config, issue(&ca, &id), ca.trust_bundle()).await;
        let app = NsRuntime::start(&pair.a, None);
        Setup { client, app, _servers: servers, pair, _dir: dir }
    }

    async fn call(&self, n: u8, payload: &'static [u8]) -> std::io::Result<Vec<u8>> {
        self.app.spawn(roundtrip(SocketAddr::from((vip(n), 80)), payload)).await.unwrap()
    }

    fn b(&self, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.pair.ip_b), port)
    }
}

fn simple(pki: &Pki, ca: &str, sans: &[&str], insecure: bool) -> UpstreamTls {
    UpstreamTls::Simple {
        sni: Some(SERVER_NAME.into()),
        ca_file: (!ca.is_empty()).then(|| pki.file(ca)),
        subject_alt_names: sans.iter().map(|s| s.to_string()).collect(),
        insecure_skip_verify: insecure,
    }
}

fn mutual(pki: &Pki) -> UpstreamTls {
    UpstreamTls::Mutual {
        sni: Some(SERVER_NAME.into()),
        ca_file: Some(pki.file("ca.pem")),
        subject_alt_names: vec![],
        insecure_skip_verify: false,
        cert_file: pki.file("client.pem"),
        key_file: pki.file("client.key"),
    }
}

#[tokio::test]
async fn simple_and_mutual_origination_from_plaintext() {
    let s = Setup::start(|pki, _| {
        vec![
            (1, SIMPLE_PORT, simple(pki, "ca.pem", &[], false)),
            (2, MUTUAL_PORT, mutual(pki)),
            (3, MUTUAL_PORT, simple(pki, "ca.pem", &[], false)),
            (4, SIMPLE_PORT, simple(pki, "ca.pem", &[SERVER_NAME], false)),
        ]
    })
    .await;
    assert_eq!(s.call(1, b"simple tls").await.expect("SIMPLE"), b"simple tls");
    let rec = s.client.wait_record(|r| r.direction == "outbound" && r.dst == s.b(SIMPLE_PORT)).await.expect("record");
    assert_eq!(rec.security, "tls");
    assert_eq!(rec.source_principal, None, "no mesh identity on originated TLS");
    assert_eq!(s.call(4, b"by san").await.expect("SIMPLE with subjectAltNames"), b"by san");
    assert_eq!(s.call(2, b"mutual tls").await.expect("MUTUAL"), b"mutual tls");
    let rec = s.client.wait_record(|r| r.dst == s.b(MUTUAL_PORT) && r.security == "tls").await;
    assert!(rec.is_some(), "no record of the MUTUAL connection");
    // Control for MUTUAL: the same server without a client certificate refuses.
    let refused = s.call(3, b"no client cert").await;
    assert!(refused.map(|b| b.is_empty()).unwrap_or(true), "server accepted a client without certificate");
}

#[tokio::test]
async fn wrong_ca_san_mismatch_and_missing_ca_are_refused_and_logged() {
    let s = Setup::start(|pki, _| {
        vec![
            (11, SIMPLE_PORT, simple(pki, "other-ca.pem", &[], false)),
            (12, SIMPLE_PORT, simple(pki, "ca.pem", &["other.test"], false)),
            (13, SIMPLE_PORT, simple(pki, "", &[], false)),
            (14, SIMPLE_PORT, simple(pki, "", &[], true)),
            (15, SIMPLE_PORT, simple(pki, "ca.pem", &[], false)),
            (16, SIMPLE_PORT, UpstreamTls::Unsupported { reason: "credentialName \"x\" is not supported yet".into() }),
        ]
    })
    .await;
    // Control: the right CA works against the same server.
    assert_eq!(s.call(15, b"control").await.expect("right CA"), b"control");
    let peer = s.pair.ip_a.to_string();
    let dst = s.b(SIMPLE_PORT).to_string();

    let wrong = s.call(11, b"wrong ca").await;
    assert!(wrong.map(|b| b.is_empty()).unwrap_or(true), "wrong CA: bytes were echoed");
    let line = wait_log(&["outbound connection failed", "ext11.shop", &peer, &format!("TLS origination handshake with {dst} failed"), "UnknownIssuer"]).await;
    assert!(line.is_some(), "no refusal log for a wrong CA: {:#?}", log_lines("ext11"));

    let mismatch = s.call(12, b"san").await;
    assert!(mismatch.map(|b| b.is_empty()).unwrap_or(true), "SAN mismatch: bytes were echoed");
    assert!(wait_log(&["ext12.shop", "not valid for name \"other.test\"", SERVER_NAME]).await.is_some(), "{:#?}", log_lines("ext12"));

    let no_ca = s.call(13, b"no ca").await;
    assert!(no_ca.map(|b| b.is_empty()).unwrap_or(true), "no CA: bytes were echoed");
    assert!(wait_log(&["ext13.shop", "gives no caCertificates"]).await.is_some(), "{:#?}", log_lines("ext13"));
    assert_eq!(s.call(14, b"insecure").await.expect("insecureSkipVerify"), b"insecure");

    let unsupported = s.call(16, b"unsupported").await;
    assert!(unsupported.map(|b| b.is_empty()).unwrap_or(true));
    assert!(wait_log(&["ext16.shop", "is not supported yet"]).await.is_some(), "{:#?}", log_lines("ext16"));
    // Only the control and the insecure call reached the server over TLS.
    // Records are written in batches: wait (bounded) for the writer to flush.
    let mut ok: Vec<_> = Vec::new();
    for _ in 0..30 {
        ok = s.client.records().into_iter().filter(|r| r.security == "tls").collect();
        if ok.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(ok.len(), 2, "{ok:#?}");
}
