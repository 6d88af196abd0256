//! Streams one after another on one mesh connection (`mesh_frames`), over
//! real TCP on 127.0.0.1 with mesh certificates from a test CA: client-first
//! and server-first streams, the stream's end that is not the connection's,
//! and what happens without the ALPN or when a connection is cut.

use super::tests::{bounded, configs, mesh_pair, pattern};
use super::*;
use crate::mesh_frames::{Role, STREAMS_ALPN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Server and client configs from a new CA, both with streams first.
pub(crate) fn streams_configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let (server, client) = configs(false);
    (accepting(&server), offering(&client))
}

fn offering(client: &Arc<ClientConfig>) -> Arc<ClientConfig> {
    let mut offering = (**client).clone();
    offering.alpn_protocols.insert(0, STREAMS_ALPN.to_vec());
    Arc::new(offering)
}

fn accepting(server: &Arc<ServerConfig>) -> Arc<ServerConfig> {
    let mut accepting = (**server).clone();
    accepting.alpn_protocols.insert(0, STREAMS_ALPN.to_vec());
    Arc::new(accepting)
}

async fn read_to_end<R: AsyncRead + Unpin>(reader: &mut R) -> io::Result<Vec<u8>> {
    let mut got = Vec::new();
    reader.read_to_end(&mut got).await.map(|_| got)
}

#[tokio::test]
async fn client_first_streams_follow_one_another_on_one_connection() {
    let (server, client) = streams_configs();
    let (mut c, mut s) = mesh_pair(&server, &client).await;
    assert!(c.start_streams(Role::Client) && s.start_streams(Role::Server));
    for round in 0..3u8 {
        // Sizes that split frames across records and reads.
        let request = pattern(150_000 + usize::from(round) * 7_001, round);
        let reply = pattern(90_000 - usize::from(round), round ^ 0x5a);
        let client_side = async {
            c.write_all(&request).await?;
            c.shutdown().await?;
            read_to_end(&mut c).await
        };
        let server_side = async {
            assert!(poll_fn(|cx| s.poll_open(cx)).await?, "OPEN");
            let got = read_to_end(&mut s).await?;
            s.write_all(&reply).await?;
            s.shutdown().await?;
            Ok::<_, io::Error>(got)
        };
        let (client_got, server_got) = bounded("a stream", async { tokio::join!(client_side, server_side) }).await;
        assert!(server_got.unwrap() == request, "round {round}: the request arrives whole");
        assert!(client_got.unwrap() == reply, "round {round}: the reply arrives whole");
        assert!(c.stream_finished() && s.stream_finished(), "round {round}: both sides may go on");
        c.next_stream();
        s.next_stream();
    }
    assert!(c.held_capacity() == 0 && s.held_capacity() == 0, "nothing held between streams");
}

#[tokio::test]
async fn a_server_first_stream_opens_when_the_client_reads() {
    let (server, client) = streams_configs();
    let (mut c, mut s) = mesh_pair(&server, &client).await;
    assert!(c.start_streams(Role::Client) && s.start_streams(Role::Server));
    let greeting = b"5.5.5-10.11.6-MariaDB greeting".to_vec();
    let client_side = async {
        let mut hello = vec![0u8; greeting.len()];
        c.read_exact(&mut hello).await?;
        c.shutdown().await?;
        let rest = read_to_end(&mut c).await?;
        Ok::<_, io::Error>((hello, rest))
    };
    let server_side = async {
        assert!(poll_fn(|cx| s.poll_open(cx)).await?, "the client's read sent OPEN");
        s.write_all(&greeting).await?;
        let got = read_to_end(&mut s).await?;
        s.shutdown().await?;
        Ok::<_, io::Error>(got)
    };
    let (client_got, server_got) = bounded("a server-first stream", async { tokio::join!(client_side, server_side) }).await;
    assert_eq!(client_got.unwrap(), (greeting, Vec::new()));
    assert_eq!(server_got.unwrap(), Vec::<u8>::new(), "the client sent nothing");
    assert!(c.stream_finished() && s.stream_finished());
}

