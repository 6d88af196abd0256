//! Where bytes move: a half-close-aware bidirectional copy that holds no
//! buffer while a connection is idle.
//!
//! Each direction reads into a scratch buffer that every connection of the
//! thread shares, and writes the bytes on at once. Only bytes the writer
//! cannot take yet stay with the connection, in a buffer that is released
//! when the reader has nothing more, so an idle connection costs its sockets
//! and TLS state but no copy buffers (ztunnel's `copy.rs` keeps 1–16 KiB per
//! direction per connection). Reads start at [`INITIAL_READ`] bytes and
//! double, up to [`MAX_READ`], while reads fill them (a bulk flow: fewer and
//! larger system calls); they drop back when the reader runs dry. Nothing is
//! allocated per read.
//!
//! When one side reaches end of stream, the other side's write half is shut
//! down (a TCP FIN, or a TLS `close_notify` then FIN) and the opposite
//! direction keeps flowing until it ends too.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// First read size of a direction, in bytes (one TLS record).
pub(crate) const INITIAL_READ: usize = 16 * 1024;
/// Largest read size, reached by bulk flows, in bytes.
pub(crate) const MAX_READ: usize = 256 * 1024;

thread_local! {
    /// The read buffer of every connection copied on this thread; grows to
    /// the largest read size used on the thread.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Bytes moved by one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Transferred {
    /// From the downstream (accepting) side to the upstream side, in bytes.
    pub(crate) sent: u64,
    /// From the upstream side to the downstream side, in bytes.
    pub(crate) received: u64,
}

/// Copies both ways until both directions ended; returns the byte counts,
/// or the I/O error that ended the connection early.
pub(crate) async fn bidirectional<A, B>(downstream: &mut A, upstream: &mut B) -> io::Result<Transferred>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut pipe = Pipe::default();
    poll_fn(|cx| pipe.poll_copy(cx, downstream, upstream)).await
}

/// The state of one connection's copy, both directions.
#[derive(Debug, Default)]
pub(crate) struct Pipe {
    down_up: Direction,
    up_down: Direction,
}

impl Pipe {
    /// Moves what can be moved now; ready when both directions ended.
    pub(crate) fn poll_copy<A, B>(&mut self, cx: &mut Context<'_>, down: &mut A, up: &mut B) -> Poll<io::Result<Transferred>>
    where
        A: AsyncRead + AsyncWrite + Unpin + ?Sized,
        B: AsyncRead + AsyncWrite + Unpin + ?Sized,
    {
        let sent = self.down_up.poll(cx, down, up)?;
        let received = self.up_down.poll(cx, up, down)?;
        ready!(sent);
        ready!(received);
        Ok(Transferred { sent: self.down_up.bytes, received: self.up_down.bytes }).into()
    }

    #[cfg(test)]
    /// Bytes of buffer the connection holds now (both directions), beyond
    /// the thread's shared scratch.
    pub(crate) fn held_capacity(&self) -> usize {
        self.down_up.held.capacity() + self.up_down.held.capacity()
    }

    #[cfg(test)]
    /// The next read size of each direction (downstream→upstream first), in bytes.
    pub(crate) fn read_sizes(&self) -> (usize, usize) {
        (self.down_up.read_size(), self.up_down.read_size())
    }
}

/// One direction: reader → writer.
#[derive(Debug, Default)]
struct Direction {
    /// Bytes read but not yet written, from `pos` on.
    held: Vec<u8>,
    pos: usize,
    /// The next read asks for [`INITIAL_READ`] bytes doubled this many
    /// times (a `u8`, not a size: it keeps a connection's task small).
    doublings: u8,
    /// The reader reached end of stream.
    eof: bool,
    /// The writer was shut down: the direction is over.
    done: bool,
    /// Bytes went to the writer since it was last flushed.
    need_flush: bool,
    /// Bytes written, in total.
    bytes: u64,
}

/// What one read brought.
enum Moved {
    /// Bytes were read (and written on, or held).
    Bytes,
    /// The writer took only part of them; the rest is held.
    Blocked,
    /// The reader has nothing now.
    Idle,
    /// The reader reached end of stream.
    Eof,
}

impl Direction {
    /// Bytes asked of the next read.
    fn read_size(&self) -> usize {
        INITIAL_READ.checked_shl(self.doublings.into()).unwrap_or(MAX_READ).min(MAX_READ)
    }

    fn poll<R, W>(&mut self, cx: &mut Context<'_>, reader: &mut R, writer: &mut W) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        loop {
            if self.done {
                return Poll::Ready(Ok(()));
            }
            while self.pos < self.held.len() {
                let rest = self.held.get(self.pos..).unwrap_or_default();
                let n = ready!(Pin::new(&mut *writer).poll_write(cx, rest))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
                self.bytes += n as u64;
                self.need_flush = true;
            }
            self.held.clear();
            self.pos = 0;
            if self.eof {
                // Shutdown flushes first (for TLS: the last records, then close_notify).
                ready!(Pin::new(&mut *writer).poll_shutdown(cx))?;
                self.done = true;
                continue;
            }
            let moved = SCRATCH.with(|cell| match cell.try_borrow_mut() {
                Ok(mut scratch) => {
                    if scratch.len() < self.read_size() {
                        scratch.resize(self.read_size(), 0);
                    }
                    self.read_through(cx, reader, writer, &mut scratch)
                }
                // Not reachable (polls do not nest); stay correct regardless.
                Err(_) => self.read_through(cx, reader, writer, &mut vec![0; self.read_size()]),
            })?;
            match moved {
                Moved::Bytes => {}
                Moved::Blocked => return Poll::Pending,
                Moved::Eof => self.eof = true,
                Moved::Idle => {
                    // Nothing to read: release this connection's buffer, start
                    // small again, and push out what the writer still buffers.
                    self.held = Vec::new();
                    self.doublings = 0;
                    if self.need_flush {
                        ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                        self.need_flush = false;
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// One read into `scratch`, written on at once; what the writer does not
    /// take is held.
    fn read_through<R, W>(&mut self, cx: &mut Context<'_>, reader: &mut R, writer: &mut W, scratch: &mut [u8]) -> io::Result<Moved>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        let want = self.read_size().min(scratch.len());
        let Some(space) = scratch.get_mut(..want) else { return Ok(Moved::Idle) };
        let mut buf = ReadBuf::new(space);
        match Pin::new(&mut *reader).poll_read(cx, &mut buf) {
            Poll::Pending => return Ok(Moved::Idle),
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Ready(Ok(())) => {}
        }
        let n = buf.filled().len();
        if n == 0 {
            return Ok(Moved::Eof);
        }
        if n == want && self.read_size() < MAX_READ {
            self.doublings = self.doublings.saturating_add(1);
        }
        let data = scratch.get(..n).unwrap_or_default();
        let mut written = 0;
        while written < n {
            let rest = data.get(written..).unwrap_or_default();
            match Pin::new(&mut *writer).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(k)) => {
                    written += k;
                    self.bytes += k as u64;
                    self.need_flush = true;
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => {
                    self.held.extend_from_slice(data.get(written..).unwrap_or_default());
                    return Ok(Moved::Blocked);
                }
            }
        }
        Ok(Moved::Bytes)
    }
}

#[cfg(test)]
#[path = "copy_tests.rs"]
mod tests;
