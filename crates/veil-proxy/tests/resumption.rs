//! TLS session resumption between two sidecars, seen from both ends (needs
//! root): after the first connection to a Service (a full handshake, the
//! control), every later one resumes on the client sidecar and on the
//! server sidecar, each connection told apart by its address. The client
//! sidecar makes one mesh connection per connection here (streams off):
//! with streams, later connections reuse a kept one without any handshake
//! (`mesh_streams.rs`), and resumption serves the new ones they still open.

mod common;

use common::*;

const CONNECTIONS: usize = 6;

/// The `resumed=` value each end logged for the connection from `src`.
fn resumed(src: &str) -> (Option<bool>, Option<bool>) {
    let kind = |lines: Vec<String>| lines.first().map(|l| l.contains("resumed=true"));
    let client = log_lines("mesh mTLS connected").into_iter().filter(|l| l.contains(&format!("local={src} "))).collect();
    let server = log_lines("mesh mTLS accepted").into_iter().filter(|l| l.contains(&format!("peer={src} "))).collect();
    (kind(client), kind(server))
}

#[tokio::test]
async fn sessions_resume_on_both_ends_after_the_first_connection() {
    let mesh = Mesh::start_with(false).await;
    for n in 0..CONNECTIONS {
        let echoed = mesh.client_app.spawn(roundtrip((VIP_ECHO, 80).into(), b"again")).await.unwrap();
        assert_eq!(echoed.expect("echo through both sidecars"), b"again", "connection {n}");
    }
    let dst = mesh.b(ECHO_STRICT);
    let mut sources = Vec::new();
    for _ in 0..100 {
        sources = mesh.client.records().into_iter().filter(|r| r.direction == "outbound" && r.dst == dst).map(|r| r.src).collect();
        if sources.len() >= CONNECTIONS {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(sources.len(), CONNECTIONS, "one outbound record per connection");
    let kinds: Vec<(Option<bool>, Option<bool>)> = sources.iter().map(|src| resumed(&src.to_string())).collect();
    assert_eq!(kinds[0], (Some(false), Some(false)), "control: the first connection is a full handshake on both ends");
    assert!(kinds[1..].iter().all(|k| *k == (Some(true), Some(true))), "(client, server) resumed per connection: {kinds:?}");
}
