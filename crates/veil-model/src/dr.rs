//! DestinationRule selection for a client, and the effective traffic policy
//! (TLS and load balancer) for one Service port and subset (spec §1.3).
//!
//! Lookup follows Istio's `PushContext.destinationRule` (pilot/pkg/model/
//! push_context.go): the client's namespace first (for a client in the root
//! namespace: only root rules that are not exported), then rules of the
//! Service's namespace exported to the client, then rules of the root
//! namespace (`istio-system`) exported to the client. Within one step the
//! most specific matching host wins (exact, then the longest wildcard);
//! rules with that host are merged like `mergeDestinationRule`: the oldest
//! rule's `trafficPolicy` wins, subsets are joined (first name wins).
//!
//! A rule with a `workloadSelector` applies only to clients of its own
//! namespace whose labels match, and is preferred over rules without one
//! for the same host. (Istio lets a non-matching selector rule take part in
//! host matching and then fall back; Veil drops it first.)
//!
//! Policies merge like `MergeTrafficPolicy` / `MergeSubsetTrafficPolicy`
//! (pilot/pkg/networking/util/util.go): a `portLevelSettings` entry for the
//! Service port replaces the top-level policy wholesale; a subset's policy
//! overrides per field; a subset's own port-level entry replaces wholesale.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use veil_api::{ClientTlsMode, ClientTlsSettings, LoadBalancerSettings, SimpleLb, Subset, TrafficPolicy};

use crate::credentials::CredentialSecret;
use crate::registry::{selector_matches, Labels};

/// A `DestinationRule` as the model reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DestinationRule {
    pub namespace: String,
    pub name: String,
    /// RFC 3339 `creationTimestamp`; absent sorts as oldest, then by name.
    pub created: Option<String>,
    /// `host` as written; a short name is qualified with the rule's namespace.
    pub host: String,
    /// `exportTo` (`.`, `*`, namespaces); empty means every namespace.
    pub export_to: Vec<String>,
    /// `workloadSelector.matchLabels`: client pods of the rule's namespace.
    pub workload_selector: Option<Labels>,
    pub traffic_policy: Option<TrafficPolicy>,
    pub subsets: Vec<Subset>,
    /// Directory of the YAML file the rule came from: relative certificate
    /// paths (`caCertificates`, `clientCertificate`, `privateKey`) are taken
    /// relative to it.
    pub base_dir: Option<PathBuf>,
    /// `file:line` of the rule, for messages.
    pub source: String,
    /// The Secrets its `tls.credentialName`s may name, in every namespace
    /// (never serialised).
    #[serde(default, skip)]
    pub secrets: Vec<CredentialSecret>,
}

impl DestinationRule {
    /// `namespace/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The host as an FQDN (Istio `ResolveShortnameToFQDN`): `*` and names
    /// with a dot are kept, a short name becomes `name.<ns>.svc.<domain>`.
    pub fn fqdn_host(&self, domain: &str) -> String {
        if self.host == "*" || self.host.contains('.') {
            self.host.clone()
        } else {
            format!("{}.{}.svc.{domain}", self.host, self.namespace)
        }
    }

    /// True when `exportTo` makes the rule visible to clients in `ns`.
    pub fn visible_to(&self, ns: &str) -> bool {
        self.export_to.is_empty()
            || self.export_to.iter().any(|e| e == "*" || e == ns || (e == "." && self.namespace == ns))
    }

    fn private_only(&self) -> bool {
        !self.export_to.is_empty() && self.export_to.iter().all(|e| e == "." || *e == self.namespace)
    }
}

/// True when the DestinationRule host `pattern` (an FQDN or wildcard)
/// matches the Service FQDN `host`: equal, `*`, or `*.suffix` with `host`
/// ending in `.suffix`.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == host || pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) if suffix.starts_with('.') => host.ends_with(suffix),
        _ => false,
    }
}

/// How specific a matching pattern is: exact names beat wildcards, longer
/// wildcards beat shorter ones.
fn specificity(pattern: &str) -> (bool, usize) {
    (!pattern.starts_with('*'), pattern.len())
}

/// The client a DestinationRule lookup is for.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    pub namespace: &'a str,
    /// Pod labels, for `workloadSelector`; `None` ignores selector rules.
    pub labels: Option<&'a Labels>,
}

/// The destination a DestinationRule lookup is for.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// Service FQDN.
    pub host: &'a str,
    /// Service namespace.
    pub namespace: &'a str,
}

