//! What one path measured (the JSON of a run), and the figures the report
//! shows, each with its unit and which direction is better.

use serde::{Deserialize, Serialize};

use crate::load::HttpLoadResult;
use crate::tcp::{ConnectResult, EchoResult, IdleResult};

/// What a path is, for the ratios: `direct` is the floor, peers are compared with Veil.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathKind {
    Direct,
    Veil,
    Peer,
}

/// Resource figures of the path's proxies (all processes of each proxy).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Resources {
    /// Labels of the proxies, in the order of the per-proxy vectors.
    pub proxies: Vec<String>,
    /// CPU seconds of all proxies together per 1000 requests at the fixed rate
    /// (equals vCPU used at 1000 rps).
    pub cpu_s_per_1000_req: Option<f64>,
    /// The same during the max-throughput (wrk) run.
    pub cpu_s_per_1000_req_max: Option<f64>,
    /// CPU seconds of all proxies per 1000 new connections.
    pub cpu_s_per_1000_conn: Option<f64>,
    /// RSS per proxy after setup and one request, KiB.
    pub rss_idle_kib: Vec<u64>,
    /// Peak RSS per proxy during the fixed-rate run, KiB (sampled every 100 ms).
    pub rss_load_kib: Vec<u64>,
    /// RSS per proxy while the idle connections are held, KiB.
    pub rss_idle_conns_kib: Vec<u64>,
}

/// Everything one path measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PathResult {
    pub name: String,
    pub kind: PathKind,
    pub http: Option<HttpLoadResult>,
    /// wrk requests per second.
    pub wrk_rps: Option<f64>,
    pub echo: Option<EchoResult>,
    /// iperf3 received throughput, Gbit/s.
    pub iperf_gbps: Option<f64>,
    pub connect: Option<ConnectResult>,
    pub idle: Option<IdleResult>,
    pub resources: Option<Resources>,
    /// Phases that failed, with the reason.
    pub failures: Vec<String>,
}

impl PathResult {
    /// An empty result.
    pub fn new(name: &str, kind: PathKind) -> PathResult {
        PathResult {
            name: name.into(),
            kind,
            http: None,
            wrk_rps: None,
            echo: None,
            iperf_gbps: None,
            connect: None,
            idle: None,
            resources: None,
            failures: Vec::new(),
        }
    }
}

/// Which way a figure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Lower,
    Higher,
}

/// One row of the report.
#[derive(Debug, Clone, Copy)]
pub struct Figure {
    pub key: &'static str,
    pub label: &'static str,
    pub unit: &'static str,
    pub better: Better,
    /// Whether the figure is about the proxies (none on `direct`).
    pub proxy_only: bool,
    pub get: fn(&PathResult) -> Option<f64>,
}

fn max_mib(v: &[u64]) -> Option<f64> {
    v.iter().max().map(|k| *k as f64 / 1024.0)
}

fn res(p: &PathResult) -> Option<&Resources> {
    p.resources.as_ref()
}

fn idle_kib_per_conn(p: &PathResult) -> Option<f64> {
    let r = res(p)?;
    let held = p.idle.as_ref()?.held;
    if held == 0 || r.rss_idle_conns_kib.len() != r.rss_idle_kib.len() {
        return None;
    }
    let grown: i64 = r.rss_idle_conns_kib.iter().zip(&r.rss_idle_kib).map(|(a, b)| *a as i64 - *b as i64).sum();
    Some(grown as f64 / held as f64)
}

fn http_ok(p: &PathResult) -> Option<&HttpLoadResult> {
    p.http.as_ref().filter(|h| h.requests > 0)
}

