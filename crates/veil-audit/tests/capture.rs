//! Real captures of real traffic between two network namespaces joined by a
//! bridge (like `veil0`): plaintext, TLS with ALPN `istio` and TLS with ALPN
//! `h2` are told apart, the secret is found in clear only in the plaintext
//! flow, and connection records name the identities. Needs root.

mod support;

use support::{pods, server, Mesh, IP_A};
use veil_audit::{analyze, grep, read_records, AuditError, Capture, FlowClass};

const SECRET: &str = "veil-audit-secret-7f3a";

#[test]
fn plaintext_mesh_mtls_and_other_tls_are_told_apart() {
    let mesh = Mesh::new("c");
    let capture = Capture::start(&mesh.bridge, &mesh.pcap()).unwrap();
    let plain = mesh.exchange(8080, "plain", "-", SECRET);
    let istio = mesh.exchange(15006, "tls", "istio-peer-exchange,istio", SECRET);
    let h2 = mesh.exchange(8443, "tls", "h2", SECRET);
    capture.stop().unwrap();

    let report = analyze(&mesh.pcap(), &pods(), &[]).unwrap();
    let table = report.table();
    println!("{table}");
    assert_eq!(report.flows.len(), 3, "{table}");
    let expected = [
        (plain, 8080, FlowClass::Plaintext, vec![]),
        (
            istio,
            15006,
            FlowClass::MeshMtls,
            vec!["istio-peer-exchange", "istio"],
        ),
        (h2, 8443, FlowClass::Tls, vec!["h2"]),
    ];
    for (flow, (client, port, class, alpn)) in report.flows.iter().zip(expected) {
        assert_eq!(flow.client, client, "{table}");
        assert_eq!(flow.server, server(port), "{table}");
        assert_eq!(flow.class, class, "{table}");
        assert_eq!(flow.alpn, alpn, "{table}");
        assert_eq!(flow.client_pod.as_deref(), Some("a"));
        assert_eq!(flow.server_pod.as_deref(), Some("b"));
        assert!(flow.is_pod_to_pod());
    }
    let plain_flow = &report.flows[0];
    assert_eq!(plain_flow.bytes_to_server, SECRET.len() as u64 + 1);
    assert_eq!(
        plain_flow.bytes_to_client,
        format!("ack {}\n", SECRET.len() + 1).len() as u64
    );
    assert!(report.flows[1].bytes_to_server > SECRET.len() as u64);
    assert_eq!(report.flows[1].sni.as_deref(), Some("b.test"));
    let unencrypted: Vec<u16> = report
        .unencrypted_pod_flows()
        .iter()
        .map(|f| f.server.port())
        .collect();
    assert_eq!(unencrypted, [8080, 8443]);
    assert!(
        table.contains("b:15006") && table.contains("mesh-mtls"),
        "{table}"
    );
    assert_eq!(report.to_json()["flows"][1]["class"], "mesh-mtls");

    // The control: the secret is in clear in the plaintext flow only; the
    // same bytes inside both TLS flows are not.
    let found = grep(&mesh.pcap(), SECRET.as_bytes()).unwrap();
    assert!(found.found);
    assert_eq!(found.flows, vec![(plain, server(8080))]);
}

#[test]
fn records_name_the_identities_of_a_mesh_flow() {
    let mesh = Mesh::new("r");
    let capture = Capture::start(&mesh.bridge, &mesh.pcap()).unwrap();
    let client = mesh.exchange(15006, "tls", "istio", SECRET);
    capture.stop().unwrap();

    let sa = |name: &str| format!("spiffe://cluster.local/ns/default/sa/{name}");
    let dst = server(15006);
    let decoy = std::net::SocketAddr::new(IP_A.parse().unwrap(), client.port().wrapping_add(1));
    let record = |direction: &str, pod: &str, src, source: &str, destination: &str| {
        serde_json::json!({
            "direction": direction, "pod": pod, "src": src, "dst": dst,
            "security": "mesh-mtls", "alpn": "istio",
            "source_principal": source, "destination_principal": destination,
            "start_ms": 1,
        })
        .to_string()
    };
    let lines = [
        record("outbound", "a", client, &sa("a"), &sa("b")),
        record("inbound", "b", client, &sa("a"), &sa("b")),
        record("outbound", "a", decoy, &sa("decoy"), &sa("decoy")),
    ];
    let records_dir = mesh.dir.path().join("records");
    std::fs::create_dir(&records_dir).unwrap();
    std::fs::write(records_dir.join("proxies.jsonl"), lines.join("\n")).unwrap();
    let records = read_records(&records_dir).unwrap();
    assert_eq!(records.len(), 3);

    let report = analyze(&mesh.pcap(), &pods(), &records).unwrap();
    let table = report.table();
    assert_eq!(report.flows.len(), 1, "{table}");
    let flow = &report.flows[0];
    assert_eq!((flow.client, flow.server), (client, dst));
    assert_eq!(flow.class, FlowClass::MeshMtls);
    assert_eq!(flow.source_principal, Some(sa("a")));
    assert_eq!(flow.destination_principal, Some(sa("b")));
    assert!(
        table.contains(&format!("{} → {}", sa("a"), sa("b"))),
        "{table}"
    );
    assert!(report.unencrypted_pod_flows().is_empty());

    // Without records the identities stay unknown.
    let bare = analyze(&mesh.pcap(), &pods(), &[]).unwrap();
    assert_eq!(bare.flows[0].source_principal, None);
}

#[test]
fn capture_on_a_missing_interface_fails_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("vano{}", std::process::id());
    let err = Capture::start(&name, &dir.path().join("x.pcap")).unwrap_err();
    assert!(matches!(err, AuditError::CaptureFailed { .. }), "{err}");
    assert!(err.to_string().contains("ip link show"), "{err}");
}
