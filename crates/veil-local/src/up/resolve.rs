//! Name resolution at config time, for ServiceEntries with `resolution: DNS`:
//! first what every pod's hosts file says (Services' ClusterIPs, external
//! workloads' `hosts`), then the host's resolver (`getaddrinfo`), bounded
//! in time so that a missing DNS server does not stall `veil up`.

use std::net::{IpAddr, ToSocketAddrs};
use std::sync::mpsc;
use std::time::Duration;

/// Bound on one `getaddrinfo` call, in milliseconds.
pub const LOOKUP_TIMEOUT_MS: u64 = 2000;

/// The hosts-file entries of the mesh and, behind them, the host's resolver.
#[derive(Debug, Clone, Default)]
pub struct Resolver {
    /// `(address, names)`, as written to every pod's hosts file.
    pub hosts: Vec<(IpAddr, Vec<String>)>,
}

impl Resolver {
    /// The addresses of `name` (case-insensitive): the hosts entries that
    /// name it, else the host's resolver; empty when neither knows it or
    /// the lookup takes longer than [`LOOKUP_TIMEOUT_MS`].
    pub fn resolve(&self, name: &str) -> Vec<IpAddr> {
        let from_hosts: Vec<IpAddr> = self
            .hosts
            .iter()
            .filter(|(_, names)| names.iter().any(|n| n.eq_ignore_ascii_case(name)))
            .map(|(ip, _)| *ip)
            .collect();
        if !from_hosts.is_empty() {
            return from_hosts;
        }
        getaddrinfo(name, Duration::from_millis(LOOKUP_TIMEOUT_MS))
    }
}

/// The host resolver's addresses for `name`, de-duplicated, or none after `timeout`.
fn getaddrinfo(name: &str, timeout: Duration) -> Vec<IpAddr> {
    let (tx, rx) = mpsc::channel();
    let owned = name.to_string();
    let spawned = std::thread::Builder::new().name("veil-resolve".into()).spawn(move || {
        let found: Vec<IpAddr> = (owned.as_str(), 0).to_socket_addrs().map(|a| a.map(|s| s.ip()).collect()).unwrap_or_default();
        let _ = tx.send(found);
    });
    if spawned.is_err() {
        return Vec::new();
    }
    let mut out: Vec<IpAddr> = rx.recv_timeout(timeout).unwrap_or_default();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_entries_come_first_then_the_host_resolver() {
        let ip: IpAddr = "10.209.250.10".parse().unwrap();
        let r = Resolver { hosts: vec![(ip, vec!["external-service.example".into(), "localhost".into()])] };
        assert_eq!(r.resolve("External-Service.example"), vec![ip]);
        assert_eq!(r.resolve("localhost"), vec![ip], "the mesh's entry wins");
        let host = Resolver::default();
        assert!(host.resolve("localhost").contains(&IpAddr::from([127, 0, 0, 1])), "then the host's /etc/hosts");
    }
}
