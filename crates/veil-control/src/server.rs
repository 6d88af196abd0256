//! `ControlPlane`: the CA and the config stream behind one TLS gRPC port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use veil_identity::{BootstrapTokens, CaService, CertificateAuthority, SpiffeId, TrustBundle, TrustDomain};

use crate::config_service::ConfigService;
use crate::store::ConfigStore;

/// The DNS name in the control plane's serving certificate, as Istio's istiod.
pub const CONTROL_PLANE_NAME: &str = "istiod.istio-system.svc";

/// Errors of the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    /// The CA could not be loaded or created.
    #[error("CA: {0}")]
    Identity(#[from] veil_identity::IdentityError),
    /// The gRPC server failed.
    #[error("control plane gRPC server on {addr}: {source}; is the address in use?")]
    Serve {
        addr: SocketAddr,
        #[source]
        source: tonic::transport::Error,
    },
}

/// How to run the control plane.
#[derive(Debug, Clone)]
pub struct ControlPlaneSettings {
    /// Where the CA key and root live (mode 0600 key).
    pub state_dir: PathBuf,
    pub trust_domain: TrustDomain,
    /// Longest workload certificate lifetime handed out (Istio's `SECRET_TTL`, 24 h).
    pub max_cert_ttl: Duration,
}

/// The running parts of a control plane, built in-process.
pub struct ControlPlane {
    pub ca: Arc<CertificateAuthority>,
    pub tokens: Arc<BootstrapTokens>,
    pub store: Arc<ConfigStore>,
    settings: ControlPlaneSettings,
}

impl ControlPlane {
    /// Loads (or creates on first start) the CA in `settings.state_dir`.
    ///
    /// # Errors
    /// [`ControlPlaneError::Identity`] when the CA files cannot be read or written.
    pub fn new(settings: ControlPlaneSettings) -> Result<Self, ControlPlaneError> {
        let ca = CertificateAuthority::load_or_create(&settings.state_dir, settings.trust_domain.clone())?;
        Ok(Self {
            ca: Arc::new(ca),
            tokens: Arc::new(BootstrapTokens::default()),
            store: Arc::new(ConfigStore::default()),
            settings,
        })
    }

    /// The mesh's trust bundle (what `istio-ca-root-cert` carries).
    pub fn trust_bundle(&self) -> TrustBundle {
        self.ca.trust_bundle()
    }

    /// Issues a one-time bootstrap token for exactly `id`.
    pub fn bootstrap_token(&self, id: &SpiffeId) -> String {
        self.tokens.issue(id)
    }

    /// Serves the CA and the config stream over TLS on `addr` until
    /// `shutdown` resolves.
    ///
    /// # Errors
    /// [`ControlPlaneError::Serve`] when the port cannot be bound.
    pub async fn serve(
        &self,
        addr: SocketAddr,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), ControlPlaneError> {
        let names = vec![
            CONTROL_PLANE_NAME.to_string(),
            "istiod".to_string(),
            "veil-control".to_string(),
        ];
        let cert = self.ca.issue_server_certificate(&names, Duration::from_secs(365 * 24 * 3600))?;
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(cert.chain_pem(), cert.key_pem()))
            .client_ca_root(Certificate::from_pem(self.ca.root_pem()))
            .client_auth_optional(true);
        let ca = CaService::new(self.ca.clone(), self.tokens.clone(), self.settings.max_cert_ttl);
        let config = ConfigService::new(self.store.clone());
        Server::builder()
            .tls_config(tls)
            .map_err(|source| ControlPlaneError::Serve { addr, source })?
            .add_service(ca.into_server())
            .add_service(config.into_server())
            .serve_with_shutdown(addr, shutdown)
            .await
            .map_err(|source| ControlPlaneError::Serve { addr, source })
    }
}
