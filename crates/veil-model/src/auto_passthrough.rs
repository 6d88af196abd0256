//! Gateway servers with `tls.mode: AUTO_PASSTHROUGH`: the client's SNI is
//! Istio's cluster name `outbound_.<port>_.<subset>_.<hostname>` (the SNI
//! every Istio sidecar sends), and names the Service port, the
//! DestinationRule subset (empty: none) and so the endpoints that get the
//! client's TLS bytes, untouched. No `VirtualService` is involved, and the
//! client's mesh mTLS runs end to end to the destination's sidecar.
//!
//! Follows istio/istio `pilot/pkg/networking/core/gateway.go`
//! (`builtAutoPassthroughFilterChains`) and `pilot/pkg/model/service.go`
//! (`BuildDNSSrvSubsetKey`, `ParseSubsetKey`):
//! - one filter chain per Service port, and per subset of its
//!   DestinationRule, whose hostname one of the server's hosts covers
//!   (`service.Hostname.SubsetOf(host)`; `*` covers all);
//! - each chain matches only the Istio mTLS ALPNs ([`ISTIO_MTLS_ALPNS`]),
//!   and endpoints that do not speak Istio mTLS are left out, so that no
//!   one reaches a destination around its mesh mTLS;
//! - `MESH_EXTERNAL` services get no chain. Veil's config does not carry
//!   `location`; their endpoints never speak mesh mTLS (auto-mTLS is off for
//!   them), so they are refused by the endpoint rule above.

use crate::config::{Endpoint, Outbound, OutboundService, UpstreamTls};
use crate::routes::host_covers;

/// The ALPNs an Istio mTLS client offers; an AUTO_PASSTHROUGH connection
/// must offer one (Istio `allIstioMtlsALPNs`).
pub const ISTIO_MTLS_ALPNS: [&str; 5] = ["istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2"];

/// Prefix of an outbound cluster name in its SNI form.
const OUTBOUND_PREFIX: &str = "outbound_";
/// Separator of the SNI form (`_.`).
const SEPARATOR: &str = "_.";

/// The parts of a cluster-name SNI `outbound_.<port>_.<subset>_.<hostname>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniCluster {
    /// Service port.
    pub port: u16,
    /// DestinationRule subset; `None` for the empty subset (`_._.`).
    pub subset: Option<String>,
    /// Service hostname (FQDN), lower case.
    pub hostname: String,
}

impl std::fmt::Display for SniCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{OUTBOUND_PREFIX}.{}{SEPARATOR}{}{SEPARATOR}{}", self.port, self.subset.as_deref().unwrap_or(""), self.hostname)
    }
}

/// Why an AUTO_PASSTHROUGH server refuses a connection. Each message says
/// what the client or the operator should change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AutoPassthroughError {
    #[error("the ClientHello names no SNI; AUTO_PASSTHROUGH needs the cluster name outbound_.<port>_.<subset>_.<hostname> as SNI")]
    NoSni,
    #[error("SNI {sni:?} is not an outbound cluster name outbound_.<port>_.<subset>_.<hostname>: {reason}")]
    Malformed { sni: String, reason: &'static str },
    #[error("SNI {sni:?}: host {hostname} is not among the server's hosts {hosts:?}; add it (or a wildcard covering it) to the Gateway server's hosts")]
    HostNotServed { sni: String, hostname: String, hosts: Vec<String> },
    #[error("SNI {sni:?}: the client offers ALPN {offered:?}, none of Istio's mTLS ALPNs {ISTIO_MTLS_ALPNS:?}; AUTO_PASSTHROUGH carries only mesh mTLS (a client with a mesh certificate must offer ALPN istio)")]
    NotMeshTls { sni: String, offered: Vec<String> },
    #[error("SNI {sni:?}: no Service {hostname} with port {port} in this gateway's config; check the host name and the Service port")]
    UnknownService { sni: String, hostname: String, port: u16 },
    #[error("SNI {sni:?}: {hostname} has no subset {subset:?}; define it in a DestinationRule for {hostname}")]
    UnknownSubset { sni: String, hostname: String, subset: String },
    #[error("SNI {sni:?}: no endpoint of {hostname}:{port}{} speaks mesh mTLS (a running workload with a sidecar, and no DestinationRule tls DISABLE); AUTO_PASSTHROUGH never hands a client's bytes to an endpoint without one", .subset.as_ref().map(|s| format!(" subset {s}")).unwrap_or_default())]
    NoMeshEndpoint { sni: String, hostname: String, port: u16, subset: Option<String> },
}

