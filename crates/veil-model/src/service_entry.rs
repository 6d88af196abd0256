//! ServiceEntry: hosts outside (or beside) the Kubernetes registry, and the
//! outbound services a client sees for them.
//!
//! Follows istio.io/latest/docs/reference/config/networking/service-entry
//! (spec §1.7):
//! - `location` defaults to `MESH_EXTERNAL`, which turns auto-mTLS off: no
//!   TLS unless a DestinationRule sets it (`BestEffortInferServiceMTLSMode`
//!   returns Unknown); `MESH_INTERNAL` endpoints that are mesh pods get
//!   auto-mTLS like Service endpoints;
//! - `resolution` defaults to `NONE` (connections go to the address the
//!   workload dialled); `STATIC` uses the `endpoints`; `DNS` resolves the
//!   endpoints' names, else the hosts (done by the caller at config time,
//!   see [`service_entries`]); `DNS_ROUND_ROBIN` and `DYNAMIC_DNS` are DNS;
//! - a port's endpoint port is the endpoint's `ports[<port name>]`, else
//!   the port's `targetPort`, else its number;
//! - a host that is a Kubernetes Service's name is left to the Service (the
//!   ServiceEntry would only decorate it);
//! - `exportTo` (`.`, `*`, namespaces; empty: all) limits the clients.
//!
//! A sidecar finds an entry by the address it dialled (see [`EntryMatch`]),
//! or, with no address to go by, by `Host`, SNI or port (`crate::entry_names`).
//! A mesh `VirtualService` on an entry's host whose HTTP match names a port
//! the entry does not declare (seed 004: `match: port 80` for an entry of
//! port 443) makes an HTTP port of the host on the sidecars, as Istio builds
//! a virtual host for the VirtualService's hosts on every HTTP listener port
//! its routes apply to (`BuildSidecarVirtualHostWrapper`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use veil_api::{Location, Resolution, Snapshot};

use crate::authn::namespace_mode;
use crate::build::MeshInput;
use crate::client_tls::{upstream_tls, Destination, EndpointFacts, ProxyFacts};
use crate::config::*;
use crate::dr::{self, AppliedRule};
use crate::registry::{parse_protocol, selector_matches, Labels};
use crate::routes::{host_covers, resolve_host};

/// How a ServiceEntry's endpoints are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EntryResolution {
    /// To the address the workload dialled.
    None,
    /// The `endpoints` as written.
    Static,
    /// Names resolved at config time (`DNS`, `DNS_ROUND_ROBIN`, `DYNAMIC_DNS`).
    Dns,
}

/// One ServiceEntry port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryPort {
    pub number: u16,
    #[serde(default)]
    pub name: Option<String>,
    pub protocol: Protocol,
    /// `targetPort`: the endpoint port when the endpoint names none.
    #[serde(default)]
    pub target_port: Option<u16>,
}

/// One endpoint, resolved to an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryEndpoint {
    pub ip: IpAddr,
    /// The host this address was resolved for (`DNS` without endpoints);
    /// `None`: an endpoint of every host.
    #[serde(default)]
    pub host: Option<String>,
    /// Port name → endpoint port.
    #[serde(default)]
    pub ports: BTreeMap<String, u16>,
    #[serde(default)]
    pub labels: Labels,
    /// `serviceAccount`: its identity, for `MESH_INTERNAL`.
    #[serde(default)]
    pub service_account: Option<String>,
}

/// A `ServiceEntry` as the model reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceEntry {
    pub namespace: String,
    pub name: String,
    /// `hosts`, lower case.
    pub hosts: Vec<String>,
    /// `addresses` (VIPs, CIDRs).
    #[serde(default)]
    pub addresses: Vec<Cidr>,
    pub ports: Vec<EntryPort>,
    /// `location: MESH_INTERNAL`.
    #[serde(default)]
    pub mesh_internal: bool,
    pub resolution: EntryResolution,
    #[serde(default)]
    pub endpoints: Vec<EntryEndpoint>,
    /// `exportTo`; empty: every namespace.
    #[serde(default)]
    pub export_to: Vec<String>,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    /// `file:line`, for messages.
    #[serde(default)]
    pub source: String,
}

