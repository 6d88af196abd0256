//! Fixed-rate (open-loop) HTTP/1.1 load: `rate` requests per second spread
//! evenly over `connections` keep-alive connections, each request sent at its
//! scheduled time whatever happened to the one before.
//!
//! Latency is taken from the scheduled send time when the connection was
//! still busy with the previous request at that time (the queueing a closed
//! loop would hide, "coordinated omission"), and from the actual send time
//! when only the client's timer woke late (the client's, not the path's, delay).

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

use crate::stats::{Histogram, Percentiles};
use crate::BenchError;

/// Parameters of one fixed-rate run.
#[derive(Debug, Clone)]
pub struct HttpLoad {
    pub target: SocketAddr,
    /// Requests per second, all connections together.
    pub rate: u32,
    pub connections: u32,
    pub duration: Duration,
}

/// What a fixed-rate run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HttpLoadResult {
    /// Responses received with status 200 and a full body.
    pub requests: u64,
    /// Requests that failed (connect, send, status, body).
    pub errors: u64,
    /// Response body bytes received.
    pub body_bytes: u64,
    /// Completed requests per second over the run.
    pub achieved_rps: f64,
    /// Latency percentiles, µs.
    pub latency_us: Percentiles,
}

type Sender = http1::SendRequest<Empty<Bytes>>;

async fn connect(target: SocketAddr) -> Result<Sender, BenchError> {
    let stream = TcpStream::connect(target).await.map_err(|e| BenchError::net(target, e))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.map_err(|e| BenchError::net(target, e))?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn one_request(sender: &mut Sender, target: SocketAddr) -> Result<u64, BenchError> {
    sender.ready().await.map_err(|e| BenchError::net(target, e))?;
    let req = http::Request::get("/")
        .header(http::header::HOST, target.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| BenchError::net(target, e))?;
    let resp = sender.send_request(req).await.map_err(|e| BenchError::net(target, e))?;
    if !resp.status().is_success() {
        return Err(BenchError::net(target, format!("status {}", resp.status())));
    }
    let body = resp.into_body().collect().await.map_err(|e| BenchError::net(target, e))?;
    Ok(body.to_bytes().len() as u64)
}

struct ConnResult {
    hist: Histogram,
    requests: u64,
    errors: u64,
    bytes: u64,
}

async fn run_connection(load: HttpLoad, index: u32, start: Instant) -> ConnResult {
    let mut out = ConnResult { hist: Histogram::new(), requests: 0, errors: 0, bytes: 0 };
    let per_conn_rate = f64::from(load.rate.max(1)) / f64::from(load.connections.max(1));
    let interval = Duration::from_secs_f64(1.0 / per_conn_rate);
    let offset = Duration::from_secs_f64(f64::from(index) / f64::from(load.rate.max(1)));
    let end = start + load.duration;
    let mut sender: Option<Sender> = connect(load.target).await.ok();
    let mut prev_finish = start;
    for k in 0u32.. {
        let scheduled = start + offset + interval * k;
        if scheduled >= end {
            break;
        }
        tokio::time::sleep_until(scheduled.into()).await;
        let sent = Instant::now();
        let clock_start = if prev_finish > scheduled { scheduled } else { sent };
        if sender.is_none() {
            sender = connect(load.target).await.ok();
        }
        let result = match sender.as_mut() {
            Some(s) => one_request(s, load.target).await,
            None => Err(BenchError::net(load.target, "not connected")),
        };
        prev_finish = Instant::now();
        match result {
            Ok(bytes) => {
                out.requests += 1;
                out.bytes += bytes;
                out.hist.record(prev_finish.saturating_duration_since(clock_start));
            }
            Err(_) => {
                out.errors += 1;
                sender = None;
            }
        }
    }
    out
}

/// Runs the load and returns the merged result of all connections.
pub async fn run(load: HttpLoad) -> HttpLoadResult {
    // Connections are made before the first scheduled request.
    let start = Instant::now() + Duration::from_millis(300);
    let tasks: Vec<_> =
        (0..load.connections.max(1)).map(|i| tokio::spawn(run_connection(load.clone(), i, start))).collect();
    let mut hist = Histogram::new();
    let mut result = HttpLoadResult::default();
    for t in tasks {
        if let Ok(c) = t.await {
            hist.merge(&c.hist);
            result.requests += c.requests;
            result.errors += c.errors;
            result.body_bytes += c.bytes;
        }
    }
    let elapsed = start.elapsed().as_secs_f64().max(1e-9);
    result.achieved_rps = result.requests as f64 / elapsed;
    result.latency_us = hist.percentiles();
    result
}

/// Sends GET requests until one succeeds or `timeout` passes; used to wait
/// for a path to carry traffic.
///
/// # Errors
/// [`BenchError::Net`] with the last failure when no request succeeded in time.
pub async fn probe(target: SocketAddr, timeout: Duration) -> Result<(), BenchError> {
    let deadline = Instant::now() + timeout;
    let mut last = BenchError::net(target, "no attempt");
    while Instant::now() < deadline {
        let attempt = async {
            let mut s = connect(target).await?;
            one_request(&mut s, target).await
        };
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => last = e,
            Err(_) => last = BenchError::net(target, "no answer in 2 s"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last)
}
