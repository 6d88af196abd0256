//! End to end: `examples/egress-origination` (seed 004). An in-mesh client calls
//! `http://external-service.apps.e5dd.opentlc.com/` in plain HTTP; its sidecar sends the
//! call over ISTIO_MUTUAL (SNI = the external host) to the egress gateway, which originates
//! mutual TLS with the client certificate of the DestinationRule to an external nginx that
//! requires one (`ssl_verify_client on`). The external nginx runs in its own network
//! namespace outside the mesh, on the pod bridge, so `veil audit` captures both hops.
//!
//! Then, editing the running configuration: a wrong CA at the egress gateway → 503 and a
//! log naming the verification error; no client certificate (mode SIMPLE) → nginx answers
//! 400 and the gateway logs that the server asked for one; the ServiceEntry removed under
//! `REGISTRY_ONLY` → the sidecar refuses and names the destination; and, as the control,
//! the same call under `ALLOW_ANY` passes through to the external host.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const HOST: &str = "external-service.apps.e5dd.opentlc.com";
const EXTERNAL_IP: &str = "10.209.250.10";
const SEED: &str = "004-egress-mtls-origination.yaml";
const EGRESS: &str = "istio-egressgateway";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/sleep";
const EGRESS_ID: &str = "spiffe://cluster.local/ns/istio-system/sa/istio-egressgateway-service-account";

/// A copy of the example with `setup.sh` run on it, plus a CA nothing is signed by
/// (`certs/ca/fake-root.pem`, mounted beside the real chain).
fn prepared() -> tempfile::TempDir {
    let dir = copy_example("egress-origination");
    let out = run(Command::new(dir.path().join("setup.sh")).arg("--force"));
    assert!(out.status.success(), "setup.sh: {}", text(&out));
    for made in ["certs/ca/ca-chain.cert.pem", "certs/client/tls.crt", "certs/client/tls.key", "certs/server/server.chain.pem"] {
        assert!(dir.path().join(made).is_file(), "setup.sh did not make {made}");
    }
    let fake = dir.path().join("certs/ca/fake-root.pem");
    let key = dir.path().join("certs/fake-root.key");
    let out = run(Command::new("openssl").args(["req", "-x509", "-nodes", "-days", "2", "-newkey", "rsa:2048", "-subj", "/CN=Fake Root"]).arg("-keyout").arg(&key).arg("-out").arg(&fake));
    assert!(out.status.success(), "openssl: {}", text(&out));
    dir
}

/// `curl http://<HOST>/` from the client pod: (curl exit code, HTTP status, headers + body).
fn call(mesh: &Mesh) -> (i32, u16, String) {
    let url = format!("http://{HOST}/");
    let out = mesh.exec("sleep", &["curl", "-sS", "-m", "10", "-D", "-", "-w", "\n%{http_code}", &url]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", "0"));
    let body = format!("{body}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), code.trim().parse().unwrap_or(0), body)
}

/// Calls until `done` holds (≤ 40 s, every 500 ms); returns the last result.
fn call_until(mesh: &Mesh, what: &str, done: impl Fn(&(i32, u16, String)) -> bool) -> (i32, u16, String) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let last = call(mesh);
        if done(&last) {
            return last;
        }
        assert!(Instant::now() < deadline, "{what}: last call {last:?}\n{}", mesh.log());
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn flows_between<'a>(report: &'a serde_json::Value, client_pod: &str, server: &str) -> Vec<&'a serde_json::Value> {
    let flows = report["flows"].as_array().into_iter().flatten();
    flows
        .filter(|f| f["client_pod"].as_str().is_some_and(|p| p.contains(client_pod)))
        .filter(|f| f["server"].as_str().is_some_and(|s| s.starts_with(server)))
        .collect()
}

