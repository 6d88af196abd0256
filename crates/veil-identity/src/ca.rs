//! The mesh CA: a self-signed ECDSA P-256 root kept in a state directory, signing workload
//! CSRs only for the identity the caller has proven.
//!
//! Certificate shape follows Istio's `security/pkg/pki/util/generate_cert.go`: empty
//! subject, one URI SAN (critical), EKU serverAuth + clientAuth, backdated 60 s.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use crate::cert::{TrustBundle, WorkloadCertificate};
use crate::error::IdentityError;
use crate::spiffe::{SpiffeId, TrustDomain};
use crate::x509;

/// File name of the root certificate in the state directory (mode 0644).
pub const CA_CERT_FILE: &str = "ca-cert.pem";
/// File name of the root private key in the state directory (mode 0600).
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// Lifetime of a new root: 10 years.
const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Leaf `notBefore` is this far in the past, for clock skew between hosts.
const BACKDATE: Duration = Duration::from_secs(60);
/// Namespace of the control plane's own identity.
pub const CONTROL_NAMESPACE: &str = "istio-system";
/// Service account of the control plane's own identity.
pub const CONTROL_SERVICE_ACCOUNT: &str = "veil-control";

/// A CA with a root certificate and key; signs workload and control-plane certificates.
pub struct CertificateAuthority {
    trust_domain: TrustDomain,
    issuer: Issuer<'static, KeyPair>,
    root_der: CertificateDer<'static>,
    root_pem: String,
    bundle: TrustBundle,
}

impl CertificateAuthority {
    /// Loads `ca-cert.pem` + `ca-key.pem` from `state_dir`, or creates a new root
    /// (ECDSA P-256, self-signed, 10 years, URI SAN `spiffe://<trust_domain>`) and writes
    /// them there (cert 0644, key 0600). The directory is created if missing.
    ///
    /// # Errors
    /// [`IdentityError::StateFile`] for I/O failures or a key without its certificate,
    /// [`IdentityError::TrustDomainMismatch`] if the stored root is for another trust domain,
    /// [`IdentityError::KeyMismatch`] if the stored key is not the root's.
    pub fn load_or_create(
        state_dir: &Path,
        trust_domain: TrustDomain,
    ) -> Result<Self, IdentityError> {
        fs::create_dir_all(state_dir).map_err(|e| state_err("create", state_dir, e))?;
        let cert_path = state_dir.join(CA_CERT_FILE);
        let key_path = state_dir.join(CA_KEY_FILE);
        if cert_path.exists() {
            return Self::load(state_dir, &cert_path, &key_path, trust_domain);
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, trust_domain.as_str());
        dn.push(DnType::CommonName, "Veil root CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.subject_alt_names = vec![uri_san(&format!("spiffe://{trust_domain}"))?];
        let now = SystemTime::now();
        params.not_before = OffsetDateTime::from(now - BACKDATE);
        params.not_after = OffsetDateTime::from(now + ROOT_LIFETIME);
        params.serial_number = Some(random_serial());
        let root = params.self_signed(&key)?;
        write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&cert_path, root.pem().as_bytes(), 0o644)?;
        tracing::info!(trust_domain = %trust_domain, dir = %state_dir.display(), "created a new mesh root CA");
        Self::from_parts(trust_domain, &root.pem(), key)
    }

