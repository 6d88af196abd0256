//! Istio's TestReachability on real network namespaces. For each configuration of
//! `tests/integration/security/reachability_test.go` (and of its 1.4.0 version for the legacy
//! `authentication.istio.io/v1alpha1` API), built from the real templates in `istio-cases/`,
//! `examples/reachability` runs under `veil up`; every client (`a` with a sidecar, `naked`)
//! calls every server (`b` with a sidecar, `naked`) on its HTTP, TCP and server-first ports,
//! while a capture on the pod links (the `veil audit` library) tells, flow by flow, whether the
//! bytes were mesh mTLS or plaintext. The expected matrix is [`MATRIX`].
//!
//! The last test is issue 4's MariaDB check: a naked client reaches a PERMISSIVE MariaDB on
//! its declared port and on an undeclared one, and the delay the undeclared port adds is printed.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use veil_audit::{FlowClass, PodAddress, Report};

const NS: &str = "reach";
const ROOT_NS: &str = "istio-system";
const CASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/istio-cases");
/// Deadline of one call, seconds (call.py caps it at 5).
const CALL_TIMEOUT_S: &str = "5";

/// What one call is expected to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Succeeds, and the flow between the two pods is mesh mTLS.
    M,
    /// Succeeds, and the flow is plaintext (a self-call never leaves the pod: no flow at all).
    P,
    /// Fails (refused, reset or timed out within the deadline).
    F,
}
use Expect::{F, M, P};

/// One port of every echo pod: Service port name, call.py scheme, Service and workload port.
struct Port(&'static str, &'static str, u16, u16);
const PORTS: [Port; 3] = [Port("http", "http", 80, 8080), Port("tcp", "tcp", 9000, 9000), Port("mysql", "greet", 3306, 3306)];
const CLIENTS: [&str; 2] = ["a", "naked"];
const SERVERS: [&str; 2] = ["b", "naked"];
/// The Services the workload-level templates are rendered for (Istio: every service).
const SERVICES: [&str; 3] = ["a", "b", "naked"];

