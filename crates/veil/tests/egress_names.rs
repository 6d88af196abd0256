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
//! - a `STATIC` entry without addresses (`static.example` on 8443/8080, endpoint nginx's
//!   443/80) dialled at an address it does not list is still found by its SNI and its
//!   Host (istiod's `0.0.0.0:<port>` listeners) and sent to its endpoint; other names
//!   at that address are refused (added last, under `REGISTRY_ONLY` again);
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

/// A `STATIC` entry without addresses whose endpoint is nginx (added last: its endpoint
/// address would otherwise name it for every connection to nginx's ports).
const STATIC_ENTRY: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: static-nginx
spec:
  hosts: [static.example]
  ports:
  - {number: 8443, name: https, protocol: HTTPS}
  - {number: 8080, name: http, protocol: HTTP}
  resolution: STATIC
  endpoints:
  - address: 10.209.250.10
    ports: {https: 443, http: 80}
";

/// An address no entry lists: what a workload dials when its DNS answer for a `STATIC`
/// entry's host is not one of the entry's endpoints.
const OTHER_IP: &str = "10.209.250.99";

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
    call_at(mesh, scheme, host, EXTERNAL_IP, 0)
}

/// [`call`] with the name resolved to `ip`, on port `port` (0: the scheme's).
fn call_at(mesh: &Mesh, scheme: &str, host: &str, ip: &str, port: u16) -> (i32, u16, String) {
    let port = match (port, scheme) {
        (0, "https") => 443,
        (0, _) => 80,
        (p, _) => p,
    };
    let resolve = format!("{host}:{port}:{ip}");
    let url = format!("{scheme}://{host}:{port}/");
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

/// [`call_until`] for `host` resolved to [`OTHER_IP`] on `port`.
fn call_until_at(mesh: &Mesh, scheme: &str, host: &str, port: u16, done: impl Fn(&(i32, u16, String)) -> bool) -> (i32, u16, String) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let last = call_at(mesh, scheme, host, OTHER_IP, port);
        if done(&last) {
            return last;
        }
        assert!(Instant::now() < deadline, "{scheme}://{host}:{port} at {OTHER_IP}: last call {last:?}\n{}", mesh.proxy_log("default", "sleep"));
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

    // A STATIC entry without addresses, dialled at an address its endpoints do not list:
    // its SNI and its Host still name it, and the sidecar sends it to the endpoint.
    edit(&dir.path().join("mesh-config.yaml"), "mode: ALLOW_ANY", "mode: REGISTRY_ONLY");
    let entries = dir.path().join("entries.yaml");
    let text = std::fs::read_to_string(&entries).expect("entries");
    std::fs::write(&entries, format!("{text}---\n{STATIC_ENTRY}")).expect("write");
    let got = call_until_at(&mesh, "https", "static.example", 8443, reached_tls);
    assert!(reached_tls(&got), "SNI static.example at {OTHER_IP}: {got:?}");
    let got = call_until_at(&mesh, "http", "static.example", 8080, reached_plain);
    assert!(reached_plain(&got), "Host static.example at {OTHER_IP}: {got:?}");
    // Control: another name at that address is refused (TLS) or answered 502 (HTTP).
    let got = call_until_at(&mesh, "https", "other.example", 8443, |r| r.0 != 0 && r.1 == 0);
    assert!(got.0 != 0 && got.1 == 0, "refused: {got:?}");
    let got = call_until_at(&mesh, "http", "other.example", 8080, |r| r.1 == 502);
    assert_eq!(got.1, 502, "{got:?}");
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
