//! The certificate a gateway TLS server presents: from files
//! (`serverCertificate`, `privateKey`, `caCertificates`) or from the
//! Kubernetes Secret named by `credentialName`.
//!
//! Follows Istio (spec §1.5; `pilot/pkg/credentials/kube/secrets.go`,
//! `pilot/pkg/model/credentials/resource.go`): the Secret is read from the
//! namespace of the **gateway pod**, not of the Gateway resource (a Secret
//! left in the Gateway's namespace is Istio issue 27740); keys `cert`/`key`
//! win over `tls.crt`/`tls.key`; the client CA of MUTUAL and
//! OPTIONAL_MUTUAL comes from the Secret `<name>-cacert`, else from the
//! Secret itself (`cacert`, else `ca.crt`).
//!
//! The same lookup serves a DestinationRule `tls.credentialName` (TLS
//! origination, [`origination_credential`]; `ClientTLSSettings` in
//! networking/v1alpha3/destination_rule.proto and
//! `ApplyCustomSDSToClientCommonTLSContext` in pilot/pkg/security/model):
//! the Secret is read from the namespace of the proxy that originates
//! (the egress gateway's pod; `origination` submodule); MUTUAL presents `cert`/`key` (else
//! `tls.crt`/`tls.key`) of `<name>`; the server is verified against
//! `cacert`/`ca.crt` of `<name>-cacert`, else of `<name>` (so a SIMPLE
//! origination needs only a CA, as Istio's `TestSimpleTlsOrigination` uses).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use veil_api::ServerTlsSettings;

use crate::config::{GatewayTlsMode, PemSource, ServerCredential};

mod origination;
pub use origination::{missing_everywhere, origination_credential, OriginationCredential, OriginationLookup};

/// Suffix of the Secret that holds only a client CA.
pub const CA_SECRET_SUFFIX: &str = "-cacert";

/// One Secret a `credentialName` may refer to, with its keys (`data` and
/// `stringData` merged, `stringData` winning).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CredentialSecret {
    pub namespace: String,
    pub name: String,
    pub data: BTreeMap<String, Vec<u8>>,
}

