//! `veil audit`: capture the traffic on the links between the pods of a local
//! mesh and prove, flow by flow, whether it was mesh mTLS, other TLS or
//! plaintext, with the peer SPIFFE identities joined from the proxies'
//! connection records (TLS 1.3 hides certificates from the wire).
//!
//! The pipeline is: [`Capture`] (tcpdump or dumpcap writing a pcap file) →
//! [`analyze`] (pcap/pcapng decoding, per-direction TCP reassembly,
//! ClientHello classification, TLS record framing for flows the capture
//! joined mid-stream, records join) → [`Report`]; [`grep`] searches
//! the same capture for a text sent in clear.
#![forbid(unsafe_code)]

mod capture;
mod classify;
mod error;
mod flow;
mod framing;
mod grep;
mod packets;
mod records;
mod report;
mod stream;
mod tracker;

pub use capture::Capture;
pub use error::AuditError;
pub use flow::{analyze, Flow, FlowClass, PodAddress};
pub use grep::{grep, GrepResult};
pub use records::read_records;
pub use report::Report;
pub use veil_model::ConnectionRecord;
