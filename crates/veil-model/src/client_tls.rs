//! How a client connects to one endpoint: Istio's upstream TLS decision
//! (spec §1.4; `buildUpstreamTLSSettings` in pilot/pkg/networking/core/
//! cluster_tls.go, per-endpoint `tlsMode` in pilot/pkg/xds/endpoints/
//! mtls_checker.go), in the order the code applies it:
//!
//! 1. A DestinationRule `tls` that applies (see `crate::dr`) always wins:
//!    DISABLE → plaintext; ISTIO_MUTUAL → mesh mTLS, even to an endpoint
//!    without a sidecar (which then fails, as in Istio); SIMPLE / MUTUAL →
//!    TLS origination with the rule's files, or with the Secret its
//!    `credentialName` names (see below).
//! 2. Otherwise auto-mTLS (`enableAutoMtls`, default on): plaintext when it
//!    is off or when the namespace (else mesh) mode of the Service's
//!    namespace is DISABLE; else mesh mTLS to an endpoint iff it has a
//!    sidecar and its effective mode on the target port is not DISABLE.
//!    A DestinationRule without `tls` (only subsets or a load balancer)
//!    leaves auto-mTLS on (Istio issue 6279).
//!
//! Headless Services and `loadBalancer.simple: PASSTHROUGH` are decided
//! per endpoint like every other Service. (Istio infers DISABLE for the
//! whole Service when any of their endpoints lacks a sidecar; Veil dials
//! the endpoint itself, so it can encrypt to every endpoint that accepts it.)
//!
//! `credentialName` (SIMPLE / MUTUAL) is honoured on gateways, and on
//! sidecars only when the rule has a `workloadSelector`; on any other
//! sidecar Istio builds no TLS at all for the cluster (the "hack" in
//! `buildUpstreamClusterTLSContext`, cluster_tls.go), so the sidecar sends
//! the application's bytes as they are, and so does Veil. The Secret is read
//! from the proxy's namespace (`crate::credentials::origination_credential`);
//! when it is missing or unusable the endpoint is refused with a message
//! naming the rule's file:line and field (Istio answers 503).

use std::path::{Path, PathBuf};
use veil_api::{ClientTlsMode, ClientTlsSettings};

use crate::config::{MtlsMode, UpstreamTls};
use crate::credentials::{origination_credential, OriginationLookup};
use crate::dr::{AppliedRule, EffectivePolicy};

/// The proxy that connects.
#[derive(Debug, Clone, Copy)]
pub struct ProxyFacts<'a> {
    /// Its pod's namespace: where `credentialName` Secrets are read.
    pub namespace: &'a str,
    /// A gateway (honours `credentialName` of every rule) rather than a
    /// sidecar (only of rules with a `workloadSelector`).
    pub gateway: bool,
}

/// What the decision needs to know about the destination.
#[derive(Debug, Clone, Copy)]
pub struct Destination<'a> {
    /// Service FQDN, the default SNI for SIMPLE/MUTUAL.
    pub host: &'a str,
    /// Service port.
    pub port: u16,
    /// Subset the route targets, if any (part of the mesh SNI).
    pub subset: Option<&'a str>,
    /// SPIFFE IDs of the Service's workloads (ISTIO_MUTUAL SANs).
    pub identities: &'a [String],
    /// Namespace (else mesh) mode of the Service's namespace
    /// (`GetNamespaceMutualTLSMode`); `None` when no policy exists.
    pub namespace_mode: Option<MtlsMode>,
    /// The DestinationRule that applies, if any: its directory (relative
    /// certificate paths), Secrets, namespace and file:line.
    pub rule: Option<&'a AppliedRule>,
    /// The proxy that connects.
    pub proxy: ProxyFacts<'a>,
}

impl Destination<'_> {
    /// Directory relative certificate paths are resolved against.
    fn base_dir(&self) -> Option<&Path> {
        self.rule.and_then(|r| r.base_dir.as_deref())
    }
}

/// What the decision needs to know about the endpoint.
#[derive(Debug, Clone, Copy)]
pub struct EndpointFacts {
    /// The endpoint's pod has a sidecar.
    pub sidecar: bool,
    /// Its effective inbound mode on the target port.
    pub mode: MtlsMode,
}

/// Istio's SNI for mesh mTLS: the cluster name in DNS form,
/// `outbound_.<port>_.<subset>_.<host>` (`BuildDNSSrvSubsetKey`).
pub fn mesh_sni(port: u16, subset: Option<&str>, host: &str) -> String {
    format!("outbound_.{port}_.{}_.{host}", subset.unwrap_or(""))
}

