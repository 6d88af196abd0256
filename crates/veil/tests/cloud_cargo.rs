//! End to end: `examples/cloud-cargo` (seed 002). `setup.sh` makes the CA, the
//! `poc.cargo.com` certificate and the Secret `istio-system/cargo-gateway-certs`;
//! `curl --cacert` over HTTPS through the ingress gateway reaches each service by URI
//! prefix, and `veil audit` shows every gateway → service hop as mesh mTLS. The legacy
//! `Policy` makes the namespace STRICT: a client without a sidecar is refused while a
//! sidecar client is served, and the same client is served once the Policy says
//! PERMISSIVE. `veil analyze` names the legacy Policy with its PeerAuthentication.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const HOST: &str = "poc.cargo.com";
const SERVICES: [&str; 3] = [
    "cargo-webapp",
    "freight-rating-server",
    "freight-tariff-server",
];
const GATEWAY_ID: &str =
    "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";

/// A copy of the example with `setup.sh` run on it.
fn prepared() -> tempfile::TempDir {
    let dir = copy_example("cloud-cargo");
    let out = run(Command::new(dir.path().join("setup.sh")).arg("--force"));
    assert!(out.status.success(), "setup.sh: {}", text(&out));
    let secret = std::fs::read_to_string(dir.path().join("cargo-gateway-certs.yaml"))
        .expect("setup.sh wrote the Secret");
    for want in [
        "kind: Secret",
        "name: cargo-gateway-certs",
        "namespace: istio-system",
        "  key: ",
        "  cert: ",
    ] {
        assert!(secret.contains(want), "Secret lacks {want:?}:\n{secret}");
    }
    dir
}

/// `curl` over HTTPS to `poc.cargo.com` at the gateway's published 443; returns
/// (curl exit code, HTTP status, body). `ca` is the `--cacert` file, if any.
fn curl(mesh: &Mesh, ca: Option<&Path>, path: &str) -> (i32, u16, String) {
    let addr = mesh.published(443);
    let port = addr.rsplit(':').next().unwrap_or_default();
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "-m",
        "10",
        "-w",
        "\n%{http_code}",
        "--resolve",
        &format!("{HOST}:{port}:127.0.0.1"),
    ]);
    if let Some(ca) = ca {
        cmd.arg("--cacert").arg(ca);
    }
    let out = run(cmd.arg(format!("https://{HOST}:{port}{path}")));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", "0"));
    let body = if body.is_empty() {
        String::from_utf8_lossy(&out.stderr).to_string()
    } else {
        body.to_string()
    };
    (
        out.status.code().unwrap_or(-1),
        code.trim().parse().unwrap_or(0),
        body,
    )
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[test]
fn https_through_the_gateway_routes_by_prefix_over_mesh_mtls() {
    let dir = prepared();
    let ca = dir.path().join("certs/ca.crt");
    let mesh = Mesh::up(dir.path());
    let audit = mesh.audit(6, &["-o", "json"]);
    for (path, service) in [
        ("/api/freight-rating/quote", "freight-rating-server"),
        (
            "/api/freight-tariff/rates?lane=rtm-sin",
            "freight-tariff-server",
        ),
        ("/", "cargo-webapp"),
        ("/track/42", "cargo-webapp"),
    ] {
        let (rc, code, body) = curl(&mesh, Some(&ca), path);
        assert_eq!(
            (rc, code),
            (0, 200),
            "GET {path}: {body}\n{}",
            mesh.proxy_log("istio-system", "istio-ingressgateway")
        );
        let v = json(&body);
        assert_eq!(v["service"], service, "GET {path}: {body}");
        assert_eq!(
            v["path"], path,
            "the path reaches the service unchanged: {body}"
        );
    }
    // Control: the certificate is the one setup.sh made, not one curl trusts anyway.
    let (rc, code, body) = curl(&mesh, None, "/");
    assert!(
        rc != 0 && code != 200,
        "without --cacert curl must refuse the gateway's certificate: rc {rc}, {code}, {body}"
    );

    let out = audit.wait_with_output().expect("veil audit");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("veil audit -o json: {e}\n{}", text(&out)));
    let gateway_flows: Vec<&serde_json::Value> = report["flows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| {
            f["client_pod"]
                .as_str()
                .is_some_and(|p| p.contains("istio-ingressgateway"))
        })
        .collect();
    for service in SERVICES {
        let ip = mesh.pod_ip(service);
        let flows: Vec<_> = gateway_flows
            .iter()
            .filter(|f| {
                f["server"]
                    .as_str()
                    .is_some_and(|s| s.starts_with(&format!("{ip}:")))
            })
            .collect();
        assert!(
            !flows.is_empty(),
            "no gateway → {service} flow captured:\n{report:#}"
        );
        for f in flows {
            assert_eq!(f["class"], "mesh-mtls", "gateway → {service}: {f:#}");
            assert_eq!(f["source_principal"], GATEWAY_ID, "{f:#}");
            assert_eq!(
                f["destination_principal"],
                format!("spiffe://cluster.local/ns/cloud-cargo/sa/{service}"),
                "{f:#}"
            );
        }
    }
    assert_eq!(report["unencrypted_pod_flows"], 0, "{report:#}");
}