/// Why a gateway server has no certificate to present. Messages name the
/// namespace searched and tell the operator what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("tls.mode {mode} on gateway servers is not supported yet; use SIMPLE, MUTUAL, OPTIONAL_MUTUAL, ISTIO_MUTUAL or PASSTHROUGH")]
    UnsupportedMode { mode: String },
    #[error("credentialName {name}: no Secret {name} in namespace {searched} (the gateway pod's namespace, where Istio looks); a Secret of that name exists in namespace {found}, the Gateway's namespace, which Istio does not read (istio/istio#27740): create the Secret in {searched}")]
    InGatewayNamespace { name: String, searched: String, found: String },
    #[error("credentialName {name}: no Secret {name} in namespace {searched} (the gateway pod's namespace, where Istio looks); create it there with keys tls.crt and tls.key (or cert and key)")]
    NotFound { name: String, searched: String },
    #[error("credentialName {reference}: the Secret is in namespace {namespace}, but this gateway runs in {searched} and may read Secrets of its own namespace only (cross namespace secret reference requires ReferenceGrant): create the Secret in {searched}")]
    CrossNamespace { reference: String, namespace: String, searched: String },
    #[error("Secret {namespace}/{name}: found keys {cert:?} and {key:?}, but they were empty; put the PEM certificate and key in them")]
    EmptyKeys { namespace: String, name: String, cert: String, key: String },
    #[error("Secret {namespace}/{name}: found secret, but didn't have expected keys (cert and key) or (tls.crt and tls.key); found: {found}")]
    MissingKeys { namespace: String, name: String, found: String },
    #[error("Secret {namespace}/{name}: key {key:?} is not PEM text")]
    NotText { namespace: String, name: String, key: String },
    #[error("tls.mode {mode} needs a CA for client certificates: no key cacert or ca.crt in Secret {namespace}/{name}, and no Secret {namespace}/{name}{CA_SECRET_SUFFIX}; add one of them")]
    NoClientCa { mode: GatewayTlsMode, namespace: String, name: String },
    #[error("tls.mode {mode} needs {needed}, or credentialName; set them in the Gateway server's tls block")]
    MissingFiles { mode: GatewayTlsMode, needed: &'static str },
    #[error("credentialName {name}: no Secret {name} in namespace {searched} (the namespace of the proxy that originates the TLS, where Istio looks); create it there with {needed}")]
    OriginationNotFound { name: String, searched: String, needed: &'static str },
    #[error("credentialName {name}: no Secret {name} in namespace {searched} (the namespace of the proxy that originates the TLS, where Istio looks); a Secret of that name exists in namespace {found}, the DestinationRule's namespace, which this proxy does not read: create the Secret in {searched}")]
    OriginationInRuleNamespace { name: String, searched: String, found: String },
    #[error("credentialName {reference}: the Secret is in namespace {namespace}, but the proxy that originates the TLS runs in {searched} and may read Secrets of its own namespace only: create the Secret in {searched}")]
    OriginationCrossNamespace { reference: String, namespace: String, searched: String },
    #[error("credentialName {name}: no CA to verify the server: no key cacert or ca.crt in Secret {namespace}/{name}{CA_SECRET_SUFFIX} or {namespace}/{name}; add the server's CA under one of them, or set insecureSkipVerify: true")]
    NoServerCa { namespace: String, name: String },
}


/// The gateway mode of a server's `tls.mode`.
///
/// Errors: none for the modes Istio defines today ([`CredentialError::UnsupportedMode`]
/// is kept for modes Veil may not serve).
pub fn gateway_mode(mode: veil_api::ServerTlsMode) -> Result<GatewayTlsMode, CredentialError> {
    use veil_api::ServerTlsMode as M;
    Ok(match mode {
        M::Simple => GatewayTlsMode::Simple,
        M::Mutual => GatewayTlsMode::Mutual,
        M::OptionalMutual => GatewayTlsMode::OptionalMutual,
        M::IstioMutual => GatewayTlsMode::IstioMutual,
        M::Passthrough => GatewayTlsMode::Passthrough,
        M::AutoPassthrough => GatewayTlsMode::AutoPassthrough,
    })
}

/// Where a gateway server's credential is looked for.
#[derive(Debug, Clone, Copy)]
pub struct Lookup<'a> {
    /// Namespace of the gateway pod (the proxy): where Secrets are read.
    pub proxy_namespace: &'a str,
    /// Namespace of the Gateway resource (only to explain issue 27740).
    pub gateway_namespace: &'a str,
    /// Directory relative file paths are resolved against (the Gateway's file).
    pub base_dir: Option<&'a Path>,
    /// Every Secret named like a `credentialName` of the Gateway, or with
    /// the `-cacert` suffix, in any namespace.
    pub secrets: &'a [CredentialSecret],
}

fn needs_ca(mode: GatewayTlsMode) -> bool {
    matches!(mode, GatewayTlsMode::Mutual | GatewayTlsMode::OptionalMutual)
}

/// The credential of a server in a terminating mode; `None` for
/// PASSTHROUGH, AUTO_PASSTHROUGH and ISTIO_MUTUAL, which present none of their own.
///
/// Errors: see [`CredentialError`]; a server with an error serves nothing.
pub fn server_credential(
    tls: &ServerTlsSettings,
    mode: GatewayTlsMode,
    at: Lookup<'_>,
) -> Result<Option<ServerCredential>, CredentialError> {
    if mode.passes_through() || mode == GatewayTlsMode::IstioMutual {
        return Ok(None);
    }
    match tls.credential_name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => from_secret(name, mode, at).map(Some),
        None => from_files(tls, mode, at.base_dir).map(Some),
    }
}

