//! `ConnectionRecord`: what a proxy writes, one JSON line per connection,
//! so that `veil audit` can name the identities of a TLS 1.3 flow whose
//! certificates the wire no longer shows.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// One proxied TCP connection, as the proxy saw it.
///
/// `src`/`dst` are the addresses of the TCP connection *on the wire between
/// pods* (for the outbound side: the proxy's own upstream socket; for the
/// inbound side: the downstream peer and the original destination), so that
/// the audit can join a captured flow with both proxies' records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionRecord {
    /// `inbound` or `outbound`.
    pub direction: String,
    /// Pod whose proxy wrote the record.
    pub pod: String,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// `mesh-mtls`, `plaintext`, `tls-passthrough`, or `tls` (TLS the proxy
    /// originated for a DestinationRule SIMPLE / MUTUAL).
    pub security: String,
    /// Negotiated ALPN, if any.
    #[serde(default)]
    pub alpn: Option<String>,
    /// SPIFFE ID of the client side, when known.
    #[serde(default)]
    pub source_principal: Option<String>,
    /// SPIFFE ID of the server side, when known.
    #[serde(default)]
    pub destination_principal: Option<String>,
    /// Unix time of the accept, in milliseconds.
    pub start_ms: u64,
}