/// Parses a cluster-name SNI (`ParseSubsetKey` in its SNI form), lower
/// case. Only the `outbound` direction names a destination.
///
/// Errors: [`AutoPassthroughError::Malformed`] for any other text: another
/// prefix, a port that is not 1..=65535, a missing or empty hostname, or a
/// hostname that holds the separator `_.` again.
pub fn parse_sni_cluster(sni: &str) -> Result<SniCluster, AutoPassthroughError> {
    let bad = |reason| AutoPassthroughError::Malformed { sni: sni.to_string(), reason };
    let lower = sni.to_ascii_lowercase();
    let Some(rest) = lower.strip_prefix(OUTBOUND_PREFIX).and_then(|r| r.strip_prefix('.')) else {
        return Err(bad("it does not start with outbound_."));
    };
    let Some((port, rest)) = rest.split_once(SEPARATOR) else { return Err(bad("nothing after the port")) };
    let port = port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| bad("the port is not a number in 1..=65535"))?;
    let Some((subset, hostname)) = rest.split_once(SEPARATOR) else { return Err(bad("no subset part (write _._. for none)")) };
    if hostname.is_empty() {
        return Err(bad("no hostname"));
    }
    if hostname.contains(SEPARATOR) {
        return Err(bad("more parts than port, subset and hostname"));
    }
    let subset = (!subset.is_empty()).then(|| subset.to_string());
    Ok(SniCluster { port, subset, hostname: hostname.to_string() })
}

/// The cluster `sni` names, when an AUTO_PASSTHROUGH server with
/// `server_hosts` (its `sni_hosts`; empty means `*`) accepts its hostname.
///
/// Errors: [`AutoPassthroughError::NoSni`], `Malformed`, `HostNotServed`.
pub fn served_cluster(server_hosts: &[String], sni: Option<&str>) -> Result<SniCluster, AutoPassthroughError> {
    let sni = sni.ok_or(AutoPassthroughError::NoSni)?;
    let cluster = parse_sni_cluster(sni)?;
    if !server_hosts.is_empty() && !server_hosts.iter().any(|h| host_covers(h, &cluster.hostname)) {
        return Err(AutoPassthroughError::HostNotServed {
            sni: sni.to_string(),
            hostname: cluster.hostname,
            hosts: server_hosts.to_vec(),
        });
    }
    Ok(cluster)
}

/// Where an AUTO_PASSTHROUGH connection goes.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoPassthroughTarget<'a> {
    pub cluster: SniCluster,
    pub service: &'a OutboundService,
    /// The endpoints of the port (of the subset, when named) that speak
    /// mesh mTLS; never empty.
    pub endpoints: Vec<Endpoint>,
}

impl Outbound {
    /// The destination of a connection to an AUTO_PASSTHROUGH server with
    /// `server_hosts` (its `sni_hosts`), whose ClientHello names `sni` and
    /// offers `alpn`.
    ///
    /// Errors: [`AutoPassthroughError`]: no or a malformed SNI, a host the
    /// server does not serve, no Istio mTLS ALPN, an unknown Service port or
    /// subset, or no endpoint that speaks mesh mTLS.
    pub fn auto_passthrough(
        &self,
        server_hosts: &[String],
        sni: Option<&str>,
        alpn: &[String],
    ) -> Result<AutoPassthroughTarget<'_>, AutoPassthroughError> {
        let cluster = served_cluster(server_hosts, sni)?;
        let sni = sni.unwrap_or_default().to_string();
        if !alpn.iter().any(|a| ISTIO_MTLS_ALPNS.contains(&a.as_str())) {
            return Err(AutoPassthroughError::NotMeshTls { sni, offered: alpn.to_vec() });
        }
        let Some(service) = self.service(&cluster.hostname, cluster.port) else {
            return Err(AutoPassthroughError::UnknownService { sni, hostname: cluster.hostname, port: cluster.port });
        };
        let all = match &cluster.subset {
            None => service.endpoints.as_slice(),
            Some(subset) => match service.subsets.get(subset) {
                Some(endpoints) => endpoints.as_slice(),
                None => {
                    let (hostname, subset) = (cluster.hostname, subset.clone());
                    return Err(AutoPassthroughError::UnknownSubset { sni, hostname, subset });
                }
            },
        };
        let endpoints: Vec<Endpoint> =
            all.iter().filter(|e| matches!(e.tls, UpstreamTls::IstioMutual { .. })).cloned().collect();
        if endpoints.is_empty() {
            let (hostname, port, subset) = (cluster.hostname, cluster.port, cluster.subset);
            return Err(AutoPassthroughError::NoMeshEndpoint { sni, hostname, port, subset });
        }
        Ok(AutoPassthroughTarget { cluster, service, endpoints })
    }
}
