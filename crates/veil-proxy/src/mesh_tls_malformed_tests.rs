//! Malformed peers: every handshake `MeshServer` and `MeshClient` see from a
//! peer that sends damaged bytes ends, within a bound, in an error (never a
//! panic or a hang). The damage is applied to real flights of buffered
//! rustls peers (a ClientHello, a server's first flight): one flipped byte,
//! a cut, records re-split into small ones, garbage after valid records.
//! The undamaged flight is the control: it completes the handshake.

use super::tests::{bounded, configs, name, pair};
use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Deterministic pseudo-random numbers (a 64-bit LCG): the same cases every run.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n.max(1)
    }
}

/// How a flight is damaged.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// Unchanged (the control).
    None,
    /// One byte at this offset (modulo the flight's length) XOR 0x5a.
    Flip(usize),
    /// Only the first bytes, then the end of the stream.
    Cut(usize),
    /// Every record of the flight re-split into records of at most this many bytes of payload.
    Resplit(usize),
    /// This many garbage bytes after the flight.
    Trailing(usize),
}

/// The records of `flight`, each re-split into payloads of at most `max` bytes.
fn resplit(flight: &[u8], max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 5 <= flight.len() {
        let len = usize::from(u16::from_be_bytes([flight[at + 3], flight[at + 4]]));
        let end = (at + 5 + len).min(flight.len());
        for chunk in flight[at + 5..end].chunks(max.max(1)) {
            out.extend_from_slice(&flight[at..at + 3]);
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        at = end;
    }
    out
}

/// `at`, or the start of its record's header when `at` is one of the
/// header's two `legacy_record_version` bytes, which TLS 1.3 peers must
/// ignore (RFC 8446 §5.1): a flip there is no damage.
fn not_a_record_version(flight: &[u8], at: usize) -> usize {
    let mut start = 0;
    while start + 5 <= flight.len() {
        if at == start + 1 || at == start + 2 {
            return start;
        }
        start += 5 + usize::from(u16::from_be_bytes([flight[start + 3], flight[start + 4]]));
    }
    at
}

fn damaged(flight: &[u8], damage: Damage, rng: &mut Lcg) -> Vec<u8> {
    match damage {
        Damage::None => flight.to_vec(),
        Damage::Flip(at) => {
            let mut out = flight.to_vec();
            if let Some(b) = out.get_mut(not_a_record_version(flight, at % flight.len().max(1))) {
                *b ^= 0x5a;
            }
            out
        }
        Damage::Cut(len) => flight[..len.min(flight.len())].to_vec(),
        Damage::Resplit(max) => resplit(flight, max),
        Damage::Trailing(len) => {
            let mut out = flight.to_vec();
            out.extend((0..len).map(|_| rng.below(256) as u8));
            out
        }
    }
}

/// The cases run against each side: the control first.
fn cases(flight_len: usize, rng: &mut Lcg) -> Vec<Damage> {
    let mut cases = vec![Damage::None];
    for _ in 0..24 {
        cases.push(Damage::Flip(rng.below(flight_len)));
    }
    for _ in 0..8 {
        cases.push(Damage::Cut(rng.below(flight_len)));
    }
    cases.extend([1, 2, 3, 7, 100].map(Damage::Resplit));
    cases.extend([1, 5, 300, 20_000].map(Damage::Trailing));
    cases
}

/// A buffered rustls client's ClientHello.
fn client_hello(client: &Arc<ClientConfig>) -> Vec<u8> {
    let mut conn = rustls::ClientConnection::new(client.clone(), name()).unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    out
}

/// A buffered rustls server's first flight in answer to `hello`.
fn server_flight(server: &Arc<ServerConfig>, hello: &[u8]) -> Vec<u8> {
    let mut conn = rustls::ServerConnection::new(server.clone()).unwrap();
    conn.read_tls(&mut &hello[..]).unwrap();
    conn.process_new_packets().unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

#[tokio::test]
async fn a_server_refuses_damaged_client_flights_without_panicking() {
    let (server, client) = configs(false);
    let mut rng = Lcg(0x5eed);
    let hello = client_hello(&client);
    let mut failed = 0;
    let cases = cases(hello.len(), &mut rng);
    for (i, damage) in cases.iter().enumerate() {
        let bytes = damaged(&hello, *damage, &mut rng);
        let (mut c, s) = pair().await;
        let peer = tokio::spawn(async move {
            c.write_all(&bytes).await?;
            c.shutdown().await?;
            // Drain what the server answers until it closes.
            let mut sink = Vec::new();
            c.read_to_end(&mut sink).await.map(|_| ())
        });
        let accepted = bounded("accept of a damaged ClientHello", MeshServer::accept(s, server.clone())).await;
        let _ = bounded("peer", peer).await;
        match (i, accepted) {
            // The control: an intact ClientHello gets the server past its first flight,
            // and then it waits for a client Finished that never comes.
            (0, result) => {
                let e = result.err().expect("the peer sends no Finished: the handshake cannot complete");
                assert_eq!((e.kind(), e.to_string()), (io::ErrorKind::UnexpectedEof, "tls handshake eof".to_string()), "the control reached the end of the client's bytes");
            }
            (_, Ok(_)) => panic!("{damage:?}: a damaged ClientHello without a Finished completed a handshake"),
            (_, Err(e)) => {
                failed += 1;
                assert!(matches!(e.kind(), io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof), "{damage:?}: {e}");
            }
        }
    }
    assert_eq!(failed, cases.len() - 1);
}

#[tokio::test]
async fn a_client_refuses_damaged_server_flights_without_panicking() {
    let (server, client) = configs(false);
    let mut rng = Lcg(0xc1e7);
    let flight = server_flight(&server, &client_hello(&client));
    let cases = cases(flight.len(), &mut rng);
    let mut refused = 0;
    for damage in &cases {
        let (c, mut s) = pair().await;
        // The peer answers each ClientHello with a real server's flight for it, damaged.
        let server = server.clone();
        let damage = *damage;
        let mut peer_rng = Lcg(rng.below(1 << 30) as u64);
        let peer = tokio::spawn(async move {
            let mut hello = vec![0u8; 4096];
            let n = s.read(&mut hello).await?;
            let mut conn = rustls::ServerConnection::new(server).map_err(io::Error::other)?;
            conn.read_tls(&mut &hello[..n])?;
            conn.process_new_packets().map_err(io::Error::other)?;
            let mut flight = Vec::new();
            while conn.wants_write() {
                conn.write_tls(&mut flight)?;
            }
            s.write_all(&damaged(&flight, damage, &mut peer_rng)).await?;
            if !matches!(damage, Damage::None | Damage::Resplit(_)) {
                // A damaged length may leave the client waiting for more: the
                // end of the stream must end its wait (the callers' handshake
                // timeout bounds a peer that keeps the connection open).
                s.shutdown().await?;
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink).await;
                return Ok(());
            }
            // Serve the rest of an intact handshake through the buffered server.
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<_, io::Error>(());
                }
                conn.read_tls(&mut &buf[..n])?;
                if conn.process_new_packets().is_err() {
                    return Ok(());
                }
                let mut out = Vec::new();
                while conn.wants_write() {
                    conn.write_tls(&mut out)?;
                }
                s.write_all(&out).await?;
                if !conn.is_handshaking() {
                    s.shutdown().await?;
                }
            }
        });
        let connected = bounded("connect to a damaged server", MeshClient::connect(c, client.clone(), name())).await;
        match (damage, connected) {
            (Damage::None, result) => {
                let mut tls = result.expect("the control: an intact flight completes the handshake");
                let mut rest = Vec::new();
                let _ = bounded("read to the end", tls.read_to_end(&mut rest)).await;
            }
            // Records re-split keep a valid handshake; anything else must fail.
            (Damage::Resplit(_), _) => {}
            (damage, Ok(_)) => panic!("{damage:?}: a damaged server flight completed a handshake"),
            (damage, Err(e)) => {
                refused += 1;
                assert!(matches!(e.kind(), io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof), "{damage:?}: {e}");
            }
        }
        let _ = bounded("peer", peer).await;
    }
    // Flips, cuts and trailing garbage: 24 + 8 + 4 cases refused.
    assert_eq!(refused, 36);
}
