//! What the first client bytes of a flow say about it: a TLS ClientHello
//! (with its ALPN offer and SNI) or not TLS at all. Istio marks mesh mTLS
//! with ALPN `istio`, `istio-peer-exchange` or `istio-http/1.1` etc.
//! (istio/istio pkg/config/constants: `IstioAlpn*`).

use tls_parser::{
    parse_tls_extensions, parse_tls_message_handshake, parse_tls_raw_record, SNIType, TlsExtension,
    TlsMessage, TlsMessageHandshake, TlsRecordType,
};

/// The start of a client byte stream.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Opening {
    /// A complete ClientHello.
    ClientHello {
        alpn: Vec<String>,
        sni: Option<String>,
    },
    /// A TLS handshake record whose ClientHello could not be read (cut off
    /// or malformed).
    TlsUnreadable,
    /// Anything else.
    NotTls,
}

/// Classifies the first bytes a client sent.
pub(crate) fn opening(head: &[u8]) -> Opening {
    if !matches!(head, [0x16, 0x03, ..]) {
        return Opening::NotTls;
    }
    // A ClientHello may be split over several handshake records.
    let mut handshake = Vec::new();
    let mut rest = head;
    while let Ok((after, record)) = parse_tls_raw_record(rest) {
        if record.hdr.record_type != TlsRecordType::Handshake {
            break;
        }
        handshake.extend_from_slice(record.data);
        rest = after;
        if let Some(hello) = client_hello(&handshake) {
            return hello;
        }
    }
    Opening::TlsUnreadable
}

fn client_hello(handshake: &[u8]) -> Option<Opening> {
    let Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello)))) =
        parse_tls_message_handshake(handshake)
    else {
        return None;
    };
    let mut alpn = Vec::new();
    let mut sni = None;
    let extensions = hello.ext.map(parse_tls_extensions);
    if let Some(Ok((_, extensions))) = extensions {
        for extension in extensions {
            match extension {
                TlsExtension::ALPN(protocols) => alpn.extend(
                    protocols
                        .iter()
                        .map(|p| String::from_utf8_lossy(p).into_owned()),
                ),
                TlsExtension::SNI(names) => {
                    sni = names
                        .iter()
                        .find(|(kind, _)| *kind == SNIType::HostName)
                        .map(|(_, name)| String::from_utf8_lossy(name).into_owned());
                }
                _ => {}
            }
        }
    }
    Some(Opening::ClientHello { alpn, sni })
}

/// Whether an offered ALPN list marks Istio mesh mTLS.
pub(crate) fn is_istio_alpn(alpn: &[String]) -> bool {
    alpn.iter().any(|p| p.starts_with("istio"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_and_cut_tls_are_recognised() {
        assert_eq!(opening(b"GET / HTTP/1.1\r\n"), Opening::NotTls);
        assert_eq!(
            opening(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]),
            Opening::TlsUnreadable
        );
        assert!(is_istio_alpn(&["h2".into(), "istio-peer-exchange".into()]));
        assert!(!is_istio_alpn(&["h2".into()]));
    }
}
