//! Which `apiVersion`/`kind` pairs Veil reads. Anything else is a warning, not an error, so
//! that a directory of mixed manifests still loads. A third-party gateway's own kinds
//! (EnRoute's `GatewayHost`) load, and are reported as unsupported and ignored.

/// A kind Veil has types for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KindId {
    Namespace,
    Service,
    Deployment,
    StatefulSet,
    DaemonSet,
    Pod,
    ServiceAccount,
    Secret,
    ConfigMap,
    PeerAuthentication,
    AuthorizationPolicy,
    DestinationRule,
    Gateway,
    VirtualService,
    ServiceEntry,
    WorkloadEntry,
    Sidecar,
    Policy,
    MeshPolicy,
    GatewayHost,
}

const CORE: &[&str] = &["v1"];
const APPS: &[&str] = &[
    "apps/v1",
    "apps/v1beta1",
    "apps/v1beta2",
    "extensions/v1beta1",
];
const SECURITY: &[&str] = &["security.istio.io/v1", "security.istio.io/v1beta1"];
const NETWORKING: &[&str] = &[
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
];
const LEGACY_AUTHN: &[&str] = &["authentication.istio.io/v1alpha1"];
const ENROUTE: &[&str] = &["enroute.saaras.io/v1"];

const TABLE: &[(&str, KindId, &[&str])] = &[
    ("Namespace", KindId::Namespace, CORE),
    ("Service", KindId::Service, CORE),
    ("Pod", KindId::Pod, CORE),
    ("ServiceAccount", KindId::ServiceAccount, CORE),
    ("Secret", KindId::Secret, CORE),
    ("ConfigMap", KindId::ConfigMap, CORE),
    ("Deployment", KindId::Deployment, APPS),
    ("StatefulSet", KindId::StatefulSet, APPS),
    ("DaemonSet", KindId::DaemonSet, APPS),
    ("PeerAuthentication", KindId::PeerAuthentication, SECURITY),
    ("AuthorizationPolicy", KindId::AuthorizationPolicy, SECURITY),
    ("DestinationRule", KindId::DestinationRule, NETWORKING),
    ("Gateway", KindId::Gateway, NETWORKING),
    ("VirtualService", KindId::VirtualService, NETWORKING),
    ("ServiceEntry", KindId::ServiceEntry, NETWORKING),
    ("WorkloadEntry", KindId::WorkloadEntry, NETWORKING),
    ("Sidecar", KindId::Sidecar, NETWORKING),
    ("Policy", KindId::Policy, LEGACY_AUTHN),
    ("MeshPolicy", KindId::MeshPolicy, LEGACY_AUTHN),
    ("GatewayHost", KindId::GatewayHost, ENROUTE),
];

/// API groups of third-party gateways that join the mesh with exported mesh certificates
/// (seed 000): their resources configure that gateway, not the mesh.
const THIRD_PARTY: &[(&str, &str)] = &[("enroute.saaras.io/", "the EnRoute gateway")];

/// The third-party gateway that reads `api_version`, if any.
fn third_party(api_version: &str) -> Option<&'static str> {
    THIRD_PARTY
        .iter()
        .find(|(group, _)| api_version.starts_with(group))
        .map(|(_, product)| *product)
}

/// The warning for a kind that loads (it is kept in the snapshot and checked for
/// duplicates) but that Veil does not act on, or `None` for kinds Veil enforces.
pub(crate) fn unsupported_note(id: KindId, api_version: &str, kind: &str) -> Option<String> {
    if id != KindId::GatewayHost {
        return None;
    }
    let product = third_party(api_version).unwrap_or("a third-party gateway");
    Some(format!(
        "kind {kind} (apiVersion {api_version}) is configuration of {product}, which reads it itself; \
         Veil does not support it and ignores it (the gateway reaches mesh services with its pod's mesh \
         certificate: `outputCerts` in veil.local.yaml, or `veil cert export`)"
    ))
}

/// The kind for `apiVersion`/`kind`, or the warning text explaining why it is ignored.
pub(crate) fn classify(api_version: &str, kind: &str) -> Result<KindId, String> {
    let Some((_, id, versions)) = TABLE.iter().find(|(name, _, _)| *name == kind) else {
        if let Some(product) = third_party(api_version) {
            return Err(format!(
                "kind {kind} (apiVersion {api_version}) is configuration of {product}, not of the mesh; \
                 Veil does not support it and the document is ignored"
            ));
        }
        return Err(format!(
            "kind {kind} (apiVersion {api_version}) is not one Veil reads; the document is ignored"
        ));
    };
    if versions.contains(&api_version) {
        Ok(*id)
    } else {
        Err(format!(
            "apiVersion {api_version} is not one Veil reads for kind {kind} (expected one of {}); the document is ignored",
            versions.join(", ")
        ))
    }
}
