//! rustls configurations for mesh mTLS between proxies (TLS 1.3, mutual, SPIFFE identities)
//! and reading the peer's SPIFFE ID after a handshake.
//!
//! ALPN values follow Istio (`pilot/pkg/networking/util`: `ALPNInMeshWithMxc`, `ALPNInMeshH2`, ...).

use std::sync::Arc;

use rustls_pki_types::CertificateDer;

use crate::cert::{TrustBundle, WorkloadCertificate};
use crate::error::IdentityError;
use crate::spiffe::SpiffeId;
use crate::verify::{SpiffeClientVerifier, SpiffeServerVerifier};
use crate::x509;

/// ALPN protocols a mesh server accepts, in Istio's order.
pub const MESH_ALPN: &[&[u8]] = &[
    b"istio",
    b"istio-peer-exchange",
    b"istio-h2",
    b"istio-http/1.1",
    b"istio-http/1.0",
];

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Server config for inbound mesh mTLS: TLS 1.3 only, presents `cert`, requires a client
/// certificate that chains to `bundle` with one SPIFFE ID of its trust domain
/// ([`SpiffeClientVerifier`]); ALPN = [`MESH_ALPN`].
///
/// # Errors
/// [`IdentityError::Tls`] if rustls refuses the certificate or key.
pub fn mesh_server_config(
    cert: &WorkloadCertificate,
    bundle: &TrustBundle,
) -> Result<Arc<rustls::ServerConfig>, IdentityError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(SpiffeClientVerifier::new(bundle.clone())))
        .with_single_cert(cert.chain.clone(), cert.key())?;
    config.alpn_protocols = MESH_ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Client config for outbound mesh mTLS: TLS 1.3 only, ALPN `istio`, presents `cert`,
/// and accepts only servers chaining to `bundle` whose SPIFFE ID is in `allowed`
/// (empty = any ID of the bundle's trust domain) ([`SpiffeServerVerifier`]). The SNI/DNS
/// name is not checked. Set `alpn_protocols` on a copy for `istio-h2` etc.
///
/// # Errors
/// [`IdentityError::Tls`] if rustls refuses the certificate or key.
pub fn mesh_client_config(
    cert: &WorkloadCertificate,
    bundle: &TrustBundle,
    allowed: &[SpiffeId],
) -> Result<Arc<rustls::ClientConfig>, IdentityError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(
            bundle.clone(),
            allowed.to_vec(),
        )))
        .with_client_auth_cert(cert.chain.clone(), cert.key())?;
    config.alpn_protocols = vec![b"istio".to_vec()];
    Ok(Arc::new(config))
}

/// The SPIFFE ID of a peer from its certificates as rustls reports them
/// (`peer_certificates()`, leaf first). Only parses: the chain was verified in the handshake.
///
/// # Errors
/// [`IdentityError::NoCertificate`] for an empty list; [`IdentityError::NoSpiffeId`],
/// [`IdentityError::MultipleSpiffeIds`] or [`IdentityError::InvalidSpiffeId`] for the leaf.
pub fn peer_spiffe_id(certs: &[CertificateDer<'_>]) -> Result<SpiffeId, IdentityError> {
    let leaf = certs.first().ok_or(IdentityError::NoCertificate)?;
    x509::spiffe_id_of(leaf)
}
