//! `veil-sidecar`: the sidecar and gateway proxy alone, without the rest of
//! the command line. It runs exactly what `veil proxy` runs (the agent in
//! `agent.rs`: certificate, config stream, data plane), from the same
//! environment, but its binary links only the data plane and the identity
//! client: no control plane, YAML model, local runtime, audit or CLI parser.
//! A sidecar's resident memory is mostly the pages of its binary, so `veil
//! up` starts this one when it sits next to `veil` (Istio's split of
//! `istioctl` and the proxy image).
//!
//! `VEIL_LOG` takes `level` or `target=level,…` (e.g. `warn`,
//! `veil_proxy=debug,info`); other filter syntax falls back to `info`.
#![forbid(unsafe_code)]

#[path = "../agent.rs"]
mod agent;

use std::process::ExitCode;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The log filter of `VEIL_LOG`, without the regular expressions of
/// `EnvFilter` (compiling them costs the proxy memory it keeps).
fn log_filter() -> (Targets, Option<String>) {
    let default = Targets::new().with_default(LevelFilter::INFO);
    match std::env::var("VEIL_LOG") {
        Ok(text) => match text.parse::<Targets>() {
            Ok(targets) => (targets, None),
            Err(e) => (default, Some(format!("VEIL_LOG={text:?} is not `level` or `target=level,…` ({e}); logging at info"))),
        },
        Err(_) => (default, None),
    }
}

fn main() -> ExitCode {
    if let Some(arg) = std::env::args_os().nth(1) {
        eprintln!(
            "error: veil-sidecar takes no arguments (got {arg:?}); `veil up` starts it with its environment (see `veil proxy`)"
        );
        return ExitCode::from(2);
    }
    let (filter, warning) = log_filter();
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(agent::ansi_logs()))
        .with(filter)
        .init();
    if let Some(warning) = warning {
        tracing::warn!("{warning}");
    }
    match agent::main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
