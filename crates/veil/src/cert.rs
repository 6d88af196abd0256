//! `veil cert export`: certificate files for software outside the mesh
//! (seed 000: a third-party gateway that must speak mesh mTLS).
//!
//! This is an operator command: it signs with the mesh CA in the state
//! directory (root only), for the identity the operator names.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::time::Duration;
use veil_identity::{CertificateAuthority, SpiffeId, TrustDomain, WorkloadCertificate, WorkloadKey};

fn issue(ca: &CertificateAuthority, id: &SpiffeId, ttl: Duration) -> Result<WorkloadCertificate> {
    let key = WorkloadKey::generate()?;
    let chain = ca.sign_csr(&key.csr_pem(id)?, id, ttl)?;
    key.certificate_from_pem(&chain.concat()).context("the CA returned an unusable certificate")
}

/// Writes `key.pem`, `cert-chain.pem`, `root-cert.pem` (0600) for
/// `identity` (`<namespace>/<service-account>`) into `dir`; with `watch`,
/// keeps rewriting them at half-life until Ctrl-C.
pub fn export(state_dir: &Path, identity: &str, dir: &Path, ttl: Duration, watch: bool) -> Result<()> {
    let Some((ns, sa)) = identity.split_once('/') else {
        bail!("--identity {identity:?}: expected <namespace>/<service-account>, e.g. istio-system/enroute");
    };
    let ca_dir = state_dir.join("ca");
    if !ca_dir.join(veil_identity::CA_CERT_FILE).exists() {
        bail!("no mesh CA in {}; start the mesh once with `veil up DIR` (or pass --state-dir)", ca_dir.display());
    }
    let ca = CertificateAuthority::load_or_create(&ca_dir, TrustDomain::default())?;
    let id = SpiffeId::try_new(ca.trust_domain(), ns, sa)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    loop {
        let cert = issue(&ca, &id, ttl)?;
        veil_identity::write_cert_files(dir, &cert, &ca.root_pem())?;
        println!("wrote {} for {id}, valid for {} s", dir.display(), cert.remaining().as_secs());
        if !watch {
            return Ok(());
        }
        let wait = cert.remaining() / 2;
        let stop = rt.block_on(async {
            tokio::select! {
                _ = tokio::time::sleep(wait) => false,
                _ = crate::agent::shutdown_signal() => true,
            }
        });
        if stop {
            return Ok(());
        }
    }
}
