//! The control plane: it reads the mesh's resources, computes one
//! `ProxyConfig` per proxy, streams each to its proxy, and runs the CA that
//! signs workload certificates (Istio's certificate API).
//!
//! It never carries data-plane traffic. Everything it serves goes over one
//! TLS gRPC port (Istio's 15012): the CA service and the config stream.
#![forbid(unsafe_code)]

pub mod admin;
pub mod config_service;
pub mod server;
pub mod store;
pub mod watch;

pub use config_service::ConfigService;
pub use server::{ControlPlane, ControlPlaneError, ControlPlaneSettings};
pub use store::ConfigStore;
