//! DestinationRule facts the findings share: every `tls` setting with where it is written and
//! what it applies to, and which rule applies to a host when several match (spec §1.3).

use std::collections::BTreeSet;
use veil_api::{ClientTlsSettings, DestinationRuleSpec, Resource, Subset, TrafficPolicy};

use super::hosts::{covers, resolve, specificity};

/// One `tls` block of a DestinationRule.
#[derive(Debug, Clone)]
pub struct TlsSetting<'a> {
    /// Field path of its `mode`, e.g. `spec.trafficPolicy.portLevelSettings[0].tls.mode`.
    pub field: String,
    /// The Service port of a `portLevelSettings` entry; `None` for a destination-level block.
    pub port: Option<u32>,
    /// Ports that a `portLevelSettings` entry of the same policy takes over (port-level
    /// settings replace destination-level ones wholesale).
    pub overridden: Vec<u32>,
    /// The subset the block belongs to, if any (applies only when a route targets it).
    pub subset: Option<&'a Subset>,
    pub tls: &'a ClientTlsSettings,
}

impl TlsSetting<'_> {
    /// True when this block is the one that applies on Service port `port`.
    pub fn applies_to_port(&self, port: u32) -> bool {
        match self.port {
            Some(p) => p == port,
            None => !self.overridden.contains(&port),
        }
    }
}

fn push_policy<'a>(
    tp: &'a TrafficPolicy,
    base: &str,
    subset: Option<&'a Subset>,
    out: &mut Vec<TlsSetting<'a>>,
) {
    let overridden: Vec<u32> = tp
        .port_level_settings
        .iter()
        .filter_map(|p| p.port.map(|n| n.number))
        .collect();
    if let Some(tls) = &tp.tls {
        out.push(TlsSetting {
            field: format!("{base}.tls.mode"),
            port: None,
            overridden: overridden.clone(),
            subset,
            tls,
        });
    }
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        if let (Some(port), Some(tls)) = (pl.port, &pl.tls) {
            out.push(TlsSetting {
                field: format!("{base}.portLevelSettings[{i}].tls.mode"),
                port: Some(port.number),
                overridden: Vec::new(),
                subset,
                tls,
            });
        }
    }
}

/// Every `tls` block of `dr`: destination level, port level, then each subset's.
pub fn tls_settings(dr: &Resource<DestinationRuleSpec>) -> Vec<TlsSetting<'_>> {
    let mut out = Vec::new();
    if let Some(tp) = &dr.spec.traffic_policy {
        push_policy(tp, "spec.trafficPolicy", None, &mut out);
    }
    for (j, s) in dr.spec.subsets.iter().enumerate() {
        if let Some(tp) = &s.traffic_policy {
            push_policy(
                tp,
                &format!("spec.subsets[{j}].trafficPolicy"),
                Some(s),
                &mut out,
            );
        }
    }
    out
}

/// The resolved hosts of every DestinationRule, in input order.
pub fn resolved_hosts(
    drs: &[Resource<DestinationRuleSpec>],
    namespaces: &BTreeSet<String>,
) -> Vec<String> {
    drs.iter()
        .map(|d| resolve(&d.spec.host, d.namespace_or_default(), namespaces))
        .collect()
}

/// Index of the rule that applies to the concrete `host`: the most specific matching host
/// (exact beats wildcard, longer wildcard beats shorter), the first one on a tie.
pub fn winner(hosts: &[String], host: &str) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    for (i, pattern) in hosts.iter().enumerate() {
        if covers(pattern, host) && best.is_none_or(|(_, s)| specificity(pattern) > s) {
            best = Some((i, specificity(pattern)));
        }
    }
    best.map(|(i, _)| i)
}
