//! rustls configurations for mesh mTLS between proxies (TLS 1.3, mutual, SPIFFE identities)
//! and reading the peer's SPIFFE ID after a handshake.
//!
//! ALPN values follow Istio (`pilot/pkg/networking/util`: `ALPNInMeshWithMxc`, `ALPNInMeshH2`, ...).
//!
//! Sessions resume (TLS 1.3 PSK with ECDHE, RFC 8446 §2.2): a resumed handshake skips the
//! certificate signatures and chain checks, which are most of a new connection's cost. It
//! keeps mutual authentication's meaning: the server stores the client's verified chain with
//! the session (rustls reports it again from `peer_certificates()`), a server keeps a session
//! for [`SESSION_TTL`] at most and uses it once, and a client keeps its sessions in its
//! config, so that a config built for another set of allowed identities (or another
//! certificate) never offers them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustls::client::{Resumption, Tls12Resumption};
use rustls::server::StoresServerSessions;
use rustls::CipherSuite;
use rustls_pki_types::CertificateDer;

use crate::cert::{TrustBundle, WorkloadCertificate};
use crate::error::IdentityError;
use crate::spiffe::SpiffeId;
use crate::verify::{SpiffeClientVerifier, SpiffeServerVerifier};
use crate::x509;

/// ALPN of a mesh connection between two Veil sidecars that carries
/// connections one after another (`veil-proxy`'s `mesh_frames`).
pub const STREAMS_ALPN: &[u8] = b"veil-streams/1";

/// ALPN protocols a mesh server accepts, in Istio's order. A sidecar's
/// inbound also accepts [`STREAMS_ALPN`], first (`veil-proxy`'s
/// `TlsConfigs::server_streams`); a gateway does not.
pub const MESH_ALPN: &[&[u8]] = &[
    b"istio",
    b"istio-peer-exchange",
    b"istio-h2",
    b"istio-http/1.1",
    b"istio-http/1.0",
];

/// Longest time a server accepts a session for resumption after issuing it: within it a
/// client proves the identity it proved in the full handshake, without signing again.
pub const SESSION_TTL: Duration = Duration::from_secs(600);
/// Sessions a server keeps (each about 1.5 KiB with the client's chain); the oldest go first.
const SERVER_SESSIONS: usize = 512;
/// Server names a client config keeps sessions for (rustls keeps up to 8 tickets per name).
const CLIENT_SESSION_NAMES: usize = 32;

/// aws-lc-rs with TLS 1.3 `TLS_AES_128_GCM_SHA256` preferred (BoringSSL's order, so
/// Envoy's): its key schedule hashes with SHA-256, which CPUs accelerate (SHA-NI) where
/// SHA-384 runs in software, and AES-128 encrypts bulk data faster than AES-256.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites.sort_by_key(|suite| match suite.suite() {
        CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
        CipherSuite::TLS13_AES_256_GCM_SHA384 => 1,
        _ => 2,
    });
    Arc::new(provider)
}

/// The chain a mesh peer is sent: `cert.chain` without the roots of `bundle` (the leaf
/// always stays). A peer checks the chain against its own trust anchors, so a root it
/// trusts adds nothing (RFC 8446 §4.4.2 lets a certificate that specifies a trust anchor be
/// omitted), while the peer keeps the chain it received for the connection's life and in
/// its session tickets and cache: a root costs about 450 bytes per connection on each side.
fn presented_chain(
    cert: &WorkloadCertificate,
    bundle: &TrustBundle,
) -> Vec<CertificateDer<'static>> {
    let leaf = cert.chain.iter().take(1);
    let above = cert.chain.iter().skip(1).filter(|c| !bundle.roots().contains(c));
    leaf.chain(above).cloned().collect()
}

