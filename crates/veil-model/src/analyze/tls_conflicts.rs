//! VEIL0201 / VEIL0202: a DestinationRule `tls` block that contradicts the server's
//! PeerAuthentication (spec §1.3, §1.4 rule 1: a DR tls setting always wins over auto-mTLS).
//! `DISABLE` towards a STRICT workload sends plaintext that the server rejects (Istio issue
//! 6279, pain point 11); `ISTIO_MUTUAL` towards a DISABLE workload sends mTLS to a server that
//! only accepts plaintext. Services with known workloads are judged per workload port
//! (workload and port-level policies included); otherwise the namespace (or mesh) policy of
//! the host's namespace decides, and legacy Service-targeted Policies by their target.

use std::collections::{BTreeMap, BTreeSet};
use veil_api::{ClientTlsMode, DestinationRuleSpec, LegacyPortSelector, Resource};

use super::destination_rules::{resolved_hosts, tls_settings, winner, TlsSetting};
use super::hosts::{all_namespaces, covers, is_wildcard, service_fqdn, service_of};
use super::policies::{target_port, PolicyRef, ServerSide};
use super::{resource_name, Draft};
use crate::config::MtlsMode;

/// Stand-in namespace name for "a namespace without a policy of its own".
const ANY_NAMESPACE: &str = "veil-any-namespace";

/// The server mode a client mode cannot work with.
fn clashes_with(mode: ClientTlsMode) -> Option<MtlsMode> {
    match mode {
        ClientTlsMode::Disable => Some(MtlsMode::Strict),
        ClientTlsMode::IstioMutual => Some(MtlsMode::Disable),
        ClientTlsMode::Simple | ClientTlsMode::Mutual => None,
    }
}

/// Adds VEIL0201/VEIL0202 for every DestinationRule.
pub fn check(server: &ServerSide<'_>, out: &mut Vec<Draft>) {
    let snapshot = server.snapshot;
    let namespaces = all_namespaces(snapshot);
    let hosts = resolved_hosts(&snapshot.destination_rules, &namespaces);
    for (index, (dr, host)) in snapshot.destination_rules.iter().zip(&hosts).enumerate() {
        let settings: Vec<TlsSetting<'_>> = tls_settings(dr)
            .into_iter()
            .filter(|s| clashes_with(s.tls.mode).is_some())
            .collect();
        if settings.is_empty() {
            continue;
        }
        let mut rule = Rule {
            server,
            hosts: &hosts,
            index,
            host,
            settings,
            clashes: Clashes::new(),
        };
        let judged = rule.services();
        rule.namespaces(&namespaces, &judged);
        rule.legacy(&judged);
        emit(dr, &rule.settings, rule.clashes, out);
    }
}

/// (client mode, policy) → (index of the first clashing setting, where they clash).
type Clashes = BTreeMap<(ClientTlsMode, PolicyRef), (usize, Vec<String>)>;

/// One DestinationRule being checked, and the clashes found so far.
struct Rule<'a, 'b> {
    server: &'b ServerSide<'a>,
    /// Resolved hosts of every DestinationRule, to find which one applies to a host.
    hosts: &'b [String],
    index: usize,
    host: &'b str,
    settings: Vec<TlsSetting<'b>>,
    clashes: Clashes,
}

impl Rule<'_, '_> {
    /// True when this rule's host covers `host` and no more specific rule takes it.
    fn applies_to(&self, host: &str) -> bool {
        covers(self.host, host) && winner(self.hosts, host) == Some(self.index)
    }

    fn record(&mut self, setting: usize, policy: &PolicyRef, what: String) {
        let Some(mode) = self.settings.get(setting).map(|s| s.tls.mode) else {
            return;
        };
        let key = (mode, policy.clone());
        let entry = self.clashes.entry(key).or_insert((setting, Vec::new()));
        if !entry.1.contains(&what) {
            entry.1.push(what);
        }
    }

    /// Services the rule applies to that have workloads, judged per workload port (only
    /// workloads with a sidecar enforce a policy). Returns the namespaces and FQDNs judged.
    fn services(&mut self) -> BTreeSet<String> {
        let server = self.server;
        let mut judged = BTreeSet::new();
        for svc in &server.snapshot.services {
            let ns = svc.namespace_or_default();
            let fqdn = service_fqdn(&svc.meta.name, ns);
            let selected = server.selected(svc);
            if selected.is_empty() || !self.applies_to(&fqdn) {
                continue;
            }
            judged.insert(ns.to_string());
            judged.insert(fqdn);
            for si in 0..self.settings.len() {
                let Some(s) = self.settings.get(si).cloned() else {
                    continue;
                };
                let Some(bad) = clashes_with(s.tls.mode) else {
                    continue;
                };
                let in_subset = |w: &veil_api::Workload| {
                    let labels = s.subset.map(|sub| &sub.labels);
                    labels.is_none_or(|l| l.iter().all(|(k, v)| w.pod_labels.get(k) == Some(v)))
                };
                let enforcing = selected
                    .iter()
                    .filter(|(w, sidecar)| *sidecar && in_subset(w));
                for (w, _) in enforcing {
                    for sp in svc
                        .spec
                        .ports
                        .iter()
                        .filter(|sp| s.applies_to_port(sp.port))
                    {
                        let Some(t) = target_port(sp, w) else {
                            continue;
                        };
                        let clash = server.workload_mode(w, t).filter(|(m, _)| *m == bad);
                        if let Some((mode, policy)) = clash {
                            let (name, port, workload) = (&svc.meta.name, sp.port, &w.name);
                            let what = format!(
                                "Service {ns}/{name} port {port} (workload {workload} port {t}, {mode})"
                            );
                            self.record(si, policy, what);
                        }
                    }
                }
            }
        }
        judged
    }

