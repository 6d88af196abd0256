//! `veil-bench`: the benchmark harness behind `bench/run`. It runs the same
//! workloads through each path (direct, Veil sidecars, stunnel, HAProxy, an
//! external proxy pair) between the two pods of `examples/bench` and reports
//! every figure with its ratio to direct and to the best peer.
//!
//! The load tools (fixed-rate HTTP, TCP echo, connection rate, idle
//! connections) and the server application are subcommands of the same
//! binary, run inside the pods' network namespaces.
#![forbid(unsafe_code)]

pub mod control_plane;
pub mod error;
pub mod figures;
pub mod load;
pub mod mesh;
pub mod process;
pub mod procfs;
pub mod report;
pub mod rounds;
pub mod run;
pub mod serve;
pub mod stats;
pub mod targets;
pub mod tcp;
pub mod tunnel;
pub mod wakeup;
pub mod workloads;

pub use error::BenchError;
