//! The errors of the benchmark harness, each saying what to do about it.

use std::path::PathBuf;

/// Everything that can stop a benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot {action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("cannot start {program}: {source}; is it installed? (run scripts/install-deps.sh)")]
    Spawn { program: String, source: std::io::Error },
    #[error("{program} failed: {detail}")]
    Tool { program: String, detail: String },
    #[error("cannot parse the output of {program}: {detail}")]
    Parse { program: String, detail: String },
    #[error("the benchmark needs root (it creates network namespaces): run it with sudo")]
    NotRoot,
    #[error("another Veil mesh is running on this machine (bridge veil0 exists); stop it with `veil down` and run the benchmark again")]
    MeshRunning,
    #[error("another benchmark run holds {0}; wait for it to finish")]
    Busy(PathBuf),
    #[error("`veil up` did not get ready: {0}")]
    MeshNotReady(String),
    #[error("{what} did not get ready in {secs} s; see {log}")]
    NotReady { what: String, secs: u64, log: String },
    #[error("bad option: {0}")]
    Usage(String),
    #[error("network error talking to {addr}: {detail}")]
    Net { addr: String, detail: String },
    #[error("the run is incomplete: {0}")]
    Incomplete(String),
}

impl BenchError {
    /// An I/O error on `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> BenchError {
        BenchError::Io { action, path: path.into(), source }
    }

    /// A network error talking to `addr`.
    pub fn net(addr: impl std::fmt::Display, detail: impl std::fmt::Display) -> BenchError {
        BenchError::Net { addr: addr.to_string(), detail: detail.to_string() }
    }
}
