//! rustls server configs for gateway TLS servers, built from their
//! [`ServerCredential`] and cached per listener.
//!
//! PEM carried in the config (from a Kubernetes Secret) is part of the cache
//! key, so a changed Secret (a new config) builds a new config on the next
//! connection. Certificate files are re-read when their modification time
//! changes, checked at most every [`FILE_CHECK_SECS`] seconds, so a rotated
//! file is served without restarting the proxy.
//!
//! Client certificates follow Istio's server `tls.mode`: MUTUAL requires one
//! that chains to the server's CA; OPTIONAL_MUTUAL asks for one and checks it
//! when sent; SIMPLE asks for none.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};
use veil_model::{GatewayTlsMode, PemSource, ServerCredential};

/// Longest time a cached config is used before its files' modification
/// times are checked again, in seconds.
pub(crate) const FILE_CHECK_SECS: u64 = 2;
/// Most distinct credentials kept before the cache is emptied.
const MAX_CONFIGS: usize = 256;

/// What shapes one server config.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    mode: GatewayTlsMode,
    /// ALPN `h2`, `http/1.1` (HTTP servers) or none.
    http: bool,
    credential: ServerCredential,
}

struct Entry {
    checked: Instant,
    mtimes: Vec<Option<SystemTime>>,
    built: Result<Arc<ServerConfig>, String>,
}

/// Server configs of one gateway listener, by credential.
#[derive(Default)]
pub(crate) struct ServerConfigs {
    entries: Mutex<HashMap<Key, Entry>>,
}

fn files(credential: &ServerCredential) -> Vec<&Path> {
    [Some(&credential.cert), Some(&credential.key), credential.ca.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|s| match s {
            PemSource::File(path) => Some(path.as_path()),
            PemSource::Pem(_) => None,
        })
        .collect()
}

fn mtimes(credential: &ServerCredential) -> Vec<Option<SystemTime>> {
    files(credential).iter().map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok()).collect()
}

impl ServerConfigs {
    /// The config for a server in `mode` presenting `credential`.
    ///
    /// Errors: why it cannot be built (unreadable file, no PEM certificate
    /// or key, key not matching, empty CA), naming the field and source.
    pub(crate) fn get(&self, mode: GatewayTlsMode, http: bool, credential: &ServerCredential) -> Result<Arc<ServerConfig>, String> {
        let key = Key { mode, http, credential: credential.clone() };
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if let Some(entry) = entries.get_mut(&key) {
            if now.duration_since(entry.checked) < Duration::from_secs(FILE_CHECK_SECS) {
                return entry.built.clone();
            }
            let current = mtimes(credential);
            entry.checked = now;
            if current == entry.mtimes {
                return entry.built.clone();
            }
            tracing::info!(source = %credential.source, "gateway certificate files changed; reloading");
        }
        let stamps = mtimes(credential);
        let built = build(mode, http, credential);
        if entries.len() >= MAX_CONFIGS {
            entries.clear();
        }
        entries.insert(key, Entry { checked: now, mtimes: stamps, built: built.clone() });
        built
    }
}

fn read(source: &PemSource) -> Result<Vec<u8>, String> {
    match source {
        PemSource::Pem(text) => Ok(text.as_bytes().to_vec()),
        PemSource::File(path) => std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display())),
    }
}

fn certificates(source: &PemSource, field: &str, origin: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read(source).map_err(|e| format!("{field} from {origin}: {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{field} from {origin} is not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{field} from {origin} holds no PEM certificate"));
    }
    Ok(certs)
}

/// Builds the rustls server config (TLS 1.2 and 1.3).
fn build(mode: GatewayTlsMode, http: bool, credential: &ServerCredential) -> Result<Arc<ServerConfig>, String> {
    let origin = credential.source.as_str();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = certificates(&credential.cert, "server certificate", origin)?;
    let key_bytes = read(&credential.key).map_err(|e| format!("private key from {origin}: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes)
        .map_err(|e| format!("private key from {origin} is not a PEM private key: {e}"))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match (mode, &credential.ca) {
        (GatewayTlsMode::Mutual | GatewayTlsMode::OptionalMutual, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(certificates(ca, "client CA", origin)?);
            if added == 0 {
                return Err(format!("client CA from {origin} holds no usable CA certificate"));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if mode == GatewayTlsMode::OptionalMutual { verifier.allow_unauthenticated() } else { verifier };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| format!("client CA from {origin}: {e}"))?)
        }
        (GatewayTlsMode::Mutual | GatewayTlsMode::OptionalMutual, None) => {
            return Err(format!("tls.mode {mode} needs a client CA, and {origin} has none"));
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("server certificate and private key from {origin} cannot be used together: {e}"))?;
    if http {
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    }
    Ok(Arc::new(config))
}