fn file(path: &str, base: Option<&Path>) -> PemSource {
    let p = Path::new(path);
    PemSource::File(match base {
        Some(base) if p.is_relative() => base.join(p),
        _ => PathBuf::from(p),
    })
}

fn from_files(tls: &ServerTlsSettings, mode: GatewayTlsMode, base: Option<&Path>) -> Result<ServerCredential, CredentialError> {
    let (Some(cert), Some(key)) = (tls.server_certificate.as_deref(), tls.private_key.as_deref()) else {
        return Err(CredentialError::MissingFiles { mode, needed: "serverCertificate and privateKey" });
    };
    let ca = tls.ca_certificates.as_deref().filter(|c| !c.is_empty());
    if needs_ca(mode) && ca.is_none() {
        return Err(CredentialError::MissingFiles { mode, needed: "caCertificates" });
    }
    Ok(ServerCredential {
        source: "files".into(),
        cert: file(cert, base),
        key: file(key, base),
        ca: ca.map(|c| file(c, base)),
    })
}

/// Every Secret of the snapshot, in any namespace, that `credential_name`
/// (`name`, `kubernetes://name`, `kubernetes://ns/name`) may refer to:
/// `name` and `name-cacert`.
pub fn secrets_for(snapshot: &veil_api::Snapshot, credential_name: &str) -> Vec<CredentialSecret> {
    let (_, name) = parse_reference(credential_name, "");
    let ca_name = format!("{name}{CA_SECRET_SUFFIX}");
    snapshot
        .secrets
        .iter()
        .filter(|s| s.meta.name == name || s.meta.name == ca_name)
        .map(|s| {
            let mut data: BTreeMap<String, Vec<u8>> = s.spec.data.clone();
            for (k, v) in &s.spec.string_data {
                data.insert(k.clone(), v.as_bytes().to_vec());
            }
            CredentialSecret { namespace: s.namespace_or_default().to_string(), name: s.meta.name.clone(), data }
        })
        .collect()
}

/// `name`, `kubernetes://name` or `kubernetes://ns/name` as (namespace, name).
fn parse_reference<'a>(reference: &'a str, proxy_ns: &'a str) -> (&'a str, &'a str) {
    let rest = reference.strip_prefix("kubernetes://").unwrap_or(reference);
    match rest.split_once('/') {
        Some((ns, name)) => (ns, name),
        None => (proxy_ns, rest),
    }
}

fn find<'a>(secrets: &'a [CredentialSecret], ns: &str, name: &str) -> Option<&'a CredentialSecret> {
    secrets.iter().find(|s| s.namespace == ns && s.name == name)
}

fn value<'a>(s: &'a CredentialSecret, key: &str) -> Option<&'a [u8]> {
    s.data.get(key).map(Vec::as_slice).filter(|v| !v.is_empty())
}

fn pem(s: &CredentialSecret, key: &str, bytes: &[u8]) -> Result<PemSource, CredentialError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| CredentialError::NotText { namespace: s.namespace.clone(), name: s.name.clone(), key: key.into() })?;
    Ok(PemSource::Pem(text.to_string()))
}

/// Istio's `extractCertInfo`: (`cert`, `key`) when both are non-empty,
/// else (`tls.crt`, `tls.key`).
fn cert_and_key(s: &CredentialSecret) -> Result<(PemSource, PemSource), CredentialError> {
    for (c, k) in [("cert", "key"), ("tls.crt", "tls.key")] {
        if let (Some(cert), Some(key)) = (value(s, c), value(s, k)) {
            return Ok((pem(s, c, cert)?, pem(s, k, key)?));
        }
    }
    for (c, k) in [("cert", "key"), ("tls.crt", "tls.key")] {
        if s.data.contains_key(c) && s.data.contains_key(k) {
            return Err(CredentialError::EmptyKeys {
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                cert: c.into(),
                key: k.into(),
            });
        }
    }
    let found: Vec<&str> = s.data.keys().map(String::as_str).collect();
    Err(CredentialError::MissingKeys { namespace: s.namespace.clone(), name: s.name.clone(), found: found.join(", ") })
}

