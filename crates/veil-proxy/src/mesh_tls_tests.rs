//! Tests of `mesh_tls` over real TCP connections on 127.0.0.1, against
//! itself and against buffered rustls peers (tokio-rustls), with mesh
//! certificates from a test CA.

use super::*;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bound on every step of a test.
pub(super) const STEP: Duration = Duration::from_secs(20);
const SNI: &str = "outbound_.8080_._.server.default.svc.cluster.local";

pub(crate) async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (connected, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (connected.unwrap(), accepted.unwrap().0)
}

pub(crate) fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

/// Mesh server and client configs from a new CA (the client's from `other`
/// CA's certificate when asked: one the server must refuse).
pub(crate) fn configs(foreign_client: bool) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let domain = veil_identity::TrustDomain::default();
    let (dir, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ca = veil_identity::CertificateAuthority::load_or_create(dir.path(), domain.clone()).unwrap();
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    let server_id = veil_identity::SpiffeId::new(&domain, "default", "server");
    let client_id = veil_identity::SpiffeId::new(&domain, "default", "client");
    let server_cert = ca.issue_for_test(&server_id, now - hour, now + hour).unwrap();
    let client_cert = if foreign_client {
        let other = veil_identity::CertificateAuthority::load_or_create(other.path(), domain.clone()).unwrap();
        other.issue_for_test(&client_id, now - hour, now + hour).unwrap()
    } else {
        ca.issue_for_test(&client_id, now - hour, now + hour).unwrap()
    };
    let bundle = ca.trust_bundle();
    let server = veil_identity::mesh_server_config(&server_cert, &bundle).unwrap();
    let client = veil_identity::mesh_client_config(&client_cert, &bundle, &[server_id]).unwrap();
    (server, client)
}

pub(crate) fn name() -> ServerName<'static> {
    ServerName::try_from(SNI).unwrap()
}

pub(crate) async fn bounded<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(STEP, f).await.unwrap_or_else(|_| panic!("{what} timed out"))
}

/// A `MeshClient` and a `MeshServer` connected over loopback.
pub(crate) async fn mesh_pair(server: &Arc<ServerConfig>, client: &Arc<ClientConfig>) -> (MeshClient<TcpStream>, MeshServer<TcpStream>) {
    let (c, s) = pair().await;
    let (c, s) = bounded("handshake", async { tokio::join!(MeshClient::connect(c, client.clone(), name()), MeshServer::accept(s, server.clone())) }).await;
    (c.unwrap(), s.unwrap())
}

/// True when a read would wait now.
async fn would_wait<R: AsyncRead + Unpin>(reader: &mut R) -> bool {
    let mut byte = [0u8; 1];
    poll_fn(|cx| {
        let mut buf = ReadBuf::new(&mut byte);
        Poll::Ready(Pin::new(&mut *reader).poll_read(cx, &mut buf).is_pending())
    })
    .await
}

async fn read_exactly<R: AsyncRead + Unpin>(reader: &mut R, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    bounded("read", reader.read_exact(&mut buf)).await.unwrap();
    buf
}

