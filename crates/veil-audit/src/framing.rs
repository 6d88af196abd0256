//! Whether bytes captured from the middle of a connection are TLS: when the
//! capture joins a connection after its handshake there is no ClientHello
//! to read, but every byte is still inside TLS records (RFC 8446 §5.1,
//! RFC 5246 §6.2), each a 5-byte header (content type, version, length)
//! followed by that many bytes.

use tls_parser::parse_tls_record_header;

/// Length of a TLS record header (bytes).
const HEADER_LEN: usize = 5;
/// Largest record body a peer may send: a TLS 1.2 TLSCiphertext of
/// 2^14 + 2048 bytes (RFC 5246 §6.2.3); TLS 1.3 allows less.
const MAX_RECORD_BODY: usize = (1 << 14) + 2048;

/// Whether `bytes`, captured from an unknown point of one direction of a
/// stream, are TLS framing. The capture may begin inside a record, so the
/// framing may start at any offset shorter than one maximal record; from
/// there, records with content type 0x14–0x18, version 0x0301–0x0304 and a
/// body of 1 to 18 432 bytes must follow each other up to the end of
/// `bytes`, at least one of them complete (only the last may be cut, by the
/// end of the capture).
pub(crate) fn is_tls_framing(bytes: &[u8]) -> bool {
    let scan = bytes.len().min(MAX_RECORD_BODY + HEADER_LEN);
    (0..scan).any(|offset| bytes.get(offset..).is_some_and(records_to_end))
}

/// Whether `bytes` are whole TLS records up to their end, at least one of
/// them complete.
fn records_to_end(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    let mut complete = 0usize;
    // Every round consumes at least one header, so this ends.
    while !rest.is_empty() {
        if rest.len() < HEADER_LEN {
            return complete > 0 && header_prefix(rest);
        }
        let Some(body) = record_body_len(rest) else {
            return false;
        };
        match rest.get(HEADER_LEN + body..) {
            Some(after) => {
                complete += 1;
                rest = after;
            }
            None => break,
        }
    }
    complete > 0
}

/// The body length of the record whose header starts `bytes`, if the
/// header is sane.
fn record_body_len(bytes: &[u8]) -> Option<usize> {
    let (_, header) = parse_tls_record_header(bytes).ok()?;
    let sane = (0x14..=0x18).contains(&header.record_type.0)
        && (0x0301..=0x0304).contains(&header.version.0)
        && (1..=MAX_RECORD_BODY).contains(&usize::from(header.len));
    sane.then_some(usize::from(header.len))
}

/// Whether a header cut short by the end of the capture is the start of a
/// sane header.
fn header_prefix(bytes: &[u8]) -> bool {
    let type_ok = bytes.first().is_none_or(|t| (0x14..=0x18).contains(t));
    let major_ok = bytes.get(1).is_none_or(|&v| v == 0x03);
    let minor_ok = bytes.get(2).is_none_or(|v| (0x01..=0x04).contains(v));
    type_ok && major_ok && minor_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u8, body: usize) -> Vec<u8> {
        let len = u16::try_from(body).unwrap_or(u16::MAX).to_be_bytes();
        let mut out = vec![kind, 0x03, 0x03, len[0], len[1]];
        out.extend(std::iter::repeat_n(0xa5, body));
        out
    }

    #[test]
    fn records_from_any_point_are_tls_and_text_is_not() {
        let mut stream = record(0x17, 300);
        stream.extend(record(0x17, 40));
        stream.extend(record(0x15, 2));
        assert!(is_tls_framing(&stream));
        // Joined inside the first record, cut inside the last header.
        assert!(is_tls_framing(&stream[120..stream.len() - 4]));
        // Cut inside the last record's body.
        assert!(is_tls_framing(&stream[..320]));
        assert!(!is_tls_framing(
            b"POST /x HTTP/1.1\r\nHost: b\r\n\r\nemail=ada"
        ));
        assert!(!is_tls_framing(&[]));
        // A lone header with no complete record proves nothing.
        assert!(!is_tls_framing(&stream[..200]));
        // Bad version, bad type.
        let mut bad = stream.clone();
        bad[2] = 0x07;
        assert!(!is_tls_framing(&bad[..345]));
        assert!(!is_tls_framing(&record(0x30, 10)));
    }
}
