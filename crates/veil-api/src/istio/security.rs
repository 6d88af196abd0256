//! `security.istio.io` kinds: PeerAuthentication and AuthorizationPolicy.

use crate::enums::strict_enum;
use crate::meta::WorkloadSelector;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

strict_enum! {
    /// PeerAuthentication mTLS mode. UNSET inherits from the parent level (PERMISSIVE when
    /// there is none).
    /// Reference: <https://istio.io/latest/docs/reference/config/security/peer_authentication/#PeerAuthentication-MutualTLS-Mode>
    #[derive(Default)]
    pub enum MtlsMode: "mode", case_insensitive = false {
        #[default]
        Unset = "UNSET",
        Disable = "DISABLE",
        Permissive = "PERMISSIVE",
        Strict = "STRICT",
    }
}

/// `PeerAuthentication.spec` (`security.istio.io/v1`, `v1beta1`).
/// Reference: <https://istio.io/latest/docs/reference/config/security/peer_authentication/>
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerAuthenticationSpec {
    /// Workload selector; absent or empty means namespace-wide (mesh-wide in the root namespace).
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    /// Workload-level mTLS; absent counts as UNSET.
    #[serde(default)]
    pub mtls: Option<PeerMtls>,
    /// Per *workload* (container) port overrides; only allowed with a selector.
    #[serde(default)]
    pub port_level_mtls: Option<BTreeMap<u32, PeerMtls>>,
}

impl PeerAuthenticationSpec {
    /// The workload-level mode (`UNSET` when `mtls` or its mode is absent).
    pub fn mode(&self) -> MtlsMode {
        self.mtls.as_ref().map(|m| m.mode).unwrap_or_default()
    }

    /// True when the selector is absent or has no labels (namespace/mesh-wide policy).
    pub fn is_namespace_wide(&self) -> bool {
        self.selector
            .as_ref()
            .is_none_or(|s| s.match_labels.is_empty())
    }
}

/// `{mode}` of PeerAuthentication `mtls` and `portLevelMtls` values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerMtls {
    /// The mode; UNSET when absent.
    #[serde(default)]
    pub mode: MtlsMode,
}

strict_enum! {
    /// AuthorizationPolicy action.
    /// Reference: <https://istio.io/latest/docs/reference/config/security/authorization-policy/#AuthorizationPolicy-Action>
    #[derive(Default)]
    pub enum AuthorizationAction: "action", case_insensitive = false {
        #[default]
        Allow = "ALLOW",
        Deny = "DENY",
        Audit = "AUDIT",
        Custom = "CUSTOM",
    }
}

/// `AuthorizationPolicy.spec`. `spec: {}` is ALLOW with no rules, which denies everything.
/// Reference: <https://istio.io/latest/docs/reference/config/security/authorization-policy/>
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    /// Workload selector; absent means every workload in the namespace.
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    /// Action; ALLOW when absent.
    #[serde(default)]
    pub action: AuthorizationAction,
    /// Rules, OR-ed.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Extension provider for CUSTOM, kept as written.
    #[serde(default)]
    pub provider: Option<serde_json::Value>,
}

/// One rule: `from`, `to` and `when` are AND-ed; entries inside each are OR-ed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// Sources.
    #[serde(default)]
    pub from: Vec<RuleFrom>,
    /// Operations.
    #[serde(default)]
    pub to: Vec<RuleTo>,
    /// Extra conditions.
    #[serde(default)]
    pub when: Vec<Condition>,
}

/// `rules[].from[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleFrom {
    /// The source.
    #[serde(default)]
    pub source: RuleSource,
}

/// `rules[].from[].source`. `principals` and `namespaces` come from the peer certificate and
/// therefore require mTLS.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleSource {
    /// Peer identities, `<trustDomain>/ns/<ns>/sa/<sa>`.
    #[serde(default)]
    pub principals: Vec<String>,
    /// Negated `principals`.
    #[serde(default)]
    pub not_principals: Vec<String>,
    /// JWT request principals.
    #[serde(default)]
    pub request_principals: Vec<String>,
    /// Negated `requestPrincipals`.
    #[serde(default)]
    pub not_request_principals: Vec<String>,
    /// Peer namespaces.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Negated `namespaces`.
    #[serde(default)]
    pub not_namespaces: Vec<String>,
    /// Service accounts, `ns/sa`.
    #[serde(default)]
    pub service_accounts: Vec<String>,
    /// Negated `serviceAccounts`.
    #[serde(default)]
    pub not_service_accounts: Vec<String>,
    /// Peer IP blocks.
    #[serde(default)]
    pub ip_blocks: Vec<String>,
    /// Negated `ipBlocks`.
    #[serde(default)]
    pub not_ip_blocks: Vec<String>,
    /// Original client IP blocks.
    #[serde(default)]
    pub remote_ip_blocks: Vec<String>,
    /// Negated `remoteIpBlocks`.
    #[serde(default)]
    pub not_remote_ip_blocks: Vec<String>,
}

/// `rules[].to[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleTo {
    /// The operation.
    #[serde(default)]
    pub operation: Operation,
}

/// `rules[].to[].operation`. Ports are strings in the API (workload ports).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    /// Hosts.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Negated hosts.
    #[serde(default)]
    pub not_hosts: Vec<String>,
    /// Workload ports, as strings.
    #[serde(default)]
    pub ports: Vec<String>,
    /// Negated ports.
    #[serde(default)]
    pub not_ports: Vec<String>,
    /// HTTP methods (gRPC: always POST).
    #[serde(default)]
    pub methods: Vec<String>,
    /// Negated methods.
    #[serde(default)]
    pub not_methods: Vec<String>,
    /// Paths (exact, `prefix*`, `*suffix`, `*`).
    #[serde(default)]
    pub paths: Vec<String>,
    /// Negated paths.
    #[serde(default)]
    pub not_paths: Vec<String>,
}

/// `rules[].when[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Attribute name, e.g. `request.headers[x]` or `source.ip`.
    pub key: String,
    /// Accepted values.
    #[serde(default)]
    pub values: Vec<String>,
    /// Rejected values.
    #[serde(default)]
    pub not_values: Vec<String>,
}
