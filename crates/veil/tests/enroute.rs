//! End to end: `examples/enroute-istio` (seed 000). A third-party gateway (HAProxy, standing
//! for EnRoute) in a pod without a sidecar terminates the client's TLS with its own
//! certificate and speaks mesh mTLS (ALPN `istio`) to productpage under mesh-wide STRICT,
//! with the mesh certificate that the helper of `outputCerts` (Istio's `OUTPUT_CERTS`)
//! keeps current. `veil audit` shows client → gateway as `tls` and gateway → productpage
//! as `mesh-mtls` with the gateway's SPIFFE ID. The gateway follows rotations (20 s
//! certificates here) and still works once its first certificate has expired. The same
//! HAProxy with a foreign CA's client certificate, or with none, is refused by
//! productpage's sidecar (503, and the sidecar names the reason), while the same derived
//! configuration with the mesh certificate is served. The seed's EnRoute kinds load and
//! are reported as unsupported and ignored.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HOST: &str = "bookinfo.saaraslabs.com";
const SEED: &str = "000-enroute-istio.yaml";
const ENROUTE_ID: &str = "spiffe://cluster.local/ns/default/sa/enroute";
const PRODUCTPAGE_ID: &str = "spiffe://cluster.local/ns/default/sa/productpage";
/// Lifetime of the gateway's mesh certificates in this test (seconds).
const TTL_S: u64 = 20;
/// Port of the test's own HAProxy in the gateway pod.
const PROBE_PORT: u16 = 8443;

/// A copy of the example with `setup.sh` run on it, 20 s mesh certificates for the
/// gateway, and a client certificate from a CA the mesh does not know
/// (`certs/foreign.pem`, certificate and key).
fn prepared() -> tempfile::TempDir {
    let dir = copy_example("enroute-istio");
    let out = run(Command::new(dir.path().join("setup.sh")).arg("--force"));
    assert!(out.status.success(), "setup.sh: {}", text(&out));
    let secret = std::fs::read_to_string(dir.path().join("bookinfo-saaraslabs.yaml")).expect("setup.sh wrote the Secret");
    for want in ["kind: Secret", "name: bookinfo-saaraslabs", "type: kubernetes.io/tls", "  tls.crt: ", "  tls.key: "] {
        assert!(secret.contains(want), "Secret lacks {want:?}:\n{secret}");
    }
    let runtime = dir.path().join("veil.local.yaml");
    edit(&runtime, "  outputCerts: istio-output-certs\n", &format!("  outputCerts: istio-output-certs\n  env: {{SECRET_TTL: \"{TTL_S}\"}}\n"));
    // A CA the mesh does not know, and a client certificate from it that names the
    // gateway's SPIFFE ID: only the issuer is wrong.
    let certs = dir.path().join("certs");
    let openssl = |args: &[&str]| {
        let out = run(Command::new("openssl").current_dir(&certs).args(args));
        assert!(out.status.success(), "openssl {args:?}: {}", text(&out));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    openssl(&[&["req", "-x509", "-days", "2", "-subj", "/O=Elsewhere/CN=Elsewhere Root", "-keyout", "foreign-ca.key", "-out", "foreign-ca.crt"][..], &ec[..]].concat());
    openssl(&[&["req", "-subj", "/O=Elsewhere", "-keyout", "foreign.key", "-out", "foreign.csr"][..], &ec[..]].concat());
    let ext = format!("subjectAltName=critical,URI:{ENROUTE_ID}\nextendedKeyUsage=clientAuth,serverAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:false\n");
    std::fs::write(certs.join("foreign.ext"), ext).expect("foreign.ext");
    openssl(&["x509", "-req", "-days", "2", "-CA", "foreign-ca.crt", "-CAkey", "foreign-ca.key", "-set_serial", "7", "-in", "foreign.csr", "-extfile", "foreign.ext", "-out", "foreign.crt"]);
    let (key, crt) = (certs.join("foreign.key"), certs.join("foreign.crt"));
    let pem = [std::fs::read_to_string(&crt).expect("crt"), std::fs::read_to_string(&key).expect("key")].concat();
    std::fs::write(certs.join("foreign.pem"), pem).expect("foreign.pem");
    dir
}

/// `curl https://bookinfo.saaraslabs.com:<port>/` at the gateway pod's address, trusting
/// the gateway's CA: (curl exit code, HTTP status, body). HTTP/2 when the gateway offers
/// it; HTTP/1.1 for `port` [`PROBE_PORT`], where failures are expected (over HTTP/2 HAProxy
/// answers a failed upstream handshake with REFUSED_STREAM, not a status).
fn call(dir: &Path, gateway_ip: &str, port: u16) -> (i32, u16, String) {
    let version = if port == PROBE_PORT { "--http1.1" } else { "--http2" };
    let out = run(Command::new("curl")
        .args(["-sS", version, "-m", "10", "-w", "\n%{http_code}", "--cacert"])
        .arg(dir.join("certs/ca.crt"))
        .args(["--resolve", &format!("{HOST}:{port}:{gateway_ip}"), &format!("https://{HOST}:{port}/")]));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", "0"));
    let body = format!("{body}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), code.trim().parse().unwrap_or(0), body)
}

fn flows_to<'a>(report: &'a serde_json::Value, server: &str) -> Vec<&'a serde_json::Value> {
    let flows = report["flows"].as_array().into_iter().flatten();
    flows.filter(|f| f["server"].as_str().is_some_and(|s| s.starts_with(server))).collect()
}

