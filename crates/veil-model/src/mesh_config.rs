//! MeshConfig as Istio reads it: the ConfigMap `istio` in the root namespace,
//! key `mesh`, whose value is MeshConfig YAML
//! (<https://istio.io/latest/docs/reference/config/istio.mesh.v1alpha1/>):
//!
//! ```yaml
//! apiVersion: v1
//! kind: ConfigMap
//! metadata: {name: istio, namespace: istio-system}
//! data:
//!   mesh: |
//!     outboundTrafficPolicy:
//!       mode: REGISTRY_ONLY
//! ```
//!
//! Veil honours `outboundTrafficPolicy.mode`; other fields are ignored.
//! Under `REGISTRY_ONLY` a sidecar refuses, with a log line naming it, a
//! destination no Service or ServiceEntry describes: an address and port
//! nothing has, and also, on a port that ServiceEntries without `addresses`
//! use, a request `Host` (HTTP ports) or ClientHello SNI (TLS ports) that
//! none of them lists (Envoy's `BlackHoleCluster`; HTTP requests get 502).
//! Under `ALLOW_ANY` both pass through to the address the workload dialled.

use veil_api::Snapshot;

use crate::config::OutboundTrafficPolicy;

/// Name of the MeshConfig ConfigMap (`istio`, as istiod reads it).
pub const MESH_CONFIG_MAP: &str = "istio";
/// Key of the MeshConfig YAML in that ConfigMap.
pub const MESH_CONFIG_KEY: &str = "mesh";

/// `outboundTrafficPolicy.mode` of the ConfigMap `istio` in `root_ns`;
/// `ALLOW_ANY` (Istio's default) when there is no such ConfigMap, key or field.
///
/// Errors: `file:line: ConfigMap ns/istio: data.mesh: …` when the `mesh`
/// value is not YAML or names an unknown mode.
pub fn outbound_traffic_policy(snapshot: &Snapshot, root_ns: &str) -> Result<OutboundTrafficPolicy, String> {
    let Some(map) = snapshot
        .config_maps
        .iter()
        .find(|c| c.meta.name == MESH_CONFIG_MAP && c.namespace_or_default() == root_ns)
    else {
        return Ok(OutboundTrafficPolicy::default());
    };
    let Some(text) = map.spec.data.get(MESH_CONFIG_KEY) else { return Ok(OutboundTrafficPolicy::default()) };
    let here = format!("{}: ConfigMap {root_ns}/{MESH_CONFIG_MAP}: data.{MESH_CONFIG_KEY}", map.source);
    let mesh: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| format!("{here}: not MeshConfig YAML: {e}"))?;
    let mode = mesh.get("outboundTrafficPolicy").and_then(|p| p.get("mode"));
    match mode {
        None | Some(serde_yaml_ng::Value::Null) => Ok(OutboundTrafficPolicy::default()),
        Some(serde_yaml_ng::Value::String(m)) => OutboundTrafficPolicy::parse(m)
            .ok_or_else(|| format!("{here}: outboundTrafficPolicy.mode {m:?} is not ALLOW_ANY or REGISTRY_ONLY")),
        Some(other) => Err(format!("{here}: outboundTrafficPolicy.mode must be ALLOW_ANY or REGISTRY_ONLY, not {other:?}")),
    }
}
