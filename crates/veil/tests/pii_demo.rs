//! End to end: `veil up examples/pii-demo` on real network namespaces, real
//! Apache/PHP and MariaDB, real sidecars; `veil audit` proves the traffic is
//! mesh mTLS, and a control run without injection proves the audit sees
//! plaintext when there is some.

mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

const HOST: &str = "pii-demo.apps.hl.test";
const DB_PASSWORD: &str = "pii-demo-password";

fn wait_audit(child: std::process::Child) -> (bool, String) {
    let out = child.wait_with_output().expect("audit");
    (out.status.success(), text(&out))
}

#[test]
fn post_through_gateway_is_stored_and_every_pod_flow_is_mesh_mtls() {
    let dir = copy_example("pii-demo");
    let mesh = Mesh::up(dir.path());
    let gw = mesh.published(80);
    let email = "ada.strict@example.test";
    let audit = mesh.audit(6, &["--expect-encrypted", "--grep", email]);
    let (code, body) = post_person(&gw, HOST, "Ada Lovelace", email);
    assert_eq!(code, 200, "POST through the gateway: {body}\n{}", mesh.log());
    assert!(body.contains(email), "the app lists the new person");
    let rows = mesh.exec(
        "mysql-server",
        &["mariadb", "-h", "127.0.0.1", "-u", "pii", &format!("-p{DB_PASSWORD}"), "pii", "-N", "-e", "select email from people"],
    );
    assert!(text(&rows).contains(email), "row stored in MariaDB: {}", text(&rows));
    let (ok, report) = wait_audit(audit);
    assert!(ok, "audit --expect-encrypted --grep must pass under STRICT:\n{report}");
    assert!(report.contains("not found in any captured byte"), "{report}");
    // Both hops were captured, classified mesh-mtls, with both SPIFFE IDs.
    assert!(
        report.contains("spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account → spiffe://cluster.local/ns/pii-demo/sa/httpd-server"),
        "{report}"
    );
    assert!(
        report.contains("spiffe://cluster.local/ns/pii-demo/sa/httpd-server → spiffe://cluster.local/ns/pii-demo/sa/mysql-server"),
        "{report}"
    );
    assert!(report.contains("mysql-server:3306") && report.contains("mesh-mtls"), "{report}");
    assert!(!report.contains("plaintext"), "{report}");
}

#[test]
fn control_without_injection_the_audit_finds_plaintext_and_the_email() {
    let dir = copy_example("pii-demo");
    edit(&dir.path().join("namespace.yaml"), "istio-injection: enabled", "istio-injection: disabled");
    let mesh = Mesh::up(dir.path());
    let gw = mesh.published(80);
    let email = "ada.plain@example.test";
    let audit = mesh.audit(6, &["--expect-encrypted", "--grep", email]);
    let (code, body) = post_person(&gw, HOST, "Ada Plain", email);
    assert_eq!(code, 200, "POST without sidecars: {body}\n{}", mesh.log());
    let (ok, report) = wait_audit(audit);
    assert!(!ok, "the audit must fail when traffic is plaintext:\n{report}");
    assert!(report.contains("plaintext"), "{report}");
    assert!(report.contains(&format!("{email:?} FOUND in clear")), "{report}");
}