    fn load(
        dir: &Path,
        cert_path: &Path,
        key_path: &Path,
        trust_domain: TrustDomain,
    ) -> Result<Self, IdentityError> {
        let cert_pem =
            fs::read_to_string(cert_path).map_err(|e| state_err("read", cert_path, e))?;
        let key_pem = fs::read_to_string(key_path).map_err(|e| state_err("read", key_path, e))?;
        if let Ok(meta) = fs::metadata(key_path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %key_path.display(), "CA key is readable by group or others; run chmod 600 on it");
            }
        }
        let key = KeyPair::from_pem(&key_pem).map_err(|e| IdentityError::Pem {
            what: "CA key",
            reason: e.to_string(),
        })?;
        let ca = Self::from_parts(trust_domain, &cert_pem, key)?;
        if let Some(found) = x509::root_trust_domain(&ca.root_der) {
            if found != ca.trust_domain {
                return Err(IdentityError::TrustDomainMismatch {
                    path: dir.to_path_buf(),
                    found: found.to_string(),
                    wanted: ca.trust_domain.to_string(),
                });
            }
        }
        tracing::info!(trust_domain = %ca.trust_domain, dir = %dir.display(), "loaded mesh root CA");
        Ok(ca)
    }

    fn from_parts(
        trust_domain: TrustDomain,
        root_pem: &str,
        key: KeyPair,
    ) -> Result<Self, IdentityError> {
        let bundle = TrustBundle::from_pem(root_pem)?.with_trust_domain(trust_domain.clone());
        let root_der = bundle.roots().first().cloned().ok_or(IdentityError::Pem {
            what: "CA certificate",
            reason: "no CERTIFICATE block found".to_string(),
        })?;
        let spki = x509_parser::parse_x509_certificate(root_der.as_ref())
            .map_err(|e| IdentityError::CertificateParse(e.to_string()))?
            .1
            .public_key()
            .subject_public_key
            .data
            .to_vec();
        if spki != key.public_key_raw() {
            return Err(IdentityError::KeyMismatch(
                "ca-key.pem is not the key of ca-cert.pem".to_string(),
            ));
        }
        let issuer = Issuer::from_ca_cert_der(&root_der, key)?;
        Ok(Self {
            trust_domain,
            issuer,
            root_pem: crate::cert::certs_to_pem(std::slice::from_ref(&root_der)),
            root_der,
            bundle,
        })
    }

    /// The roots workloads must trust (this CA's root, in its trust domain).
    pub fn trust_bundle(&self) -> TrustBundle {
        self.bundle.clone()
    }

    /// The root certificate as PEM.
    pub fn root_pem(&self) -> String {
        self.root_pem.clone()
    }

    /// The trust domain this CA issues identities in.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// Signs a PEM PKCS#10 CSR for `proven`, valid for `ttl` from now (backdated 60 s).
    /// Returns the PEM chain, leaf first, root last (Istio's `cert_chain`).
    ///
    /// # Errors
    /// [`IdentityError::CsrRefused`] if the CSR does not parse, its signature is bad, its URI
    /// SANs are not exactly `[proven]`, `proven` is outside this trust domain, or `ttl` is 0.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        proven: &SpiffeId,
        ttl: Duration,
    ) -> Result<Vec<String>, IdentityError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
            IdentityError::CsrRefused(format!(
                "cannot parse the CSR ({e}); send a PEM PKCS#10 request"
            ))
        })?;
        let uris: Vec<String> = csr
            .params
            .subject_alt_names
            .iter()
            .filter_map(|san| match san {
                SanType::URI(uri) => Some(uri.as_str().to_string()),
                _ => None,
            })
            .collect();
        if uris != [proven.to_string()] {
            return Err(IdentityError::CsrRefused(format!(
                "the CSR asks for URI SANs {uris:?} but the caller proved only {proven}; request exactly your own identity"
            )));
        }
        if proven.trust_domain() != &self.trust_domain {
            return Err(IdentityError::CsrRefused(format!(
                "{proven} is outside trust domain {}",
                self.trust_domain
            )));
        }
        if ttl.is_zero() {
            return Err(IdentityError::CsrRefused(
                "requested validity is 0 seconds".to_string(),
            ));
        }
        let now = SystemTime::now();
        let leaf = self.issue(
            &csr.public_key,
            vec![uri_san(&proven.to_string())?],
            now - BACKDATE,
            now + ttl,
        )?;
        Ok(vec![leaf.pem(), self.root_pem.clone()])
    }

    /// Issues the control plane's own serving certificate: SPIFFE ID
    /// `spiffe://<td>/ns/istio-system/sa/veil-control` plus `dns_names` as DNS SANs,
    /// valid for `ttl`. The key is generated here. Chain: leaf, root.
    ///
    /// # Errors
    /// [`IdentityError::Generate`] if a DNS name is not valid IA5 text.
    pub fn issue_server_certificate(
        &self,
        dns_names: &[String],
        ttl: Duration,
    ) -> Result<WorkloadCertificate, IdentityError> {
        let id = SpiffeId::new(
            &self.trust_domain,
            CONTROL_NAMESPACE,
            CONTROL_SERVICE_ACCOUNT,
        );
        let mut sans = dns_names
            .iter()
            .map(|name| Ok(SanType::DnsName(name.as_str().try_into()?)))
            .collect::<Result<Vec<_>, rcgen::Error>>()?;
        sans.push(uri_san(&id.to_string())?);
        let now = SystemTime::now();
        self.issue_with_new_key(sans, now - BACKDATE, now + ttl)
    }

    /// Issues a certificate for `id` with the given validity and a key generated here.
    /// For tests (expired or not-yet-valid certificates); production paths use [`Self::sign_csr`].
    ///
    /// # Errors
    /// [`IdentityError::Generate`] if signing fails.
    pub fn issue_for_test(
        &self,
        id: &SpiffeId,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<WorkloadCertificate, IdentityError> {
        self.issue_with_new_key(vec![uri_san(&id.to_string())?], not_before, not_after)
    }

    fn issue_with_new_key(
        &self,
        sans: Vec<SanType>,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<WorkloadCertificate, IdentityError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let leaf = self.issue(&key, sans, not_before, not_after)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        WorkloadCertificate::from_der(vec![leaf.der().clone(), self.root_der.clone()], key_der)
    }

    fn issue(
        &self,
        public_key: &impl PublicKeyData,
        sans: Vec<SanType>,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<rcgen::Certificate, IdentityError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = sans;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = OffsetDateTime::from(not_before);
        params.not_after = OffsetDateTime::from(not_after);
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        Ok(params.signed_by(public_key, &self.issuer)?)
    }
}

fn uri_san(uri: &str) -> Result<SanType, IdentityError> {
    Ok(SanType::URI(uri.try_into()?))
}

/// A positive 128-bit random serial number.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

fn state_err(action: &'static str, path: &Path, source: std::io::Error) -> IdentityError {
    IdentityError::StateFile {
        action,
        path: PathBuf::from(path),
        source,
    }
}

/// Writes `data` to `path` through a temporary file and rename, with `mode`.
pub(crate) fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), IdentityError> {
    let tmp = path.with_extension("pem.tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| state_err("write", &tmp, e))?;
    file.write_all(data)
        .and_then(|()| file.sync_all())
        .map_err(|e| state_err("write", &tmp, e))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
        .map_err(|e| state_err("write", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| state_err("write", path, e))
}