/// Istio's `extractRoot`: `cacert`, else `ca.crt`.
fn root(s: &CredentialSecret) -> Result<Option<PemSource>, CredentialError> {
    for key in ["cacert", "ca.crt"] {
        if let Some(v) = value(s, key) {
            return pem(s, key, v).map(Some);
        }
    }
    Ok(None)
}

fn from_secret(reference: &str, mode: GatewayTlsMode, at: Lookup<'_>) -> Result<ServerCredential, CredentialError> {
    let (ns, name) = parse_reference(reference, at.proxy_namespace);
    if ns != at.proxy_namespace {
        return Err(CredentialError::CrossNamespace {
            reference: reference.into(),
            namespace: ns.into(),
            searched: at.proxy_namespace.into(),
        });
    }
    let Some(secret) = find(at.secrets, ns, name) else {
        if ns != at.gateway_namespace && find(at.secrets, at.gateway_namespace, name).is_some() {
            return Err(CredentialError::InGatewayNamespace {
                name: name.into(),
                searched: ns.into(),
                found: at.gateway_namespace.into(),
            });
        }
        return Err(CredentialError::NotFound { name: name.into(), searched: ns.into() });
    };
    let (cert, key) = cert_and_key(secret)?;
    let ca = if needs_ca(mode) {
        let ca_secret = find(at.secrets, ns, &format!("{name}{CA_SECRET_SUFFIX}"));
        let ca = match ca_secret.map(root).transpose()?.flatten() {
            Some(ca) => Some(ca),
            None => root(secret)?,
        };
        if ca.is_none() {
            return Err(CredentialError::NoClientCa { mode, namespace: ns.into(), name: name.into() });
        }
        ca
    } else {
        None
    };
    Ok(ServerCredential { source: format!("Secret {ns}/{name}"), cert, key, ca })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Secret with string values (also used by the origination tests).
    pub(crate) fn secret(ns: &str, name: &str, keys: &[(&str, &str)]) -> CredentialSecret {
        CredentialSecret {
            namespace: ns.into(),
            name: name.into(),
            data: keys.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect(),
        }
    }

    fn lookup(secrets: &[CredentialSecret]) -> Lookup<'_> {
        Lookup { proxy_namespace: "istio-system", gateway_namespace: "app", base_dir: None, secrets }
    }

    #[test]
    fn generic_keys_win_and_empty_keys_are_named() {
        let both = [secret("istio-system", "c", &[("cert", "C"), ("key", "K"), ("tls.crt", "T"), ("tls.key", "U")])];
        let got = from_secret("c", GatewayTlsMode::Simple, lookup(&both)).unwrap();
        assert_eq!(got.cert, PemSource::Pem("C".into()));
        let empty = [secret("istio-system", "c", &[("tls.crt", ""), ("tls.key", "")])];
        let err = from_secret("c", GatewayTlsMode::Simple, lookup(&empty)).unwrap_err();
        assert!(err.to_string().contains("\"tls.crt\" and \"tls.key\", but they were empty"), "{err}");
        let other = [secret("istio-system", "c", &[("foo", "x")])];
        let err = from_secret("c", GatewayTlsMode::Simple, lookup(&other)).unwrap_err();
        assert!(err.to_string().ends_with("found: foo"), "{err}");
    }

    #[test]
    fn cross_namespace_reference_is_refused() {
        let s = [secret("app", "c", &[("cert", "C"), ("key", "K")])];
        let err = from_secret("kubernetes://app/c", GatewayTlsMode::Simple, lookup(&s)).unwrap_err();
        assert!(matches!(err, CredentialError::CrossNamespace { .. }), "{err}");
        let ok = [secret("istio-system", "c", &[("cert", "C"), ("key", "K")])];
        assert!(from_secret("kubernetes://istio-system/c", GatewayTlsMode::Simple, lookup(&ok)).is_ok());
    }
}