#[tokio::test]
async fn an_idle_connection_holds_no_buffer_and_a_large_payload_waits_in_one() {
    let (server, client) = configs(false);
    let (mut c, mut s) = mesh_pair(&server, &client).await;
    assert_eq!(c.alpn_protocol(), Some(&b"istio"[..]));
    assert_eq!(s.alpn_protocol(), Some(&b"istio"[..]));
    assert!(s.peer_certificates().is_some_and(|chain| !chain.is_empty()), "the client's chain");
    assert_eq!(c.handshake_kind(), Some(HandshakeKind::Full));
    for round in 0..5u8 {
        bounded("write", c.write_all(&[round; 1000])).await.unwrap();
        bounded("flush", c.flush()).await.unwrap();
        assert_eq!(read_exactly(&mut s, 1000).await, vec![round; 1000]);
        bounded("write", s.write_all(&[round; 700])).await.unwrap();
        bounded("flush", s.flush()).await.unwrap();
        assert_eq!(read_exactly(&mut c, 700).await, vec![round; 700]);
    }
    assert!(would_wait(&mut s).await && would_wait(&mut c).await);
    assert_eq!((c.held_capacity(), s.held_capacity()), (0, 0), "idle connections hold no buffer");

    // Control: a payload larger than the caller's buffer waits in the connection.
    let payload = pattern(40_000, 7);
    bounded("write", s.write_all(&payload)).await.unwrap();
    bounded("flush", s.flush()).await.unwrap();
    let mut small = [0u8; 100];
    let n = bounded("read", c.read(&mut small)).await.unwrap();
    assert!(n > 0 && small[..n] == payload[..n]);
    assert!(c.held_capacity() > 0, "the rest of the payload is held");
    let mut rest = read_exactly(&mut c, payload.len() - n).await;
    rest.splice(0..0, small[..n].iter().copied());
    assert!(rest == payload, "bytes arrive intact through a 100-byte buffer");
    assert!(would_wait(&mut c).await);
    assert_eq!(c.held_capacity(), 0, "released once read");
}

#[tokio::test]
async fn several_megabytes_flow_both_ways_at_once() {
    let (server, client) = configs(false);
    let (c, s) = mesh_pair(&server, &client).await;
    let (up, down) = (pattern(6 * 1024 * 1024, 1), pattern(5 * 1024 * 1024 + 17, 2));
    let (mut c_read, mut c_write) = tokio::io::split(c);
    let (mut s_read, mut s_write) = tokio::io::split(s);
    let (sent_up, sent_down) = (up.clone(), down.clone());
    let sending_up = tokio::spawn(async move {
        c_write.write_all(&sent_up).await.unwrap();
        c_write.shutdown().await.unwrap();
    });
    let sending_down = tokio::spawn(async move {
        s_write.write_all(&sent_down).await.unwrap();
        s_write.shutdown().await.unwrap();
    });
    let receiving_up = tokio::spawn(async move {
        let mut got = Vec::new();
        s_read.read_to_end(&mut got).await.unwrap();
        got
    });
    let mut got_down = Vec::new();
    bounded("download", c_read.read_to_end(&mut got_down)).await.unwrap();
    let got_up = bounded("upload", receiving_up).await.unwrap();
    bounded("senders", async { sending_up.await.unwrap(); sending_down.await.unwrap() }).await;
    assert!(got_up == up, "client to server: {} of {} bytes, intact", got_up.len(), up.len());
    assert!(got_down == down, "server to client: {} of {} bytes, intact", got_down.len(), down.len());
}

#[tokio::test]
async fn bulk_transfers_with_buffered_rustls_peers() {
    let (server, client) = configs(false);
    let data = pattern(8 * 1024 * 1024, 3);

    // A buffered client uploads to a MeshServer.
    let (c, s) = pair().await;
    let sent = data.clone();
    let connector = tokio_rustls::TlsConnector::from(client.clone());
    let sending = tokio::spawn(async move {
        let mut tls = connector.connect(name(), c).await.unwrap();
        tls.write_all(&sent).await.unwrap();
        tls.shutdown().await.unwrap();
        tls
    });
    let mut mesh = bounded("accept", MeshServer::accept(s, server.clone())).await.unwrap();
    let mut got = Vec::new();
    bounded("upload", mesh.read_to_end(&mut got)).await.unwrap();
    assert!(got == data, "{} of {} bytes, intact", got.len(), data.len());
    drop(bounded("sender", sending).await.unwrap());

    // A MeshClient uploads to a buffered server.
    let (c, s) = pair().await;
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let receiving = tokio::spawn(async move {
        let mut tls = acceptor.accept(s).await.unwrap();
        let mut got = Vec::new();
        tls.read_to_end(&mut got).await.unwrap();
        got
    });
    let mut mesh = bounded("connect", MeshClient::connect(c, client, name())).await.unwrap();
    bounded("upload", mesh.write_all(&data)).await.unwrap();
    bounded("shutdown", mesh.shutdown()).await.unwrap();
    let got = bounded("receiver", receiving).await.unwrap();
    assert!(got == data, "{} of {} bytes, intact", got.len(), data.len());
}

