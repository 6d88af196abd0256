//! `x auth check`: the table of `istioctl experimental auth check` (1.3,
//! istioctl/cmd/testdata/auth/productpage.golden; seed 003), computed from
//! the `ProxyConfig` a proxy runs.
//!
//! Listeners: each inbound workload port (`<pod-ip>_<port>`) and the
//! catch-all for every other port (`virtualInbound`). As Envoy's filter
//! chains in Istio: a STRICT port has one chain that requires a client
//! certificate (`yes (STRICT)`); a PERMISSIVE port has two, `[0]` mTLS with
//! the workload certificate and `[1]` plaintext (`none`, `no (PERMISSIVE)`);
//! a DISABLE port has one plaintext chain (`no (DISABLE)`).
//!
//! Clusters, sorted by host, port and subset: one row per
//! `outbound|<port>|<subset>|<host>` and TLS setting
//! of its endpoints (auto-mTLS may give one cluster mTLS endpoints and
//! plaintext ones): the client certificate presented and how the peer's
//! certificate is validated (the SPIFFE IDs accepted, a CA file, or `none`).

use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use veil_model::dr;
use veil_model::{Endpoint, MeshInput, MtlsMode, OutboundService, Protocol, ProxyConfig, UpstreamTls};

/// The whole check of one proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthCheck {
    pub pod: String,
    pub namespace: String,
    pub ip: IpAddr,
    /// The identity the control plane expects the proxy to present.
    pub spiffe_id: String,
    /// Version of the config the rows were computed from.
    pub config_version: u64,
    pub listeners: Vec<ListenerRow>,
    pub clusters: Vec<ClusterRow>,
    /// The certificate the proxy actually holds, read from its admin
    /// `/config_dump` by the CLI; `None` when not read.
    #[serde(default)]
    pub certificate: Option<CertificateFacts>,
    /// Config version the proxy reports running, from the same dump.
    #[serde(default)]
    pub proxy_version: Option<u64>,
}

/// A proxy's workload certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertificateFacts {
    pub spiffe_id: Option<String>,
    /// Expiry of the leaf, Unix seconds.
    pub not_after_unix: Option<i64>,
}

/// One filter chain of an inbound listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListenerRow {
    /// `<pod-ip>_<port>` or `virtualInbound`.
    pub listener: String,
    /// Filter chain index.
    pub chain: usize,
    /// Workload port; `None` for the catch-all.
    pub port: Option<u16>,
    pub protocol: Protocol,
    pub mode: MtlsMode,
    /// The chain requires a mesh client certificate.
    pub mtls: bool,
    /// SPIFFE ID of the certificate the chain presents; `None`: plaintext.
    pub certificate: Option<String>,
}

impl ListenerRow {
    /// `listener[chain]`.
    pub fn name(&self) -> String {
        format!("{}[{}]", self.listener, self.chain)
    }
}

/// One outbound cluster (or the part of it whose endpoints share a TLS setting).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterRow {
    /// `outbound|<port>|<subset>|<host>`.
    pub cluster: String,
    pub host: String,
    /// Service port.
    pub port: u16,
    pub subset: Option<String>,
    /// `ISTIO_MUTUAL`, `DISABLE`, `SIMPLE`, `MUTUAL`, `REFUSED`, or `-`
    /// when the cluster has no endpoints.
    pub tls: String,
    /// What the client presents: its SPIFFE ID (ISTIO_MUTUAL), the
    /// `clientCertificate` file (MUTUAL), `None` otherwise.
    pub certificate: Option<String>,
    /// How the server certificate is checked: accepted SPIFFE IDs, or
    /// `ca <file>` and SANs, or `insecureSkipVerify`; empty: no check (plaintext).
    pub validate_peer: Vec<String>,
    /// Endpoints with this setting.
    pub endpoints: usize,
    /// Where the setting comes from: the DestinationRule(s), `auto-mTLS`,
    /// or `-` when the control plane's input was not available.
    pub policy: String,
}

/// The check for `config`; `input` (the control plane's current input)
/// names the DestinationRule behind each cluster.
pub fn auth_check(config: &ProxyConfig, input: Option<&MeshInput>) -> AuthCheck {
    let node = &config.node;
    let cert = Some(node.spiffe_id.clone());
    let mut listeners = Vec::new();
    let mut ports = config.inbound.ports.clone();
    ports.sort_by_key(|p| p.port);
    let mut add = |listener: String, port: Option<u16>, protocol: Protocol, mode: MtlsMode| {
        let chains: &[bool] = match mode {
            MtlsMode::Strict => &[true],
            MtlsMode::Permissive => &[true, false],
            MtlsMode::Disable => &[false],
        };
        for (chain, mtls) in chains.iter().enumerate() {
            listeners.push(ListenerRow {
                listener: listener.clone(),
                chain,
                port,
                protocol,
                mode,
                mtls: *mtls,
                certificate: if *mtls { cert.clone() } else { None },
            });
        }
    };
    for p in &ports {
        add(format!("{}_{}", node.ip, p.port), Some(p.port), p.protocol, p.mode);
    }
    add("virtualInbound".into(), None, Protocol::Unknown, config.inbound.mode);
    let mut clusters = Vec::new();
    for svc in &config.outbound.services {
        clusters.extend(cluster_rows(config, svc, None, &svc.endpoints, input));
        for (name, endpoints) in &svc.subsets {
            clusters.extend(cluster_rows(config, svc, Some(name), endpoints, input));
        }
    }
    clusters.sort_by(|a, b| (&a.host, a.port, &a.subset).cmp(&(&b.host, b.port, &b.subset)));
    AuthCheck {
        pod: node.pod.clone(),
        namespace: node.namespace.clone(),
        ip: node.ip,
        spiffe_id: node.spiffe_id.clone(),
        config_version: config.version,
        listeners,
        clusters,
        certificate: None,
        proxy_version: None,
    }
}

