//! Where bytes move: a half-close-aware bidirectional copy with one buffer
//! per direction.
//!
//! When one side reaches end of stream, the other side's write half is shut
//! down (a TCP FIN, or a TLS `close_notify` then FIN) and the opposite
//! direction keeps flowing until it ends too.

use tokio::io::{AsyncRead, AsyncWrite};

/// Buffer size per direction, in bytes.
const BUFFER_BYTES: usize = 16 * 1024;

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
pub(crate) async fn bidirectional<A, B>(downstream: &mut A, upstream: &mut B) -> std::io::Result<Transferred>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let (sent, received) =
        tokio::io::copy_bidirectional_with_sizes(downstream, upstream, BUFFER_BYTES, BUFFER_BYTES).await?;
    Ok(Transferred { sent, received })
}
