//! The proxy's rustls configurations, rebuilt when the workload certificate
//! rotates and cached otherwise (one server config; one client config per
//! set of allowed server identities).

use crate::ProxyError;
use rustls::{ClientConfig, ServerConfig};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::watch;
use veil_identity::{SpiffeId, TrustBundle, WorkloadCertificate};

/// Most distinct identity sets kept before the client cache is emptied.
const MAX_CLIENT_CONFIGS: usize = 1024;

/// Mesh TLS configs for the current workload certificate.
pub(crate) struct TlsConfigs {
    cert: watch::Receiver<Arc<WorkloadCertificate>>,
    bundle: TrustBundle,
    cache: Mutex<Cache>,
}

struct Cache {
    /// The certificate the cached configs were built from.
    cert: Arc<WorkloadCertificate>,
    server: Option<Arc<ServerConfig>>,
    clients: HashMap<Vec<String>, Arc<ClientConfig>>,
}

impl TlsConfigs {
    pub(crate) fn new(cert: watch::Receiver<Arc<WorkloadCertificate>>, bundle: TrustBundle) -> Self {
        let current = cert.borrow().clone();
        TlsConfigs {
            cert,
            bundle,
            cache: Mutex::new(Cache { cert: current, server: None, clients: HashMap::new() }),
        }
    }

    /// The workload certificate in use now.
    pub(crate) fn certificate(&self) -> Arc<WorkloadCertificate> {
        self.cert.borrow().clone()
    }

    /// Runs `f` on the cache, after emptying it if the certificate rotated.
    fn with_cache<T>(&self, f: impl FnOnce(&mut Cache, &TrustBundle) -> T) -> T {
        let current = self.certificate();
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if !Arc::ptr_eq(&cache.cert, &current) {
            *cache = Cache { cert: current, server: None, clients: HashMap::new() };
        }
        f(&mut cache, &self.bundle)
    }

    /// The server config for mesh mTLS on inbound ports (client certificate
    /// from the mesh CA required, TLS 1.3, ALPN `istio*`).
    ///
    /// Errors: [`ProxyError::Identity`] when the certificate cannot be used.
    pub(crate) fn server(&self) -> Result<Arc<ServerConfig>, ProxyError> {
        self.with_cache(|cache, bundle| {
            if let Some(server) = &cache.server {
                return Ok(server.clone());
            }
            let server = veil_identity::mesh_server_config(&cache.cert, bundle)
                .map_err(|e| ProxyError::Identity(e.to_string()))?;
            cache.server = Some(server.clone());
            Ok(server)
        })
    }

    /// The client config that accepts only a server presenting one of
    /// `identities` (SPIFFE IDs).
    ///
    /// Errors: [`ProxyError::Identity`] when an identity is not a SPIFFE ID or
    /// the certificate cannot be used.
    pub(crate) fn client(&self, identities: &[String]) -> Result<Arc<ClientConfig>, ProxyError> {
        let mut key = identities.to_vec();
        key.sort();
        key.dedup();
        self.with_cache(|cache, bundle| {
            if let Some(client) = cache.clients.get(&key) {
                return Ok(client.clone());
            }
            let allowed = key
                .iter()
                .map(|id| {
                    id.parse::<SpiffeId>().map_err(|e| {
                        ProxyError::Identity(format!("destination identity {id:?} is not a SPIFFE ID: {e}"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let client = veil_identity::mesh_client_config(&cache.cert, bundle, &allowed)
                .map_err(|e| ProxyError::Identity(e.to_string()))?;
            if cache.clients.len() >= MAX_CLIENT_CONFIGS {
                cache.clients.clear();
            }
            cache.clients.insert(key, client.clone());
            Ok(client)
        })
    }
}
