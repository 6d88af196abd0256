//! Computes the `ProxyConfig` of every proxy from a [`MeshInput`].
//!
//! Inbound: the effective `PeerAuthentication` per workload port (see
//! `crate::authn`). Outbound, per client: every Service port with its
//! endpoints (and its DestinationRule subsets' endpoints), and for each
//! endpoint how the client connects — the DestinationRule that applies to
//! that client (`crate::dr`), else auto-mTLS (`crate::client_tls`); then
//! the ServiceEntry ports the client sees (`crate::service_entry`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::authn::{effective_authn, namespace_mode, PeerAuthn};
use crate::client_tls::{upstream_tls, Destination, EndpointFacts, ProxyFacts};
use crate::config::*;
use crate::dr::{self, DestinationRule, EffectivePolicy};
use crate::mesh_routes::{MeshRoutes, VirtualService};
use crate::registry::{selector_matches, Labels, Pod, Registry, ServicePort};
use crate::routes::{gateway_listeners, GatewayServer, VsHttpRoute, VsTcpRoute};
use crate::service_entry::ServiceEntry;

/// Mesh-wide settings (Istio's MeshConfig subset Veil honours).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeshSettings {
    /// `rootNamespace`, default `istio-system`.
    pub root_namespace: String,
    /// `trustDomain`, default `cluster.local`.
    pub trust_domain: String,
    /// DNS domain of Services, default `cluster.local`.
    pub domain: String,
    /// `enableAutoMtls`, default true.
    pub auto_mtls: bool,
    /// PERMISSIVE sniffing wait on undeclared ports, ms (default 100).
    pub sniff_timeout_ms: u64,
    /// `outboundTrafficPolicy.mode`, default `ALLOW_ANY` (see
    /// `crate::mesh_config`).
    #[serde(default)]
    pub outbound_traffic_policy: OutboundTrafficPolicy,
}

impl Default for MeshSettings {
    fn default() -> Self {
        Self {
            root_namespace: "istio-system".into(),
            trust_domain: "cluster.local".into(),
            domain: "cluster.local".into(),
            auto_mtls: true,
            sniff_timeout_ms: 100,
            outbound_traffic_policy: OutboundTrafficPolicy::AllowAny,
        }
    }
}

/// Everything the builder reads: registry, policies, gateway routing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MeshInput {
    pub settings: MeshSettings,
    pub registry: Registry,
    #[serde(skip)]
    pub peer_authentications: Vec<PeerAuthn>,
    /// Every DestinationRule (client TLS, load balancer, subsets).
    #[serde(default)]
    pub destination_rules: Vec<DestinationRule>,
    pub gateway_servers: Vec<GatewayServer>,
    pub http_routes: Vec<VsHttpRoute>,
    pub tcp_routes: Vec<VsTcpRoute>,
    /// Every VirtualService, for the routes sidecars apply
    /// (`crate::mesh_routes`).
    #[serde(default)]
    pub virtual_services: Vec<VirtualService>,
    /// Every ServiceEntry, its DNS names resolved (`crate::service_entry`).
    #[serde(default)]
    pub service_entries: Vec<ServiceEntry>,
}

impl MeshInput {
    /// `spiffe://<td>/ns/<ns>/sa/<sa>` of a pod.
    pub fn spiffe_id(&self, pod: &Pod) -> String {
        format!("spiffe://{}/ns/{}/sa/{}", self.settings.trust_domain, pod.namespace, pod.service_account)
    }

    /// The effective inbound settings of a pod.
    pub fn inbound(&self, pod: &Pod) -> Inbound {
        let eff = effective_authn(&self.peer_authentications, pod, &self.settings.root_namespace);
        let mut ports: BTreeMap<u16, InboundPort> = BTreeMap::new();
        for svc in self.registry.services.iter().filter(|s| s.selects(pod)) {
            for sp in &svc.ports {
                let Some(target) = sp.target_on(pod) else { continue };
                let mode = eff.ports.get(&target).copied().unwrap_or(eff.mode);
                ports.entry(target).or_insert(InboundPort { port: target, mode, protocol: sp.protocol() });
            }
        }
        for (port, mode) in &eff.ports {
            ports
                .entry(*port)
                .or_insert(InboundPort { port: *port, mode: *mode, protocol: well_known_protocol(*port) });
        }
        Inbound { mode: eff.mode, ports: ports.into_values().collect(), sniff_timeout_ms: self.settings.sniff_timeout_ms }
    }

