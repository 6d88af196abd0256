//! VEIL0106: legacy `authentication.istio.io/v1alpha1` Policy and MeshPolicy (removed after
//! Istio 1.5), with the equivalent `PeerAuthentication` in the hint as YAML, written by
//! `crate::legacy::equivalent_peer_authentication` (spec §1.2: `peers: - mtls: {}` is STRICT,
//! `mode: PERMISSIVE` PERMISSIVE, no peers DISABLE; a targeted Policy becomes the Service's
//! selector plus `portLevelMtls` on the target ports).

use veil_api::{PolicySpec, Resource};

use super::policies::ServerSide;
use super::{resource_name, Draft, ROOT_NAMESPACE};

/// Adds one VEIL0106 per legacy Policy or MeshPolicy.
pub fn check(server: &ServerSide<'_>, out: &mut Vec<Draft>) {
    let all = server
        .snapshot
        .mesh_policies
        .iter()
        .chain(&server.snapshot.policies);
    for p in all {
        out.push(finding(server, p));
    }
}

fn finding(server: &ServerSide<'_>, p: &Resource<PolicySpec>) -> Draft {
    let res = resource_name(&p.kind, &p.meta);
    let mut message = format!(
        "{res} uses authentication.istio.io/v1alpha1, which Istio removed after 1.5; current Istio ignores it"
    );
    if p.kind == "MeshPolicy" && p.meta.name != "default" {
        message.push_str(", and Istio 1.4 read only the MeshPolicy named default");
    }
    let scope = match (p.kind.as_str(), p.spec.targets.is_empty()) {
        ("MeshPolicy", _) => "mesh-wide, in the root namespace",
        (_, true) => "namespace-wide",
        (_, false) => "one per target Service",
    };
    let yaml = crate::legacy::equivalent_peer_authentication(server.snapshot, p, ROOT_NAMESPACE);
    let indented: Vec<String> = yaml.lines().map(|l| format!("    {l}")).collect();
    let hint = format!(
        "Replace it with this PeerAuthentication ({scope}):\n{}",
        indented.join("\n")
    );
    Draft::warning("VEIL0106", &p.source, "apiVersion", res).says(message, hint)
}
