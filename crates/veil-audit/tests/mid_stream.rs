//! Flows the capture joined after their handshake (no SYN, or the
//! ClientHello segment lost), written in the test as pcap files: TLS record
//! framing on a connection the proxies recorded as mesh mTLS is `mesh-mtls`,
//! without such a record `tls`, and plaintext stays `plaintext` (with its
//! needle found by grep) even when a record claims mesh mTLS. A flow that
//! carried no payload either way is `no-payload`.

use etherparse::PacketBuilder;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::DataLink;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use veil_audit::{analyze, grep, ConnectionRecord, Flow, FlowClass, PodAddress};

const GATEWAY: ([u8; 4], u16) = ([10, 9, 1, 1], 43210);
const HTTPD: ([u8; 4], u16) = ([10, 9, 1, 2], 80);
const NEEDLE: &[u8] = b"ada@example.test";
const START_MS: u64 = 1_700_000_000_000;
const SRC_ID: &str = "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway";
const DST_ID: &str = "spiffe://cluster.local/ns/default/sa/httpd";

/// One segment: from, to, seq, SYN, payload.
struct Seg(([u8; 4], u16), ([u8; 4], u16), u32, bool, Vec<u8>);

/// A TLS record of `kind` with a `body`-byte pseudo-random body.
fn record(kind: u8, body: usize, seed: u32) -> Vec<u8> {
    let len = u16::try_from(body).unwrap().to_be_bytes();
    let mut out = vec![kind, 0x03, 0x03, len[0], len[1]];
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    for _ in 0..body {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.push(x.to_be_bytes()[0]);
    }
    out
}

/// The request and response of a pooled connection as TLS records; the
/// response is cut so that the capture begins inside its first record.
fn tls_exchange() -> (Vec<u8>, Vec<u8>) {
    let mut request = record(0x17, 517, 1);
    request.extend(record(0x17, 64, 2));
    let mut response = record(0x17, 1400, 3);
    response.extend(record(0x17, 300, 4));
    response.extend(record(0x15, 19, 5));
    (request, response.split_off(700))
}

fn write(path: &Path, segments: &[Seg]) {
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ..PcapHeader::default()
    };
    let mut writer = PcapWriter::with_header(std::fs::File::create(path).unwrap(), header).unwrap();
    for (i, Seg(from, to, seq, syn, payload)) in segments.iter().enumerate() {
        let mut tcp = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(from.0, to.0, 64)
            .tcp(from.1, to.1, *seq, 64240);
        tcp = if *syn { tcp.syn() } else { tcp.ack(1) };
        let mut data = Vec::new();
        tcp.write(&mut data, payload).unwrap();
        let ts = Duration::from_millis(START_MS + i as u64);
        writer
            .write_packet(&PcapPacket::new(ts, data.len() as u32, &data))
            .unwrap();
    }
}

/// A connection joined mid-stream: `request` then `response`, each in
/// segments of at most 600 bytes, no SYN.
fn joined_mid_stream(request: &[u8], response: &[u8]) -> Vec<Seg> {
    let mut segments = Vec::new();
    for (from, to, bytes, isn) in [
        (GATEWAY, HTTPD, request, 7_000u32),
        (HTTPD, GATEWAY, response, 90_000),
    ] {
        for (i, chunk) in bytes.chunks(600).enumerate() {
            segments.push(Seg(from, to, isn + 600 * i as u32, false, chunk.to_vec()));
        }
    }
    segments
}

fn mesh_record(src: ([u8; 4], u16), dst: ([u8; 4], u16)) -> ConnectionRecord {
    ConnectionRecord {
        direction: "outbound".into(),
        pod: "istio-ingressgateway".into(),
        src: SocketAddr::from(src),
        dst: SocketAddr::from(dst),
        security: "mesh-mtls".into(),
        alpn: Some("istio".into()),
        source_principal: Some(SRC_ID.into()),
        destination_principal: Some(DST_ID.into()),
        // The connection was pooled a minute before the capture began.
        start_ms: START_MS - 60_000,
    }
}

fn pods() -> Vec<PodAddress> {
    [("istio-ingressgateway", GATEWAY), ("httpd-server", HTTPD)]
        .map(|(pod, (ip, _))| PodAddress {
            pod: pod.into(),
            namespace: "default".into(),
            ip: ip.into(),
        })
        .to_vec()
}

fn only_flow(path: &Path, records: &[ConnectionRecord]) -> (Flow, String) {
    let report = analyze(path, &pods(), records).unwrap();
    let table = report.table();
    assert_eq!(report.flows.len(), 1, "{table}");
    let flow = report.flows[0].clone();
    assert_eq!(
        (flow.client, flow.server),
        (SocketAddr::from(GATEWAY), SocketAddr::from(HTTPD)),
        "{table}"
    );
    assert!(flow.mid_stream, "{table}");
    let unencrypted = report.unencrypted_pod_flows().len();
    assert_eq!(
        unencrypted,
        usize::from(flow.class != FlowClass::MeshMtls),
        "{table}"
    );
    (flow, table)
}

