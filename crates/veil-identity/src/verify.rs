//! Peer verification for mesh mTLS: a chain check against the trust bundle
//! (rustls-webpki), then a SPIFFE ID check on the leaf (x509-parser).
//!
//! Two small verifier types, one job each: [`SpiffeClientVerifier`] (server side: who is
//! the client?) and [`SpiffeServerVerifier`] (client side: is this the server we expect?).
//! Like Istio, the DNS/SNI name is ignored; the SPIFFE ID is the identity.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use webpki::KeyUsage;

use crate::cert::TrustBundle;
use crate::error::IdentityError;
use crate::spiffe::SpiffeId;
use crate::x509;

/// Which side of a TLS connection the checked certificate belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerRole {
    /// The certificate must allow TLS server authentication (EKU serverAuth).
    Server,
    /// The certificate must allow TLS client authentication (EKU clientAuth).
    Client,
}

/// Checks `end_entity` + `intermediates` chain to a root of `bundle` at `now` for `role`,
/// and returns the leaf's SPIFFE ID, which must be in the bundle's trust domain.
///
/// # Errors
/// [`IdentityError::NotSignedByMeshCa`], [`IdentityError::Expired`],
/// [`IdentityError::NotYetValid`], [`IdentityError::InvalidCertificate`], the SPIFFE ID
/// errors, and [`IdentityError::ForeignTrustDomain`].
pub fn verify_peer_chain(
    bundle: &TrustBundle,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    role: PeerRole,
) -> Result<SpiffeId, IdentityError> {
    let cert = webpki::EndEntityCert::try_from(end_entity)
        .map_err(|e| IdentityError::CertificateParse(e.to_string()))?;
    let algs = HandshakeSignatures::default().0.all;
    let usage = match role {
        PeerRole::Server => KeyUsage::server_auth(),
        PeerRole::Client => KeyUsage::client_auth(),
    };
    cert.verify_for_usage(
        algs,
        bundle.anchors(),
        intermediates,
        now,
        usage,
        None,
        None,
    )
    .map_err(webpki_reason)?;
    let id = x509::spiffe_id_of(end_entity)?;
    if id.trust_domain() != bundle.trust_domain() {
        return Err(IdentityError::ForeignTrustDomain {
            presented: id.to_string(),
            expected: bundle.trust_domain().to_string(),
        });
    }
    Ok(id)
}

fn unix_to_system(t: UnixTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(t.as_secs())
}

/// Maps a webpki failure to the reason an operator needs.
fn webpki_reason(err: webpki::Error) -> IdentityError {
    match err {
        webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey => {
            IdentityError::NotSignedByMeshCa
        }
        webpki::Error::CertExpired { time, not_after } => IdentityError::Expired {
            not_after: x509::rfc3339(unix_to_system(not_after)),
            now: x509::rfc3339(unix_to_system(time)),
        },
        webpki::Error::CertNotValidYet { time, not_before } => IdentityError::NotYetValid {
            not_before: x509::rfc3339(unix_to_system(not_before)),
            now: x509::rfc3339(unix_to_system(time)),
        },
        other => IdentityError::InvalidCertificate(other.to_string()),
    }
}

/// A refusal carried inside a rustls error. rustls formats the certificate error with
/// `Debug`, so `Debug` here prints the operator message.
struct Refusal(IdentityError);

impl std::fmt::Debug for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Refusal {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

fn refuse(side: &'static str, err: IdentityError) -> rustls::Error {
    tracing::warn!(peer = side, reason = %err, "mesh mTLS peer refused");
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Refusal(err)))))
}

/// The handshake-signature half of a rustls verifier: checks the peer's
/// TLS 1.2/1.3 `CertificateVerify` with aws-lc-rs's algorithms. Every verifier
/// in the mesh (SPIFFE client/server, origination) delegates to this one type.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeSignatures(WebPkiSupportedAlgorithms);

/// Built once: `default_provider()` allocates, and verifiers run on every handshake.
static ALGORITHMS: LazyLock<WebPkiSupportedAlgorithms> =
    LazyLock::new(|| rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms);

impl Default for HandshakeSignatures {
    fn default() -> Self {
        Self(*ALGORITHMS)
    }
}

impl HandshakeSignatures {
    /// The algorithms, for chain checks (`verify_server_cert_signed_by_trust_anchor`).
    pub fn algorithms(&self) -> &WebPkiSupportedAlgorithms {
        &self.0
    }

    /// Checks a TLS 1.2 handshake signature. Errors: the rustls signature errors.
    pub fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    /// Checks a TLS 1.3 handshake signature. Errors: the rustls signature errors.
    pub fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    /// The signature schemes offered to the peer.
    pub fn schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// Server-side verifier: requires a client certificate that chains to the bundle and
/// carries exactly one SPIFFE ID of the bundle's trust domain.
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    bundle: TrustBundle,
    signatures: HandshakeSignatures,
}

impl SpiffeClientVerifier {
    /// A verifier for `bundle` using the aws-lc-rs signature algorithms.
    pub fn new(bundle: TrustBundle) -> Self {
        Self {
            bundle,
            signatures: HandshakeSignatures::default(),
        }
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        verify_peer_chain(
            &self.bundle,
            end_entity,
            intermediates,
            now,
            PeerRole::Client,
        )
        .map(|_| ClientCertVerified::assertion())
        .map_err(|e| refuse("client", e))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.schemes()
    }
}

/// Client-side verifier: the server's chain must lead to the bundle, and its SPIFFE ID
/// must be one of `allowed` (empty = any ID of the bundle's trust domain).
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    bundle: TrustBundle,
    allowed: Vec<SpiffeId>,
    signatures: HandshakeSignatures,
}

impl SpiffeServerVerifier {
    /// A verifier accepting servers of `bundle` whose ID is in `allowed`.
    pub fn new(bundle: TrustBundle, allowed: Vec<SpiffeId>) -> Self {
        Self {
            bundle,
            allowed,
            signatures: HandshakeSignatures::default(),
        }
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<SpiffeId, IdentityError> {
        let id = verify_peer_chain(
            &self.bundle,
            end_entity,
            intermediates,
            now,
            PeerRole::Server,
        )?;
        if self.allowed.is_empty() || self.allowed.contains(&id) {
            return Ok(id);
        }
        let expected: Vec<String> = self.allowed.iter().map(ToString::to_string).collect();
        Err(IdentityError::UnexpectedIdentity {
            presented: id.to_string(),
            expected: expected.join(", "),
        })
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, intermediates, now)
            .map(|_| ServerCertVerified::assertion())
            .map_err(|e| refuse("server", e))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.schemes()
    }
}