fn path(base: Option<&Path>, p: &str) -> PathBuf {
    let p = Path::new(p);
    match base {
        Some(b) if p.is_relative() => b.join(p),
        _ => p.to_path_buf(),
    }
}

/// The [`UpstreamTls`] of a DestinationRule `tls` block written at
/// `tls_field` (e.g. `trafficPolicy.portLevelSettings[443].tls`).
pub fn from_rule(tls: &ClientTlsSettings, tls_field: &str, dest: &Destination) -> UpstreamTls {
    let mesh = |sni: &Option<String>| UpstreamTls::IstioMutual {
        identities: if tls.subject_alt_names.is_empty() {
            dest.identities.to_vec()
        } else {
            tls.subject_alt_names.clone()
        },
        sni: sni.clone().unwrap_or_else(|| mesh_sni(dest.port, dest.subset, dest.host)),
    };
    match tls.mode {
        ClientTlsMode::Disable => UpstreamTls::Disable,
        ClientTlsMode::IstioMutual => mesh(&tls.sni),
        ClientTlsMode::Simple | ClientTlsMode::Mutual => {
            let sni = Some(tls.sni.clone().unwrap_or_else(|| dest.host.to_string()));
            if let Some(name) = tls.credential_name.as_deref().filter(|n| !n.is_empty()) {
                return credential(tls, name, sni, tls_field, dest);
            }
            let ca_file = tls.ca_certificates.as_deref().map(|p| path(dest.base_dir(), p));
            let subject_alt_names = tls.subject_alt_names.clone();
            let insecure_skip_verify = tls.insecure_skip_verify.unwrap_or(false);
            if tls.mode == ClientTlsMode::Simple {
                return UpstreamTls::Simple { sni, ca_file, subject_alt_names, insecure_skip_verify };
            }
            match (&tls.client_certificate, &tls.private_key) {
                (Some(cert), Some(key)) => UpstreamTls::Mutual {
                    sni,
                    ca_file,
                    subject_alt_names,
                    insecure_skip_verify,
                    cert_file: path(dest.base_dir(), cert),
                    key_file: path(dest.base_dir(), key),
                },
                _ => UpstreamTls::Unsupported {
                    reason: "DestinationRule tls mode MUTUAL needs clientCertificate and privateKey".into(),
                },
            }
        }
    }
}

/// SIMPLE / MUTUAL with `credentialName` `name`: nothing on a sidecar the
/// rule does not select (as Istio), else the Secret's material, else
/// [`UpstreamTls::Unsupported`] saying what to create.
fn credential(tls: &ClientTlsSettings, name: &str, sni: Option<String>, tls_field: &str, dest: &Destination) -> UpstreamTls {
    let Some(rule) = dest.rule else {
        return UpstreamTls::Unsupported { reason: format!("{tls_field}.credentialName {name:?}: no DestinationRule to read it from") };
    };
    if !dest.proxy.gateway && !rule.workload_selector {
        return UpstreamTls::Disable;
    }
    let mutual = tls.mode == ClientTlsMode::Mutual;
    let insecure_skip_verify = tls.insecure_skip_verify.unwrap_or(false);
    let at = OriginationLookup { proxy_namespace: dest.proxy.namespace, rule_namespace: &rule.namespace, secrets: &rule.secrets };
    match origination_credential(name, mutual, insecure_skip_verify, at) {
        Ok(c) => UpstreamTls::Credential {
            sni,
            subject_alt_names: tls.subject_alt_names.clone(),
            insecure_skip_verify,
            source: c.source,
            ca: c.ca,
            client: c.client,
        },
        Err(e) => UpstreamTls::Unsupported {
            reason: format!("{}: DestinationRule {}: {tls_field}.credentialName: {e}", rule.source, rule.rules.join(",")),
        },
    }
}

/// The decision for one endpoint: `policy` is the effective DestinationRule
/// policy for the Service port and subset (default when none applies),
/// `auto_mtls` the mesh setting.
pub fn upstream_tls(policy: &EffectivePolicy, dest: &Destination, endpoint: EndpointFacts, auto_mtls: bool) -> UpstreamTls {
    if let Some(tls) = &policy.tls {
        return from_rule(tls, &policy.tls_field, dest);
    }
    if !auto_mtls || dest.namespace_mode == Some(MtlsMode::Disable) || !endpoint.sidecar || endpoint.mode == MtlsMode::Disable {
        return UpstreamTls::Disable;
    }
    UpstreamTls::IstioMutual { identities: dest.identities.to_vec(), sni: mesh_sni(dest.port, dest.subset, dest.host) }
}
