//! Istio kinds: security (PeerAuthentication, AuthorizationPolicy), networking
//! (DestinationRule, Gateway, ServiceEntry, WorkloadEntry, Sidecar), VirtualService, and the
//! legacy `authentication.istio.io/v1alpha1` Policy/MeshPolicy.

pub mod legacy;
pub mod networking;
pub mod security;
pub mod virtual_service;
