//! Envoy's 503 for HTTP/1 forwarded per connection: when the upstream
//! closes or resets after the client sent its request but before a single
//! byte of answer came back (the destination app is down behind a healthy
//! sidecar), the client reads `503 Service Unavailable` instead of an empty
//! reply — the status Istio's sidecars give apps and their retry logic.
//!
//! [`AnswerOnEarlyClose`] wraps the upstream stream: writes pass through,
//! and the first read that ends the stream without any answer yields the
//! 503 instead. It costs two flags per connection.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The upstream stream of a per-connection HTTP/1 forward (see module doc).
pub(crate) struct AnswerOnEarlyClose<S> {
    inner: S,
    /// The client's request reached the upstream (at least one byte).
    requested: bool,
    /// An answer byte came back: pass reads through.
    answered: bool,
    /// The 503 is being given: what is left of it (empty once read).
    reply: Option<Vec<u8>>,
}

impl<S> AnswerOnEarlyClose<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self { inner, requested: false, answered: false, reply: None }
    }

    /// The wrapped stream.
    pub(crate) fn into_inner(self) -> S {
        self.inner
    }
}

/// Envoy's local reply for a reset before response headers.
pub(crate) fn unavailable_response(reason: &str) -> String {
    let body = format!("upstream connect error or disconnect/reset before headers. reset reason: {reason}\n");
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for AnswerOnEarlyClose<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if let Some(rest) = self.reply.as_mut() {
            give(rest, buf);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.answered {
            return result;
        }
        let reason = match &result {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                self.answered = true;
                return result;
            }
            Poll::Ready(Ok(())) => "connection termination".to_string(),
            Poll::Ready(Err(e)) => e.to_string(),
            Poll::Pending => return result,
        };
        if !self.requested {
            return result;
        }
        tracing::debug!(%reason, "upstream closed before answering; answering 503");
        let mut reply = unavailable_response(&reason).into_bytes();
        give(&mut reply, buf);
        self.reply = Some(reply);
        Poll::Ready(Ok(()))
    }
}

/// Moves as much of `rest` into `buf` as fits.
fn give(rest: &mut Vec<u8>, buf: &mut ReadBuf<'_>) {
    let n = rest.len().min(buf.remaining());
    buf.put_slice(&rest[..n]);
    rest.drain(..n);
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AnswerOnEarlyClose<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.requested = true;
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn read_all<S: AsyncRead + Unpin>(s: &mut S) -> String {
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn a_request_without_answer_reads_503() {
        let (near, mut far) = tokio::io::duplex(4096);
        let mut guarded = AnswerOnEarlyClose::new(near);
        guarded.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        drop(far.shutdown().await);
        drop(far);
        let got = read_all(&mut guarded).await;
        assert!(got.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{got}");
    }

    #[tokio::test]
    async fn an_answer_or_no_request_passes_through() {
        // Answered: the upstream's bytes, then its end, nothing added.
        let (near, mut far) = tokio::io::duplex(4096);
        let mut guarded = AnswerOnEarlyClose::new(near);
        guarded.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        far.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        drop(far);
        assert_eq!(read_all(&mut guarded).await, "HTTP/1.1 200 OK\r\n\r\n");
        // No request (a TCP health check): the close is passed on as is.
        let (near, far) = tokio::io::duplex(4096);
        let mut guarded = AnswerOnEarlyClose::new(near);
        drop(far);
        assert_eq!(read_all(&mut guarded).await, "");
    }
}