/// The DestinationRule that applies, after merging same-host rules.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedRule {
    /// `namespace/name` of the merged rules, oldest first.
    pub rules: Vec<String>,
    pub traffic_policy: Option<TrafficPolicy>,
    pub subsets: Vec<Subset>,
    /// Of the rule whose traffic policy won (else the oldest rule).
    pub base_dir: Option<PathBuf>,
    /// `file:line` of the rule whose traffic policy won (else the oldest).
    pub source: String,
    /// Namespace of the rule whose traffic policy won (else the oldest).
    pub namespace: String,
    /// That rule has a `workloadSelector` (Istio honours `credentialName`
    /// on sidecars only then).
    pub workload_selector: bool,
    /// The Secrets that rule's `credentialName`s may name.
    pub secrets: Vec<CredentialSecret>,
}

/// Finds the DestinationRule for `target` as seen by `client`, with
/// `root_ns` the mesh root namespace and `domain` the Services' DNS domain.
/// `None` when no rule applies.
pub fn lookup(rules: &[DestinationRule], client: Client, target: Target, root_ns: &str, domain: &str) -> Option<AppliedRule> {
    let selector_ok = |r: &DestinationRule| match &r.workload_selector {
        None => true,
        Some(sel) => {
            r.namespace == client.namespace && client.labels.is_some_and(|l| !sel.is_empty() && selector_matches(sel, l))
        }
    };
    let step1: Vec<&DestinationRule> = rules
        .iter()
        .filter(|r| r.namespace == client.namespace && selector_ok(r))
        .filter(|r| if client.namespace == root_ns { r.private_only() } else { r.visible_to(client.namespace) })
        .collect();
    let exported = |ns: &str| -> Vec<&DestinationRule> {
        rules
            .iter()
            .filter(|r| r.namespace == ns && r.workload_selector.is_none() && !r.private_only())
            .filter(|r| r.visible_to(client.namespace))
            .collect()
    };
    [step1, exported(target.namespace), exported(root_ns)]
        .into_iter()
        .find_map(|candidates| best_match(&candidates, target.host, domain))
}

fn best_match(candidates: &[&DestinationRule], host: &str, domain: &str) -> Option<AppliedRule> {
    let best = candidates
        .iter()
        .map(|r| r.fqdn_host(domain))
        .filter(|p| host_matches(p, host))
        .max_by_key(|p| specificity(p))?;
    let mut same: Vec<&DestinationRule> =
        candidates.iter().copied().filter(|r| r.fqdn_host(domain) == best).collect();
    same.sort_by(|a, b| (&a.created, &a.name).cmp(&(&b.created, &b.name)));
    if let Some(sel) = same.iter().find(|r| r.workload_selector.is_some()) {
        same = vec![*sel];
    }
    let first = same.first()?;
    let policy_owner = same.iter().find(|r| r.traffic_policy.is_some()).unwrap_or(first);
    let mut subsets: Vec<Subset> = Vec::new();
    for r in &same {
        for s in &r.subsets {
            if !subsets.iter().any(|x| x.name == s.name) {
                subsets.push(s.clone());
            }
        }
    }
    Some(AppliedRule {
        rules: same.iter().map(|r| r.id()).collect(),
        traffic_policy: policy_owner.traffic_policy.clone(),
        subsets,
        base_dir: policy_owner.base_dir.clone(),
        source: policy_owner.source.clone(),
        namespace: policy_owner.namespace.clone(),
        workload_selector: policy_owner.workload_selector.is_some(),
        secrets: policy_owner.secrets.clone(),
    })
}

/// The parts of a traffic policy that decide how a client connects.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EffectivePolicy {
    /// `None`: no `tls` applies, auto-mTLS decides.
    pub tls: Option<ClientTlsSettings>,
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Where `tls` is written, for messages: `trafficPolicy.tls`,
    /// `subsets[v1].trafficPolicy.portLevelSettings[443].tls`, …
    pub tls_field: String,
}

impl EffectivePolicy {
    /// `loadBalancer.simple`, `UNSPECIFIED` when absent.
    pub fn simple_lb(&self) -> SimpleLb {
        self.load_balancer.as_ref().and_then(|lb| lb.simple).unwrap_or_default()
    }
}

