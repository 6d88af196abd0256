//! The ServiceEntry and egress part of `ProxyConfig`'s outbound section:
//! how a captured connection is recognised as a ServiceEntry port (by the
//! address the workload dialled), and what happens to a destination no
//! Service or ServiceEntry matches (`outboundTrafficPolicy`). Re-exported
//! from `crate::config`.
//!
//! Follows <https://istio.io/latest/docs/reference/config/networking/service-entry/>
//! (spec §1.7) and MeshConfig `outboundTrafficPolicy`
//! (<https://istio.io/latest/docs/reference/config/istio.mesh.v1alpha1/#MeshConfig-OutboundTrafficPolicy-Mode>).

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

use crate::config::UpstreamTls;

/// MeshConfig `outboundTrafficPolicy.mode`: what a sidecar does with a
/// connection to a destination that no Service or ServiceEntry describes.
///
/// Istio's default is `ALLOW_ANY` (`pkg/config/mesh/mesh.go`), although the
/// proto's zero value is `REGISTRY_ONLY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundTrafficPolicy {
    /// Passed through, in plain, to the address the workload dialled
    /// (Envoy's `PassthroughCluster`).
    #[default]
    AllowAny,
    /// Refused, with a log line naming the destination (Envoy's
    /// `BlackHoleCluster`). Not a firewall: it exists to find missing
    /// ServiceEntries.
    RegistryOnly,
}

impl std::fmt::Display for OutboundTrafficPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OutboundTrafficPolicy::AllowAny => "ALLOW_ANY",
            OutboundTrafficPolicy::RegistryOnly => "REGISTRY_ONLY",
        })
    }
}

impl OutboundTrafficPolicy {
    /// Parses Istio's names (`ALLOW_ANY`, `REGISTRY_ONLY`; `ALLOW_ANY_DYNAMIC_DNS`
    /// is taken as `ALLOW_ANY`), case-insensitive. `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_uppercase().as_str() {
            "ALLOW_ANY" | "ALLOW_ANY_DYNAMIC_DNS" => Some(OutboundTrafficPolicy::AllowAny),
            "REGISTRY_ONLY" => Some(OutboundTrafficPolicy::RegistryOnly),
            _ => None,
        }
    }
}

/// An IP address with a prefix length (`140.82.112.0/20`, `10.0.0.7/32`,
/// `fd00::/8`); a bare address is a host prefix. Serialised as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    pub addr: IpAddr,
    /// 0..=32 for IPv4, 0..=128 for IPv6.
    pub prefix: u8,
}

impl Cidr {
    /// The host prefix of `addr` (/32 or /128).
    pub fn host(addr: IpAddr) -> Cidr {
        Cidr { addr, prefix: if addr.is_ipv4() { 32 } else { 128 } }
    }

    /// Parses `addr` or `addr/prefix`.
    ///
    /// Errors: a message naming the text and what is wrong with it.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| format!("{text:?} is not an IP address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("{text:?} has a prefix length outside 0..={max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }

    /// True when `ip` is inside the prefix (same address family).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (a, b, bits) = match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32u32),
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
            _ => return false,
        };
        let host_bits = bits - u32::from(self.prefix).min(bits);
        let mask = if host_bits >= 128 { 0 } else { u128::MAX << host_bits };
        a & mask == b & mask
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl TryFrom<String> for Cidr {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Cidr::parse(&text)
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        c.to_string()
    }
}

/// How one ServiceEntry port (an [`crate::config::OutboundService`] with
/// the same `host` and `port`) is found by the address the workload
/// dialled, and, for `resolution: NONE`, where its connections go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryMatch {
    /// The ServiceEntry host (`OutboundService::hostname`).
    pub host: String,
    /// The ServiceEntry port (`OutboundService::port`).
    pub port: u16,
    /// Destination addresses that mean this entry: the ServiceEntry's
    /// `addresses` (VIPs, CIDRs), else for `STATIC`/`DNS` the addresses of
    /// its endpoints (what the workload's resolver returns for the host).
    /// Empty: every address on the port (`NONE` without `addresses`; the
    /// proto warns that such a TCP entry takes the whole port).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<Cidr>,
    /// The ServiceEntry has no `addresses`: on an HTTP or TLS port its
    /// hosts also match by `Host` or SNI (istiod's `0.0.0.0:<port>`
    /// listener), so a `STATIC`/`DNS` entry is found when the workload
    /// dialled an address of the host its endpoints do not list (a DNS
    /// answer that moved, another CDN address).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub by_name: bool,
    /// `resolution: NONE`: the connection goes to the address the workload
    /// dialled (Envoy `ORIGINAL_DST`), with this TLS. `None` for entries
    /// with endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_destination: Option<UpstreamTls>,
}

impl EntryMatch {
    /// True when a connection to `ip` on this entry's port means it.
    pub fn matches(&self, ip: IpAddr) -> bool {
        self.addresses.is_empty() || self.addresses.iter().any(|c| c.contains(ip))
    }
}
