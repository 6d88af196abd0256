//! Effective `PeerAuthentication` of a workload: Istio's
//! `ComposePeerAuthentication` (pilot/pkg/security/authn/policy_applier.go).
//!
//! Levels: mesh (root namespace, no selector) → namespace (no selector) →
//! workload (selector, not in the root namespace). Start from PERMISSIVE;
//! each present level whose mode is not UNSET overwrites it. At one level
//! the oldest policy (creationTimestamp, then name) wins. Port-level modes
//! are keyed on the workload (target) port; UNSET takes the workload mode.
//!
//! Legacy `authentication.istio.io/v1alpha1` policies (see `crate::legacy`)
//! join these levels: `MeshPolicy default` is a mesh policy and a Policy
//! without targets a namespace policy. A Policy with `targets` applies to
//! the target ports of the targeted Service ports only, with Istio 1.4's
//! precedence `AuthenticationPolicyForWorkload` (istio/istio@1.4.0
//! `pilot/pkg/model/push_context.go`): per Service port, the oldest policy
//! naming that port wins, else the oldest policy of the Service without
//! ports, else the namespace/mesh level. In 1.4 a port with no policy at any
//! level was DISABLE (`GetMutualTLSMode(nil)`); Veil keeps its no-policy
//! default, PERMISSIVE, which accepts the same plaintext and also mTLS.
//! A v1beta1 workload-level `PeerAuthentication` that selects the pod wins
//! over legacy targeted policies (Istio 1.5 preferred the beta API when both
//! applied); those are then listed in `shadowed`.

use serde::Serialize;
use std::collections::BTreeMap;

use crate::config::MtlsMode;
use crate::registry::{selector_matches, Labels, Pod, ServicePort};

/// A `PeerAuthentication` reduced to what resolution needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerAuthn {
    pub namespace: String,
    pub name: String,
    /// RFC 3339 `creationTimestamp`; absent sorts as oldest (files are
    /// applied in order, so name order breaks ties).
    pub created: Option<String>,
    /// `None` or empty: namespace-wide (mesh-wide in the root namespace).
    pub selector: Option<Labels>,
    /// `None` is UNSET.
    pub mode: Option<MtlsMode>,
    /// Workload port → mode (`None` = UNSET).
    pub port_level: BTreeMap<u16, Option<MtlsMode>>,
    /// Set for a legacy v1alpha1 `Policy` with `targets` (one entry per
    /// target); `selector` and `port_level` are then unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy_target: Option<LegacyTarget>,
}

/// One `targets[]` entry of a legacy v1alpha1 `Policy`, resolved through
/// the Service it names (same namespace as the policy).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LegacyTarget {
    /// Service short name.
    pub service: String,
    /// The Service's selector: the pods the policy applies to. An empty
    /// selector selects nothing.
    pub selector: Labels,
    /// The targeted Service ports (every port of the Service when the
    /// target lists none); their target ports carry the mode.
    pub ports: Vec<ServicePort>,
    /// True when the target listed ports: such a policy beats one for the
    /// whole Service on those ports.
    pub port_match: bool,
}

impl PeerAuthn {
    fn has_selector(&self) -> bool {
        self.selector.as_ref().is_some_and(|s| !s.is_empty())
    }
    /// Mesh or namespace level (no selector, not a legacy targeted policy).
    fn is_wide(&self) -> bool {
        !self.has_selector() && self.legacy_target.is_none()
    }
}

/// The result of resolution for one workload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EffectiveAuthn {
    /// Mode for every port not overridden.
    pub mode: MtlsMode,
    /// Port-level overrides (workload ports).
    pub ports: BTreeMap<u16, MtlsMode>,
    /// `namespace/name` of the policies that applied, mesh first.
    pub applied: Vec<String>,
    /// `namespace/name` of policies ignored because an older one won its level.
    pub shadowed: Vec<String>,
}

