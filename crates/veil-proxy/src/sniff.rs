//! Tells mesh mTLS, other TLS and plaintext apart by peeking at a connection's
//! first bytes, without consuming them.
//!
//! Follows Envoy's `tls_inspector` as Istio configures it for PERMISSIVE
//! ports: a TLS ClientHello that offers an `istio*` ALPN (`istio`,
//! `istio-peer-exchange`, `istio-http/1.1`, `istio-h2`, ...) is mesh traffic.

use std::time::Duration;
use tls_parser::{
    parse_tls_extensions, parse_tls_plaintext, TlsExtension, TlsMessage, TlsMessageHandshake,
};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Largest prefix inspected, in bytes (one maximal TLS record).
const MAX_PEEK: usize = 16 * 1024 + 5;
/// Upper bound on peek attempts while a ClientHello arrives in pieces.
const MAX_PEEKS: u32 = 400;
/// Pause between peeks that returned an incomplete record, in milliseconds.
const PEEK_PAUSE_MS: u64 = 5;
/// TLS record content type `handshake`.
const TLS_HANDSHAKE: u8 = 0x16;

/// What the first bytes of a connection are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstBytes {
    /// Not TLS.
    Plaintext,
    /// A TLS ClientHello offering an `istio*` ALPN.
    MeshTls { alpn: Vec<String> },
    /// TLS that is not mesh traffic (no ALPN, or no `istio*` ALPN, or a
    /// ClientHello that could not be parsed within the limits).
    OtherTls { alpn: Vec<String> },
    /// The peer closed (or reset) before sending anything.
    Closed,
    /// Nothing arrived within the time allowed.
    Silent,
}

/// Peeks at `stream` until its first bytes can be classified, for at most
/// `timeout` (and at most one 16 KiB TLS record).
pub async fn classify(stream: &TcpStream, timeout: Duration) -> FirstBytes {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; MAX_PEEK];
    let mut seen = 0usize;
    for _ in 0..MAX_PEEKS {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Err(_) => return if seen == 0 { FirstBytes::Silent } else { partial(&buf, seen) },
            Ok(Err(_)) | Ok(Ok(0)) => return FirstBytes::Closed,
            Ok(Ok(n)) => n,
        };
        seen = n;
        let prefix = buf.get(..n).unwrap_or_default();
        if let Some(found) = inspect(prefix) {
            return found;
        }
        if n >= MAX_PEEK {
            return partial(&buf, n);
        }
        if tokio::time::timeout_at(deadline, tokio::time::sleep(Duration::from_millis(PEEK_PAUSE_MS)))
            .await
            .is_err()
        {
            return partial(&buf, seen);
        }
    }
    partial(&buf, seen)
}

/// Classification of an incomplete prefix: TLS-looking bytes are opaque TLS.
fn partial(buf: &[u8], n: usize) -> FirstBytes {
    match buf.get(..n).and_then(|b| b.first()) {
        Some(&TLS_HANDSHAKE) => FirstBytes::OtherTls { alpn: Vec::new() },
        Some(_) => FirstBytes::Plaintext,
        None => FirstBytes::Silent,
    }
}

/// Classifies a prefix, or `None` when more bytes are needed.
pub(crate) fn inspect(prefix: &[u8]) -> Option<FirstBytes> {
    match prefix.first() {
        None => return None,
        Some(&TLS_HANDSHAKE) => {}
        Some(_) => return Some(FirstBytes::Plaintext),
    }
    // Record header: type(1) version(2) length(2); TLS versions are 0x03xx.
    match prefix.get(1) {
        None => return None,
        Some(&3) => {}
        Some(_) => return Some(FirstBytes::Plaintext),
    }
    let len = match prefix.get(3..5) {
        Some(&[hi, lo]) => usize::from(u16::from_be_bytes([hi, lo])),
        _ => return None,
    };
    let record = prefix.get(..5 + len)?;
    let alpn = client_hello_alpn(record);
    Some(match alpn {
        Some(alpn) if alpn.iter().any(|p| p.starts_with("istio")) => FirstBytes::MeshTls { alpn },
        Some(alpn) => FirstBytes::OtherTls { alpn },
        None => FirstBytes::OtherTls { alpn: Vec::new() },
    })
}

/// The ALPN protocols offered in the ClientHello of a complete TLS record;
/// `None` when the record is not a parsable ClientHello.
fn client_hello_alpn(record: &[u8]) -> Option<Vec<String>> {
    let (_, plaintext) = parse_tls_plaintext(record).ok()?;
    plaintext.msg.iter().find_map(|msg| match msg {
        TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello)) => {
            let Some(ext) = hello.ext else {
                return Some(Vec::new());
            };
            let (_, extensions) = parse_tls_extensions(ext).ok()?;
            let alpn = extensions
                .iter()
                .find_map(|e| match e {
                    TlsExtension::ALPN(protocols) => Some(
                        protocols
                            .iter()
                            .map(|p| String::from_utf8_lossy(p).into_owned())
                            .collect(),
                    ),
                    _ => None,
                })
                .unwrap_or_default();
            Some(alpn)
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_and_short_prefixes() {
        assert_eq!(inspect(b"GET / HTTP/1.1\r\n"), Some(FirstBytes::Plaintext));
        assert_eq!(inspect(&[0x16]), None);
        assert_eq!(inspect(&[0x16, 0x03, 0x01, 0x00]), None);
        assert_eq!(inspect(&[0x16, 0x47]), Some(FirstBytes::Plaintext));
        // A complete record that is not a ClientHello is opaque TLS.
        assert_eq!(
            inspect(&[0x16, 0x03, 0x01, 0x00, 0x01, 0xff]),
            Some(FirstBytes::OtherTls { alpn: Vec::new() })
        );
    }
}