/// `tp` for Service port `port`: its port-level entry, wholesale, else its
/// top-level `tls` and `loadBalancer`.
fn port_level(tp: &TrafficPolicy, port: u16, prefix: &str) -> EffectivePolicy {
    match tp.port_level_settings.iter().find(|p| p.port.is_some_and(|s| s.number == u32::from(port))) {
        Some(p) => EffectivePolicy {
            tls: p.tls.clone(),
            load_balancer: p.load_balancer.clone(),
            tls_field: format!("{prefix}trafficPolicy.portLevelSettings[{port}].tls"),
        },
        None => EffectivePolicy {
            tls: tp.tls.clone(),
            load_balancer: tp.load_balancer.clone(),
            tls_field: format!("{prefix}trafficPolicy.tls"),
        },
    }
}

impl AppliedRule {
    /// The effective policy for Service port `port`, optionally for the
    /// subset named `subset` (an unknown subset adds nothing).
    pub fn effective(&self, port: u16, subset: Option<&str>) -> EffectivePolicy {
        let mut out = self.traffic_policy.as_ref().map(|tp| port_level(tp, port, "")).unwrap_or_default();
        let sub = subset.and_then(|name| self.subsets.iter().find(|s| s.name == name));
        if let Some((name, tp)) = sub.and_then(|s| Some((&s.name, s.traffic_policy.as_ref()?))) {
            let own = port_level(tp, port, &format!("subsets[{name}]."));
            if tp.tls.is_some() {
                out.tls = tp.tls.clone();
                out.tls_field = own.tls_field.clone();
            }
            if tp.load_balancer.is_some() {
                out.load_balancer = tp.load_balancer.clone();
            }
            if tp.port_level_settings.iter().any(|p| p.port.is_some_and(|s| s.number == u32::from(port))) {
                out = own;
            }
        }
        out
    }
}

/// Every `tls` block of a rule with where it sits (`trafficPolicy.tls`,
/// `subsets[v1].trafficPolicy.portLevelSettings[443].tls`, …).
fn tls_blocks(r: &DestinationRule) -> Vec<(String, &ClientTlsSettings)> {
    fn of<'a>(prefix: &str, tp: &'a TrafficPolicy, out: &mut Vec<(String, &'a ClientTlsSettings)>) {
        if let Some(t) = &tp.tls {
            out.push((format!("{prefix}trafficPolicy.tls"), t));
        }
        for p in &tp.port_level_settings {
            if let Some(t) = &p.tls {
                let n = p.port.map(|s| s.number).unwrap_or_default();
                out.push((format!("{prefix}trafficPolicy.portLevelSettings[{n}].tls"), t));
            }
        }
    }
    let mut out = Vec::new();
    if let Some(tp) = &r.traffic_policy {
        of("", tp, &mut out);
    }
    for s in &r.subsets {
        if let Some(tp) = &s.traffic_policy {
            of(&format!("subsets[{}].", s.name), tp, &mut out);
        }
    }
    out
}

/// What is wrong with the rules' `tls` settings: `(errors, warnings)`, each
/// `file:line: DestinationRule ns/name: field: message`. Errors are TLS Veil
/// cannot originate (connections would be refused): MUTUAL without
/// `clientCertificate`/`privateKey` or `credentialName`. Warnings:
/// SIMPLE/MUTUAL without `caCertificates` and without `insecureSkipVerify`
/// (the proxy has no system roots and refuses), and a `credentialName`
/// whose Secret exists in no namespace (those connections are refused until
/// it is created; the rest of the config works).
pub fn check(rules: &[DestinationRule]) -> (Vec<String>, Vec<String>) {
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    for r in rules {
        for (at, t) in tls_blocks(r) {
            let here = format!("{}: DestinationRule {}: {at}", r.source, r.id());
            if !matches!(t.mode, ClientTlsMode::Simple | ClientTlsMode::Mutual) {
                continue;
            }
            if let Some(name) = t.credential_name.as_deref().filter(|n| !n.is_empty()) {
                let mutual = t.mode == ClientTlsMode::Mutual;
                let insecure = t.insecure_skip_verify == Some(true);
                if let Some(w) = crate::credentials::missing_everywhere(&r.secrets, name, mutual, insecure) {
                    warnings.push(format!("{here}.credentialName: {w}"));
                }
                continue;
            }
            if t.mode == ClientTlsMode::Mutual && (t.client_certificate.is_none() || t.private_key.is_none()) {
                errors.push(format!("{here}: mode MUTUAL needs clientCertificate and privateKey (file paths)"));
            }
            if t.ca_certificates.is_none() && t.insecure_skip_verify != Some(true) {
                warnings.push(format!("{here}: no caCertificates: Veil has no system roots, so the proxy refuses these connections; add caCertificates (or insecureSkipVerify: true to skip verification)"));
            }
        }
    }
    (errors, warnings)
}
