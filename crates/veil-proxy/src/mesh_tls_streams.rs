//! What [`MeshTls`] does for a connection that carries streams one after
//! another (`mesh_frames`): agreeing on them after the handshake, the
//! client's `OPEN`, the server's wait for it, a stream's writes as `DATA`
//! frames, and telling when a stream finished so that the next may begin.
//! Reads go through `Streams::read` where the plaintext is handed out
//! (`poll_read`, `mesh_tls_states::deliver_stream`); a stream's shutdown is
//! its `END` (`poll_shutdown`).

use super::{with_scratch, MeshTls, Side, Want, GATHER, MAX_STEPS, MAX_WRITE};
use crate::mesh_frames::{self, Role, Streams, OPEN_FRAME, STREAMS_ALPN};
use std::io::{self, IoSlice};
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

impl<IO: AsyncRead + AsyncWrite + Unpin, C: Side> MeshTls<IO, C> {
    /// Carries streams one after another (`mesh_frames`) when the handshake
    /// agreed on [`STREAMS_ALPN`]; true then. The client's first stream
    /// begins at once (its `OPEN` goes with its first bytes); the server
    /// waits for it ([`Self::poll_open`]).
    pub(crate) fn start_streams(&mut self, role: Role) -> bool {
        if self.alpn_protocol() != Some(STREAMS_ALPN) {
            return false;
        }
        let mut streams = Streams::new(role);
        if role == Role::Client {
            streams.next();
        }
        self.streams = Some(streams);
        true
    }

    /// True when the connection carries streams (`mesh_frames`).
    pub(crate) fn carries_streams(&self) -> bool {
        self.streams.is_some()
    }

    /// True when the connection carries streams and the current one ended
    /// both ways, cleanly, with nothing left to send: it may carry the next
    /// ([`Self::next_stream`]). What was received after the peer's `END`
    /// (the client's next `OPEN`, already on its way) is kept for it.
    pub(crate) fn stream_finished(&self) -> bool {
        self.streams.as_ref().is_some_and(Streams::finished)
            && self.failed.is_none()
            && !(self.peer_closed || self.eof || self.closed)
            && self.out_at >= self.outgoing.len()
    }

    /// Begins the next stream on a connection whose stream finished.
    pub(crate) fn next_stream(&mut self) {
        if let Some(streams) = &mut self.streams {
            streams.next();
        }
    }

    /// The connection's socket.
    pub(crate) fn transport(&self) -> &IO {
        &self.io
    }

    /// Server side: waits for the next stream's `OPEN`. `Ok(true)` when it
    /// came; `Ok(false)` when the client closed the connection between
    /// streams (its `close_notify`, or the socket's end at a frame
    /// boundary).
    ///
    /// Errors: `InvalidData` for any other frame, the socket's errors.
    pub(crate) fn poll_open(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let mut none = [0u8; 0];
        for _ in 0..MAX_STEPS {
            let Some(streams) = &mut self.streams else {
                return Poll::Ready(Err(io::Error::other("mesh TLS: no streams on this connection")));
            };
            if streams.opened {
                return Poll::Ready(Ok(true));
            }
            let mut out = ReadBuf::new(&mut none);
            if let Some(held) = self.plain.get(self.plain_at..).filter(|held| !held.is_empty()) {
                let (used, _) = streams.read(held, &mut out)?;
                self.consume_plain(used);
                continue;
            }
            if self.peer_closed || self.eof {
                return Poll::Ready(Ok(false));
            }
            match ready!(self.poll_input(cx, &mut Want::Read(&mut out))) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && self.eof => return Poll::Ready(Ok(false)),
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Sends the client's pending `OPEN` on its own (a read or flush came
    /// before the stream's first bytes).
    pub(super) fn send_pending_open(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if let Some(streams) = self.streams.as_mut().filter(|s| s.open_pending) {
            streams.open_pending = false;
            self.write_plain(cx, &OPEN_FRAME)?;
        }
        Ok(())
    }

    /// A stream's read served from what is held: `Some` when the reader
    /// gets bytes or the stream's end now, `None` when it must wait for the
    /// peer.
    pub(super) fn read_held_stream(&mut self, out: &mut ReadBuf<'_>) -> io::Result<Option<()>> {
        let Some(streams) = &mut self.streams else { return Ok(None) };
        if streams.paused() {
            return Ok(Some(()));
        }
        let Some(held) = self.plain.get(self.plain_at..).filter(|held| !held.is_empty()) else { return Ok(None) };
        let before = out.filled().len();
        let (used, event) = streams.read(held, out)?;
        self.consume_plain(used);
        Ok((event.is_some() || out.filled().len() > before).then_some(()))
    }

    /// A stream's write: `bufs` (as much as one write takes) as one `DATA`
    /// frame, after an `OPEN` when `open`, encrypted and sent together;
    /// returns the stream bytes taken.
    pub(super) fn write_frame(&mut self, cx: &mut Context<'_>, open: bool, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let headers = if open { 2 * mesh_frames::HEADER } else { mesh_frames::HEADER };
        let n = total.min(MAX_WRITE - headers);
        if n == 0 && !open {
            return Ok(0);
        }
        with_scratch(&GATHER, |gathered| {
            gathered.clear();
            if open {
                gathered.extend_from_slice(&OPEN_FRAME);
            }
            if n > 0 {
                gathered.extend_from_slice(&mesh_frames::data_header(n));
                for slice in bufs {
                    let left = n.saturating_sub(gathered.len() - headers);
                    gathered.extend_from_slice(slice.get(..left).unwrap_or(slice));
                }
            }
            self.write_plain(cx, gathered).map(|_| n)
        })
    }
}
