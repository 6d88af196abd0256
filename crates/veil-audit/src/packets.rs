//! Reading a capture file (pcap or pcapng) and decoding each frame down to
//! its TCP segment: Ethernet, Linux cooked (SLL and SLL2) and raw IP link
//! types, IPv4 and IPv6.

use crate::AuditError;
use etherparse::{EtherType, NetSlice, SlicedPacket, TransportSlice};
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::DataLink;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// First four bytes of a pcapng file (Section Header Block type).
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];
/// Length of the Linux cooked v2 header (bytes).
const SLL2_LEN: usize = 20;

/// One TCP segment as seen on the wire.
#[derive(Debug)]
pub(crate) struct Segment<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub syn: bool,
    pub ack: bool,
    pub payload: &'a [u8],
}

/// A captured frame: its timestamp (since the Unix epoch) and, when it is
/// TCP over IP, its decoded segment.
pub(crate) struct Frame<'a> {
    pub timestamp: Duration,
    pub data: &'a [u8],
    pub segment: Option<Segment<'a>>,
}

/// Whether [`decode`] understands frames of this link type.
fn supported(link: DataLink) -> bool {
    matches!(
        link,
        DataLink::ETHERNET
            | DataLink::LINUX_SLL
            | DataLink::LINUX_SLL2
            | DataLink::RAW
            | DataLink::IPV4
            | DataLink::IPV6
    )
}

/// Decodes one frame of the given link type to its TCP segment, if any.
pub(crate) fn decode(link: DataLink, data: &[u8]) -> Option<Segment<'_>> {
    let sliced = match link {
        DataLink::ETHERNET => SlicedPacket::from_ethernet(data).ok()?,
        DataLink::LINUX_SLL => SlicedPacket::from_linux_sll(data).ok()?,
        DataLink::LINUX_SLL2 => {
            let proto = u16::from_be_bytes([*data.first()?, *data.get(1)?]);
            SlicedPacket::from_ether_type(EtherType(proto), data.get(SLL2_LEN..)?).ok()?
        }
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => SlicedPacket::from_ip(data).ok()?,
        _ => return None,
    };
    let (src_ip, dst_ip) = match sliced.net? {
        NetSlice::Ipv4(ip) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        NetSlice::Ipv6(ip) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        NetSlice::Arp(_) => return None,
    };
    let TransportSlice::Tcp(tcp) = sliced.transport? else {
        return None;
    };
    Some(Segment {
        src: SocketAddr::new(src_ip, tcp.source_port()),
        dst: SocketAddr::new(dst_ip, tcp.destination_port()),
        seq: tcp.sequence_number(),
        syn: tcp.syn(),
        ack: tcp.ack(),
        payload: tcp.payload(),
    })
}

/// Calls `on_frame` for every frame of the pcap or pcapng file at `path`, in
/// file order. A truncated or damaged tail (e.g. a capture killed mid-write)
/// ends the walk with a warning.
///
/// Errors: [`AuditError::PcapOpen`], [`AuditError::PcapFormat`], and
/// [`AuditError::UnsupportedLink`] for a pcap file of an unknown link type.
pub(crate) fn for_each_frame(
    path: &Path,
    mut on_frame: impl FnMut(Frame<'_>),
) -> Result<(), AuditError> {
    let open_err = |source| AuditError::PcapOpen {
        path: path.to_path_buf(),
        source,
    };
    let format_err = |e: pcap_file::PcapError| AuditError::PcapFormat {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut file = File::open(path).map_err(open_err)?;
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic).map_err(open_err)?;
    file.seek(SeekFrom::Start(0)).map_err(open_err)?;
    let reader = BufReader::new(file);
    if magic == PCAPNG_MAGIC {
        let mut pcapng = PcapNgReader::new(reader).map_err(format_err)?;
        let mut links = Vec::new();
        let mut warned = false;
        while let Some(block) = pcapng.next_block() {
            let (interface, timestamp, data) = match block {
                Ok(Block::InterfaceDescription(idb)) => {
                    links.push(idb.linktype);
                    continue;
                }
                Ok(Block::EnhancedPacket(epb)) => (epb.interface_id, epb.timestamp, epb.data),
                Ok(Block::SimplePacket(spb)) => (0, Duration::ZERO, spb.data),
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "capture file ends in a damaged block; analysing the packets before it");
                    break;
                }
            };
            let link = usize::try_from(interface)
                .ok()
                .and_then(|i| links.get(i).copied());
            match link {
                Some(link) if supported(link) => {
                    let segment = decode(link, &data);
                    on_frame(Frame {
                        timestamp,
                        data: &data,
                        segment,
                    });
                }
                _ if !warned => {
                    warned = true;
                    tracing::warn!(path = %path.display(), ?link, "skipping packets of an unsupported link type");
                }
                _ => {}
            }
        }
        return Ok(());
    }
    let mut pcap = PcapReader::new(reader).map_err(format_err)?;
    let link = pcap.header().datalink;
    if !supported(link) {
        return Err(AuditError::UnsupportedLink {
            path: path.to_path_buf(),
            link: format!("{link:?}"),
        });
    }
    while let Some(packet) = pcap.next_packet() {
        match packet {
            Ok(packet) => {
                let segment = decode(link, &packet.data);
                on_frame(Frame {
                    timestamp: packet.timestamp,
                    data: &packet.data,
                    segment,
                });
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "capture file ends in a damaged packet; analysing the packets before it");
                break;
            }
        }
    }
    Ok(())
}