/// Server config for inbound mesh mTLS: TLS 1.3 only, presents `cert` (without the roots of
/// `bundle`), requires a client certificate that chains to `bundle` with one SPIFFE ID of its
/// trust domain ([`SpiffeClientVerifier`]); ALPN = [`MESH_ALPN`]. Issues one session ticket per
/// handshake (a client uses one per connection, so one keeps its supply steady while the
/// server holds few sessions), usable once within [`SESSION_TTL`] for a connection of this
/// config (a rebuilt config, e.g. after rotation, starts with no sessions).
///
/// # Errors
/// [`IdentityError::Tls`] if rustls refuses the certificate or key.
pub fn mesh_server_config(
    cert: &WorkloadCertificate,
    bundle: &TrustBundle,
) -> Result<Arc<rustls::ServerConfig>, IdentityError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(SpiffeClientVerifier::new(bundle.clone())))
        .with_single_cert(presented_chain(cert, bundle), cert.key())?;
    config.alpn_protocols = MESH_ALPN.iter().map(|p| p.to_vec()).collect();
    config.session_storage = Arc::new(SessionCache::new(SERVER_SESSIONS, SESSION_TTL));
    config.send_tls13_tickets = 1;
    Ok(Arc::new(config))
}

/// Client config for outbound mesh mTLS: TLS 1.3 only, ALPN `istio`, presents `cert`
/// (without the roots of `bundle`), and accepts only servers chaining to `bundle` whose
/// SPIFFE ID is in `allowed` (empty = any ID of the bundle's trust domain)
/// ([`SpiffeServerVerifier`]). The SNI/DNS
/// name is not checked. Set `alpn_protocols` on a copy for `istio-h2` etc. (copies share
/// the session cache). Resumes TLS 1.3 sessions per SNI from a cache that belongs to this
/// config alone: build one config per set of allowed identities.
///
/// # Errors
/// [`IdentityError::Tls`] if rustls refuses the certificate or key.
pub fn mesh_client_config(
    cert: &WorkloadCertificate,
    bundle: &TrustBundle,
    allowed: &[SpiffeId],
) -> Result<Arc<rustls::ClientConfig>, IdentityError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(
            bundle.clone(),
            allowed.to_vec(),
        )))
        .with_client_auth_cert(presented_chain(cert, bundle), cert.key())?;
    config.alpn_protocols = vec![b"istio".to_vec()];
    config.resumption = Resumption::in_memory_sessions(CLIENT_SESSION_NAMES)
        .tls12_resumption(Tls12Resumption::Disabled);
    Ok(Arc::new(config))
}

/// The SPIFFE ID of a peer from its certificates as rustls reports them
/// (`peer_certificates()`, leaf first). Only parses: the chain was verified in the handshake.
///
/// # Errors
/// [`IdentityError::NoCertificate`] for an empty list; [`IdentityError::NoSpiffeId`],
/// [`IdentityError::MultipleSpiffeIds`] or [`IdentityError::InvalidSpiffeId`] for the leaf.
pub fn peer_spiffe_id(certs: &[CertificateDer<'_>]) -> Result<SpiffeId, IdentityError> {
    let leaf = certs.first().ok_or(IdentityError::NoCertificate)?;
    x509::spiffe_id_of(leaf)
}

/// A server's resumable sessions: at most `capacity`, each taken at most once and only
/// within `ttl` of being stored (rustls' `ServerSessionMemoryCache` has no age limit).
#[derive(Debug)]
struct SessionCache {
    capacity: usize,
    ttl: Duration,
    sessions: Mutex<Sessions>,
}

#[derive(Debug, Default)]
struct Sessions {
    by_id: HashMap<Vec<u8>, (Instant, Vec<u8>)>,
    /// Ids in the order they were stored (taken ones too, until they reach the front).
    order: VecDeque<Vec<u8>>,
}

impl SessionCache {
    fn new(capacity: usize, ttl: Duration) -> Self {
        SessionCache { capacity: capacity.max(1), ttl, sessions: Mutex::new(Sessions::default()) }
    }

    fn fresh(&self, stored: Instant) -> bool {
        stored.elapsed() < self.ttl
    }

    /// Sessions held now (stale ones count until they are pruned).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner).by_id.len()
    }
}