#[test]
fn tls_joined_mid_stream_is_mesh_mtls_with_a_mesh_record_else_tls() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mid.pcap");
    let (request, response) = tls_exchange();
    write(&path, &joined_mid_stream(&request, &response));

    let (flow, table) = only_flow(&path, &[mesh_record(GATEWAY, HTTPD)]);
    assert_eq!(flow.class, FlowClass::MeshMtls, "{table}");
    assert_eq!(flow.source_principal.as_deref(), Some(SRC_ID));
    assert_eq!(flow.destination_principal.as_deref(), Some(DST_ID));
    assert_eq!(flow.bytes_to_server, request.len() as u64);
    assert_eq!(flow.bytes_to_client, response.len() as u64);
    assert_eq!(flow.note(), Some("handshake not captured"));
    assert!(
        table.contains("NOTE") && table.contains("handshake not captured"),
        "{table}"
    );

    // No record for this 4-tuple (only one for another connection): TLS,
    // but nothing proves it is the mesh's.
    let other = mesh_record(([10, 9, 1, 1], 43211), HTTPD);
    let (flow, table) = only_flow(&path, &[other]);
    assert_eq!(flow.class, FlowClass::Tls, "{table}");
    assert_eq!(flow.source_principal, None);
    let (flow, table) = only_flow(&path, &[]);
    assert_eq!(flow.class, FlowClass::Tls, "{table}");
}

#[test]
fn lost_client_hello_after_a_captured_syn_is_mid_stream_tls() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lost-hello.pcap");
    let (request, response) = tls_exchange();
    // SYN at 6999: the stream starts at 7000, but the first 300 bytes (the
    // ClientHello's segment) were not captured.
    let mut segments = vec![Seg(GATEWAY, HTTPD, 6_999, true, vec![])];
    segments.push(Seg(GATEWAY, HTTPD, 7_300, false, request.clone()));
    segments.push(Seg(HTTPD, GATEWAY, 90_000, false, response));
    write(&path, &segments);
    let (flow, table) = only_flow(&path, &[mesh_record(GATEWAY, HTTPD)]);
    assert_eq!(flow.class, FlowClass::MeshMtls, "{table}");

    // Control: the same bytes at the captured start of the stream are not a
    // mid-stream join, and records without a ClientHello first are not TLS.
    let mut whole = vec![Seg(GATEWAY, HTTPD, 6_999, true, vec![])];
    whole.push(Seg(GATEWAY, HTTPD, 7_000, false, request));
    write(&path, &whole);
    let report = analyze(&path, &pods(), &[mesh_record(GATEWAY, HTTPD)]).unwrap();
    assert_eq!(report.flows.len(), 1);
    assert_eq!(report.flows[0].class, FlowClass::Plaintext);
    assert!(!report.flows[0].mid_stream, "{}", report.table());
}

#[test]
fn plaintext_joined_mid_stream_stays_plaintext_and_grep_finds_the_needle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.pcap");
    // The capture begins inside the request body.
    let request = b"\r\nContent-Length: 40\r\n\r\nname=Ada+Lovelace&email=ada@example.test";
    let response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    // The needle is split between two segments: only reassembly finds it.
    let split = request
        .windows(NEEDLE.len())
        .position(|w| w == NEEDLE)
        .unwrap()
        + 5;
    let segments = vec![
        Seg(GATEWAY, HTTPD, 7_000, false, request[..split].to_vec()),
        Seg(
            GATEWAY,
            HTTPD,
            7_000 + split as u32,
            false,
            request[split..].to_vec(),
        ),
        Seg(HTTPD, GATEWAY, 90_000, false, response.to_vec()),
    ];
    write(&path, &segments);

    // Even a record claiming mesh mTLS does not make plaintext bytes mesh.
    let (flow, table) = only_flow(&path, &[mesh_record(GATEWAY, HTTPD)]);
    assert_eq!(flow.class, FlowClass::Plaintext, "{table}");
    assert_eq!(flow.note(), Some("start not captured"));
    let found = grep(&path, NEEDLE).unwrap();
    assert!(found.found);
    assert_eq!(
        found.flows,
        vec![(SocketAddr::from(GATEWAY), SocketAddr::from(HTTPD))]
    );
}

#[test]
fn a_flow_without_payload_is_no_payload_and_a_server_greeting_is_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idle.pcap");
    // An idle kept connection the capture joined: acknowledgements only.
    let idle = vec![
        Seg(GATEWAY, HTTPD, 7_000, false, vec![]),
        Seg(HTTPD, GATEWAY, 90_000, false, vec![]),
    ];
    write(&path, &idle);
    let report = analyze(&path, &pods(), &[]).unwrap();
    let table = report.table();
    assert_eq!(report.flows.len(), 1, "{table}");
    let flow = &report.flows[0];
    assert_eq!(flow.class, FlowClass::NoPayload, "{table}");
    assert_eq!(flow.note(), None, "{table}");
    assert!(table.contains("no-payload"), "{table}");
    assert!(report.unencrypted_pod_flows().is_empty(), "{table}");

    // Control: a server that speaks first in the clear (MySQL's greeting)
    // and a client that has not answered yet is plaintext, and counted.
    let greeting = b"\x4a\x00\x00\x00\x0a10.11.6-MariaDB\x00".to_vec();
    let mut first = vec![Seg(GATEWAY, HTTPD, 6_999, true, vec![])];
    first.push(Seg(HTTPD, GATEWAY, 90_000, false, greeting));
    write(&path, &first);
    let report = analyze(&path, &pods(), &[]).unwrap();
    let table = report.table();
    assert_eq!(report.flows[0].class, FlowClass::Plaintext, "{table}");
    assert_eq!(report.unencrypted_pod_flows().len(), 1, "{table}");
}
