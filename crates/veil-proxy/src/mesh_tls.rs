//! Mesh mTLS streams on rustls' unbuffered API, holding no buffer while idle.
//!
//! A buffered rustls connection keeps its 4 KiB read buffer for as long as
//! it lives once it has read. [`MeshTls`] drives an
//! `UnbufferedClientConnection` or `UnbufferedServerConnection` instead: the
//! socket is read into a scratch buffer that every connection of the thread
//! shares ([`READ_SIZE`] bytes at once, so that a bulk flow costs few
//! `recv`s), and the only bytes kept with a connection are those that must
//! outlive a call: a partial record (or the records of a handshake message
//! not yet complete), plaintext beyond the caller's buffer, and ciphertext
//! the socket did not take. Each is released once empty.
//!
//! Behaviour follows tokio-rustls 0.26, which the mesh used before: TLS
//! errors are `InvalidData` (with rustls' message), the socket's end before
//! the handshake's is `UnexpectedEof` ("tls handshake eof"), and its end
//! without a `close_notify` afterwards is `UnexpectedEof` once the data
//! before it was read. `poll_shutdown` sends `close_notify` and shuts down
//! the socket's write half; reading goes on (half-close). Messages rustls
//! queues after the handshake (the server's session ticket, a KeyUpdate
//! answer) go out from whichever of read, write or flush runs next; a read
//! only sends when no writer waits for the socket, so that the writer stays
//! the task woken when the socket can take more (the two halves may run in
//! different tasks).

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{UnbufferedConnectionCommon, UnbufferedStatus};
use rustls::{ClientConfig, HandshakeKind, ServerConfig};
use rustls_pki_types::{CertificateDer, ServerName};
use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::ops::DerefMut;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use states::{invalid_data, Stop, Want};
use crate::mesh_frames::{Streams, END_FRAME, OPEN_FRAME};

/// Bytes asked of the socket per read, in bytes.
pub(crate) const READ_SIZE: usize = 64 * 1024;
/// Plaintext encrypted per write at most, in bytes (four full records).
pub(crate) const MAX_WRITE: usize = 64 * 1024;
/// Held ciphertext a write joins instead of waiting for it to go first, in
/// bytes: the server's session ticket travels with its first data, one
/// write, one segment and one wake-up of the client fewer.
const JOIN_HELD: usize = 16 * 1024;
/// Bound on the connection states handled, and on the socket reads made, in one call.
const MAX_STEPS: usize = 256;
/// rustls' message for the socket's end without a `close_notify`.
const UNEXPECTED_EOF: &str = "peer closed connection without sending TLS close_notify: \
https://docs.rs/rustls/latest/rustls/manual/_03_howto/index.html#unexpected-eof";

thread_local! {
    /// Received bytes of every connection of the thread, while a call runs.
    static RECV: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Records of one write, before the socket takes them.
    static SEND: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The plaintext of a vectored write, gathered into one.
    static GATHER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on the thread's `scratch` buffer (`SEND` or `GATHER`), or on a
/// new one should the thread's be in use (polls do not nest; stay correct
/// regardless).
fn with_scratch<T>(scratch: &'static std::thread::LocalKey<RefCell<Vec<u8>>>, f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    scratch.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => f(&mut buf),
        Err(_) => f(&mut Vec::new()),
    })
}

/// The client or server half of rustls' unbuffered API.
pub(crate) trait Side: DerefMut<Target = UnbufferedConnectionCommon<Self::Data>> + Unpin {
    /// rustls' side-specific data.
    type Data;
    /// `process_tls_records` of this side.
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data>;
    /// What this side has queued when its handshake completes may wait for
    /// its first write: true for the server's session ticket (the client
    /// never waits for one), false for the client's last flight (the server
    /// waits for it).
    const HOLDS_AFTER_HANDSHAKE: bool;
}

impl Side for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    const HOLDS_AFTER_HANDSHAKE: bool = false;
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
}

impl Side for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    const HOLDS_AFTER_HANDSHAKE: bool = true;
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
}

/// A mesh mTLS stream this proxy originated.
pub(crate) type MeshClient<IO> = MeshTls<IO, UnbufferedClientConnection>;
/// A mesh mTLS stream this proxy accepted.
pub(crate) type MeshServer<IO> = MeshTls<IO, UnbufferedServerConnection>;

