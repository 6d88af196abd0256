//! Errors of the audit, each telling the operator what to do next.

use std::path::PathBuf;

/// Everything that can go wrong while capturing or analysing traffic.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Neither tcpdump nor dumpcap is installed.
    #[error("tcpdump not found (nor dumpcap); install the Debian package tcpdump")]
    CaptureToolMissing,
    /// The capture tool could not be spawned.
    #[error("cannot start {tool} on interface {interface}: {source}; run veil audit as root")]
    CaptureSpawn {
        tool: &'static str,
        interface: String,
        #[source]
        source: std::io::Error,
    },
    /// The capture tool exited before it started capturing.
    #[error("{tool} stopped before capturing on {interface}: {stderr}; check the interface exists (`ip link show {interface}`) and that you run as root")]
    CaptureFailed {
        tool: &'static str,
        interface: String,
        stderr: String,
    },
    /// The capture tool did not report that it was capturing in time.
    #[error("{tool} did not start capturing on {interface} within {seconds} s; check the machine is not overloaded and try again")]
    CaptureTimeout {
        tool: &'static str,
        interface: String,
        seconds: u64,
    },
    /// Signalling or waiting for the capture process failed.
    #[error("cannot stop capture process {pid}: {reason}; stop it by hand with `kill {pid}`")]
    CaptureStop { pid: u32, reason: String },
    /// The capture file could not be opened or read.
    #[error("cannot read capture file {path}: {source}; check the path and that the capture has finished")]
    PcapOpen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The capture file is neither pcap nor pcapng.
    #[error("capture file {path} is not a pcap or pcapng file: {reason}; record it with `tcpdump -w` or `veil audit`")]
    PcapFormat { path: PathBuf, reason: String },
    /// The capture's link type cannot be decoded.
    #[error("capture file {path} has link type {link}, which veil audit cannot decode; capture on an Ethernet interface (e.g. veil0) or on `any`")]
    UnsupportedLink { path: PathBuf, link: String },
    /// The connection-record directory could not be read.
    #[error("cannot read connection records in {path}: {source}; point veil audit at the directory where the proxies write *.jsonl records")]
    Records {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
