//! End to end: the TCP health check of seed 001 (`001-healthcheck-tcp-gateway.yaml`
//! in `examples/pii-demo`). A TCP connect to the ingress gateway's published port
//! 10001 reaches the health service through the `VirtualService` `tcp:` route, and
//! `veil audit` classifies the gateway → service hop as mesh mTLS; a control run
//! without injection in `httpd-healthcheck` shows the audit finds that hop in clear.

mod common;

use common::*;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const GATEWAY_ID: &str =
    "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";
const HEALTH_ID: &str = "spiffe://cluster.local/ns/httpd-healthcheck/sa/httpd-healthcheck";

/// Connects to `addr` and reads what the server sends until it closes (≤ 10 s).
fn probe(addr: &str) -> Result<String, String> {
    let addr: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while Instant::now() < deadline && got.len() < 4096 {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(buf.get(..n).unwrap_or_default()),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue
            }
            Err(e) => {
                return Err(format!(
                    "read {addr}: {e} after {:?}",
                    String::from_utf8_lossy(&got)
                ))
            }
        }
    }
    Ok(String::from_utf8_lossy(&got).to_string())
}

/// `veil audit -o json` while `probe` runs; returns the flows to the health pod's port 10001.
fn audit_probe(mesh: &Mesh) -> (String, Vec<serde_json::Value>) {
    let gw = mesh.published(10001);
    let audit = mesh.audit(5, &["-o", "json"]);
    let answer = probe(&gw);
    let out = audit.wait_with_output().expect("veil audit");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("veil audit -o json: {e}\n{}", text(&out)));
    let health_ip = mesh.pod_ip("httpd-healthcheck");
    let flows = report["flows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["server"].as_str() == Some(&format!("{health_ip}:10001")))
        .cloned()
        .collect();
    (
        answer.unwrap_or_else(|e| panic!("probe of gateway {gw}: {e}\n{}", mesh.log())),
        flows,
    )
}

#[test]
fn tcp_connect_to_gateway_port_10001_reaches_the_health_service_over_mesh_mtls() {
    let dir = copy_example("pii-demo");
    let mesh = Mesh::up(dir.path());
    assert!(mesh.log().contains("httpd-healthcheck"), "{}", mesh.log());
    let (answer, flows) = audit_probe(&mesh);
    assert_eq!(
        answer, "httpd-healthcheck ok httpd-healthcheck\n",
        "the health service answered through the gateway"
    );
    assert!(
        !flows.is_empty(),
        "the gateway → health service hop was captured"
    );
    for f in &flows {
        assert!(
            f["client_pod"]
                .as_str()
                .is_some_and(|p| p.contains("istio-ingressgateway")),
            "{f:#}"
        );
        assert_eq!(
            f["class"], "mesh-mtls",
            "gateway → health service must be mesh mTLS: {f:#}"
        );
        assert_eq!(f["source_principal"], GATEWAY_ID, "{f:#}");
        assert_eq!(f["destination_principal"], HEALTH_ID, "{f:#}");
        assert!(
            f["bytes_to_client"].as_u64().is_some_and(|b| b > 0),
            "the answer crossed the link: {f:#}"
        );
    }
    // The HTTP server of the same gateway still routes by host to the PII app.
    let (code, body) = post_person(
        &mesh.published(80),
        "pii-demo.apps.hl.test",
        "Health Check",
        "hc@example.test",
    );
    assert_eq!(code, 200, "{body}");
}

#[test]
fn control_without_injection_the_gateway_hop_is_plaintext() {
    let dir = copy_example("pii-demo");
    edit(
        &dir.path().join("healthcheck.yaml"),
        "istio-injection: enabled",
        "istio-injection: disabled",
    );
    let mesh = Mesh::up(dir.path());
    let (answer, flows) = audit_probe(&mesh);
    assert_eq!(
        answer, "httpd-healthcheck ok httpd-healthcheck\n",
        "reached without a sidecar too"
    );
    assert!(
        !flows.is_empty(),
        "the gateway → health service hop was captured"
    );
    for f in &flows {
        assert_eq!(
            f["class"], "plaintext",
            "no sidecar: the audit must see the hop in clear: {f:#}"
        );
    }
}