/// A TLS stream over `IO` that holds no buffer while idle (module doc).
pub(crate) struct MeshTls<IO, C> {
    io: IO,
    conn: C,
    /// Received bytes rustls has not consumed yet.
    incoming: Vec<u8>,
    /// Plaintext the caller has not taken yet, from `plain_at`.
    plain: Vec<u8>,
    plain_at: usize,
    /// Ciphertext the socket has not taken yet, from `out_at`.
    outgoing: Vec<u8>,
    out_at: usize,
    /// The peer's `close_notify` arrived.
    peer_closed: bool,
    /// The socket reached its end.
    eof: bool,
    /// Our `close_notify` is queued.
    closed: bool,
    /// A write, flush or shutdown waits for the socket to take `outgoing`:
    /// reads leave the socket's one write waker to it.
    write_waiting: bool,
    /// The TLS error that broke the connection.
    failed: Option<rustls::Error>,
    /// `outgoing` holds only what may wait for the first write (a session
    /// ticket, see [`Side::HOLDS_AFTER_HANDSHAKE`]): reads do not send it.
    deferred: bool,
    /// Streams one after another (`mesh_frames`), when both sides agreed.
    streams: Option<Streams>,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> MeshServer<IO> {
    /// The server's handshake on `io` with `config` (the caller bounds it in time).
    ///
    /// Errors: `InvalidData` for a TLS failure (the alert goes to the
    /// client), `UnexpectedEof` when the client left first, or the socket's error.
    pub(crate) async fn accept(io: IO, config: Arc<ServerConfig>) -> io::Result<Self> {
        let conn = UnbufferedServerConnection::new(config).map_err(io::Error::other)?;
        MeshTls::handshake(io, conn).await
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> MeshClient<IO> {
    /// The client's handshake on `io` with `config`, to `name` (the SNI; the
    /// caller bounds it in time).
    ///
    /// Errors: as [`MeshServer::accept`].
    pub(crate) async fn connect(io: IO, config: Arc<ClientConfig>, name: ServerName<'static>) -> io::Result<Self> {
        let conn = UnbufferedClientConnection::new(config, name).map_err(io::Error::other)?;
        MeshTls::handshake(io, conn).await
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin, C: Side> MeshTls<IO, C> {
    async fn handshake(io: IO, conn: C) -> io::Result<Self> {
        let mut tls = MeshTls {
            io,
            conn,
            incoming: Vec::new(),
            plain: Vec::new(),
            plain_at: 0,
            outgoing: Vec::new(),
            out_at: 0,
            peer_closed: false,
            eof: false,
            closed: false,
            write_waiting: false,
            failed: None,
            deferred: false,
            streams: None,
        };
        poll_fn(|cx| tls.poll_handshake(cx)).await?;
        Ok(tls)
    }

    /// The peer's certificate chain, leaf first, as verified in the handshake.
    pub(crate) fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.conn.peer_certificates()
    }

    /// The ALPN protocol agreed, if any.
    pub(crate) fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// Whether the handshake was full or resumed.
    pub(crate) fn handshake_kind(&self) -> Option<HandshakeKind> {
        self.conn.handshake_kind()
    }

    /// Marks `n` bytes of `plain` taken; releases it once all are.
    fn consume_plain(&mut self, n: usize) {
        self.plain_at += n;
        if self.plain_at >= self.plain.len() {
            (self.plain, self.plain_at) = (Vec::new(), 0);
        }
    }

    /// Bytes of buffer the connection holds now, beyond the thread's scratch.
    #[cfg(test)]
    pub(crate) fn held_capacity(&self) -> usize {
        self.incoming.capacity() + self.plain.capacity() + self.outgoing.capacity()
    }

    /// Runs the handshake. The client sends its last flight before it
    /// returns (the server's handshake waits for it, and the caller may wait
    /// for the server); what the server queued at the end (its session
    /// ticket, see [`Side::HOLDS_AFTER_HANDSHAKE`]) stays held for its first
    /// write to take along (see [`JOIN_HELD`]), or its flush or shutdown.
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_input(cx, &mut Want::Handshake))?;
        if C::HOLDS_AFTER_HANDSHAKE {
            self.deferred = self.out_at < self.outgoing.len();
            return Poll::Ready(Ok(()));
        }
        self.poll_send(cx)
    }

    /// Sends what is held if no writer waits for the socket; a read, which
    /// must not take the writer's place as the one woken when the socket
    /// can take more, calls this.
    fn try_send(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.write_waiting || self.deferred || self.out_at >= self.outgoing.len() {
            return Ok(());
        }
        match self.poll_send(cx) {
            Poll::Ready(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }

    /// [`Self::poll_send`] for a write, flush or shutdown, which then waits.
    fn poll_send_waiting(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = self.poll_send(cx);
        self.write_waiting = polled.is_pending();
        polled
    }

    /// Writes the ciphertext held to the socket; releases it once written.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.deferred = false;
        while let Some(rest) = self.outgoing.get(self.out_at..).filter(|rest| !rest.is_empty()) {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_at += n;
        }
        if self.outgoing.capacity() > 0 {
            self.outgoing = Vec::new();
        }
        self.out_at = 0;
        Poll::Ready(Ok(()))
    }

    /// Writes `records` to the socket, after what is held; holds what the
    /// socket does not take now.
    fn send(&mut self, cx: &mut Context<'_>, records: &[u8]) -> io::Result<()> {
        if self.out_at < self.outgoing.len() {
            // Held records (a handshake's end) go out with these, in one write.
            self.outgoing.extend_from_slice(records);
            return match self.poll_send(cx) {
                Poll::Ready(Err(e)) => Err(e),
                _ => Ok(()),
            };
        }
        let mut written = 0;
        while let Some(rest) = records.get(written..).filter(|rest| !rest.is_empty()) {
            match Pin::new(&mut self.io).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => written += n,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
        self.outgoing.extend_from_slice(records.get(written..).unwrap_or_default());
        Ok(())
    }

    /// Encrypts `data` (at most [`MAX_WRITE`] bytes of it) and sends it;
    /// returns the bytes taken.
    fn write_plain(&mut self, cx: &mut Context<'_>, data: &[u8]) -> io::Result<usize> {
        let data = data.get(..MAX_WRITE).unwrap_or(data);
        with_scratch(&SEND, |records| match self.step_held(&mut Want::Write(data, records)) {
            Ok(Stop::Done(n)) => self.send(cx, records.get(..n).unwrap_or_default()).map(|()| data.len()),
            Ok(_) => Err(io::Error::other("mesh TLS: no state to write in")),
            Err(e) => Err(e),
        })
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin, C: Side> AsyncRead for MeshTls<IO, C> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = &this.failed {
            return Poll::Ready(Err(invalid_data(e.clone())));
        }
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        this.try_send(cx)?;
        if this.streams.is_some() {
            this.send_pending_open(cx)?;
            if let Some(ready) = this.read_held_stream(out)? {
                return Poll::Ready(Ok(ready));
            }
        } else if let Some(held) = this.plain.get(this.plain_at..).filter(|held| !held.is_empty()) {
            let n = out.remaining().min(held.len());
            out.put_slice(held.get(..n).unwrap_or_default());
            this.consume_plain(n);
            return Poll::Ready(Ok(()));
        }
        if this.peer_closed {
            if this.streams.is_some() {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::UnexpectedEof, "mesh connection closed within a stream")));
            }
            return Poll::Ready(Ok(()));
        }
        let before = out.filled().len();
        let polled = this.poll_input(cx, &mut Want::Read(out));
        // A message rustls queued while reading goes out now if it can.
        let _ = this.try_send(cx);
        let cut = this.peer_closed && out.filled().len() == before && this.streams.as_ref().is_some_and(|s| !s.paused());
        if cut && matches!(polled, Poll::Ready(Ok(()))) {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::UnexpectedEof, "mesh connection closed within a stream")));
        }
        polled
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin, C: Side> AsyncWrite for MeshTls<IO, C> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = &this.failed {
            return Poll::Ready(Err(invalid_data(e.clone())));
        }
        if this.closed {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "mesh TLS stream was shut down")));
        }
        // What the socket did not take yet goes first, and the writer waits
        // for it; a handshake's end, small and not refused, goes along instead.
        if this.write_waiting || this.outgoing.len() - this.out_at > JOIN_HELD {
            ready!(this.poll_send_waiting(cx))?;
        }
        if let Some(streams) = &mut this.streams {
            if streams.we_ended {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "mesh stream was shut down")));
            }
            let open = std::mem::take(&mut streams.open_pending);
            return Poll::Ready(this.write_frame(cx, open, bufs));
        }
        let mut slices = bufs.iter().filter(|b| !b.is_empty());
        let written = match (slices.next(), slices.next()) {
            (None, _) => return Poll::Ready(Ok(0)),
            (Some(one), None) => this.write_plain(cx, one),
            (Some(_), Some(_)) => with_scratch(&GATHER, |gathered| {
                gathered.clear();
                for slice in bufs {
                    let room = MAX_WRITE.saturating_sub(gathered.len());
                    gathered.extend_from_slice(slice.get(..room).unwrap_or(slice));
                }
                this.write_plain(cx, gathered)
            }),
        };
        Poll::Ready(written)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.send_pending_open(cx)?;
        ready!(this.poll_send_waiting(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(streams) = this.streams.as_mut().filter(|s| !s.we_ended) {
            // The stream's end, not the connection's: END, no close_notify, no FIN.
            let open = std::mem::take(&mut streams.open_pending);
            streams.we_ended = true;
            let [o0, o1, o2, o3] = OPEN_FRAME;
            let [e0, e1, e2, e3] = END_FRAME;
            let both = [o0, o1, o2, o3, e0, e1, e2, e3];
            this.write_plain(cx, if open { &both } else { &END_FRAME })?;
        }
        if this.streams.is_some() {
            return this.poll_send_waiting(cx);
        }
        if !this.closed && this.failed.is_none() {
            match this.step_held(&mut Want::Close) {
                Err(e) => return Poll::Ready(Err(e)),
                Ok(Stop::Yield) => {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Ok(_) => this.closed = true,
            }
        }
        ready!(this.poll_send_waiting(cx))?;
        Poll::Ready(match ready!(Pin::new(&mut this.io).poll_shutdown(cx)) {
            // As tokio-rustls: a socket no longer connected is shut down.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            other => other,
        })
    }
}

#[path = "mesh_tls_states.rs"]
mod states;

#[path = "mesh_tls_streams.rs"]
mod streams;

#[cfg(test)]
#[path = "mesh_tls_tests.rs"]
pub(crate) mod tests;

#[cfg(test)]
#[path = "mesh_tls_streams_tests.rs"]
pub(crate) mod streams_tests;

#[cfg(test)]
#[path = "mesh_tls_malformed_tests.rs"]
mod malformed_tests;

#[cfg(test)]
#[path = "mesh_tls_ticket_tests.rs"]
mod ticket_tests;
