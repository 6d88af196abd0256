//! The config stream: a tonic client of `veil.config.v1.ProxyConfigService`
//! over mutual TLS (the workload certificate as client identity), keeping
//! the last good [`ProxyConfig`] when the control plane goes away.

use crate::ProxyError;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use veil_identity::WorkloadCertificate;
use veil_model::ProxyConfig;
use veil_proto::config::proxy_config_service_client::ProxyConfigServiceClient;
use veil_proto::config::{ProxyConfigUpdate, WatchRequest};

/// First reconnect delay, in seconds.
const BACKOFF_MIN_SECS: u64 = 1;
/// Longest reconnect delay, in seconds.
const BACKOFF_MAX_SECS: u64 = 30;
/// Attempts made before [`watch_config`] gives up on a first config.
const FIRST_CONFIG_ATTEMPTS: u32 = 8;
/// Bound on connecting to the control plane, in seconds.
const CONNECT_TIMEOUT_SECS: u64 = 5;

/// Where the control plane's config stream is and how to trust it.
#[derive(Debug, Clone)]
pub struct ConfigStreamSettings {
    /// `https://host:15012`.
    pub address: String,
    /// Name the control plane's certificate is checked against.
    pub server_name: String,
    /// PEM of the root that signed the control plane's certificate.
    pub root_pem: String,
    /// This proxy's pod name.
    pub pod: String,
    pub namespace: String,
}

/// Connects to the config stream and returns once the first config arrived.
/// Afterwards a background task keeps the receiver current, reconnecting
/// with backoff (1 s doubling to 30 s) when the stream breaks and ignoring
/// (with a log line) updates that do not parse; it ends when every receiver
/// is dropped. Must be called inside a tokio runtime.
///
/// Errors: [`ProxyError::ConfigStream`] when no config arrived after 8
/// attempts (about 1.5 minutes).
pub async fn watch_config(
    cfg: ConfigStreamSettings,
    cert: watch::Receiver<Arc<WorkloadCertificate>>,
) -> Result<watch::Receiver<Arc<ProxyConfig>>, ProxyError> {
    let mut backoff = Backoff::default();
    let mut last_error = String::new();
    for attempt in 1..=FIRST_CONFIG_ATTEMPTS {
        match open(&cfg, &cert).await {
            Ok(mut stream) => match next_config(&cfg, &mut stream).await {
                Ok(first) => {
                    let (tx, rx) = watch::channel(Arc::new(first));
                    tokio::spawn(follow(cfg, cert, tx, Some(stream)));
                    return Ok(rx);
                }
                Err(e) => last_error = e,
            },
            Err(e) => last_error = e,
        }
        tracing::warn!(address = %cfg.address, attempt, "no config yet: {last_error}");
        if attempt < FIRST_CONFIG_ATTEMPTS {
            tokio::time::sleep(backoff.next()).await;
        }
    }
    Err(ProxyError::ConfigStream { address: cfg.address, attempts: FIRST_CONFIG_ATTEMPTS, reason: last_error })
}

#[derive(Default)]
struct Backoff {
    secs: u64,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        self.secs = (self.secs * 2).clamp(BACKOFF_MIN_SECS, BACKOFF_MAX_SECS);
        Duration::from_secs(self.secs)
    }
}

type UpdateStream = tonic::Streaming<ProxyConfigUpdate>;

async fn open(cfg: &ConfigStreamSettings, cert: &watch::Receiver<Arc<WorkloadCertificate>>) -> Result<UpdateStream, String> {
    let current = cert.borrow().clone();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(cfg.root_pem.as_bytes()))
        .domain_name(cfg.server_name.clone())
        .identity(Identity::from_pem(current.chain_pem(), current.key_pem()));
    let channel: Channel = Endpoint::from_shared(cfg.address.clone())
        .map_err(|e| format!("invalid address {:?}: {e}", cfg.address))?
        .connect_timeout(Duration::from_secs(CONNECT_TIMEOUT_SECS))
        .tls_config(tls)
        .map_err(|e| format!("TLS settings rejected: {e}"))?
        .connect()
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let request = WatchRequest { pod: cfg.pod.clone(), namespace: cfg.namespace.clone() };
    let response = ProxyConfigServiceClient::new(channel)
        .watch(request)
        .await
        .map_err(|status| format!("Watch refused: {status}"))?;
    Ok(response.into_inner())
}

/// The next update that parses; unparsable ones are logged and skipped.
async fn next_config(cfg: &ConfigStreamSettings, stream: &mut UpdateStream) -> Result<ProxyConfig, String> {
    loop {
        let update = match stream.message().await {
            Ok(Some(update)) => update,
            Ok(None) => return Err("the control plane ended the stream".to_string()),
            Err(status) => return Err(format!("stream broke: {status}")),
        };
        match serde_json::from_str::<ProxyConfig>(&update.config_json) {
            Ok(config) => return Ok(config),
            Err(e) => tracing::warn!(address = %cfg.address, version = update.version, "ignoring a config update that does not parse: {e}; keeping the last good config"),
        }
    }
}

async fn follow(
    cfg: ConfigStreamSettings,
    cert: watch::Receiver<Arc<WorkloadCertificate>>,
    tx: watch::Sender<Arc<ProxyConfig>>,
    mut stream: Option<UpdateStream>,
) {
    let mut backoff = Backoff::default();
    while !tx.is_closed() {
        let Some(current) = stream.as_mut() else {
            tokio::time::sleep(backoff.next()).await;
            match open(&cfg, &cert).await {
                Ok(opened) => stream = Some(opened),
                Err(e) => tracing::warn!(address = %cfg.address, "config stream reconnect failed: {e}; keeping the last good config"),
            }
            continue;
        };
        let next = tokio::select! {
            next = next_config(&cfg, current) => next,
            _ = tx.closed() => return,
        };
        match next {
            Ok(config) => {
                backoff = Backoff::default();
                tracing::info!(version = config.version, "config update applied");
                tx.send_replace(Arc::new(config));
            }
            Err(e) => {
                tracing::warn!(address = %cfg.address, "config stream lost: {e}; keeping the last good config and reconnecting");
                stream = None;
            }
        }
    }
}