impl StoresServerSessions for SessionCache {
    fn put(&self, id: Vec<u8>, mut value: Vec<u8>) -> bool {
        // rustls encodes a session into a growing `Vec`: up to twice its length.
        value.shrink_to_fit();
        let mut s = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        // Drop from the front what is full, stale, or already taken.
        while let Some(front) = s.order.front() {
            let stale = s.by_id.get(front).is_none_or(|(at, _)| !self.fresh(*at));
            if !stale && s.order.len() < self.capacity {
                break;
            }
            if let Some(old) = s.order.pop_front() {
                s.by_id.remove(&old);
            }
        }
        s.order.push_back(id.clone());
        s.by_id.insert(id, (Instant::now(), value));
        true
    }

    fn get(&self, id: &[u8]) -> Option<Vec<u8>> {
        let s = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        s.by_id.get(id).filter(|(at, _)| self.fresh(*at)).map(|(_, v)| v.clone())
    }

    fn take(&self, id: &[u8]) -> Option<Vec<u8>> {
        let mut s = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        s.by_id.remove(id).filter(|(at, _)| self.fresh(*at)).map(|(_, v)| v)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> Vec<u8> {
        vec![n; 32]
    }

    #[test]
    fn a_session_is_taken_once() {
        let cache = SessionCache::new(4, Duration::from_secs(60));
        assert!(cache.put(id(1), b"one".to_vec()));
        assert_eq!(cache.get(&id(1)), Some(b"one".to_vec()));
        assert_eq!(cache.take(&id(1)), Some(b"one".to_vec()));
        assert_eq!(cache.take(&id(1)), None);
    }

    #[test]
    fn the_oldest_session_goes_when_full() {
        let cache = SessionCache::new(2, Duration::from_secs(60));
        for n in 1..=3 {
            cache.put(id(n), vec![n]);
        }
        assert_eq!(cache.take(&id(1)), None, "evicted");
        assert_eq!(cache.take(&id(2)), Some(vec![2]));
        assert_eq!(cache.take(&id(3)), Some(vec![3]));
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn a_stale_session_is_refused_and_pruned() {
        let cache = SessionCache::new(8, Duration::from_millis(30));
        cache.put(id(1), vec![1]);
        cache.put(id(2), vec![2]);
        assert_eq!(cache.get(&id(2)), Some(vec![2]), "control: fresh");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get(&id(1)), None);
        assert_eq!(cache.take(&id(2)), None);
        cache.put(id(3), vec![3]);
        assert_eq!(cache.len(), 1, "stale sessions pruned on the next put");
        assert_eq!(cache.take(&id(3)), Some(vec![3]));
    }

    #[test]
    fn the_presented_chain_leaves_out_the_roots_the_peer_trusts() {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::CertificateAuthority::load_or_create(dir.path(), Default::default()).unwrap();
        let now = std::time::SystemTime::now();
        let hour = Duration::from_secs(3600);
        let id = SpiffeId::new(&Default::default(), "shop", "reviews");
        let cert = ca.issue_for_test(&id, now - hour, now + hour).unwrap();
        assert_eq!(cert.chain.len(), 2, "control: the workload chain is leaf and root");
        let bundle = ca.trust_bundle();
        assert_eq!(presented_chain(&cert, &bundle), cert.chain[..1].to_vec(), "the root is left out");
        let other = crate::CertificateAuthority::load_or_create(&dir.path().join("other"), Default::default()).unwrap();
        let unrelated = other.trust_bundle();
        assert_eq!(presented_chain(&cert, &unrelated), cert.chain, "a root the bundle lacks stays");
    }

    #[test]
    fn mesh_configs_prefer_aes_128_gcm() {
        let first = provider().cipher_suites.first().map(|s| s.suite());
        assert_eq!(first, Some(CipherSuite::TLS13_AES_128_GCM_SHA256));
    }
}
