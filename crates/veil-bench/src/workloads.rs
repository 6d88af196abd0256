//! Runs every workload of one path from the client pod (the tools run inside
//! its network namespace) and reads the proxies' resources from `/proc`
//! around each phase. A failed phase is recorded and the next one runs.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::figures::{PathResult, Resources};
use crate::process::{in_netns, output};
use crate::procfs::{usage, PeakRss, Tracked, SAMPLE_EVERY};
use crate::BenchError;

/// Sizes of the workloads (see [`Settings::full`], `quick`, `smoke`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub http_rate: u32,
    pub http_connections: u32,
    pub http_duration: Duration,
    pub wrk_threads: u32,
    pub wrk_connections: u32,
    pub wrk_duration: Duration,
    pub echo_count: u32,
    pub iperf_duration: Duration,
    pub connect_workers: u32,
    pub connect_duration: Duration,
    pub idle_connections: u32,
    /// Pause between phases (lets sockets in TIME_WAIT and caches settle).
    pub pause: Duration,
    /// Wait after a path's proxies start and before its first request, so
    /// every proxy is past its start-up when its idle RSS is read (Veil's
    /// sidecars give back the pages start-up touched after 1 s without a
    /// config change; the peers' RSS does not move).
    pub settle: Duration,
    /// Round trips per placement when the run measures the machine's
    /// wake-up cost (`wakeup.rs`; each placement is also capped at 2 s).
    pub wakeup_round_trips: u32,
}

impl Settings {
    /// The workloads: 1000 rps over 4 connections for 30 s, wrk 2
    /// threads × 64 connections, 1000 idle connections.
    pub fn full() -> Settings {
        Settings {
            http_rate: 1000,
            http_connections: 4,
            http_duration: Duration::from_secs(30),
            wrk_threads: 2,
            wrk_connections: 64,
            wrk_duration: Duration::from_secs(10),
            echo_count: 10_000,
            iperf_duration: Duration::from_secs(10),
            connect_workers: 4,
            connect_duration: Duration::from_secs(10),
            idle_connections: 1000,
            pause: Duration::from_secs(1),
            settle: Duration::from_secs(2),
            wakeup_round_trips: 20_000,
        }
    }

    /// The same workloads, shorter (`--quick`, under 3 minutes for all paths).
    pub fn quick() -> Settings {
        Settings {
            http_duration: Duration::from_secs(10),
            wrk_duration: Duration::from_secs(4),
            echo_count: 3000,
            iperf_duration: Duration::from_secs(4),
            connect_duration: Duration::from_secs(4),
            pause: Duration::from_millis(500),
            ..Settings::full()
        }
    }

    /// Just enough traffic that every figure is produced (`--smoke`, for CI).
    pub fn smoke() -> Settings {
        Settings {
            http_rate: 200,
            http_duration: Duration::from_millis(700),
            wrk_connections: 8,
            wrk_duration: Duration::from_secs(1),
            echo_count: 100,
            iperf_duration: Duration::from_secs(1),
            connect_workers: 2,
            connect_duration: Duration::from_millis(500),
            idle_connections: 20,
            pause: Duration::from_millis(100),
            // Past a Veil sidecar's release of its start-up pages, so that idle RSS
            // is not read before it and the held connections' RSS after it.
            settle: Duration::from_millis(1500),
            wakeup_round_trips: 1000,
            ..Settings::full()
        }
    }
}

/// Where a path's load goes and which processes are its proxies.
#[derive(Debug, Clone)]
pub struct Path {
    pub client_netns: String,
    /// The address the tools dial (ports 8080 HTTP, 9000 echo, 5201 iperf3).
    pub target: IpAddr,
    pub proxies: Vec<Tracked>,
    /// The `veil-bench` binary (runs the load tools).
    pub bench_bin: PathBuf,
}

impl Path {
    fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.target, port)
    }

    fn tool(&self, sub: &str) -> Command {
        let mut c = in_netns(&self.client_netns, &self.bench_bin);
        c.arg(sub);
        c
    }

    fn roots(&self) -> Vec<u32> {
        self.proxies.iter().map(|p| p.pid).collect()
    }

    fn cpu(&self) -> f64 {
        self.proxies.iter().map(|p| usage(p.pid).cpu_s).sum()
    }

    fn rss(&self) -> Vec<u64> {
        self.proxies.iter().map(|p| usage(p.pid).rss_kib).collect()
    }
}