fn oldest<'a>(mut v: Vec<&'a PeerAuthn>, shadowed: &mut Vec<String>) -> Option<&'a PeerAuthn> {
    v.sort_by(|a, b| (&a.created, &a.name).cmp(&(&b.created, &b.name)));
    for extra in v.iter().skip(1) {
        shadowed.push(format!("{}/{}", extra.namespace, extra.name));
    }
    v.first().copied()
}

/// Resolves the effective mode of `pod` under `policies`, with `root_ns`
/// the mesh root namespace (Istio default `istio-system`).
pub fn effective_authn(policies: &[PeerAuthn], pod: &Pod, root_ns: &str) -> EffectiveAuthn {
    let mut shadowed = Vec::new();
    let mesh = oldest(policies.iter().filter(|p| p.namespace == root_ns && p.is_wide()).collect(), &mut shadowed);
    let namespace = if pod.namespace == root_ns {
        None
    } else {
        oldest(policies.iter().filter(|p| p.namespace == pod.namespace && p.is_wide()).collect(), &mut shadowed)
    };
    let workload = oldest(
        policies
            .iter()
            .filter(|p| {
                p.namespace == pod.namespace
                    && p.namespace != root_ns
                    && p.legacy_target.is_none()
                    && p.selector.as_ref().is_some_and(|s| !s.is_empty() && selector_matches(s, &pod.labels))
            })
            .collect(),
        &mut shadowed,
    );
    let mut mode = MtlsMode::Permissive;
    let mut applied = Vec::new();
    for level in [mesh, namespace, workload].into_iter().flatten() {
        applied.push(format!("{}/{}", level.namespace, level.name));
        if let Some(m) = level.mode {
            mode = m;
        }
    }
    let mut ports: BTreeMap<u16, MtlsMode> = workload
        .map(|w| w.port_level.iter().map(|(port, m)| (*port, m.unwrap_or(mode))).collect())
        .unwrap_or_default();
    let mut legacy: Vec<&PeerAuthn> = policies
        .iter()
        .filter(|p| {
            p.namespace == pod.namespace
                && p.legacy_target
                    .as_ref()
                    .is_some_and(|t| !t.selector.is_empty() && selector_matches(&t.selector, &pod.labels))
        })
        .collect();
    legacy.sort_by(|a, b| (&a.created, &a.name).cmp(&(&b.created, &b.name)));
    if workload.is_some() {
        shadowed.extend(legacy.iter().map(|p| format!("{}/{}", p.namespace, p.name)));
    } else {
        for (port, m, name) in legacy_port_modes(&legacy, pod) {
            ports.insert(port, m);
            if !applied.contains(&name) {
                applied.push(name);
            }
        }
    }
    EffectiveAuthn { mode, ports, applied, shadowed }
}

/// Workload port → (mode, policy) from legacy targeted policies (oldest
/// first): a policy naming the Service port beats one for the whole Service.
fn legacy_port_modes(sorted: &[&PeerAuthn], pod: &Pod) -> Vec<(u16, MtlsMode, String)> {
    let mut out: BTreeMap<u16, (bool, MtlsMode, String)> = BTreeMap::new();
    for p in sorted {
        let Some(t) = &p.legacy_target else { continue };
        let mode = p.mode.unwrap_or(MtlsMode::Disable);
        for sp in &t.ports {
            let Some(port) = sp.target_on(pod) else { continue };
            let better = match out.get(&port) {
                None => true,
                Some((by_port, _, _)) => t.port_match && !*by_port,
            };
            if better {
                out.insert(port, (t.port_match, mode, format!("{}/{}", p.namespace, p.name)));
            }
        }
    }
    out.into_iter().map(|(port, (_, m, name))| (port, m, name)).collect()
}

