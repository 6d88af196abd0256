//! The config stream (`veil.config.v1.ProxyConfigService/Watch`): sends a
//! proxy its current `ProxyConfig` at once, then every change.
//!
//! A proxy proves who it is with its mesh certificate; it only ever gets the
//! config of a pod whose identity matches that certificate.

use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use veil_proto::config::proxy_config_service_server::{ProxyConfigService, ProxyConfigServiceServer};
use veil_proto::config::{ProxyConfigUpdate, WatchRequest};

use crate::store::ConfigStore;

/// Serves config streams from a [`ConfigStore`].
#[derive(Debug, Clone)]
pub struct ConfigService {
    store: Arc<ConfigStore>,
}

impl ConfigService {
    /// A service over `store`.
    pub fn new(store: Arc<ConfigStore>) -> Self {
        Self { store }
    }

    /// The tonic server wrapper.
    pub fn into_server(self) -> ProxyConfigServiceServer<Self> {
        ProxyConfigServiceServer::new(self)
    }
}

type UpdateStream = Pin<Box<dyn Stream<Item = Result<ProxyConfigUpdate, Status>> + Send>>;

fn encode(cfg: &veil_model::ProxyConfig) -> Result<ProxyConfigUpdate, Status> {
    let json = serde_json::to_string(cfg)
        .map_err(|e| Status::internal(format!("cannot encode config: {e}")))?;
    Ok(ProxyConfigUpdate { version: cfg.version, config_json: json })
}

#[tonic::async_trait]
impl ProxyConfigService for ConfigService {
    type WatchStream = UpdateStream;

    async fn watch(&self, request: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let certs = request.peer_certs().ok_or_else(|| {
            Status::unauthenticated("no client certificate: a proxy must connect with its mesh certificate")
        })?;
        let peer = veil_identity::peer_spiffe_id(&certs)
            .map_err(|e| Status::unauthenticated(format!("bad client certificate: {e}")))?;
        let peer_addr = request.remote_addr();
        let req = request.into_inner();
        let first = self.store.get(&req.namespace, &req.pod).ok_or_else(|| {
            Status::not_found(format!(
                "no proxy {}/{} in the mesh; check the pod name and namespace",
                req.namespace, req.pod
            ))
        })?;
        if first.node.spiffe_id != peer.to_string() {
            tracing::warn!(%peer, pod = %req.pod, namespace = %req.namespace, expected = %first.node.spiffe_id,
                "config stream refused: identity does not match the pod");
            return Err(Status::permission_denied(format!(
                "{peer} may not read the config of {}/{} (which runs as {})",
                req.namespace, req.pod, first.node.spiffe_id
            )));
        }
        tracing::info!(pod = %req.pod, namespace = %req.namespace, version = first.version, "proxy connected");
        let store = self.store.clone();
        let mut changes = store.subscribe();
        let (ns, pod) = (req.namespace, req.pod);
        let stream = async_stream(move |tx| async move {
            let listed = store.open_stream(&ns, &pod, peer_addr);
            let mut sent = first.version;
            if tx.send(encode(&first)).await.is_err() {
                return;
            }
            listed.sent(sent);
            loop {
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                }
                let Some(cfg) = store.get(&ns, &pod) else { continue };
                if cfg.version != sent {
                    sent = cfg.version;
                    tracing::info!(pod = %pod, namespace = %ns, version = sent, "config pushed");
                    if tx.send(encode(&cfg)).await.is_err() {
                        return;
                    }
                    listed.sent(sent);
                }
            }
        });
        Ok(Response::new(stream))
    }
}

/// Turns a producer task into a stream through a small channel.
fn async_stream<F, Fut>(f: F) -> UpdateStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<ProxyConfigUpdate, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
