//! ServiceEntry ports that no address identifies (`resolution: NONE`
//! without `addresses`), and the HTTP and TLS ports of `STATIC`/`DNS`
//! entries without `addresses` when the dialled address is not one of their
//! endpoints: which entry a connection to such a port means.
//!
//! Follows <https://istio.io/latest/docs/reference/config/networking/service-entry/>
//! (spec §1.7: `hosts` are "matched against Host/authority for HTTP and SNI
//! for TLS"; without `addresses` a TCP entry is identified "by port only")
//! and how istiod builds the `0.0.0.0:<port>` outbound listener for them:
//! - an HTTP port (HTTP, HTTP2, GRPC) is one route table whose virtual
//!   hosts are the entries' hosts: each request goes to the entry whose host
//!   matches its `Host` (authority), exact first, then the longest wildcard;
//! - a TLS port (TLS, HTTPS) has one filter chain per entry, matched by the
//!   ClientHello's SNI, in the same order;
//! - an opaque TCP port (TCP, MongoDB, MySQL, ...) can only be matched by
//!   port: the first such entry takes every connection to the port, whatever
//!   the address (the proto's warning), and then name matching on that port
//!   does not apply.
//!
//! A Host or SNI that no entry names is an unknown destination: passed
//! through under `ALLOW_ANY`, refused under `REGISTRY_ONLY` (see
//! `crate::mesh_config`). Entries found by address ([`Outbound::lookup`]'s
//! earlier steps) are not affected.

use crate::config::{Outbound, OutboundService, Protocol};
use crate::routes::host_covers;

/// How connections to one port are matched to the ServiceEntries on it
/// that no address identifies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PortNames<'a> {
    /// No such entry uses the port.
    None,
    /// An opaque TCP entry takes the whole port.
    Port(&'a OutboundService),
    /// By name: `Host` for the `http` entries, SNI for the `tls` entries.
    Names { http: bool, tls: bool },
}

impl Outbound {
    /// True when `service` is a ServiceEntry port that no address
    /// identifies (found by name or by port only).
    pub fn is_unaddressed(&self, service: &OutboundService) -> bool {
        self.entry(&service.hostname, service.port).is_some_and(|e| e.addresses.is_empty())
    }

    /// The ServiceEntry ports on `port` that a name can identify, in
    /// config order: every entry without `addresses` (for `STATIC`/`DNS`,
    /// its HTTP and TLS ports; its TCP ports stay matched by its endpoints'
    /// addresses).
    fn unaddressed_on(&self, port: u16) -> impl Iterator<Item = &OutboundService> + '_ {
        self.entries
            .iter()
            .filter(move |e| e.port == port && e.by_name)
            .filter_map(move |e| self.service(&e.host, e.port).map(|s| (e, s)))
            .filter(|(e, s)| e.addresses.is_empty() || s.protocol.is_http() || s.protocol == Protocol::Tls)
            .map(|(_, s)| s)
    }

    /// How connections to `port` are matched to its unaddressed entries.
    pub fn names_on(&self, port: u16) -> PortNames<'_> {
        let (mut http, mut tls) = (false, false);
        for service in self.unaddressed_on(port) {
            match service.protocol {
                p if p.is_http() => http = true,
                Protocol::Tls => tls = true,
                _ => return PortNames::Port(service),
            }
        }
        if http || tls {
            PortNames::Names { http, tls }
        } else {
            PortNames::None
        }
    }

    /// The HTTP entry on `port` whose host matches `host` (a request's
    /// `Host` without port), most specific first.
    pub fn entry_by_host(&self, host: &str, port: u16) -> Option<&OutboundService> {
        best_match(self.unaddressed_on(port).filter(|s| s.protocol.is_http()), host)
    }

    /// The TLS entry on `port` whose host matches `sni`, most specific first.
    pub fn entry_by_sni(&self, sni: &str, port: u16) -> Option<&OutboundService> {
        best_match(self.unaddressed_on(port).filter(|s| s.protocol == Protocol::Tls), sni)
    }
}

/// Of `candidates`, the one whose hostname (a host pattern) matches `name`
/// most specifically: exact, then the longest wildcard suffix; the first on
/// ties.
fn best_match<'a>(candidates: impl Iterator<Item = &'a OutboundService>, name: &str) -> Option<&'a OutboundService> {
    let name = name.trim_end_matches('.');
    let mut best: Option<(usize, &OutboundService)> = None;
    for service in candidates.filter(|s| host_covers(&s.hostname, name)) {
        let score = if service.hostname.starts_with('*') { service.hostname.len() } else { usize::MAX };
        if best.is_none_or(|(b, _)| score > b) {
            best = Some((score, service));
        }
    }
    best.map(|(_, s)| s)
}
