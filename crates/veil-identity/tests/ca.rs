//! The CA: persisted root, CSR signing rules, certificate shape, one-time tokens.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use common::{id, new_ca};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use veil_identity::{
    BootstrapTokens, CertificateAuthority, IdentityError, TrustDomain, WorkloadKey,
};
use x509_parser::extensions::GeneralName;

fn uri_sans(der: &CertificateDer<'_>) -> Vec<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn root_is_persisted_with_private_key_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let first = CertificateAuthority::load_or_create(dir.path(), TrustDomain::default()).unwrap();
    let key_mode = std::fs::metadata(dir.path().join("ca-key.pem"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    let cert_mode = std::fs::metadata(dir.path().join("ca-cert.pem"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(key_mode, 0o600);
    assert_eq!(cert_mode, 0o644);
    let second = CertificateAuthority::load_or_create(dir.path(), TrustDomain::default()).unwrap();
    assert_eq!(first.root_pem(), second.root_pem());
    // Control: a fresh directory gives a different root.
    let (_other_dir, other) = new_ca();
    assert_ne!(first.root_pem(), other.root_pem());
    // A second start with another trust domain is refused, not silently re-rooted.
    let td: TrustDomain = "example.org".parse().unwrap();
    let err = CertificateAuthority::load_or_create(dir.path(), td)
        .err()
        .expect("mismatch refused");
    assert!(
        matches!(err, IdentityError::TrustDomainMismatch { .. }),
        "{err}"
    );
}

#[test]
fn sign_csr_issues_exactly_the_proven_identity() {
    let (_dir, ca) = new_ca();
    let key = WorkloadKey::generate().unwrap();
    let csr = key.csr_pem(&id("reviews")).unwrap();
    let ttl = Duration::from_secs(3600);
    let chain = ca.sign_csr(&csr, &id("reviews"), ttl).unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(
        chain.last().unwrap().trim(),
        ca.root_pem().trim(),
        "root last"
    );
    let leaf = CertificateDer::from_pem_slice(chain[0].as_bytes()).unwrap();
    assert_eq!(
        uri_sans(&leaf),
        vec!["spiffe://cluster.local/ns/default/sa/reviews".to_string()]
    );
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).unwrap();
    assert!(!parsed.is_ca(), "leaf first");
    let not_after = parsed.validity().not_after.timestamp();
    let expected = (SystemTime::now() + ttl)
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (not_after - expected).abs() <= 120,
        "not_after {not_after} vs {expected}"
    );
    let eku = parsed.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
}

#[test]
fn sign_csr_refuses_a_csr_claiming_another_identity() {
    let (_dir, ca) = new_ca();
    let key = WorkloadKey::generate().unwrap();
    let csr = key.csr_pem(&id("admin")).unwrap();
    let err = ca
        .sign_csr(&csr, &id("reviews"), Duration::from_secs(60))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("caller proved only spiffe://cluster.local/ns/default/sa/reviews"),
        "{err}"
    );
    assert!(ca
        .sign_csr("not a csr", &id("reviews"), Duration::from_secs(60))
        .is_err());
}

#[test]
fn control_plane_certificate_has_dns_names_and_its_spiffe_id() {
    let (_dir, ca) = new_ca();
    let cert = ca
        .issue_server_certificate(
            &["istiod.istio-system.svc".to_string()],
            Duration::from_secs(600),
        )
        .unwrap();
    assert_eq!(
        cert.spiffe_id.to_string(),
        "spiffe://cluster.local/ns/istio-system/sa/veil-control"
    );
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.chain[0].as_ref()).unwrap();
    let san = parsed.subject_alternative_name().unwrap().unwrap();
    assert!(san
        .value
        .general_names
        .iter()
        .any(|n| matches!(n, GeneralName::DNSName("istiod.istio-system.svc"))));
}

#[test]
fn bootstrap_tokens_are_one_time() {
    let tokens = BootstrapTokens::default();
    let token = tokens.issue(&id("reviews"));
    assert_eq!(token.len(), 43);
    assert_eq!(tokens.redeem(&token), Some(id("reviews")));
    assert_eq!(tokens.redeem(&token), None);
    assert_eq!(tokens.redeem("never-issued"), None);
    assert_ne!(tokens.issue(&id("a")), tokens.issue(&id("a")));
}
