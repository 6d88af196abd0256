//! iptables rules inside a pod's network namespace.
//!
//! Sidecar pods get Istio's transparent interception (istio/istio `tools/istio-iptables`):
//! inbound TCP is redirected to the proxy's inbound port (15006) except the proxy's own
//! ports, outbound TCP to its outbound port (15001) except traffic of the proxy's uid/gid
//! (1337) and loopback traffic. Pods without a sidecar get kube-proxy-like ClusterIP DNAT
//! rules, so that they reach Services by their virtual ClusterIP.
//!
//! Rules are loaded with `iptables-restore --noflush`: declaring a chain flushes it, so
//! installing again replaces Veil's chains without touching anything else. This works with
//! both the nft and the legacy backend of the `iptables` command.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::cmd::{self, HINT_IPTABLES};
use crate::LocalError;

/// Chain jumped to from nat `PREROUTING` (Istio: `ISTIO_INBOUND`).
pub const INBOUND_CHAIN: &str = "VEIL_INBOUND";
/// Chain jumped to from nat `OUTPUT` (Istio: `ISTIO_OUTPUT`).
pub const OUTPUT_CHAIN: &str = "VEIL_OUTPUT";
/// Chain jumped to from nat `OUTPUT` in pods without a sidecar (kube-proxy: `KUBE-SERVICES`).
pub const SERVICES_CHAIN: &str = "VEIL_SERVICES";
/// The proxy's own ports, never redirected inbound: admin, outbound, inbound, metrics, health.
pub const PROXY_PORTS: [u16; 5] = [15000, 15001, 15006, 15020, 15021];

/// Parameters of sidecar interception; [`Default`] gives Istio's values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterceptionSettings {
    /// The proxy's uid (and gid), whose own traffic is not redirected. Istio: 1337.
    pub proxy_uid: u32,
    /// Where inbound TCP is redirected. Istio: 15006.
    pub inbound_port: u16,
    /// Where outbound TCP is redirected. Istio: 15001.
    pub outbound_port: u16,
    /// Inbound ports not redirected, in addition to [`PROXY_PORTS`]
    /// (Istio annotation `traffic.sidecar.istio.io/excludeInboundPorts`).
    pub exclude_inbound_ports: Vec<u16>,
}

impl Default for InterceptionSettings {
    fn default() -> Self {
        InterceptionSettings {
            proxy_uid: 1337,
            inbound_port: 15006,
            outbound_port: 15001,
            exclude_inbound_ports: Vec::new(),
        }
    }
}

/// Installs (or replaces) sidecar interception in `netns`.
/// Errors with [`LocalError::Command`] when `iptables-restore` fails (root? iptables installed?).
pub fn install_sidecar_interception(
    netns: &str,
    settings: &InterceptionSettings,
) -> Result<(), LocalError> {
    restore(netns, &sidecar_rules(settings))?;
    ensure_jump(netns, "PREROUTING", INBOUND_CHAIN)?;
    ensure_jump(netns, "OUTPUT", OUTPUT_CHAIN)
}

/// The `iptables-restore` text for the two sidecar chains.
pub fn sidecar_rules(settings: &InterceptionSettings) -> String {
    let mut ports: Vec<u16> = PROXY_PORTS.to_vec();
    ports.extend(settings.exclude_inbound_ports.iter().copied());
    ports.sort_unstable();
    ports.dedup();
    let mut text = format!("*nat\n:{INBOUND_CHAIN} - [0:0]\n:{OUTPUT_CHAIN} - [0:0]\n");
    for port in ports {
        let _ = writeln!(text, "-A {INBOUND_CHAIN} -p tcp --dport {port} -j RETURN");
    }
    let _ = writeln!(text, "-A {INBOUND_CHAIN} -p tcp -i lo -j RETURN");
    let _ = writeln!(
        text,
        "-A {INBOUND_CHAIN} -p tcp -j REDIRECT --to-ports {}",
        settings.inbound_port
    );
    let uid = settings.proxy_uid;
    let _ = writeln!(
        text,
        "-A {OUTPUT_CHAIN} -p tcp -m owner --uid-owner {uid} -j RETURN"
    );
    let _ = writeln!(
        text,
        "-A {OUTPUT_CHAIN} -p tcp -m owner --gid-owner {uid} -j RETURN"
    );
    let _ = writeln!(text, "-A {OUTPUT_CHAIN} -p tcp -d 127.0.0.1/32 -j RETURN");
    let _ = writeln!(text, "-A {OUTPUT_CHAIN} -p tcp -o lo -j RETURN");
    let _ = writeln!(
        text,
        "-A {OUTPUT_CHAIN} -p tcp -j REDIRECT --to-ports {}",
        settings.outbound_port
    );
    text.push_str("COMMIT\n");
    text
}

/// One Service port backed by one endpoint; several rules with the same
/// (`cluster_ip`, `port`) spread connections across their endpoints at random.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterIpRule {
    /// The Service's virtual address.
    pub cluster_ip: Ipv4Addr,
    /// The Service port.
    pub port: u16,
    /// A ready endpoint's pod address.
    pub endpoint_ip: Ipv4Addr,
    /// The endpoint's container port (Service `targetPort`).
    pub target_port: u16,
}