/// The expected matrix: (configuration, client, server, [http, tcp, server-first :3306]).
/// Sources: INDEX.md rows 24–38, reachability_test.go (`notNaked`, `notToNaked`,
/// `notFromNaked`, `always`) and the 1.4.0 test; naked→naked is a self-call Istio's current
/// test skips and the 1.4.0 test expects to succeed. Where Istio differs on purpose, the row
/// says so.
#[rustfmt::skip]
const MATRIX: &[(&str, &str, &str, [Expect; 3])] = &[
    // 24 mesh PA × 25 DR host "*"
    ("strict-mutual",        "a",     "b",     [M, M, M]),
    ("strict-mutual",        "a",     "naked", [F, F, F]),
    ("strict-mutual",        "naked", "b",     [F, F, F]),
    ("strict-mutual",        "naked", "naked", [P, P, P]),
    ("permissive-mutual",    "a",     "b",     [M, M, M]),
    ("permissive-mutual",    "a",     "naked", [F, F, F]),
    // Server-first plaintext to PERMISSIVE: Istio fails (issue 35232); Veil passes it at once.
    ("permissive-mutual",    "naked", "b",     [P, P, P]),
    ("permissive-mutual",    "naked", "naked", [P, P, P]),
    ("disable-disable",      "a",     "b",     [P, P, P]),
    ("disable-disable",      "a",     "naked", [P, P, P]),
    ("disable-disable",      "naked", "b",     [P, P, P]),
    ("disable-disable",      "naked", "naked", [P, P, P]),
    ("permissive-disable",   "a",     "b",     [P, P, P]),
    ("permissive-disable",   "a",     "naked", [P, P, P]),
    ("permissive-disable",   "naked", "b",     [P, P, P]),
    ("permissive-disable",   "naked", "naked", [P, P, P]),
    // 24 alone: auto-mTLS
    ("auto-strict",          "a",     "b",     [M, M, M]),
    ("auto-strict",          "a",     "naked", [P, P, P]),
    ("auto-strict",          "naked", "b",     [F, F, F]),
    ("auto-strict",          "naked", "naked", [P, P, P]),
    ("auto-disable",         "a",     "b",     [P, P, P]),
    ("auto-disable",         "a",     "naked", [P, P, P]),
    ("auto-disable",         "naked", "b",     [P, P, P]),
    ("auto-disable",         "naked", "naked", [P, P, P]),
    // 26 workload PA × 27 per-service DR, for every service
    ("workload-strict",      "a",     "b",     [M, M, M]),
    ("workload-strict",      "a",     "naked", [F, F, F]),
    ("workload-strict",      "naked", "b",     [F, F, F]),
    ("workload-strict",      "naked", "naked", [P, P, P]),
    ("workload-permissive",  "a",     "b",     [M, M, M]),
    ("workload-permissive",  "a",     "naked", [F, F, F]),
    ("workload-permissive",  "naked", "b",     [P, P, P]),
    ("workload-permissive",  "naked", "naked", [P, P, P]),
    ("workload-disable",     "a",     "b",     [P, P, P]),
    ("workload-disable",     "a",     "naked", [P, P, P]),
    ("workload-disable",     "naked", "b",     [P, P, P]),
    ("workload-disable",     "naked", "naked", [P, P, P]),
    // 28: STRICT with DISABLE on the http and tcp workload ports. Istio's echo pods have no
    // server-first port; 3306 keeps the workload's STRICT, so auto-mTLS (per endpoint port,
    // spec §1.4 rule 5) sends mTLS there and a plaintext client is refused.
    ("port-override",        "a",     "b",     [P, P, M]),
    ("port-override",        "a",     "naked", [P, P, P]),
    ("port-override",        "naked", "b",     [P, P, F]),
    ("port-override",        "naked", "naked", [P, P, P]),
    // 30: DR "*" PASSTHROUGH, no PA
    ("passthrough",          "a",     "b",     [M, M, M]),
    ("passthrough",          "a",     "naked", [P, P, P]),
    ("passthrough",          "naked", "b",     [P, P, P]),
    ("passthrough",          "naked", "naked", [P, P, P]),
    // 35–38 legacy v1alpha1 (1.4.0 TestReachability)
    ("legacy-on",            "a",     "b",     [M, M, M]),
    ("legacy-on",            "a",     "naked", [F, F, F]),
    ("legacy-on",            "naked", "b",     [F, F, F]),
    ("legacy-on",            "naked", "naked", [P, P, P]),
    ("legacy-permissive",    "a",     "b",     [M, M, M]),
    ("legacy-permissive",    "a",     "naked", [F, F, F]),
    ("legacy-permissive",    "naked", "b",     [P, P, P]),
    ("legacy-permissive",    "naked", "naked", [P, P, P]),
    ("legacy-off",           "a",     "b",     [P, P, P]),
    ("legacy-off",           "a",     "naked", [P, P, P]),
    ("legacy-off",           "naked", "b",     [P, P, P]),
    ("legacy-off",           "naked", "naked", [P, P, P]),
    ("legacy-single-port",   "a",     "b",     [F, P, P]),
    ("legacy-single-port",   "a",     "naked", [P, P, P]),
    ("legacy-single-port",   "naked", "b",     [F, P, P]),
    ("legacy-single-port",   "naked", "naked", [P, P, P]),
];