fn last_json<T: serde::de::DeserializeOwned>(program: &str, stdout: &[u8]) -> Result<T, BenchError> {
    let text = String::from_utf8_lossy(stdout);
    let line = text.lines().rev().find(|l| l.starts_with('{')).unwrap_or_default();
    serde_json::from_str(line).map_err(|e| BenchError::Parse { program: program.into(), detail: format!("{e}: {text}") })
}

fn secs_ms(d: Duration) -> String {
    d.as_millis().to_string()
}

/// Waits until an HTTP request through the path succeeds (≤ 30 s).
///
/// # Errors
/// [`BenchError::Tool`] when no request got through.
pub fn probe(path: &Path) -> Result<(), BenchError> {
    let mut c = path.tool("probe");
    c.arg("--target").arg(path.addr(8080).to_string()).arg("--timeout-s").arg("30");
    output(c, "veil-bench probe", Duration::from_secs(40)).map(|_| ())
}

/// Runs the fixed-rate HTTP load while sampling the proxies' RSS.
fn fixed_rate(path: &Path, s: &Settings, res: &mut Resources) -> Result<crate::load::HttpLoadResult, BenchError> {
    let mut c = path.tool("http-load");
    c.arg("--target").arg(path.addr(8080).to_string());
    c.arg("--rate").arg(s.http_rate.to_string()).arg("--connections").arg(s.http_connections.to_string());
    c.arg("--duration-ms").arg(secs_ms(s.http_duration));
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let cpu0 = path.cpu();
    let mut child = c.spawn().map_err(|e| BenchError::Spawn { program: "veil-bench http-load".into(), source: e })?;
    let mut peak = PeakRss::new(&path.roots());
    let deadline = Instant::now() + s.http_duration + Duration::from_secs(30);
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        peak.sample();
        std::thread::sleep(SAMPLE_EVERY);
    }
    let cpu = path.cpu() - cpu0;
    let _ = child.kill();
    let out = child.wait_with_output().map_err(|e| BenchError::Spawn { program: "veil-bench http-load".into(), source: e })?;
    let r: crate::load::HttpLoadResult = last_json("veil-bench http-load", &out.stdout)?;
    res.rss_load_kib = peak.peak_kib;
    if r.requests > 0 {
        res.cpu_s_per_1000_req = Some(cpu / (r.requests as f64 / 1000.0));
    }
    Ok(r)
}

