//! The certificate client: generates the workload key locally, sends a CSR to the CA over
//! TLS (Istio's `CreateCertificate`), and checks what comes back before using it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use veil_proto::ca::istio_certificate_service_client::IstioCertificateServiceClient;
use veil_proto::ca::IstioCertificateRequest;

use crate::cert::{parse_certs, TrustBundle, WorkloadCertificate};
use crate::error::IdentityError;
use crate::spiffe::SpiffeId;
use crate::verify::{verify_peer_chain, PeerRole};

/// Time allowed to open the connection to the CA.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for one `CreateCertificate` call.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A workload's ECDSA P-256 private key, generated in this process and never sent anywhere.
pub struct WorkloadKey {
    key: KeyPair,
}

impl WorkloadKey {
    /// Generates a fresh ECDSA P-256 key.
    ///
    /// # Errors
    /// [`IdentityError::Generate`] if the crypto library fails.
    pub fn generate() -> Result<Self, IdentityError> {
        Ok(Self {
            key: KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
        })
    }

    /// A PEM PKCS#10 CSR for `id` (empty subject, one URI SAN), signed with this key.
    ///
    /// # Errors
    /// [`IdentityError::Generate`] if the CSR cannot be encoded.
    pub fn csr_pem(&self, id: &SpiffeId) -> Result<String, IdentityError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(id.to_string().as_str().try_into()?)];
        Ok(params.serialize_request(&self.key)?.pem()?)
    }

    /// Pairs a PEM chain (leaf first) issued for this key with the key.
    ///
    /// # Errors
    /// [`IdentityError::Pem`] or [`IdentityError::KeyMismatch`] when the chain
    /// is not PEM or was issued for another key.
    pub fn certificate_from_pem(&self, chain_pem: &str) -> Result<WorkloadCertificate, IdentityError> {
        let chain = parse_certs(chain_pem, "certificate chain")?;
        WorkloadCertificate::from_der(chain, self.private_key())
    }

    fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }
}

impl fmt::Debug for WorkloadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WorkloadKey(ECDSA P-256, private)")
    }
}

/// How a certificate request proves the caller's identity.
#[derive(Clone)]
pub enum CaAuth {
    /// A one-time bootstrap token, sent as `authorization: Bearer <token>`.
    Token(String),
    /// The current, unexpired certificate, presented as the TLS client certificate (renewal).
    Certificate(Arc<WorkloadCertificate>),
}

impl fmt::Debug for CaAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Token(_) => f.write_str("CaAuth::Token(..)"),
            Self::Certificate(c) => write!(f, "CaAuth::Certificate({})", c.spiffe_id),
        }
    }
}

/// Where the CA is and how to authenticate it.
#[derive(Clone, Debug)]
pub struct CaClientConfig {
    /// gRPC address, e.g. `https://10.209.0.1:15012`.
    pub address: String,
    /// DNS name in the control plane's certificate, e.g. `istiod.istio-system.svc`.
    pub server_name: String,
    /// PEM root(s) the CA's certificate chains to; also the roots issued chains must reach.
    pub root_pem: String,
}

/// Requests a certificate for `id` valid for `ttl` (whole seconds; the CA may shorten it),
/// proving the identity with `auth`. The returned chain is checked: it must carry `id`,
/// match `key`, and chain to `cfg.root_pem`.
///
/// # Errors
/// [`IdentityError::CaUnreachable`] for connection/TLS failures, [`IdentityError::CaRefused`]
/// when the CA answers with an error status, [`IdentityError::BadIssuedCertificate`] when the
/// issued chain is not usable.
pub async fn request_certificate(
    cfg: &CaClientConfig,
    key: &WorkloadKey,
    id: &SpiffeId,
    auth: CaAuth,
    ttl: Duration,
) -> Result<WorkloadCertificate, IdentityError> {
    let unreachable = |reason: String| IdentityError::CaUnreachable {
        address: cfg.address.clone(),
        reason,
    };
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&cfg.root_pem))
        .domain_name(cfg.server_name.clone());
    if let CaAuth::Certificate(current) = &auth {
        tls = tls.identity(Identity::from_pem(current.chain_pem(), current.key_pem()));
    }
    let channel = Endpoint::from_shared(cfg.address.clone())
        .map_err(|e| unreachable(format!("invalid address: {e}")))?
        .tls_config(tls)
        .map_err(|e| unreachable(format!("TLS setup: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .connect()
        .await
        .map_err(|e| unreachable(error_chain(&e)))?;
    let mut request = tonic::Request::new(IstioCertificateRequest {
        csr: key.csr_pem(id)?,
        validity_duration: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
        metadata: None,
    });
    if let CaAuth::Token(token) = &auth {
        let value = MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
            IdentityError::CaRefused {
                code: "client".into(),
                message: "token is not valid header text".into(),
            }
        })?;
        request.metadata_mut().insert("authorization", value);
    }
    let response = IstioCertificateServiceClient::new(channel)
        .create_certificate(request)
        .await
        .map_err(|status| match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                unreachable(status.message().to_string())
            }
            code => IdentityError::CaRefused {
                code: format!("{code:?}"),
                message: status.message().to_string(),
            },
        })?;
    check_issued(cfg, key, id, &response.into_inner().cert_chain)
}

/// Validates the chain the CA returned before it is used.
fn check_issued(
    cfg: &CaClientConfig,
    key: &WorkloadKey,
    id: &SpiffeId,
    chain_pem: &[String],
) -> Result<WorkloadCertificate, IdentityError> {
    let bad = |reason: String| IdentityError::BadIssuedCertificate(reason);
    let chain = parse_certs(&chain_pem.join("\n"), "issued certificate chain")
        .map_err(|e| bad(e.to_string()))?;
    let cert =
        WorkloadCertificate::from_der(chain, key.private_key()).map_err(|e| bad(e.to_string()))?;
    if &cert.spiffe_id != id {
        return Err(bad(format!("it is for {}, not {id}", cert.spiffe_id)));
    }
    let bundle = TrustBundle::from_pem(&cfg.root_pem)?.with_trust_domain(id.trust_domain().clone());
    let (leaf, rest) = cert
        .chain
        .split_first()
        .ok_or_else(|| bad("empty chain".to_string()))?;
    verify_peer_chain(&bundle, leaf, rest, UnixTime::now(), PeerRole::Client)
        .map_err(|e| bad(e.to_string()))?;
    Ok(cert)
}

/// `error: cause: cause` for transport errors, whose top-level text is often just "transport error".
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    for _ in 0..8 {
        let Some(cause) = source else { break };
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
