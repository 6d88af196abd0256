//! TCP workloads against the echo server: round-trip latency on one
//! connection, new connections per second, and many idle connections held
//! open (for the proxies' memory per connection).

use serde::{Deserialize, Serialize};
use std::io::BufRead;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::stats::{Histogram, Percentiles};
use crate::BenchError;

/// Bytes of each echo round trip.
pub const ECHO_BYTES: usize = 64;
/// Longest any single connect or round trip may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// Round-trip latency of `count` sequential echoes, µs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EchoResult {
    pub errors: u64,
    pub rtt_us: Percentiles,
}

/// New connections per second; each one connects, echoes one byte and closes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectResult {
    pub connections: u64,
    pub errors: u64,
    pub per_second: f64,
}

/// Connections opened (each echoed once) and held.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IdleResult {
    pub held: u64,
    pub errors: u64,
}

async fn connect(target: SocketAddr) -> Result<TcpStream, BenchError> {
    let s = tokio::time::timeout(STEP_TIMEOUT, TcpStream::connect(target))
        .await
        .map_err(|_| BenchError::net(target, "connect timed out"))?
        .map_err(|e| BenchError::net(target, e))?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

async fn echo_once(s: &mut TcpStream, msg: &[u8], buf: &mut [u8], target: SocketAddr) -> Result<(), BenchError> {
    let step = async {
        s.write_all(msg).await?;
        s.read_exact(buf).await.map(|_| ())
    };
    tokio::time::timeout(STEP_TIMEOUT, step)
        .await
        .map_err(|_| BenchError::net(target, "echo timed out"))?
        .map_err(|e| BenchError::net(target, e))
}

/// `count` round trips of [`ECHO_BYTES`] on one connection (after 10 unmeasured).
pub async fn echo_rtt(target: SocketAddr, count: u32) -> EchoResult {
    let mut out = EchoResult::default();
    let mut hist = Histogram::new();
    let msg = [b'e'; ECHO_BYTES];
    let mut buf = [0u8; ECHO_BYTES];
    let Ok(mut s) = connect(target).await else {
        out.errors = 1;
        return out;
    };
    for i in 0..count.saturating_add(10) {
        let t = Instant::now();
        if echo_once(&mut s, &msg, &mut buf, target).await.is_err() || buf != msg {
            out.errors += 1;
            break;
        }
        if i >= 10 {
            hist.record(t.elapsed());
        }
    }
    out.rtt_us = hist.percentiles();
    out
}

async fn one_connection(target: SocketAddr) -> Result<(), BenchError> {
    let mut s = connect(target).await?;
    let mut b = [0u8; 1];
    echo_once(&mut s, b"c", &mut b, target).await
}

/// Opens connections as fast as `workers` concurrent loops can for `duration`.
pub async fn connect_rate(target: SocketAddr, workers: u32, duration: Duration) -> ConnectResult {
    let start = Instant::now();
    let end = start + duration;
    let tasks: Vec<_> = (0..workers.max(1))
        .map(|_| {
            tokio::spawn(async move {
                let (mut ok, mut err) = (0u64, 0u64);
                while Instant::now() < end {
                    match one_connection(target).await {
                        Ok(()) => ok += 1,
                        Err(_) => {
                            err += 1;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                (ok, err)
            })
        })
        .collect();
    let mut out = ConnectResult::default();
    for t in tasks {
        if let Ok((ok, err)) = t.await {
            out.connections += ok;
            out.errors += err;
        }
    }
    out.per_second = out.connections as f64 / start.elapsed().as_secs_f64().max(1e-9);
    out
}

/// Opens `count` connections (50 at a time), echoes once on each, prints
/// `held N` on stdout, and holds them until stdin closes or `max_hold` passes.
pub async fn idle(target: SocketAddr, count: u32, max_hold: Duration) -> IdleResult {
    let mut held = Vec::new();
    let mut out = IdleResult::default();
    let mut pending = tokio::task::JoinSet::new();
    let mut next = 0u32;
    while next < count || !pending.is_empty() {
        while next < count && pending.len() < 50 {
            pending.spawn(async move {
                let mut s = connect(target).await?;
                let mut b = [0u8; 1];
                echo_once(&mut s, b"i", &mut b, target).await.map(|_| s)
            });
            next += 1;
        }
        match pending.join_next().await {
            Some(Ok(Ok(s))) => held.push(s),
            Some(_) => out.errors += 1,
            None => break,
        }
    }
    out.held = held.len() as u64;
    println!("held {}", out.held);
    let stdin_closed = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
    });
    let _ = tokio::time::timeout(max_hold, stdin_closed).await;
    drop(held);
    out
}
