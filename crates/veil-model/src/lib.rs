//! The mesh model: pure functions from a snapshot of resources to one
//! [`ProxyConfig`] per proxy.
//!
//! Nothing here opens a socket or reads a file; `veil-control` feeds it
//! resources and ships its output, `veil-proxy` executes the output.
#![forbid(unsafe_code)]

pub mod config;
pub mod record;

pub use config::*;
pub use record::ConnectionRecord;
