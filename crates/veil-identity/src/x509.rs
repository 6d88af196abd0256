//! Small readers over X.509 (x509-parser): a leaf's SPIFFE ID, its validity window, and
//! the trust domain a root certificate names.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{parse_x509_certificate, X509Certificate};

use crate::error::IdentityError;
use crate::spiffe::{SpiffeId, TrustDomain};

fn parse<'a>(der: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, IdentityError> {
    parse_x509_certificate(der.as_ref())
        .map(|(_, cert)| cert)
        .map_err(|e| IdentityError::CertificateParse(e.to_string()))
}

/// All URI SANs of a certificate.
fn uri_sans(cert: &X509Certificate<'_>) -> Result<Vec<String>, IdentityError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| IdentityError::CertificateParse(format!("bad subjectAltName: {e}")))?;
    Ok(san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) => Some((*uri).to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

/// The single SPIFFE ID (URI SAN) of a leaf certificate.
///
/// # Errors
/// [`IdentityError::NoSpiffeId`] without a URI SAN, [`IdentityError::MultipleSpiffeIds`] with
/// several, [`IdentityError::InvalidSpiffeId`] if it does not parse.
pub(crate) fn spiffe_id_of(der: &CertificateDer<'_>) -> Result<SpiffeId, IdentityError> {
    let cert = parse(der)?;
    let uris = uri_sans(&cert)?;
    match uris.as_slice() {
        [] => Err(IdentityError::NoSpiffeId),
        [one] => one.parse(),
        more => Err(IdentityError::MultipleSpiffeIds { count: more.len() }),
    }
}

/// `(not_before, not_after)` of a certificate.
pub(crate) fn validity_of(
    der: &CertificateDer<'_>,
) -> Result<(SystemTime, SystemTime), IdentityError> {
    let cert = parse(der)?;
    let validity = cert.validity();
    Ok((
        to_system_time(validity.not_before.timestamp()),
        to_system_time(validity.not_after.timestamp()),
    ))
}

/// The trust domain a root names with a URI SAN `spiffe://<td>`, if any.
pub(crate) fn root_trust_domain(der: &CertificateDer<'_>) -> Option<TrustDomain> {
    let cert = parse(der).ok()?;
    uri_sans(&cert)
        .ok()?
        .iter()
        .find_map(|uri| uri.strip_prefix("spiffe://").and_then(|td| td.parse().ok()))
}

fn to_system_time(unix_seconds: i64) -> SystemTime {
    match u64::try_from(unix_seconds) {
        Ok(secs) => UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => UNIX_EPOCH - Duration::from_secs(unix_seconds.unsigned_abs()),
    }
}

/// RFC 3339 form of a time, for error messages.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| format!("{t}"))
}