impl ServiceEntry {
    /// `namespace/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// True when `exportTo` makes it visible to clients in `ns`.
    pub fn visible_to(&self, ns: &str) -> bool {
        let e = &self.export_to;
        e.is_empty() || e.iter().any(|x| x == "*" || x == ns || (x == "." && self.namespace == ns))
    }

    /// The addresses that mean this entry when dialled: `addresses`, else
    /// (STATIC, DNS) its endpoints' addresses for `host`; empty for NONE
    /// without `addresses` (every address on the port).
    pub fn match_addresses(&self, host: &str) -> Vec<Cidr> {
        if !self.addresses.is_empty() || self.resolution == EntryResolution::None {
            return self.addresses.clone();
        }
        let mut out: Vec<Cidr> = Vec::new();
        for e in self.endpoints_for(host) {
            let c = Cidr::host(e.ip);
            if !out.contains(&c) {
                out.push(c);
            }
        }
        out
    }

    fn endpoints_for<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a EntryEndpoint> + 'a {
        self.endpoints.iter().filter(move |e| e.host.as_deref().is_none_or(|h| h == host))
    }
}

/// Resolves a DNS name to addresses; empty when it does not resolve.
pub type Resolve<'a> = &'a dyn Fn(&str) -> Vec<IpAddr>;

fn port_protocol(p: &veil_api::ServiceEntryPort) -> Protocol {
    if let Some(proto) = p.protocol.and_then(|x| parse_protocol(x.as_str())) {
        return proto;
    }
    let prefix = p.name.as_deref().and_then(|n| n.split('-').next());
    prefix.and_then(parse_protocol).unwrap_or(Protocol::Tcp)
}

/// The ServiceEntries of `snapshot`, their `DNS` names resolved with
/// `resolve`, and warnings (`file:line: ServiceEntry ns/name: …`) for what
/// was left out: addresses that are not IPs or CIDRs, names that do not
/// resolve, `unix://` endpoints, port numbers out of range.
pub fn service_entries(snapshot: &Snapshot, resolve: Resolve) -> (Vec<ServiceEntry>, Vec<String>) {
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    for r in &snapshot.service_entries {
        let id = format!("{}/{}", r.namespace_or_default(), r.meta.name);
        let mut warn = |m: String| warnings.push(format!("{}: ServiceEntry {id}: {m}", r.source));
        let spec = &r.spec;
        let resolution = match spec.resolution {
            Resolution::None => EntryResolution::None,
            Resolution::Static => EntryResolution::Static,
            Resolution::Dns | Resolution::DnsRoundRobin | Resolution::DynamicDns => EntryResolution::Dns,
        };
        let hosts: Vec<String> = spec.hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
        let mut addresses = Vec::new();
        for a in &spec.addresses {
            match Cidr::parse(a) {
                Ok(c) => addresses.push(c),
                Err(e) => warn(format!("addresses: {e}; it is ignored")),
            }
        }
        let ports = spec
            .ports
            .iter()
            .filter_map(|p| {
                Some(EntryPort {
                    number: u16::try_from(p.number).ok()?,
                    name: p.name.clone(),
                    protocol: port_protocol(p),
                    target_port: p.target_port.and_then(|t| u16::try_from(t).ok()),
                })
            })
            .collect();
        let mut endpoints = Vec::new();
        for e in &spec.endpoints {
            let ports = e.ports.iter().filter_map(|(k, v)| Some((k.clone(), u16::try_from(*v).ok()?))).collect::<BTreeMap<_, _>>();
            let Some(address) = e.address.as_deref() else { continue };
            let ips: Vec<IpAddr> = match address.parse::<IpAddr>() {
                Ok(ip) => vec![ip],
                Err(_) if address.starts_with("unix://") => {
                    warn(format!("endpoint {address}: unix domain sockets are not supported; it is ignored"));
                    continue;
                }
                Err(_) if resolution == EntryResolution::Dns => resolve(address),
                Err(_) => {
                    warn(format!("endpoint {address:?} is not an IP address (resolution STATIC); it is ignored"));
                    continue;
                }
            };
            if ips.is_empty() {
                warn(format!("endpoint {address} does not resolve; it has no addresses until it does"));
            }
            for ip in ips {
                let (labels, service_account) = (e.labels.clone(), e.service_account.clone());
                endpoints.push(EntryEndpoint { ip, host: None, ports: ports.clone(), labels, service_account });
            }
        }
        if resolution == EntryResolution::Dns && spec.endpoints.is_empty() {
            for host in hosts.iter().filter(|h| !h.starts_with('*')) {
                let ips = resolve(host);
                if ips.is_empty() {
                    warn(format!("host {host} does not resolve (resolution DNS); connections to it fail until it does"));
                }
                for ip in ips {
                    let host = Some(host.clone());
                    endpoints.push(EntryEndpoint { ip, host, ports: BTreeMap::new(), labels: Labels::new(), service_account: None });
                }
            }
        }
        out.push(ServiceEntry {
            namespace: r.namespace_or_default().to_string(),
            name: r.meta.name.clone(),
            hosts,
            addresses,
            ports,
            mesh_internal: spec.location == Location::MeshInternal,
            resolution,
            endpoints,
            export_to: spec.export_to.clone(),
            subject_alt_names: spec.subject_alt_names.clone(),
            source: r.source.to_string(),
        });
    }
    (out, warnings)
}

