//! Workload identity for the Veil mesh: SPIFFE IDs, certificates and trust bundles,
//! rustls configurations that verify SPIFFE identities, the CA (Istio's certificate API),
//! bootstrap tokens, and the certificate client with rotation.
//!
//! See `DESIGN.md`, section "Identity".
#![forbid(unsafe_code)]

mod ca;
mod cert;
mod client;
mod error;
mod export;
mod rotation;
mod service;
mod spiffe;
mod tls;
mod token;
mod verify;
mod x509;

pub use ca::{
    CertificateAuthority, CA_CERT_FILE, CA_KEY_FILE, CONTROL_NAMESPACE, CONTROL_SERVICE_ACCOUNT,
};
pub use cert::{TrustBundle, WorkloadCertificate};
pub use client::{request_certificate, CaAuth, CaClientConfig, WorkloadKey};
pub use error::IdentityError;
pub use export::{write_cert_files, CHAIN_FILE, KEY_FILE, ROOT_FILE};
pub use rotation::spawn_rotation;
pub use service::{CaService, SECRET_TTL};
pub use spiffe::{SpiffeId, TrustDomain};
pub use tls::{mesh_client_config, mesh_server_config, peer_spiffe_id, MESH_ALPN, STREAMS_ALPN};
pub use token::BootstrapTokens;
pub use verify::{verify_peer_chain, HandshakeSignatures, PeerRole, SpiffeClientVerifier, SpiffeServerVerifier};
