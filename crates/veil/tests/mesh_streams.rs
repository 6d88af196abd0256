//! End to end: consecutive connections from one sidecar to the same endpoint and port
//! travel on one kept mesh mTLS connection (ALPN `veil-streams/1`), each as its own
//! stream: `examples/reachability`, pod a calls b 20 times in a row on the TCP echo port
//! and on the server-first greeter (the server speaks first, as MySQL does). Every call
//! must succeed with its own answer; b's sidecar records one inbound mesh-mTLS
//! connection per call, all from the same client sidecar port or a few. Control: with
//! `VEIL_MESH_STREAMS=0` every call comes on its own connection (20 distinct ports), so
//! the check tells reuse from its absence.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::time::Duration;
use veil_model::ConnectionRecord;

const CALLS: usize = 20;

/// Runs the calls from a to b and returns b's inbound records per port.
fn calls_and_records(env: &[(&str, &str)]) -> Vec<(u16, Vec<ConnectionRecord>)> {
    let example = copy_example("reachability");
    let mesh = Mesh::up_with_env(example.path(), env);
    let call = example.path().join("bin/call.py");
    let repeat = CALLS.to_string();
    let out = mesh.exec("a", &[call.to_str().expect("path"), "--repeat", &repeat, "tcp://b.reach:9000", "greet://b.reach:3306"]);
    let shown = text(&out);
    assert!(out.status.success(), "every call succeeds:\n{shown}\n{}", mesh.log());
    assert_eq!(shown.lines().filter(|l| l.starts_with("ok ")).count(), 2 * CALLS, "{shown}");
    assert_eq!(shown.lines().filter(|l| l.starts_with("ok greet:") && l.contains("pod=b")).count(), CALLS, "the greeter names b: {shown}");
    std::thread::sleep(Duration::from_millis(500)); // records are written in 50 ms batches
    let state = veil_local::up::MeshState::load(mesh.state_dir()).expect("mesh.json");
    let records = veil_audit::read_records(&state.records_dir(mesh.state_dir())).expect("records");
    let b_log = mesh.proxy_log("reach", "b");
    assert!(!b_log.contains("WARN"), "b's sidecar warned:\n{b_log}");
    [9000u16, 3306]
        .into_iter()
        .map(|port| {
            let inbound = records.iter().filter(|r| r.pod == "b" && r.direction == "inbound" && r.dst.port() == port).cloned().collect();
            (port, inbound)
        })
        .collect()
}

fn client_ports(records: &[ConnectionRecord]) -> BTreeSet<u16> {
    records.iter().map(|r| r.src.port()).collect()
}

#[test]
fn consecutive_connections_to_one_endpoint_share_a_kept_mesh_connection() {
    for (port, records) in calls_and_records(&[]) {
        assert_eq!(records.len(), CALLS, "port {port}: one record per call: {records:#?}");
        for r in &records {
            assert_eq!((r.security.as_str(), r.alpn.as_deref()), ("mesh-mtls", Some("veil-streams/1")), "port {port}: {r:#?}");
            assert!(r.source_principal.as_deref().is_some_and(|p| p.ends_with("/ns/reach/sa/a")), "{r:#?}");
        }
        let ports = client_ports(&records);
        assert!(ports.len() <= 3, "port {port}: {CALLS} calls came on {} mesh connections: {ports:?}", ports.len());
    }
}

#[test]
fn with_streams_off_every_connection_has_its_own_mesh_connection() {
    for (port, records) in calls_and_records(&[("VEIL_MESH_STREAMS", "0")]) {
        assert_eq!(records.len(), CALLS, "port {port}: {records:#?}");
        assert!(records.iter().all(|r| r.security == "mesh-mtls" && r.alpn.as_deref() == Some("istio")), "{records:#?}");
        assert_eq!(client_ports(&records).len(), CALLS, "port {port}: one mesh connection per call");
    }
}
