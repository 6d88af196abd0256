//! Tests of `copy` over real TCP connections on 127.0.0.1: client ⇄ (down |
//! pipe | up) ⇄ server, the pipe driven by the test so that its state can be
//! read between steps.

use super::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A connected pair of loopback sockets.
async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (connected, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (connected.unwrap(), accepted.unwrap().0)
}

struct Rig {
    client: TcpStream,
    down: TcpStream,
    up: TcpStream,
    server: TcpStream,
    pipe: Pipe,
}

impl Rig {
    async fn new() -> Rig {
        let (client, down) = pair().await;
        let (up, server) = pair().await;
        Rig { client, down, up, server, pipe: Pipe::default() }
    }
}

/// Polls the pipe for `time`; returns its result if it finished.
async fn drive(pipe: &mut Pipe, down: &mut TcpStream, up: &mut TcpStream, time: Duration) -> Option<io::Result<Transferred>> {
    tokio::time::timeout(time, poll_fn(|cx| pipe.poll_copy(cx, down, up))).await.ok()
}

#[tokio::test]
async fn request_and_response_leave_no_buffer_with_the_connection() {
    let Rig { mut client, mut down, mut up, mut server, mut pipe } = Rig::new().await;
    for round in 0..20u8 {
        let exchange = async {
            client.write_all(&[round; 700]).await?;
            let mut request = [0u8; 700];
            server.read_exact(&mut request).await?;
            server.write_all(&request).await?;
            let mut response = [0u8; 700];
            client.read_exact(&mut response).await?;
            Ok::<_, io::Error>(response)
        };
        let response = tokio::select! {
            done = drive(&mut pipe, &mut down, &mut up, Duration::from_secs(5)) => panic!("pipe ended: {done:?}"),
            response = exchange => response.unwrap(),
        };
        assert_eq!(response, [round; 700]);
        // Let the pipe see both readers run dry.
        assert!(drive(&mut pipe, &mut down, &mut up, Duration::from_millis(20)).await.is_none());
        assert_eq!(pipe.held_capacity(), 0, "round {round}");
        assert_eq!(pipe.read_sizes(), (INITIAL_READ, INITIAL_READ));
    }
}

#[tokio::test]
async fn a_blocked_writer_holds_bytes_until_they_are_written_then_releases_them() {
    let Rig { mut client, mut down, mut up, mut server, mut pipe } = Rig::new().await;
    let total = 16 * 1024 * 1024;
    let mut writer = tokio::spawn(async move {
        let chunk = vec![7u8; 64 * 1024];
        let mut sent = 0;
        while sent < total {
            client.write_all(&chunk).await?;
            sent += chunk.len();
        }
        Ok::<_, io::Error>(client)
    });
    // The server reads nothing yet: the kernel buffers fill, then the pipe holds.
    let deadline = Instant::now() + Duration::from_secs(5);
    while pipe.held_capacity() == 0 && Instant::now() < deadline {
        assert!(drive(&mut pipe, &mut down, &mut up, Duration::from_millis(20)).await.is_none());
    }
    assert!(pipe.held_capacity() > 0, "a blocked writer makes the connection hold bytes");
    assert!(pipe.read_sizes().0 > INITIAL_READ, "a bulk flow reads more at once");
    let mut reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0;
        while got < total {
            let n = server.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            got += n;
        }
        Ok::<_, io::Error>((server, got))
    });
    let mut client = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.is_none() && Instant::now() < deadline {
        assert!(drive(&mut pipe, &mut down, &mut up, Duration::from_millis(20)).await.is_none());
        if writer.is_finished() {
            client = Some((&mut writer).await.unwrap().unwrap());
        }
    }
    assert!(client.is_some(), "the writer finished");
    let mut received = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while received.is_none() && Instant::now() < deadline {
        assert!(drive(&mut pipe, &mut down, &mut up, Duration::from_millis(20)).await.is_none());
        if reader.is_finished() {
            received = Some((&mut reader).await.unwrap().unwrap().1);
        }
    }
    assert_eq!(received, Some(total));
    assert!(drive(&mut pipe, &mut down, &mut up, Duration::from_millis(20)).await.is_none());
    assert_eq!(pipe.held_capacity(), 0, "released once written and idle");
    assert_eq!(pipe.read_sizes(), (INITIAL_READ, INITIAL_READ), "reads start small again");
}

#[tokio::test]
async fn half_close_passes_on_and_the_other_direction_keeps_flowing() {
    let Rig { mut client, mut down, mut up, mut server, mut pipe } = Rig::new().await;
    let ends = async {
        client.write_all(b"question").await?;
        client.shutdown().await?;
        let mut request = Vec::new();
        server.read_to_end(&mut request).await?;
        // The client's FIN arrived; the server still answers, then closes.
        server.write_all(b"answer after EOF").await?;
        server.shutdown().await?;
        let mut response = Vec::new();
        client.read_to_end(&mut response).await?;
        Ok::<_, io::Error>((request, response))
    };
    let copy = async { drive(&mut pipe, &mut down, &mut up, Duration::from_secs(5)).await };
    let (copied, ends) = tokio::join!(copy, ends);
    let (request, response) = ends.unwrap();
    assert_eq!(request, b"question");
    assert_eq!(response, b"answer after EOF");
    let bytes = copied.expect("both directions ended").unwrap();
    assert_eq!(bytes, Transferred { sent: 8, received: 16 });
}