#[tokio::test]
async fn half_close_each_way_keeps_the_other_direction_flowing() {
    let (server, client) = configs(false);
    // The client closes first; the server answers after its EOF.
    let (mut c, mut s) = mesh_pair(&server, &client).await;
    bounded("write", c.write_all(b"question")).await.unwrap();
    bounded("shutdown", c.shutdown()).await.unwrap();
    let mut got = Vec::new();
    bounded("read to EOF", s.read_to_end(&mut got)).await.unwrap();
    assert_eq!(got, b"question");
    bounded("write after the peer's EOF", s.write_all(b"answer")).await.unwrap();
    bounded("shutdown", s.shutdown()).await.unwrap();
    let mut got = Vec::new();
    bounded("read to EOF", c.read_to_end(&mut got)).await.unwrap();
    assert_eq!(got, b"answer");

    // The server closes first; the client answers after its EOF.
    let (mut c, mut s) = mesh_pair(&server, &client).await;
    bounded("write", s.write_all(b"greeting")).await.unwrap();
    bounded("shutdown", s.shutdown()).await.unwrap();
    let mut got = Vec::new();
    bounded("read to EOF", c.read_to_end(&mut got)).await.unwrap();
    assert_eq!(got, b"greeting");
    bounded("write after the peer's EOF", c.write_all(b"reply")).await.unwrap();
    bounded("flush", c.flush()).await.unwrap();
    assert_eq!(read_exactly(&mut s, 5).await, b"reply");
    assert!(c.write_all(b"x").await.is_ok(), "control: the client can still write");
    bounded("shutdown", c.shutdown()).await.unwrap();
    assert!(c.write_all(b"late").await.is_err(), "no writes after our own shutdown");
}

/// What a server's reads give when the client sends `hello` and then ends
/// the TCP connection, with a `close_notify` first or not: a MeshServer's,
/// and a tokio-rustls server's (the behaviour to keep).
async fn end_of_stream(close_notify: bool) -> [(Vec<u8>, Result<(), (io::ErrorKind, String)>); 2] {
    let (server, client) = configs(false);
    let mut out = Vec::new();
    for buffered in [false, true] {
        let (c, s) = pair().await;
        let connector = tokio_rustls::TlsConnector::from(client.clone());
        let sending = tokio::spawn(async move {
            let mut tls = connector.connect(name(), c).await.unwrap();
            tls.write_all(b"hello").await.unwrap();
            tls.flush().await.unwrap();
            if close_notify {
                tls.shutdown().await.unwrap();
                tls.into_inner().0
            } else {
                let mut tcp = tls.into_inner().0;
                tcp.shutdown().await.unwrap();
                tcp
            }
        });
        let mut got = Vec::new();
        let ended = if buffered {
            let mut tls = bounded("accept", tokio_rustls::TlsAcceptor::from(server.clone()).accept(s)).await.unwrap();
            bounded("read", tls.read_to_end(&mut got)).await
        } else {
            let mut tls = bounded("accept", MeshServer::accept(s, server.clone())).await.unwrap();
            bounded("read", tls.read_to_end(&mut got)).await
        };
        // Closed only now: a socket closed with unread bytes (the ticket) resets.
        drop(bounded("sender", sending).await.unwrap());
        out.push((got, ended.map(drop).map_err(|e| (e.kind(), e.to_string()))));
    }
    out.try_into().unwrap()
}

#[tokio::test]
async fn close_notify_is_eof_and_an_abrupt_end_is_an_error_as_with_tokio_rustls() {
    let [mesh, buffered] = end_of_stream(true).await;
    assert_eq!(mesh, (b"hello".to_vec(), Ok(())), "close_notify then FIN: the data, then EOF");
    assert_eq!(mesh, buffered);
    let [mesh, buffered] = end_of_stream(false).await;
    assert_eq!(mesh.0, b"hello", "the data before the abrupt end");
    assert!(matches!(&mesh.1, Err((io::ErrorKind::UnexpectedEof, m)) if m.contains("close_notify")), "{mesh:?}");
    assert_eq!(mesh, buffered);
}

