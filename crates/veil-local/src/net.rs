//! The local network: one Linux bridge for all pods, one network namespace per pod joined
//! to it by a veth pair, per-namespace hosts/resolv.conf files, and edge links (a separate
//! veth pair between the host and one namespace, for publishing an ingress gateway).
//!
//! Nothing here changes host-wide sysctls: pod↔pod traffic is bridged and host↔pod traffic
//! uses the bridge's own address, so IP forwarding is not needed. Because `br_netfilter` may
//! pass bridged frames through the host's `FORWARD` chain, [`Bridge::create`] inserts one
//! `ACCEPT` rule for the bridge, tagged `-m comment --comment veil`.

use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use crate::cmd::{self, HINT_IP, HINT_IPTABLES};
use crate::ipam::Ipv4Cidr;
use crate::journal::{Entry, Journal};
use crate::LocalError;

/// The iptables comment on every host rule Veil adds.
pub const RULE_COMMENT: &str = "veil";
/// Where `ip netns exec` looks for per-namespace `/etc` overrides.
pub const ETC_NETNS: &str = "/etc/netns";
/// Interface name of the pod's bridge-side veth end inside its namespace.
pub const POD_IFACE: &str = "eth0";
/// Interface name of an edge link inside its namespace.
pub const EDGE_IFACE: &str = "edge0";
const IFNAMSIZ_MAX: usize = 15;

/// A Linux bridge with an address (the pods' gateway).
#[derive(Clone, Debug)]
pub struct Bridge {
    /// Interface name, at most 15 bytes.
    pub name: String,
    /// The bridge's own address and the pod prefix.
    pub addr: Ipv4Cidr,
}

impl Bridge {
    /// Creates bridge `name` with address `addr` (e.g. `veil0`, `10.209.0.1/16`), brings it up,
    /// and inserts `FORWARD -i NAME -o NAME -j ACCEPT` in the host filter table.
    /// Errors: [`LocalError::Name`], [`LocalError::Exists`] (nothing journaled then), or
    /// [`LocalError::Command`].
    pub fn create(journal: &Journal, name: &str, addr: Ipv4Cidr) -> Result<Bridge, LocalError> {
        check_ifname(name)?;
        refuse_existing_link(name)?;
        journal.append(&Entry::Bridge {
            name: name.to_string(),
        })?;
        cmd::run(
            "ip",
            &["link", "add", "name", name, "type", "bridge"],
            HINT_IP,
        )?;
        cmd::run(
            "ip",
            &["addr", "add", &addr.to_string(), "dev", name],
            HINT_IP,
        )?;
        cmd::run("ip", &["link", "set", name, "up"], HINT_IP)?;
        let rule = forward_rule(name);
        journal.append(&Entry::HostRule {
            table: "filter".into(),
            chain: "FORWARD".into(),
            rule: rule.clone(),
        })?;
        let mut args: Vec<&str> = vec!["-w", "5", "-t", "filter", "-I", "FORWARD", "1"];
        args.extend(rule.iter().map(String::as_str));
        cmd::run("iptables", &args, HINT_IPTABLES)?;
        Ok(Bridge {
            name: name.to_string(),
            addr,
        })
    }
}

