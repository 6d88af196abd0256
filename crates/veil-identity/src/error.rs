//! The one error type of `veil-identity`: every message names the cause and what an
//! operator can do about it.

use std::path::PathBuf;

/// Errors from SPIFFE parsing, certificate handling, peer verification, the CA and the
/// certificate client.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A trust domain string is not a valid SPIFFE trust domain.
    #[error("invalid trust domain {value:?}: {reason}; use lowercase letters, digits, '.', '-' and '_' (e.g. \"cluster.local\")")]
    InvalidTrustDomain {
        /// The rejected input.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A SPIFFE ID string does not have the form `spiffe://<td>/ns/<ns>/sa/<sa>`.
    #[error("invalid SPIFFE ID {value:?}: {reason}; expected spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>")]
    InvalidSpiffeId {
        /// The rejected input.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// PEM input could not be read.
    #[error("cannot read {what} PEM: {reason}; supply PEM blocks (-----BEGIN ...-----)")]
    Pem {
        /// Which input (certificate chain, private key, trust bundle, CSR).
        what: &'static str,
        /// The parser's message.
        reason: String,
    },
    /// A certificate could not be parsed as X.509.
    #[error("cannot parse certificate: {0}; the PEM/DER data is not a valid X.509 certificate")]
    CertificateParse(String),
    /// The private key does not belong to the leaf certificate.
    #[error("private key does not match the leaf certificate: {0}; supply the key the certificate was issued for")]
    KeyMismatch(String),
    /// The peer sent no certificate.
    #[error(
        "peer presented no certificate; mesh mTLS requires a workload certificate from the mesh CA"
    )]
    NoCertificate,
    /// The peer's chain does not lead to a root of the trust bundle.
    #[error("certificate not signed by the mesh CA; give the peer a certificate from this mesh's CA or add its root to the trust bundle")]
    NotSignedByMeshCa,
    /// The peer's certificate is past its `notAfter`.
    #[error("certificate expired at {not_after} (now {now}); the peer must renew its certificate (check its rotation and its clock)")]
    Expired {
        /// RFC 3339 end of validity.
        not_after: String,
        /// RFC 3339 verification time.
        now: String,
    },
    /// The peer's certificate is before its `notBefore`.
    #[error(
        "certificate not valid before {not_before} (now {now}); check the clocks of both hosts"
    )]
    NotYetValid {
        /// RFC 3339 start of validity.
        not_before: String,
        /// RFC 3339 verification time.
        now: String,
    },
    /// The chain is invalid for another reason (bad signature, wrong key usage, ...).
    #[error("certificate rejected: {0}; re-issue it from the mesh CA")]
    InvalidCertificate(String),
    /// The leaf carries no SPIFFE URI SAN.
    #[error("certificate carries no SPIFFE ID (URI SAN spiffe://...); it is not a mesh workload certificate")]
    NoSpiffeId,
    /// The leaf carries more than one URI SAN.
    #[error("certificate carries {count} URI SANs; a mesh certificate has exactly one SPIFFE ID")]
    MultipleSpiffeIds {
        /// Number of URI SANs found.
        count: usize,
    },
    /// The peer's SPIFFE ID belongs to another trust domain.
    #[error("peer presented {presented}, which is outside trust domain {expected}; federation is not configured")]
    ForeignTrustDomain {
        /// The SPIFFE ID the peer presented.
        presented: String,
        /// The trust domain of the bundle.
        expected: String,
    },
    /// The server's SPIFFE ID is not one the destination may have.
    #[error("server presented {presented}; expected one of [{expected}]; check the destination's service account or the allowed identities")]
    UnexpectedIdentity {
        /// The SPIFFE ID the server presented.
        presented: String,
        /// Comma-separated allowed SPIFFE IDs.
        expected: String,
    },
    /// rustls refused the configuration.
    #[error("cannot build TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// A file of the CA state could not be read or written.
    #[error("cannot {action} {path}: {source}; check permissions, or delete the state directory to make a new CA")]
    StateFile {
        /// What was attempted ("read", "write", "create").
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The stored CA does not serve the requested trust domain.
    #[error("CA in {path} is for trust domain {found}, not {wanted}; use a separate state directory per trust domain")]
    TrustDomainMismatch {
        /// The state directory.
        path: PathBuf,
        /// Trust domain in the stored root.
        found: String,
        /// Trust domain requested.
        wanted: String,
    },
    /// Certificate or key generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A CSR was malformed or asked for something the caller has not proven.
    #[error("CSR refused: {0}")]
    CsrRefused(String),
    /// The CA could not be reached or the connection failed.
    #[error("cannot reach the CA at {address}: {reason}; check the address, that the control plane runs, and its root certificate")]
    CaUnreachable {
        /// The CA address.
        address: String,
        /// The transport error.
        reason: String,
    },
    /// The CA answered with an error status.
    #[error("the CA refused the request ({code}): {message}")]
    CaRefused {
        /// The gRPC status code name.
        code: String,
        /// The CA's message.
        message: String,
    },
    /// The CA returned a certificate that is not the one requested.
    #[error("the CA returned an unusable certificate: {0}")]
    BadIssuedCertificate(String),
}
