//! End to end: the explain tools (`veil authn tls-check`, `veil x describe
//! pod`, `veil x auth check`) read the control plane of a running `veil up`
//! (on copies of examples/pii-demo and examples/hipster-app, with policies
//! written here), as tables compared with goldens under tests/golden/ and
//! as JSON carrying the same facts. `UPDATE_GOLDEN=1` rewrites the goldens.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs `veil <args> --state-dir <mesh>`; panics unless it succeeds.
fn veil_ok(mesh: &Mesh, args: &[&str]) -> String {
    let out = run(Command::new(veil()).args(args).arg("--state-dir").arg(mesh.state_dir()));
    assert!(out.status.success(), "veil {args:?} failed:\n{}\nveil up log:\n{}", text(&out), mesh.log());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn veil_json(mesh: &Mesh, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let out = veil_ok(mesh, &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("veil {args:?} --output json is not JSON ({e}):\n{out}"))
}

/// Runs `veil <args>` until its output satisfies `done` (≤ 30 s, every 250 ms).
fn wait_output(mesh: &Mesh, args: &[&str], what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = veil_ok(mesh, args);
        if done(&out) {
            return out;
        }
        assert!(Instant::now() < deadline, "{what}: not seen in 30 s; last output:\n{out}\nlog:\n{}", mesh.log());
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Replaces IPv4 addresses by `<IP>` and the token after `expires ` by
/// `<TIME>`, and collapses runs of spaces inside a line (column widths
/// follow the addresses), keeping indentation.
fn normalise(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let mut body = String::new();
        let mut chars = line[indent..].chars().peekable();
        while let Some(c) = chars.next() {
            if c.is_ascii_digit() {
                let mut token = c.to_string();
                while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit() || **d == '.') {
                    token.push(d);
                    chars.next();
                }
                let parts: Vec<&str> = token.trim_end_matches('.').split('.').collect();
                let is_ip = parts.len() == 4 && parts.iter().all(|p| !p.is_empty() && p.parse::<u8>().is_ok());
                body.push_str(if is_ip { "<IP>" } else { &token });
                if is_ip && token.ends_with('.') {
                    body.push('.');
                }
            } else if c == ' ' && chars.peek() == Some(&' ') {
                while chars.peek() == Some(&' ') {
                    chars.next();
                }
                body.push_str("  ");
            } else {
                body.push(c);
            }
        }
        if let Some(at) = body.find("expires ") {
            let start = at + "expires ".len();
            let end = body[start..].find([' ', ',']).map_or(body.len(), |e| start + e);
            body.replace_range(start..end, "<TIME>");
        }
        out.push_str(&line[..indent]);
        out.push_str(&body);
        out.push('\n');
    }
    out
}

/// Compares `text` (normalised) with tests/golden/`name`, or writes it
/// when `UPDATE_GOLDEN=1`.
fn golden(name: &str, text: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    let got = normalise(text);
    if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().expect("golden dir")).expect("mkdir golden");
        std::fs::write(&path, &got).expect("write golden");
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run the test with UPDATE_GOLDEN=1 to write it", path.display()));
    assert_eq!(got, want, "{} differs (run with UPDATE_GOLDEN=1 to accept the new output)", path.display());
}

