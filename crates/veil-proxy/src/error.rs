//! The errors the proxy returns to whoever starts it.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the proxy could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A listener could not be bound.
    #[error("cannot bind {addr}: {source}; another process uses the port, or the proxy lacks the permission to bind it")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The workload certificate or trust bundle could not be turned into a rustls config.
    #[error("cannot build the mesh TLS configuration: {0}; check that the workload certificate was issued by the mesh CA and has not expired")]
    Identity(String),
    /// The connection records file could not be opened.
    #[error("cannot open connection records file {path}: {source}; check that its directory exists and is writable by the proxy user (uid 1337)")]
    Records {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The config stream could not deliver a first config.
    #[error("no config from the control plane at {address} after {attempts} attempts: {reason}; check that the control plane runs and that this workload's certificate is valid")]
    ConfigStream {
        address: String,
        attempts: u32,
        reason: String,
    },
    /// The tokio runtime could not be built.
    #[error("cannot start the proxy runtime: {0}; the process is out of threads or file descriptors")]
    Runtime(#[source] std::io::Error),
}