    /// The outbound section as a client in namespace `default` without
    /// labels sees it. DestinationRule lookup depends on the client's
    /// namespace (and labels, for `workloadSelector`): use
    /// [`MeshInput::outbound_for`] for a given client.
    pub fn outbound(&self) -> Outbound {
        let proxy = ProxyFacts { namespace: veil_api::DEFAULT_NAMESPACE, gateway: false };
        self.outbound_in(proxy, None, &mut InboundCache::default(), &self.service_index())
    }

    /// For each Service (by index), the indices of the pods it selects and
    /// their sorted SPIFFE IDs: computed once per build instead of once per
    /// client namespace.
    fn service_index(&self) -> ServiceIndex {
        self.registry
            .services
            .iter()
            .map(|svc| {
                let pods: Vec<usize> =
                    self.registry.pods.iter().enumerate().filter(|(_, p)| svc.selects(p)).map(|(i, _)| i).collect();
                let mut ids: Vec<String> = pods.iter().filter_map(|i| self.registry.pods.get(*i)).map(|p| self.spiffe_id(p)).collect();
                ids.sort();
                ids.dedup();
                (pods, ids)
            })
            .collect()
    }

    /// Every Service port with its endpoints and per-endpoint TLS, as the
    /// proxy of `client` sees them (see `crate::client_tls`), and for a
    /// sidecar the VirtualService routes it applies (`crate::mesh_routes`).
    pub fn outbound_for(&self, client: &Pod) -> Outbound {
        let proxy = ProxyFacts { namespace: &client.namespace, gateway: client.gateway };
        let mut outbound = self.outbound_in(proxy, Some(&client.labels), &mut InboundCache::default(), &self.service_index());
        if !client.gateway {
            MeshRoutes::new(self).attach(client, &mut outbound);
        }
        outbound
    }

    fn outbound_in(&self, proxy: ProxyFacts, labels: Option<&Labels>, cache: &mut InboundCache, index: &ServiceIndex) -> Outbound {
        let root = &self.settings.root_namespace;
        let domain = &self.settings.domain;
        let client = dr::Client { namespace: proxy.namespace, labels };
        let mut services = Vec::new();
        for (svc, (pod_idx, identities)) in self.registry.services.iter().zip(index.iter()) {
            let hostname = svc.hostname(domain);
            let target = dr::Target { host: &hostname, namespace: &svc.namespace };
            let rule = dr::lookup(&self.destination_rules, client, target, root, domain);
            let pods: Vec<&Pod> = pod_idx.iter().filter_map(|i| self.registry.pods.get(*i)).collect();
            let namespace_mode = namespace_mode(&self.peer_authentications, &svc.namespace, root);
            for sp in &svc.ports {
                let mut dest = Destination {
                    host: &hostname,
                    port: sp.port,
                    subset: None,
                    identities,
                    namespace_mode,
                    rule: rule.as_ref(),
                    proxy,
                };
                let policy = rule.as_ref().map(|r| r.effective(sp.port, None)).unwrap_or_default();
                let endpoints = self.endpoints(&pods, sp, &policy, &dest, None, cache);
                let mut subsets = BTreeMap::new();
                for s in rule.iter().flat_map(|r| r.subsets.iter()) {
                    let policy = rule.as_ref().map(|r| r.effective(sp.port, Some(&s.name))).unwrap_or_default();
                    dest.subset = Some(&s.name);
                    subsets.insert(s.name.clone(), self.endpoints(&pods, sp, &policy, &dest, Some(&s.labels), cache));
                }
                services.push(OutboundService {
                    hostname: hostname.clone(),
                    cluster_ip: svc.cluster_ip,
                    port: sp.port,
                    protocol: sp.protocol(),
                    endpoints,
                    subsets,
                    routes: ServiceRoutes::default(),
                });
            }
        }
        let (entry_services, entries) = self.entry_outbound(client, proxy, &services);
        services.extend(entry_services);
        Outbound { services, entries, policy: self.settings.outbound_traffic_policy }
    }

    /// The endpoints of Service port `sp` among `pods` (only those whose
    /// labels include `subset_labels`), each with its TLS.
    fn endpoints(
        &self,
        pods: &[&Pod],
        sp: &ServicePort,
        policy: &EffectivePolicy,
        dest: &Destination,
        subset_labels: Option<&Labels>,
        cache: &mut InboundCache,
    ) -> Vec<Endpoint> {
        pods.iter()
            .filter(|p| subset_labels.is_none_or(|l| selector_matches(l, &p.labels)))
            .filter_map(|p| {
                let target = sp.target_on(p)?;
                let (mode, _) = cache.get(self, p).port(target);
                let facts = EndpointFacts { sidecar: p.sidecar, mode };
                Some(Endpoint {
                    ip: p.ip,
                    port: target,
                    pod: p.name.clone(),
                    tls: upstream_tls(policy, dest, facts, self.settings.auto_mtls),
                })
            })
            .collect()
    }

