//! Reassembly, classification and grep on captures written in the test
//! from hand-built packets: segments out of order, a retransmission, a
//! ClientHello split over segments, in pcap (Ethernet and Linux SLL2) and
//! pcapng files.

use etherparse::PacketBuilder;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
use pcap_file::pcapng::{Block, PcapNgWriter};
use pcap_file::DataLink;
use std::borrow::Cow;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use veil_audit::{analyze, grep, read_records, FlowClass, PodAddress};

const CLIENT: ([u8; 4], u16) = ([10, 9, 0, 1], 1234);
const SERVER: ([u8; 4], u16) = ([10, 9, 0, 2], 40000);
const TLS_CLIENT: ([u8; 4], u16) = ([10, 9, 0, 1], 50000);
const TLS_SERVER: ([u8; 4], u16) = ([10, 9, 0, 2], 15006);
const REQUEST: &[u8] = b"GET /x HTTP/1.0\r\nX-Secret: hunter2-TOPSECRET-42\r\n\r\n";
const REPLY: &[u8] = b"HTTP/1.0 200 OK\r\n\r\n";
const SECRET: &[u8] = b"TOPSECRET";

/// One TCP segment to build: from, to, seq, SYN, ACK, payload.
struct Seg(([u8; 4], u16), ([u8; 4], u16), u32, bool, bool, Vec<u8>);

fn ip_packet(seg: &Seg, ethernet: bool) -> Vec<u8> {
    let Seg(from, to, seq, syn, ack, payload) = seg;
    let mut out = Vec::new();
    let ip = if ethernet {
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv4(from.0, to.0, 64)
    } else {
        PacketBuilder::ipv4(from.0, to.0, 64)
    };
    let mut tcp = ip.tcp(from.1, to.1, *seq, 64240);
    if *syn {
        tcp = tcp.syn();
    }
    if *ack {
        tcp = tcp.ack(1);
    }
    tcp.write(&mut out, payload).unwrap();
    out
}

fn client_hello() -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"istio-peer-exchange".to_vec(), b"istio".to_vec()];
    let name = rustls::pki_types::ServerName::try_from("b.default.svc").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

/// The segments, in capture order.
fn segments() -> Vec<Seg> {
    // inside "TOPSECRET"
    let split = REQUEST
        .windows(SECRET.len())
        .position(|w| w == SECRET)
        .unwrap()
        + 4;
    let hello = client_hello();
    let (h1, h2) = (hello.len() / 3, 2 * hello.len() / 3);
    vec![
        Seg(CLIENT, SERVER, 1000, true, false, vec![]),
        Seg(SERVER, CLIENT, 5000, true, true, vec![]),
        // second half first, then the first half, then a retransmission
        // overlapping both halves
        Seg(
            CLIENT,
            SERVER,
            1001 + split as u32,
            false,
            true,
            REQUEST[split..].to_vec(),
        ),
        Seg(CLIENT, SERVER, 1001, false, true, REQUEST[..split].to_vec()),
        Seg(
            CLIENT,
            SERVER,
            1011,
            false,
            true,
            REQUEST[10..split + 3].to_vec(),
        ),
        Seg(SERVER, CLIENT, 5001, false, true, REPLY.to_vec()),
        // a flow whose SYN was missed: ClientHello in three segments, the
        // last one first
        Seg(
            TLS_CLIENT,
            TLS_SERVER,
            7000,
            false,
            true,
            hello[..h1].to_vec(),
        ),
        Seg(
            TLS_CLIENT,
            TLS_SERVER,
            7000 + h2 as u32,
            false,
            true,
            hello[h2..].to_vec(),
        ),
        Seg(
            TLS_CLIENT,
            TLS_SERVER,
            7000 + h1 as u32,
            false,
            true,
            hello[h1..h2].to_vec(),
        ),
    ]
}

fn write_pcap(path: &Path, link: DataLink) {
    let header = PcapHeader {
        datalink: link,
        ..PcapHeader::default()
    };
    let mut writer = PcapWriter::with_header(std::fs::File::create(path).unwrap(), header).unwrap();
    for (i, seg) in segments().iter().enumerate() {
        let data = if link == DataLink::LINUX_SLL2 {
            let mut sll2 = vec![
                0x08, 0x00, 0, 0, 0, 0, 0, 3, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0,
            ];
            sll2.extend(ip_packet(seg, false));
            sll2
        } else {
            ip_packet(seg, true)
        };
        let ts = Duration::from_millis(1_700_000_000_000 + i as u64);
        writer
            .write_packet(&PcapPacket::new(ts, data.len() as u32, &data))
            .unwrap();
    }
}