/// `GetNamespaceMutualTLSMode`: the namespace (else mesh) mode used by
/// auto-mTLS to infer a service's mode; `None` is Istio's `MTLSUnknown`.
pub fn namespace_mode(policies: &[PeerAuthn], namespace: &str, root_ns: &str) -> Option<MtlsMode> {
    let mut ignore = Vec::new();
    let mesh = oldest(policies.iter().filter(|p| p.namespace == root_ns && p.is_wide()).collect(), &mut ignore);
    let ns = oldest(policies.iter().filter(|p| p.namespace == namespace && p.is_wide()).collect(), &mut ignore);
    let mesh_mode = mesh.map(|m| m.mode.unwrap_or(MtlsMode::Permissive));
    match ns {
        Some(n) => Some(n.mode.or(mesh_mode).unwrap_or(MtlsMode::Permissive)),
        None => mesh_mode,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn pod(ns: &str, app: &str) -> Pod {
        Pod {
            name: format!("{app}-0"),
            namespace: ns.into(),
            labels: [("app".to_string(), app.to_string())].into(),
            service_account: app.into(),
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            sidecar: true,
            gateway: false,
            ports: vec![],
        }
    }
    fn pa(ns: &str, name: &str, sel: Option<&str>, mode: Option<MtlsMode>) -> PeerAuthn {
        PeerAuthn {
            namespace: ns.into(),
            name: name.into(),
            created: None,
            selector: sel.map(|a| [("app".to_string(), a.to_string())].into()),
            mode,
            port_level: BTreeMap::new(),
            legacy_target: None,
        }
    }

    #[test]
    fn no_policy_is_permissive() {
        let e = effective_authn(&[], &pod("a", "foo"), "istio-system");
        assert_eq!(e.mode, MtlsMode::Permissive);
        assert_eq!(namespace_mode(&[], "a", "istio-system"), None);
    }

    #[test]
    fn levels_overwrite_and_unset_inherits() {
        let p = vec![
            pa("istio-system", "default", None, Some(MtlsMode::Strict)),
            pa("a", "default", None, None),
        ];
        assert_eq!(effective_authn(&p, &pod("a", "foo"), "istio-system").mode, MtlsMode::Strict);
        let mut p2 = p.clone();
        p2.push(pa("a", "foo", Some("foo"), Some(MtlsMode::Disable)));
        assert_eq!(effective_authn(&p2, &pod("a", "foo"), "istio-system").mode, MtlsMode::Disable);
        assert_eq!(effective_authn(&p2, &pod("a", "bar"), "istio-system").mode, MtlsMode::Strict);
    }

    #[test]
    fn root_namespace_selector_is_ignored() {
        let p = vec![pa("istio-system", "sel", Some("foo"), Some(MtlsMode::Strict))];
        assert_eq!(effective_authn(&p, &pod("a", "foo"), "istio-system").mode, MtlsMode::Permissive);
    }

    #[test]
    fn oldest_wins_at_one_level() {
        let mut older = pa("a", "zzz", None, Some(MtlsMode::Strict));
        older.created = Some("2020-01-01T00:00:00Z".into());
        let mut newer = pa("a", "aaa", None, Some(MtlsMode::Disable));
        newer.created = Some("2024-01-01T00:00:00Z".into());
        let e = effective_authn(&[newer, older], &pod("a", "foo"), "istio-system");
        assert_eq!(e.mode, MtlsMode::Strict);
        assert_eq!(e.shadowed, vec!["a/aaa".to_string()]);
    }

    #[test]
    fn port_level_unset_takes_workload_mode() {
        let mut w = pa("a", "w", Some("foo"), Some(MtlsMode::Strict));
        w.port_level.insert(9000, Some(MtlsMode::Disable));
        w.port_level.insert(9001, None);
        let e = effective_authn(&[w], &pod("a", "foo"), "istio-system");
        assert_eq!(e.ports.get(&9000), Some(&MtlsMode::Disable));
        assert_eq!(e.ports.get(&9001), Some(&MtlsMode::Strict));
    }
}
