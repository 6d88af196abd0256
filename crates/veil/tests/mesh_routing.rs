//! End to end: `veil up examples/bookinfo-lite` with Istio's Bookinfo routing files
//! (istio-cases 02, 04, 05, 06, copied unchanged) applied one after the other while the mesh
//! runs. `productpage-v1` calls `reviews:9080` through its real sidecar (bin/load.py, one
//! keep-alive connection); each answer names the pod and version that served it. `veil audit`
//! proves the calls cross the pod links as mesh mTLS.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const CASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/istio-cases");
const CLIENT: &str = "productpage-v1";
const URL: &str = "http://reviews:9080/";

/// Copies an istio-cases file, byte for byte, into the example directory.
fn apply(dir: &Path, case: &str) {
    std::fs::copy(Path::new(CASES).join(case), dir.join(case)).unwrap_or_else(|e| panic!("copy {case}: {e}"));
}

fn withdraw(dir: &Path, case: &str) {
    std::fs::remove_file(dir.join(case)).unwrap_or_else(|e| panic!("remove {case}: {e}"));
}

/// Runs bin/load.py in the client pod: `count` GETs of reviews, with `header` if given.
/// Returns the answers per "<pod> <version>"; panics on any failed request.
fn load(mesh: &Mesh, dir: &Path, count: usize, header: Option<&str>) -> BTreeMap<String, u64> {
    let load_py = dir.join("bin/load.py").display().to_string();
    let mut args = vec!["netns".to_string(), "exec".into(), mesh.netns(CLIENT), "timeout".into(), "90".into()];
    args.extend(["python3".into(), load_py, "--count".into(), count.to_string()]);
    if let Some(h) = header {
        args.extend(["--header".into(), h.into()]);
    }
    args.push(URL.into());
    let out = run(Command::new("ip").args(&args));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let report: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("load.py output {e}: {}", text(&out)));
    let ok = report["statuses"]["200"].as_u64().unwrap_or(0);
    assert!(
        ok == count as u64 && report["errors"] == 0,
        "load.py: {stdout}\nproxy log (tail):\n{}",
        tail(&mesh.proxy_log("default", CLIENT), 20)
    );
    let answers = report["answers"].as_object().cloned().unwrap_or_default();
    answers.into_iter().map(|(k, v)| (k, v.as_u64().unwrap_or(0))).collect()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Polls (every 0.5 s, at most 30 s) until a sample of 20 requests meets `done`: the
/// reloaded config has reached the client's sidecar.
fn wait_for(mesh: &Mesh, dir: &Path, header: Option<&str>, what: &str, done: impl Fn(&BTreeMap<String, u64>) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sample = load(mesh, dir, 20, header);
        if done(&sample) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: still {sample:?} after 30 s\n{}", tail(&mesh.log(), 20));
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn only(answers: &BTreeMap<String, u64>, key: &str) -> bool {
    answers.len() == 1 && answers.contains_key(key)
}

#[test]
fn bookinfo_routing_cases_through_real_sidecars() {
    let example = copy_example("bookinfo-lite");
    let dir = example.path();
    apply(dir, "02-bookinfo-destination-rule-all.yaml");
    let mesh = Mesh::up(dir);

    // Control, with no VirtualService: every version answers, and the audit sees each
    // productpage → reviews flow (new connections, handshakes included) as mesh mTLS.
    let audit = mesh.audit(8, &["--expect-encrypted"]);
    let spread = load(&mesh, dir, 60, None);
    assert_eq!(spread.len(), 3, "round robin over reviews v1/v2/v3: {spread:?}");
    let out = audit.wait_with_output().expect("veil audit");
    let report = text(&out);
    assert!(out.status.success(), "veil audit --expect-encrypted:\n{report}");
    for v in ["reviews-v1", "reviews-v2", "reviews-v3"] {
        let line = report.lines().find(|l| l.starts_with(CLIENT) && l.contains(&format!("{v}:9080")));
        let line = line.unwrap_or_else(|| panic!("no {CLIENT} → {v} flow in the audit:\n{report}"));
        assert!(line.contains("mesh-mtls") && line.contains("sa/bookinfo-reviews"), "{line}");
    }

    // Case 04: every request to v1.
    apply(dir, "04-bookinfo-virtual-service-all-v1.yaml");
    wait_for(&mesh, dir, None, "case 04", |a| only(a, "reviews-v1 v1"));
    let all_v1 = load(&mesh, dir, 200, None);
    assert!(only(&all_v1, "reviews-v1 v1"), "case 04: {all_v1:?}");

    // Case 05: end-user jason → v2, everyone else → v3.
    withdraw(dir, "04-bookinfo-virtual-service-all-v1.yaml");
    apply(dir, "05-bookinfo-vs-reviews-jason-v2-v3.yaml");
    wait_for(&mesh, dir, None, "case 05", |a| only(a, "reviews-v3 v3"));
    let jason = load(&mesh, dir, 100, Some("end-user: jason"));
    assert!(only(&jason, "reviews-v2 v2"), "case 05, jason: {jason:?}");
    let others = load(&mesh, dir, 100, Some("end-user: mallory"));
    assert!(only(&others, "reviews-v3 v3"), "case 05, others: {others:?}");

    // Case 06: 90 % v1, 10 % v2, measured over 1000 requests. The standard deviation of the
    // v1 count is 9.5, so 850..=950 fails only on a real error.
    withdraw(dir, "05-bookinfo-vs-reviews-jason-v2-v3.yaml");
    apply(dir, "06-bookinfo-vs-reviews-90-10.yaml");
    wait_for(&mesh, dir, None, "case 06", |a| !a.contains_key("reviews-v3 v3"));
    let split = load(&mesh, dir, 1000, None);
    let v1 = split.get("reviews-v1 v1").copied().unwrap_or(0);
    let v2 = split.get("reviews-v2 v2").copied().unwrap_or(0);
    assert_eq!(v1 + v2, 1000, "case 06: {split:?}");
    assert!((850..=950).contains(&v1), "case 06: v1 got {v1} of 1000 (want 85–95 %): {split:?}");
    println!("case 06: v1 {v1}, v2 {v2} of 1000");
}