#[test]
fn seed_004_egress_gateway_originates_mutual_tls_to_an_external_nginx() {
    let dir = prepared();
    let seed = dir.path().join(SEED);
    let mesh = Mesh::up(dir.path());
    assert!(mesh.log().contains(&format!("external nginx {EXTERNAL_IP}")), "{}", mesh.log());
    let gateway_ip = mesh.pod_ip(EGRESS);

    // 1. The tutorial's call, with the capture running.
    let audit = mesh.audit(6, &["-o", "json"]);
    for _ in 0..3 {
        let (rc, code, body) = call(&mesh);
        assert_eq!((rc, code), (0, 200), "{body}\n{}", mesh.proxy_log("istio-system", EGRESS));
        assert!(body.contains("Welcome to nginx!"), "nginx's page: {body}");
        let headers = body.to_ascii_lowercase();
        assert!(headers.contains("x-client-subject: cn=istio-egressgateway,o=client inc."), "nginx saw the gateway's client certificate: {body}");
    }
    let out = audit.wait_with_output().expect("veil audit");
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("veil audit -o json: {e}\n{}", text(&out)));
    let to_gateway = flows_between(&report, "sleep", &format!("{gateway_ip}:443"));
    assert!(!to_gateway.is_empty(), "no sidecar → egress gateway flow:\n{report:#}");
    for f in to_gateway {
        assert_eq!(f["class"], "mesh-mtls", "sidecar → egress gateway: {f:#}");
        assert_eq!((f["source_principal"].as_str(), f["destination_principal"].as_str()), (Some(CLIENT_ID), Some(EGRESS_ID)), "{f:#}");
    }
    let to_nginx = flows_between(&report, EGRESS, &format!("{EXTERNAL_IP}:443"));
    assert!(!to_nginx.is_empty(), "no egress gateway → nginx flow:\n{report:#}");
    for f in to_nginx {
        assert_eq!(f["class"], "tls", "egress gateway → external nginx is TLS, not mesh mTLS: {f:#}");
    }
    assert!(flows_between(&report, "sleep", &format!("{EXTERNAL_IP}:")).is_empty(), "the client never reaches nginx itself:\n{report:#}");

    // 2. The egress gateway trusts the wrong CA: 503, and the verification error is logged.
    edit(&seed, "caCertificates: /etc/nginx-ca-certs/ca-chain.cert.pem", "caCertificates: /etc/nginx-ca-certs/fake-root.pem");
    let (_, code, body) = call_until(&mesh, "wrong CA → 503", |r| r.1 == 503);
    assert_eq!(code, 503, "{body}");
    let log = mesh.proxy_log("istio-system", EGRESS);
    assert!(log.contains(&format!("TLS origination handshake with {EXTERNAL_IP}:443 failed")) && log.contains("invalid peer certificate"), "{log}");
    edit(&seed, "caCertificates: /etc/nginx-ca-certs/fake-root.pem", "caCertificates: /etc/nginx-ca-certs/ca-chain.cert.pem");
    call_until(&mesh, "the right CA again → 200", |r| r.1 == 200);

    // 3. No client certificate (mode SIMPLE): nginx refuses with 400, the gateway says why.
    edit(&seed, "        mode: MUTUAL\n", "        mode: SIMPLE\n");
    let (_, _, body) = call_until(&mesh, "SIMPLE → nginx 400", |r| r.1 == 400);
    assert!(body.contains("No required SSL certificate was sent"), "nginx's refusal: {body}");
    let log = mesh.proxy_log("istio-system", EGRESS);
    assert!(log.contains("the server asked for a client certificate") && log.contains("tls mode SIMPLE"), "{log}");
    edit(&seed, "        mode: SIMPLE\n", "        mode: MUTUAL\n");
    call_until(&mesh, "MUTUAL again → 200", |r| r.1 == 200);

    // 4. REGISTRY_ONLY without the ServiceEntry: refused at the sidecar, naming the destination.
    let text = std::fs::read_to_string(&seed).expect("seed");
    let (entry, rest) = text.split_once("---\n").expect("the ServiceEntry is the first document");
    assert!(entry.contains("kind: ServiceEntry"), "{entry}");
    std::fs::write(&seed, rest).expect("write");
    let (rc, code, body) = call_until(&mesh, "no ServiceEntry → refused", |r| r.0 != 0);
    assert_ne!(code, 200, "{body}");
    let log = mesh.proxy_log("default", "sleep");
    let refusal = format!("outbound connection to {EXTERNAL_IP}:80 refused");
    assert!(log.contains(&refusal) && log.contains("REGISTRY_ONLY"), "rc {rc}: {log}");

    // 5. Control: under ALLOW_ANY the same call passes through, in plain, to the external host.
    edit(&dir.path().join("mesh-config.yaml"), "mode: REGISTRY_ONLY", "mode: ALLOW_ANY");
    let (_, _, body) = call_until(&mesh, "ALLOW_ANY → passthrough", |r| r.1 == 200);
    assert!(body.contains("plain port 80 of the external nginx"), "{body}");

    // Control of 4: the ServiceEntry back, the egress path works again.
    std::fs::write(&seed, format!("{entry}---\n{rest}")).expect("write");
    let (_, _, body) = call_until(&mesh, "ServiceEntry back → nginx over mTLS", |r| r.2.contains("Welcome to nginx!"));
    assert!(body.to_ascii_lowercase().contains("x-client-verify: success"), "{body}");
    drop(mesh);
    let left: Vec<String> = leftovers().into_iter().filter(|l| l.contains("veil-ext-")).collect();
    assert!(left.is_empty(), "the external namespace is removed: {left:?}");
    assert!(!Path::new("/etc/nginx-client-certs").exists(), "mounts never touch the host");
}
