//! Reading a client's TLS ClientHello without consuming it: its SNI and the
//! ALPNs it offers, for the proxies that choose where a TLS connection goes
//! before (or instead of) terminating it: gateway TLS ports, and outbound
//! ServiceEntry ports matched by SNI (Envoy's `tls_inspector`).

use std::time::Duration;
use tls_parser::{parse_tls_extensions, parse_tls_plaintext, SNIType, TlsExtension, TlsMessage, TlsMessageHandshake};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Largest ClientHello prefix inspected, in bytes (one maximal TLS record).
const MAX_PEEK: usize = 16 * 1024 + 5;
/// Upper bound on peeks while a ClientHello arrives in pieces.
const MAX_PEEKS: u32 = 400;
/// Pause between peeks that returned an incomplete record, in milliseconds.
const PEEK_PAUSE_MS: u64 = 5;
/// TLS record content type `handshake`.
pub(crate) const TLS_HANDSHAKE: u8 = 0x16;

/// What a ClientHello asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ClientHello {
    /// Server name (SNI), lower case; `None` when it names none.
    pub(crate) sni: Option<String>,
    /// Offered ALPN protocols, in the client's order.
    pub(crate) alpn: Vec<String>,
}

impl ClientHello {
    /// The SNI for logs: `(none)` when absent.
    pub(crate) fn shown(&self) -> &str {
        self.sni.as_deref().unwrap_or("(none)")
    }
}

/// Why no ClientHello could be read.
pub(crate) enum NoHello {
    /// The client closed without sending a byte (a TCP health check).
    Closed,
    /// Plaintext, a malformed or slow ClientHello.
    Refused(String),
}

impl From<String> for NoHello {
    fn from(reason: String) -> Self {
        NoHello::Refused(reason)
    }
}

/// The SNI and ALPNs of a complete TLS record holding a ClientHello.
///
/// Errors: a description of what the record is instead.
fn parse(record: &[u8]) -> Result<ClientHello, String> {
    let (_, plaintext) = parse_tls_plaintext(record).map_err(|_| "unparsable TLS record".to_string())?;
    let hello = plaintext
        .msg
        .iter()
        .find_map(|m| match m {
            TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello)) => Some(hello),
            _ => None,
        })
        .ok_or("first TLS record is not a ClientHello")?;
    let Some(ext) = hello.ext else { return Ok(ClientHello::default()) };
    let (_, extensions) = parse_tls_extensions(ext).map_err(|_| "unparsable ClientHello extensions".to_string())?;
    let mut out = ClientHello::default();
    for e in &extensions {
        match e {
            TlsExtension::SNI(names) => {
                out.sni = names
                    .iter()
                    .find(|(kind, _)| *kind == SNIType::HostName)
                    .map(|(_, name)| String::from_utf8_lossy(name).to_ascii_lowercase());
            }
            TlsExtension::ALPN(protocols) => {
                out.alpn = protocols.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect();
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Peeks until the first TLS record is complete, for at most `timeout`.
///
/// Errors: the client closed, sent plaintext, or sent no complete
/// ClientHello in time.
pub(crate) async fn peek(stream: &TcpStream, timeout: Duration) -> Result<ClientHello, NoHello> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; MAX_PEEK];
    for _ in 0..MAX_PEEKS {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Err(_) => return Err(format!("no complete ClientHello within {} ms", timeout.as_millis()).into()),
            Ok(Err(e)) => return Err(format!("reading the ClientHello failed: {e}").into()),
            Ok(Ok(0)) => return Err(NoHello::Closed),
            Ok(Ok(n)) => n,
        };
        let prefix = buf.get(..n).unwrap_or_default();
        if prefix.first().is_some_and(|b| *b != TLS_HANDSHAKE) {
            return Err(NoHello::Refused("client sent plaintext, not a TLS ClientHello, to a TLS port".into()));
        }
        if let Some(&[hi, lo]) = prefix.get(3..5) {
            let len = 5 + usize::from(u16::from_be_bytes([hi, lo]));
            if let Some(record) = prefix.get(..len) {
                return Ok(parse(record)?);
            }
        }
        if n >= MAX_PEEK {
            return Err(NoHello::Refused("ClientHello larger than one TLS record".into()));
        }
        tokio::time::sleep(Duration::from_millis(PEEK_PAUSE_MS)).await;
    }
    Err(NoHello::Refused("ClientHello did not complete".into()))
}

/// The first byte the client sends, waiting at most `timeout`; `None` when
/// it closes or sends nothing in time.
pub(crate) async fn first_byte(stream: &TcpStream, timeout: Duration) -> Option<u8> {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(timeout, stream.peek(&mut byte)).await {
        Ok(Ok(1)) => byte.first().copied(),
        _ => None,
    }
}