/// The table line whose first column is `key`, split into columns.
fn row(table: &str, key: &str) -> Vec<String> {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(key))
        .unwrap_or_else(|| panic!("no row {key} in:\n{table}"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The JSON row of a tls-check for `host:port`.
fn tls_row<'a>(check: &'a Value, host: &str, port: u16) -> &'a Value {
    check["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["host"] == host && r["port"] == port && r["subset"].is_null()))
        .unwrap_or_else(|| panic!("no row {host}:{port} in {check:#}"))
}

const HTTPD: &str = "httpd-server.pii-demo.svc.cluster.local";
const MYSQL: &str = "mysql-server.pii-demo.svc.cluster.local";

const DESTINATION_RULES: &str = r#"apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: mysql-server
  namespace: pii-demo
spec:
  host: mysql-server
  trafficPolicy:
    tls:
      mode: DISABLE
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: httpd-server
  namespace: pii-demo
spec:
  host: httpd-server.pii-demo.svc.cluster.local
  trafficPolicy:
    tls:
      mode: ISTIO_MUTUAL
"#;

#[test]
fn tls_check_shows_auto_without_rules_then_conflict_and_ok_after_a_live_edit() {
    let dir = copy_example("pii-demo");
    let mesh = Mesh::up(dir.path());
    let args = ["authn", "tls-check", "pii-demo/httpd-server"];
    let auto = veil_ok(&mesh, &args);
    assert_eq!(row(&auto, &format!("{HTTPD}:80"))[1..4], ["AUTO", "STRICT", "-"], "{auto}");
    assert_eq!(row(&auto, &format!("{MYSQL}:3306"))[1..4], ["AUTO", "STRICT", "-"], "{auto}");
    golden("tls-check-auto.txt", &auto);

    std::fs::write(dir.path().join("destination-rules.yaml"), DESTINATION_RULES).expect("write rules");
    let table = wait_output(&mesh, &args, "CONFLICT after the DestinationRules", |t| t.contains("CONFLICT"));
    // STRICT server + DISABLE client cannot talk; STRICT + ISTIO_MUTUAL can.
    assert_eq!(
        row(&table, &format!("{MYSQL}:3306"))[1..],
        ["CONFLICT", "STRICT", "DISABLE", "pii-demo/default", "pii-demo/mysql-server"],
        "{table}"
    );
    assert_eq!(
        row(&table, &format!("{HTTPD}:80"))[1..],
        ["OK", "STRICT", "ISTIO_MUTUAL", "pii-demo/default", "pii-demo/httpd-server"],
        "{table}"
    );
    golden("tls-check-rules.txt", &table);

    let json = veil_json(&mesh, &args);
    assert_eq!(json["client"], "pii-demo/httpd-server");
    let mysql = tls_row(&json, MYSQL, 3306);
    assert_eq!((&mysql["status"], &mysql["server"], &mysql["client"]), (&"CONFLICT".into(), &"STRICT".into(), &"DISABLE".into()));
    assert_eq!(mysql["destination_rules"], serde_json::json!(["pii-demo/mysql-server"]));
    let httpd = tls_row(&json, HTTPD, 80);
    assert_eq!((&httpd["status"], &httpd["client"]), (&"OK".into(), &"ISTIO_MUTUAL".into()));

    // Without a pod: each Service seen from its own namespace, same rules here.
    let all = veil_ok(&mesh, &["authn", "tls-check"]);
    assert_eq!(row(&all, &format!("{MYSQL}:3306"))[1], "CONFLICT", "{all}");

    // The admin API lists every proxy with its open stream, synced to the new version.
    let admin = mesh.state_json()["admin"].as_str().expect("admin address in mesh.json").to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = run(Command::new("curl").args(["-s", "-m", "5", &format!("http://{admin}/debug/pods")]));
        let pods: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let httpd = pods.as_array().and_then(|a| a.iter().find(|p| p["pod"] == "httpd-server")).cloned();
        if let Some(p) = httpd.filter(|p| p["synced"] == true) {
            assert!(p["config_version"].as_u64() >= Some(2), "the rules changed httpd's config: {p:#}");
            assert_eq!(p["stream"]["sent_version"], p["config_version"], "{p:#}");
            break;
        }
        assert!(Instant::now() < deadline, "httpd-server's proxy not synced: {pods:#}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

const EXPLAIN_POLICIES: &str = r#"apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: httpd-server
  namespace: pii-demo
spec:
  selector:
    matchLabels:
      app: httpd-server
  mtls:
    mode: PERMISSIVE
  portLevelMtls:
    8443:
      mode: DISABLE
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: httpd-in-root
  namespace: istio-system
spec:
  selector:
    matchLabels:
      app: httpd-server
  mtls:
    mode: DISABLE
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: newer-namespace-policy
  namespace: pii-demo
  creationTimestamp: "2024-01-01T00:00:00Z"
spec:
  mtls:
    mode: DISABLE
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: httpd-server
  namespace: pii-demo
spec:
  host: httpd-server
  trafficPolicy:
    tls:
      mode: ISTIO_MUTUAL
    portLevelSettings:
    - port:
        number: 80
      tls:
        mode: ISTIO_MUTUAL
  subsets:
  - name: v1
    labels:
      app: httpd-server
  - name: v2
    labels:
      version: v2
"#;

#[test]
fn describe_and_auth_check_show_the_policies_that_apply() {
    let dir = copy_example("pii-demo");
    std::fs::write(dir.path().join("explain-policies.yaml"), EXPLAIN_POLICIES).expect("write policies");
    let mesh = Mesh::up(dir.path());

    let describe = veil_ok(&mesh, &["x", "describe", "pod", "pii-demo/httpd-server"]);
    for fact in [
        "Port: 80/auto-detect targets pod port 80 (mTLS PERMISSIVE)",
        &format!("DestinationRule: pii-demo/httpd-server for \"{HTTPD}\""),
        "Matching subsets: v1",
        "(Non-matching subsets v2)",
        "Traffic Policy TLS Mode: ISTIO_MUTUAL",
        "VirtualService: pii-demo/httpd-server-virtual-service",
        "Workload mTLS mode: PERMISSIVE",
        "8443: DISABLE",
        "pii-demo/default, pii-demo/httpd-server",
        "pii-demo/newer-namespace-policy: another policy at the same level",
        "istio-system/httpd-in-root: it is in the root namespace",
    ] {
        assert!(describe.contains(fact), "describe lacks {fact:?}:\n{describe}");
    }
    golden("describe-httpd-server.txt", &describe);
    let json = veil_json(&mesh, &["x", "describe", "pod", "pii-demo/httpd-server"]);
    let pa = &json["peer_authentication"];
    assert_eq!((&pa["workload_mode"], &pa["port_modes"]["8443"]), (&"PERMISSIVE".into(), &"DISABLE".into()), "{json:#}");
    let ignored: Vec<&str> = pa["ignored"].as_array().expect("ignored").iter().filter_map(|i| i["policy"].as_str()).collect();
    assert_eq!(ignored, ["pii-demo/newer-namespace-policy", "istio-system/httpd-in-root"], "{json:#}");
    let rule = &json["services"][0]["destination_rule"];
    assert_eq!((&rule["tls_mode"], &rule["matching_subsets"]), (&"ISTIO_MUTUAL".into(), &serde_json::json!(["v1"])));
    assert_eq!(json["proxy"]["synced"], true, "{json:#}");

    // PERMISSIVE port: two filter chains; DISABLE port: one plaintext chain.
    let httpd = veil_ok(&mesh, &["x", "auth", "check", "pii-demo/httpd-server"]);
    let ip = mesh.pod_ip("httpd-server");
    let id = "spiffe://cluster.local/ns/pii-demo/sa/httpd-server";
    assert_eq!(row(&httpd, &format!("{ip}_80[0]"))[1..], [id, "yes", "(PERMISSIVE)"], "{httpd}");
    assert_eq!(row(&httpd, &format!("{ip}_80[1]"))[1..], ["none", "no", "(PERMISSIVE)"], "{httpd}");
    assert_eq!(row(&httpd, &format!("{ip}_8443[0]"))[1..], ["none", "no", "(DISABLE)"], "{httpd}");
    assert!(httpd.contains(&format!("Certificate held by the proxy: {id}, expires ")), "{httpd}");
    assert_eq!(
        row(&httpd, &format!("outbound|3306||{MYSQL}"))[1..],
        ["ISTIO_MUTUAL", id, "spiffe://cluster.local/ns/pii-demo/sa/mysql-server", "auto-mTLS"],
        "{httpd}"
    );
    assert_eq!(row(&httpd, &format!("outbound|80||{HTTPD}"))[4], "pii-demo/httpd-server", "{httpd}");
    golden("auth-check-httpd-server.txt", &httpd);

    // STRICT port: one chain, and no plaintext chain (the control above has one).
    let mysql = veil_ok(&mesh, &["x", "auth", "check", "pii-demo/mysql-server"]);
    let ip = mesh.pod_ip("mysql-server");
    assert_eq!(row(&mysql, &format!("{ip}_3306[0]"))[2..], ["yes", "(STRICT)"], "{mysql}");
    assert!(!mysql.contains(&format!("{ip}_3306[1]")), "{mysql}");
    golden("auth-check-mysql-server.txt", &mysql);

    let json = veil_json(&mesh, &["x", "auth", "check", "pii-demo/httpd-server"]);
    let port80: Vec<&Value> = json["listeners"].as_array().expect("listeners").iter().filter(|l| l["port"] == 80).collect();
    assert_eq!(port80.len(), 2, "{json:#}");
    assert!(port80.iter().all(|l| l["mode"] == "PERMISSIVE"), "{json:#}");
    assert_eq!((&port80[0]["mtls"], &port80[1]["mtls"]), (&true.into(), &false.into()));
    assert_eq!(json["certificate"]["spiffe_id"], id);
    assert!(json["certificate"]["not_after_unix"].as_i64().is_some_and(|t| t > 1_700_000_000), "{json:#}");
    assert_eq!(json["proxy_version"], json["config_version"], "{json:#}");
}

/// `curl http://<ip>:8080/` from the host (outside the mesh): status and body.
fn curl_from_host(ip: &str) -> (bool, String) {
    let out = run(Command::new("curl").args(["-s", "-m", "5", "-f", &format!("http://{ip}:8080/")]));
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn seed_003_hipster_app_strict_then_permissive_while_running() {
    let dir = copy_example("hipster-app");
    let mesh = Mesh::up(dir.path());
    let args = ["x", "auth", "check", "hipster-app/frontend"];
    let ip = mesh.pod_ip("frontend");
    let id = "spiffe://cluster.local/ns/hipster-app/sa/frontend";
    let catalog = "outbound|3550||productcatalogservice.hipster-app.svc.cluster.local";

    let strict = veil_ok(&mesh, &args);
    assert_eq!(row(&strict, &format!("{ip}_8080[0]"))[1..], [id, "yes", "(STRICT)"], "{strict}");
    assert!(!strict.contains(&format!("{ip}_8080[1]")), "{strict}");
    assert_eq!(
        row(&strict, catalog)[1..],
        ["ISTIO_MUTUAL", id, "spiffe://cluster.local/ns/hipster-app/sa/productcatalogservice", "hipster-app/default"],
        "{strict}"
    );
    golden("hipster-auth-check-strict.txt", &strict);
    let tls = veil_ok(&mesh, &["authn", "tls-check", "hipster-app/frontend"]);
    assert_eq!(
        row(&tls, "productcatalogservice.hipster-app.svc.cluster.local:3550")[1..],
        ["OK", "STRICT", "ISTIO_MUTUAL", "hipster-app/policy-default", "hipster-app/default"],
        "{tls}"
    );
    // Plaintext from the edge fails under STRICT, while the mesh path works.
    let (ok, body) = curl_from_host(&ip);
    assert!(!ok, "plaintext to a STRICT pod must fail, got {body:?}");
    let inside = mesh.exec("frontend", &["curl", "-s", "-m", "5", "-f", "http://productcatalogservice:3550/products"]);
    assert!(text(&inside).contains("vintage-typewriter"), "frontend → catalog over mTLS: {}", text(&inside));

    edit(&dir.path().join("003-hipster-app.yaml"), "mode: STRICT", "mode: PERMISSIVE");
    let permissive = wait_output(&mesh, &args, "PERMISSIVE after the edit", |t| t.contains("(PERMISSIVE)"));
    assert_eq!(row(&permissive, &format!("{ip}_8080[0]"))[1..], [id, "yes", "(PERMISSIVE)"], "{permissive}");
    assert_eq!(row(&permissive, &format!("{ip}_8080[1]"))[1..], ["none", "no", "(PERMISSIVE)"], "{permissive}");
    assert_eq!(row(&permissive, catalog)[1], "ISTIO_MUTUAL", "the DestinationRule still applies: {permissive}");
    golden("hipster-auth-check-permissive.txt", &permissive);
    let json = veil_json(&mesh, &args);
    let chains = json["listeners"].as_array().expect("listeners").iter().filter(|l| l["port"] == 8080).count();
    assert_eq!(chains, 2, "{json:#}");

    // Now the pod accepts plaintext too: the host's curl gets the catalog through the frontend.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, body) = curl_from_host(&ip);
        if ok {
            assert!(body.contains("frontend:") && body.contains("vintage-typewriter"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "plaintext to the PERMISSIVE pod still fails:\n{}", mesh.log());
        std::thread::sleep(Duration::from_millis(250));
    }
}