#[tokio::test]
async fn a_client_that_leaves_between_streams_is_told_from_one_cut_within_a_stream() {
    let (server, client) = streams_configs();
    // Between streams: the server's wait for OPEN ends with `false`.
    let (c, mut s) = mesh_pair(&server, &client).await;
    assert!(s.start_streams(Role::Server));
    drop(c);
    assert!(!bounded("wait for OPEN", poll_fn(|cx| s.poll_open(cx))).await.unwrap());
    // Within a stream: the reader gets an error, not an end of stream.
    let (mut c, mut s) = mesh_pair(&server, &client).await;
    assert!(c.start_streams(Role::Client) && s.start_streams(Role::Server));
    c.write_all(b"half a request").await.unwrap();
    c.flush().await.unwrap();
    assert!(bounded("OPEN", poll_fn(|cx| s.poll_open(cx))).await.unwrap());
    let mut head = [0u8; 14];
    s.read_exact(&mut head).await.unwrap();
    drop(c);
    let err = bounded("read after the cut", read_to_end(&mut s)).await.expect_err("a cut is not an end");
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    assert!(!s.stream_finished());
}

#[tokio::test]
async fn unless_both_sides_offer_the_alpn_a_connection_carries_one_connection_as_before() {
    let (server, client) = configs(false);
    // A client that does not offer it (Istio's sidecars, ztunnel), a server
    // that does not accept it (a gateway's ISTIO_MUTUAL server).
    for (server, client, case) in [(accepting(&server), client.clone(), "istio client"), (server.clone(), offering(&client), "gateway server")] {
        let (mut c, mut s) = mesh_pair(&server, &client).await;
        assert_eq!(c.alpn_protocol(), Some(&b"istio"[..]), "{case}");
        assert!(!c.start_streams(Role::Client) && !s.start_streams(Role::Server), "{case}");
        c.write_all(b"ping").await.unwrap();
        c.shutdown().await.unwrap();
        assert_eq!(bounded("read", read_to_end(&mut s)).await.unwrap(), b"ping", "{case}: no frame headers on the wire");
        assert!(!s.stream_finished());
    }
    // Control: both offering it, they agree on it.
    let (c, _s) = mesh_pair(&accepting(&server), &offering(&client)).await;
    assert_eq!(c.alpn_protocol(), Some(STREAMS_ALPN));
}

#[tokio::test]
async fn the_next_open_may_arrive_with_the_last_end() {
    let (server, client) = streams_configs();
    let (mut c, mut s) = mesh_pair(&server, &client).await;
    assert!(c.start_streams(Role::Client) && s.start_streams(Role::Server));
    bounded("first stream", async {
        // The server answers and ends first; the client ends, then opens the next stream at once.
        c.write_all(b"first").await.unwrap();
        c.flush().await.unwrap();
        assert!(poll_fn(|cx| s.poll_open(cx)).await.unwrap());
        s.write_all(b"answer").await.unwrap();
        s.shutdown().await.unwrap();
        assert_eq!(read_to_end(&mut c).await.unwrap(), b"answer");
        c.shutdown().await.unwrap();
        assert!(c.stream_finished());
        c.next_stream();
        c.write_all(b"second").await.unwrap();
        c.flush().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        // END, OPEN and DATA are now on their way together.
        assert_eq!(read_to_end(&mut s).await.unwrap(), b"first");
    })
    .await;
    assert!(s.stream_finished(), "the next stream's OPEN, already received, does not spoil this one");
    s.next_stream();
    assert!(bounded("second OPEN", poll_fn(|cx| s.poll_open(cx))).await.unwrap());
    let mut second = [0u8; 6];
    bounded("second stream", s.read_exact(&mut second)).await.unwrap();
    assert_eq!(&second, b"second");
}