    /// Hosts without known workloads: the namespace (or mesh) policy of their namespace.
    fn namespaces(&mut self, namespaces: &BTreeSet<String>, judged: &BTreeSet<String>) {
        let host = self.host;
        let mut probes: Vec<(String, String, String)> = Vec::new();
        if let Some((_, ns)) = service_of(host).filter(|_| !is_wildcard(host)) {
            if !judged.contains(host) {
                probes.push((ns.to_string(), host.to_string(), host.to_string()));
            }
        } else if is_wildcard(host) {
            for ns in namespaces.iter().filter(|ns| !judged.contains(*ns)) {
                probes.push((ns.clone(), service_fqdn("x", ns), format!("namespace {ns}")));
            }
            let any = service_fqdn("x", ANY_NAMESPACE);
            let what = "every namespace without a policy of its own".to_string();
            probes.push((String::new(), any, what));
        }
        for (ns, probe, what) in probes {
            if !self.applies_to(&probe) {
                continue;
            }
            let Some((mode, policy)) = self.server.namespace_mode(&ns) else {
                continue;
            };
            for si in 0..self.settings.len() {
                let clash = self.settings.get(si).and_then(|s| clashes_with(s.tls.mode));
                if clash == Some(mode) {
                    self.record(si, policy, format!("{what} ({mode})"));
                }
            }
        }
    }

    /// Legacy `Policy` targets whose Service has no known workloads (otherwise resolution
    /// already took them into account): a Service, optionally narrowed to Service ports.
    fn legacy(&mut self, judged: &BTreeSet<String>) {
        for t in self.server.legacy_targets() {
            if judged.contains(&t.service) || !self.applies_to(&t.service) {
                continue;
            }
            for si in 0..self.settings.len() {
                let Some(port) = self.settings.get(si).map(|s| s.port) else {
                    continue;
                };
                let clash = self.settings.get(si).and_then(|s| clashes_with(s.tls.mode));
                if clash != Some(t.mode) {
                    continue;
                }
                let on_port = |p: &&LegacyPortSelector| match (port, p.number) {
                    (Some(want), Some(n)) => want == n,
                    _ => true,
                };
                let ports: Vec<String> = t
                    .ports
                    .iter()
                    .filter(on_port)
                    .map(|p| match (&p.number, &p.name) {
                        (Some(n), _) => n.to_string(),
                        (None, Some(name)) => name.clone(),
                        (None, None) => "?".to_string(),
                    })
                    .collect();
                if !t.ports.is_empty() && ports.is_empty() {
                    continue;
                }
                let what = match ports.as_slice() {
                    [] => format!("{} ({})", t.service, t.mode),
                    _ => format!("{} port {} ({})", t.service, ports.join(", "), t.mode),
                };
                self.record(si, &t.policy, what);
            }
        }
    }
}

fn emit(
    dr: &Resource<DestinationRuleSpec>,
    settings: &[TlsSetting<'_>],
    clashes: Clashes,
    out: &mut Vec<Draft>,
) {
    let res = resource_name(&dr.kind, &dr.meta);
    for ((_, policy), (si, targets)) in clashes {
        let Some(setting) = settings.get(si) else {
            continue;
        };
        let mut list = targets
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        if targets.len() > 3 {
            list.push_str(&format!("; and {} more", targets.len() - 3));
        }
        let (code, message, hint) = match setting.tls.mode {
            ClientTlsMode::Disable => (
                "VEIL0201",
                format!("{res} sets tls.mode DISABLE towards {list}, but {} requires mTLS there: clients send plaintext and fail with 503 / connection reset", policy.cite()),
                "Remove the tls block so that auto-mTLS sends mesh mTLS (or set tls.mode: ISTIO_MUTUAL); if plaintext clients must reach it, make the policy PERMISSIVE",
            ),
            _ => (
                "VEIL0202",
                format!("{res} sets tls.mode ISTIO_MUTUAL towards {list}, but {} disables mTLS there: the server accepts only plaintext, so these clients fail with 503 / connection reset", policy.cite()),
                "Remove the tls block so that auto-mTLS follows the server's mode, or make the policy PERMISSIVE or STRICT",
            ),
        };
        out.push(
            Draft::warning(code, &dr.source, setting.field.clone(), res.clone())
                .says(message, hint.to_string()),
        );
    }
}
