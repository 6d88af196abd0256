//! Grouping captured TCP segments into flows keyed by their 4-tuple, with
//! the client taken from the SYN (or, when the SYN was missed, the side with
//! the higher port), and one reassembled [`ByteStream`] per direction.

use crate::packets::{for_each_frame, Segment};
use crate::stream::{contains, ByteStream};
use crate::AuditError;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// One TCP connection as captured.
#[derive(Debug)]
pub(crate) struct TrackedFlow {
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// Timestamp of the first packet, since the Unix epoch.
    pub start: Duration,
    pub to_server: ByteStream,
    pub to_client: ByteStream,
    /// Whether the needle occurred inside a single packet's payload.
    pub packet_hit: bool,
    client_isn: Option<u32>,
}

impl TrackedFlow {
    fn new(client: SocketAddr, server: SocketAddr, start: Duration, needle: &[u8]) -> Self {
        TrackedFlow {
            client,
            server,
            start,
            to_server: ByteStream::with_needle(needle),
            to_client: ByteStream::with_needle(needle),
            packet_hit: false,
            client_isn: None,
        }
    }

    fn has_data(&self) -> bool {
        self.to_server.has_data() || self.to_client.has_data()
    }
}

/// All flows of a capture, plus whether the needle occurred in a frame that
/// is not part of any TCP flow.
#[derive(Debug, Default)]
pub(crate) struct Tracked {
    pub flows: Vec<TrackedFlow>,
    pub other_hit: bool,
}

/// Unordered key of a 4-tuple.
fn key(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

/// Reads the capture at `path` into flows, searching for `needle` (empty:
/// no search) in each reassembled direction and each packet.
pub(crate) fn track(path: &Path, needle: &[u8]) -> Result<Tracked, AuditError> {
    let mut tracked = Tracked::default();
    let mut index: HashMap<(SocketAddr, SocketAddr), usize> = HashMap::new();
    for_each_frame(path, |frame| {
        let Some(segment) = frame.segment else {
            if contains(frame.data, needle) {
                tracked.other_hit = true;
            }
            return;
        };
        let k = key(segment.src, segment.dst);
        let position = match index.get(&k) {
            Some(&i) if !starts_new_connection(tracked.flows.get(i), &segment) => i,
            _ => {
                let (client, server) = roles(&segment);
                tracked
                    .flows
                    .push(TrackedFlow::new(client, server, frame.timestamp, needle));
                let i = tracked.flows.len() - 1;
                index.insert(k, i);
                i
            }
        };
        if let Some(flow) = tracked.flows.get_mut(position) {
            add_segment(flow, &segment, needle);
        }
    })?;
    for flow in &mut tracked.flows {
        flow.to_server.finish();
        flow.to_client.finish();
    }
    Ok(tracked)
}

/// Client and server of a flow first seen with `segment`.
fn roles(segment: &Segment<'_>) -> (SocketAddr, SocketAddr) {
    let from_src = if segment.syn {
        !segment.ack
    } else {
        segment.src.port() >= segment.dst.port()
    };
    if from_src {
        (segment.src, segment.dst)
    } else {
        (segment.dst, segment.src)
    }
}

/// Whether a pure SYN reuses the 4-tuple of an earlier connection.
fn starts_new_connection(flow: Option<&TrackedFlow>, segment: &Segment<'_>) -> bool {
    let Some(flow) = flow else {
        return true;
    };
    segment.syn
        && !segment.ack
        && flow.has_data()
        && flow.client_isn.is_none_or(|isn| isn != segment.seq)
}

fn add_segment(flow: &mut TrackedFlow, segment: &Segment<'_>, needle: &[u8]) {
    if segment.syn && !segment.ack {
        if segment.src != flow.client && !flow.has_data() {
            std::mem::swap(&mut flow.client, &mut flow.server);
            std::mem::swap(&mut flow.to_server, &mut flow.to_client);
        }
        if segment.src == flow.client {
            flow.client_isn = Some(segment.seq);
        }
    }
    let stream = if segment.src == flow.client {
        &mut flow.to_server
    } else {
        &mut flow.to_client
    };
    let mut seq = segment.seq;
    if segment.syn {
        stream.syn(segment.seq);
        seq = seq.wrapping_add(1);
    }
    stream.push(seq, segment.payload);
    if contains(segment.payload, needle) {
        flow.packet_hit = true;
    }
}