fn add_naked_client(dir: &std::path::Path) {
    std::fs::write(
        dir.join("naked-client.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: mysql-client\n  namespace: pii-demo\nspec:\n  selector:\n    matchLabels: {app: mysql-client}\n  template:\n    metadata:\n      labels: {app: mysql-client}\n      annotations:\n        sidecar.istio.io/inject: \"false\"\n    spec:\n      containers:\n      - name: client\n        image: mariadb:10.11\n        command: [sleep, infinity]\n",
    )
    .expect("write naked client");
    let rt = dir.join("veil.local.yaml");
    let mut text = std::fs::read_to_string(&rt).expect("read veil.local.yaml");
    text.push_str("- name: mysql-client\n  namespace: pii-demo\n  command: [\"sleep\", \"3600\"]\n");
    std::fs::write(&rt, text).expect("write veil.local.yaml");
}

fn mysql_select(mesh: &Mesh) -> (bool, String, Duration) {
    let t = Instant::now();
    let out = mesh.exec(
        "mysql-client",
        &[
            "timeout", "15", "mariadb", "--connect-timeout=10", "-h", "mysql-server", "-P", "3306", "-u", "pii",
            &format!("-p{DB_PASSWORD}"), "pii", "-N", "-e", "select 40+2",
        ],
    );
    (out.status.success(), text(&out), t.elapsed())
}

#[test]
fn naked_client_to_mysql_fails_under_strict_and_succeeds_under_permissive() {
    let dir = copy_example("pii-demo");
    add_naked_client(dir.path());
    let mesh = Mesh::up(dir.path());
    let (ok, out, took) = mysql_select(&mesh);
    assert!(!ok, "plaintext to a STRICT MariaDB must fail: {out}");
    assert!(took < Duration::from_secs(5), "refused promptly, not left hanging: {took:?}");
    std::thread::sleep(Duration::from_millis(200));
    let refusal = mesh.proxy_log("pii-demo", "mysql-server");
    assert!(refusal.contains("STRICT") && refusal.contains("refused"), "the inbound logs why: {refusal}");
    let client_ip = mesh.pod_ip("mysql-client");
    assert!(refusal.contains(&client_ip), "the refusal names the peer {client_ip}: {refusal}");

    // The user edits the namespace policy while the mesh runs.
    edit(&dir.path().join("001-pii-demo-strict.yaml"), "mode: STRICT", "mode: PERMISSIVE");
    let edited = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut ok, mut out, mut took) = (false, String::new(), Duration::ZERO);
    while Instant::now() < deadline {
        (ok, out, took) = mysql_select(&mesh);
        if ok {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(ok, "plaintext to a PERMISSIVE MariaDB must succeed: {out}\n{}", mesh.log());
    println!("policy edit → plaintext client accepted after {:?}", edited.elapsed());
    assert!(out.contains("42"), "{out}");
    // MariaDB greets first: the connection is passed at once, never after a sniffing timeout.
    assert!(took < Duration::from_secs(3), "server-first connect took {took:?}");
    assert!(mesh.log().contains("config reloaded"), "{}", mesh.log());

    // A broken edit is rejected with file:line:field and changes nothing.
    edit(&dir.path().join("001-pii-demo-strict.yaml"), "mode: PERMISSIVE", "mode: PERMISIVE");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !mesh.log().contains("config rejected") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = mesh.log();
    assert!(log.contains("config rejected"), "{log}");
    assert!(log.contains("001-pii-demo-strict.yaml:25: spec.mtls.mode: unknown mode \"PERMISIVE\""), "{log}");
    let (ok, out, _) = mysql_select(&mesh);
    assert!(ok, "the last good config (PERMISSIVE) keeps serving: {out}");
    // No proxy was restarted by any of this: the sidecars started by `veil up` still run.
    let state = mesh.state_json();
    for pod in state["pods"].as_array().into_iter().flatten() {
        if let Some(pid) = pod["proxy_pid"].as_i64() {
            assert!(std::path::Path::new(&format!("/proc/{pid}/exe")).exists(), "proxy of {} restarted or died", pod["name"]);
        }
    }
}

fn openssl(args: &[&str], dir: &std::path::Path) {
    let out = run(Command::new("openssl").args(args).current_dir(dir));
    assert!(out.status.success(), "openssl {args:?}: {}", text(&out));
}

#[test]
fn clients_without_a_mesh_certificate_are_refused_with_the_reason() {
    let dir = copy_example("pii-demo");
    add_naked_client(dir.path());
    let mesh = Mesh::up(dir.path());
    let certs = tempfile::tempdir().expect("tempdir");
    let c = certs.path();
    // Another CA, and a client certificate it signs with a plausible SPIFFE ID.
    openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key"], c);
    openssl(&["req", "-x509", "-new", "-key", "ca.key", "-subj", "/O=other-ca", "-days", "1", "-out", "ca.crt"], c);
    openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "client.key"], c);
    openssl(&["req", "-new", "-key", "client.key", "-subj", "/O=intruder", "-out", "client.csr"], c);
    std::fs::write(c.join("ext.cnf"), "subjectAltName=URI:spiffe://cluster.local/ns/pii-demo/sa/httpd-server\nextendedKeyUsage=clientAuth\n").expect("ext");
    openssl(&["x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1", "-extfile", "ext.cnf", "-out", "client.crt"], c);
    let target = format!("{}:3306", mesh.pod_ip("mysql-server"));
    let attempt = |extra: &[&str]| {
        let mut args = vec!["timeout", "10", "openssl", "s_client", "-connect", &target, "-alpn", "istio", "-tls1_3"];
        args.extend_from_slice(extra);
        let out = Command::new("ip")
            .args(["netns", "exec", &mesh.netns("mysql-client")])
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("s_client");
        text(&out)
    };
    let foreign_cert = c.join("client.crt").display().to_string();
    let foreign_key = c.join("client.key").display().to_string();
    let foreign = attempt(&["-cert", &foreign_cert, "-key", &foreign_key]);
    let none = attempt(&[]);
    std::thread::sleep(Duration::from_millis(300));
    let log = mesh.proxy_log("pii-demo", "mysql-server");
    assert!(!foreign.contains("Verify return code: 0") || !foreign.contains("SSL-Session"), "{foreign}");
    assert!(log.contains("not signed by the mesh CA") || log.contains("UnknownIssuer"), "foreign CA refused with the reason:\n{log}");
    assert!(log.to_lowercase().contains("no certificate") || log.contains("NoCertificatesPresented") || log.contains("peer sent no certificates"),
        "missing client certificate refused with the reason:\n{log}\n{none}");
    // Control: the mesh's own client (through the httpd sidecar) still works.
    let (code, _) = post_person(&mesh.published(80), HOST, "Control", "control@example.test");
    assert_eq!(code, 200);
}