/// Every figure of the report, in order.
pub const FIGURES: &[Figure] = &[
    Figure { key: "http_p50_us", label: "HTTP 1 KiB at fixed rate: p50", unit: "µs", better: Better::Lower, proxy_only: false, get: |p| http_ok(p).map(|h| h.latency_us.p50) },
    Figure { key: "http_p90_us", label: "HTTP 1 KiB at fixed rate: p90", unit: "µs", better: Better::Lower, proxy_only: false, get: |p| http_ok(p).map(|h| h.latency_us.p90) },
    Figure { key: "http_p99_us", label: "HTTP 1 KiB at fixed rate: p99", unit: "µs", better: Better::Lower, proxy_only: false, get: |p| http_ok(p).map(|h| h.latency_us.p99) },
    Figure { key: "http_p999_us", label: "HTTP 1 KiB at fixed rate: p99.9", unit: "µs", better: Better::Lower, proxy_only: false, get: |p| http_ok(p).map(|h| h.latency_us.p999) },
    Figure { key: "http_rps", label: "HTTP fixed rate achieved", unit: "req/s", better: Better::Higher, proxy_only: false, get: |p| http_ok(p).map(|h| h.achieved_rps) },
    Figure { key: "wrk_rps", label: "HTTP max throughput (wrk)", unit: "req/s", better: Better::Higher, proxy_only: false, get: |p| p.wrk_rps },
    Figure { key: "echo_p50_us", label: "TCP echo round trip: p50", unit: "µs", better: Better::Lower, proxy_only: false, get: |p| p.echo.as_ref().filter(|e| e.rtt_us.count > 0).map(|e| e.rtt_us.p50) },
    Figure { key: "echo_p99_us", label: "TCP echo round trip: p99", unit: "µs", better: Better::Lower, proxy_only: false, get: |p| p.echo.as_ref().filter(|e| e.rtt_us.count > 0).map(|e| e.rtt_us.p99) },
    Figure { key: "iperf_gbps", label: "Bulk TCP throughput (iperf3)", unit: "Gbit/s", better: Better::Higher, proxy_only: false, get: |p| p.iperf_gbps },
    Figure { key: "conn_per_s", label: "New connections per second", unit: "conn/s", better: Better::Higher, proxy_only: false, get: |p| p.connect.as_ref().filter(|c| c.connections > 0).map(|c| c.per_second) },
    Figure { key: "cpu_s_per_1000_req", label: "CPU per 1000 requests, both proxies (= vCPU at 1000 rps)", unit: "CPU s", better: Better::Lower, proxy_only: true, get: |p| res(p)?.cpu_s_per_1000_req },
    Figure { key: "cpu_s_per_1000_req_max", label: "CPU per 1000 requests at max throughput, both proxies", unit: "CPU s", better: Better::Lower, proxy_only: true, get: |p| res(p)?.cpu_s_per_1000_req_max },
    Figure { key: "cpu_s_per_1000_conn", label: "CPU per 1000 new connections, both proxies", unit: "CPU s", better: Better::Lower, proxy_only: true, get: |p| res(p)?.cpu_s_per_1000_conn },
    Figure { key: "rss_idle_mib", label: "RSS idle, largest proxy", unit: "MiB", better: Better::Lower, proxy_only: true, get: |p| max_mib(&res(p)?.rss_idle_kib) },
    Figure { key: "rss_load_mib", label: "RSS peak at fixed rate, largest proxy", unit: "MiB", better: Better::Lower, proxy_only: true, get: |p| max_mib(&res(p)?.rss_load_kib) },
    Figure { key: "rss_idle_conns_mib", label: "RSS with the idle connections held, largest proxy", unit: "MiB", better: Better::Lower, proxy_only: true, get: |p| max_mib(&res(p)?.rss_idle_conns_kib) },
    Figure { key: "kib_per_idle_conn", label: "Memory per idle connection, both proxies", unit: "KiB", better: Better::Lower, proxy_only: true, get: idle_kib_per_conn },
];

/// The figure with this key.
pub fn figure(key: &str) -> Option<&'static Figure> {
    FIGURES.iter().find(|f| f.key == key)
}