/// Installs (or replaces) ClusterIP DNAT rules in `netns`, for pods without a sidecar.
/// Errors with [`LocalError::Command`] when `iptables-restore` fails.
pub fn install_cluster_ip_rules(netns: &str, rules: &[ClusterIpRule]) -> Result<(), LocalError> {
    restore(netns, &cluster_ip_rules(rules))?;
    ensure_jump(netns, "OUTPUT", SERVICES_CHAIN)
}

/// The `iptables-restore` text for [`install_cluster_ip_rules`]: for n endpoints of one
/// service port, rule i (0-based) matches with probability 1/(n-i) and the last always,
/// which is kube-proxy's uniform choice.
pub fn cluster_ip_rules(rules: &[ClusterIpRule]) -> String {
    let mut order: Vec<(Ipv4Addr, u16)> = Vec::new();
    let mut groups: BTreeMap<(Ipv4Addr, u16), Vec<&ClusterIpRule>> = BTreeMap::new();
    for rule in rules {
        let key = (rule.cluster_ip, rule.port);
        if !groups.contains_key(&key) {
            order.push(key);
        }
        groups.entry(key).or_default().push(rule);
    }
    let mut text = format!("*nat\n:{SERVICES_CHAIN} - [0:0]\n");
    for key in order {
        let endpoints = groups.get(&key).map(Vec::as_slice).unwrap_or_default();
        let n = endpoints.len();
        for (i, ep) in endpoints.iter().enumerate() {
            let _ = write!(
                text,
                "-A {SERVICES_CHAIN} -d {}/32 -p tcp --dport {}",
                key.0, key.1
            );
            if i + 1 < n {
                let _ = write!(
                    text,
                    " -m statistic --mode random --probability {:.8}",
                    1.0 / (n - i) as f64
                );
            }
            let _ = writeln!(
                text,
                " -j DNAT --to-destination {}:{}",
                ep.endpoint_ip, ep.target_port
            );
        }
    }
    text.push_str("COMMIT\n");
    text
}

fn restore(netns: &str, rules: &str) -> Result<(), LocalError> {
    crate::net::check_netns_name(netns)?;
    cmd::in_netns(
        netns,
        "iptables-restore",
        &["-w", "5", "--noflush"],
        Some(rules),
        HINT_IPTABLES,
    )
    .map(drop)
}

/// Adds `-A FROM -p tcp -j TO` in the nat table unless it is already there.
fn ensure_jump(netns: &str, from: &str, to: &str) -> Result<(), LocalError> {
    let rule = ["-t", "nat", "-C", from, "-p", "tcp", "-j", to];
    let mut check = vec!["netns", "exec", netns, "iptables", "-w", "5"];
    check.extend_from_slice(&rule);
    if cmd::succeeds("ip", &check) {
        return Ok(());
    }
    cmd::in_netns(
        netns,
        "iptables",
        &["-w", "5", "-t", "nat", "-A", from, "-p", "tcp", "-j", to],
        None,
        HINT_IPTABLES,
    )
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_rules_follow_istio_order() {
        let text = sidecar_rules(&InterceptionSettings {
            exclude_inbound_ports: vec![22, 15000],
            ..Default::default()
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.contains("--dport") && l.ends_with("RETURN"))
                .count(),
            6
        );
        let inbound_redirect = lines
            .iter()
            .position(|l| l.contains("--to-ports 15006"))
            .unwrap();
        let lo = lines
            .iter()
            .position(|l| l.contains("-i lo -j RETURN"))
            .unwrap();
        assert!(lo < inbound_redirect);
        let uid = lines
            .iter()
            .position(|l| l.contains("--uid-owner 1337 -j RETURN"))
            .unwrap();
        let outbound_redirect = lines
            .iter()
            .position(|l| l.contains("--to-ports 15001"))
            .unwrap();
        assert!(uid < outbound_redirect && text.contains("--gid-owner 1337"));
        assert!(text.ends_with("COMMIT\n"));
    }

    #[test]
    fn cluster_ip_rules_spread_over_endpoints() {
        let rule = |ep: u8| ClusterIpRule {
            cluster_ip: Ipv4Addr::new(10, 210, 0, 1),
            port: 80,
            endpoint_ip: Ipv4Addr::new(10, 209, 0, ep),
            target_port: 8080,
        };
        let text = cluster_ip_rules(&[rule(10), rule(11), rule(12)]);
        assert!(text.contains("--probability 0.33333333 -j DNAT --to-destination 10.209.0.10:8080"));
        assert!(text.contains("--probability 0.50000000 -j DNAT --to-destination 10.209.0.11:8080"));
        assert!(text.contains("--dport 80 -j DNAT --to-destination 10.209.0.12:8080"));
        let single = cluster_ip_rules(&[rule(10)]);
        assert!(!single.contains("statistic"));
    }
}
