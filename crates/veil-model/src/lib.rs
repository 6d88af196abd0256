//! The mesh model: pure functions from a snapshot of resources to one
//! [`ProxyConfig`] per proxy.
//!
//! Nothing here opens a socket or reads a file; `veil-control` feeds it
//! resources and ships its output, `veil-proxy` executes the output.
#![forbid(unsafe_code)]

pub mod analyze;
pub mod authn;
pub mod auto_passthrough;
pub mod build;
pub mod client_tls;
pub mod config;
mod config_entries;
mod config_gateway;
mod config_routes;
pub mod credentials;
pub mod dr;
pub mod egress_gateway;
pub mod entry_names;
pub mod from_api;
pub mod gateway_rules;
pub mod legacy;
pub mod mesh_config;
pub mod mesh_routes;
pub mod record;
pub mod registry;
pub mod routes;
pub mod service_entry;

pub use build::{MeshInput, MeshSettings};
pub use config::*;
pub use record::ConnectionRecord;
pub use registry::{Pod, Registry, Service};
