//! The server's session ticket waits for its first write: one socket write
//! carries the ticket and the first data (the control: the same exchange
//! with the ticket already sent takes one write for the data alone), and
//! the client still resumes its next connection with it.

use super::tests::{bounded, configs, name, pair};
use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A socket that counts its writes that took bytes.
struct CountWrites {
    inner: TcpStream,
    writes: u64,
}

impl AsyncRead for CountWrites {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountWrites {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.writes += 1;
        }
        polled
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A handshake, a client request and the server's answer; the server's
/// socket writes after its handshake, and how each side's handshake went.
async fn exchange(server: &Arc<ServerConfig>, client: &Arc<ClientConfig>, flush_ticket_first: bool) -> (u64, HandshakeKind, HandshakeKind) {
    let (c, s) = pair().await;
    let s = CountWrites { inner: s, writes: 0 };
    let (c, s) = bounded("handshake", async { tokio::join!(MeshClient::connect(c, client.clone(), name()), MeshServer::accept(s, server.clone())) }).await;
    let (mut c, mut s) = (c.unwrap(), s.unwrap());
    let before = s.io.writes;
    if flush_ticket_first {
        bounded("flush", s.flush()).await.unwrap();
    }
    bounded("request", c.write_all(b"ping")).await.unwrap();
    let mut request = [0u8; 4];
    bounded("read request", s.read_exact(&mut request)).await.unwrap();
    assert!(s.io.writes == before || flush_ticket_first, "a read does not send the ticket");
    bounded("answer", s.write_all(b"pong")).await.unwrap();
    let mut answer = [0u8; 4];
    bounded("read answer", c.read_exact(&mut answer)).await.unwrap();
    assert_eq!(&answer, b"pong");
    let kinds = (c.handshake_kind().unwrap(), s.handshake_kind().unwrap());
    (s.io.writes - before, kinds.0, kinds.1)
}

#[tokio::test]
async fn the_session_ticket_goes_out_with_the_first_data() {
    let (server, client) = configs(false);
    // Control: the ticket flushed on its own, then the answer: two writes.
    let (writes, c_kind, s_kind) = exchange(&server, &client, true).await;
    assert_eq!((writes, c_kind, s_kind), (2, HandshakeKind::Full, HandshakeKind::Full));
    // The ticket held until the answer: one write carries both.
    let (writes, c_kind, s_kind) = exchange(&server, &client, false).await;
    assert_eq!(writes, 1, "the ticket and the first data in one write");
    // Both tickets reached the client: its next connections resume.
    assert_eq!((c_kind, s_kind), (HandshakeKind::Resumed, HandshakeKind::Resumed));
    let (_, c_kind, s_kind) = exchange(&server, &client, false).await;
    assert_eq!((c_kind, s_kind), (HandshakeKind::Resumed, HandshakeKind::Resumed));
}
