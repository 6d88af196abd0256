//! Computes the `ProxyConfig` of every proxy from a [`MeshInput`].
//!
//! Inbound: the effective `PeerAuthentication` per workload port (see
//! `crate::authn`). Outbound: every Service port with its endpoints, and for
//! each endpoint whether the client sends mesh mTLS — Istio's auto-mTLS
//! (spec §1.4): mTLS to endpoints that have a sidecar and whose effective
//! mode on that port is not DISABLE, plaintext otherwise, and plaintext for
//! the whole service when its namespace (or mesh) mode is DISABLE.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::authn::{effective_authn, namespace_mode, PeerAuthn};
use crate::config::*;
use crate::registry::{Pod, Registry};
use crate::routes::{gateway_listeners, GatewayServer, VsHttpRoute, VsTcpRoute};

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
}

impl Default for MeshSettings {
    fn default() -> Self {
        Self {
            root_namespace: "istio-system".into(),
            trust_domain: "cluster.local".into(),
            domain: "cluster.local".into(),
            auto_mtls: true,
            sniff_timeout_ms: 100,
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
    pub gateway_servers: Vec<GatewayServer>,
    pub http_routes: Vec<VsHttpRoute>,
    pub tcp_routes: Vec<VsTcpRoute>,
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

    /// How a client reaches `endpoint` on workload port `port` (auto-mTLS).
    fn upstream_tls(&self, endpoint: &Pod, port: u16, identities: &[String], sni: &str, ns_disabled: bool) -> UpstreamTls {
        if !self.settings.auto_mtls || ns_disabled || !endpoint.sidecar {
            return UpstreamTls::Disable;
        }
        let (mode, _) = self.inbound(endpoint).port(port);
        if mode == MtlsMode::Disable {
            return UpstreamTls::Disable;
        }
        UpstreamTls::IstioMutual { identities: identities.to_vec(), sni: sni.to_string() }
    }

    /// Every Service port with endpoints and per-endpoint TLS.
    pub fn outbound(&self) -> Outbound {
        let mut services = Vec::new();
        for svc in &self.registry.services {
            let hostname = svc.hostname(&self.settings.domain);
            let pods: Vec<&Pod> = self.registry.pods.iter().filter(|p| svc.selects(p)).collect();
            let mut identities: Vec<String> = pods.iter().map(|p| self.spiffe_id(p)).collect();
            identities.sort();
            identities.dedup();
            let ns_disabled = namespace_mode(&self.peer_authentications, &svc.namespace, &self.settings.root_namespace)
                == Some(MtlsMode::Disable);
            for sp in &svc.ports {
                let sni = format!("outbound_.{}_._.{}", sp.port, hostname);
                let endpoints = pods
                    .iter()
                    .filter_map(|p| {
                        let target = sp.target_on(p)?;
                        Some(Endpoint {
                            ip: p.ip,
                            port: target,
                            pod: p.name.clone(),
                            tls: self.upstream_tls(p, target, &identities, &sni, ns_disabled),
                        })
                    })
                    .collect();
                services.push(OutboundService {
                    hostname: hostname.clone(),
                    cluster_ip: svc.cluster_ip,
                    port: sp.port,
                    protocol: sp.protocol(),
                    endpoints,
                });
            }
        }
        Outbound { services }
    }

    /// The config of one proxy.
    pub fn proxy_config(&self, pod: &Pod, outbound: &Outbound) -> ProxyConfig {
        let gateway = pod.gateway.then(|| GatewayConfig {
            listeners: gateway_listeners(
                pod,
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
            inbound: self.inbound(pod),
            outbound: outbound.clone(),
            gateway,
        }
    }

    /// The configs of every pod that runs a proxy (sidecar or gateway).
    pub fn proxy_configs(&self) -> Vec<ProxyConfig> {
        let outbound = self.outbound();
        self.registry
            .pods
            .iter()
            .filter(|p| p.sidecar || p.gateway)
            .map(|p| self.proxy_config(p, &outbound))
            .collect()
    }
}
