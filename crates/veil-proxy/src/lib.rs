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
//! The library is runtime-agnostic. A proxy process runs the data path on a
//! [`data_plane_runtime`] (one thread) and the rest on a [`SideRuntime`]
//! (a second thread), see [`Proxy::run_with`].
#![forbid(unsafe_code)]

mod admin;
mod client_hello;
mod config_stream;
mod copy;
mod early_close;
mod error;
pub mod gateway;
mod gateway_certs;
mod gateway_tls;
mod http_pool;
pub mod inbound;
mod mesh_frames;
mod mesh_tls;
mod orig_dst;
pub mod outbound;
mod outbound_entries;
mod outbound_http;
mod proxy;
mod records;
mod router;
mod sniff;
mod stream_pool;
mod tls;
mod upstream;

pub use config_stream::{watch_config, ConfigStreamSettings};
pub use error::ProxyError;
pub use orig_dst::original_dst;
pub use proxy::{LocalAddrs, Proxy, ProxySettings};
pub use sniff::{classify, FirstBytes};
pub use upstream::UpstreamError;

use std::future::Future;
use tokio::runtime::{Builder, Handle, Runtime};

/// The data path's runtime: current-thread, driven by the thread that calls
/// `block_on`. One thread per proxy, as in a sidecar the proxy shares the
/// pod's CPU with its application: no work stealing, no cross-thread wakeups,
/// and no worker stacks (ztunnel runs its data plane on 1–2 workers).
///
/// Errors: [`ProxyError::Runtime`] when the runtime cannot be built (out of
/// file descriptors).
pub fn data_plane_runtime() -> Result<Runtime, ProxyError> {
    Builder::new_current_thread().enable_all().build().map_err(ProxyError::Runtime)
}

/// Runs `future` to completion on a [`data_plane_runtime`] and returns its
/// output.
///
/// Errors: [`ProxyError::Runtime`] when the runtime cannot be built.
pub fn run_blocking<F: Future>(future: F) -> Result<F::Output, ProxyError> {
    Ok(data_plane_runtime()?.block_on(future))
}

/// A small current-thread runtime on a thread of its own, for everything off
/// the data path (certificates, config stream, admin, records): see
/// [`Proxy::run_with`]. It stops when dropped.
pub struct SideRuntime {
    handle: Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl SideRuntime {
    /// Starts the runtime on a new thread named `name`.
    ///
    /// Errors: [`ProxyError::Runtime`] when the runtime or the thread cannot
    /// be created.
    pub fn start(name: &str) -> Result<SideRuntime, ProxyError> {
        let runtime = Builder::new_current_thread().enable_all().build().map_err(ProxyError::Runtime)?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let _ = runtime.block_on(stopped);
            })
            .map_err(ProxyError::Runtime)?;
        Ok(SideRuntime { handle, stop: Some(stop) })
    }

    /// Where to spawn work onto this runtime.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for SideRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Helpers shared by the unit tests of several modules.
#[cfg(test)]
mod test_support;
