//! The proxy as a whole: its settings, its listeners, and the state every
//! connection shares (current config, TLS configs, records, load balancer).

use crate::records::{self, RecordSink, RecordWriter};
use crate::tls::TlsConfigs;
use crate::http_pool::HttpPool;
use crate::upstream::Balancer;
use crate::ProxyError;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use veil_identity::{TrustBundle, WorkloadCertificate};
use veil_model::ProxyConfig;

/// Where the proxy listens and how long it waits. [`Default`] gives Istio's
/// ports (see DESIGN.md "Conventions").
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Inbound capture listener, Istio's `0.0.0.0:15006`.
    pub inbound_addr: SocketAddr,
    /// Outbound capture listener, Istio's `0.0.0.0:15001`.
    pub outbound_addr: SocketAddr,
    /// Admin (`/config_dump`, `/healthz/ready`), localhost only, Istio's `127.0.0.1:15000`.
    pub admin_addr: SocketAddr,
    /// Readiness (`/healthz/ready`), Istio's `0.0.0.0:15021`.
    pub readiness_addr: SocketAddr,
    /// Where the local application listens, `127.0.0.1`.
    pub app_host: IpAddr,
    /// File that receives one JSON [`veil_model::ConnectionRecord`] per
    /// connection; `None` discards records.
    pub records_path: Option<PathBuf>,
    /// Bound on a TCP connect to an endpoint or the application.
    pub connect_timeout: Duration,
    /// Bound on a TLS handshake and on reading a ClientHello.
    pub handshake_timeout: Duration,
    /// Offer other Veil sidecars to carry connections one after another on
    /// a kept mesh connection (`mesh_frames`, `stream_pool`); a server
    /// accepts them either way. `VEIL_MESH_STREAMS=0` turns offering off.
    pub mesh_streams: bool,
}

impl Default for ProxySettings {
    fn default() -> Self {
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
        ProxySettings {
            inbound_addr: SocketAddr::new(any, 15006),
            outbound_addr: SocketAddr::new(any, 15001),
            admin_addr: SocketAddr::new(local, 15000),
            readiness_addr: SocketAddr::new(any, 15021),
            app_host: local,
            records_path: None,
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
            mesh_streams: true,
        }
    }
}

/// The addresses the proxy's listeners are bound to (ports resolved when
/// the settings asked for port 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalAddrs {
    pub inbound: SocketAddr,
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
    pub readiness: SocketAddr,
}

/// State every connection of one proxy shares.
pub(crate) struct Shared {
    pub(crate) settings: ProxySettings,
    pub(crate) local: LocalAddrs,
    pub(crate) config: watch::Receiver<Arc<ProxyConfig>>,
    pub(crate) tls: TlsConfigs,
    pub(crate) records: RecordSink,
    pub(crate) balancer: Balancer,
    /// Pooled upstream HTTP connections (`http_pool`).
    pub(crate) http: HttpPool,
    /// Mesh connections kept between streams (`stream_pool`).
    pub(crate) streams: crate::stream_pool::StreamPool,
}

impl Shared {
    /// The config in force now.
    pub(crate) fn config(&self) -> Arc<ProxyConfig> {
        self.config.borrow().clone()
    }
}

