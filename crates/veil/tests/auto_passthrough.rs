//! End to end: a Gateway server `tls.mode: AUTO_PASSTHROUGH` (istio-cases 13 unchanged,
//! served by the east-west gateway pod `veil up` runs for its `istio: eastwestgateway`
//! selector) in front of `examples/bookinfo-lite`, with the
//! subsets of case 02 and namespace-wide STRICT mTLS. A client outside the mesh, holding a
//! mesh certificate from `veil cert export`, runs `openssl s_client` against the gateway
//! with Istio's cluster-name SNI `outbound_.9080_.<subset>_.reviews.default.svc.cluster.local`
//! and ALPN `istio`: the gateway does not terminate, the client's mTLS ends at the STRICT
//! sidecar of the subset's pod, and the answer names that pod. `veil audit` shows the hop
//! gateway → reviews as mesh mTLS between the client's identity and reviews'.
//!
//! Refusals, each with its control: no client certificate (the destination sidecar refuses,
//! not the gateway), an unknown service, a host the server does not serve, and a client
//! without Istio's ALPN; the gateway logs each with the SNI.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/istio-cases");
const GATEWAY: &str = "istio-eastwestgateway";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/outside/sa/east-west-client";
const REVIEWS_ID: &str = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews";
const STRICT: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: default\nspec:\n  mtls:\n    mode: STRICT\n";

/// bookinfo-lite with case 02, STRICT, and case 13 as Istio's multicluster sample has it.
fn prepared() -> tempfile::TempDir {
    let example = copy_example("bookinfo-lite");
    let dir = example.path();
    std::fs::copy(Path::new(CASES).join("02-bookinfo-destination-rule-all.yaml"), dir.join("02-bookinfo-destination-rule-all.yaml")).expect("case 02");
    std::fs::copy(Path::new(CASES).join("13-gateway-auto-passthrough.yaml"), dir.join("13-gateway-auto-passthrough.yaml")).expect("case 13");
    std::fs::write(dir.join("strict.yaml"), STRICT).expect("write");
    example
}

/// `openssl s_client` through the gateway with `sni` and `alpn`, sending one GET;
/// returns stdout + stderr.
fn s_client(addr: &str, certs: &Path, sni: &str, alpn: &str, with_cert: bool) -> String {
    let mut cmd = Command::new("timeout");
    cmd.args(["10", "openssl", "s_client", "-ign_eof", "-verify_return_error", "-tls1_3"])
        .args(["-connect", addr, "-servername", sni, "-alpn", alpn, "-CAfile"])
        .arg(certs.join("root-cert.pem"));
    if with_cert {
        cmd.arg("-cert").arg(certs.join("cert-chain.pem")).arg("-key").arg(certs.join("key.pem"));
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("s_client");
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        let _ = stdin.write_all(b"GET / HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n");
    }
    text(&child.wait_with_output().expect("s_client output"))
}

/// Reads a log (every 200 ms, at most 10 s) until `done` holds; returns the last text.
fn log_until(read: impl Fn() -> String, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = read();
        if done(&log) || Instant::now() >= deadline {
            return log;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn sni(subset: &str, host: &str) -> String {
    format!("outbound_.9080_.{subset}_.{host}")
}

#[test]
fn auto_passthrough_carries_a_clients_mesh_mtls_to_the_strict_sidecar_its_sni_names() {
    let example = prepared();
    let mesh = Mesh::up(example.path());
    let addr = mesh.published(15443);
    let out = tempfile::tempdir().expect("tempdir");
    let certs = out.path().join("certs");
    let export = run(Command::new(veil())
        .args(["cert", "export", "--identity", "outside/east-west-client", "--dir"])
        .arg(&certs)
        .arg("--state-dir")
        .arg(mesh.state_dir()));
    assert!(export.status.success(), "{}", text(&export));
    let reviews = "reviews.default.svc.cluster.local";
    let gateway_log = || mesh.proxy_log("istio-system", GATEWAY);

    // The subset in the SNI picks the pod; the audit sees the hop as the client's mTLS.
    let audit = mesh.audit(8, &["-o", "json"]);
    for subset in ["v2", "v1", "v3"] {
        let got = s_client(&addr, &certs, &sni(subset, reviews), "istio", true);
        assert!(got.contains(&format!("reviews-{subset} {subset}")), "subset {subset}:\n{got}\n{}", gateway_log());
        assert!(got.contains("Verify return code: 0 (ok)") && got.contains("ALPN protocol: istio"), "{got}");
    }
    let report = audit.wait_with_output().expect("veil audit");
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap_or_else(|e| panic!("audit json: {e}\n{}", text(&report)));
    let v2_ip = mesh.pod_ip("reviews-v2");
    let flows: Vec<&serde_json::Value> = report["flows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["server"].as_str().is_some_and(|s| s == format!("{v2_ip}:9080")))
        .collect();
    assert!(!flows.is_empty(), "no flow to reviews-v2:\n{report:#}");
    for f in flows {
        assert!(f["client_pod"].as_str().is_some_and(|p| p.contains(GATEWAY)), "the gateway carries it: {f:#}");
        assert_eq!(f["class"], "mesh-mtls", "{f:#}");
        assert_eq!((f["source_principal"].as_str(), f["destination_principal"].as_str()), (Some(CLIENT_ID), Some(REVIEWS_ID)), "end to end, not the gateway's identity: {f:#}");
    }
    // No subset: any version.
    let any = s_client(&addr, &certs, &sni("", reviews), "istio", true);
    assert!(any.contains("reviews-v"), "{any}");

    // Without a client certificate the gateway still forwards, and the STRICT sidecar refuses.
    let refusals = |log: &str| log.lines().filter(|l| l.contains("inbound connection from") && l.contains("refused")).count();
    let before = refusals(&mesh.proxy_log("default", "reviews-v2"));
    let naked = s_client(&addr, &certs, &sni("v2", reviews), "istio", false);
    assert!(!naked.contains("reviews-v2 v2"), "{naked}");
    let refused_at = log_until(|| mesh.proxy_log("default", "reviews-v2"), |l| refusals(l) > before);
    assert!(refusals(&refused_at) > before, "the destination sidecar refuses the certificate-less client:\n{refused_at}");

    // Unknown service, host outside the server's `*.local`, no Istio ALPN: closed, SNI logged.
    let unknown = sni("", "nope.default.svc.cluster.local");
    assert!(!s_client(&addr, &certs, &unknown, "istio", true).contains("reviews-"));
    let outside = sni("v2", "reviews.default.svc.cluster.example");
    assert!(!s_client(&addr, &certs, &outside, "istio", true).contains("reviews-"));
    assert!(!s_client(&addr, &certs, &sni("v2", reviews), "h2", true).contains("reviews-"));
    let log = log_until(gateway_log, |l| l.contains("none of Istio's mTLS ALPNs"));
    assert!(log.contains(&format!("SNI {unknown}")) && log.contains("no Service nope.default.svc.cluster.local with port 9080"), "{log}");
    assert!(log.contains(&format!("no server for SNI {outside}")) && log.contains("not among the server's hosts"), "{log}");
    assert!(log.contains("none of Istio's mTLS ALPNs"), "{log}");
}