fn forward_rule(bridge: &str) -> Vec<String> {
    [
        "-i",
        bridge,
        "-o",
        bridge,
        "-m",
        "comment",
        "--comment",
        RULE_COMMENT,
        "-j",
        "ACCEPT",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// One pod: a network namespace on the bridge.
#[derive(Clone, Debug)]
pub struct Host {
    /// Network namespace name.
    pub netns: String,
    /// Host-side veth name (enslaved to the bridge).
    pub veth: String,
    /// The pod's address on the bridge.
    pub addr: Ipv4Cidr,
}

impl Host {
    /// Creates netns `netns`, a veth pair (host end on `bridge`, `eth0` inside with `addr`),
    /// brings `lo` up and routes by default via `gateway` (the bridge address).
    /// Errors: [`LocalError::Name`], [`LocalError::Exists`], [`LocalError::Command`].
    pub fn create(
        journal: &Journal,
        netns: &str,
        bridge: &Bridge,
        addr: Ipv4Cidr,
        gateway: Ipv4Addr,
    ) -> Result<Host, LocalError> {
        check_netns_name(netns)?;
        let veth = veth_name(netns, 'h');
        if netns_exists(netns) {
            return Err(LocalError::Exists {
                what: "netns",
                name: netns.to_string(),
            });
        }
        refuse_existing_link(&veth)?;
        journal.append(&Entry::Netns {
            name: netns.to_string(),
        })?;
        cmd::run("ip", &["netns", "add", netns], "are you root?")?;
        journal.append(&Entry::Link { name: veth.clone() })?;
        cmd::run(
            "ip",
            &[
                "link", "add", &veth, "type", "veth", "peer", "name", POD_IFACE, "netns", netns,
            ],
            HINT_IP,
        )?;
        cmd::run(
            "ip",
            &["link", "set", &veth, "master", &bridge.name],
            HINT_IP,
        )?;
        cmd::run("ip", &["link", "set", &veth, "up"], HINT_IP)?;
        cmd::run("ip", &["-n", netns, "link", "set", "lo", "up"], HINT_IP)?;
        cmd::run(
            "ip",
            &[
                "-n",
                netns,
                "addr",
                "add",
                &addr.to_string(),
                "dev",
                POD_IFACE,
            ],
            HINT_IP,
        )?;
        cmd::run(
            "ip",
            &["-n", netns, "link", "set", POD_IFACE, "up"],
            HINT_IP,
        )?;
        cmd::run(
            "ip",
            &[
                "-n",
                netns,
                "route",
                "add",
                "default",
                "via",
                &gateway.to_string(),
            ],
            HINT_IP,
        )?;
        Ok(Host {
            netns: netns.to_string(),
            veth,
            addr,
        })
    }

    /// Writes `/etc/netns/<netns>/hosts` (localhost lines, then one line per entry, e.g.
    /// `10.209.0.11 reviews reviews.default reviews.default.svc.cluster.local`) and a
    /// `resolv.conf` pointing at 127.0.0.1 with a 1 s timeout and one attempt, where nothing
    /// listens, so names not in the hosts file fail fast. Safe to call again to update.
    pub fn write_hosts(
        &self,
        journal: &Journal,
        entries: &[(IpAddr, Vec<String>)],
    ) -> Result<PathBuf, LocalError> {
        write_netns_files(journal, Path::new(ETC_NETNS), &self.netns, entries)
    }
}

/// Writes the hosts and resolv.conf files for `netns` under `etc_netns`; returns the directory.
pub(crate) fn write_netns_files(
    journal: &Journal,
    etc_netns: &Path,
    netns: &str,
    entries: &[(IpAddr, Vec<String>)],
) -> Result<PathBuf, LocalError> {
    check_netns_name(netns)?;
    let dir = etc_netns.join(netns);
    if !dir.exists() {
        journal.append(&Entry::EtcNetns { path: dir.clone() })?;
        fs::create_dir_all(&dir).map_err(|e| LocalError::io("create", &dir, e))?;
    }
    let hosts = dir.join("hosts");
    fs::write(&hosts, render_hosts(entries)).map_err(|e| LocalError::io("write", &hosts, e))?;
    let resolv = dir.join("resolv.conf");
    let text = "# written by veil: names come from the hosts file only\nnameserver 127.0.0.1\noptions timeout:1 attempts:1\n";
    fs::write(&resolv, text).map_err(|e| LocalError::io("write", &resolv, e))?;
    Ok(dir)
}

/// The text of a hosts file: localhost lines, then `ip name name…` per entry (skipping
/// entries without names).
pub fn render_hosts(entries: &[(IpAddr, Vec<String>)]) -> String {
    let mut text =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for (ip, names) in entries.iter().filter(|(_, names)| !names.is_empty()) {
        let _ = writeln!(text, "{ip}\t{}", names.join(" "));
    }
    text
}

/// A point-to-point veth pair between the host and one namespace, off the bridge.
#[derive(Clone, Debug)]
pub struct EdgeLink {
    /// Namespace the inner end (`edge0`) lives in.
    pub netns: String,
    /// Host-side interface name.
    pub veth: String,
    /// Host-side address (/30).
    pub host_addr: Ipv4Cidr,
    /// Namespace-side address (/30).
    pub ns_addr: Ipv4Cidr,
}

impl EdgeLink {
    /// Creates the pair, addresses both ends and brings them up. The namespace keeps its
    /// default route via the bridge; the /30 route answers the host directly.
    /// Errors: [`LocalError::Command`] (does the netns exist? are you root?).
    pub fn create(
        journal: &Journal,
        netns: &str,
        host_addr: Ipv4Cidr,
        ns_addr: Ipv4Cidr,
    ) -> Result<EdgeLink, LocalError> {
        check_netns_name(netns)?;
        let veth = veth_name(netns, 'e');
        refuse_existing_link(&veth)?;
        journal.append(&Entry::Link { name: veth.clone() })?;
        cmd::run(
            "ip",
            &[
                "link", "add", &veth, "type", "veth", "peer", "name", EDGE_IFACE, "netns", netns,
            ],
            HINT_IP,
        )?;
        cmd::run(
            "ip",
            &["addr", "add", &host_addr.to_string(), "dev", &veth],
            HINT_IP,
        )?;
        cmd::run("ip", &["link", "set", &veth, "up"], HINT_IP)?;
        cmd::run(
            "ip",
            &[
                "-n",
                netns,
                "addr",
                "add",
                &ns_addr.to_string(),
                "dev",
                EDGE_IFACE,
            ],
            HINT_IP,
        )?;
        cmd::run(
            "ip",
            &["-n", netns, "link", "set", EDGE_IFACE, "up"],
            HINT_IP,
        )?;
        Ok(EdgeLink {
            netns: netns.to_string(),
            veth,
            host_addr,
            ns_addr,
        })
    }
}

/// Host-side veth name for `netns`: up to 10 bytes of the name, 4 hex digits of its FNV-1a
/// hash, and `kind` (`h` bridge port, `e` edge link) — at most 15 bytes, deterministic, and
/// starting with the netns name's prefix so that [`crate::sweep`] finds it.
pub fn veth_name(netns: &str, kind: char) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in netns.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let base: String = netns.chars().take(10).collect();
    format!("{base}{:04x}{kind}", hash & 0xffff)
}

/// Refuses to journal (and later delete) an interface that is not ours.
fn refuse_existing_link(name: &str) -> Result<(), LocalError> {
    if link_exists(name) {
        return Err(LocalError::Exists {
            what: "link",
            name: name.to_string(),
        });
    }
    Ok(())
}

/// True when interface `name` exists in the host namespace.
pub(crate) fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// True when network namespace `name` is pinned under `/run/netns`.
pub(crate) fn netns_exists(name: &str) -> bool {
    crate::process::netns_path(name).exists()
}

fn check_ifname(name: &str) -> Result<(), LocalError> {
    if name.is_empty() || name.len() > IFNAMSIZ_MAX {
        return Err(LocalError::Name {
            name: name.into(),
            reason: "interface names are 1 to 15 bytes",
        });
    }
    check_chars(name)
}

/// Netns names: 1–64 bytes of `[A-Za-z0-9._-]`, not starting with `-` or `.`.
pub(crate) fn check_netns_name(name: &str) -> Result<(), LocalError> {
    if name.is_empty() || name.len() > 64 || name.starts_with(['-', '.']) {
        return Err(LocalError::Name {
            name: name.into(),
            reason: "use 1 to 64 bytes not starting with - or .",
        });
    }
    check_chars(name)
}

fn check_chars(name: &str) -> Result<(), LocalError> {
    if name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        Ok(())
    } else {
        Err(LocalError::Name {
            name: name.into(),
            reason: "use only letters, digits, '.', '_' and '-'",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_are_short_deterministic_and_keep_the_prefix() {
        let a = veth_name("veil-bookinfo-reviews-v1", 'h');
        assert_eq!(a, veth_name("veil-bookinfo-reviews-v1", 'h'));
        assert!(a.len() <= 15 && a.starts_with("veil-booki"), "{a}");
        assert_ne!(a, veth_name("veil-bookinfo-reviews-v2", 'h'));
        assert_ne!(a, veth_name("veil-bookinfo-reviews-v1", 'e'));
        assert_eq!(veth_name("a", 'h').len(), 6);
    }

    #[test]
    fn hosts_file_has_localhost_and_all_names() {
        let text = render_hosts(&[
            (
                "10.209.0.11".parse().unwrap(),
                vec!["b".into(), "b.ns".into(), "b.ns.svc.cluster.local".into()],
            ),
            ("10.209.0.12".parse().unwrap(), vec![]),
        ]);
        assert!(text.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(text.contains("10.209.0.11\tb b.ns b.ns.svc.cluster.local\n"));
        assert!(!text.contains("10.209.0.12"));
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(check_netns_name("../etc").is_err());
        assert!(check_netns_name("ok-name_1.2").is_ok());
        assert!(check_ifname("sixteen-bytes-xx").is_err());
    }
}