/// A bound, not yet running proxy.
pub struct Proxy {
    shared: Arc<Shared>,
    inbound: TcpListener,
    outbound: TcpListener,
    admin: TcpListener,
    readiness: TcpListener,
    writer: Option<RecordWriter>,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ProxyError> {
    TcpListener::bind(addr).await.map_err(|source| ProxyError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener, asked: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(asked)
}

impl Proxy {
    /// Binds the inbound, outbound, admin and readiness listeners and opens
    /// the records file. Gateway listeners are bound by [`Proxy::run`], from
    /// the config.
    ///
    /// Errors: [`ProxyError::Bind`], [`ProxyError::Records`].
    pub async fn bind(
        settings: ProxySettings,
        config: watch::Receiver<Arc<ProxyConfig>>,
        cert: watch::Receiver<Arc<WorkloadCertificate>>,
        bundle: TrustBundle,
    ) -> Result<Proxy, ProxyError> {
        let inbound = bind(settings.inbound_addr).await?;
        let outbound = bind(settings.outbound_addr).await?;
        let admin = bind(settings.admin_addr).await?;
        let readiness = bind(settings.readiness_addr).await?;
        let (records, writer) = records::open(settings.records_path.as_deref())?;
        let local = LocalAddrs {
            inbound: local_addr(&inbound, settings.inbound_addr),
            outbound: local_addr(&outbound, settings.outbound_addr),
            admin: local_addr(&admin, settings.admin_addr),
            readiness: local_addr(&readiness, settings.readiness_addr),
        };
        let shared = Arc::new(Shared {
            settings,
            local,
            config,
            tls: TlsConfigs::new(cert, bundle),
            records,
            balancer: Balancer::default(),
            http: HttpPool::default(),
            streams: Default::default(),
        });
        Ok(Proxy { shared, inbound, outbound, admin, readiness, writer })
    }

    /// The bound addresses.
    pub fn local_addrs(&self) -> LocalAddrs {
        self.shared.local
    }

    /// Serves until `shutdown` completes, then stops accepting and returns.
    /// Everything runs on the current runtime (see [`Proxy::run_with`]).
    /// Connections in flight end with the runtime.
    ///
    /// Errors: none at present; listener failures after bind are logged and
    /// retried.
    pub async fn run(self, shutdown: impl Future) -> Result<(), ProxyError> {
        self.run_with(shutdown, None).await
    }

    /// As [`Proxy::run`], with the admin and readiness listeners and the
    /// records file served by the runtime `side` (when given) instead of the
    /// data path's: a slow scrape, a config dump or a slow disk then never
    /// delays a connection (ztunnel's split of admin and data plane). The
    /// records still queued at shutdown are written first (for at most 1 s).
    ///
    /// Errors: none at present.
    pub async fn run_with(self, shutdown: impl Future, side: Option<Handle>) -> Result<(), ProxyError> {
        let Proxy { shared, inbound, outbound, admin, readiness, writer } = self;
        let side = side.unwrap_or_else(Handle::current);
        let mut tasks = JoinSet::new();
        let (stop_records, records_stopped) = oneshot::channel::<()>();
        let written = writer.map(|writer| side.spawn(writer.run(records_stopped)));
        tasks.spawn(crate::inbound::serve(inbound, shared.clone()));
        tasks.spawn(crate::outbound::serve(outbound, shared.clone()));
        for (listener, scope) in [(admin, crate::admin::Scope::Admin), (readiness, crate::admin::Scope::Readiness)] {
            let shared = shared.clone();
            match listener.into_std() {
                // Re-registered with the side runtime's reactor, in its own task.
                Ok(std) => tasks.spawn_on(
                    async move {
                        match TcpListener::from_std(std) {
                            Ok(listener) => crate::admin::serve(listener, shared, scope).await,
                            Err(e) => tracing::error!(error = %e, ?scope, "cannot serve the admin listener"),
                        }
                    },
                    &side,
                ),
                Err(e) => {
                    tracing::error!(error = %e, ?scope, "cannot move the admin listener off the data path");
                    continue;
                }
            };
        }
        tasks.spawn(crate::gateway::supervise(shared.clone()));
        tracing::info!(addrs = ?shared.local, "proxy serving");
        shutdown.await;
        tasks.abort_all();
        drop(stop_records);
        if let Some(written) = written {
            let _ = tokio::time::timeout(Duration::from_secs(1), written).await;
        }
        tracing::info!("proxy stopped");
        Ok(())
    }
}

/// Accepts one connection, logging and pausing briefly on accept errors
/// (e.g. out of file descriptors) so that a failing accept does not spin.
pub(crate) async fn accept(listener: &TcpListener) -> (tokio::net::TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; retrying in 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