/// One host of one entry, as a client sees it.
struct HostView<'a> {
    entry: &'a ServiceEntry,
    host: &'a str,
    rule: Option<AppliedRule>,
    identities: Vec<String>,
    namespace_mode: Option<MtlsMode>,
    proxy: ProxyFacts<'a>,
}

impl MeshInput {
    /// The ServiceEntry ports a client in `client.namespace` sees, as
    /// outbound services, and how each is matched by dialled address.
    /// Ports already in `taken` (Kubernetes Services, or an earlier entry of
    /// the same host and port) are skipped.
    pub(crate) fn entry_outbound(
        &self,
        client: dr::Client,
        proxy: ProxyFacts,
        taken: &[OutboundService],
    ) -> (Vec<OutboundService>, Vec<EntryMatch>) {
        let (mut services, mut matches): (Vec<OutboundService>, Vec<EntryMatch>) = (Vec::new(), Vec::new());
        let root = &self.settings.root_namespace;
        for entry in self.service_entries.iter().filter(|e| e.visible_to(client.namespace)) {
            for host in &entry.hosts {
                let target = dr::Target { host, namespace: &entry.namespace };
                let view = HostView {
                    entry,
                    host,
                    rule: dr::lookup(&self.destination_rules, client, target, root, &self.settings.domain),
                    identities: self.entry_identities(entry),
                    namespace_mode: namespace_mode(&self.peer_authentications, &entry.namespace, root),
                    proxy,
                };
                let addresses = entry.match_addresses(host);
                let declared = entry.ports.iter().map(|p| (p.number, p.protocol));
                let implied = self.implied_http_ports(host, client.namespace, entry).into_iter().map(|n| (n, Protocol::Http));
                for (port, protocol) in declared.chain(implied) {
                    let exists = |s: &OutboundService| s.hostname == *host && s.port == port;
                    if taken.iter().any(exists) || services.iter().any(exists) {
                        continue;
                    }
                    let (service, original_destination) = self.entry_port(&view, port, protocol);
                    services.push(service);
                    matches.push(EntryMatch { host: host.clone(), port, addresses: addresses.clone(), by_name: entry.addresses.is_empty(), original_destination });
                }
            }
        }
        (services, matches)
    }

    /// Ports named by HTTP `match.port` of mesh VirtualServices visible in
    /// `ns` whose hosts cover `host`, that `entry` does not declare.
    fn implied_http_ports(&self, host: &str, ns: &str, entry: &ServiceEntry) -> Vec<u16> {
        let domain = &self.settings.domain;
        let mut out = Vec::new();
        for vs in self.virtual_services.iter().filter(|v| v.on_mesh() && v.visible_to(ns)) {
            if !vs.spec.hosts.iter().any(|h| host_covers(&resolve_host(h, &vs.namespace, domain), host)) {
                continue;
            }
            let on_mesh = |m: &veil_api::HttpMatchRequest| m.gateways.is_empty() || m.gateways.iter().any(|g| g == "mesh");
            for m in vs.spec.http.iter().flat_map(|r| r.matches.iter()).filter(|m| on_mesh(m)) {
                let Some(port) = m.port.and_then(|p| u16::try_from(p).ok()) else { continue };
                if !entry.ports.iter().any(|p| p.number == port) && !out.contains(&port) {
                    out.push(port);
                }
            }
        }
        out
    }

