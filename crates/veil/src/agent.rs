//! `veil proxy`, and the whole of the `veil-sidecar` binary (which includes
//! this file): the process that runs inside a pod's network namespace as
//! uid 1337. It proves its identity with a one-time bootstrap token, gets a
//! certificate from the control plane's CA (its private key never leaves
//! this process), subscribes to its config, and runs the data plane.
//!
//! Everything comes from the environment `veil up` (or an injector) sets:
//! `VEIL_CA_ADDR`, `VEIL_CA_NAME`, `VEIL_ROOT_CERT` (path), `VEIL_TOKEN`,
//! `VEIL_SPIFFE_ID`, `VEIL_POD`, `VEIL_NAMESPACE`, `VEIL_RECORDS` (path),
//! `SECRET_TTL` (seconds, default 86400), `OUTPUT_CERTS` (a directory: Istio's
//! certificate files for software beside the proxy), `VEIL_SCHED_SLICE_US`
//! (the proxy threads' scheduler slice in µs, default 100; 0 keeps the
//! kernel's: see `veil_sys::set_latency_slice`), `VEIL_RELEASE_PAGES` (0
//! keeps the pages of the binary that start-up touched resident: see
//! `release_pages_when_quiet`).
//!
//! With `VEIL_CERTS_ONLY=1` only the certificate agent runs (Istio's pilot-agent
//! with `DISABLE_ENVOY=true`): it gets and rotates the certificate and keeps
//! `OUTPUT_CERTS` current, with no listeners and no config stream, for a
//! third-party proxy in a pod without a sidecar (seed 000's gateway).
//!
//! Two threads, each with a current-thread runtime: the main thread runs the
//! data path (listeners, connections); `veil-control` runs the certificate
//! client and its rotation, the config stream, admin/readiness and the
//! records file (ztunnel's split, DESIGN.md "Data plane").

use anyhow::{Context, Result};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use veil_identity::{
    request_certificate, spawn_rotation, CaAuth, CaClientConfig, SpiffeId, TrustBundle, WorkloadCertificate, WorkloadKey,
};
use veil_model::ProxyConfig;
use veil_proxy::{ConfigStreamSettings, Proxy, ProxySettings, SideRuntime};

fn env(name: &str) -> Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set; `veil proxy` (or `veil-sidecar`) is started by `veil up` with its environment"))
}

/// Runs the proxy until SIGTERM/SIGINT on its two runtimes (module doc), or
/// only the certificate agent when `VEIL_CERTS_ONLY` is set.
pub fn main() -> Result<()> {
    if std::env::var_os("VEIL_CERTS_ONLY").is_some() {
        return certs_only();
    }
    latency_slice();
    let side = SideRuntime::start("veil-control").context("cannot start the proxy's control thread")?;
    let control = side.handle().clone();
    let data = veil_proxy::data_plane_runtime()?;
    data.block_on(async move {
        let (certs, config, bundle) = control.spawn(identity_and_config()).await.context("the control thread stopped")??;
        control.spawn(release_pages_when_quiet(config.clone(), certs.clone()));
        let proxy = Proxy::bind(settings(), config, certs, bundle).await?;
        proxy.run_with(shutdown_signal(), Some(control)).await?;
        Ok::<_, anyhow::Error>(())
    })?;
    drop(side);
    Ok(())
}

/// How long the config and the certificate must stay unchanged before the
/// pages that applying them touched are given back, in ms.
const QUIET_MS: u64 = 1000;

/// Gives back the pages of the binary that start-up touched
/// (`veil_sys::release_binary_pages`) once the config and the certificate
/// have not changed for [`QUIET_MS`], and again after each later change (a
/// config push or a rotation runs code the steady state does not), unless
/// `VEIL_RELEASE_PAGES=0`. What serving touches comes back on first use. A
/// failure is logged once; the proxy serves either way.
async fn release_pages_when_quiet(
    mut config: watch::Receiver<Arc<ProxyConfig>>,
    mut certs: watch::Receiver<Arc<WorkloadCertificate>>,
) {
    if std::env::var("VEIL_RELEASE_PAGES").is_ok_and(|v| v.trim() == "0") {
        return;
    }
    // Whether a change (or start-up) has run since the last release.
    let mut touched = true;
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(QUIET_MS)), if touched => {
                touched = false;
                match veil_sys::release_binary_pages() {
                    Ok(kib) => tracing::debug!(kib, "pages of the binary released"),
                    Err(e) => return tracing::warn!("{e}"),
                }
            }
            changed = config.changed() => if changed.is_err() { return } else { touched = true },
            changed = certs.changed() => if changed.is_err() { return } else { touched = true },
        }
    }
}

/// Default scheduler slice of the proxy's threads, in µs.
const DEFAULT_SLICE_US: u64 = 100;

/// Asks the kernel for a short scheduler slice for the proxy's threads
/// (before they are created, so they inherit it). A refusal is logged and
/// the proxy runs with the kernel's slice.
fn latency_slice() {
    let slice_us = match std::env::var("VEIL_SCHED_SLICE_US") {
        Err(_) => DEFAULT_SLICE_US,
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(0) => return,
            Ok(us) => us,
            Err(_) => {
                tracing::warn!("VEIL_SCHED_SLICE_US={text:?} is not a number of µs; using {DEFAULT_SLICE_US}");
                DEFAULT_SLICE_US
            }
        },
    };
    match veil_sys::set_latency_slice(slice_us) {
        Ok(()) => tracing::debug!(slice_us, "scheduler slice set"),
        Err(e) => tracing::warn!("{e}"),
    }
}

