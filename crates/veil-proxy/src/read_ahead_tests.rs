//! Tests of `read_ahead` over real TCP connections on 127.0.0.1, bare and
//! under mesh mTLS.

use super::*;
use std::future::poll_fn;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (connected, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (connected.unwrap(), accepted.unwrap().0)
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Reads exactly `len` bytes through `reader` in pieces of at most `piece`.
async fn read_in_pieces<R: AsyncRead + Unpin>(reader: &mut R, len: usize, piece: usize) -> (Vec<u8>, u64) {
    let mut got = Vec::with_capacity(len);
    let mut buf = vec![0u8; piece];
    let mut reads = 0;
    while got.len() < len {
        let n = tokio::time::timeout(Duration::from_secs(10), reader.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "early EOF after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
        reads += 1;
    }
    (got, reads)
}

/// True when a read would wait now (the reader releases its buffer then).
async fn would_wait<R: AsyncRead + Unpin>(reader: &mut R) -> bool {
    let mut byte = [0u8; 1];
    poll_fn(|cx| {
        let mut buf = ReadBuf::new(&mut byte);
        Poll::Ready(Pin::new(&mut *reader).poll_read(cx, &mut buf).is_pending())
    })
    .await
}

#[tokio::test]
async fn small_messages_go_straight_through_without_a_buffer() {
    let (mut writer, socket) = pair().await;
    let mut reader = ReadAhead::new(socket);
    for round in 0..20u8 {
        writer.write_all(&[round; 1000]).await.unwrap();
        let (got, _) = read_in_pieces(&mut reader, 1000, 4096).await;
        assert_eq!(got, vec![round; 1000]);
        assert_eq!(reader.held_capacity(), 0, "round {round}");
    }
    assert_eq!(reader.socket_reads(), 20, "one socket read per message");
}

#[tokio::test]
async fn a_bulk_flow_reads_ahead_then_releases_the_buffer() {
    let (mut writer, socket) = pair().await;
    let mut reader = ReadAhead::new(socket);
    let data = pattern(8 * 1024 * 1024);
    let sent = data.clone();
    let sending = tokio::spawn(async move {
        writer.write_all(&sent).await.unwrap();
        writer
    });
    let (got, reads) = read_in_pieces(&mut reader, data.len(), 4096).await;
    assert!(got == data, "bytes arrive intact and in order");
    let writer = sending.await.unwrap();
    assert!(reads >= 2048, "the caller read 4 KiB at a time ({reads} reads)");
    assert!(reader.socket_reads() * 4 <= reads, "{} socket reads for {reads} reads", reader.socket_reads());
    assert!(would_wait(&mut reader).await);
    assert_eq!(reader.held_capacity(), 0, "released when drained");
    drop(writer);
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "EOF passes through");
}

#[tokio::test]
async fn mesh_tls_over_read_ahead_reads_the_socket_less_often() {
    let dir = tempfile::tempdir().unwrap();
    let domain = veil_identity::TrustDomain::default();
    let ca = veil_identity::CertificateAuthority::load_or_create(dir.path(), domain.clone()).unwrap();
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    let cert = |sa: &str| {
        let id = veil_identity::SpiffeId::new(&domain, "default", sa);
        (ca.issue_for_test(&id, now - hour, now + hour).unwrap(), id)
    };
    let ((server_cert, server_id), (client_cert, _)) = (cert("server"), cert("client"));
    let bundle = ca.trust_bundle();
    let server = veil_identity::mesh_server_config(&server_cert, &bundle).unwrap();
    let client = veil_identity::mesh_client_config(&client_cert, &bundle, &[server_id]).unwrap();

    let data = pattern(8 * 1024 * 1024);
    let send = |c: TcpStream| {
        let (client, sent) = (client.clone(), data.clone());
        tokio::spawn(async move {
            let name = rustls_pki_types::ServerName::try_from("outbound_.5201_._.server").unwrap();
            let mut tls = tokio_rustls::TlsConnector::from(client).connect(name, c).await.unwrap();
            tls.write_all(&sent).await.unwrap();
            tls.shutdown().await.unwrap();
        })
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&server));

    // Control: rustls straight on the socket.
    let (c, s) = pair().await;
    let sending = send(c);
    let mut tls = acceptor.accept(CountReads { inner: s, reads: 0 }).await.unwrap();
    let (got, _) = read_in_pieces(&mut tls, data.len(), 64 * 1024).await;
    assert!(got == data, "bytes arrive intact");
    sending.await.unwrap();
    let direct_reads = tls.get_ref().0.reads;

    let (c, s) = pair().await;
    let sending = send(c);
    let mut tls = acceptor.accept(ReadAhead::new(CountReads { inner: s, reads: 0 })).await.unwrap();
    let (got, _) = read_in_pieces(&mut tls, data.len(), 64 * 1024).await;
    assert!(got == data, "bytes arrive intact through the read-ahead");
    sending.await.unwrap();
    let ahead_reads = tls.get_ref().0.get_ref().reads;
    assert_eq!(ahead_reads, tls.get_ref().0.socket_reads());
    assert!(ahead_reads * 3 <= direct_reads, "{ahead_reads} socket reads with read-ahead, {direct_reads} without");
}

/// A socket that counts its reads (the control: what rustls asks for).
struct CountReads {
    inner: TcpStream,
    reads: u64,
}

impl AsyncRead for CountReads {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if polled.is_ready() {
            this.reads += 1;
        }
        polled
    }
}

impl AsyncWrite for CountReads {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