    /// `subjectAltNames`, else the SPIFFE IDs of the endpoints' service
    /// accounts and of mesh pods at the endpoints' addresses.
    fn entry_identities(&self, entry: &ServiceEntry) -> Vec<String> {
        if !entry.subject_alt_names.is_empty() {
            return entry.subject_alt_names.clone();
        }
        let td = &self.settings.trust_domain;
        let mut ids: Vec<String> = Vec::new();
        for e in &entry.endpoints {
            if let Some(sa) = &e.service_account {
                ids.push(format!("spiffe://{td}/ns/{}/sa/{sa}", entry.namespace));
            }
            if let Some(pod) = self.registry.pods.iter().find(|p| p.ip == e.ip) {
                ids.push(self.spiffe_id(pod));
            }
        }
        ids.sort();
        ids.dedup();
        ids
    }

    /// The outbound service of one port of one host, and for NONE the TLS
    /// to the dialled address.
    fn entry_port(&self, view: &HostView, port: u16, protocol: Protocol) -> (OutboundService, Option<UpstreamTls>) {
        let entry = view.entry;
        let mut dest = Destination {
            host: view.host,
            port,
            subset: None,
            identities: &view.identities,
            namespace_mode: view.namespace_mode,
            rule: view.rule.as_ref(),
            proxy: view.proxy,
        };
        let policy_of = |subset: Option<&str>| view.rule.as_ref().map(|r| r.effective(port, subset)).unwrap_or_default();
        let endpoints = self.entry_endpoints(view, port, &policy_of(None), &dest, None);
        let mut subsets = BTreeMap::new();
        for s in view.rule.iter().flat_map(|r| r.subsets.iter()) {
            dest.subset = Some(&s.name);
            subsets.insert(s.name.clone(), self.entry_endpoints(view, port, &policy_of(Some(&s.name)), &dest, Some(&s.labels)));
        }
        dest.subset = None;
        let external = EndpointFacts { sidecar: false, mode: MtlsMode::Permissive };
        let original =
            (entry.resolution == EntryResolution::None).then(|| upstream_tls(&policy_of(None), &dest, external, self.settings.auto_mtls));
        let service = OutboundService {
            hostname: view.host.to_string(),
            cluster_ip: None,
            port,
            protocol,
            endpoints,
            subsets,
            routes: ServiceRoutes::default(),
        };
        (service, original)
    }

    fn entry_endpoints(
        &self,
        view: &HostView,
        port: u16,
        policy: &dr::EffectivePolicy,
        dest: &Destination,
        subset_labels: Option<&Labels>,
    ) -> Vec<Endpoint> {
        let entry = view.entry;
        let declared = entry.ports.iter().find(|p| p.number == port);
        entry
            .endpoints_for(view.host)
            .filter(|e| subset_labels.is_none_or(|l| selector_matches(l, &e.labels)))
            .map(|e| {
                let named = declared.and_then(|p| p.name.as_ref()).and_then(|n| e.ports.get(n)).copied();
                let target = named.or(declared.and_then(|p| p.target_port)).unwrap_or(port);
                let pod = self.registry.pods.iter().find(|p| p.ip == e.ip && entry.mesh_internal);
                let facts = match pod {
                    Some(p) => EndpointFacts { sidecar: p.sidecar, mode: self.inbound(p).port(target).0 },
                    None => EndpointFacts { sidecar: false, mode: MtlsMode::Permissive },
                };
                Endpoint {
                    ip: e.ip,
                    port: target,
                    pod: pod.map_or_else(|| format!("{}@{}", entry.id(), e.ip), |p| p.name.clone()),
                    tls: upstream_tls(policy, dest, facts, self.settings.auto_mtls),
                }
            })
            .collect()
    }
}
