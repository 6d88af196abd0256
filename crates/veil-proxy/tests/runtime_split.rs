//! The proxy's two runtimes, on 127.0.0.1: with `Proxy::run_with` and a
//! `SideRuntime`, admin and readiness answer while the data path's thread is
//! busy; with `Proxy::run` alone (the control) they wait for it.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};
use veil_identity::{CertificateAuthority, TrustDomain};
use veil_model::*;
use veil_proxy::{Proxy, ProxySettings, SideRuntime};

/// How long the test keeps the data path's only thread busy.
const BUSY: Duration = Duration::from_millis(1500);

fn config() -> ProxyConfig {
    ProxyConfig {
        version: 1,
        node: common::node("client", "shop", "client", Ipv4Addr::LOCALHOST),
        inbound: Inbound { mode: MtlsMode::Strict, ports: vec![], sniff_timeout_ms: 100 },
        outbound: Outbound::default().into(),
        gateway: None,
    }
}

/// A proxy on a data-plane runtime in its own thread, with or without a
/// side runtime; returns its admin address, a way to block the data path's
/// thread for [`BUSY`], and the stop sender.
struct Running {
    admin: SocketAddr,
    data: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _side: Option<SideRuntime>,
}

impl Running {
    fn start(with_side: bool) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path(), TrustDomain::default()).unwrap();
        let cert = common::issue(&ca, &common::spiffe("shop", "client"));
        let bundle = ca.trust_bundle();
        let side = with_side.then(|| SideRuntime::start("test-side").unwrap());
        let side_handle = side.as_ref().map(|s| s.handle().clone());
        let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let settings = ProxySettings {
            inbound_addr: local,
            outbound_addr: local,
            admin_addr: local,
            readiness_addr: local,
            ..ProxySettings::default()
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let _dir = dir;
            let runtime = veil_proxy::data_plane_runtime().unwrap();
            runtime.block_on(async move {
                let (_config_tx, config_rx) = watch::channel(Arc::new(config()));
                let (_cert_tx, cert_rx) = watch::channel(Arc::new(cert));
                let proxy = Proxy::bind(settings, config_rx, cert_rx, bundle).await.unwrap();
                ready_tx.send((proxy.local_addrs().admin, tokio::runtime::Handle::current())).unwrap();
                let _ = proxy.run_with(async move { let _ = stopped.await; }, side_handle).await;
            });
        });
        let (admin, data) = ready_rx.recv_timeout(Duration::from_secs(10)).expect("proxy bound");
        Running { admin, data, stop: Some(stop), thread: Some(thread), _side: side }
    }

    /// Makes the data path's thread busy (a task that does not yield) for [`BUSY`].
    fn block_data_path(&self) {
        self.data.spawn(async { std::thread::sleep(BUSY) });
        // Give the task time to start.
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `GET /healthz/ready`; the status line, or the error after `timeout`.
fn ready(admin: SocketAddr, timeout: Duration) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&admin, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.write_all(b"GET /healthz/ready HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut response = String::new();
    s.read_to_string(&mut response).map_err(|e| e.to_string())?;
    Ok(response.lines().next().unwrap_or_default().to_string())
}

#[test]
fn admin_answers_while_the_data_path_is_busy_on_a_side_runtime() {
    let proxy = Running::start(true);
    assert_eq!(ready(proxy.admin, Duration::from_secs(5)).as_deref(), Ok("HTTP/1.1 200 OK"));
    proxy.block_data_path();
    let started = Instant::now();
    let answer = ready(proxy.admin, Duration::from_millis(500));
    assert_eq!(answer.as_deref(), Ok("HTTP/1.1 200 OK"));
    assert!(started.elapsed() < Duration::from_millis(500), "answered in {:?}", started.elapsed());
}

#[test]
fn control_admin_waits_for_a_busy_data_path_without_a_side_runtime() {
    let proxy = Running::start(false);
    assert_eq!(ready(proxy.admin, Duration::from_secs(5)).as_deref(), Ok("HTTP/1.1 200 OK"));
    proxy.block_data_path();
    let answer = ready(proxy.admin, Duration::from_millis(500));
    assert!(answer.is_err(), "no answer while the only thread is busy: {answer:?}");
    // Once the thread is free again, it answers.
    std::thread::sleep(BUSY);
    assert_eq!(ready(proxy.admin, Duration::from_secs(5)).as_deref(), Ok("HTTP/1.1 200 OK"));
}
