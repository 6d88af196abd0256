//! Generated gRPC stubs for the two APIs between proxies and the control plane:
//! Istio's certificate API (`istio.v1.auth.IstioCertificateService`) and
//! Veil's config stream (`veil.config.v1.ProxyConfigService`).
//!
//! No logic lives here; `veil-identity` and `veil-control` implement the
//! servers, `veil-identity` and `veil-proxy` use the clients.
#![forbid(unsafe_code)]
#![allow(missing_docs, clippy::all)]

/// `istio.v1.auth`: the CA API.
pub mod ca {
    tonic::include_proto!("istio.v1.auth");
}

/// `veil.config.v1`: the config stream.
pub mod config {
    tonic::include_proto!("veil.config.v1");
}
