//! Legacy `authentication.istio.io/v1alpha1` `Policy` (namespaced) and `MeshPolicy`
//! (cluster-scoped, only `default` is used), removed after Istio 1.5.
//! Reference: <https://istio.io/v1.5/docs/reference/config/security/istio.authentication.v1alpha1/>

use crate::enums::strict_enum;
use serde::{Deserialize, Deserializer, Serialize};

strict_enum! {
    /// Legacy `MutualTls.mode`; the proto's zero value is STRICT.
    #[derive(Default)]
    pub enum LegacyMtlsMode: "mode", case_insensitive = false {
        #[default]
        Strict = "STRICT",
        Permissive = "PERMISSIVE",
    }
}

/// `Policy.spec` / `MeshPolicy.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicySpec {
    /// Services the policy targets; none means namespace-wide.
    #[serde(default)]
    pub targets: Vec<TargetSelector>,
    /// Peer authentication methods; none with `mtls` means mTLS DISABLE.
    #[serde(default)]
    pub peers: Vec<PeerAuthenticationMethod>,
    /// JWT origins, kept as written (not enforced by Veil).
    #[serde(default)]
    pub origins: Vec<serde_json::Value>,
    /// `USE_PEER` or `USE_ORIGIN`, as written.
    #[serde(default)]
    pub principal_binding: Option<String>,
    /// Peer authentication is optional.
    #[serde(default)]
    pub peer_is_optional: bool,
    /// Origin authentication is optional.
    #[serde(default)]
    pub origin_is_optional: bool,
}

impl PolicySpec {
    /// The mTLS mode the policy requires: the first peer with `mtls`, else `None` (DISABLE),
    /// following 1.4's `GetMutualTLSMode`.
    pub fn mtls_mode(&self) -> Option<LegacyMtlsMode> {
        self.peers
            .iter()
            .find_map(|p| p.mtls.as_ref())
            .map(|m| m.effective_mode())
    }
}

/// `targets[]`: a Service by short name, optionally narrowed to Service ports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetSelector {
    /// Service short name.
    #[serde(default)]
    pub name: String,
    /// Service ports, by number or name; none means all ports.
    #[serde(default)]
    pub ports: Vec<LegacyPortSelector>,
}

/// `targets[].ports[]`: `{number}` or `{name}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyPortSelector {
    /// Service port number.
    #[serde(default)]
    pub number: Option<u32>,
    /// Service port name.
    #[serde(default)]
    pub name: Option<String>,
}

/// `peers[]`. `mtls: {}` and `mtls:` (null) both mean STRICT; an entry without `mtls`
/// (e.g. only `jwt`) requires nothing of the peer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerAuthenticationMethod {
    /// `Some` when the `mtls` key is present, even with a null value.
    #[serde(default, deserialize_with = "present_or_null")]
    pub mtls: Option<LegacyMutualTls>,
}

/// `peers[].mtls`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyMutualTls {
    /// Mode; STRICT when absent.
    #[serde(default)]
    pub mode: LegacyMtlsMode,
    /// Deprecated: `true` maps to PERMISSIVE.
    #[serde(default)]
    pub allow_tls: bool,
}

impl LegacyMutualTls {
    /// The mode after applying the deprecated `allowTls` flag.
    pub fn effective_mode(&self) -> LegacyMtlsMode {
        if self.allow_tls {
            LegacyMtlsMode::Permissive
        } else {
            self.mode
        }
    }
}

/// Called only when the key is present: a null value becomes the default (STRICT).
fn present_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<Option<LegacyMutualTls>, D::Error> {
    Ok(Some(
        Option::<LegacyMutualTls>::deserialize(d)?.unwrap_or_default(),
    ))
}