/// Adds two client pods that only sleep: `cargo-naked-client` without a sidecar
/// (`sidecar.istio.io/inject: "false"`) and `cargo-mesh-client` with one.
fn add_clients(dir: &Path) {
    let mut yaml = String::new();
    let mut runtime =
        std::fs::read_to_string(dir.join("veil.local.yaml")).expect("read veil.local.yaml");
    for (name, annotations) in [
        (
            "cargo-naked-client",
            "      annotations:\n        sidecar.istio.io/inject: \"false\"\n",
        ),
        ("cargo-mesh-client", ""),
    ] {
        yaml.push_str(&format!(
            "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: cloud-cargo\nspec:\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n{annotations}    spec:\n      containers:\n      - name: client\n        image: curlimages/curl\n        command: [sleep, infinity]\n"
        ));
        runtime.push_str(&format!(
            "- name: {name}\n  namespace: cloud-cargo\n  command: [\"sleep\", \"3600\"]\n"
        ));
    }
    std::fs::write(dir.join("clients.yaml"), yaml).expect("write clients.yaml");
    std::fs::write(dir.join("veil.local.yaml"), runtime).expect("write veil.local.yaml");
}

/// From a client pod: GET http://freight-rating-server:8080/api/freight-rating/quote.
fn call_rating(mesh: &Mesh, client: &str) -> (bool, String, Duration) {
    let t = Instant::now();
    let out = mesh.exec(
        client,
        &[
            "curl",
            "-sS",
            "-m",
            "5",
            "-w",
            "\n%{http_code}",
            "http://freight-rating-server:8080/api/freight-rating/quote",
        ],
    );
    let t = t.elapsed();
    let all = text(&out);
    (
        out.status.success()
            && all.contains("\"freight-rating-server\"")
            && all.trim_end().ends_with("200"),
        all,
        t,
    )
}

#[test]
fn legacy_policy_is_strict_a_naked_client_fails_and_a_sidecar_client_succeeds() {
    let dir = prepared();
    add_clients(dir.path());
    let mesh = Mesh::up(dir.path());
    let (ok, out, took) = call_rating(&mesh, "cargo-naked-client");
    assert!(!ok, "plaintext to the STRICT namespace must fail: {out}");
    assert!(
        took < Duration::from_secs(5),
        "refused promptly, not left hanging: {took:?}"
    );
    let (ok, out, _) = call_rating(&mesh, "cargo-mesh-client");
    assert!(
        ok,
        "control: a client with a sidecar is served over mTLS: {out}\n{}",
        mesh.log()
    );
    std::thread::sleep(Duration::from_millis(200));
    let refusal = mesh.proxy_log("cloud-cargo", "freight-rating-server");
    assert!(
        refusal.contains("STRICT") && refusal.contains("refused"),
        "the inbound logs why: {refusal}"
    );
    assert!(
        refusal.contains(&mesh.pod_ip("cargo-naked-client")),
        "the refusal names the peer: {refusal}"
    );

    // Control: the Policy is what refuses; said PERMISSIVE, the same client is served.
    edit(
        &dir.path().join("002-cloud-cargo.yaml"),
        "- mtls: {}",
        "- mtls: {mode: PERMISSIVE}",
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut ok, mut out) = (false, String::new());
    while Instant::now() < deadline {
        (ok, out, _) = call_rating(&mesh, "cargo-naked-client");
        if ok {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        ok,
        "plaintext to a PERMISSIVE namespace must succeed: {out}\n{}",
        mesh.log()
    );
}

#[test]
fn analyze_prints_the_legacy_policy_hint() {
    let dir = prepared();
    let out = run(Command::new(veil()).arg("analyze").arg(dir.path()));
    let t = text(&out);
    assert!(out.status.success(), "warnings only: {t}");
    for want in [
        "002-cloud-cargo.yaml:3: warning[VEIL0106]: Policy cloud-cargo/default uses authentication.istio.io/v1alpha1",
        "kind: PeerAuthentication",
        "namespace: \"cloud-cargo\"",
        "mode: STRICT",
    ] {
        assert!(t.contains(want), "analyze lacks {want:?}:\n{t}");
    }
    assert!(
        !t.contains("VEIL0301"),
        "the Secret is in istio-system, where Istio reads it: {t}"
    );
    // Control: with the hint's PeerAuthentication instead of the Policy, the warning goes.
    let seed = dir.path().join("002-cloud-cargo.yaml");
    edit(
        &seed,
        "apiVersion: \"authentication.istio.io/v1alpha1\"\nkind: \"Policy\"",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication",
    );
    edit(&seed, "  peers:\n  - mtls: {}", "  mtls:\n    mode: STRICT");
    let out = run(Command::new(veil()).arg("analyze").arg(dir.path()));
    let t = text(&out);
    assert!(out.status.success() && !t.contains("VEIL0106"), "{t}");
}
