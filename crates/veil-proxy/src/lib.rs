//! The Veil data plane: one proxy per pod that executes a [`veil_model::ProxyConfig`].
//!
//! A connection's whole path lives in a few files: [`inbound`] (accepted on 15006,
//! mode decided per port, identity checked by `tls`), [`outbound`] (accepted on 15001,
//! endpoint picked, mesh mTLS originated by `upstream`; HTTP Service ports are routed
//! per request by `outbound_http` with the `router` engine and pooled upstream
//! connections of `http_pool`), [`gateway`] (gateway listeners), and `copy` (where
//! bytes move). Every proxied connection leaves one
//! [`veil_model::ConnectionRecord`] (see `records`).
//!
//! The library is runtime-agnostic; [`run_blocking`] builds a small tokio runtime.
#![forbid(unsafe_code)]

mod admin;
mod config_stream;
mod copy;
mod error;
pub mod gateway;
mod gateway_certs;
mod gateway_tls;
mod http_pool;
pub mod inbound;
mod orig_dst;
pub mod outbound;
mod outbound_http;
mod proxy;
mod records;
mod router;
mod sniff;
mod tls;
mod upstream;

pub use config_stream::{watch_config, ConfigStreamSettings};
pub use error::ProxyError;
pub use orig_dst::original_dst;
pub use proxy::{LocalAddrs, Proxy, ProxySettings};
pub use sniff::{classify, FirstBytes};
pub use upstream::UpstreamError;

use std::future::Future;

/// Runs `future` to completion on a small multi-thread tokio runtime with two
/// workers (the data-plane size ztunnel uses), and returns its output.
///
/// Errors: [`ProxyError::Runtime`] when the runtime cannot be built (out of
/// threads or file descriptors).
pub fn run_blocking<F: Future>(future: F) -> Result<F::Output, ProxyError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("veil-proxy")
        .build()
        .map_err(ProxyError::Runtime)?;
    Ok(runtime.block_on(future))
}
