//! Searching a capture for a text sent in clear: in each direction's
//! reassembled byte stream (so a text split across segments is found) and in
//! each packet on its own.

use crate::tracker::track;
use crate::AuditError;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::Path;

/// Where a text appeared in clear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrepResult {
    /// Whether the text appeared anywhere in the capture.
    pub found: bool,
    /// (client, server) of the flows whose clear bytes contain it, in order
    /// of first packet.
    pub flows: Vec<(SocketAddr, SocketAddr)>,
}

/// Searches the capture at `pcap` for `text`. An empty text is found
/// nowhere.
///
/// Errors: those of reading the capture file ([`AuditError::PcapOpen`],
/// [`AuditError::PcapFormat`], [`AuditError::UnsupportedLink`]).
pub fn grep(pcap: &Path, text: &[u8]) -> Result<GrepResult, AuditError> {
    let tracked = track(pcap, text)?;
    let flows: Vec<_> = tracked
        .flows
        .iter()
        .filter(|f| f.packet_hit || f.to_server.found || f.to_client.found)
        .map(|f| (f.client, f.server))
        .collect();
    Ok(GrepResult {
        found: tracked.other_hit || !flows.is_empty(),
        flows,
    })
}
