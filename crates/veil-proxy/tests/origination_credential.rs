//! TLS origination with a DestinationRule `credentialName` end to end (needs
//! root): the proxy in namespace `a` receives the Secret's PEM in its config
//! (`UpstreamTls::Credential`, as the model gives an egress gateway) and
//! originates TLS (SIMPLE) or mTLS (MUTUAL) to real rustls servers in
//! namespace `b`, one of which requires a client certificate. Negatives: a
//! wrong CA, no client certificate, a client certificate of another CA and an
//! unreadable key are refused and logged; a changed Secret (a new config)
//! takes effect on the next connection without restarting the proxy.

mod common;

use common::netns::{NetnsPair, NsRuntime};
use common::tls_server::{self, tls_echo};
use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use veil_identity::{CertificateAuthority, TrustDomain};
use veil_model::*;

const SIMPLE_PORT: u16 = 9443;
const MUTUAL_PORT: u16 = 9444;
const SERVER_NAME: &str = "external.test";
const SECRET: &str = "Secret istio-system/client-credential";

/// The PEM a Secret would hold: the server's CA, another CA, a client
/// certificate the MUTUAL server accepts and one it does not.
struct Pki {
    server_ca: String,
    other_ca: String,
    client_ca: String,
    server: (String, String),
    client: (String, String),
    foreign_client: (String, String),
}

impl Pki {
    fn create() -> Pki {
        let ca = |cn: &str| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            p.distinguished_name.push(rcgen::DnType::CommonName, cn);
            CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
        };
        let leaf = |san: &str, issuer: &CertifiedIssuer<'static, KeyPair>| {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(vec![san.to_string()]).unwrap().signed_by(&key, issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_ca, other_ca, client_ca) = (ca("server ca"), ca("other ca"), ca("client ca"));
        Pki {
            server: leaf(SERVER_NAME, &server_ca),
            client: leaf("client.test", &client_ca),
            foreign_client: leaf("client.test", &other_ca),
            server_ca: server_ca.pem(),
            other_ca: other_ca.pem(),
            client_ca: client_ca.pem(),
        }
    }

    /// A server config presenting `server`; with `client_ca`, client
    /// certificates signed by it are required.
    fn server_config(&self, client_ca: Option<&str>) -> Arc<rustls::ServerConfig> {
        tls_server::server_config(self.server.0.as_bytes(), self.server.1.as_bytes(), client_ca.map(str::as_bytes))
    }
}

/// `UpstreamTls::Credential` as the model builds it from a Secret.
fn credential(ca: &str, client: Option<&(String, String)>) -> UpstreamTls {
    UpstreamTls::Credential {
        sni: Some(SERVER_NAME.into()),
        subject_alt_names: vec![],
        insecure_skip_verify: false,
        source: SECRET.into(),
        ca: Some(PemSource::Pem(ca.into())),
        client: client.map(|(cert, key)| ClientCertificate { cert: PemSource::Pem(cert.clone()), key: PemSource::Pem(key.clone()) }),
    }
}

fn vip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 96, 10, n)
}

struct Setup {
    proxy: Sidecar,
    app: NsRuntime,
    _servers: NsRuntime,
    pair: NetnsPair,
    pki: Pki,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn start() -> Setup {
        init_logs();
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let pki = Pki::create();
        let pair = NetnsPair::create_client_only();
        let servers = NsRuntime::start(&pair.b, None);
        servers.spawn(tls_echo(SIMPLE_PORT, pki.server_config(None)));
        servers.spawn(tls_echo(MUTUAL_PORT, pki.server_config(Some(&pki.client_ca))));
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
        let id = spiffe("istio-system", "istio-egressgateway-service-account");
        let config = Setup::config(&pair, &pki, 1, credential(&pki.server_ca, Some(&pki.client)));
        let proxy = Sidecar::start(&pair.a, dir.path(), config, issue(&ca, &id), ca.trust_bundle()).await;
        let app = NsRuntime::start(&pair.a, None);
        Setup { proxy, app, _servers: servers, pair, pki, _dir: dir }
    }

