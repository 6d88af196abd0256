//! The local address plan: pods on the bridge subnet, virtual ClusterIPs, and /30 edge links.
//!
//! Defaults: bridge `10.209.0.1/16`, pods from `10.209.0.10`; ClusterIPs from `10.210.0.1`
//! (never assigned to an interface, only matched by iptables or resolved by proxies); edge
//! links as consecutive /30 blocks of `10.211.0.0/16`. Allocation is deterministic: the same
//! sequence of requests always yields the same addresses.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::LocalError;

/// An IPv4 address with a prefix length, e.g. `10.209.0.10/16`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ipv4Cidr {
    /// The address (an interface address, not necessarily the network address).
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub prefix: u8,
}

impl Ipv4Cidr {
    /// Builds a CIDR; errors with [`LocalError::Cidr`] when `prefix > 32`.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, LocalError> {
        if prefix > 32 {
            return Err(LocalError::Cidr {
                value: format!("{addr}/{prefix}"),
                reason: "prefix must be 0..=32",
            });
        }
        Ok(Ipv4Cidr { addr, prefix })
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// Number of addresses in the prefix (2^(32-prefix)), as u64 to hold /0.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = LocalError;

    fn from_str(s: &str) -> Result<Self, LocalError> {
        let bad = |reason| LocalError::Cidr {
            value: s.to_string(),
            reason,
        };
        let (addr, prefix) = s.split_once('/').ok_or_else(|| bad("missing /prefix"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| bad("prefix is not a number"))?;
        Ipv4Cidr::new(addr, prefix)
    }
}

/// The two ends of an edge link: `host` goes on the host side, `ns` inside the namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EdgeAddrs {
    /// Host-side address, `/30`.
    pub host: Ipv4Cidr,
    /// Namespace-side address, `/30`.
    pub ns: Ipv4Cidr,
}

/// A sequential allocator over one range.
#[derive(Clone, Debug)]
struct Range {
    cidr: Ipv4Cidr,
    first_offset: u32,
    step: u32,
    next: u32,
}

impl Range {
    fn take(&mut self) -> Result<Ipv4Addr, LocalError> {
        let offset = u64::from(self.first_offset) + u64::from(self.next) * u64::from(self.step);
        // Single addresses never take the last (broadcast) address; blocks must fit whole.
        let end = if self.step <= 1 {
            offset + 2
        } else {
            offset + u64::from(self.step)
        };
        if end > self.cidr.size() {
            return Err(LocalError::Exhausted {
                range: self.cidr.to_string(),
                allocated: self.next,
            });
        }
        let base = u32::from(self.cidr.network());
        let offset = u32::try_from(offset).map_err(|_| LocalError::Exhausted {
            range: self.cidr.to_string(),
            allocated: self.next,
        })?;
        self.next += 1;
        Ok(Ipv4Addr::from(base.wrapping_add(offset)))
    }
}

/// Hands out pod addresses, ClusterIPs and edge-link /30s in request order.
#[derive(Clone, Debug)]
pub struct AddressPlan {
    bridge: Ipv4Cidr,
    pods: Range,
    cluster_ips: Range,
    edges: Range,
}

impl Default for AddressPlan {
    fn default() -> Self {
        AddressPlan::new(
            Ipv4Cidr {
                addr: Ipv4Addr::new(10, 209, 0, 1),
                prefix: 16,
            },
            Ipv4Cidr {
                addr: Ipv4Addr::new(10, 210, 0, 0),
                prefix: 16,
            },
            Ipv4Cidr {
                addr: Ipv4Addr::new(10, 211, 0, 0),
                prefix: 16,
            },
        )
    }
}

impl AddressPlan {
    /// A plan with the given ranges: `bridge` is the bridge's own address with the pod
    /// prefix (pods start at network + 10), `cluster_ips` starts at network + 1, `edges`
    /// is cut into /30 blocks from its network address.
    pub fn new(bridge: Ipv4Cidr, cluster_ips: Ipv4Cidr, edges: Ipv4Cidr) -> Self {
        AddressPlan {
            bridge,
            pods: Range {
                cidr: bridge,
                first_offset: 10,
                step: 1,
                next: 0,
            },
            cluster_ips: Range {
                cidr: cluster_ips,
                first_offset: 1,
                step: 1,
                next: 0,
            },
            edges: Range {
                cidr: edges,
                first_offset: 0,
                step: 4,
                next: 0,
            },
        }
    }

    /// The bridge's address and prefix (also every pod's gateway).
    pub fn bridge(&self) -> Ipv4Cidr {
        self.bridge
    }

    /// The next pod address, with the bridge prefix. Errors with [`LocalError::Exhausted`].
    pub fn next_pod(&mut self) -> Result<Ipv4Cidr, LocalError> {
        Ok(Ipv4Cidr {
            addr: self.pods.take()?,
            prefix: self.bridge.prefix,
        })
    }

    /// The next virtual ClusterIP. Errors with [`LocalError::Exhausted`].
    pub fn next_cluster_ip(&mut self) -> Result<Ipv4Addr, LocalError> {
        self.cluster_ips.take()
    }

    /// The next edge /30: `.1` for the host, `.2` for the namespace.
    pub fn next_edge(&mut self) -> Result<EdgeAddrs, LocalError> {
        let block = u32::from(self.edges.take()?);
        Ok(EdgeAddrs {
            host: Ipv4Cidr {
                addr: Ipv4Addr::from(block + 1),
                prefix: 30,
            },
            ns: Ipv4Cidr {
                addr: Ipv4Addr::from(block + 2),
                prefix: 30,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_plan_is_deterministic() {
        let mut plan = AddressPlan::default();
        assert_eq!(plan.bridge().to_string(), "10.209.0.1/16");
        assert_eq!(plan.next_pod().unwrap().to_string(), "10.209.0.10/16");
        assert_eq!(plan.next_pod().unwrap().to_string(), "10.209.0.11/16");
        assert_eq!(
            plan.next_cluster_ip().unwrap(),
            Ipv4Addr::new(10, 210, 0, 1)
        );
        let e = plan.next_edge().unwrap();
        assert_eq!(
            (e.host.to_string(), e.ns.to_string()),
            ("10.211.0.1/30".into(), "10.211.0.2/30".into())
        );
        let e = plan.next_edge().unwrap();
        assert_eq!(e.host.to_string(), "10.211.0.5/30");
    }

    #[test]
    fn small_range_runs_out() {
        let bridge: Ipv4Cidr = "10.251.0.1/28".parse().unwrap();
        let mut plan = AddressPlan::new(
            bridge,
            "10.252.0.0/30".parse().unwrap(),
            "10.253.0.0/29".parse().unwrap(),
        );
        // .10 .. .14 usable, .15 is broadcast.
        for last in 10..=14 {
            assert_eq!(
                plan.next_pod().unwrap().addr,
                Ipv4Addr::new(10, 251, 0, last)
            );
        }
        assert!(matches!(plan.next_pod(), Err(LocalError::Exhausted { .. })));
        assert!(plan.next_edge().is_ok());
        assert_eq!(
            plan.next_edge().unwrap().ns.addr,
            Ipv4Addr::new(10, 253, 0, 6)
        );
        assert!(matches!(
            plan.next_edge(),
            Err(LocalError::Exhausted { .. })
        ));
        assert!("10.0.0.1".parse::<Ipv4Cidr>().is_err());
        assert!("10.0.0.1/33".parse::<Ipv4Cidr>().is_err());
    }
}
