//! Workload certificates (leaf-first chain + private key) and trust bundles (the mesh's
//! roots), with PEM in and out.

use std::fmt;
use std::time::SystemTime;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, TrustAnchor};

use crate::error::IdentityError;
use crate::spiffe::{SpiffeId, TrustDomain};
use crate::x509;

/// A workload's certificate chain (leaf first) and private key.
///
/// `Debug` never prints the key.
pub struct WorkloadCertificate {
    /// The SPIFFE ID in the leaf's URI SAN.
    pub spiffe_id: SpiffeId,
    /// DER certificates, leaf first, then intermediates and (optionally) the root.
    pub chain: Vec<CertificateDer<'static>>,
    /// Start of the leaf's validity.
    pub not_before: SystemTime,
    /// End of the leaf's validity.
    pub not_after: SystemTime,
    key: PrivateKeyDer<'static>,
}

impl WorkloadCertificate {
    /// Reads a PEM chain (leaf first) and its PEM private key (PKCS#8, SEC1 or PKCS#1).
    ///
    /// # Errors
    /// [`IdentityError::Pem`] for unreadable PEM, [`IdentityError::NoSpiffeId`] (and
    /// friends) if the leaf has no single SPIFFE ID, [`IdentityError::KeyMismatch`] if the
    /// key is not the leaf's.
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> Result<Self, IdentityError> {
        let chain = parse_certs(chain_pem, "certificate chain")?;
        let key =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| IdentityError::Pem {
                what: "private key",
                reason: e.to_string(),
            })?;
        Self::from_der(chain, key)
    }

    /// Builds from DER parts, checking the key matches the leaf.
    ///
    /// # Errors
    /// As [`WorkloadCertificate::from_pem`].
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, IdentityError> {
        let leaf = chain.first().ok_or(IdentityError::Pem {
            what: "certificate chain",
            reason: "no CERTIFICATE block found".to_string(),
        })?;
        let spiffe_id = x509::spiffe_id_of(leaf)?;
        let (not_before, not_after) = x509::validity_of(leaf)?;
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let signing_key = provider
            .key_provider
            .load_private_key(key.clone_key())
            .map_err(|e| IdentityError::KeyMismatch(e.to_string()))?;
        rustls::sign::CertifiedKey::new(chain.clone(), signing_key)
            .keys_match()
            .map_err(|e| IdentityError::KeyMismatch(e.to_string()))?;
        Ok(Self {
            spiffe_id,
            chain,
            not_before,
            not_after,
            key,
        })
    }

    /// The private key (DER).
    pub fn key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }

    /// The chain as PEM, leaf first.
    pub fn chain_pem(&self) -> String {
        certs_to_pem(&self.chain)
    }

    /// The private key as PEM (same encoding as it was loaded in, PKCS#8 for generated keys).
    pub fn key_pem(&self) -> String {
        let tag = match &self.key {
            PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
            PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
            _ => "PRIVATE KEY",
        };
        pem::encode(&pem::Pem::new(tag, self.key.secret_der()))
    }

    /// Time left until `not_after` (zero once expired).
    pub fn remaining(&self) -> std::time::Duration {
        self.not_after
            .duration_since(SystemTime::now())
            .unwrap_or_default()
    }
}

impl Clone for WorkloadCertificate {
    fn clone(&self) -> Self {
        Self {
            spiffe_id: self.spiffe_id.clone(),
            chain: self.chain.clone(),
            not_before: self.not_before,
            not_after: self.not_after,
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for WorkloadCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadCertificate")
            .field("spiffe_id", &self.spiffe_id)
            .field("chain_len", &self.chain.len())
            .field("not_before", &x509::rfc3339(self.not_before))
            .field("not_after", &x509::rfc3339(self.not_after))
            .finish_non_exhaustive()
    }
}

/// The roots a mesh trusts, and the trust domain whose SPIFFE IDs they vouch for.
///
/// Several roots may be present during root rotation.
#[derive(Clone)]
pub struct TrustBundle {
    roots: Vec<CertificateDer<'static>>,
    anchors: Vec<TrustAnchor<'static>>,
    trust_domain: TrustDomain,
}

impl TrustBundle {
    /// Reads one or more PEM root certificates. The trust domain is taken from the first
    /// root that carries a URI SAN `spiffe://<td>` (Veil's roots do), else `cluster.local`;
    /// override it with [`TrustBundle::with_trust_domain`].
    ///
    /// # Errors
    /// [`IdentityError::Pem`] if no certificate is found, [`IdentityError::CertificateParse`]
    /// if one is not a usable trust anchor.
    pub fn from_pem(pem: &str) -> Result<Self, IdentityError> {
        let roots = parse_certs(pem, "trust bundle")?;
        if roots.is_empty() {
            return Err(IdentityError::Pem {
                what: "trust bundle",
                reason: "no CERTIFICATE block found".to_string(),
            });
        }
        Self::from_der(roots)
    }

    /// Builds from DER roots; see [`TrustBundle::from_pem`].
    ///
    /// # Errors
    /// [`IdentityError::CertificateParse`] if a root is not a usable trust anchor.
    pub fn from_der(roots: Vec<CertificateDer<'static>>) -> Result<Self, IdentityError> {
        let anchors = roots
            .iter()
            .map(|der| {
                webpki::anchor_from_trusted_cert(der)
                    .map(|a| a.to_owned())
                    .map_err(|e| {
                        IdentityError::CertificateParse(format!("root is not a trust anchor: {e}"))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let trust_domain = roots
            .iter()
            .find_map(x509::root_trust_domain)
            .unwrap_or_default();
        Ok(Self {
            roots,
            anchors,
            trust_domain,
        })
    }

    /// Sets the trust domain whose SPIFFE IDs this bundle accepts.
    pub fn with_trust_domain(mut self, trust_domain: TrustDomain) -> Self {
        self.trust_domain = trust_domain;
        self
    }

    /// The trust domain whose SPIFFE IDs this bundle accepts.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The roots as PEM.
    pub fn to_pem(&self) -> String {
        certs_to_pem(&self.roots)
    }

    /// The roots (DER).
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    pub(crate) fn anchors(&self) -> &[TrustAnchor<'static>] {
        &self.anchors
    }
}

impl fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustBundle")
            .field("roots", &self.roots.len())
            .field("trust_domain", &self.trust_domain)
            .finish()
    }
}

pub(crate) fn parse_certs(
    pem: &str,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| IdentityError::Pem {
            what,
            reason: e.to_string(),
        })
}

pub(crate) fn certs_to_pem(certs: &[CertificateDer<'_>]) -> String {
    let blocks: Vec<pem::Pem> = certs
        .iter()
        .map(|c| pem::Pem::new("CERTIFICATE", c.as_ref()))
        .collect();
    pem::encode_many(&blocks)
}