fn case(file: &str) -> String {
    let path = Path::new(CASES).join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn fill(file: &str, params: &[(&str, &str)]) -> String {
    let params: BTreeMap<String, String> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    veil_api::fill_template(&case(file), &params).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// Puts every namespaced document into `ns`, as `kubectl apply -n ns` (Istio's test framework)
/// does; the cluster-scoped `MeshPolicy` stays as it is.
fn in_namespace(yaml: &str, ns: &str) -> String {
    let docs: Vec<String> = yaml
        .split("\n---")
        .map(|doc| {
            if doc.contains("kind: MeshPolicy") {
                return doc.to_string();
            }
            assert!(doc.contains("\nmetadata:\n"), "no metadata in {doc}");
            doc.replacen("\nmetadata:\n", &format!("\nmetadata:\n  namespace: {ns}\n"), 1)
        })
        .collect();
    docs.join("\n---") + "\n"
}

fn global_pa(mode: &str) -> (String, String) {
    ("24-pa.yaml".into(), in_namespace(&fill("24-reachability-global-peer-authn.yaml.tmpl", &[("MTLSMode", mode)]), ROOT_NS))
}

fn global_dr(mode: &str) -> (String, String) {
    ("25-dr.yaml".into(), in_namespace(&fill("25-reachability-global-dr.yaml.tmpl", &[("TLSMode", mode)]), ROOT_NS))
}

/// A workload-level template rendered for every Service of the example, with `extra` params.
/// Ports the echo pods do not serve (http2, https, grpc) get numbers no pod listens on.
fn per_service(file: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    SERVICES
        .iter()
        .map(|svc| {
            let fqdn = format!("{svc}.{NS}.svc.cluster.local");
            let mut params = vec![
                ("To.ServiceName", *svc),
                ("To.ClusterLocalFQDN", fqdn.as_str()),
                ("To.PortForName(http).WorkloadPort", "8080"),
                ("To.PortForName(tcp).WorkloadPort", "9000"),
                ("To.PortForName(http2).WorkloadPort", "8081"),
                ("To.PortForName(https).WorkloadPort", "8443"),
                ("To.PortForName(grpc).WorkloadPort", "7070"),
            ];
            params.extend_from_slice(extra);
            (format!("{}-{svc}.yaml", &file[..2]), in_namespace(&fill(file, &params), NS))
        })
        .collect()
}

fn legacy(file: &str, ns: &str) -> Vec<(String, String)> {
    vec![(format!("{}.yaml", &file[..2]), in_namespace(&case(file), ns))]
}

/// Result of one call, and what the capture saw between the two pods.
struct Outcome {
    ok: bool,
    detail: String,
    wire: &'static str,
}

/// Runs call.py in both clients at once (every server and port concurrently); returns
/// (client, server, port name) → (ok, output line).
fn call_all(mesh: &Mesh, dir: &Path) -> BTreeMap<(String, String, String), (bool, String)> {
    let call_py = dir.join("bin/call.py").display().to_string();
    let mut children = Vec::new();
    for client in CLIENTS {
        let mut targets = Vec::new();
        for server in SERVERS {
            for Port(_, scheme, port, _) in &PORTS {
                targets.push(format!("{scheme}://{server}:{port}"));
            }
        }
        let child = Command::new("ip")
            .args(["netns", "exec", &mesh.netns(client), "timeout", "15", "python3", &call_py, "--timeout", CALL_TIMEOUT_S])
            .args(&targets)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn call.py");
        children.push((client, child));
    }
    let mut results = BTreeMap::new();
    for (client, child) in children {
        let out = child.wait_with_output().expect("call.py");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        for server in SERVERS {
            for Port(name, scheme, port, _) in &PORTS {
                let target = format!("{scheme}://{server}:{port}");
                let line = stdout
                    .lines()
                    .find(|l| l.split_whitespace().nth(1) == Some(target.as_str()))
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("fail {target} no output: {}", text(&out)));
                let pod = line.split_whitespace().find_map(|w| w.strip_prefix("pod=")).unwrap_or("-");
                let ok = line.starts_with("ok ") && (pod == "-" || pod == server);
                results.insert((client.to_string(), server.to_string(), name.to_string()), (ok, line));
            }
        }
    }
    results
}

/// How the flows from `client` to `server:port` were carried: `mesh-mtls` when every one was,
/// `plaintext` when any was, `tls` for other TLS, `none` when no flow crossed the pod links.
fn wire(report: &Report, client: &str, server: &str, port: u16) -> &'static str {
    let flows: Vec<_> = report
        .flows
        .iter()
        .filter(|f| f.client_pod.as_deref() == Some(client) && f.server_pod.as_deref() == Some(server) && f.server.port() == port)
        .collect();
    if flows.is_empty() {
        "none"
    } else if flows.iter().all(|f| f.class == FlowClass::MeshMtls) {
        "mesh-mtls"
    } else if flows.iter().any(|f| f.class == FlowClass::Plaintext) {
        "plaintext"
    } else {
        "tls"
    }
}