/// A second HAProxy in the gateway pod, stopped on drop.
struct Probe {
    child: Child,
    log: PathBuf,
}

impl Probe {
    /// Runs `config` (the gateway's own configuration, edited) in the gateway pod and
    /// waits (≤ 10 s) until it accepts on [`PROBE_PORT`].
    fn start(mesh: &Mesh, dir: &Path, name: &str, config: &str) -> Probe {
        let cfg = dir.join(format!("{name}.cfg"));
        let log = dir.join(format!("{name}.log"));
        std::fs::write(&cfg, config).expect("probe config");
        let out = std::fs::File::create(&log).expect("probe log");
        let err = out.try_clone().expect("probe log");
        let child = Command::new("ip")
            .args(["netns", "exec", &mesh.netns("enroute"), "haproxy", "-db", "-f"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("haproxy");
        let probe = Probe { child, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let up = mesh.exec("enroute", &["bash", "-c", &format!("echo > /dev/tcp/127.0.0.1/{PROBE_PORT}")]);
            if up.status.success() {
                return probe;
            }
            assert!(Instant::now() < deadline, "probe HAProxy {name} not listening: {}", std::fs::read_to_string(&probe.log).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn seed_000_third_party_gateway_speaks_mesh_mtls_with_output_certs() {
    let dir = prepared();
    let validate = run(Command::new(veil()).arg("validate").arg(dir.path()));
    let shown = text(&validate);
    assert!(validate.status.success(), "the EnRoute kinds are not rejected: {shown}");
    for want in [format!("{SEED}:3: kind GlobalConfig"), format!("{SEED}:28: kind GatewayHost")] {
        assert!(shown.contains(&want) && shown.contains("ignore"), "veil validate warns {want:?}: {shown}");
    }
    assert!(!shown.contains("kind PeerAuthentication"), "no warning for what Veil enforces: {shown}");

    let mesh = Mesh::up(dir.path());
    let up_at = Instant::now();
    let log = mesh.log();
    assert!(log.contains(&format!("warning: {}", dir.path().join(SEED).display())) && log.contains(":28: kind GatewayHost"), "{log}");
    let state = mesh.state_json();
    let enroute = state["pods"].as_array().and_then(|a| a.iter().find(|p| p["name"] == "enroute")).cloned().expect("enroute pod");
    assert_eq!((enroute["sidecar"].as_bool(), enroute["proxy_pid"].is_null()), (Some(false), true), "the gateway has no sidecar: {enroute}");
    let (gateway_ip, productpage_ip) = (mesh.pod_ip("enroute"), mesh.pod_ip("productpage"));

    // The helper's files: the pod's mesh identity, mode 0600, chaining to the mesh root.
    let output = mesh.state_dir().join("pods/default.enroute/istio-output-certs");
    for f in ["key.pem", "cert-chain.pem", "root-cert.pem"] {
        let mode = std::fs::metadata(output.join(f)).unwrap_or_else(|e| panic!("{f}: {e}")).permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let san = run(Command::new("openssl").args(["x509", "-noout", "-serial", "-ext", "subjectAltName", "-in"]).arg(output.join("cert-chain.pem")));
    assert!(text(&san).contains(&format!("URI:{ENROUTE_ID}")), "{}", text(&san));
    let first_serial = text(&san).lines().next().unwrap_or_default().to_string();

    // 1. The user's request: TLS to the gateway, mesh mTLS behind it; the capture runs.
    let audit = mesh.audit(8, &["-o", "json"]);
    for _ in 0..3 {
        let (rc, code, body) = call(dir.path(), &gateway_ip, 443);
        assert_eq!((rc, code), (0, 200), "{body}\n{}", mesh.proxy_log("default", "productpage"));
        assert!(body.contains("<title>Simple Bookstore App</title>"), "productpage's page: {body}");
    }
    let out = audit.wait_with_output().expect("veil audit");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("veil audit -o json: {e}\n{}", text(&out)));
    let to_gateway = flows_to(&report, &format!("{gateway_ip}:443"));
    assert!(!to_gateway.is_empty(), "no client → gateway flow:\n{report:#}");
    for f in to_gateway {
        assert_eq!(f["class"], "tls", "client → gateway is the gateway's own TLS: {f:#}");
        assert_eq!(f["client_pod"], serde_json::Value::Null, "the client is the host: {f:#}");
    }
    let behind = flows_to(&report, &format!("{productpage_ip}:9080"));
    assert!(!behind.is_empty(), "no gateway → productpage flow:\n{report:#}");
    for f in behind {
        assert!(f["client_pod"].as_str().is_some_and(|p| p.contains("enroute")), "only the gateway calls productpage: {f:#}");
        assert_eq!(f["class"], "mesh-mtls", "gateway → productpage: {f:#}");
        assert_eq!(f["alpn"], serde_json::json!(["istio"]), "{f:#}");
        assert_eq!((f["source_principal"].as_str(), f["destination_principal"].as_str()), (Some(ENROUTE_ID), Some(PRODUCTPAGE_ID)), "{f:#}");
    }

    // 2. The same HAProxy, derived from the gateway's running configuration, on another port.
    let run_dir = mesh.state_dir().join("pods/default.enroute/haproxy");
    let config = std::fs::read_to_string(run_dir.join("haproxy.cfg")).expect("the gateway's haproxy.cfg");
    let mesh_crt = format!("ssl crt {}", run_dir.join("mesh.pem").display());
    assert!(config.contains(&mesh_crt) && config.contains("alpn istio") && config.contains("bind :443 "), "{config}");
    let probe_config = |crt: &str| {
        let kept: Vec<&str> = config.lines().filter(|l| !l.trim_start().starts_with("pidfile")).collect();
        kept.join("\n").replace("bind :443 ", &format!("bind :{PROBE_PORT} ")).replace(&mesh_crt, crt) + "\n"
    };
    let scratch = tempfile::tempdir().expect("tempdir");
    // Control: with the mesh certificate, the derived configuration is served.
    {
        let _probe = Probe::start(&mesh, scratch.path(), "mesh", &probe_config(&mesh_crt));
        let (rc, code, body) = call(dir.path(), &gateway_ip, PROBE_PORT);
        assert_eq!((rc, code), (0, 200), "{body}");
    }
    let foreign = format!("ssl crt {}", dir.path().join("certs/foreign.pem").display());
    let cases: [(&str, &str, &[&str]); 2] =
        [("foreign-ca", &foreign, &["not signed by the mesh CA", "UnknownIssuer"]), ("no-cert", "ssl", &["peer sent no certificates"])];
    for (name, crt, reasons) in cases {
        let probe = Probe::start(&mesh, scratch.path(), name, &probe_config(crt));
        let (rc, code, body) = call(dir.path(), &gateway_ip, PROBE_PORT);
        assert!(rc == 0 && (code == 502 || code == 503), "{name}: STRICT productpage refuses the gateway, HAProxy answers 502/503: rc {rc}, {code}: {body}");
        let deadline = Instant::now() + Duration::from_secs(5);
        let refused = loop {
            let log = mesh.proxy_log("default", "productpage");
            let lines: Vec<String> = log
                .lines()
                .filter(|l| l.contains(&format!("inbound connection from {gateway_ip}")) && l.contains("mesh mTLS handshake on port 9080 failed"))
                .map(str::to_string)
                .collect();
            if lines.iter().any(|l| reasons.iter().any(|r| l.contains(r))) || Instant::now() > deadline {
                break lines;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let named = refused.iter().any(|l| reasons.iter().any(|r| l.contains(r)));
        assert!(named, "{name}: the sidecar names the gateway and the reason ({reasons:?}):\n{}", mesh.proxy_log("default", "productpage"));
        let deadline = Instant::now() + Duration::from_secs(3);
        let logged = loop {
            let logged = std::fs::read_to_string(&probe.log).unwrap_or_default();
            if logged.contains(&format!(" {code} ")) || Instant::now() > deadline {
                break logged;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(logged.contains(&format!(" {code} ")), "{name}: HAProxy logs the {code}: {logged}");
    }

    // 3. Rotation: the helper rewrites the files at half-life, the gateway reloads HAProxy,
    // and requests succeed after the first certificate has expired.
    let workload_log = mesh.state_dir().join("logs/default.enroute.log");
    let deadline = Instant::now() + Duration::from_secs(3 * TTL_S);
    while !std::fs::read_to_string(&workload_log).unwrap_or_default().contains("mesh certificate rotated: reloaded HAProxy") {
        assert!(Instant::now() < deadline, "no reload within {} s:\n{}", 3 * TTL_S, std::fs::read_to_string(&workload_log).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(500));
    }
    let serial = run(Command::new("openssl").args(["x509", "-noout", "-serial", "-in"]).arg(output.join("cert-chain.pem")));
    assert_ne!(text(&serial).trim(), first_serial.trim(), "the helper rewrote cert-chain.pem");
    let expired = up_at + Duration::from_secs(TTL_S + 2);
    std::thread::sleep(expired.saturating_duration_since(Instant::now()));
    for _ in 0..3 {
        let (rc, code, body) = call(dir.path(), &gateway_ip, 443);
        assert_eq!((rc, code), (0, 200), "after the first certificate expired: {body}\n{}", mesh.proxy_log("default", "productpage"));
    }
    let pp_log = mesh.proxy_log("default", "productpage");
    let expired_refusals = pp_log.lines().filter(|l| l.contains(&format!("inbound connection from {gateway_ip}:")) && l.contains("xpired")).count();
    assert_eq!(expired_refusals, 0, "the gateway never offered an expired certificate:\n{pp_log}");
}
