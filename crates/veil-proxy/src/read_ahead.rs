//! Reading ahead under TLS, for bulk flows only.
//!
//! rustls asks its transport for little at a time (4 KiB beyond what it
//! holds, at most one record), so a bulk flow of mesh mTLS costs a `recv`
//! per record and a window-update ACK more often than needed. [`ReadAhead`]
//! passes small reads straight to the socket (request/response traffic: no
//! buffer, no copy) and switches to reading [`AHEAD`] bytes at once when a
//! read fills all the space rustls offered, which means more is queued. The
//! buffer is released when it is empty and the socket has nothing more.
//! Writes pass through untouched (vectored writes included, which rustls
//! uses to send several records at once).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes read from the socket at once in a bulk flow.
pub(crate) const AHEAD: usize = 64 * 1024;

/// A transport that reads ahead for bulk flows (module doc).
#[derive(Debug)]
pub(crate) struct ReadAhead<S> {
    inner: S,
    /// [`AHEAD`] bytes in a bulk flow, else empty (no allocation);
    /// `buf[start..end]` was read and not yet passed on.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Reads made on the socket.
    socket_reads: u64,
}

impl<S> ReadAhead<S> {
    pub(crate) fn new(inner: S) -> Self {
        ReadAhead { inner, buf: Vec::new(), start: 0, end: 0, socket_reads: 0 }
    }

    /// The wrapped transport.
    #[cfg(test)]
    pub(crate) fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Buffer capacity held now, in bytes.
    #[cfg(test)]
    pub(crate) fn held_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Reads made on the socket so far.
    #[cfg(test)]
    pub(crate) fn socket_reads(&self) -> u64 {
        self.socket_reads
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.start >= this.end {
            if this.buf.is_empty() {
                // Not in a bulk flow: read straight into the caller's space.
                let want = out.remaining();
                let before = out.filled().len();
                ready!(Pin::new(&mut this.inner).poll_read(cx, out))?;
                this.socket_reads += 1;
                if want > 0 && out.filled().len() - before == want {
                    this.buf = vec![0; AHEAD];
                }
                return Poll::Ready(Ok(()));
            }
            let mut space = ReadBuf::new(&mut this.buf);
            match Pin::new(&mut this.inner).poll_read(cx, &mut space) {
                Poll::Pending => {
                    // The socket has nothing more: the bulk flow paused.
                    this.buf = Vec::new();
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            this.socket_reads += 1;
            (this.start, this.end) = (0, space.filled().len());
            if this.end == 0 {
                this.buf = Vec::new();
                return Poll::Ready(Ok(()));
            }
        }
        let ahead = this.buf.get(this.start..this.end).unwrap_or_default();
        let n = ahead.len().min(out.remaining());
        out.put_slice(ahead.get(..n).unwrap_or_default());
        this.start += n;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[path = "read_ahead_tests.rs"]
mod tests;