    /// The config of one proxy, with `outbound` as given (routes included:
    /// see [`MeshInput::outbound_for`]).
    pub fn proxy_config(&self, pod: &Pod, outbound: &Outbound) -> ProxyConfig {
        self.proxy_config_shared(pod, Arc::new(outbound.clone()), self.inbound(pod))
    }

    fn proxy_config_shared(&self, pod: &Pod, outbound: Arc<Outbound>, inbound: Inbound) -> ProxyConfig {
        let gateway = pod.gateway.then(|| GatewayConfig {
            listeners: gateway_listeners(
                pod,
                &crate::gateway_rules::GatewayRules::new(self),
                &self.gateway_servers,
                &self.http_routes,
                &self.tcp_routes,
                &self.registry,
                &self.settings.domain,
            ),
        });
        ProxyConfig {
            version: 0,
            node: Node {
                kind: if pod.gateway { ProxyKind::Gateway } else { ProxyKind::Sidecar },
                pod: pod.name.clone(),
                namespace: pod.namespace.clone(),
                service_account: pod.service_account.clone(),
                spiffe_id: self.spiffe_id(pod),
                ip: pod.ip,
            },
            inbound,
            outbound,
            gateway,
        }
    }

    /// The configs of every pod that runs a proxy (sidecar or gateway). The
    /// outbound section is computed once per client namespace, kind
    /// (gateways honour every `credentialName`) and set of matching
    /// `workloadSelector` DestinationRules, and its routes once more per set
    /// of matching VirtualService `sourceLabels`.
    pub fn proxy_configs(&self) -> Vec<ProxyConfig> {
        let mut cache = InboundCache::default();
        let index = self.service_index();
        let mesh_routes = MeshRoutes::new(self);
        let mut outbounds: BTreeMap<(String, Vec<usize>, bool), Arc<Outbound>> = BTreeMap::new();
        let mut distinct: Vec<Arc<Outbound>> = Vec::new();
        let mut routed: BTreeMap<(String, Vec<usize>, Vec<bool>), Arc<Outbound>> = BTreeMap::new();
        let mut out = Vec::new();
        for p in self.registry.pods.iter().filter(|p| p.sidecar || p.gateway) {
            let selected: Vec<usize> = self
                .destination_rules
                .iter()
                .enumerate()
                .filter(|(_, r)| {
                    r.namespace == p.namespace && r.workload_selector.as_ref().is_some_and(|s| selector_matches(s, &p.labels))
                })
                .map(|(i, _)| i)
                .collect();
            let key = (p.namespace.clone(), selected, p.gateway);
            let labels = (!key.1.is_empty()).then_some(&p.labels);
            if !outbounds.contains_key(&key) {
                let proxy = ProxyFacts { namespace: &p.namespace, gateway: p.gateway };
                let o = self.outbound_in(proxy, labels, &mut cache, &index);
                // Most namespaces see the same outbound: keep one copy of each.
                let shared = match distinct.iter().find(|d| ***d == o) {
                    Some(d) => d.clone(),
                    None => {
                        let d = Arc::new(o);
                        distinct.push(d.clone());
                        d
                    }
                };
                outbounds.insert(key.clone(), shared);
            }
            let Some(o) = outbounds.get(&key).cloned() else { continue };
            let inbound = cache.get(self, p).clone();
            if p.gateway || mesh_routes.is_empty() {
                out.push(self.proxy_config_shared(p, o, inbound));
                continue;
            }
            let routed_key = (key.0, key.1, mesh_routes.signature(p));
            let o = routed
                .entry(routed_key)
                .or_insert_with(|| {
                    let mut o = (*o).clone();
                    mesh_routes.attach(p, &mut o);
                    Arc::new(o)
                })
                .clone();
            out.push(self.proxy_config_shared(p, o, inbound));
        }
        out
    }
}

/// Per Service: the indices of its pods and their sorted SPIFFE IDs.
type ServiceIndex = Vec<(Vec<usize>, Vec<String>)>;

/// Inbound settings per pod (`namespace/name`), computed once per build.
#[derive(Default)]
struct InboundCache(BTreeMap<(String, String), Inbound>);

impl InboundCache {
    fn get(&mut self, input: &MeshInput, pod: &Pod) -> &Inbound {
        self.0.entry((pod.namespace.clone(), pod.name.clone())).or_insert_with(|| input.inbound(pod))
    }
}