/// Parses wrk's `N requests in …` and `Requests/sec: X`.
pub fn parse_wrk(text: &str) -> Option<(u64, f64)> {
    let requests = text.lines().find(|l| l.contains(" requests in "))?.split_whitespace().next()?.parse().ok()?;
    let rps = text.lines().find(|l| l.trim_start().starts_with("Requests/sec:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some((requests, rps))
}

fn wrk(path: &Path, s: &Settings, res: &mut Resources) -> Result<f64, BenchError> {
    let mut c = in_netns(&path.client_netns, "wrk");
    c.arg(format!("-t{}", s.wrk_threads)).arg(format!("-c{}", s.wrk_connections));
    c.arg(format!("-d{}s", s.wrk_duration.as_secs().max(1))).arg("--timeout").arg("5s");
    c.arg(format!("http://{}/", path.addr(8080)));
    let cpu0 = path.cpu();
    let out = output(c, "wrk", s.wrk_duration + Duration::from_secs(30))?;
    let cpu = path.cpu() - cpu0;
    let text = String::from_utf8_lossy(&out.stdout);
    let (requests, rps) = parse_wrk(&text).ok_or_else(|| BenchError::Parse { program: "wrk".into(), detail: text.to_string() })?;
    if text.contains("Non-2xx") || requests == 0 {
        return Err(BenchError::Tool { program: "wrk".into(), detail: format!("requests failed:\n{text}") });
    }
    res.cpu_s_per_1000_req_max = Some(cpu / (requests as f64 / 1000.0));
    Ok(rps)
}

fn iperf(path: &Path, s: &Settings) -> Result<f64, BenchError> {
    let mut c = in_netns(&path.client_netns, "iperf3");
    c.args(["--json", "--port", "5201", "--client"]).arg(path.target.to_string());
    c.arg("--time").arg(s.iperf_duration.as_secs().max(1).to_string());
    let out = output(c, "iperf3", s.iperf_duration + Duration::from_secs(30))?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| BenchError::Parse { program: "iperf3".into(), detail: e.to_string() })?;
    v.pointer("/end/sum_received/bits_per_second")
        .and_then(serde_json::Value::as_f64)
        .filter(|b| *b > 0.0)
        .map(|b| b / 1e9)
        .ok_or_else(|| BenchError::Parse { program: "iperf3".into(), detail: "no end.sum_received.bits_per_second".into() })
}

fn idle(path: &Path, s: &Settings, res: &mut Resources) -> Result<crate::tcp::IdleResult, BenchError> {
    let mut c = path.tool("idle");
    c.arg("--target").arg(path.addr(9000).to_string()).arg("--count").arg(s.idle_connections.to_string());
    c.arg("--max-hold-s").arg("60");
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = c.spawn().map_err(|e| BenchError::Spawn { program: "veil-bench idle".into(), source: e })?;
    let stdout = child.stdout.take().ok_or_else(|| BenchError::Tool { program: "veil-bench idle".into(), detail: "no stdout".into() })?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let held = rx.recv_timeout(Duration::from_secs(60));
    if held.as_ref().is_ok_and(|l| l.starts_with("held")) {
        std::thread::sleep(Duration::from_millis(500));
        res.rss_idle_conns_kib = path.rss();
    }
    drop(child.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) => last = l,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(_) => {}
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    last_json("veil-bench idle", last.as_bytes())
}

/// Runs every phase against `path` and fills `result`.
pub fn run(path: &Path, s: &Settings, result: &mut PathResult) {
    let mut res = Resources { proxies: path.proxies.iter().map(|p| p.label.clone()).collect(), ..Resources::default() };
    let mut fail = |phase: &str, e: BenchError| result.failures.push(format!("{phase}: {e}"));
    std::thread::sleep(s.settle);
    if let Err(e) = probe(path) {
        fail("probe", e);
        return;
    }
    std::thread::sleep(Duration::from_millis(300));
    res.rss_idle_kib = path.rss();
    let pause = || std::thread::sleep(s.pause);
    let http = fixed_rate(path, s, &mut res).map_err(|e| fail("fixed-rate HTTP", e)).ok();
    pause();
    let echo = {
        let mut c = path.tool("echo-rtt");
        c.arg("--target").arg(path.addr(9000).to_string()).arg("--count").arg(s.echo_count.to_string());
        output(c, "veil-bench echo-rtt", Duration::from_secs(120))
            .and_then(|o| last_json::<crate::tcp::EchoResult>("veil-bench echo-rtt", &o.stdout))
            .map_err(|e| fail("TCP echo", e))
            .ok()
    };
    pause();
    let wrk_rps = wrk(path, s, &mut res).map_err(|e| fail("wrk", e)).ok();
    pause();
    let iperf_gbps = iperf(path, s).map_err(|e| fail("iperf3", e)).ok();
    pause();
    let idle = idle(path, s, &mut res).map_err(|e| fail("idle connections", e)).ok();
    pause();
    let connect = {
        let mut c = path.tool("connect-rate");
        c.arg("--target").arg(path.addr(9000).to_string());
        c.arg("--workers").arg(s.connect_workers.to_string()).arg("--duration-ms").arg(secs_ms(s.connect_duration));
        let cpu0 = path.cpu();
        let r = output(c, "veil-bench connect-rate", s.connect_duration + Duration::from_secs(30))
            .and_then(|o| last_json::<crate::tcp::ConnectResult>("veil-bench connect-rate", &o.stdout));
        let cpu = path.cpu() - cpu0;
        if let Some(c) = r.as_ref().ok().filter(|c| c.connections > 0) {
            res.cpu_s_per_1000_conn = Some(cpu / (c.connections as f64 / 1000.0));
        }
        r.map_err(|e| fail("connection rate", e)).ok()
    };
    result.http = http;
    result.echo = echo;
    result.wrk_rps = wrk_rps;
    result.iperf_gbps = iperf_gbps;
    result.idle = idle;
    result.connect = connect;
    if !path.proxies.is_empty() {
        result.resources = Some(res);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_parsed() {
        let text = "Running 10s test @ http://10.0.0.2:8080/\n  2 threads and 64 connections\n  Thread Stats   Avg\n  123456 requests in 10.00s, 140.00MB read\nRequests/sec:  12345.60\nTransfer/sec:     14.00MB\n";
        assert_eq!(parse_wrk(text), Some((123_456, 12_345.6)));
        assert_eq!(parse_wrk("nothing"), None);
    }
}
