//! Streams one after another on a mesh mTLS connection (ALPN
//! [`STREAMS_ALPN`]): the framing, and what each side knows of the stream
//! in progress.
//!
//! A new TCP connection and TLS handshake between two sidecars cost each
//! proxied connection about as much CPU as all the rest of its forwarding
//! (`bench/README.md`). Two Veil sidecars that agree on [`STREAMS_ALPN`]
//! keep the connection when a stream ends cleanly and carry the next
//! connection from the same client sidecar to the same endpoint and port
//! on it, as HTTP/1.1 keep-alive does for requests. Istio's sidecars and
//! ztunnel do not offer it, so with them nothing changes.
//!
//! Plaintext inside the TLS connection is a sequence of frames, each a
//! 4-byte header (type, then a 24-bit big-endian length) and its payload:
//! - `OPEN` (client → server, length 0): a stream begins; the server
//!   connects the application then.
//! - `DATA` (length 1..2²⁴−1): stream bytes.
//! - `END` (length 0): this direction of the stream is over (TCP's FIN).
//!
//! A stream is over when both directions ended; then the client may send
//! the next `OPEN`. Anything else (an unknown type, `DATA` before `OPEN`,
//! `OPEN` from the server, a control frame with a length) is a protocol
//! error that closes the connection. An error or a reset on either
//! application socket closes the whole connection, so the peer sees it.

use std::io;
use tokio::io::ReadBuf;

/// ALPN protocol of a mesh connection that carries streams one after another.
pub(crate) use veil_identity::STREAMS_ALPN;
/// Bytes of a frame header.
pub(crate) const HEADER: usize = 4;
/// Largest payload of one `DATA` frame, in bytes.
pub(crate) const MAX_DATA: usize = (1 << 24) - 1;

const DATA: u8 = 0;
const OPEN: u8 = 1;
const END: u8 = 2;

/// The header of a `DATA` frame of `len` bytes (at most [`MAX_DATA`]).
pub(crate) fn data_header(len: usize) -> [u8; HEADER] {
    let len = len.min(MAX_DATA) as u32;
    let [_, a, b, c] = len.to_be_bytes();
    [DATA, a, b, c]
}

/// The `OPEN` frame.
pub(crate) const OPEN_FRAME: [u8; HEADER] = [OPEN, 0, 0, 0];
/// The `END` frame.
pub(crate) const END_FRAME: [u8; HEADER] = [END, 0, 0, 0];

/// A control frame the reader met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    Open,
    End,
}

/// Which side of the connection reads: the server expects `OPEN` before
/// each stream's data, the client never gets one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Client,
    Server,
}

/// What one side knows of the stream in progress, and the reader's place
/// in the frames received.
#[derive(Debug)]
pub(crate) struct Streams {
    role: Role,
    header: [u8; HEADER],
    header_len: u8,
    data_left: u32,
    /// The server got this stream's `OPEN`; on the client, the stream began.
    pub(crate) opened: bool,
    /// The client still has to send this stream's `OPEN`.
    pub(crate) open_pending: bool,
    /// The peer's `END` of this stream arrived: reads return end of stream.
    pub(crate) peer_ended: bool,
    /// Our `END` of this stream was queued.
    pub(crate) we_ended: bool,
}

impl Streams {
    /// No stream begun yet.
    pub(crate) fn new(role: Role) -> Self {
        Streams { role, header: [0; HEADER], header_len: 0, data_left: 0, opened: false, open_pending: false, peer_ended: false, we_ended: false }
    }

    /// True when this stream ended both ways, at a frame boundary: the
    /// connection may carry the next.
    pub(crate) fn finished(&self) -> bool {
        self.opened && self.peer_ended && self.we_ended && self.header_len == 0 && self.data_left == 0
    }

    /// Forgets the finished stream. The client's next stream sends `OPEN`
    /// with its first bytes; the server waits for it.
    pub(crate) fn next(&mut self) {
        let role = self.role;
        *self = Streams::new(role);
        if role == Role::Client {
            (self.opened, self.open_pending) = (true, true);
        }
    }

    /// True when received plaintext is not parsed now: what follows the
    /// peer's `END` belongs to the next stream.
    pub(crate) fn paused(&self) -> bool {
        self.peer_ended
    }

    /// Moves the `DATA` payload of `raw` (received plaintext, in order) into
    /// `out` while it has room, and reads the headers between; stops after
    /// a control frame. Returns the bytes of `raw` consumed and the control
    /// frame met, if any.
    ///
    /// Errors: `InvalidData` for a frame this side must not receive.
    pub(crate) fn read(&mut self, raw: &[u8], out: &mut ReadBuf<'_>) -> io::Result<(usize, Option<Event>)> {
        let mut used = 0;
        while let Some(rest) = raw.get(used..).filter(|rest| !rest.is_empty()) {
            if self.data_left > 0 {
                let n = rest.len().min(out.remaining()).min(self.data_left as usize);
                if n == 0 {
                    break;
                }
                out.put_slice(rest.get(..n).unwrap_or_default());
                used += n;
                self.data_left -= n as u32;
                continue;
            }
            let at = usize::from(self.header_len);
            let n = rest.len().min(HEADER - at);
            if let (Some(to), Some(from)) = (self.header.get_mut(at..at + n), rest.get(..n)) {
                to.copy_from_slice(from);
            }
            used += n;
            self.header_len += n as u8;
            if usize::from(self.header_len) < HEADER {
                break;
            }
            self.header_len = 0;
            let [kind, a, b, c] = self.header;
            let len = u32::from_be_bytes([0, a, b, c]);
            match (kind, len, self.role) {
                (DATA, 1.., _) if self.opened && !self.peer_ended => self.data_left = len,
                (OPEN, 0, Role::Server) if !self.opened => {
                    self.opened = true;
                    return Ok((used, Some(Event::Open)));
                }
                (END, 0, _) if self.opened && !self.peer_ended => {
                    self.peer_ended = true;
                    return Ok((used, Some(Event::End)));
                }
                _ => return Err(protocol_error(kind, len, self)),
            }
        }
        Ok((used, None))
    }
}

fn protocol_error(kind: u8, len: u32, streams: &Streams) -> io::Error {
    let state = match (streams.opened, streams.peer_ended) {
        (false, _) => "before the stream's OPEN",
        (true, true) => "after the stream's END",
        (true, false) => "within a stream",
    };
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("mesh stream frame type {kind} with length {len} {state} is not valid for the {:?} side ({})", streams.role, String::from_utf8_lossy(STREAMS_ALPN)),
    )
}

#[cfg(test)]
#[path = "mesh_frames_tests.rs"]
mod tests;