    /// One service per case; service 2 (MUTUAL) gets `mutual`, the Secret
    /// under test.
    fn config(pair: &NetnsPair, pki: &Pki, version: u64, mutual: UpstreamTls) -> ProxyConfig {
        let bad_key = (pki.client.0.clone(), "not a key".to_string());
        let cases = [
            (1, SIMPLE_PORT, credential(&pki.server_ca, None)),
            (2, MUTUAL_PORT, mutual),
            (3, MUTUAL_PORT, credential(&pki.server_ca, None)),
            (4, SIMPLE_PORT, credential(&pki.other_ca, None)),
            (5, MUTUAL_PORT, credential(&pki.server_ca, Some(&pki.foreign_client))),
            (6, MUTUAL_PORT, credential(&pki.server_ca, Some(&bad_key))),
        ];
        let services = cases
            .into_iter()
            .map(|(n, port, tls)| {
                let ep = Endpoint { ip: IpAddr::V4(pair.ip_b), port, pod: "external".into(), tls };
                service(&format!("cred{n}.shop.svc.cluster.local"), vip(n), 80, ep)
            })
            .collect();
        ProxyConfig {
            version,
            node: node("egress", "istio-system", "istio-egressgateway-service-account", pair.ip_a),
            inbound: Inbound { mode: MtlsMode::Permissive, ports: vec![], sniff_timeout_ms: 200 },
            outbound: Outbound { services, ..Outbound::default() }.into(),
            gateway: None,
        }
    }

    async fn call(&self, n: u8, payload: &'static [u8]) -> std::io::Result<Vec<u8>> {
        self.app.spawn(roundtrip(SocketAddr::from((vip(n), 80)), payload)).await.unwrap()
    }

    fn b(&self, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.pair.ip_b), port)
    }
}

fn refused(result: std::io::Result<Vec<u8>>) -> bool {
    result.map(|b| b.is_empty()).unwrap_or(true)
}

#[tokio::test]
async fn simple_and_mutual_from_secret_pem_and_refusals() {
    let s = Setup::start().await;
    assert_eq!(s.call(1, b"simple from secret").await.expect("SIMPLE with the Secret's CA"), b"simple from secret");
    let rec = s.proxy.wait_record(|r| r.direction == "outbound" && r.dst == s.b(SIMPLE_PORT)).await.expect("record");
    assert_eq!(rec.security, "tls");
    assert_eq!(s.call(2, b"mutual from secret").await.expect("MUTUAL with the Secret's certificate"), b"mutual from secret");
    assert!(s.proxy.wait_record(|r| r.dst == s.b(MUTUAL_PORT) && r.security == "tls").await.is_some(), "no MUTUAL record");

    let peer = s.pair.ip_a.to_string();
    // Control for the client certificate: the same server, SIMPLE, refuses.
    assert!(refused(s.call(3, b"no client cert").await), "server accepted a client without certificate");
    let mutual_dst = s.b(MUTUAL_PORT).to_string();
    let line = wait_log(&[&format!("TLS origination to {mutual_dst}"), "the server asked for a client certificate"]).await;
    assert!(line.is_some(), "{:#?}", log_lines("client certificate"));
    // A CA that did not sign the server (Istio's "fake root": 503).
    assert!(refused(s.call(4, b"wrong ca").await), "wrong CA: bytes were echoed");
    let dst = s.b(SIMPLE_PORT).to_string();
    let line = wait_log(&["outbound connection failed", "cred4.shop", &peer, &format!("TLS origination handshake with {dst} failed"), "UnknownIssuer"]).await;
    assert!(line.is_some(), "{:#?}", log_lines("cred4"));
    // A client certificate of another CA (Istio's "invalid client cert": 503).
    assert!(refused(s.call(5, b"foreign client").await), "foreign client certificate accepted");
    // An unreadable key names the Secret and the key.
    assert!(refused(s.call(6, b"bad key").await));
    let line = wait_log(&["cred6.shop", "the private key (tls.key or key) of Secret istio-system/client-credential"]).await;
    assert!(line.is_some(), "{:#?}", log_lines("cred6"));
}

#[tokio::test]
async fn a_changed_secret_takes_effect_with_the_next_config() {
    let s = Setup::start().await;
    assert_eq!(s.call(2, b"before").await.expect("MUTUAL with the valid Secret"), b"before");
    // The Secret now holds a certificate the server does not accept.
    let foreign = credential(&s.pki.server_ca, Some(&s.pki.foreign_client));
    s.proxy.config.send(Arc::new(Setup::config(&s.pair, &s.pki, 2, foreign))).unwrap();
    let mut rotated = false;
    for _ in 0..30 {
        if refused(s.call(2, b"rotated").await) {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rotated, "the rotated (foreign) certificate was not used");
    // Rotated back: accepted again, same proxy.
    let valid = credential(&s.pki.server_ca, Some(&s.pki.client));
    s.proxy.config.send(Arc::new(Setup::config(&s.pair, &s.pki, 3, valid))).unwrap();
    let mut back = Err(std::io::Error::other("not tried"));
    for _ in 0..30 {
        back = s.call(2, b"back").await;
        if back.as_ref().is_ok_and(|b| b == b"back") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(back.expect("valid Secret again"), b"back");
}