#[test]
fn validate_reports_file_line_field_and_up_starts_nothing() {
    let dir = copy_example("pii-demo");
    edit(&dir.path().join("001-pii-demo-strict.yaml"), "mode: STRICT", "mode: STRCT");
    let out = run(Command::new(veil()).arg("validate").arg(dir.path()));
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("001-pii-demo-strict.yaml:25: spec.mtls.mode: unknown mode \"STRCT\"; expected one of UNSET, DISABLE, PERMISSIVE, STRICT"),
        "{t}"
    );
    // Control: the unedited example validates.
    let good = run(Command::new(veil()).arg("validate").arg(repo_root().join("examples/pii-demo")));
    assert!(good.status.success(), "{}", text(&good));

    assert_root();
    let _lock = lock();
    let state = tempfile::tempdir().expect("state");
    let up = run(Command::new(veil()).arg("up").arg(dir.path()).arg("--state-dir").arg(state.path()));
    let t = text(&up);
    assert!(!up.status.success(), "{t}");
    assert!(t.contains("nothing was started") && t.contains("STRCT"), "{t}");
    assert!(leftovers().is_empty(), "up on a bad config created {:?}", leftovers());
}

#[test]
fn down_leaves_no_namespace_link_rule_or_process() {
    let dir = copy_example("pii-demo");
    let mut mesh = Mesh::up(dir.path());
    let state = mesh.state_json();
    let pids: Vec<i32> = state["pods"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| [p["workload_pid"].as_i64(), p["proxy_pid"].as_i64()])
        .flatten()
        .map(|p| p as i32)
        .collect();
    assert!(pids.len() >= 5, "workloads and proxies running: {pids:?}");
    assert!(!leftovers().is_empty(), "control: the running mesh is visible to the check");
    let down = run(Command::new(veil()).arg("down").arg("--state-dir").arg(mesh.state_dir()));
    assert!(down.status.success(), "{}", text(&down));
    let status = mesh.stop();
    assert!(status.is_some(), "veil up exited after veil down");
    assert_eq!(leftovers(), Vec::<String>::new());
    for pid in pids {
        // A killed process may take a moment to go; a zombie no longer runs.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default().replace('\0', " ");
        let zombie = stat.split(") ").nth(1).is_some_and(|r| r.starts_with('Z'));
        assert!(stat.is_empty() || zombie, "process {pid} still running after veil down: {cmd} ({stat})");
    }
}

#[test]
fn status_shows_the_pods_and_ctrl_c_removes_everything() {
    let dir = copy_example("pii-demo");
    let mut mesh = Mesh::up(dir.path());
    let status = run(Command::new(veil()).arg("status").arg("--state-dir").arg(mesh.state_dir()));
    let t = text(&status);
    assert!(status.status.success(), "{t}");
    for want in [
        "httpd-server",
        "mysql-server",
        "istio-ingressgateway",
        "spiffe://cluster.local/ns/pii-demo/sa/mysql-server",
        "Running",
        "published at 127.0.0.1:",
    ] {
        assert!(t.contains(want), "status lacks {want:?}:\n{t}");
    }
    let json = run(Command::new(veil()).args(["status", "-o", "json", "--state-dir"]).arg(mesh.state_dir()));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("status -o json is JSON");
    assert_eq!(v["pods"].as_array().map(Vec::len), Some(4));
    assert!(!leftovers().is_empty(), "control: the running mesh is visible to the check");
    let exit = mesh.stop();
    assert!(exit.is_some_and(|s| s.success()), "veil up exits cleanly on Ctrl-C: {exit:?}\n{}", mesh.log());
    assert_eq!(leftovers(), Vec::<String>::new(), "{}", mesh.log());
}
