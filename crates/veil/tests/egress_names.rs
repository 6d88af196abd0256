//! End to end: ServiceEntries without `addresses` are told apart by name, under
//! `REGISTRY_ONLY`. `examples/egress-origination` runs with its seed's ServiceEntry taken
//! out and three `resolution: NONE` entries put in: `known.example` on 443 (HTTPS) and on
//! 80 (HTTP), and `second.example` on 443. The in-mesh `sleep` pod calls the external
//! nginx (outside the mesh, at one address) under different names:
//! - `https://known.example` and `https://second.example` reach nginx (two entries on one
//!   port no longer collide); `https://other.example` is refused at the sidecar, whose log
//!   names the SNI;
//! - `http://known.example` reaches nginx's plain port; `http://other.example` gets 502 and
//!   the log names the Host;
//! - control: under `ALLOW_ANY` the unknown names pass through to nginx.

mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

const EXTERNAL_IP: &str = "10.209.250.10";
const SEED: &str = "004-egress-mtls-origination.yaml";

const ENTRIES: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: known-https
spec:
  hosts: [known.example]
  ports:
  - {number: 443, name: https, protocol: HTTPS}
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: known-http
spec:
  hosts: [known.example]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: second-https
spec:
  hosts: [second.example]
  ports:
  - {number: 443, name: https, protocol: HTTPS}
  resolution: NONE
";

/// The example with `setup.sh` run, the seed's ServiceEntry (its first document, which
/// matches nginx by address) removed, and [`ENTRIES`] added.
fn prepared() -> tempfile::TempDir {
    let dir = copy_example("egress-origination");
    let out = run(Command::new(dir.path().join("setup.sh")).arg("--force"));
    assert!(out.status.success(), "setup.sh: {}", text(&out));
    let seed = dir.path().join(SEED);
    let text = std::fs::read_to_string(&seed).expect("seed");
    let (entry, rest) = text.split_once("---\n").expect("the ServiceEntry is the first document");
    assert!(entry.contains("kind: ServiceEntry"), "{entry}");
    std::fs::write(&seed, rest).expect("write");
    std::fs::write(dir.path().join("entries.yaml"), ENTRIES).expect("write");
    dir
}

/// `curl <scheme>://<host>/` from the sleep pod, the name resolved to the external nginx:
/// (curl exit code, HTTP status, body and errors).
fn call(mesh: &Mesh, scheme: &str, host: &str) -> (i32, u16, String) {
    let port = if scheme == "https" { 443 } else { 80 };
    let resolve = format!("{host}:{port}:{EXTERNAL_IP}");
    let url = format!("{scheme}://{host}/");
    let out = mesh.exec("sleep", &["curl", "-sS", "-k", "-m", "10", "--resolve", &resolve, "-w", "\n%{http_code}", &url]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", "0"));
    let body = format!("{body}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), code.trim().parse().unwrap_or(0), body)
}

/// Calls until `done` holds (≤ 40 s, every 500 ms); returns the last result.
fn call_until(mesh: &Mesh, scheme: &str, host: &str, done: impl Fn(&(i32, u16, String)) -> bool) -> (i32, u16, String) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let last = call(mesh, scheme, host);
        if done(&last) {
            return last;
        }
        assert!(Instant::now() < deadline, "{scheme}://{host}: last call {last:?}\n{}", mesh.proxy_log("default", "sleep"));
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// nginx's 443 requires a client certificate: a call that reaches it gets its 400.
fn reached_tls(r: &(i32, u16, String)) -> bool {
    r.1 == 400 && r.2.contains("No required SSL certificate was sent")
}

fn reached_plain(r: &(i32, u16, String)) -> bool {
    r.1 == 200 && r.2.contains("plain port 80 of the external nginx")
}

#[test]
fn registry_only_tells_service_entries_without_addresses_apart_by_sni_and_host() {
    let dir = prepared();
    let mesh = Mesh::up(dir.path());
    let sidecar_log = || mesh.proxy_log("default", "sleep");

    // Known names reach nginx, on 443 (two entries, one port) and on 80.
    for host in ["known.example", "second.example"] {
        let got = call_until(&mesh, "https", host, reached_tls);
        assert!(reached_tls(&got), "{host}: {got:?}");
    }
    let got = call_until(&mesh, "http", "known.example", reached_plain);
    assert!(reached_plain(&got), "{got:?}");

    // An unknown SNI on 443: the connection is refused at the sidecar, naming the SNI.
    let (rc, code, body) = call(&mesh, "https", "other.example");
    assert!(rc != 0 && code == 0, "refused before any TLS answer: rc {rc}, {code}, {body}");
    let refusal = format!("outbound connection to {EXTERNAL_IP}:443 refused: SNI other.example matches no host");
    let log = log_until(sidecar_log, |l| l.contains(&refusal));
    assert!(log.contains(&refusal) && log.contains("REGISTRY_ONLY"), "{log}");

    // An unknown Host on 80: 502, naming the host.
    let (_, code, body) = call(&mesh, "http", "other.example");
    assert_eq!(code, 502, "{body}");
    let refusal = "outbound HTTP request for host other.example to";
    let log = log_until(sidecar_log, |l| l.contains(refusal));
    assert!(log.contains(refusal) && log.contains("REGISTRY_ONLY"), "{log}");
    // Control: the known host on the same port still passes; the refusal is per name.
    assert!(reached_plain(&call(&mesh, "http", "known.example")));

    // Control: under ALLOW_ANY the same unknown names pass through to nginx.
    edit(&dir.path().join("mesh-config.yaml"), "mode: REGISTRY_ONLY", "mode: ALLOW_ANY");
    let got = call_until(&mesh, "https", "other.example", reached_tls);
    assert!(reached_tls(&got), "{got:?}");
    let got = call_until(&mesh, "http", "other.example", reached_plain);
    assert!(reached_plain(&got), "{got:?}");
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