fn meets(expect: Expect, o: &Outcome, self_call: bool) -> bool {
    match expect {
        M => o.ok && o.wire == "mesh-mtls",
        P => o.ok && (o.wire == "plaintext" || (self_call && o.wire == "none")),
        F => !o.ok,
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Brings the example up with `files` added, makes every call under capture, and compares
/// with the rows of `config` in [`MATRIX`]; panics with the whole table on any difference.
fn run_config(config: &str, files: Vec<(String, String)>) {
    let rows: Vec<_> = MATRIX.iter().filter(|r| r.0 == config).collect();
    assert_eq!(rows.len(), CLIENTS.len() * SERVERS.len(), "{config}: one MATRIX row per (client, server)");
    let dir = copy_example("reachability");
    for (file, yaml) in &files {
        std::fs::write(dir.path().join(file), yaml).expect("write policy");
    }
    let mesh = Mesh::up(dir.path());
    let state = veil_local::up::MeshState::load(mesh.state_dir()).expect("mesh.json");
    let pcap = mesh.state_dir().join("reachability.pcap");
    let capture = veil_audit::Capture::start(&state.bridge, &pcap).expect("start capture");
    let calls = call_all(&mesh, dir.path());
    capture.stop().expect("stop capture");
    let pods: Vec<PodAddress> =
        state.pods.iter().map(|p| PodAddress { pod: p.name.clone(), namespace: p.namespace.clone(), ip: p.ip }).collect();
    let records = veil_audit::read_records(&state.records_dir(mesh.state_dir())).expect("records");
    let report = veil_audit::analyze(&pcap, &pods, &records).expect("analyze capture");

    let mut table = format!("{config}\n{:<7}{:<7}{:<7}{:<10}{:<24}CALL\n", "FROM", "TO", "PORT", "EXPECT", "GOT");
    let mut wrong = 0;
    for (_, client, server, expects) in &rows {
        for (Port(name, _, _, workload), expect) in PORTS.iter().zip(expects) {
            let (ok, detail) = calls[&(client.to_string(), server.to_string(), name.to_string())].clone();
            let o = Outcome { ok, detail, wire: wire(&report, client, server, *workload) };
            let good = meets(*expect, &o, client == server);
            wrong += usize::from(!good);
            let want = match expect {
                M => "ok+mtls",
                P => "ok+plain",
                F => "fail",
            };
            let got = format!("{} {}", if o.ok { "ok" } else { "fail" }, o.wire);
            let mark = if good { " " } else { "✗" };
            table.push_str(&format!("{mark}{client:<6}{server:<7}{name:<7}{want:<10}{got:<24}{}\n", o.detail));
        }
    }
    if wrong == 0 {
        println!("{table}");
        return;
    }
    panic!(
        "{config}: {wrong} of {} calls differ from the expected matrix:\n{table}\ncapture:\n{}\nveil up log (tail):\n{}\nproxy a (tail):\n{}\nproxy b (tail):\n{}",
        rows.len() * PORTS.len(),
        report.table(),
        tail(&mesh.log(), 20),
        tail(&mesh.proxy_log(NS, "a"), 15),
        tail(&mesh.proxy_log(NS, "b"), 15),
    );
}

#[test]
fn global_strict_istio_mutual() {
    run_config("strict-mutual", vec![global_pa("STRICT"), global_dr("ISTIO_MUTUAL")]);
}

#[test]
fn global_permissive_istio_mutual() {
    run_config("permissive-mutual", vec![global_pa("PERMISSIVE"), global_dr("ISTIO_MUTUAL")]);
}

#[test]
fn global_disable_disable() {
    run_config("disable-disable", vec![global_pa("DISABLE"), global_dr("DISABLE")]);
}

#[test]
fn global_plaintext_to_permissive() {
    run_config("permissive-disable", vec![global_pa("PERMISSIVE"), global_dr("DISABLE")]);
}

#[test]
fn global_automtls_strict() {
    run_config("auto-strict", vec![global_pa("STRICT")]);
}

#[test]
fn global_automtls_disable() {
    run_config("auto-disable", vec![global_pa("DISABLE")]);
}

fn workload(pa: &str, dr: &str) -> Vec<(String, String)> {
    let mut files = per_service("26-reachability-workload-peer-authn.yaml.tmpl", &[("MTLSMode", pa)]);
    files.extend(per_service("27-reachability-workload-dr.yaml.tmpl", &[("TLSMode", dr)]));
    files
}

#[test]
fn workload_strict_istio_mutual() {
    run_config("workload-strict", workload("STRICT", "ISTIO_MUTUAL"));
}

#[test]
fn workload_permissive_istio_mutual() {
    run_config("workload-permissive", workload("PERMISSIVE", "ISTIO_MUTUAL"));
}

#[test]
fn workload_disable_disable() {
    run_config("workload-disable", workload("DISABLE", "DISABLE"));
}

#[test]
fn workload_port_override() {
    let files = per_service(
        "28-reachability-workload-peer-authn-port-override.yaml.tmpl",
        &[("MTLSMode", "STRICT"), ("MTLSModeOverride", "DISABLE")],
    );
    run_config("port-override", files);
}

#[test]
fn global_automtls_passthrough() {
    let yaml = in_namespace(&fill("30-reachability-automtls-passthrough.yaml.tmpl", &[]), ROOT_NS);
    run_config("passthrough", vec![("30-dr.yaml".into(), yaml)]);
}

#[test]
fn legacy_meshpolicy_mtls_on() {
    run_config("legacy-on", legacy("35-legacy-v1alpha1-meshpolicy-mtls-on.yaml", ROOT_NS));
}

#[test]
fn legacy_meshpolicy_permissive() {
    run_config("legacy-permissive", legacy("36-legacy-v1alpha1-meshpolicy-permissive.yaml", ROOT_NS));
}

#[test]
fn legacy_meshpolicy_off() {
    run_config("legacy-off", legacy("37-legacy-v1alpha1-meshpolicy-off.yaml", ROOT_NS));
}

#[test]
fn legacy_policy_single_port() {
    run_config("legacy-single-port", legacy("38-legacy-v1alpha1-policy-single-port.yaml", NS));
}

const DB_PASSWORD: &str = "pii-demo-password";
/// A port MariaDB also listens on (`extra-port`), behind a Service port named `db`: a name
/// with no protocol prefix, so the inbound must tell mTLS from plaintext by sniffing.
const UNDECLARED_PORT: u16 = 13306;

const MYSQL_CLIENT_AND_DB_SERVICE: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: mysql-client
  namespace: pii-demo
spec:
  selector:
    matchLabels: {app: mysql-client}
  template:
    metadata:
      labels: {app: mysql-client}
      annotations:
        sidecar.istio.io/inject: \"false\"
    spec:
      containers:
      - name: client
        image: mariadb:10.11
        command: [sleep, infinity]
---
apiVersion: v1
kind: Service
metadata:
  name: mysql-db
  namespace: pii-demo
spec:
  selector:
    app: mysql-server
  ports:
  - name: db
    port: 13306
    targetPort: 13306
";

/// Milliseconds of each of 20 attempts of `target` from `pod`, one after another.
fn greeting_times(mesh: &Mesh, pod: &str, target: &str) -> Vec<f64> {
    let call_py = repo_root().join("examples/reachability/bin/call.py").display().to_string();
    let out = mesh.exec(pod, &["timeout", "120", "python3", &call_py, "--timeout", "5", "--repeat", "20", target]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "every connect to {target} gets the server's greeting:\n{}", text(&out));
    let times: Vec<f64> =
        stdout.lines().filter_map(|l| l.rsplit_once("ms=")).filter_map(|(_, ms)| ms.trim().parse().ok()).collect();
    assert_eq!(times.len(), 20, "{stdout}");
    times
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

#[test]
fn permissive_mariadb_serves_a_naked_client_on_declared_and_undeclared_ports() {
    let dir = copy_example("pii-demo");
    let d = dir.path();
    edit(&d.join("001-pii-demo-strict.yaml"), "mode: STRICT", "mode: PERMISSIVE");
    edit(
        &d.join("bin/mariadb.sh"),
        "bind-address            = 0.0.0.0\n",
        &format!("bind-address            = 0.0.0.0\nextra-port              = {UNDECLARED_PORT}\nextra-max-connections   = 20\n"),
    );
    std::fs::write(d.join("naked-client.yaml"), MYSQL_CLIENT_AND_DB_SERVICE).expect("write naked client");
    let runtime = d.join("veil.local.yaml");
    let mut rt = std::fs::read_to_string(&runtime).expect("read veil.local.yaml");
    rt.push_str("- name: mysql-client\n  namespace: pii-demo\n  command: [\"sleep\", \"3600\"]\n");
    std::fs::write(&runtime, rt).expect("write veil.local.yaml");
    let mesh = Mesh::up(d);

    for (host, port) in [("mysql-server", 3306), ("mysql-db", UNDECLARED_PORT)] {
        let port = port.to_string();
        let out = mesh.exec(
            "mysql-client",
            &["timeout", "15", "mariadb", "--connect-timeout=5", "-h", host, "-P", &port, "-u", "pii", &format!("-p{DB_PASSWORD}"), "pii", "-N", "-e", "select 40+2"],
        );
        assert!(out.status.success() && text(&out).contains("42"), "plaintext to PERMISSIVE MariaDB {host}:{port}: {}\n{}", text(&out), tail(&mesh.proxy_log("pii-demo", "mysql-server"), 20));
    }
    // Baseline: MariaDB's own greeting time, on loopback inside its pod (not intercepted).
    let direct = median(greeting_times(&mesh, "mysql-server", "banner://127.0.0.1:3306"));
    let declared = median(greeting_times(&mesh, "mysql-client", "banner://mysql-server:3306"));
    let undeclared = median(greeting_times(&mesh, "mysql-client", &format!("banner://mysql-db:{UNDECLARED_PORT}")));
    println!(
        "naked client → PERMISSIVE MariaDB, connect to greeting (median of 20): in-pod loopback {direct:.1} ms, \
         declared port 3306 {declared:.1} ms, undeclared port {UNDECLARED_PORT} {undeclared:.1} ms; \
         the undeclared port adds {:.1} ms over 3306",
        undeclared - declared
    );
    assert!(declared < 5000.0 && undeclared < 5000.0, "server-first connects must be well under 5 s");
}