#[tokio::test]
async fn a_second_connection_resumes_the_session() {
    let (server, client) = configs(false);
    let (mut c, mut s) = mesh_pair(&server, &client).await;
    assert_eq!((c.handshake_kind(), s.handshake_kind()), (Some(HandshakeKind::Full), Some(HandshakeKind::Full)), "control");
    // The client takes the server's ticket when it reads.
    bounded("write", s.write_all(b"ticket")).await.unwrap();
    bounded("flush", s.flush()).await.unwrap();
    assert_eq!(read_exactly(&mut c, 6).await, b"ticket");
    let (mut c2, mut s2) = mesh_pair(&server, &client).await;
    assert_eq!((c2.handshake_kind(), s2.handshake_kind()), (Some(HandshakeKind::Resumed), Some(HandshakeKind::Resumed)));
    assert!(s2.peer_certificates().is_some_and(|chain| !chain.is_empty()), "a resumed session reports the client's chain");
    bounded("write", c2.write_all(b"resumed")).await.unwrap();
    bounded("flush", c2.flush()).await.unwrap();
    assert_eq!(read_exactly(&mut s2, 7).await, b"resumed");
}

/// Four rounds of: the buffered `peer` (the `side` of the handshake) updates
/// its keys and sends 20 000 bytes, `mesh` answers with 30 000.
async fn key_update_rounds<P, M>(peer: &mut P, refresh: impl Fn(&mut P), mesh: &mut M, side: &str)
where
    P: AsyncRead + AsyncWrite + Unpin,
    M: AsyncRead + AsyncWrite + Unpin,
{
    for round in 0..4u8 {
        refresh(peer);
        bounded("write", peer.write_all(&pattern(20_000, round))).await.unwrap();
        bounded("flush", peer.flush()).await.unwrap();
        assert!(read_exactly(mesh, 20_000).await == pattern(20_000, round), "round {round}: after the {side}'s KeyUpdate");
        bounded("write", mesh.write_all(&pattern(30_000, round))).await.unwrap();
        bounded("flush", mesh.flush()).await.unwrap();
        assert!(read_exactly(peer, 30_000).await == pattern(30_000, round), "round {round}: the answer");
    }
}

#[tokio::test]
async fn traffic_flows_across_key_updates_of_a_buffered_peer() {
    let (server, client) = configs(false);
    // A buffered client, a MeshServer.
    let (c, s) = pair().await;
    let (tls, mesh) = bounded("handshake", async {
        tokio::join!(tokio_rustls::TlsConnector::from(client.clone()).connect(name(), c), MeshServer::accept(s, server.clone()))
    })
    .await;
    let (mut tls, mut mesh) = (tls.unwrap(), mesh.unwrap());
    key_update_rounds(&mut tls, |t| t.get_mut().1.refresh_traffic_keys().unwrap(), &mut mesh, "client").await;
    // A buffered server, a MeshClient.
    let (c, s) = pair().await;
    let (mesh, tls) = bounded("handshake", async {
        tokio::join!(MeshClient::connect(c, client, name()), tokio_rustls::TlsAcceptor::from(server).accept(s))
    })
    .await;
    let (mut mesh, mut tls) = (mesh.unwrap(), tls.unwrap());
    key_update_rounds(&mut tls, |t| t.get_mut().1.refresh_traffic_keys().unwrap(), &mut mesh, "server").await;
    assert!(would_wait(&mut mesh).await);
    assert_eq!(mesh.held_capacity(), 0);
}

