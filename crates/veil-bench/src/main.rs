//! The `veil-bench` command line: `run` (the whole benchmark, behind
//! `bench/run`), the server application (`serve`) and the load tools that
//! `run` starts inside the client pod.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use veil_bench::run::{Mode, RunOptions};
use veil_bench::BenchError;

#[derive(Parser)]
#[command(name = "veil-bench", about = "Veil's benchmark harness and load tools")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs every path and workload, prints the table, writes <date>.md and .json.
    Run {
        /// Shorter workloads (under 3 minutes).
        #[arg(long)]
        quick: bool,
        /// Just enough traffic that every figure is produced (CI); asserts no time.
        #[arg(long)]
        smoke: bool,
        /// The veil binary.
        #[arg(long, default_value = "target/release/veil")]
        veil: PathBuf,
        /// The benchmark mesh.
        #[arg(long, default_value = "examples/bench")]
        example: PathBuf,
        /// Directory for the results (not written when absent).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Only these paths (direct, veil, stunnel, haproxy, external), comma-separated.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Measure every path this many times (1–9), alternating the order of
        /// the meshes; the report gives each figure's median and range.
        #[arg(long, default_value_t = 1)]
        rounds: u32,
        /// What is special about this run (an A/B setting, another example),
        /// printed under the report's heading and kept in its JSON.
        #[arg(long)]
        note: Option<String>,
    },
    /// The server pod's application: HTTP 1 KiB responses and TCP echo.
    Serve {
        #[arg(long, default_value_t = 8080)]
        http: u16,
        #[arg(long, default_value_t = 9000)]
        echo: u16,
    },
    /// Fixed-rate HTTP/1.1 load; prints JSON.
    HttpLoad {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        #[arg(long, default_value_t = 4)]
        connections: u32,
        #[arg(long, default_value_t = 30_000)]
        duration_ms: u64,
    },
    /// TCP echo round trips on one connection; prints JSON.
    EchoRtt {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value_t = 10_000)]
        count: u32,
    },
    /// New connections per second (connect, 1 byte echo, close); prints JSON.
    ConnectRate {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value_t = 4)]
        workers: u32,
        #[arg(long, default_value_t = 10_000)]
        duration_ms: u64,
    },
    /// Opens and holds idle connections until stdin closes; prints `held N`, then JSON.
    Idle {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        count: u32,
        #[arg(long, default_value_t = 60)]
        max_hold_s: u64,
    },
    /// Waits until an HTTP GET succeeds.
    Probe {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value_t = 30)]
        timeout_s: u64,
    },
    /// Time and peak memory of every proxy config of the synthetic mesh; prints JSON.
    ControlPlane {
        /// 1 = 1000 Services, 2000 workloads, 200 DestinationRules, 100 PeerAuthentications.
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        #[arg(long, default_value_t = 3)]
        runs: u32,
    },
    /// This machine's cost of a thread wake-up, across CPUs and on one CPU
    /// (the floor under every proxy's per-message latency and CPU); prints JSON.
    Wakeups {
        /// Round trips per placement (each also capped at 2 s).
        #[arg(long, default_value_t = 20_000)]
        round_trips: u32,
    },
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, BenchError> {
    let mut b = if threads <= 1 { tokio::runtime::Builder::new_current_thread() } else { tokio::runtime::Builder::new_multi_thread() };
    if threads > 1 {
        b.worker_threads(threads);
    }
    b.enable_all().build().map_err(|e| BenchError::io("start", "tokio runtime", e))
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<(), BenchError> {
    let text = serde_json::to_string(v).map_err(|e| BenchError::Parse { program: "veil-bench".into(), detail: e.to_string() })?;
    println!("{text}");
    Ok(())
}

fn main_result(cli: Cli) -> Result<(), BenchError> {
    match cli.command {
        Cmd::Run { quick, smoke, veil, example, out, only, rounds, note } => {
            let mode = if smoke { Mode::Smoke } else if quick { Mode::Quick } else { Mode::Full };
            let report = veil_bench::run::run(RunOptions { mode, veil, example, out, only, rounds, note })?;
            println!("{}", veil_bench::report::markdown(&report));
            Ok(())
        }
        Cmd::Serve { http, echo } => runtime(2)?.block_on(veil_bench::serve::serve(http, echo)),
        Cmd::HttpLoad { target, rate, connections, duration_ms } => {
            let load = veil_bench::load::HttpLoad { target, rate, connections, duration: Duration::from_millis(duration_ms) };
            print_json(&runtime(1)?.block_on(veil_bench::load::run(load)))
        }
        Cmd::EchoRtt { target, count } => print_json(&runtime(1)?.block_on(veil_bench::tcp::echo_rtt(target, count))),
        Cmd::ConnectRate { target, workers, duration_ms } => {
            print_json(&runtime(1)?.block_on(veil_bench::tcp::connect_rate(target, workers, Duration::from_millis(duration_ms))))
        }
        Cmd::Idle { target, count, max_hold_s } => {
            let r = runtime(1)?.block_on(veil_bench::tcp::idle(target, count, Duration::from_secs(max_hold_s)));
            print_json(&r)?;
            // The stdin reader may still be blocked; do not wait for it.
            std::process::exit(0)
        }
        Cmd::Probe { target, timeout_s } => runtime(1)?.block_on(veil_bench::load::probe(target, Duration::from_secs(timeout_s))),
        Cmd::ControlPlane { scale, runs } => print_json(&veil_bench::control_plane::measure(scale, runs)?),
        Cmd::Wakeups { round_trips } => print_json(&veil_bench::wakeup::measure(round_trips, Duration::from_secs(2))),
    }
}

fn main() {
    if let Err(e) = main_result(Cli::parse()) {
        eprintln!("veil-bench: {e}");
        std::process::exit(1);
    }
}