fn write_pcapng(path: &Path) {
    let mut writer = PcapNgWriter::new(std::fs::File::create(path).unwrap()).unwrap();
    let idb = InterfaceDescriptionBlock::new(DataLink::ETHERNET, 65535);
    writer
        .write_block(&Block::InterfaceDescription(idb))
        .unwrap();
    for (i, seg) in segments().iter().enumerate() {
        let data = ip_packet(seg, true);
        let epb = EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::from_millis(1_700_000_000_000 + i as u64),
            original_len: data.len() as u32,
            data: Cow::Owned(data),
            options: vec![],
        };
        writer.write_block(&Block::EnhancedPacket(epb)).unwrap();
    }
}

fn addr(a: ([u8; 4], u16)) -> SocketAddr {
    SocketAddr::from(a)
}

fn check(path: &Path) {
    let pods = [
        PodAddress {
            pod: "a".into(),
            namespace: "default".into(),
            ip: addr(CLIENT).ip(),
        },
        PodAddress {
            pod: "b".into(),
            namespace: "default".into(),
            ip: addr(SERVER).ip(),
        },
    ];
    let report = analyze(path, &pods, &[]).unwrap();
    assert_eq!(report.flows.len(), 2, "{}", report.table());
    let plain = &report.flows[0];
    assert_eq!(
        (plain.client, plain.server),
        (addr(CLIENT), addr(SERVER)),
        "SYN decides the client"
    );
    assert_eq!(
        plain.bytes_to_server,
        REQUEST.len() as u64,
        "retransmission counted once"
    );
    assert_eq!(plain.bytes_to_client, REPLY.len() as u64);
    assert_eq!(plain.class, FlowClass::Plaintext);
    assert!(plain.is_pod_to_pod());
    let tls = &report.flows[1];
    assert_eq!(
        (tls.client, tls.server),
        (addr(TLS_CLIENT), addr(TLS_SERVER)),
        "higher port is the client"
    );
    assert_eq!(
        tls.class,
        FlowClass::MeshMtls,
        "ClientHello reassembled in order"
    );
    assert_eq!(tls.alpn, ["istio-peer-exchange", "istio"]);
    assert_eq!(tls.sni.as_deref(), Some("b.default.svc"));
    assert_eq!(report.unencrypted_pod_flows().len(), 1);
    let table = report.table();
    assert!(table.starts_with("SOURCE"), "{table}");
    assert!(
        table.contains("b:40000") && table.contains("mesh-mtls"),
        "{table}"
    );

    // The secret is split over two segments: only reassembly finds it.
    assert!(segments()
        .iter()
        .all(|s| !s.5.windows(SECRET.len()).any(|w| w == SECRET)));
    let found = grep(path, SECRET).unwrap();
    assert!(found.found);
    assert_eq!(found.flows, vec![(addr(CLIENT), addr(SERVER))]);
    let absent = grep(path, b"NOT-IN-THE-CAPTURE").unwrap();
    assert!(!absent.found && absent.flows.is_empty());
}

#[test]
fn ethernet_pcap_is_reassembled_and_classified() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("eth.pcap");
    write_pcap(&path, DataLink::ETHERNET);
    check(&path);
}

#[test]
fn linux_cooked_v2_pcap_is_reassembled_and_classified() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sll2.pcap");
    write_pcap(&path, DataLink::LINUX_SLL2);
    check(&path);
}

#[test]
fn pcapng_is_reassembled_and_classified() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("eth.pcapng");
    write_pcapng(&path);
    check(&path);
}

#[test]
fn unsupported_link_type_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wifi.pcap");
    write_pcap(&path, DataLink::IEEE802_11);
    let err = analyze(&path, &[], &[]).unwrap_err().to_string();
    assert!(err.contains("cannot decode"), "{err}");
}

#[test]
fn bad_record_lines_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let good = r#"{"direction":"outbound","pod":"a","src":"10.9.0.1:50000","dst":"10.9.0.2:15006","security":"mesh-mtls","destination_principal":"spiffe://cluster.local/ns/default/sa/b","start_ms":1}"#;
    std::fs::write(dir.path().join("a.jsonl"), format!("{good}\nnot json\n\n")).unwrap();
    std::fs::write(dir.path().join("ignored.txt"), good).unwrap();
    let records = read_records(dir.path()).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].pod, "a");
    assert!(read_records(&dir.path().join("missing")).is_err());
}
