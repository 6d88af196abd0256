//! Certificate files for software that is not in the mesh but must speak
//! mesh mTLS (a third-party gateway, a VM service): Istio's `OUTPUT_CERTS`
//! layout — `key.pem`, `cert-chain.pem` (leaf first), `root-cert.pem` — each
//! written atomically with mode 0600, and rewritten on every rotation.

use std::path::Path;

use crate::ca::write_file;
use crate::{IdentityError, WorkloadCertificate};

/// File name of the private key (PKCS#8 PEM).
pub const KEY_FILE: &str = "key.pem";
/// File name of the certificate chain, leaf first.
pub const CHAIN_FILE: &str = "cert-chain.pem";
/// File name of the mesh root(s).
pub const ROOT_FILE: &str = "root-cert.pem";

/// Writes the three files into `dir` (created if missing, mode 0700 when new).
/// Readers never see a half-written file: each is written to a temporary
/// name and renamed.
///
/// # Errors
/// [`IdentityError::StateFile`] when `dir` or a file cannot be written.
pub fn write_cert_files(dir: &Path, cert: &WorkloadCertificate, root_pem: &str) -> Result<(), IdentityError> {
    if !dir.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|source| IdentityError::StateFile {
            action: "create",
            path: dir.to_path_buf(),
            source,
        })?;
    }
    write_file(&dir.join(KEY_FILE), cert.key_pem().as_bytes(), 0o600)?;
    write_file(&dir.join(CHAIN_FILE), cert.chain_pem().as_bytes(), 0o600)?;
    write_file(&dir.join(ROOT_FILE), root_pem.as_bytes(), 0o600)
}