#[tokio::test]
async fn handshake_failures_read_as_with_tokio_rustls() {
    let (server, foreign) = configs(true);
    let (_, good) = configs(false);
    // Control: the buffered server refuses the foreign client the same way.
    let mut errors = Vec::new();
    for buffered in [false, true] {
        let (c, s) = pair().await;
        let connector = tokio_rustls::TlsConnector::from(foreign.clone());
        let client = tokio::spawn(async move {
            let mut tls = connector.connect(name(), c).await?;
            let mut buf = [0u8; 8];
            tls.read(&mut buf).await
        });
        let accepted = if buffered {
            bounded("accept", tokio_rustls::TlsAcceptor::from(server.clone()).accept(s)).await.map(drop)
        } else {
            bounded("accept", MeshServer::accept(s, server.clone())).await.map(drop)
        };
        let e = accepted.expect_err("a client certificate from another CA is refused");
        let client_saw = bounded("client", client).await.unwrap().expect_err("the client sees the refusal");
        errors.push((e.kind(), e.to_string(), client_saw.kind(), client_saw.to_string()));
    }
    assert_eq!(errors[0].0, io::ErrorKind::InvalidData, "{errors:?}");
    assert_eq!(errors[0], errors[1], "MeshServer and tokio-rustls fail alike (the client sees the alert)");
    // The server's certificate is not one the client allows: refused on the client side.
    let (other_server, _) = configs(false);
    let (c, s) = pair().await;
    let (connected, _) = bounded("handshake", async {
        tokio::join!(MeshClient::connect(c, good, name()), MeshServer::accept(s, other_server))
    })
    .await;
    let e = connected.err().expect("a server certificate from another CA is refused");
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    // A peer gone before the handshake's end.
    let (c, s) = pair().await;
    drop(c);
    let e = bounded("accept", MeshServer::accept(s, server)).await.err().expect("no handshake");
    assert_eq!((e.kind(), e.to_string()), (io::ErrorKind::UnexpectedEof, "tls handshake eof".to_string()));
}

/// A socket that counts its reads.
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

#[tokio::test]
async fn a_bulk_upload_costs_fewer_socket_reads_than_buffered_rustls() {
    let (server, client) = configs(false);
    let data = pattern(8 * 1024 * 1024, 9);
    let mut reads = Vec::new();
    for buffered in [true, false] {
        let (c, s) = pair().await;
        let (connector, sent) = (tokio_rustls::TlsConnector::from(client.clone()), data.clone());
        let sending = tokio::spawn(async move {
            let mut tls = connector.connect(name(), c).await.unwrap();
            tls.write_all(&sent).await.unwrap();
            tls.shutdown().await.unwrap();
            tls
        });
        let socket = CountReads { inner: s, reads: 0 };
        let mut got = Vec::new();
        let count = if buffered {
            let mut tls = bounded("accept", tokio_rustls::TlsAcceptor::from(server.clone()).accept(socket)).await.unwrap();
            bounded("upload", tls.read_to_end(&mut got)).await.unwrap();
            tls.get_ref().0.reads
        } else {
            let mut tls = bounded("accept", MeshServer::accept(socket, server.clone())).await.unwrap();
            bounded("upload", tls.read_to_end(&mut got)).await.unwrap();
            tls.io.reads
        };
        drop(bounded("sender", sending).await.unwrap());
        assert!(got == data, "intact");
        reads.push(count);
    }
    let [buffered, mesh] = [reads[0], reads[1]];
    assert!(mesh * 3 <= buffered, "{mesh} socket reads for MeshTls, {buffered} for buffered rustls (the control)");
}

#[tokio::test]
async fn thousands_of_tiny_records_arrive_whole_and_in_order() {
    let (server, client) = configs(false);
    let (c, s) = pair().await;
    let connector = tokio_rustls::TlsConnector::from(client);
    let sending = tokio::spawn(async move {
        let mut tls = connector.connect(name(), c).await.unwrap();
        // One record per byte: more records than one read handles states for.
        for i in 0..3000u32 {
            tls.write_all(&[(i % 251) as u8]).await.unwrap();
        }
        tls.shutdown().await.unwrap();
        tls
    });
    let mut mesh = bounded("accept", MeshServer::accept(s, server)).await.unwrap();
    let mut got = Vec::new();
    bounded("read", mesh.read_to_end(&mut got)).await.unwrap();
    drop(bounded("sender", sending).await.unwrap());
    assert!(got == pattern(3000, 0), "{} bytes of 3000, in order", got.len());
}