/// The workload certificate (kept rotated), the config stream and the trust bundle.
type Inputs = (watch::Receiver<Arc<WorkloadCertificate>>, watch::Receiver<Arc<ProxyConfig>>, TrustBundle);

/// The certificate agent alone: writes `OUTPUT_CERTS` and keeps it current
/// until SIGTERM/SIGINT.
fn certs_only() -> Result<()> {
    if std::env::var_os("OUTPUT_CERTS").is_none() {
        anyhow::bail!("VEIL_CERTS_ONLY is set without OUTPUT_CERTS; set OUTPUT_CERTS to the directory for key.pem, cert-chain.pem and root-cert.pem");
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let (_certs, _, _) = identity().await?;
        shutdown_signal().await;
        Ok(())
    })
}

/// Gets the first certificate and config; the rotation and the stream keep
/// running on the runtime this is spawned on.
async fn identity_and_config() -> Result<Inputs> {
    let (certs, ca, root_pem) = identity().await?;
    let bundle = TrustBundle::from_pem(&root_pem)?;
    let config = veil_proxy::watch_config(
        ConfigStreamSettings {
            address: ca.address.clone(),
            server_name: ca.server_name.clone(),
            root_pem,
            pod: env("VEIL_POD")?,
            namespace: env("VEIL_NAMESPACE")?,
        },
        certs.clone(),
    )
    .await?;
    Ok((certs, config, bundle))
}

/// Gets the first workload certificate and keeps it rotated (and written to
/// `OUTPUT_CERTS` when set) on the runtime this runs on. Returns the
/// certificate, the CA client settings and the mesh root (PEM).
async fn identity() -> Result<(watch::Receiver<Arc<WorkloadCertificate>>, CaClientConfig, String)> {
    let root_path = env("VEIL_ROOT_CERT")?;
    let root_pem = std::fs::read_to_string(&root_path).with_context(|| format!("reading mesh root {root_path}"))?;
    let id: SpiffeId = env("VEIL_SPIFFE_ID")?.parse()?;
    let ttl = Duration::from_secs(std::env::var("SECRET_TTL").ok().and_then(|s| s.parse().ok()).unwrap_or(86_400));
    let ca = CaClientConfig { address: env("VEIL_CA_ADDR")?, server_name: env("VEIL_CA_NAME")?, root_pem: root_pem.clone() };
    let key = WorkloadKey::generate()?;
    let token = env("VEIL_TOKEN")?;
    let mut attempt = 0u32;
    let first = loop {
        match request_certificate(&ca, &key, &id, CaAuth::Token(token.clone()), ttl).await {
            Ok(c) => break c,
            Err(e) if attempt < 20 => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "certificate request failed; retrying");
                tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt.min(8)))).await;
            }
            Err(e) => return Err(e).context("could not get a workload certificate from the control plane"),
        }
    };
    tracing::info!(identity = %id, "workload certificate issued");
    let certs = spawn_rotation(ca.clone(), id.clone(), first, ttl);
    if let Some(dir) = std::env::var_os("OUTPUT_CERTS") {
        spawn_output_certs(dir.into(), certs.clone(), root_pem.clone());
    }
    Ok((certs, ca, root_pem))
}

fn settings() -> ProxySettings {
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    ProxySettings {
        inbound_addr: SocketAddr::new(any, 15006),
        outbound_addr: SocketAddr::new(any, 15001),
        admin_addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 15000),
        readiness_addr: SocketAddr::new(any, 15021),
        app_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        records_path: std::env::var_os("VEIL_RECORDS").map(Into::into),
        connect_timeout: Duration::from_secs(5),
        handshake_timeout: Duration::from_secs(10),
        mesh_streams: std::env::var("VEIL_MESH_STREAMS").map_or(true, |v| v.trim() != "0"),
    }
}

/// Istio's `OUTPUT_CERTS`: keeps `key.pem`, `cert-chain.pem` and
/// `root-cert.pem` in `dir` equal to the current certificate, rewriting them
/// on every rotation, for software beside the proxy that is not in the mesh.
fn spawn_output_certs(
    dir: std::path::PathBuf,
    mut certs: tokio::sync::watch::Receiver<std::sync::Arc<veil_identity::WorkloadCertificate>>,
    root_pem: String,
) {
    tokio::spawn(async move {
        loop {
            let cert = certs.borrow_and_update().clone();
            match veil_identity::write_cert_files(&dir, &cert, &root_pem) {
                Ok(()) => tracing::info!(dir = %dir.display(), identity = %cert.spiffe_id, "wrote OUTPUT_CERTS"),
                Err(e) => tracing::error!(error = %e, "cannot write OUTPUT_CERTS"),
            }
            if certs.changed().await.is_err() {
                return;
            }
        }
    });
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! { _ = t.recv() => {}, _ = i.recv() => {} }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Whether log lines carry ANSI colours: only when stderr is a terminal and
/// `NO_COLOR` (<https://no-color.org>) is unset or empty, so that a log
/// redirected to a file (`scripts/demo.sh > demo.log`) reads as plain text.
pub fn ansi_logs() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
