//! The CA's gRPC service, Istio's `istio.v1.auth.IstioCertificateService/CreateCertificate`
//! (`security/pkg/server/ca/server.go`), with Veil's ways of proving an identity:
//! a one-time bootstrap token (`authorization: Bearer <token>`), or, to renew, the
//! caller's current mesh certificate presented as the TLS client certificate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::UnixTime;
use tonic::{Request, Response, Status};
use veil_proto::ca::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use veil_proto::ca::{IstioCertificateRequest, IstioCertificateResponse};

use crate::ca::CertificateAuthority;
use crate::spiffe::SpiffeId;
use crate::token::BootstrapTokens;
use crate::verify::{verify_peer_chain, PeerRole};
use crate::x509;

/// Default certificate lifetime, Istio's `SECRET_TTL`: 24 hours.
pub const SECRET_TTL: Duration = Duration::from_secs(24 * 3600);

/// Serves [`IstioCertificateService`] over a [`CertificateAuthority`].
pub struct CaService {
    ca: Arc<CertificateAuthority>,
    tokens: Arc<BootstrapTokens>,
    max_ttl: Duration,
}

impl CaService {
    /// A service signing with `ca`, accepting tokens from `tokens`, and issuing certificates
    /// of at most `max_ttl` (use [`SECRET_TTL`] by default).
    pub fn new(
        ca: Arc<CertificateAuthority>,
        tokens: Arc<BootstrapTokens>,
        max_ttl: Duration,
    ) -> Self {
        Self {
            ca,
            tokens,
            max_ttl,
        }
    }

    /// Wraps the service for `tonic::transport::Server::add_service`. For renewal by
    /// certificate, serve with `ServerTlsConfig::client_ca_root(root)` and
    /// `client_auth_optional(true)`.
    pub fn into_server(self) -> IstioCertificateServiceServer<CaService> {
        IstioCertificateServiceServer::new(self)
    }

    /// Lifetime for a requested `validity_duration` (seconds): `<= 0` means
    /// `min(SECRET_TTL, max_ttl)`; anything else is capped at `max_ttl`.
    fn lifetime(&self, requested_seconds: i64) -> Duration {
        match u64::try_from(requested_seconds) {
            Ok(secs) if secs > 0 => Duration::from_secs(secs).min(self.max_ttl),
            _ => SECRET_TTL.min(self.max_ttl),
        }
    }

    /// The identity the caller has proven, from a bootstrap token or its TLS client certificate.
    fn proven_identity(
        &self,
        request: &Request<IstioCertificateRequest>,
    ) -> Result<(SpiffeId, &'static str), Status> {
        if let Some(value) = request.metadata().get("authorization") {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .ok_or_else(|| {
                    Status::unauthenticated(
                        "authorization metadata must be `Bearer <bootstrap token>`",
                    )
                })?;
            return self.tokens.redeem(token).map(|id| (id, "bootstrap token")).ok_or_else(|| {
                Status::unauthenticated(
                    "bootstrap token unknown or already used; tokens are one-time: ask the control plane for a new one",
                )
            });
        }
        if let Some(certs) = request.peer_certs() {
            let (leaf, intermediates) = certs
                .split_first()
                .ok_or_else(|| Status::unauthenticated("TLS client certificate list is empty"))?;
            return verify_peer_chain(
                &self.ca.trust_bundle(),
                leaf,
                intermediates,
                UnixTime::now(),
                PeerRole::Client,
            )
            .map(|id| (id, "client certificate"))
            .map_err(|e| Status::unauthenticated(format!("client certificate refused: {e}")));
        }
        Err(Status::unauthenticated(
            "no identity proven: send `authorization: Bearer <bootstrap token>` metadata, \
             or connect over TLS with your current, unexpired mesh certificate to renew",
        ))
    }
}

fn peer(request: &Request<IstioCertificateRequest>) -> String {
    request
        .remote_addr()
        .as_ref()
        .map_or_else(|| "unknown".to_string(), SocketAddr::to_string)
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let peer = peer(&request);
        let (id, proof) = match self.proven_identity(&request) {
            Ok(found) => found,
            Err(status) => {
                tracing::warn!(%peer, reason = status.message(), "certificate request refused");
                return Err(status);
            }
        };
        let ttl = self.lifetime(request.get_ref().validity_duration);
        let chain = match self.ca.sign_csr(&request.get_ref().csr, &id, ttl) {
            Ok(chain) => chain,
            Err(e) => {
                tracing::warn!(%peer, identity = %id, proof, reason = %e, "certificate request refused");
                return Err(Status::permission_denied(e.to_string()));
            }
        };
        let not_after = x509::rfc3339(std::time::SystemTime::now() + ttl);
        tracing::info!(%peer, identity = %id, proof, ttl_s = ttl.as_secs(), not_after, "issued workload certificate");
        Ok(Response::new(IstioCertificateResponse {
            cert_chain: chain,
        }))
    }
}
