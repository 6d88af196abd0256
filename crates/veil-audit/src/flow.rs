//! Flows as the audit reports them: who talked to whom, how many bytes, and
//! whether it was mesh mTLS, other TLS or plaintext, with the identities
//! joined from the proxies' connection records.

use crate::classify::{is_istio_alpn, opening, Opening};
use crate::framing::is_tls_framing;
use crate::records::{join, Joined};
use crate::tracker::{track, TrackedFlow};
use crate::{AuditError, Report};
use serde::Serialize;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use veil_model::ConnectionRecord;

/// A pod of the local mesh and its address on the pod network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodAddress {
    pub pod: String,
    pub namespace: String,
    pub ip: IpAddr,
}

/// How a flow was protected on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlowClass {
    /// TLS whose ClientHello offers an ALPN starting with `istio`, or TLS
    /// records seen mid-stream on a connection the proxies recorded as
    /// `mesh-mtls`.
    MeshMtls,
    /// Any other TLS.
    Tls,
    /// Not TLS (including flows where only the server spoke, as MySQL's
    /// greeting does, and flows joined mid-stream whose bytes are not TLS
    /// records).
    Plaintext,
    /// No payload captured in either direction (a refused or idle
    /// connection, or one whose bytes fell outside the capture): nothing
    /// crossed the wire to classify, and nothing was exposed.
    NoPayload,
}

impl fmt::Display for FlowClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FlowClass::MeshMtls => "mesh-mtls",
            FlowClass::Tls => "tls",
            FlowClass::Plaintext => "plaintext",
            FlowClass::NoPayload => "no-payload",
        })
    }
}

/// One captured TCP connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flow {
    /// The side that sent the SYN (or, if it was not captured, the side with
    /// the higher port).
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// Pod owning the client address, if any.
    pub client_pod: Option<String>,
    /// Pod owning the server address, if any.
    pub server_pod: Option<String>,
    /// Payload bytes from client to server, retransmissions counted once.
    pub bytes_to_server: u64,
    /// Payload bytes from server to client, retransmissions counted once.
    pub bytes_to_client: u64,
    pub class: FlowClass,
    /// ALPN protocols offered in the ClientHello.
    pub alpn: Vec<String>,
    /// Server name offered in the ClientHello.
    pub sni: Option<String>,
    /// SPIFFE ID of the client, from the connection records.
    pub source_principal: Option<String>,
    /// SPIFFE ID of the server, from the connection records.
    pub destination_principal: Option<String>,
    /// Whether the capture joined the connection after it started (no SYN,
    /// or the first bytes lost) and saw no ClientHello: the class then comes
    /// from the TLS record framing of the bytes, and `mesh-mtls` from the
    /// proxies' connection records.
    pub mid_stream: bool,
}

impl Flow {
    /// Whether both ends are pods (a flow to or from the host's control
    /// plane address is not).
    pub fn is_pod_to_pod(&self) -> bool {
        self.client_pod.is_some() && self.server_pod.is_some()
    }

    /// Total payload bytes in both directions.
    pub fn bytes(&self) -> u64 {
        self.bytes_to_server.saturating_add(self.bytes_to_client)
    }

    /// A remark on how the flow was classified: `handshake not captured`
    /// for TLS joined mid-stream, `start not captured` for plaintext joined
    /// mid-stream.
    pub fn note(&self) -> Option<&'static str> {
        match (self.mid_stream, self.class) {
            (false, _) | (_, FlowClass::NoPayload) => None,
            (true, FlowClass::Plaintext) => Some("start not captured"),
            (true, _) => Some("handshake not captured"),
        }
    }
}

/// Analyses the capture at `pcap` (pcap or pcapng): one [`Flow`] per TCP
/// connection, in order of first packet, with pods named from `pods` and
/// principals joined from `records` (matched on the wire 4-tuple).
///
/// Errors: those of reading the capture file ([`AuditError::PcapOpen`],
/// [`AuditError::PcapFormat`], [`AuditError::UnsupportedLink`]).
pub fn analyze(
    pcap: &Path,
    pods: &[PodAddress],
    records: &[ConnectionRecord],
) -> Result<Report, AuditError> {
    let tracked = track(pcap, &[])?;
    let pod_of = |address: SocketAddr| {
        pods.iter()
            .find(|p| p.ip == address.ip())
            .map(|p| p.pod.clone())
    };
    let flows = tracked
        .flows
        .iter()
        .map(|t| to_flow(t, &pod_of, records))
        .collect();
    Ok(Report { flows })
}

fn to_flow(
    tracked: &TrackedFlow,
    pod_of: &impl Fn(SocketAddr) -> Option<String>,
    records: &[ConnectionRecord],
) -> Flow {
    let start_ms = u64::try_from(tracked.start.as_millis()).unwrap_or(u64::MAX);
    let joined = join(records, tracked.client, tracked.server, start_ms);
    let opening = opening(&tracked.to_server.head);
    let mid_stream =
        !matches!(opening, Opening::ClientHello { .. }) && !tracked.to_server.head_at_start();
    let (class, alpn, sni) = match opening {
        Opening::ClientHello { alpn, sni } if is_istio_alpn(&alpn) => {
            (FlowClass::MeshMtls, alpn, sni)
        }
        Opening::ClientHello { alpn, sni } => (FlowClass::Tls, alpn, sni),
        _ if mid_stream => (mid_stream_class(tracked, &joined), Vec::new(), None),
        Opening::TlsUnreadable => (FlowClass::Tls, Vec::new(), None),
        Opening::NotTls => (FlowClass::Plaintext, Vec::new(), None),
    };
    let class = if tracked.to_server.total == 0 && tracked.to_client.total == 0 {
        FlowClass::NoPayload
    } else {
        class
    };
    let Joined {
        source_principal,
        destination_principal,
        ..
    } = joined;
    Flow {
        client: tracked.client,
        server: tracked.server,
        client_pod: pod_of(tracked.client),
        server_pod: pod_of(tracked.server),
        bytes_to_server: tracked.to_server.total,
        bytes_to_client: tracked.to_client.total,
        class,
        alpn,
        sni,
        source_principal,
        destination_principal,
        mid_stream,
    }
}

/// The class of a flow joined after its handshake: TLS when every captured
/// direction is TLS record framing (and at least one carried bytes), mesh
/// mTLS when the proxies also recorded it so; otherwise plaintext.
fn mid_stream_class(tracked: &TrackedFlow, joined: &Joined) -> FlowClass {
    let heads = [&tracked.to_server.head, &tracked.to_client.head];
    let seen: Vec<&Vec<u8>> = heads.into_iter().filter(|h| !h.is_empty()).collect();
    let tls = !seen.is_empty() && seen.iter().all(|head| is_tls_framing(head));
    match (tls, joined.mesh_mtls) {
        (false, _) => FlowClass::Plaintext,
        (true, true) => FlowClass::MeshMtls,
        (true, false) => FlowClass::Tls,
    }
}