/// `(tls, certificate, validate_peer)` of one endpoint as the client sees it.
type TlsFacts = (String, Option<String>, Vec<String>);

fn tls_facts(own_id: &str, tls: &UpstreamTls) -> TlsFacts {
    fn verify(ca: &Option<std::path::PathBuf>, sans: &[String], insecure: bool) -> Vec<String> {
        if insecure {
            return vec!["insecureSkipVerify".into()];
        }
        let mut v: Vec<String> = ca.iter().map(|c| format!("ca {}", c.display())).collect();
        v.extend(sans.iter().map(|s| format!("san {s}")));
        v
    }
    match tls {
        UpstreamTls::Disable => ("DISABLE".into(), None, Vec::new()),
        UpstreamTls::IstioMutual { identities, .. } => ("ISTIO_MUTUAL".into(), Some(own_id.to_string()), identities.clone()),
        UpstreamTls::Simple { ca_file, subject_alt_names, insecure_skip_verify, .. } => {
            ("SIMPLE".into(), None, verify(ca_file, subject_alt_names, *insecure_skip_verify))
        }
        UpstreamTls::Mutual { ca_file, subject_alt_names, insecure_skip_verify, cert_file, .. } => (
            "MUTUAL".into(),
            Some(cert_file.display().to_string()),
            verify(ca_file, subject_alt_names, *insecure_skip_verify),
        ),
        UpstreamTls::Credential { subject_alt_names, insecure_skip_verify, source, ca, client, .. } => {
            let mut checks = if *insecure_skip_verify { vec!["insecureSkipVerify".into()] } else { Vec::new() };
            if !*insecure_skip_verify {
                checks.extend(ca.iter().map(|_| format!("ca from {source}")));
                checks.extend(subject_alt_names.iter().map(|s| format!("san {s}")));
            }
            let mode = if client.is_some() { "MUTUAL" } else { "SIMPLE" };
            (mode.into(), client.as_ref().map(|_| source.clone()), checks)
        }
        UpstreamTls::Unsupported { reason } => ("REFUSED".into(), None, vec![reason.clone()]),
    }
}

fn cluster_rows(
    config: &ProxyConfig,
    svc: &OutboundService,
    subset: Option<&String>,
    endpoints: &[Endpoint],
    input: Option<&MeshInput>,
) -> Vec<ClusterRow> {
    let cluster = format!("outbound|{}|{}|{}", svc.port, subset.map_or("", String::as_str), svc.hostname);
    let policy = policy_of(config, svc, subset, input);
    let mut groups: Vec<(TlsFacts, usize)> = Vec::new();
    for e in endpoints {
        let facts = tls_facts(&config.node.spiffe_id, &e.tls);
        match groups.iter_mut().find(|(f, _)| *f == facts) {
            Some((_, n)) => *n += 1,
            None => groups.push((facts, 1)),
        }
    }
    if groups.is_empty() {
        groups.push((("-".into(), None, Vec::new()), 0));
    }
    groups
        .into_iter()
        .map(|((tls, certificate, validate_peer), endpoints)| ClusterRow {
            cluster: cluster.clone(),
            host: svc.hostname.clone(),
            port: svc.port,
            subset: subset.cloned(),
            tls,
            certificate,
            validate_peer,
            endpoints,
            policy: policy.clone(),
        })
        .collect()
}

/// The DestinationRule(s) whose tls decides the cluster, else `auto-mTLS`
/// (or `-` with auto-mTLS off: plaintext).
fn policy_of(config: &ProxyConfig, svc: &OutboundService, subset: Option<&String>, input: Option<&MeshInput>) -> String {
    let Some(input) = input else { return "-".into() };
    let node = &config.node;
    let pod = input.registry.pods.iter().find(|p| p.namespace == node.namespace && p.name == node.pod);
    let Some(service) = input.registry.services.iter().find(|s| s.hostname(&input.settings.domain) == svc.hostname) else {
        return "-".into();
    };
    let client = dr::Client { namespace: &node.namespace, labels: pod.map(|p| &p.labels) };
    let target = dr::Target { host: &svc.hostname, namespace: &service.namespace };
    let rule = dr::lookup(&input.destination_rules, client, target, &input.settings.root_namespace, &input.settings.domain);
    match rule {
        Some(r) if r.effective(svc.port, subset.map(String::as_str)).tls.is_some() => r.rules.join(","),
        _ if input.settings.auto_mtls => "auto-mTLS".into(),
        _ => "-".into(),
    }
}
